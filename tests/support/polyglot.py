"""The checks every SDK-less example plugin must pass (Go, TypeScript, ...), written once.

Each example (examples/go_plugin, examples/ts_plugin) serves the same two
tools, ``weekday`` (sync) and ``count_primes`` (async mode), and follows the
lease rules of docs/plugins.md. A language's test file builds its plugin
with the language's own tool and hands the command line to these checks,
which drive it through a real registry and LLMService:

* ``check_served``: the tools appear (with their modes, under a lease); a
  chat calls the sync tool; the async tool's result arrives on Subscribe; a
  tool error is an ``is_error`` result; a call that breaks the schema never
  reaches the plugin; a call past its deadline is stopped in the plugin;
  SIGTERM clears the tools (long before the lease could expire).
* ``check_killed``: with a token (read from TOOLCALL_TOKEN_FILE), SIGKILL
  leaves the tools until the lease expires, within the ttl.
* ``check_registers_again``: served on a unix socket, after ``tools clear``,
  after a removal from one role only (KeepAlive's ``tools_per_role``) and
  after the lease is revoked (KeepAlive NOT_FOUND), the tools come back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc

from tests.support.llm_env import llm_env
from tests.support.plugins import ChildProcess, child_env, list_tools, registry_in_process, wait_for
from tests.support.registry import running_registry
from toolcall.clients import auth_metadata, channel
from toolcall.jsonvalue import from_value, to_struct
from toolcall.v1 import llm_pb2, registry_pb2, registry_pb2_grpc, tools_pb2

TOOLS = {"weekday", "count_primes"}
# Where a language's build puts what it builds (gitignored); Go and npm keep
# their own caches in the user's home (GOCACHE, GOMODCACHE, ~/.npm), so a
# fresh clone on the same machine builds fast too.
BUILD_DIR = Path(__file__).resolve().parents[2] / ".cache" / "examples"


def build(argv: list[str], cwd: Path, what: str, timeout_s: float = 600) -> None:
    """Runs one build step; its output is the assertion message when it fails."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{what} failed:\n{done.stdout}\n{done.stderr}"


def toolchain_missing(*tools: str | None) -> bool:
    """Skip when a toolchain is missing on a developer's machine; CI must have them all."""
    return any(t is None for t in tools) and not os.environ.get("CI")


class BuiltPlugin(ChildProcess):
    """An example plugin process pointed at ``registry``, logging every call (DEBUG)."""

    def __init__(
        self,
        argv: list[str],
        name: str,
        registry: str,
        tmp_path: Path,
        *,
        lease_ttl: str = "3",
        **extra_env: str,
    ) -> None:
        self.name = name
        env = child_env(
            TOOLCALL_REGISTRY_ADDRESS=registry,
            TOOLCALL_PLUGIN_LEASE_TTL=lease_ttl,
            TOOLCALL_LOG_LEVEL="DEBUG",
            **extra_env,
        )
        for unset in ("TOOLCALL_TOKEN", "TOOLCALL_TOKEN_FILE", "TOOLCALL_PLUGIN_ID"):
            if unset not in extra_env:
                env.pop(unset, None)
        super().__init__(argv, tmp_path / f"{name}.log", env)

    async def wait_log(self, *words: str, timeout_s: float) -> str:
        """The first log line that holds all ``words``, once the plugin wrote it."""

        async def read() -> list[str]:
            return [line for line in self.log().splitlines() if all(w in line for w in words)]

        return (await wait_for(read, bool, timeout_s))[0]

    async def terminate(self) -> int:
        """SIGTERM, and its exit code (waited for in a thread: an in-process
        registry must go on answering the plugin's goodbye meanwhile)."""
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 10)


async def check_served(argv: list[str], name: str, tmp_path: Path) -> None:
    source = f"plugin:{name}"
    async with llm_env(tmp_path, plugin_address="") as env:
        # TTL 30 s: the lease cannot expire in this test (not before 20 s after
        # the last KeepAlive), so tools gone after SIGTERM were cleared.
        with BuiltPlugin(argv, name, env.registry.target, tmp_path, lease_ttl="30") as plugin:
            for tool in TOOLS:
                assert await env.llm.view.wait_for("default", tool, timeout_s=20), tool
            listed = {t.tool.name: t for t in await list_tools(env.registry_stub, source=source)}
            assert set(listed) == TOOLS
            assert listed["weekday"].tool.mode == tools_pb2.TOOL_MODE_SYNC
            assert listed["count_primes"].tool.mode == tools_pb2.TOOL_MODE_ASYNC
            assert all(t.lease_id for t in listed.values())

            subscribed = env.stub.Subscribe(
                llm_pb2.SubscribeRequest(session_id="poly", auto_ack=True)
            )
            # A chat calls the sync tool (the offline provider picks it by name).
            reply = await env.chat("poly", 'What weekday is "2026-12-03"?')
            [record] = reply.tool_calls
            assert record.call.name == "weekday" and not record.result.is_error, record
            assert from_value(record.result.output) == {
                "date": "2026-12-03",
                "weekday": "Thursday",
                "day_of_year": 337,
            }

            # The async tool: acknowledged at once, its result pushed on Subscribe.
            reply = await env.chat("poly", "Count the primes below 100000")
            [record] = reply.tool_calls
            assert record.call.name == "count_primes" and record.task_id, record
            pushed = await asyncio.wait_for(subscribed.read(), 20)
            assert isinstance(pushed, llm_pb2.SubscribeResponse)
            assert pushed.task.task_id == record.task_id
            assert pushed.task.status == llm_pb2.TASK_STATUS_SUCCEEDED, pushed.task
            assert from_value(pushed.task.result.output) == {"below": 100000, "primes": 9592}
            subscribed.cancel()

            # A tool error is a result with is_error, and the chat goes on.
            reply = await env.chat("poly", 'What weekday is "2026-02-30"?')
            [record] = reply.tool_calls
            assert record.result.is_error
            assert record.result.error == '"2026-02-30" is not a calendar date'

            # Arguments that break the schema stop at the registry: the plugin
            # logs every call it gets (DEBUG), and never sees this one.
            async def invoke(call_id: str, arguments: dict[str, object]) -> tools_pb2.ToolResult:
                request = registry_pb2.InvokeRequest(
                    name="weekday", arguments=to_struct(arguments), call_id=call_id
                )
                return (await env.registry_stub.Invoke(request, timeout=10)).result

            result = await invoke("schema-violation-1", {"date": 20261203})
            assert result.is_error and result.error.startswith("INVALID_ARGUMENT"), result
            result = await invoke("well-formed-1", {"date": "2000-01-01"})
            assert from_value(result.output)["weekday"] == "Saturday"
            await plugin.wait_log("well-formed-1", timeout_s=5)
            assert "schema-violation-1" not in plugin.log()

            # A call past its deadline is stopped in the plugin, which serves on.
            request = registry_pb2.InvokeRequest(
                name="count_primes", arguments=to_struct({"below": 10_000_000}), call_id="late-1"
            )
            try:
                late = await env.registry_stub.Invoke(request, timeout=0.3)
                assert late.result.is_error, late
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await plugin.wait_log("late-1", "stopped", timeout_s=10)
            result = await invoke("after-late-1", {"date": "2026-12-03"})
            assert not result.is_error, result

            # SIGTERM: cleared and revoked, not left to expire.
            stopped = time.monotonic()
            assert await plugin.terminate() == 0
            assert not await list_tools(env.registry_stub, source=source)
            assert time.monotonic() - stopped < 20
            assert await env.llm.view.wait_for("default", "weekday", timeout_s=5, present=False)


async def check_killed(argv: list[str], name: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o600)
    source = f"plugin:{name}"
    async with (
        registry_in_process(tmp_path, token="s3cret-token") as target,
        channel(target) as ch,
    ):
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        with BuiltPlugin(
            argv, name, target, tmp_path, lease_ttl="1.5", TOOLCALL_TOKEN_FILE=str(token_file)
        ) as plugin:
            await wait_for(lambda: list_tools(stub, source=source), lambda t: len(t) == 2, 20)
            killed = time.monotonic()
            plugin.proc.kill()  # no goodbye: only the lease's expiry removes the tools
            await wait_for(lambda: list_tools(stub, source=source), lambda t: not t, 10)
            # Within the ttl (1.5 s) after the last KeepAlive, plus the sweep: 5 s of margin.
            assert time.monotonic() - killed < 1.5 + 5
            # The token was sent: the registry refuses a call without it.
            try:
                await stub.Clear(registry_pb2.ClearRequest(source=source), timeout=5)
                raise AssertionError("Clear without a token was accepted")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            await stub.Clear(
                registry_pb2.ClearRequest(source=source),
                metadata=auth_metadata("s3cret-token"),
                timeout=5,
            )


async def check_registers_again(argv: list[str], name: str, tmp_path: Path) -> None:
    source = f"plugin:{name}"
    everywhere = {(r, n) for r in ("default", "support") for n in TOOLS}
    async with running_registry(tmp_path, roles=["default", "support"]) as reg:

        async def held() -> dict[tuple[str, str], str]:
            return {
                (t.role, t.tool.name): t.lease_id for t in await list_tools(reg.stub, source=source)
            }

        # TTL 1.5 s: a KeepAlive every 0.5 s; each wait below has 10 s of margin.
        # This one listens on a unix socket (TOOLCALL_PLUGIN_ADDRESS).
        address = f"unix:{tmp_path}/plugin.sock"
        with BuiltPlugin(
            argv, name, reg.target, tmp_path, lease_ttl="1.5", TOOLCALL_PLUGIN_ADDRESS=address
        ) as plugin:
            await wait_for(held, lambda h: set(h) == everywhere, 20)
            tools = await list_tools(reg.stub, source=source)
            assert {t.tool.callback_address for t in tools} == {address}
            reply = await reg.stub.Invoke(
                registry_pb2.InvokeRequest(name="weekday", raw_arguments='{"date": "2026-12-03"}'),
                timeout=10,
            )
            assert from_value(reply.result.output)["weekday"] == "Thursday", reply

            cleared = await reg.stub.Clear(registry_pb2.ClearRequest(source=source), timeout=5)
            assert cleared.removed == 4
            await wait_for(held, lambda h: set(h) == everywhere, 10)

            # Removed from one role only: the name count (2 of 2) alone looks complete.
            reply = await reg.stub.Unregister(
                registry_pb2.UnregisterRequest(name="weekday", role="support"), timeout=5
            )
            assert list(reply.affected_roles) == ["support"]
            await wait_for(held, lambda h: set(h) == everywhere, 10)

            # The lease is gone (as after a registry restart): KeepAlive says NOT_FOUND.
            [lease] = set((await held()).values())
            await reg.stub.RevokeLease(registry_pb2.RevokeLeaseRequest(lease_id=lease), timeout=5)
            again = await wait_for(held, lambda h: set(h) == everywhere, 10)
            assert lease not in set(again.values())
            assert await plugin.terminate() == 0
            assert not await held()
