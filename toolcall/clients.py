"""Small helpers for clients of the toolcall services (CLI, demo, SDK, tests)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toolcall import config
from toolcall.channels import open_channel
from toolcall.tls import ClientTLS, TLSSettings
from toolcall.v1 import registry_pb2, registry_pb2_grpc


def auth_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    """``authorization: Bearer <token>`` metadata when a token is configured."""
    token = config.token() if token is None else token
    return (("authorization", f"Bearer {token}"),) if token else ()


def channel(address: str, tls: ClientTLS | None = None) -> grpc.aio.Channel:
    """A channel from toolcall's one factory (create it inside the loop); TLS from
    ``tls`` or, by default, from the ``TOOLCALL_TLS_*`` variables."""
    return open_channel(address, tls=tls or ClientTLS.of(TLSSettings.from_env()))


async def list_all_tools(
    stub: registry_pb2_grpc.ToolRegistryAsyncStub,
    request: registry_pb2.ListRequest | None = None,
    *,
    timeout_s: float | None = None,
    max_tools: int = 1_000_000,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> tuple[list[registry_pb2.RegisteredTool], list[str]]:
    """Every tool ``ToolRegistry.List`` matches, following its pages; and the served roles.

    ``timeout_s`` bounds each page; ``metadata`` defaults to ``auth_metadata()``.
    ``max_tools`` bounds what is kept in memory: past it, RuntimeError (a
    registry caps its entries far below the default).
    """
    page = registry_pb2.ListRequest()
    if request is not None:
        page.CopyFrom(request)
    tools: list[registry_pb2.RegisteredTool] = []
    # Reads are authorised too when the registry has principals (toolcall/auth.py).
    meta = auth_metadata() if metadata is None else metadata
    while True:
        reply = await stub.List(page, timeout=timeout_s, metadata=meta)
        tools.extend(reply.tools)
        if len(tools) > max_tools:
            raise RuntimeError(f"the registry listed more than {max_tools} tools")
        if not reply.next_page_token:
            return tools, list(reply.roles)
        page.page_token = reply.next_page_token


async def wait_healthy(address: str, *, timeout_s: float = 15.0, service: str = "") -> None:
    """Polls ``grpc.health.v1.Health/Check`` until SERVING; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with channel(address) as ch:
        # types-grpcio-health-checking declares no methods on HealthStub.
        stub: Any = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                last = exc.code().name
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{address} not healthy after {timeout_s:g}s (last: {last})")
