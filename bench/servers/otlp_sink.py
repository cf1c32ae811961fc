"""F-observed's trace collector: an OTLP/gRPC TraceService that counts spans and drops them.

Stands in for an OpenTelemetry Collector on loopback, so the services under
test export as they would in production (batched OTLP over gRPC) without the
cost of a real collector's processing landing on the measured machine.
``python -m bench.servers.otlp_sink [ADDRESS]`` (default 127.0.0.1:0).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.processes import announce_ready


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans += len(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve(address: str) -> None:
    server = grpc.aio.server()
    sink = Sink()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    announce_ready(f"{address.rpartition(':')[0]}:{port}")
    await stop.wait()
    print(f"received {sink.spans} spans", flush=True)
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address", nargs="?", default="127.0.0.1:0")
    asyncio.run(serve(parser.parse_args().address))


if __name__ == "__main__":
    main()
