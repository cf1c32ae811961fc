"""Traces (OpenTelemetry), metrics (Prometheus) and JSON logs, in one place.

Every toolcall process gets one ``Telemetry`` from its settings (the program's
edge reads the environment) and hands it to the parts that record: the
Dispatcher (one span and one histogram sample per tool call, wherever the call
came from), the chat loop (turn and model-round spans, token counters), the
async tasks (a span per task, linked to the turn that started it) and the
gRPC servers (an interceptor: a SERVER span per RPC that continues the
caller's W3C ``traceparent``, and an RPC histogram). ``Telemetry.OFF``, the
default, records nothing; each hook then costs one attribute test.

Names follow OpenTelemetry's GenAI conventions where they exist
(``execute_tool {tool}``, ``chat {model}``, ``gen_ai.*`` attributes); the
full list of spans and metrics is in docs/observability.md.

Cardinality: label values come from the registry (tool names), from fixed
sets (outcomes, paths, providers) or through a ``BoundedLabel`` (models), never
from model output: a tool name the model made up is counted as ``(unknown)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextvars import Context, copy_context
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from toolcall import config

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from toolcall.tools import ToolSpec
    from toolcall.v1 import tools_pb2

log = logging.getLogger(__name__)

# A label value past a BoundedLabel's cap, and a tool name no registry entry has.
OTHER = "(other)"
UNKNOWN_TOOL = "(unknown)"
# Distinct tool names (and models) one process puts in labels; later ones are
# counted as OTHER. The registry bounds its tools (TOOLCALL_MAX_TOOLS), this
# bounds the series a scrape returns whatever that is set to.
MAX_TOOL_LABELS = 1000
MAX_MODEL_LABELS = 64

_STATUS_NAMES = frozenset(code.name for code in grpc.StatusCode)


class BoundedLabel:
    """At most ``limit`` distinct values; any value past them becomes ``OTHER``.

    Thread-safe enough for its use: values are only added from the event loop.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


def outcome(result: tools_pb2.ToolResult) -> str:
    """``ok``; the status our side gave the failure, lowercased (``deadline_exceeded``,
    ``unavailable``, ``invalid_argument``...); or ``tool_error`` for the tool's own."""
    if not result.is_error:
        return "ok"
    code = result.error.partition(":")[0]
    return code.lower() if code in _STATUS_NAMES else "tool_error"


# -- metrics ------------------------------------------------------------------
#
# One registry per process, with the process, platform and GC collectors; the
# services of one process (tests run several) share it. prometheus-client
# rather than OTel metrics: its counters are a lock and an add (the Dispatcher
# records on every call), its text parser reads /metrics back in the tests,
# and OTel's Prometheus exporter is still a beta (0.66b2).

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_MODEL_LATENCY = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120)

TOOL_CALLS = Histogram(
    "toolcall_tool_call_duration_seconds",
    "Tool calls by tool, path (chat: the LLMService; invoke: Registry.Invoke), "
    "mode (sync/async) and outcome",
    ("tool", "path", "mode", "outcome"),
    buckets=_LATENCY,
    registry=REGISTRY,
)
MODEL_ROUNDS = Histogram(
    "toolcall_model_round_duration_seconds",
    "Model rounds (one provider request each) by provider, model and finish reason",
    ("provider", "model", "finish"),
    buckets=_MODEL_LATENCY,
    registry=REGISTRY,
)
MODEL_TOKENS = Counter(
    "toolcall_model_tokens",
    "Tokens the providers reported, by provider, model and kind (prompt/completion)",
    ("provider", "model", "kind"),
    registry=REGISTRY,
)
TURNS = Counter(
    "toolcall_chat_turns",
    "Chat and ChatStream turns by outcome (answered, round_limit, failed)",
    ("outcome",),
    registry=REGISTRY,
)
ROUNDS_PER_TURN = Histogram(
    "toolcall_chat_rounds_per_turn",
    "Model rounds of each completed turn",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 33),
    registry=REGISTRY,
)
ROUND_LIMIT_STOPS = Counter(
    "toolcall_chat_round_limit_stops",
    "Turns stopped at max_tool_rounds without a final answer",
    registry=REGISTRY,
)
TASKS_STARTED = Counter(
    "toolcall_async_tasks_started", "Async tool tasks started", registry=REGISTRY
)
TASKS_FINISHED = Counter(
    "toolcall_async_tasks_finished",
    "Async tool tasks finished, by status (succeeded, failed)",
    ("status",),
    registry=REGISTRY,
)
RESULTS_DELIVERED = Counter(
    "toolcall_async_results_delivered",
    "Async results written to Subscribe streams",
    registry=REGISTRY,
)
RPCS = Histogram(
    "toolcall_rpc_duration_seconds",
    "RPCs served by toolcall's gRPC services, by method and status code",
    ("method", "code"),
    buckets=_LATENCY,
    registry=REGISTRY,
)


# (name, help, labels, value) of one live gauge sample, and what yields them.
GaugeSample = tuple[str, str, dict[str, str], float]
GaugeSource = Callable[[], Iterable[GaugeSample]]


class LiveGauges(Collector):
    """Gauges read at scrape time from the running parts (streams, leases, tools).

    Each source yields ``(name, help, labels, value)``; sources of one name are
    summed per label set (two services in one process). A source is called from
    the scrape thread and must only read (``len`` of its dicts).
    """

    def __init__(self) -> None:
        self._sources: dict[int, GaugeSource] = {}
        self._lock = threading.Lock()

    def add(self, source: GaugeSource) -> int:
        with self._lock:
            key = id(source)
            self._sources[key] = source
            return key

    def remove(self, key: int) -> None:
        with self._lock:
            self._sources.pop(key, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            sources = list(self._sources.values())
        families: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]] = {}
        for source in sources:
            try:
                samples = list(source())
            except Exception:  # a scrape must not fail for one part
                log.debug("metrics source failed", exc_info=True)
                continue
            for name, doc, labels, value in samples:
                values = families.setdefault(name, (doc, {}))[1]
                key = tuple(sorted(labels.items()))
                values[key] = values.get(key, 0.0) + value
        for name, (doc, values) in sorted(families.items()):
            label_names = [k for k, _ in next(iter(values))] if values else []
            family = GaugeMetricFamily(name, doc, labels=label_names)
            for key, value in values.items():
                family.add_metric([v for _, v in key], value)
            yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


LIVE = LiveGauges()
REGISTRY.register(LIVE)


class MetricsServer:
    """``/metrics`` (Prometheus text format) on ``host:port``, served by a daemon thread.

    The thread only reads counters: scrapes never touch the event loop.
    """

    def __init__(self, address: str) -> None:
        from prometheus_client import start_http_server

        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise config.ConfigError(f"metrics address {address!r} must be host:port")
        try:
            self._server, self._thread = start_http_server(
                int(port), addr=host.strip("[]"), registry=REGISTRY
            )
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
        self.port: int = self._server.server_port
        self.address = f"{host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- settings -----------------------------------------------------------------


def _otlp_endpoint() -> str:
    """The OTLP endpoint the environment names, or "" (tracing off)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return ""
    return (
        config.env("OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    )


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """What a process records and where it sends it; ``from_env`` reads the environment."""

    # OTLP/gRPC endpoint of a collector (http://127.0.0.1:4317); "" traces nothing.
    otlp_endpoint: str = ""
    # host:port of the /metrics endpoint; "" serves none and records no metrics.
    metrics_address: str = ""
    # OTEL_SERVICE_NAME, or toolcall-<service>.
    service_name: str = ""

    @classmethod
    def from_env(cls, service: str, metrics_env: str = "") -> TelemetrySettings:
        """``metrics_env``: the TOOLCALL_ variable naming this service's metrics address."""
        return cls(
            otlp_endpoint=_otlp_endpoint(),
            metrics_address=config.env(metrics_env) if metrics_env else "",
            service_name=os.environ.get("OTEL_SERVICE_NAME", "") or f"toolcall-{service}",
        )

    def build(self) -> Telemetry:
        """The Telemetry these settings describe (an OTLP exporter when an endpoint is set)."""
        tracer_provider = None
        if self.otlp_endpoint:
            # Loaded only now: most processes never export.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            tracer_provider = _provider(self.service_name)
            tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=self.otlp_endpoint))
            )
        return Telemetry(
            tracer_provider=tracer_provider,
            metrics=bool(self.metrics_address),
            metrics_address=self.metrics_address,
            owned=True,
        )


def add_metrics_argument(parser: Any, default: str, env_name: str) -> None:
    """``--metrics-address`` of a service's command."""
    parser.add_argument(
        "--metrics-address",
        default=default,
        help=f"serve Prometheus metrics at http://HOST:PORT/metrics; 'off' or empty: none "
        f"(default: ${env_name} or off)",
    )


def with_metrics_address(settings: TelemetrySettings | Telemetry, address: str) -> Any:
    """``settings`` with the address a ``--metrics-address`` flag gave ('off': none)."""
    if isinstance(settings, Telemetry):
        return settings
    address = "" if address.strip().lower() == "off" else address.strip()
    return dataclasses.replace(settings, metrics_address=address)


def resolve(telemetry: TelemetrySettings | Telemetry) -> Telemetry:
    """Settings carry either what to build or (tests, embedding) a ready Telemetry."""
    return telemetry if isinstance(telemetry, Telemetry) else telemetry.build()


def _provider(service_name: str) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider(resource=Resource.create({"service.name": service_name}))


# -- the recorder -------------------------------------------------------------


@dataclass(eq=False)
class Telemetry:
    """What one service records. ``tracer_provider`` None: no spans; ``metrics``
    False: no samples (and no endpoint)."""

    tracer_provider: Any = None
    metrics: bool = False
    metrics_address: str = ""
    # Built from settings (not handed in by a test): flushed and closed on stop.
    owned: bool = False
    _model_label: BoundedLabel = field(default_factory=lambda: BoundedLabel(MAX_MODEL_LABELS))
    _tool_label: BoundedLabel = field(default_factory=lambda: BoundedLabel(MAX_TOOL_LABELS))

    OFF: ClassVar[Telemetry]  # set below: the shared "records nothing" instance

    def __post_init__(self) -> None:
        self.tracer: trace.Tracer | None = (
            self.tracer_provider.get_tracer("toolcall") if self.tracer_provider else None
        )
        self.on = self.tracer is not None or self.metrics

    @classmethod
    def exporting_to(cls, exporter: SpanExporter, *, metrics: bool = False) -> Telemetry:
        """Every span (100 % sampled) handed to ``exporter`` as it ends: tests and the bench."""
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = _provider("toolcall")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(tracer_provider=provider, metrics=metrics)

    def stopped(self) -> None:
        """The service stopped: flushes spans not yet exported, when this is its own."""
        if self.owned and self.tracer_provider is not None:
            self.tracer_provider.shutdown()

    # -- tool calls (the Dispatcher) --

    async def tool_call(
        self,
        spec: ToolSpec,
        *,
        role: str,
        path: str,
        call_id: str,
        run: Callable[[Sequence[tuple[str, str]] | None], Awaitable[tools_pb2.ToolResult]],
    ) -> tools_pb2.ToolResult:
        """Runs ``run(metadata)`` (metadata carries the span's ``traceparent`` to the
        plugin) inside an ``execute_tool`` span, and records its latency."""
        mode = "async" if spec.is_async else "sync"
        span = None
        metadata = None
        if self.tracer is not None:
            # What the issue asks of a tool-call span and no more: each attribute
            # costs ~2 µs of the SDK's checks, on every call (docs/observability.md).
            span = self.tracer.start_span(
                f"execute_tool {spec.name}",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.tool.name": spec.name,
                    "gen_ai.tool.call.id": call_id,
                    "toolcall.role": role,
                    "toolcall.mode": mode,
                    "toolcall.plugin.address": spec.callback_address,
                },
            )
            metadata = (("traceparent", traceparent(span.get_span_context())),)
        started = time.perf_counter()
        result_outcome = "cancelled"
        try:
            # Not made current: the plugin learns its parent from the metadata,
            # and attaching a context per call would cost more than it shows.
            result = await run(metadata)
            result_outcome = outcome(result)
            if span is not None:
                span.set_attributes(
                    {
                        "toolcall.outcome": result_outcome,
                        "toolcall.output.bytes": result.output.ByteSize(),
                    }
                )
                if result.is_error:
                    span.set_status(Status(StatusCode.ERROR, result.error[:200]))
            return result
        finally:
            if span is not None:
                if result_outcome == "cancelled":
                    span.set_attribute("toolcall.outcome", result_outcome)
                span.end()
            if self.metrics:
                TOOL_CALLS.labels(self._tool_label(spec.name), path, mode, result_outcome).observe(
                    time.perf_counter() - started
                )

    def unknown_tool(self, path: str) -> None:
        """A call of a tool the registry does not have: counted, never by its name."""
        if self.metrics:
            TOOL_CALLS.labels(UNKNOWN_TOOL, path, "sync", "not_found").observe(0.0)

    # -- chat turns and model rounds (the LLMService's orchestrator) --

    @contextlib.contextmanager
    def turn(self, session_id: str, role: str, stream: bool) -> Iterator[TurnRecorder]:
        """The turn's span is current inside: tool calls started in it are its children."""
        recorder = TurnRecorder(self)
        span = None
        if self.tracer is not None:
            span = recorder.span = self.tracer.start_span(
                "invoke_agent toolcall",
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.conversation.id": session_id,
                    "toolcall.role": role,
                    "toolcall.stream": stream,
                },
            )
        try:
            if span is None:
                yield recorder
            else:
                with trace.use_span(span, end_on_exit=False, record_exception=False):
                    yield recorder
        except BaseException as exc:
            recorder.failed(exc)
            raise
        finally:
            recorder.close()

    def model_round(self, provider: str, model: str) -> RoundRecorder:
        return RoundRecorder(self, provider, self._model_label(model) if self.metrics else model)

    # -- async tasks (the LLMService) --

    def start_task(self, task_id: str, spec: ToolSpec, session_id: str) -> Any:
        """The task's span (None when not tracing): a new trace, linked to the current
        span (the turn that started it), since a task outlives its turn."""
        if self.metrics:
            TASKS_STARTED.inc()
        if self.tracer is None:
            return None
        current = trace.get_current_span().get_span_context()
        return self.tracer.start_span(
            f"async_task {spec.name}",
            context=otel_context.Context(),
            links=[Link(current)] if current.is_valid else None,
            attributes={
                "toolcall.task.id": task_id,
                "gen_ai.tool.name": spec.name,
                "gen_ai.conversation.id": session_id,
            },
        )

    @staticmethod
    def task_context(span: Any) -> Context | None:
        """The contextvars a task runs in: its span current (None: the caller's copy)."""
        if span is None:
            return None
        ctx = copy_context()
        ctx.run(otel_context.attach, trace.set_span_in_context(span))
        return ctx

    def end_task(self, span: Any, status: str, error: str) -> None:
        if self.metrics:
            TASKS_FINISHED.labels(status if status in ("succeeded", "failed") else "failed").inc()
        if span is not None:
            span.set_attribute("toolcall.task.status", status)
            if status != "succeeded":
                span.set_status(Status(StatusCode.ERROR, error[:200]))
            span.end()

    def results_delivered(self, n: int = 1) -> None:
        if self.metrics:
            RESULTS_DELIVERED.inc(n)

    # -- gRPC servers --

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The server interceptor, or none when this records nothing."""
        return [TracingInterceptor(self)] if self.on else []


Telemetry.OFF = Telemetry()


class TurnRecorder:
    """What a turn reports: rounds, round limit, outcome."""

    __slots__ = ("_done", "_telemetry", "span")

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._done = False
        self.span: Any = None

    def finished(self, rounds: int, round_limit: bool, provider: str, model: str) -> None:
        self._done = True
        if self._telemetry.metrics:
            TURNS.labels("round_limit" if round_limit else "answered").inc()
            ROUNDS_PER_TURN.observe(rounds)
            if round_limit:
                ROUND_LIMIT_STOPS.inc()
        if self.span is not None:
            self.span.set_attributes(
                {
                    "toolcall.rounds": rounds,
                    "toolcall.round_limit_reached": round_limit,
                    "gen_ai.provider.name": provider,
                    "gen_ai.request.model": model,
                }
            )

    def failed(self, exc: BaseException) -> None:
        if self._done:
            return
        self._done = True
        if self._telemetry.metrics:
            TURNS.labels("failed").inc()
        if self.span is not None:
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))

    def close(self) -> None:
        if not self._done:  # the caller stopped reading (a cancelled ChatStream)
            self.failed(RuntimeError("turn abandoned"))
        if self.span is not None:
            self.span.end()


class RoundRecorder:
    """One model round: a ``chat {model}`` span and the round's latency and tokens."""

    __slots__ = ("_model", "_provider", "_span", "_started", "_telemetry")

    def __init__(self, telemetry: Telemetry, provider: str, model: str) -> None:
        self._telemetry = telemetry
        self._provider = provider
        self._model = model
        self._started = time.perf_counter()
        self._span = None
        if telemetry.tracer is not None:
            self._span = telemetry.tracer.start_span(
                f"chat {model}",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": provider,
                    "gen_ai.request.model": model,
                },
            )

    def __enter__(self) -> RoundRecorder:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> None:
        if exc is not None and self._span is not None:
            self._span.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__}: {exc}"[:200]))
            self._span.end()
            self._span = None

    def answered(self, prompt_tokens: int, completion_tokens: int, tool_calls: int) -> None:
        finish = "tool_calls" if tool_calls else "stop"
        if self._telemetry.metrics:
            labels = (self._provider, self._model)
            MODEL_ROUNDS.labels(*labels, finish).observe(time.perf_counter() - self._started)
            MODEL_TOKENS.labels(*labels, "prompt").inc(prompt_tokens)
            MODEL_TOKENS.labels(*labels, "completion").inc(completion_tokens)
        if self._span is not None:
            self._span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": prompt_tokens,
                    "gen_ai.usage.output_tokens": completion_tokens,
                    "gen_ai.response.finish_reasons": (finish,),
                    "toolcall.tool_calls": tool_calls,
                }
            )
            self._span.end()
            self._span = None


def traceparent(ctx: trace.SpanContext) -> str:
    """The W3C ``traceparent`` header value of ``ctx``."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


# W3C Trace Context, version 00: exactly 55 characters.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
_MAX_TRACESTATE_CHARS = 512  # the spec's 32 members fit; longer is refused, not parsed


def extract(metadata: Iterable[tuple[str, Any]] | None) -> otel_context.Context | None:
    """The remote parent a caller sent in ``traceparent`` metadata, or None (absent
    or malformed: a hostile header is ignored, never an error)."""
    header = state = None
    for key, value in metadata or ():
        if key == "traceparent":
            header = value
        elif key == "tracestate":
            state = value
    if not isinstance(header, str) or not (match := _TRACEPARENT.match(header)):
        return None
    trace_state = None
    if isinstance(state, str) and state and len(state) <= _MAX_TRACESTATE_CHARS:
        trace_state = TraceState.from_header([state])
    parent = SpanContext(
        int(match[1], 16),
        int(match[2], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match[3], 16) & TraceFlags.SAMPLED),
        trace_state=trace_state,
    )
    if not parent.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(parent))


def attach_remote_parent(metadata: Iterable[tuple[str, Any]] | None) -> object | None:
    """Makes the caller's ``traceparent`` the current context; returns the token for
    ``otel_context.detach`` (None: nothing was attached). The Python SDK calls it
    around a handler, so the handler's own spans are children of the tool call."""
    ctx = extract(metadata)
    return None if ctx is None else otel_context.attach(ctx)


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span per RPC of toolcall's services (continuing the caller's
    ``traceparent``) and the RPC histogram. Health and reflection pass untouched."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        # method -> (the service's handler, its wrapped copy): built once per method.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith("/toolcall."):
            return handler
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            known = self._wrapped[method] = (
                handler,
                _wrap(handler, method.lstrip("/"), self._telemetry),
            )
        return known[1]


def _wrap(handler: Any, method: str, telemetry: Telemetry) -> Any:
    tracer = telemetry.tracer

    @contextlib.contextmanager
    def observed(context: grpc.aio.ServicerContext) -> Iterator[None]:
        started = time.perf_counter()
        span = None
        token = None
        if tracer is not None:
            parent = extract(context.invocation_metadata())
            service, _, name = method.partition("/")
            span = tracer.start_span(
                method,
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            )
            token = otel_context.attach(trace.set_span_in_context(span))
        code = "OK"
        try:
            yield
        except BaseException as exc:
            code = _code_of(context, exc)
            raise
        finally:
            if code == "OK":
                code = _code_of(context, None)
            if span is not None:
                span.set_attribute("rpc.grpc.status_code", code)
                if code != "OK":
                    span.set_status(Status(StatusCode.ERROR, code))
                span.end()
                otel_context.detach(token)  # type: ignore[arg-type]
            if telemetry.metrics:
                RPCS.labels(method, code).observe(time.perf_counter() - started)

    kind = "unary_unary" if handler.unary_unary else "unary_stream"
    if handler.stream_unary or handler.stream_stream:
        return handler  # toolcall has no client-streaming RPCs
    behavior = handler.unary_unary or handler.unary_stream
    if kind == "unary_stream" and inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with observed(context):
                async for response in behavior(request, context):
                    yield response

        return handler._replace(unary_stream=stream)
    else:

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with observed(context):
                return await behavior(request, context)

        return handler._replace(**{kind: unary})


def _code_of(context: Any, exc: BaseException | None) -> str:
    code = None
    with contextlib.suppress(Exception):
        code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # grpc.aio keeps the raw integer
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    if exc is None:
        return "OK"
    if isinstance(exc, BaseException) and type(exc).__name__ == "CancelledError":
        return "CANCELLED"
    return "UNKNOWN"


# -- logs ---------------------------------------------------------------------

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the current
    span's ``trace_id`` / ``span_id`` (hex, as in ``traceparent``) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = f"{ctx.trace_id:032x}"
            entry["span_id"] = f"{ctx.span_id:016x}"
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


JsonFormatter.converter = time.gmtime
