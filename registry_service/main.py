"""``toolcall registry``: serve the ToolRegistry until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sqlite3
from pathlib import Path

from registry_service.archive import ArchiveError
from registry_service.service import RegistryHost
from registry_service.settings import DATA_FILE, RegistrySettings
from toolcall import config, tls
from toolcall.telemetry import add_metrics_argument, with_metrics_address

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
        default=None,
        help="shared token required as 'authorization: Bearer <token>' on changes and Invoke; "
        "visible to every local user in the process list, prefer --token-file (default: "
        "$TOOLCALL_TOKEN or the content of $TOOLCALL_TOKEN_FILE; none requires no token)",
    )
    parser.add_argument(
        "--token-file",
        default=None,
        help="file holding the shared token (keep it mode 0600); overrides $TOOLCALL_TOKEN "
        "and $TOOLCALL_TOKEN_FILE",
    )
    parser.add_argument(
        "--max-tools",
        type=int,
        default=d.max_tools,
        help="most (role, tool) entries held; Register past it is RESOURCE_EXHAUSTED "
        "(default: $TOOLCALL_MAX_TOOLS or %(default)s)",
    )
    parser.add_argument(
        "--max-definition-bytes",
        type=int,
        default=d.max_definition_bytes,
        help="most bytes of serialized tool definitions held, over all entries "
        "(default: $TOOLCALL_MAX_DEFINITION_BYTES or %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"directory of {DATA_FILE}, where tools registered without a lease are kept "
        "(default: $TOOLCALL_DATA_DIR or ~/.local/share/toolcall)",
    )
    tls.add_server_arguments(parser)
    add_metrics_argument(
        parser, getattr(d.telemetry, "metrics_address", ""), "TOOLCALL_REGISTRY_METRICS_ADDRESS"
    )


def settings_from_args(args: argparse.Namespace) -> RegistrySettings:
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if not roles:
        raise SystemExit("--roles must name at least one role")
    settings = dataclasses.replace(
        RegistrySettings.from_env(),
        address=args.address,
        roles=roles,
        max_tools=args.max_tools,
        max_definition_bytes=args.max_definition_bytes,
    )
    settings.tls, settings.principals_file, settings.insecure = tls.server_args(args)
    if args.remote_plugins is not None:
        settings.dispatch = dataclasses.replace(
            settings.dispatch, remote_plugins=args.remote_plugins
        )
    settings.telemetry = with_metrics_address(settings.telemetry, args.metrics_address)
    if args.token is not None and args.token_file is not None:
        raise SystemExit("give --token or --token-file, not both")
    if args.token is not None:
        if args.token:
            log.warning(
                "--token is visible to every local user in the process list; "
                "use --token-file or TOOLCALL_TOKEN_FILE instead"
            )
        if err := config.token_error(args.token):
            raise SystemExit(f"--token {err}")
        settings.token = args.token
    elif args.token_file is not None:
        try:
            settings.token = config.read_token_file(args.token_file)
        except config.ConfigError as exc:
            raise SystemExit(str(exc)) from None
    if args.data_dir:
        settings.data_path = Path(args.data_dir).expanduser() / DATA_FILE
    if problems := settings.problems():
        raise SystemExit("; ".join(problems))
    return settings


async def main(args: argparse.Namespace) -> int:
    try:
        host = RegistryHost(settings_from_args(args))
    except config.ConfigError as exc:  # an unreadable certificate or principals file
        log.error("cannot start the registry: %s", exc)
        return 1
    try:
        await host.start()
    except (OSError, RuntimeError, sqlite3.Error, ArchiveError) as exc:
        # Port taken, corrupt or read-only database...: one readable line, no traceback.
        log.error("cannot start the registry on %s: %s", args.address, exc)
        return 1
    await host.run_until_signal(started=True)
    return 0
