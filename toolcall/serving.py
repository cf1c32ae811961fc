"""Running a grpc.aio server the same way for every toolcall service.

Health (``grpc.health.v1``) and reflection are always on, so
``grpcurl -plaintext 127.0.0.1:48911 list`` works; listening on a unix socket
is ``unix:/path``; SIGTERM/SIGINT drain in-flight calls for ``grace`` seconds.

Reflection serves toolcall's protos with their comments: the generated
``_pb2`` modules carry descriptors without source info, so ``make protos``
also writes ``toolcall/v1/descriptors.binpb`` (protoc ``--include_source_info``)
and reflection answers with those files, so ``grpcurl describe`` shows the
documentation written in ``protos/``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import signal
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from toolcall import config
from toolcall.telemetry import LIVE, LOG_FORMATS, JsonFormatter, MetricsServer, Telemetry

log = logging.getLogger(__name__)

SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", config.MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", config.MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


class ServiceHost:
    """One grpc.aio server with health, reflection and graceful shutdown.

    ``add_servicers`` registers the service's servicers on the server;
    ``service_names`` are their full names (for reflection and health).
    ``telemetry`` adds its interceptor (spans and RPC metrics, ahead of the
    others so refused calls count too) and serves ``/metrics`` at its
    ``metrics_address`` while the server runs (``add_gauges``: read at scrape).
    """

    def __init__(
        self,
        address: str,
        service_names: Sequence[str],
        add_servicers: Callable[[grpc.aio.Server], None],
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        grace_s: float = 5.0,
        credentials: grpc.ServerCredentials | None = None,
        telemetry: Telemetry = Telemetry.OFF,
    ) -> None:
        self.address = address
        # TLS (toolcall/tls.py); never on a unix socket, whose file mode is its gate.
        self.credentials = None if address.startswith("unix:") else credentials
        self.telemetry = telemetry
        self.metrics: MetricsServer | None = None
        self._gauges: list[Any] = []
        self._gauge_keys: list[int] = []
        self.service_names = list(service_names)
        self.grace_s = grace_s
        self.server = grpc.aio.server(
            interceptors=[*telemetry.interceptors(), *interceptors], options=SERVER_OPTIONS
        )
        add_servicers(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            DocumentedReflection(
                (
                    *self.service_names,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
            ),
            self.server,
        )
        self.port = 0
        self._on_stop: list[Callable[[], Awaitable[None]]] = []

    @property
    def target(self) -> str:
        """Address clients should dial (the ephemeral port filled in)."""
        if self.address.startswith("unix:"):
            return self.address
        host = self.address.rpartition(":")[0]
        return f"{host}:{self.port}"

    def add_gauges(self, source: Any) -> None:
        """A ``LiveGauges`` source, served while this host runs with metrics on."""
        self._gauges.append(source)

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Runs ``callback`` after the server stopped accepting calls."""
        self._on_stop.append(callback)

    async def start(self) -> int:
        if self.address.startswith("unix:"):
            path = self.address.removeprefix("unix:").removeprefix("//")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        try:
            if self.credentials is not None:
                self.port = self.server.add_secure_port(self.address, self.credentials)
            else:
                self.port = self.server.add_insecure_port(self.address)
        except RuntimeError:  # grpc's "Failed to bind"; its reason went to the C log only
            self.port = -1
        if self.port == -1 or (self.port == 0 and not self.address.startswith("unix:")):
            raise OSError(
                f"{self.address} is in use by another process, or is not an address of this host"
            )
        if self.telemetry.metrics_address:
            try:
                self.metrics = MetricsServer(self.telemetry.metrics_address)
                log.info("metrics on http://%s/metrics", self.metrics.address)
            except OSError as exc:  # a taken port costs the metrics, not the service
                log.warning("%s; serving without /metrics", exc)
        if self.telemetry.metrics:
            self._gauge_keys = [LIVE.add(source) for source in self._gauges]
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s", ", ".join(self.service_names), self.target)
        return self.port

    async def stop(self) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.grace_s)
        for key in self._gauge_keys:
            LIVE.remove(key)
        if self.metrics is not None:
            self.metrics.close()
        for callback in self._on_stop:
            try:
                await callback()
            except Exception:
                log.exception("shutdown step failed")
        self.telemetry.stopped()
        log.info("stopped %s", ", ".join(self.service_names))

    async def run_until_signal(self, *, started: bool = False) -> None:
        """Starts (unless ``started``), serves until SIGTERM/SIGINT, then drains and stops."""
        if not started:
            await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()


DESCRIPTORS = "descriptors.binpb"


@functools.cache
def documented_files() -> dict[str, bytes]:
    """toolcall's proto files with source info (comments), serialized, by file name.

    Empty when ``toolcall/v1/descriptors.binpb`` is missing: reflection then
    serves the descriptors without comments.
    """
    try:
        data = resources.files("toolcall.v1").joinpath(DESCRIPTORS).read_bytes()
    except OSError:
        log.debug("no %s: reflection serves protos without comments", DESCRIPTORS)
        return {}
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    for f in files:
        _clear_json_names(f.message_type)
    return {f.name: f.SerializeToString() for f in files}


def _clear_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """As in the compiled stubs: protoc's descriptor set spells out each field's
    json_name, and grpcurl then prints camelCase instead of the proto names."""
    for message in messages:
        for field in (*message.field, *message.extension):
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


class DocumentedReflection(reflection.aio.ReflectionServicer):
    """Server reflection whose toolcall files carry their comments.

    It also finds the file of a method (``toolcall.v1.ToolRegistry.Register``,
    what ``grpcurl describe`` asks for), which protobuf's Python pool does not.
    """

    def __init__(self, service_names: Sequence[str]) -> None:
        super().__init__(service_names)
        self._documented = documented_files()

    async def ServerReflectionInfo(  # type: ignore[override]  # stubs: a coroutine
        self,
        request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest],
        context: Any,
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        # One response per request, in order: at most one request is pending here.
        pending: collections.deque[reflection_pb2.ServerReflectionRequest] = collections.deque()

        async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            async for request in request_iterator:
                pending.append(request)
                yield method_to_service(request)

        responses: Any = super().ServerReflectionInfo(requests(), context)
        async for response in responses:
            response.original_request.CopyFrom(pending.popleft())
            if response.HasField("file_descriptor_response"):
                protos = response.file_descriptor_response.file_descriptor_proto
                for i, serialized in enumerate(protos):
                    name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
                    if name in self._documented:
                        protos[i] = self._documented[name]
            yield response


def method_to_service(
    request: reflection_pb2.ServerReflectionRequest,
) -> reflection_pb2.ServerReflectionRequest:
    """A file_containing_symbol request for a method, asked for its service instead."""
    if not request.HasField("file_containing_symbol"):
        return request
    pool = descriptor_pool.Default()
    symbol = request.file_containing_symbol
    try:
        pool.FindFileContainingSymbol(symbol)
        return request
    except KeyError:
        service, _, method = symbol.rpartition(".")
    try:
        if method not in pool.FindServiceByName(service).methods_by_name:
            return request
    except KeyError:
        return request
    return reflection_pb2.ServerReflectionRequest(host=request.host, file_containing_symbol=service)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def setup_logging(level: str | None = None, log_format: str | None = None) -> None:
    """Raises config.ConfigError for a level logging does not know (not a traceback).

    ``log_format`` (else ``TOOLCALL_LOG_FORMAT``): ``text`` (the default) or
    ``json``, one object per line with the current trace and span ids.
    """
    name = (level or config.env("LOG_LEVEL", "INFO")).strip().upper()
    if name not in LOG_LEVELS:
        raise config.ConfigError(
            f"log level {name[:40]!r} (--log-level or TOOLCALL_LOG_LEVEL) is not one of "
            + ", ".join(LOG_LEVELS)
        )
    fmt = (log_format or config.env("LOG_FORMAT", "text")).strip().lower()
    if fmt not in LOG_FORMATS:
        raise config.ConfigError(
            f"log format {fmt[:40]!r} (TOOLCALL_LOG_FORMAT) is not one of " + ", ".join(LOG_FORMATS)
        )
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=name, handlers=[handler])
    else:
        logging.basicConfig(level=name, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One INFO line per HTTP request (HTTP plugins' URLs, provider calls) or MCP
    # session would drown the services' own lines; their warnings still show.
    if logging.getLevelName(name) > logging.DEBUG:
        for noisy in ("httpx", "httpx2", "mcp.server.streamable_http_manager"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
