"""Small helpers for clients of the toolcall services (CLI, demo, SDK, tests)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toolcall import config
from toolcall.channels import open_channel


def auth_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    """``authorization: Bearer <token>`` metadata when a token is configured."""
    token = config.token() if token is None else token
    return (("authorization", f"Bearer {token}"),) if token else ()


def channel(address: str) -> grpc.aio.Channel:
    """A channel from toolcall's one factory (create it inside the loop)."""
    return open_channel(address)


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
