"""A plugin's heartbeat notices tools the registry lost in one role only.

A tool registered without a role lives in every role. When someone removes
it from one role, the lease still holds the name (in the other roles), so a
heartbeat that counts distinct names sees nothing missing and the tool never
comes back there. KeepAlive now also counts per role, and the plugin
compares per role. Real parts: a registry serving two roles and the weather
example plugin as its own process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.plugins import PluginProcess, list_tools, wait_for
from tests.support.registry import running_registry
from toolcall.v1 import registry_pb2

pytestmark = pytest.mark.anyio

SOURCE = "plugin:weather"


async def test_a_tool_removed_from_one_role_only_is_registered_there_again(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, roles=["default", "support"]) as reg:

        async def placed() -> set[tuple[str, str]]:
            return {(t.role, t.tool.name) for t in await list_tools(reg.stub, source=SOURCE)}

        everywhere = {
            (role, name)
            for role in ("default", "support")
            for name in ("get_weather", "get_forecast")
        }
        # TTL 1.5 s: a KeepAlive every 0.5 s.
        with PluginProcess(
            "toolcall_examples.weather_plugin", reg.target, tmp_path, lease_ttl="1.5"
        ):
            await wait_for(placed, lambda p: p == everywhere, 15)
            reply = await reg.stub.Unregister(
                registry_pb2.UnregisterRequest(name="get_weather", role="support"), timeout=5
            )
            assert list(reply.affected_roles) == ["support"]
            assert ("support", "get_weather") not in await placed()
            # Many heartbeats: before, the name count (2 of 2) looked complete for ever.
            await wait_for(placed, lambda p: p == everywhere, 5)


async def test_two_plugins_serving_one_tool_name_are_told_why_their_tools_keep_vanishing(
    tmp_path: Path,
) -> None:
    # Each one's registration replaces the other's; each heartbeat finds its tool
    # gone. The log used to say only "registry lost tools (1 of 2 tools)", forever.
    async with running_registry(tmp_path) as reg:
        first = PluginProcess(
            "toolcall_examples.weather_plugin", reg.target, tmp_path, lease_ttl="1.5"
        )
        with first:
            await wait_for(lambda: reg.names(source=SOURCE), lambda n: len(n) == 2, 15)
            second = PluginProcess(
                "toolcall_examples.weather_plugin",
                reg.target,
                tmp_path / "second",
                lease_ttl="1.5",
                extra_env={"TOOLCALL_PLUGIN_ID": "weather_copy"},
            )
            with second:

                async def told() -> str:
                    return first.log() + second.log()

                logs = await wait_for(told, lambda text: "same tool name" in text, 15)
    lost = [line for line in logs.splitlines() if "registry lost tools" in line]
    assert lost and all("get_weather" in line for line in lost), lost
    assert any("another plugin registers the same tool name" in line for line in lost), lost
