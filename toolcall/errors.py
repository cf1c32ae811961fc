"""Aborting RPCs with a proper status and, for validation, google.rpc.BadRequest details."""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


async def abort_invalid(
    context: grpc.aio.ServicerContext, violations: list[tuple[str, str]]
) -> NoReturn:
    """INVALID_ARGUMENT naming each field and the rule it broke, as BadRequest details."""
    message = "; ".join(f"{f}: {r}" for f, r in violations)
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=r)
                for f, r in violations
            ]
        )
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable")  # abort_with_status always raises


def bad_request_violations(exc: grpc.aio.AioRpcError | grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (field, description) pairs of a BadRequest detail, if any."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    out: list[tuple[str, str]] = []
    if status is None:
        return out
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            out.extend((v.field, v.description) for v in br.field_violations)
    return out
