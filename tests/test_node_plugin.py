"""The Node.js plugin (examples/node_plugin) registers and is invoked through the registry.

It also keeps its tools registered as the Python SDK does: after a ``tools
clear``, and after a tool is removed from one of its roles only (KeepAlive's
``tools_per_role``; the distinct-name count alone never shows that).
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.plugins import (
    REPO_ROOT,
    ChildProcess,
    child_env,
    list_tools,
    registry_in_process,
    wait_for,
)
from tests.support.registry import running_registry
from toolcall.clients import channel
from toolcall.jsonvalue import from_value, to_struct
from toolcall.v1 import registry_pb2, registry_pb2_grpc

SOURCE = "plugin:node_text"
NODE_DIR = REPO_ROOT / "examples" / "node_plugin"
NODE, NPM = shutil.which("node"), shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are needed for the Node.js plugin test"
)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """Installs the plugin's dependencies from package-lock.json when missing (clean clone)."""
    modules = NODE_DIR / "node_modules"
    if (
        not (modules / "@grpc" / "grpc-js").is_dir()
        or not (modules / "@grpc/proto-loader").is_dir()
    ):
        assert NPM is not None
        done = subprocess.run(
            [NPM, "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm install failed:\n{done.stdout}\n{done.stderr}"
    return modules


class NodePlugin(ChildProcess):
    name = "node plugin"

    def __init__(self, registry: str, tmp_path: Path, lease_ttl: str = "30") -> None:
        assert NODE is not None
        env = child_env(TOOLCALL_REGISTRY_ADDRESS=registry, TOOLCALL_PLUGIN_LEASE_TTL=lease_ttl)
        super().__init__([NODE, str(NODE_DIR / "plugin.js")], tmp_path / "node.log", env)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[str]:
    async with registry_in_process(tmp_path) as target:
        yield target


@pytest.mark.anyio
async def test_node_plugin_registers_is_invoked_and_clears_on_sigterm(
    node_modules: Path, registry: str, tmp_path: Path
) -> None:
    async with channel(registry) as ch:
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        with NodePlugin(registry, tmp_path) as plugin:
            tools = await wait_for(
                lambda: list_tools(stub, source="plugin:node_text"), lambda t: len(t) == 3, 20
            )
            assert {t.tool.name for t in tools} == {"word_count", "reverse", "length_bar"}
            assert all(t.lease_id for t in tools)
            word_count = next(t.tool for t in tools if t.tool.name == "word_count")
            assert word_count.callback_address.startswith("127.0.0.1:")

            reply = await stub.Invoke(
                registry_pb2.InvokeRequest(
                    name="word_count", arguments=to_struct({"text": "one two  three\nfour"})
                ),
                timeout=10,
            )
            assert not reply.result.is_error, reply.result.error
            assert from_value(reply.result.output) == {"words": 4, "characters": 19, "lines": 2}

            reply = await stub.Invoke(
                registry_pb2.InvokeRequest(name="reverse", raw_arguments='{"text": "héllo"}'),
                timeout=10,
            )
            assert from_value(reply.result.output) == "olléh"

            # An image as a content part beside the output: a real PNG.
            reply = await stub.Invoke(
                registry_pb2.InvokeRequest(
                    name="length_bar", arguments=to_struct({"text": "héllo"})
                ),
                timeout=10,
            )
            assert not reply.result.is_error, reply.result.error
            assert from_value(reply.result.output) == {"characters": 5, "width": 5, "height": 8}
            [part] = reply.result.parts
            assert part.image.mime_type == "image/png"
            assert part.image.data.startswith(b"\x89PNG\r\n\x1a\n")
            # Decoded by the zlib of another implementation: a 5 x 8 grayscale image.
            width, height = struct.unpack(">II", part.image.data[16:24])
            assert (width, height) == (5, 8)
            idat = part.image.data.index(b"IDAT")
            length = struct.unpack(">I", part.image.data[idat - 4 : idat])[0]
            rows = zlib.decompress(part.image.data[idat + 4 : idat + 4 + length])
            assert rows == (b"\x00" + b"\x00" * 5) * 8

            # The registry validates against the schema the Node plugin registered.
            reply = await stub.Invoke(
                registry_pb2.InvokeRequest(name="reverse", arguments=to_struct({"text": 5})),
                timeout=10,
            )
            assert reply.result.is_error and "INVALID_ARGUMENT" in reply.result.error

            stopped = time.monotonic()
            plugin.proc.send_signal(signal.SIGTERM)
            await wait_for(lambda: list_tools(stub, source="plugin:node_text"), lambda t: not t, 15)
            # Cleared, not expired: expiry needs at least TTL - TTL/3 = 20 s.
            assert time.monotonic() - stopped < 15
            assert plugin.proc.wait(10) == 0


@pytest.mark.anyio
async def test_node_plugin_registers_its_tools_again_after_tools_clear(
    node_modules: Path, registry: str, tmp_path: Path
) -> None:
    # TTL 3 s: a KeepAlive every second reports how many tools the lease holds.
    async with channel(registry) as ch:
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        with NodePlugin(registry, tmp_path, lease_ttl="3"):
            await wait_for(
                lambda: list_tools(stub, source="plugin:node_text"), lambda t: len(t) == 3, 20
            )
            cleared = await stub.Clear(
                registry_pb2.ClearRequest(source="plugin:node_text"), timeout=5
            )
            assert cleared.removed == 3
            assert not await list_tools(stub, source="plugin:node_text")
            # Back by the next heartbeat (TTL/3 = 1 s); 10 s of margin.
            tools = await wait_for(
                lambda: list_tools(stub, source="plugin:node_text"), lambda t: len(t) == 3, 10
            )
            assert {t.tool.name for t in tools} == {"word_count", "reverse", "length_bar"}


@pytest.mark.anyio
async def test_node_plugin_registers_a_tool_again_in_the_one_role_it_was_removed_from(
    node_modules: Path, tmp_path: Path
) -> None:
    async with running_registry(tmp_path, roles=["default", "support"]) as reg:

        async def placed() -> set[tuple[str, str]]:
            return {(t.role, t.tool.name) for t in await list_tools(reg.stub, source=SOURCE)}

        names = ("word_count", "reverse", "length_bar")
        everywhere = {(r, n) for r in ("default", "support") for n in names}
        # TTL 1.5 s: a KeepAlive every 0.5 s.
        with NodePlugin(reg.target, tmp_path, lease_ttl="1.5"):
            await wait_for(placed, lambda p: p == everywhere, 20)
            reply = await reg.stub.Unregister(
                registry_pb2.UnregisterRequest(name="reverse", role="support"), timeout=5
            )
            assert list(reply.affected_roles) == ["support"]
            assert ("support", "reverse") not in await placed()
            # Many heartbeats: the name count (3 of 3) alone looks complete for ever.
            await wait_for(placed, lambda p: p == everywhere, 5)


def test_node_plugin_falls_back_to_the_name_count_without_tools_per_role(
    node_modules: Path,
) -> None:
    # A registry from before tools_per_role sends an empty map: only the
    # distinct-name count can say something is missing.
    script = """
    const { missing, state } = require('./plugin.js');
    state.registered = 2;
    state.perRole = { default: 2, support: 2 };
    console.log(JSON.stringify([
      missing({ tools: 2, tools_per_role: {} }),
      missing({ tools: 1, tools_per_role: {} }),
      missing({ tools: 2, tools_per_role: { default: 2, support: 1 } }),
      missing({ tools: 2, tools_per_role: { default: 2, support: 2 } }),
    ]));
    """
    assert NODE is not None
    done = subprocess.run(
        [NODE, "-e", script], cwd=NODE_DIR, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        "",
        "1 of 2 tools",
        "1 of 2 in role 'support'",
        "",
    ]
