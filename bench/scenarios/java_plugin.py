"""B-java: B's dispatch path (``Dispatcher.invoke``, TCP) to the Java example plugin.

The bench process plays the LLMService as in B: it holds the spec of the
plugin's sync tool ``text_stats`` (the schema examples/java_plugin
registers) and dispatches the model's argument string to
``java -jar examples/java_plugin/target/toolcall-java-plugin.jar``
(``make java-plugin`` builds it; ``make bench`` does so first). The plugin
listens on a port picked here and is ready when its gRPC health check says
SERVING; its registrar points at a socket no one serves, as in B.

The JVM compiles hot code only after thousands of calls, so the scenario
makes ``JIT_WARMUP_CALLS`` calls before the timed rounds: the figures are
those of a warmed-up plugin, as a long-running one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator

from bench.payload import CALL_ID
from bench.processes import REPO_ROOT, ServerFailed, free_port, running
from bench.scenarios.base import BenchEnv, Call, WrongReply
from bench.scenarios.dispatch import plugin_env
from toolcall.dispatch import Dispatcher
from toolcall.jsonvalue import from_value, to_struct
from toolcall.tools import ToolSpec
from toolcall.v1 import tools_pb2

JAR = REPO_ROOT / "examples" / "java_plugin" / "target" / "toolcall-java-plugin.jar"
JIT_WARMUP_CALLS = 5000
TOOL = "text_stats"
# The parameters examples/java_plugin/.../Tools.java registers for text_stats.
PARAMETERS = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "The text to work on."}},
    "required": ["text"],
    "additionalProperties": False,
}
RAW_ARGUMENTS = '{"text":"Beijing"}'
OUTPUT = {"words": 1, "characters": 7, "lines": 1}


def spec_for(address: str) -> ToolSpec:
    return ToolSpec.from_definition(
        tools_pb2.ToolDefinition(
            name=TOOL,
            description="Count the words, characters and lines of a text.",
            parameters=to_struct(PARAMETERS),
            callback_address=address,
            source="plugin:java_text",
            timeout_seconds=10,
        )
    )


@contextlib.asynccontextmanager
async def open_scenario(env: BenchEnv) -> AsyncIterator[Call]:
    java = shutil.which("java")
    if java is None or not JAR.exists():
        raise ServerFailed(f"B-java needs java and {JAR} (build it: make java-plugin)")
    address = f"127.0.0.1:{free_port()}"
    plugin_vars = {**plugin_env(env), "TOOLCALL_PLUGIN_ADDRESS": address}
    async with running(
        "B-java",
        ["-jar", str(JAR)],
        log_dir=env.log_dir,
        env=plugin_vars,
        healthy_at=address,
        executable=java,
    ):
        spec = spec_for(address)
        dispatcher = Dispatcher()
        try:

            async def call() -> tools_pb2.ToolResult:
                return await dispatcher.invoke(spec, raw_arguments=RAW_ARGUMENTS, call_id=CALL_ID)

            result = await call()
            if result.is_error:
                raise RuntimeError(f"B-java: dispatch failed: {result.error}")
            if from_value(result.output) != OUTPUT:
                raise WrongReply(f"B-java: expected {OUTPUT}, got {from_value(result.output)}")
            for _ in range(JIT_WARMUP_CALLS // 50):
                await asyncio.gather(*(call() for _ in range(50)))
            yield call
        finally:
            await dispatcher.close()
