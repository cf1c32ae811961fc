"""B-go and B-ts: B's dispatch path to the Go and TypeScript example plugins.

Like B, the bench process plays the LLMService: ``Dispatcher.invoke(spec,
raw_arguments=...)`` with the spec a registry would hand out for the
plugin's sync tool (``weekday``), one gRPC hop over TCP loopback to a real
plugin process built from examples/go_plugin or examples/ts_plugin. Their
registration is pointed at a socket no one serves, as B's is.

The plugins are built by ``make example-plugins`` (``make bench`` runs it):
the Go binary and the compiled TypeScript land in .cache/examples and
examples/ts_plugin/dist. A scenario whose build is missing fails alone, with
that command in its error.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bench.processes import REPO_ROOT, ServerFailed, free_port, running
from bench.scenarios.base import BenchEnv, Call, WrongReply
from bench.scenarios.dispatch import plugin_env
from toolcall.dispatch import Dispatcher
from toolcall.jsonvalue import from_value, to_struct
from toolcall.tools import ToolSpec
from toolcall.v1 import tools_pb2

GO_BINARY = REPO_ROOT / ".cache" / "examples" / "go_plugin"
TS_ENTRY = REPO_ROOT / "examples" / "ts_plugin" / "dist" / "plugin.js"

# The examples' sync tool, as they register it (examples/*/tools.*).
TOOL = "weekday"
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "date": {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}$",
            "description": "The date, for example 2026-12-03.",
        }
    },
    "required": ["date"],
    "additionalProperties": False,
}
RAW_ARGUMENTS = json.dumps({"date": "2026-12-03"}, separators=(",", ":"))
OUTPUT = {"date": "2026-12-03", "weekday": "Thursday", "day_of_year": 337}


def spec_for(address: str) -> ToolSpec:
    definition = tools_pb2.ToolDefinition(
        name=TOOL,
        description="Tell the weekday and the day of the year of a calendar date (YYYY-MM-DD).",
        parameters=to_struct(PARAMETERS),
        callback_address=address,
        source="plugin:bench",
        timeout_seconds=30,
    )
    return ToolSpec.from_definition(definition)


@contextlib.asynccontextmanager
async def _open(env: BenchEnv, name: str, argv: Sequence[str]) -> AsyncIterator[Call]:
    address = f"127.0.0.1:{free_port()}"
    extra = {**plugin_env(env), "TOOLCALL_PLUGIN_ADDRESS": address, "TOOLCALL_LOG_LEVEL": "WARNING"}
    async with running(
        name,
        argv[1:],
        executable=argv[0],
        log_dir=env.log_dir,
        env=extra,
        connectable_at=address,
    ):
        spec = spec_for(address)
        dispatcher = Dispatcher()
        try:

            async def call() -> tools_pb2.ToolResult:
                return await dispatcher.invoke(spec, raw_arguments=RAW_ARGUMENTS, call_id="call_1")

            result = await call()
            if result.is_error:
                raise RuntimeError(f"{name}: dispatch failed: {result.error}")
            if (output := from_value(result.output)) != OUTPUT:
                raise WrongReply(f"{name}: expected {OUTPUT}, got {output!r}")
            yield call
        finally:
            await dispatcher.close()


def _built(path: str, what: str) -> str:
    if not (REPO_ROOT / path).exists():
        raise ServerFailed(f"{what} is not built: run 'make example-plugins'")
    return str(REPO_ROOT / path)


def open_go(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    binary = _built(str(GO_BINARY.relative_to(REPO_ROOT)), "the Go example plugin")
    return _open(env, "B-go", [binary])


def open_ts(env: BenchEnv) -> contextlib.AbstractAsyncContextManager[Call]:
    entry = _built(str(TS_ENTRY.relative_to(REPO_ROOT)), "the TypeScript example plugin")
    node = shutil.which("node")
    if node is None:
        raise ServerFailed("node is not on PATH")
    return _open(env, "B-ts", [node, entry])
