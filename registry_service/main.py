"""``toolcall registry``: serve the ToolRegistry until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sqlite3
from pathlib import Path

from registry_service.service import RegistryHost
from registry_service.settings import DATA_FILE, RegistrySettings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = RegistrySettings.from_env()
    parser.add_argument(
        "--address",
        default=d.address,
        help="listen address, host:port or unix:/path (default: $TOOLCALL_REGISTRY_ADDRESS or "
        "%(default)s)",
    )
    parser.add_argument(
        "--roles",
        default=",".join(d.roles),
        help="comma-separated roles (personas) served; a tool registered without a role goes "
        "into each (default: $TOOLCALL_ROLES or %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=d.token,
        help="shared token required as 'authorization: Bearer <token>' on changes (default: "
        "$TOOLCALL_TOKEN; empty requires none)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"directory of {DATA_FILE}, where tools registered without a lease are kept "
        "(default: $TOOLCALL_DATA_DIR or ~/.local/share/toolcall)",
    )


def settings_from_args(args: argparse.Namespace) -> RegistrySettings:
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if not roles:
        raise SystemExit("--roles must name at least one role")
    settings = dataclasses.replace(
        RegistrySettings.from_env(), address=args.address, roles=roles, token=args.token
    )
    if args.data_dir:
        settings.data_path = Path(args.data_dir).expanduser() / DATA_FILE
    if problems := settings.problems():
        raise SystemExit("; ".join(problems))
    return settings


async def main(args: argparse.Namespace) -> int:
    host = RegistryHost(settings_from_args(args))
    try:
        await host.start()
    except (OSError, RuntimeError, sqlite3.Error) as exc:
        # Port taken, unwritable data dir...: one readable line, no traceback.
        log.error("cannot start the registry on %s: %s", args.address, exc)
        return 1
    await host.run_until_signal(started=True)
    return 0
