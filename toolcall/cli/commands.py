"""The ``toolcall`` command's parser and dispatch (loaded by ``toolcall.cli.main``).

Exit codes: 0 success; 1 the call failed or a tool returned an error (one
readable line on stderr); 2 bad usage; 130 interrupted; 141 stdout's reader
went away (as for a shell tool killed by SIGPIPE). stdout carries results
only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toolcall import config, eventloop, installed_version
from toolcall.clients import channel
from toolcall.serving import setup_logging

# What a toolcall address may serve, to name it when a command dials the wrong one.
KNOWN_SERVICES = ("toolcall.v1.ToolRegistry", "toolcall.v1.LLMService", "toolcall.v1.ToolCallback")

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
    "gateway": ("gateway.main", "serve the HTTP gateway: MCP at /mcp"),
    "plugin": ("toolcall.cli.plugin_check", "check a running plugin against the plugin contract"),
    "certs": ("toolcall.cli.certs", "create a development CA and TLS certificates"),
    "mcp": ("toolcall.cli.mcp", "MCP both ways: serve the registry's tools, or mount MCP servers"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Only the chosen subcommand's module is imported (the LLM SDKs are slow to import)."""
    chosen = next((a for a in argv if a in COMMANDS), None)
    parser = argparse.ArgumentParser(
        prog="toolcall", description="Typed, fast, safe tool calling for LLM applications."
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    parser.add_argument(
        "--version", action="version", version=f"toolcall {installed_version('(not installed)')}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
        p.set_defaults(module=module)
    return parser


# Where each service's address is set, to say so when it cannot be reached.
ADDRESS_SETTINGS = {
    "toolcall.v1.ToolRegistry": "--registry or TOOLCALL_REGISTRY_ADDRESS",
    "toolcall.v1.LLMService": "--llm or TOOLCALL_LLM_ADDRESS",
}


def describe_rpc_error(exc: grpc.aio.AioRpcError, target: str, module: Any = None) -> str:
    """One line for a failed call. UNAVAILABLE is "cannot reach" only when ``target``
    does not answer: a running LLMService says UNAVAILABLE too when its provider is down."""
    status = f"{exc.code().name}: {exc.details()}"
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return status
    wanted = getattr(module, "SERVICE", "")
    try:
        answered = wanted in eventloop.run(services_at(target))
    except Exception:
        answered = False
    if answered:
        return status
    hint = ""
    if where := ADDRESS_SETTINGS.get(wanted):
        hint = f"; is the stack up (`toolcall up`)? Another address: {where}"
    return f"cannot reach {target} ({status}){hint}"


async def services_at(target: str, timeout_s: float = 2.0) -> list[str]:
    """Which of toolcall's services ``target`` serves, by its health service."""
    async with channel(target) as ch:
        # types-grpcio-health-checking declares no methods on HealthStub.
        stub: Any = health_pb2_grpc.HealthStub(ch)

        async def serves(name: str) -> bool:
            try:
                await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=timeout_s)
            except grpc.aio.AioRpcError:
                return False  # NOT_FOUND: not this one (or no health service at all)
            return True

        found = await asyncio.gather(*(serves(n) for n in KNOWN_SERVICES))
    return [name for name, yes in zip(KNOWN_SERVICES, found, strict=True) if yes]


def wrong_service(module: Any, target: str) -> str:
    """``ADDRESS serves X, not Y`` when the command dialled another service's address."""
    wanted = getattr(module, "SERVICE", "")
    try:
        served = eventloop.run(services_at(target))
    except Exception:
        return ""
    if not wanted or wanted in served:
        return ""
    what = " and ".join(served) if served else "none of toolcall's services"
    return f"{target} serves {what}, not {wanted}"


def run_async(main: Callable[[Any], Any], args: argparse.Namespace) -> int:
    try:
        code = int(eventloop.run(main(args)) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is handled below, not at exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``toolcall tools list | head -1``): quietly stop, as
        # shell tools do; stdout goes to /dev/null so the exit flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except grpc.aio.AioRpcError as exc:
        target = getattr(args, "target", "server")
        module = sys.modules.get(args.module)
        message = describe_rpc_error(exc, target, module)
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            if mix_up := wrong_service(module, target):
                message = f"{mix_up} ({message})"
        print(f"error: {message}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(argv).parse_args(argv)
        setup_logging(args.log_level or ("WARNING" if args.command in CLIENT_COMMANDS else None))
        return run_async(importlib.import_module(args.module).main, args)
    except config.ConfigError as exc:  # e.g. an unreadable TOOLCALL_TOKEN_FILE
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        # A service's settings refused with a message (``--roles ,``, an empty
        # token file): bad usage, said like every other error (argparse's exits
        # carry a number and pass through).
        if not isinstance(exc.code, str):
            raise
        print(f"error: {exc.code}", file=sys.stderr)
        return 2


CLIENT_COMMANDS = {"tools", "chat", "subscribe"}
