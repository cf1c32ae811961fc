"""Control characters in names, roles and sources: refused at the door, escaped on the way out.

A source like ``"plugin:\\x1b[2J"`` used to be stored and printed as is by
``toolcall tools list``, so a local process could drive the operator's
terminal. Now every name, role and source with a non-printable character is
INVALID_ARGUMENT naming the field, a registry configured with such a role
does not start, and the CLI escapes whatever an older registry still holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import pytest

from registry_service.store import Entry
from tests.support.registry import running_registry, settings, tool
from toolcall.cli import tools as tools_cli
from toolcall.errors import bad_request_violations
from toolcall.tools import ToolSpec
from toolcall.v1 import registry_pb2

pytestmark = pytest.mark.anyio

HOSTILE = ["\x1b[2J", "a\rb", "bell\x07", "nul\x00", "del\x7f", "c1\x9b", "rtl\u202eevil", "\n"]


@pytest.mark.parametrize("text", HOSTILE)
async def test_register_refuses_control_characters_in_role_and_source(
    tmp_path: Path, text: str
) -> None:
    async with running_registry(tmp_path) as reg:
        for definition, field in [
            (tool("t", source="plugin:" + text), "tool.source"),
            (tool("t", role="default" + text), "tool.role"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reg.register(definition)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [f for f, _ in bad_request_violations(info.value)] == [field]
            assert "non-printable" in (info.value.details() or "")
        assert await reg.names() == []


@pytest.mark.parametrize(
    ("method", "message", "field"),
    [
        ("Unregister", registry_pb2.UnregisterRequest(name="t\x1b[2J"), "name"),
        ("Unregister", registry_pb2.UnregisterRequest(name="t", role="r\r"), "role"),
        ("Clear", registry_pb2.ClearRequest(source="s\x1b]0;x\x07"), "source"),
        ("Clear", registry_pb2.ClearRequest(source="s", role="r\u202e"), "role"),
        ("List", registry_pb2.ListRequest(source="s\x00"), "source"),
        ("List", registry_pb2.ListRequest(role="r\n"), "role"),
        ("Invoke", registry_pb2.InvokeRequest(name="t\x9b"), "name"),
        ("Invoke", registry_pb2.InvokeRequest(name="t", role="\x1b"), "role"),
    ],
)
async def test_request_names_roles_and_sources_with_control_characters_are_invalid(
    tmp_path: Path, method: str, message: object, field: str
) -> None:
    async with running_registry(tmp_path) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(reg.stub, method)(message, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in bad_request_violations(info.value)] == [field]


async def test_watch_of_a_role_with_control_characters_is_invalid(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        call = reg.stub.Watch(registry_pb2.WatchRequest(role="r\x1b"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_configured_role_with_control_characters_is_a_settings_problem(tmp_path: Path) -> None:
    problems = settings(tmp_path, roles=["default", "ops\x1b[31m"]).problems()
    assert len(problems) == 1 and "non-printable" in problems[0]
    assert "\\x1b" in problems[0]  # quoted with repr: the message itself is safe to print


async def test_tools_list_escapes_what_an_older_registry_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_registry(tmp_path) as reg:
        # Stored before names were checked: put in directly, past validation.
        spec = ToolSpec.from_definition(tool("t", source="ok"))
        spec.definition.source = "plugin:\x1b[2J\x1b]0;pwned\x07\u202e"
        reg.host.registry.store.put(Entry.create(spec, "default"))
        args = argparse.Namespace(
            target=reg.target, action="list", role=None, source="", json=False
        )
        assert await tools_cli.main(args) == 0
        table = capsys.readouterr().out
        assert "t" in table and "plugin:" in table
        assert all(c.isprintable() for c in table.replace("\n", ""))
        assert "\\x1b[2J" in table and "\\u202e" in table
        args.json = True
        assert await tools_cli.main(args) == 0
        assert all(c.isprintable() for c in capsys.readouterr().out.replace("\n", ""))
