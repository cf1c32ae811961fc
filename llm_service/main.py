"""``toolcall llm``: serve the LLMService until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from llm_service.history import StoreError
from llm_service.service import LLMServiceHost
from llm_service.settings import MAX_TOOL_ROUNDS_LIMIT, LLMSettings
from toolcall import config, tls
from toolcall.dispatch import REMOTE_NEEDS_MTLS
from toolcall.telemetry import add_metrics_argument, with_metrics_address


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LLMSettings.from_env()
    parser.add_argument(
        "--address",
        default=d.address,
        help="listen address, host:port or unix:/path (default: $TOOLCALL_LLM_ADDRESS or "
        "%(default)s)",
    )
    parser.add_argument(
        "--registry",
        default=d.registry_address,
        help="ToolRegistry address to watch (default: $TOOLCALL_REGISTRY_ADDRESS or %(default)s)",
    )
    parser.add_argument(
        "--provider",
        default=d.default_provider,
        choices=("offline", "openai", "gemini"),
        help="default provider when a request names none (default: $TOOLCALL_PROVIDER or "
        "%(default)s; 'offline' is a rule-based stand-in, not a model)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="directory of llm.sqlite3 (default: $TOOLCALL_DATA_DIR or ~/.local/share/toolcall)",
    )
    parser.add_argument(
        "--max-tool-rounds",
        type=int,
        default=d.max_tool_rounds,
        help=f"tool rounds per turn, 1-{MAX_TOOL_ROUNDS_LIMIT} (default: "
        "$TOOLCALL_MAX_TOOL_ROUNDS or %(default)s)",
    )
    parser.add_argument(
        "--max-parallel-tools",
        type=int,
        default=d.max_parallel_tools,
        help="concurrent tool calls per chat (default: $TOOLCALL_MAX_PARALLEL_TOOLS or "
        "%(default)s)",
    )
    parser.add_argument(
        "--provider-timeout",
        type=float,
        default=d.provider_timeout_s,
        help="seconds to wait for the model (default: $TOOLCALL_PROVIDER_TIMEOUT or %(default)s)",
    )
    tls.add_server_arguments(parser)
    add_metrics_argument(
        parser, getattr(d.telemetry, "metrics_address", ""), "TOOLCALL_LLM_METRICS_ADDRESS"
    )


def settings_from_args(args: argparse.Namespace) -> LLMSettings:
    if not 1 <= args.max_tool_rounds <= MAX_TOOL_ROUNDS_LIMIT:
        raise SystemExit(f"--max-tool-rounds must be between 1 and {MAX_TOOL_ROUNDS_LIMIT}")
    if args.max_parallel_tools < 1:
        raise SystemExit("--max-parallel-tools must be at least 1")
    settings = dataclasses.replace(
        LLMSettings.from_env(),
        address=args.address,
        registry_address=args.registry,
        default_provider=args.provider,
        max_tool_rounds=args.max_tool_rounds,
        max_parallel_tools=args.max_parallel_tools,
        provider_timeout_s=args.provider_timeout,
    )
    settings.tls, settings.principals_file, settings.insecure = tls.server_args(args)
    if args.remote_plugins is not None:
        settings.dispatch = dataclasses.replace(
            settings.dispatch, remote_plugins=args.remote_plugins
        )
    settings.telemetry = with_metrics_address(settings.telemetry, args.metrics_address)
    if args.data_dir:
        settings.db_path = Path(args.data_dir).expanduser() / "llm.sqlite3"
    for name, value, least in (
        ("TOOLCALL_MAX_REQUEST_BYTES", settings.max_request_bytes, 1024),
        ("TOOLCALL_HISTORY_CACHE_SESSIONS", settings.history_cache_sessions, 0),
        ("TOOLCALL_HISTORY_CACHE_BYTES", settings.history_cache_bytes, 0),
        ("TOOLCALL_SUBSCRIBE_BUFFER", settings.subscribe_buffer, 1),
        ("TOOLCALL_SUBSCRIBE_BUFFER_BYTES", settings.subscribe_buffer_bytes, 1024),
        ("TOOLCALL_MAX_ASYNC_TASKS_PER_SESSION", settings.max_async_tasks_per_session, 1),
        ("TOOLCALL_MAX_ASYNC_TASKS", settings.max_async_tasks, 1),
        ("TOOLCALL_MAX_TURNS", settings.max_turns, 1),
    ):
        if value < least:
            raise SystemExit(f"{name} must be at least {least}, got {value}")
    problems = settings.dispatch.problems() + settings.tls.problems()
    if settings.dispatch.remote_plugins and not (settings.tls.ca and settings.tls.client_cert):
        problems.append(REMOTE_NEEDS_MTLS)
    if err := tls.exposure_error(
        settings.address,
        settings.tls,
        authenticated=bool(settings.principals_file),
        insecure=settings.insecure,
    ):
        problems.append(err)
    if problems:
        raise SystemExit("; ".join(problems))
    return settings


STORE_ADVICE = {
    "corrupt": "it is damaged or not an LLMService database: move it aside (a new one is "
    "created; its history and tasks are lost) or restore a backup, then start again",
    "readonly": "make it (and its directory) writable, then start again",
    "full": "free disk space, then start again",
    "unavailable": "check the file and its directory, then start again",
}


async def main(args: argparse.Namespace) -> int:
    try:
        host = LLMServiceHost(settings_from_args(args))
    except config.ConfigError as exc:  # an unreadable certificate or principals file
        print(f"error: cannot start the LLMService: {exc}", file=sys.stderr)
        return 1
    try:
        await host.start()
    except StoreError as exc:
        # One readable line instead of a traceback: the operator's next step.
        print(f"error: cannot open {exc.message}; {STORE_ADVICE[exc.kind]}", file=sys.stderr)
        return 1
    except OSError as exc:  # the port is taken: one line, not a traceback
        print(f"error: cannot start the LLMService: {exc}", file=sys.stderr)
        return 1
    await host.run_until_signal(started=True)
    return 0
