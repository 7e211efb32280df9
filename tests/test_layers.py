"""The layers: SQL lives under `fleetstate/store/`, only the store imports `sqlite3`, the
configuration imports nothing it configures, and `fleetstate/domain/` does no I/O.

Modules whose SQL has moved are in MOVED; modules that still hold SQL are in NOT_YET_MOVED (shrink
it as aggregates move; a new module with SQL fails at once). Statements are found in the string
constants of each module's syntax tree (f-string parts included), so comments and prose that
merely mention a keyword do not count.
"""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "fleetstate"
STORE = SRC / "store"

MOVED = (
    "service/artefacts.py",
    "service/audit.py",
    "service/bindings.py",
    "service/commands/delivery.py",
    "service/commands/issuing.py",
    "service/commands/lifecycle.py",
    "service/commands/tracking.py",
    "service/commands/views.py",
    "service/desired.py",
    "service/devices.py",
    "service/dumps.py",
    "service/files.py",
    "service/groups.py",
    "service/licenses.py",
    "service/metrics.py",
    "service/profiles.py",
    "service/provisioning.py",
    "service/reports.py",
    "service/retention.py",
    "service/sessions.py",
    "service/telemetry.py",
    "service/tenancy.py",
    "service/uploads.py",
    "service/xyte_config.py",
)
# Empty since every domain module's SQL moved: a module that gains SQL fails at once.
NOT_YET_MOVED: tuple[str, ...] = ()

_STATEMENT = re.compile(
    r"\b(SELECT\b.+\bFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b",
    re.IGNORECASE | re.DOTALL,
)


def _outside_store() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if STORE not in p.parents)


def _name(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def _sql_lines(path: Path) -> list[int]:
    """Lines of string constants in `path` that read as a SQL statement."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        # Prose ("select a profile from the list") is lower case; statements are upper case.
        if _STATEMENT.search(text) and re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b", text):
            found.append(node.lineno)
    return sorted(set(found))


def test_layers_detector_finds_statements(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'A = "SELECT id FROM devices WHERE org_id = ?"\n'
        'B = f"DELETE FROM {table} WHERE id = ?"\n'
        'C = "select a profile from the list, then update it"\n'
        '"""A docstring that says UPDATE devices SET nothing."""\n'
    )
    assert _sql_lines(sample) == [1, 2, 4]


@pytest.mark.parametrize("name", MOVED)
def test_layers_moved_aggregate_has_no_sql(name: str) -> None:
    lines = _sql_lines(SRC / name)
    assert not lines, f"{name} holds SQL at lines {lines}; put it in store/queries/"


def test_layers_no_new_module_holds_sql() -> None:
    holding = {_name(p) for p in _outside_store() if _sql_lines(p)}
    unexpected = holding - set(NOT_YET_MOVED)
    assert not unexpected, f"SQL outside store/ in {sorted(unexpected)}; use a query module"


def test_layers_not_yet_moved_list_is_current() -> None:
    """A module whose SQL has moved leaves NOT_YET_MOVED for MOVED, so it stays clean."""
    holding = {_name(p) for p in _outside_store() if _sql_lines(p)}
    stale = set(NOT_YET_MOVED) - holding
    assert not stale, f"{sorted(stale)} hold no SQL any more: move them to MOVED"


def test_layers_only_the_store_imports_sqlite3() -> None:
    importing = []
    for path in _outside_store():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "sqlite3" or n.startswith("sqlite3.") for n in names):
                importing.append(f"{_name(path)}:{node.lineno}")
    assert not importing, f"sqlite3 imported outside store/: {importing}"


def _imported(path: Path) -> list[tuple[str, int]]:
    """Every module `path` imports (absolute names), with the line of the import."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return found


def test_layers_config_imports_nothing_it_configures() -> None:
    """The configuration is the bottom layer: its tables are Structs of its own, so loading a
    config file pulls in no store, bus, blob store or domain module."""
    allowed = ("fleetstate.errors",)
    leaked = [
        f"{name} (line {line})"
        for name, line in _imported(SRC / "config.py")
        if name.startswith("fleetstate") and not name.startswith(allowed)
    ]
    assert not leaked, f"config.py imports {leaked}; define the table in config.py"


DOMAIN = SRC / "domain"
NO_IO = (
    "sqlite3",
    "aiohttp",
    "amqtt",
    "aiomqtt",
    "paho",
    "aioboto3",
    "botocore",
    "socket",
    "ssl",
    "asyncio",
    "concurrent",
    "subprocess",
    "threading",
    "fleetstate.store",
    "fleetstate.bus",
    "fleetstate.blobs",
    "fleetstate.api",
    "fleetstate.service",
    "fleetstate.simulator",
    "fleetstate.app",
    "fleetstate.cli",
)
"""What a domain module may not import: drivers, the network, event-loop I/O, and every layer
above the domain."""


def _no_io_breaches(paths: list[Path]) -> list[str]:
    return [
        f"{_name(path) if SRC in path.parents else path.name}:{line} imports {name}"
        for path in paths
        for name, line in _imported(path)
        if any(name == banned or name.startswith(f"{banned}.") for banned in NO_IO)
    ]


def test_layers_domain_detector_finds_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import asyncio.subprocess\n"
        "from fleetstate.store import Store\n"
        "from fleetstate import errors\n"
        "from fleetstate.bus.embedded import codec\n"
        "import msgspec\n"
    )
    breaches = _no_io_breaches([sample])
    assert [b.rsplit(" imports ", 1)[1] for b in breaches] == [
        "asyncio.subprocess",
        "fleetstate.store",
        "fleetstate.store.Store",
        "fleetstate.bus.embedded",
        "fleetstate.bus.embedded.codec",
    ]


def test_layers_domain_does_no_io() -> None:
    """Rules, Structs and tables only: a domain module that needs the store, the bus or the
    network belongs in service/ (or takes what it needs as an argument)."""
    modules = sorted(DOMAIN.rglob("*.py"))
    assert modules, "src/fleetstate/domain/ is missing"
    breaches = _no_io_breaches(modules)
    assert not breaches, f"domain/ must not do I/O: {breaches}"


def test_layers_store_knows_no_use_case() -> None:
    """The store is below the service: what a write job records for after its commit reaches it
    as an opaque scope the composition root passes, so a second backend needs no service code."""
    above = ("fleetstate.service", "fleetstate.api", "fleetstate.bus", "fleetstate.app")
    leaked = [
        f"{_name(path)}: {name} (line {line})"
        for path in sorted(STORE.rglob("*.py"))
        for name, line in _imported(path)
        if name.startswith(above)
    ]
    assert not leaked, f"the store imports layers above it: {leaked}"


BACKENDS = ("fleetstate.store.sqlite",)
"""Store backends: only the composition root (app.py, and cli.py's offline commands) picks one."""


def test_layers_only_the_composition_root_names_a_store_backend() -> None:
    """Use cases depend on the `Store` port and the backend-neutral query modules, so a
    PostgreSQL backend replaces the SQLite one in `app.py` without touching a use case."""
    root = {SRC / "app.py", SRC / "cli.py"}
    leaked = [
        f"{_name(path)}: {name} (line {line})"
        for path in _outside_store()
        if path not in root
        for name, line in _imported(path)
        if name.startswith(BACKENDS)
    ]
    assert not leaked, f"a backend named outside the composition root: {leaked}"


def test_layers_the_query_modules_name_no_backend() -> None:
    """The statements are written once for every backend (docs/store.md): a query module sees
    only the `Connection` Protocol, never SQLite's."""
    leaked = [
        f"{_name(path)}: {name} (line {line})"
        for path in sorted((STORE / "queries").rglob("*.py"))
        for name, line in _imported(path)
        if name.startswith(BACKENDS) or name == "sqlite3"
    ]
    assert not leaked, f"a query module names a backend: {leaked}"
