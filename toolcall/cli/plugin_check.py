"""``toolcall plugin check ADDRESS``: test a running plugin against the ToolCallback contract.

For plugin authors in any language (docs/plugins.md, "Conformance
checklist"). It calls the plugin directly, the way the registry and the
LLMService do: ``ToolCallback.Invoke`` over gRPC, or for an HTTP callback
plugin (ADDRESS ``http://127.0.0.1:PORT/path``) a POST of the callback body
``{name, arguments, call_id, raw_arguments, session_id, role}`` whose answer
must be ``{output, is_error, error}`` or a bare JSON value (docs/http.md).
It makes well-formed, malformed (argument string that is not JSON, wrong
types), unknown-tool, deadline-exceeded and cancelled calls, then checks
that the plugin still answers. Each check says what came back and whether
that meets the contract: PASS, WARN (works, but not as the contract
recommends) or FAIL (a crash, an UNKNOWN/INTERNAL status or HTTP 5xx, an
answer that is not the contract's JSON, a stall, an error without a
reason). Exit code 1 when any check fails.

The tools to call come from the registry: every tool whose callback address
is ADDRESS (``ToolRegistry.List``), with arguments made from each one's
schema. ``--tool NAME --args JSON`` names one tool and its arguments instead
(then no registry is needed).

What it cannot see: whether the plugin really stops working when a call is
cancelled or its deadline passes (the caller's side ends either way). It
checks that those calls end cleanly and that the plugin answers afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import sys
import time
import uuid
from typing import Any

import grpc
import httpx2

from toolcall import config
from toolcall.address_policy import (
    canonical_address,
    is_http,
    loopback_address_error,
    split_http,
)
from toolcall.cli.tools import seconds
from toolcall.clients import channel, list_all_tools
from toolcall.http_callbacks import (
    CALLBACK_HEADERS,
    CallbackFailed,
    decode_reply,
    read_bounded,
)
from toolcall.jsonvalue import from_struct, from_value, sorted_keys, to_struct
from toolcall.tools import DefinitionError, ToolSpec
from toolcall.v1 import callback_pb2, callback_pb2_grpc, registry_pb2, registry_pb2_grpc, tools_pb2

# The service this command talks to (named when an address serves another one).
SERVICE = "toolcall.v1.ToolCallback"

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
# Cancelled calls sent in a row, to see that a burst of them leaves the plugin serving.
CANCEL_BURST = 20
# A deadline the plugin cannot meet: gone before (or just as) the call arrives.
SHORT_DEADLINE_S = 0.001
# Statuses that say the plugin broke, whatever the call: an exception escaped
# (UNKNOWN), the server failed (INTERNAL), or it is gone (UNAVAILABLE).
BROKEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE}
# An HTTP plugin's answer is read up to the gRPC message limit, as the Dispatcher does.
MAX_HTTP_REPLY_BYTES = config.MAX_MESSAGE_BYTES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser(
        "check",
        help="call a running plugin's ToolCallback with good and bad calls; report each",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    check.add_argument(
        "address",
        help="the plugin's callback address, e.g. 127.0.0.1:40253, or an HTTP plugin's "
        "callback URL, e.g. http://127.0.0.1:9876/tool_invoke",
    )
    check.add_argument(
        "--registry",
        default=config.registry_address(),
        help="registry to learn the plugin's tools from (default: $TOOLCALL_REGISTRY_ADDRESS "
        "or %(default)s)",
    )
    check.add_argument("--tool", help="check this tool only (default: all the plugin's tools)")
    check.add_argument(
        "--args", help="well-formed arguments for --tool, a JSON object (default: from its schema)"
    )
    check.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        help="deadline of each call in seconds (the tool's timeout when shorter; default 10)",
    )
    check.add_argument("--json", action="store_true", help="print the results as JSON")


@dataclasses.dataclass(frozen=True, slots=True)
class Tool:
    """What the checker knows of one tool: its schema and timeout, if the registry said."""

    name: str
    parameters: dict[str, Any]
    timeout_s: float
    arguments: dict[str, Any] | None  # well-formed arguments, None if none could be made
    spec: ToolSpec | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    check: str
    tool: str
    verdict: str
    got: str
    why: str = ""
    ms: float = 0.0

    def line(self) -> str:
        why = f" ({self.why})" if self.why else ""
        took = f" [{self.ms:.1f} ms]" if self.ms else ""
        return f"{self.verdict}  {self.tool:<20} {self.check:<14} {self.got}{why}{took}"


@dataclasses.dataclass(slots=True)
class Reply:
    """One call's outcome: a response, or a status (for an HTTP plugin: the status its
    answer stands for, with ``http_status`` set when it answered one other than 2xx)."""

    response: callback_pb2.ToolCallbackInvokeResponse | tools_pb2.ToolResult | None = None
    code: grpc.StatusCode | None = None
    details: str = ""
    ms: float = 0.0
    http_status: int = 0
    # An HTTP answer that is not the contract's JSON: why.
    unreadable: str = ""

    @property
    def label(self) -> str:
        """What came back, in a word: a status name, ``HTTP 500``, or a result."""
        if self.response is not None:
            return "answered first"
        if self.http_status:
            return f"HTTP {self.http_status}"
        assert self.code is not None
        return self.code.name

    def describe(self) -> str:
        if self.unreadable:
            return f"answer {_short(self.unreadable)}"
        if self.http_status:
            return f"HTTP {self.http_status}: {_short(self.details) or '(empty body)'}"
        if self.response is None:
            assert self.code is not None
            return f"status {self.code.name}: {_short(self.details)}"
        r = self.response
        if r.is_error:
            return f"is_error: {_short(r.error) or '(no message)'}"
        if not r.HasField("output"):
            return "result with no output"
        return f"result: {_short(json.dumps(sorted_keys(from_value(r.output))))}"


def _short(text: str, limit: int = 120) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class GrpcPlugin:
    """Calls a gRPC plugin's ``ToolCallback.Invoke``."""

    http = False

    def __init__(self, stub: callback_pb2_grpc.ToolCallbackAsyncStub) -> None:
        self.stub = stub

    async def invoke(
        self, request: callback_pb2.ToolCallbackInvokeRequest, timeout_s: float
    ) -> Reply:
        started = time.perf_counter()
        try:
            response = await self.stub.Invoke(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            return Reply(code=exc.code(), details=exc.details() or "", ms=_ms(started))
        return Reply(response=response, ms=_ms(started))


# An HTTP plugin's status as the gRPC status it stands for in the verdicts: a
# refusal (400, 422), a tool it does not serve (404), a crash (5xx).
HTTP_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class HttpPlugin:
    """POSTs the HTTP callback contract's body to a plugin's URL, as the Dispatcher does."""

    http = True

    def __init__(self, url: str, client: httpx2.AsyncClient) -> None:
        self.url = url
        self.client = client

    async def invoke(
        self, request: callback_pb2.ToolCallbackInvokeRequest, timeout_s: float
    ) -> Reply:
        body = {
            "name": request.name,
            "arguments": from_struct(request.arguments),
            "call_id": request.call_id,
            "raw_arguments": request.raw_arguments,
            "session_id": request.session_id,
            "role": "default",
        }
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                status, data = await self._exchange(json.dumps(body).encode())
        except TimeoutError:
            details = f"no answer within {timeout_s:g}s"
            return Reply(code=grpc.StatusCode.DEADLINE_EXCEEDED, details=details, ms=_ms(started))
        except httpx2.TransportError as exc:
            details = f"the connection failed ({type(exc).__name__})"
            return Reply(code=grpc.StatusCode.UNAVAILABLE, details=details, ms=_ms(started))
        except CallbackFailed as exc:
            return Reply(code=grpc.StatusCode.RESOURCE_EXHAUSTED, details=str(exc))
        if not 200 <= status < 300:
            code = HTTP_CODES.get(status)
            if code is None:
                code = (
                    grpc.StatusCode.INTERNAL
                    if status >= 500
                    else grpc.StatusCode.FAILED_PRECONDITION
                )
            text = data.decode("utf-8", "replace")
            return Reply(code=code, details=text, http_status=status, ms=_ms(started))
        try:
            result = decode_reply(data)
        except CallbackFailed as exc:
            return Reply(code=grpc.StatusCode.INTERNAL, unreadable=str(exc), ms=_ms(started))
        return Reply(response=result, ms=_ms(started))

    async def _exchange(self, body: bytes) -> tuple[int, bytes]:
        async with self.client.stream(
            "POST", self.url, content=body, headers=CALLBACK_HEADERS
        ) as reply:
            return reply.status_code, await read_bounded(reply, MAX_HTTP_REPLY_BYTES)


Plugin = GrpcPlugin | HttpPlugin


class Checker:
    """Runs every check against one plugin address."""

    def __init__(self, plugin: Plugin, timeout_s: float) -> None:
        self.plugin = plugin
        self.timeout_s = timeout_s
        self.results: list[Result] = []

    def record(self, result: Result) -> None:
        self.results.append(result)

    async def call(
        self,
        name: str,
        *,
        arguments: dict[str, Any] | None = None,
        raw: str | None = None,
        timeout_s: float,
    ) -> Reply:
        request = callback_pb2.ToolCallbackInvokeRequest(
            name=name,
            raw_arguments=json.dumps(arguments) if raw is None else raw,
            call_id=f"check_{uuid.uuid4().hex[:12]}",
            session_id="toolcall-plugin-check",
        )
        if arguments is not None:
            request.arguments.CopyFrom(to_struct(arguments))
        return await self.plugin.invoke(request, timeout_s)

    def deadline_for(self, tool: Tool) -> float:
        return min(self.timeout_s, tool.timeout_s) if tool.timeout_s > 0 else self.timeout_s

    async def well_formed(self, tool: Tool) -> bool:
        """True when the tool answered a good call (later checks need a working tool)."""
        if tool.arguments is None:
            self.record(
                Result(
                    "well-formed",
                    tool.name,
                    SKIP,
                    "no arguments could be made from the schema",
                    "pass --tool NAME --args JSON",
                )
            )
            return False
        reply = await self.call(
            tool.name, arguments=tool.arguments, timeout_s=self.deadline_for(tool)
        )
        verdict, why = _judge_result(reply, expect_success=True)
        self.record(Result("well-formed", tool.name, verdict, reply.describe(), why, reply.ms))
        return verdict != FAIL

    async def malformed(self, tool: Tool) -> None:
        required = bool(tool.parameters.get("required"))
        reply = await self.call(
            tool.name, arguments={}, raw='{"this is": not JSON', timeout_s=self.deadline_for(tool)
        )
        verdict, why = _judge_refusal(reply, refusal_expected=required and not _takes_raw(tool))
        self.record(Result("bad-json", tool.name, verdict, reply.describe(), why, reply.ms))

        wrong = wrong_types(tool.parameters, tool.arguments or {})
        if wrong is None:
            self.record(
                Result("wrong-types", tool.name, SKIP, "the schema names no typed property")
            )
            return
        what, arguments = wrong
        reply = await self.call(tool.name, arguments=arguments, timeout_s=self.deadline_for(tool))
        verdict, why = _judge_refusal(reply, refusal_expected=True)
        self.record(Result("wrong-types", tool.name, verdict, f"{what} -> {reply.describe()}", why))

    async def unknown_tool(self, arguments: dict[str, Any]) -> None:
        """A name the plugin does not serve, with arguments one of its tools takes."""
        name = f"toolcall_check_no_such_tool_{uuid.uuid4().hex[:8]}"
        reply = await self.call(name, arguments=arguments, timeout_s=self.timeout_s)
        http = self.plugin.http
        if reply.code == grpc.StatusCode.NOT_FOUND:
            verdict, why = PASS, ""
        elif reply.response is not None and reply.response.is_error:
            # Over HTTP the URL picks the tool and a 404 tells the caller no more.
            verdict, why = (
                (PASS, "")
                if http
                else (WARN, "works, but NOT_FOUND tells the caller its view is stale")
            )
        elif reply.response is not None and http:
            verdict, why = (
                WARN,
                "answered as if it ran: the URL picks the tool, but a plugin that checks "
                "`name` (404 or is_error) catches a registration that points at the wrong URL",
            )
        elif reply.response is not None:
            verdict, why = FAIL, "a tool it does not serve answered as if it ran"
        elif reply.code in BROKEN or reply.unreadable:
            verdict, why = FAIL, "expected 404 or is_error" if http else "expected status NOT_FOUND"
        else:
            verdict, why = (PASS, "") if http else (FAIL, "expected status NOT_FOUND")
        got = f"{name} -> {reply.describe()}"
        self.record(Result("unknown-tool", "-", verdict, got, why, reply.ms))

    async def deadline(self, tool: Tool) -> None:
        reply = await self.call(
            tool.name, arguments=tool.arguments or {}, timeout_s=SHORT_DEADLINE_S
        )
        if reply.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            verdict, why = PASS, ""
        elif reply.response is not None:
            verdict, why = _judge_result(reply, expect_success=False)
            why = why or "answered within 1 ms"
        else:
            verdict, why = FAIL, "expected DEADLINE_EXCEEDED or a result"
        self.record(Result("deadline", tool.name, verdict, reply.describe(), why, reply.ms))

    async def cancelled(self, tool: Tool) -> None:
        request = callback_pb2.ToolCallbackInvokeRequest(
            name=tool.name,
            arguments=to_struct(tool.arguments or {}),
            raw_arguments=json.dumps(tool.arguments or {}),
            call_id="check_cancel",
        )
        codes: dict[str, int] = {}
        broken = False
        for _ in range(CANCEL_BURST):
            # Cancelling the task cancels the gRPC call, or closes the HTTP connection.
            call = asyncio.ensure_future(self.plugin.invoke(request, self.deadline_for(tool)))
            await asyncio.sleep(0.005)  # in flight: the plugin has it, most likely
            call.cancel()
            try:
                reply = await call
            except asyncio.CancelledError:
                label = "CANCELLED"
            else:
                label = reply.label
                broken = broken or reply.code in BROKEN or bool(reply.unreadable)
            codes[label] = codes.get(label, 0) + 1
        got = ", ".join(f"{n} {k}" for k, n in sorted(codes.items()))
        verdict, why = (FAIL, "a cancelled call broke the plugin") if broken else (PASS, "")
        self.record(Result("cancelled", tool.name, verdict, f"{CANCEL_BURST} calls: {got}", why))

    async def still_serving(self, tool: Tool) -> None:
        reply = await self.call(
            tool.name, arguments=tool.arguments or {}, timeout_s=self.deadline_for(tool)
        )
        verdict, why = _judge_result(reply, expect_success=True)
        if verdict == FAIL:
            why = "after the bad calls above the plugin no longer answers: " + why
        self.record(Result("still-serving", tool.name, verdict, reply.describe(), why, reply.ms))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _takes_raw(tool: Tool) -> bool:
    return tool.spec is not None and tool.spec.accepts_raw_arguments


def _judge_result(reply: Reply, *, expect_success: bool) -> tuple[str, str]:
    """A good call must get a result: an output, or an is_error with a reason."""
    if reply.unreadable:
        return FAIL, "not the contract's answer: {output, is_error, error} or a JSON value"
    if reply.response is None:
        assert reply.code is not None
        if reply.code in BROKEN:
            return FAIL, "an exception escaped or the plugin failed: answer is_error instead"
        if reply.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return FAIL, "no answer within the deadline"
        return (FAIL, "expected a result") if expect_success else (PASS, "")
    r = reply.response
    if r.is_error:
        if not r.error:
            return FAIL, "is_error without a message: the model cannot act on it"
        return PASS, "the tool reported an error"
    if not r.HasField("output"):
        return WARN, "output unset: the model sees null"
    try:
        json.dumps(from_value(r.output), allow_nan=False)
    except ValueError:
        return FAIL, "output holds NaN or Infinity, which JSON cannot carry"
    return PASS, ""


def _judge_refusal(reply: Reply, *, refusal_expected: bool) -> tuple[str, str]:
    """Arguments that break the schema: is_error with a reason, or INVALID_ARGUMENT."""
    if reply.unreadable:
        return FAIL, "not the contract's answer: {output, is_error, error} or a JSON value"
    if reply.http_status and reply.code != grpc.StatusCode.INTERNAL:
        # The Dispatcher turns any HTTP error into "answered HTTP 4xx": the reason is lost.
        return WARN, "the caller sees only the status: answer is_error with the reason"
    if reply.response is None:
        assert reply.code is not None
        if reply.code == grpc.StatusCode.INVALID_ARGUMENT:
            return PASS, ""
        if reply.code in BROKEN:
            return FAIL, "an exception escaped: check the arguments and answer is_error"
        if reply.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return FAIL, "no answer within the deadline"
        return WARN, "expected is_error or INVALID_ARGUMENT"
    r = reply.response
    if r.is_error:
        return (PASS, "") if r.error else (FAIL, "is_error without a message")
    if not refusal_expected:
        return PASS, "the tool needs no arguments"
    return WARN, "ran anyway: it trusts its caller's validation (any local process can call it)"


# --- arguments from a schema -------------------------------------------------------------


def example_value(schema: Any, depth: int = 0) -> Any:
    """A value meant to satisfy ``schema`` (simple schemas); the caller validates it."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_value(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "string":
        size = max(_size(schema, "minLength", 0), min(7, _size(schema, "maxLength", 7)))
        return ("example" * (size // 7 + 1))[:size]
    if kind in ("integer", "number"):
        low = _number(schema, "minimum", _number(schema, "exclusiveMinimum", 0))
        value = max(1, math.ceil(low) + (1 if "exclusiveMinimum" in schema else 0))
        return min(value, _number(schema, "maximum", value))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        return [example_value(schema.get("items"), depth + 1)] * _size(schema, "minItems", 0)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: example_value(props.get(k), depth + 1) for k in schema.get("required") or []}
    return None


# The largest string or array made from a schema: a schema asking for more (any
# registered schema is input like any other) gets no example; --args then.
MAX_EXAMPLE_SIZE = 1000


def _size(schema: dict[str, Any], key: str, default: int) -> int:
    value = schema.get(key, default)
    return min(value, MAX_EXAMPLE_SIZE) if isinstance(value, int) and value >= 0 else default


def _number(schema: dict[str, Any], key: str, default: float) -> float:
    value = schema.get(key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else default


# A value of another JSON type than each type: what a model gets wrong.
WRONG_VALUE = {
    "string": 12345,
    "integer": "not a number",
    "number": "not a number",
    "boolean": "yes",
    "array": "not a list",
    "object": "not an object",
}


def wrong_types(
    parameters: dict[str, Any], good: dict[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """``good`` with one property given a value of the wrong type; None if none is typed."""
    for name, prop in (parameters.get("properties") or {}).items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if isinstance(kind, str) and kind in WRONG_VALUE:
            bad = WRONG_VALUE[kind]
            return f"{name}={json.dumps(bad)} (schema: {kind})", {**good, name: bad}
    return None


def tool_from_definition(d: tools_pb2.ToolDefinition) -> Tool:
    try:
        spec: ToolSpec | None = ToolSpec.from_definition(d)
    except DefinitionError:
        spec = None  # the registry accepted it; check the plugin anyway
    parameters = from_struct(d.parameters) if d.HasField("parameters") else {}
    arguments = example_value(parameters) if parameters else {}
    if not isinstance(arguments, dict):
        arguments = None
    if spec is not None and arguments is not None:
        _, problem = spec.check_arguments(arguments=arguments)
        if problem:
            arguments = None  # a schema too rich for example_value: ask for --args
    timeout = d.timeout_seconds or config.DEFAULT_TOOL_TIMEOUT_S
    return Tool(d.name, parameters, timeout, arguments, spec)


async def tools_from_registry(registry: str, address: str) -> list[Tool]:
    """The tools registered with ``address`` as callback, one per name."""
    async with channel(registry) as ch:
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        listed, _ = await list_all_tools(stub, registry_pb2.ListRequest(), timeout_s=10)
    wanted = canonical_address(address)
    found: dict[str, Tool] = {}
    for t in listed:
        if canonical_address(t.tool.callback_address) == wanted and t.tool.name not in found:
            found[t.tool.name] = tool_from_definition(t.tool)
    return list(found.values())


async def run_checks(address: str, tools: list[Tool], *, timeout_s: float = 10.0) -> list[Result]:
    """Every check against the plugin at ``address``; results in the order they ran."""
    if is_http(address):
        # As the Dispatcher's client: no proxies from the environment, no redirects.
        async with httpx2.AsyncClient(trust_env=False, follow_redirects=False) as client:
            return await _run(Checker(HttpPlugin(address, client), timeout_s), tools)
    async with channel(address) as ch:
        return await _run(
            Checker(GrpcPlugin(callback_pb2_grpc.ToolCallbackStub(ch)), timeout_s), tools
        )


async def _run(checker: Checker, tools: list[Tool]) -> list[Result]:
    working = [t for t in tools if await checker.well_formed(t)]
    for tool in tools:
        await checker.malformed(tool)
    probe = working[0] if working else (tools[0] if tools else None)
    await checker.unknown_tool(probe.arguments or {} if probe is not None else {})
    if probe is not None:
        await checker.deadline(probe)
        await checker.cancelled(probe)
        if probe.arguments is not None:
            await checker.still_serving(probe)
    return checker.results


async def reachable(address: str, timeout_s: float) -> bool:
    """Whether a connection to ``address`` opens (else every check would say UNAVAILABLE)."""
    if is_http(address):
        host, _, port = split_http(address)[0].rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), timeout_s
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True
    async with channel(address) as ch:
        try:
            await asyncio.wait_for(ch.channel_ready(), timeout_s)
        except TimeoutError:
            return False
    return True


async def main(args: argparse.Namespace) -> int:
    if err := loopback_address_error(args.address):
        print(f"error: {args.address}: {err} (plugins serve on loopback)", file=sys.stderr)
        return 2
    if args.args is not None and not args.tool:
        print("error: --args needs --tool", file=sys.stderr)
        return 2
    given: dict[str, Any] | None = None
    if args.args is not None:
        try:
            given = json.loads(args.args)
        except json.JSONDecodeError as exc:
            print(f"error: --args is not valid JSON: {exc}", file=sys.stderr)
            return 2
        if not isinstance(given, dict):
            print("error: --args must be a JSON object", file=sys.stderr)
            return 2
    args.target = args.registry  # for the CLI's "cannot reach" message
    if args.tool and given is not None:
        try:
            registered = await tools_from_registry(args.registry, args.address)
        except grpc.aio.AioRpcError:
            registered = []  # the tool and arguments are given: no registry needed
    else:
        registered = await tools_from_registry(args.registry, args.address)
    tools = registered
    if args.tool:
        known = {t.name: t for t in registered}
        base = known.get(args.tool) or Tool(args.tool, {}, config.DEFAULT_TOOL_TIMEOUT_S, None)
        tools = [
            dataclasses.replace(base, arguments=given if given is not None else base.arguments)
        ]
    if not tools:
        print(
            f"error: no tools with callback address {args.address} in the registry at "
            f"{args.registry}; is the plugin registered there? Or: --tool NAME --args JSON",
            file=sys.stderr,
        )
        return 2
    args.target = args.address
    if not await reachable(args.address, args.timeout):
        print(
            f"error: cannot reach a plugin at {args.address} within {args.timeout:g}s",
            file=sys.stderr,
        )
        return 1
    results = await run_checks(args.address, tools, timeout_s=args.timeout)
    failed = sum(r.verdict == FAIL for r in results)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in results], indent=2, ensure_ascii=False))
    else:
        print(f"plugin {args.address}: {', '.join(t.name for t in tools)}")
        for r in results:
            print(r.line())
        counts = {v: sum(r.verdict == v for r in results) for v in (PASS, WARN, FAIL, SKIP)}
        summary = ", ".join(f"{n} {v.lower()}" for v, n in counts.items() if n)
        print(f"checks: {summary}; {'does not meet' if failed else 'meets'} the contract")
    return 1 if failed else 0
