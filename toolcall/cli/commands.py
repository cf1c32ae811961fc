"""The ``toolcall`` command's parser and dispatch (loaded by ``toolcall.cli.main``).

Exit codes: 0 success; 1 the call failed or a tool returned an error (one
readable line on stderr); 2 bad usage; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

import grpc

from toolcall import eventloop
from toolcall.serving import setup_logging

# Subcommand -> (module, help). The module provides ``add_arguments(parser)``
# and ``async main(args) -> int``; modules are imported only when needed.
COMMANDS: dict[str, tuple[str, str]] = {
    "registry": ("registry_service.main", "serve the ToolRegistry service"),
    "llm": ("llm_service.main", "serve the LLMService"),
    "up": ("toolcall.cli.stack", "run the whole stack: registry, LLMService, example plugins"),
    "demo": (
        "toolcall.cli.demo",
        "run the stack and a scripted conversation showing every feature",
    ),
    "tools": ("toolcall.cli.tools", "list, invoke and clear registered tools"),
    "chat": ("toolcall.cli.chat", "chat with the LLMService; streams the reply and tool calls"),
    "subscribe": ("toolcall.cli.subscribe", "print async tool results of a session as they arrive"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Only the chosen subcommand's module is imported (the LLM SDKs are slow to import)."""
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = argparse.ArgumentParser(
        prog="toolcall", description="Typed, fast, safe tool calling for LLM applications."
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
        p.set_defaults(module=module)
    return parser


def describe_rpc_error(exc: grpc.aio.AioRpcError, target: str) -> str:
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach {target} (UNAVAILABLE: {exc.details()})"
    return f"{exc.code().name}: {exc.details()}"


def run_async(main: Callable[[Any], Any], args: argparse.Namespace) -> int:
    try:
        return int(eventloop.run(main(args)) or 0)
    except KeyboardInterrupt:
        return 130
    except grpc.aio.AioRpcError as exc:
        target = getattr(args, "target", "server")
        print(f"error: {describe_rpc_error(exc, target)}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    setup_logging(args.log_level or ("WARNING" if args.command in CLIENT_COMMANDS else None))
    return run_async(importlib.import_module(args.module).main, args)


CLIENT_COMMANDS = {"tools", "chat", "subscribe"}
