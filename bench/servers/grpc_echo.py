"""Scenario A's server: the smallest grpc.aio ToolCallback, answering a fixed output.

No health, no reflection, no validation: the floor a one-hop gRPC call cannot
go below. As A it runs on gRPC's and asyncio's defaults (the bench starts it
with ``TOOLCALL_GRPC_TUNING=off`` and an empty ``GRPC_EXPERIMENTS``);
``--tuned`` runs it on the loop toolcall's processes use
(``toolcall.eventloop``), which with the inherited gRPC settings
(``toolcall.grpc_env``) shows what toolcall's runtime choices alone change.
``python -m bench.servers.grpc_echo [ADDRESS] [--tuned]`` (default 127.0.0.1:0).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc

from bench.payload import OUTPUT
from bench.processes import announce_ready
from toolcall import eventloop
from toolcall.jsonvalue import to_value
from toolcall.v1 import callback_pb2, callback_pb2_grpc

REPLY = callback_pb2.ToolCallbackInvokeResponse(output=to_value(OUTPUT), is_error=False)


class EchoCallback(callback_pb2_grpc.ToolCallbackServicer):
    async def Invoke(
        self,
        request: callback_pb2.ToolCallbackInvokeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> callback_pb2.ToolCallbackInvokeResponse:
        return REPLY

    async def CancelJob(
        self, request: callback_pb2.CancelJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> callback_pb2.CancelJobResponse:
        return callback_pb2.CancelJobResponse()


async def serve(address: str) -> None:
    server = grpc.aio.server()
    callback_pb2_grpc.add_ToolCallbackServicer_to_server(EchoCallback(), server)
    port = server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    target = address if address.startswith("unix:") else f"{address.rpartition(':')[0]}:{port}"
    announce_ready(target)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address", nargs="?", default="127.0.0.1:0")
    parser.add_argument("--tuned", action="store_true")
    args = parser.parse_args()
    if args.tuned:
        eventloop.run(serve(args.address))
    else:
        asyncio.run(serve(args.address))


if __name__ == "__main__":
    main()
