"""``toolcall tools list|show|invoke|clear``: the registry from the command line."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import grpc

from toolcall import config
from toolcall.clients import auth_metadata, channel, list_all_tools
from toolcall.jsonvalue import from_struct, from_value, sorted_keys
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

# The service this command talks to (named when an address serves another one).
SERVICE = "toolcall.v1.ToolRegistry"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    registry_help = "registry address (default: $TOOLCALL_REGISTRY_ADDRESS or %(default)s)"
    parser.add_argument(
        "--registry", dest="target", default=config.registry_address(), help=registry_help
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser(
        "list",
        help="list tools (what a conversation in --role sees)",
        description="List tools (what a conversation in --role sees). INVOKES, ERRORS and "
        "MEAN_MS count the calls made through the registry (`tools invoke`, "
        "ToolRegistry.Invoke); a chat's calls go straight to the plugin and are not counted "
        "here (every call is in toolcall_tool_call_duration_seconds: docs/observability.md).",
    )
    ls.add_argument("--role", help="only tools visible to this role")
    ls.add_argument("--source", default="", help="only tools with this source")
    ls.add_argument("--json", action="store_true", help="print JSON, every field")
    show = sub.add_parser(
        "show",
        help="a tool's title, description, hints, schemas, timeout and ack message",
    )
    show.add_argument("name", help="tool name")
    show.add_argument("--role", help="this role's definition of the tool")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    inv = sub.add_parser("invoke", help="call a tool through the registry")
    inv.add_argument("name", help="tool name")
    inv.add_argument("--args", default="{}", help="arguments as a JSON object (default: {})")
    inv.add_argument("--role", help="use this role's definition of the tool")
    inv.add_argument(
        "--timeout", type=seconds, default=None, help="deadline in seconds (more than 0)"
    )
    clr = sub.add_parser("clear", help="remove every tool registered with a source")
    clr.add_argument("--source", required=True, help='source tag, e.g. "plugin:weather"')
    clr.add_argument("--role", help="only within this role")
    # The default written out: with SUPPRESS, %(default)s would break --help.
    after_help = registry_help.replace("%(default)s", config.registry_address())
    for action in (ls, show, inv, clr):
        # Also after the action (``tools list --registry X``); SUPPRESS keeps the
        # value given before it when this one is absent.
        action.add_argument("--registry", dest="target", default=argparse.SUPPRESS, help=after_help)


def seconds(text: str) -> float:
    """A deadline: a finite number above 0 (gRPC reads 0 as no deadline at all)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


async def main(args: argparse.Namespace) -> int:
    async with channel(args.target) as ch:
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        if args.action == "list":
            return await _list(stub, args)
        if args.action == "show":
            return await _show(stub, args)
        if args.action == "invoke":
            return await _invoke(stub, args)
        reply = await stub.Clear(
            registry_pb2.ClearRequest(source=args.source, role=args.role),
            metadata=auth_metadata(),
        )
        print(f"removed {reply.removed}")
        return 0


def _safe(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``), so a
    registered value cannot drive the terminal (older registries stored any)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def tool_row(t: registry_pb2.RegisteredTool) -> dict[str, Any]:
    """Every field of a registered tool, snake_case, as plain JSON values."""
    return {
        "role": t.role,
        "name": t.tool.name,
        "description": t.tool.description,
        "parameters": sorted_keys(from_struct(t.tool.parameters)),
        "mode": tools_pb2.ToolMode.Name(t.tool.mode),
        "timeout_seconds": whole(t.tool.timeout_seconds),
        "ack_message": t.tool.ack_message,
        "accepts_raw_arguments": t.tool.accepts_raw_arguments,
        "source": t.tool.source,
        "callback_address": t.tool.callback_address,
        "title": t.tool.title,
        "annotations": hints_of(t.tool),
        "output_schema": sorted_keys(from_struct(t.tool.output_schema))
        if t.tool.HasField("output_schema")
        else None,
        "metadata": dict(sorted(t.tool.metadata.items())),
        "lease_id": t.lease_id,
        "calls": t.stats.calls,
        "errors": t.stats.errors,
        "mean_latency_ms": round(t.stats.mean_latency_ms, 3),
    }


_HINTS = ("read_only", "destructive", "idempotent", "open_world")


def hints_of(d: tools_pb2.ToolDefinition) -> dict[str, bool]:
    """The hints the tool set (an unset hint is absent: it takes MCP's default)."""
    return {h: getattr(d.annotations, h) for h in _HINTS if d.annotations.HasField(h)}  # type: ignore[arg-type]


def whole(x: float) -> float | int:
    """``5`` rather than ``5.0``, as grpcurl and JSON write it."""
    return int(x) if x.is_integer() else x


async def _list(stub: registry_pb2_grpc.ToolRegistryAsyncStub, args: argparse.Namespace) -> int:
    tools, roles = await list_all_tools(
        stub, registry_pb2.ListRequest(role=args.role, source=args.source)
    )
    if args.json:
        rows = [tool_row(t) for t in tools]
        print(json.dumps({"roles": roles, "tools": rows}, indent=2))
        return 0
    header = ("ROLE", "NAME", "MODE", "SOURCE", "INVOKES", "ERRORS", "MEAN_MS")
    rows_t = [
        tuple(
            _safe(c)
            for c in (
                t.role,
                t.tool.name,
                "async" if t.tool.mode == tools_pb2.TOOL_MODE_ASYNC else "sync",
                t.tool.source or "-",
                str(t.stats.calls),
                str(t.stats.errors),
                f"{t.stats.mean_latency_ms:.2f}",
            )
        )
        for t in tools
    ]
    widths = [max(len(r[i]) for r in [header, *rows_t]) for i in range(len(header))]
    for r in [header, *rows_t]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if not rows_t:
        print(f"(no tools; roles served: {_safe(', '.join(roles))})")
    return 0


async def _show(stub: registry_pb2_grpc.ToolRegistryAsyncStub, args: argparse.Namespace) -> int:
    tools, _ = await list_all_tools(stub, registry_pb2.ListRequest(role=args.role))
    found = [tool_row(t) for t in tools if t.tool.name == args.name]
    if not found:
        where = f"role {args.role!r}" if args.role is not None else "any role"
        print(f"error: NOT_FOUND: no tool {args.name!r} in {where}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found if len(found) > 1 else found[0], indent=2))
        return 0
    for i, row in enumerate(found):
        if i:
            print()
        for key in (
            "name",
            "title",
            "role",
            "mode",
            "timeout_seconds",
            "ack_message",
            "source",
            "callback_address",
        ):
            print(_safe(f"{key + ':':<18}{row[key] if row[key] != '' else '-'}"))
        hints = ", ".join(h if on else f"not {h}" for h, on in row["annotations"].items())
        print(_safe(f"{'annotations:':<18}{hints or '-'}"))
        for key, value in row["metadata"].items():
            print(_safe(f"{'metadata:':<18}{key}={value}"))
        print(_safe(f"{'description:':<18}{row['description'] or '-'}"))
        for key in ("parameters", "output_schema"):
            if row[key] is None:
                continue
            schema = json.dumps(row[key], indent=2, ensure_ascii=False)
            print(f"{key}:\n  " + "\n  ".join(_safe(line) for line in schema.split("\n")))
    return 0


async def _invoke(stub: registry_pb2_grpc.ToolRegistryAsyncStub, args: argparse.Namespace) -> int:
    try:
        json.loads(args.args)
    except json.JSONDecodeError as exc:
        print(f"error: --args is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        reply = await stub.Invoke(
            registry_pb2.InvokeRequest(name=args.name, raw_arguments=args.args, role=args.role),
            timeout=args.timeout,
            metadata=auth_metadata(),  # Invoke runs code: gated like a change
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED or args.timeout is None:
            raise
        # The client's own deadline, not the tool's timeout (that one is a result).
        print(
            f"error: DEADLINE_EXCEEDED: no reply within --timeout {args.timeout:g}s "
            "(this command's deadline; the tool's own timeout is shown by `tools show`)",
            file=sys.stderr,
        )
        return 1
    # stdout carries results only: an error goes to stderr, on one line, with
    # whatever output the tool attached to it.
    if reply.result.is_error:
        output = sorted_keys(from_value(reply.result.output))
        extra = "" if output is None else f" (output: {json.dumps(output, ensure_ascii=False)})"
        print(f"error: {_safe(reply.result.error)}{_safe(extra)}", file=sys.stderr)
        return 1
    # json.dumps escapes C0 controls itself; the rest (C1, bidi) is escaped per line.
    text = json.dumps(sorted_keys(from_value(reply.result.output)), indent=2, ensure_ascii=False)
    print("\n".join(_safe(line) for line in text.split("\n")))
    return 0
