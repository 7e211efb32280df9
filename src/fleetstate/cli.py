"""Command line: `fleetstate serve` and `fleetstate token create`. Argument parsing only."""

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from fleetstate import app, config, tenancy
from fleetstate.errors import FleetstateError
from fleetstate.store import Store


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetstate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service (embedded broker, SQLite, HTTP)")
    _common(serve)
    serve.add_argument("--http", help="HOST:PORT of the HTTP server (default 127.0.0.1:8080)")
    serve.add_argument("--mqtt", help="HOST:PORT of the MQTT broker (default 127.0.0.1:1883)")
    serve.add_argument("--admin-token", dest="admin_token", help="value of the operator token")
    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="print a new API token of an organization")
    _common(create)
    create.add_argument("--org", required=True, help="organization slug")
    create.add_argument("--name", default="cli", help="a name for the token")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file (see config/fleetstate.toml)")
    parser.add_argument("--data", help="data directory (default ./data)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        k: getattr(args, k, None) for k in ("data", "http", "mqtt", "admin_token")
    }
    try:
        settings = config.load(args.config, overrides)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if args.command == "serve":
            asyncio.run(_serve(settings))
        else:
            print(asyncio.run(_create_token(settings, args.org, args.name)))
    except FleetstateError as exc:
        print(f"fleetstate: {exc.message}", file=sys.stderr)
        return 2
    return 0


async def _serve(settings: config.Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with app.start(settings) as service:
            if service.admin_token_file is not None:
                print(f"admin token in {service.admin_token_file}", flush=True)
            print(f"http listening on {service.http_url}", flush=True)
            print(f"mqtt listening on {service.mqtt_url}", flush=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _create_token(settings: config.Config, slug: str, name: str) -> str:
    store = await Store.open(settings.data_dir / app.DATABASE, settings.batch_max)
    writer = asyncio.create_task(store.writer_loop(), name="store-writer")
    try:
        return await tenancy.create_token_by_slug(store, slug, name)
    finally:
        await store.close()
        await writer
