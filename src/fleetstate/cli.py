"""Command line: `fleetstate serve`, `fleetstate token create` and `fleetstate simulate`.
Argument parsing only."""

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from fleetstate import app, config, logs
from fleetstate.errors import FleetstateError, Invalid
from fleetstate.service import outbox, tenancy
from fleetstate.simulator import EXTRA_HINT
from fleetstate.simulator import options as simulation
from fleetstate.store.sqlite import SqliteStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetstate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service (embedded broker, SQLite, HTTP)")
    _common(serve)
    serve.add_argument("--http", help="HOST:PORT of the HTTP server (default 127.0.0.1:8080)")
    serve.add_argument(
        "--mqtt", help="HOST:PORT of the MQTT listener (default 127.0.0.1:1883; 'off' for none)"
    )
    serve.add_argument(
        "--mqtts", help="HOST:PORT of the MQTT-over-TLS listener, with [tls] (default :8883)"
    )
    serve.add_argument("--admin-token", dest="admin_token", help="value of the operator token")
    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="print a new API token of an organization")
    _common(create)
    create.add_argument("--org", required=True, help="organization slug")
    create.add_argument("--name", default="cli", help="a name for the token")
    _simulate_parser(commands)
    return parser


def _simulate_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sim = commands.add_parser(
        "simulate",
        help="play a fleet of simulated devices against a running service",
        description="Create (or register) N devices, connect them over MQTT (or the device HTTP"
        " API), apply desired documents, acknowledge commands and send telemetry, with live"
        " progress and a summary. Needs the 'simulate' extra.",
    )
    add = sim.add_argument
    add("--devices", type=int, required=True, help="how many devices")
    add("--http", default="http://127.0.0.1:8080", help="the service's HTTP base URL")
    add("--mqtt", help="mqtt://HOST:PORT of the broker (default: what the service tells devices)")
    add("--token", default=os.environ.get("FLEETSTATE_ADMIN_TOKEN"), help="an API token")
    add("--hardware-key", help="register the devices with this hardware key instead")
    add("--profile", default="simulated", help="device profile id or name (created if missing)")
    add("--group", help="put the devices into this device group (created if missing)")
    add("--telemetry-interval", type=float, default=10.0, help="seconds; 0 sends none")
    add("--connect-rate", type=float, default=200.0, help="connections/s; 0 for no limit")
    add("--reject-share", type=float, default=0.0, help="share of devices reporting REJECTED")
    add("--fail-share", type=float, default=0.0, help="share reporting FAILED (commands fail)")
    add("--silent-share", type=float, default=0.0, help="share that never answers")
    add("--apply-delay", type=float, default=0.0, help="seconds from IN_PROGRESS to the result")
    add("--http-only-share", type=float, default=0.0, help="share using only the HTTP API")
    add("--processes", type=int, default=0, help="worker processes (default: enough for N)")
    add("--duration", type=float, help="seconds to run (default: until Ctrl-C)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file (see config/fleetstate.toml)")
    parser.add_argument("--data", help="data directory (default ./data)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        return _simulate(args)
    overrides: dict[str, Any] = {
        k: getattr(args, k, None) for k in ("data", "http", "mqtt", "mqtts", "admin_token")
    }
    try:
        settings = config.load(args.config, overrides)
        logs.configure(settings.log_level, settings.log)
        if args.command == "serve":
            asyncio.run(_serve(settings))
        else:
            print(asyncio.run(_create_token(settings, args.org, args.name)))
    except FleetstateError as exc:
        print(f"fleetstate: {exc.message}", file=sys.stderr)
        return 2
    return 0


def _simulate(args: argparse.Namespace) -> int:
    options = simulation.Options(
        devices=args.devices,
        http_url=args.http,
        mqtt_url=args.mqtt,
        token=args.token,
        hardware_key=args.hardware_key,
        profile=args.profile,
        group=args.group,
        telemetry_interval=args.telemetry_interval,
        connect_rate=args.connect_rate,
        reject_share=args.reject_share,
        fail_share=args.fail_share,
        silent_share=args.silent_share,
        apply_delay=args.apply_delay,
        http_only_share=args.http_only_share,
        processes=args.processes,
        duration=args.duration,
    )
    problems = simulation.check(options)
    for problem in problems:
        print(f"fleetstate simulate: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:
        from fleetstate.simulator import runner  # noqa: PLC0415 - needs the optional extra
    except ImportError as exc:
        print(
            f"fleetstate simulate needs {exc.name or 'aiomqtt and rich'}: {EXTRA_HINT}",
            file=sys.stderr,
        )
        return 2
    return runner.run(options)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def _serve(settings: config.Config) -> None:
    stop = asyncio.Event()
    with _stop_on_signals(stop):
        async with app.start(settings) as service:
            if service.admin_token_file is not None:
                print(f"admin token in {service.admin_token_file}", flush=True)
            scheme = service.http_url.partition(":")[0]  # "https" with [tls]
            print(f"{scheme} listening on {service.http_url}", flush=True)
            if service.mqtt_url is not None:
                print(f"mqtt listening on {service.mqtt_url}", flush=True)
            if service.mqtts_url is not None:
                print(f"mqtts listening on {service.mqtts_url}", flush=True)
            await stop.wait()


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` while the block runs; afterwards the handlers they had
    before are back (the loop's `remove_signal_handler` would reset them to the defaults)."""
    loop = asyncio.get_running_loop()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            if handler is not None:  # None: set from outside Python, nothing to put back
                signal.signal(signum, handler)


async def _create_token(settings: config.Config, slug: str, name: str) -> str:
    database = settings.data_dir / app.DATABASE
    # Opening a missing database would create an empty one: a stray file in a mistyped
    # directory, and a token for a service that will never read it.
    if not database.is_file():
        raise Invalid(
            f"no fleetstate database in {settings.data_dir} (expected {database}); pass the"
            " --data directory of the service, or run `fleetstate serve` there first"
        )
    async with SqliteStore.running(database, settings.batch_max, outbox.job_scope) as store:
        return await tenancy.create_token_by_slug(store, slug, name)
