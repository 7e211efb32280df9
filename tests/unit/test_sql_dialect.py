"""The dialect layer: every canonical statement as PostgreSQL would run it."""

import importlib
import pkgutil

import pytest

from fleetstate.store import dialect, queries


@pytest.mark.parametrize(
    ("canonical", "postgres"),
    [
        (
            "SELECT a FROM t WHERE id = ? AND org_id = ?",
            "SELECT a FROM t WHERE id = $1 AND org_id = $2",
        ),
        (
            "INSERT OR IGNORE INTO members (group_id, device_id) VALUES (?, ?)",
            "INSERT INTO members (group_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        ),
        (
            "SELECT id FROM commands WHERE json_extract(params, '$.artefact_id') = ?",
            "SELECT id FROM commands WHERE (params::jsonb ->> 'artefact_id') = $1",
        ),
        ("UPDATE s SET b = ? WHERE b IS NOT ?", "UPDATE s SET b = $1 WHERE b IS DISTINCT FROM $2"),
        (
            "WHERE r.version IS dd.version AND r.status IS NOT NULL",
            "WHERE r.version IS NOT DISTINCT FROM dd.version AND r.status IS NOT NULL",
        ),
        (
            "SET used = max(used - 1, 0), n = coalesce(max(seq), 0)",
            "SET used = greatest(used - 1, 0), n = coalesce(max(seq), 0)",
        ),
        ("WHERE id IN (?,?,?)", "WHERE id IN ($1,$2,$3)"),
    ],
)
def test_dialect_postgres_rewrites_each_canonical_form(canonical: str, postgres: str) -> None:
    assert dialect.POSTGRES.prepare(canonical) == postgres


def test_dialect_sqlite_runs_the_canonical_text_as_is() -> None:
    sqlite = dialect.SQLITE
    assert sqlite.prepare("SELECT ?") == "SELECT ?"
    assert sqlite.in_list("d.id", 3) == "d.id IN (?,?,?)"
    assert sqlite.list_args(["a", "b"]) == ("a", "b")
    assert dialect.POSTGRES.in_list("d.id", 3) == "d.id = ANY(?)"
    assert dialect.POSTGRES.list_args(["a", "b"]) == (["a", "b"],)


def _statements() -> list[str]:
    found = []
    for info in pkgutil.iter_modules(queries.__path__):
        module = importlib.import_module(f"{queries.__name__}.{info.name}")
        for value in vars(module).values():
            texts = value.values() if isinstance(value, dict) else [value]
            found += [
                t
                for t in texts
                if isinstance(t, str)
                and t.lstrip().startswith(("SELECT", "INSERT", "UPDATE", "DELETE"))
            ]
    return found


def test_dialect_postgres_leaves_no_sqlite_only_form_in_any_statement() -> None:
    statements = _statements()
    assert len(statements) > 100  # the scan found the query modules' constants
    for statement in statements:
        text = dialect.POSTGRES.prepare(statement)
        assert "?" not in text, text
        for sqlite_only in ("INSERT OR", "json_extract(", " IS NOT ?", "max(used"):
            assert sqlite_only not in text, text


@pytest.mark.parametrize(
    ("form", "parts"),
    [
        ("insert_ignore", ("t (a, b)", "(x, y)")),
        ("json_text", ("params", "artefact_id")),
        ("distinct", ("a", "excluded.a")),
        ("same", ("r.version", "dd.version")),
        ("greatest", ("used - 1", "0")),
    ],
)
def test_dialect_postgres_prepare_agrees_with_its_own_spelling(
    form: str, parts: tuple[str, ...]
) -> None:
    canonical = getattr(dialect.SQLITE, form)(*parts)
    assert dialect.POSTGRES.prepare(canonical) == getattr(dialect.POSTGRES, form)(*parts)
