"""``Plugin``: serve decorated tools over ToolCallback and keep them registered.

Configuration (constructor arguments win over the environment):

=========================  ==========================  ============================
argument                   environment                 default
=========================  ==========================  ============================
``plugin_id``              ``TOOLCALL_PLUGIN_ID``      class attribute ``plugin_id``,
                                                       else the class name in snake case
``registry_address``       ``TOOLCALL_REGISTRY_ADDRESS``  ``127.0.0.1:48911``
``token``                  ``TOOLCALL_TOKEN`` or the   none
                           file ``TOOLCALL_TOKEN_FILE``
``address`` (listen)       ``TOOLCALL_PLUGIN_ADDRESS``  ``127.0.0.1:0`` (ephemeral port)
``lease_ttl_s``            ``TOOLCALL_PLUGIN_LEASE_TTL``  6 seconds
``max_workers`` (threads)  ``TOOLCALL_PLUGIN_WORKERS``  min(32, CPUs + 4)
(TLS)                      ``TOOLCALL_TLS_*``          none: the registry is dialled over
                                                       TLS/mTLS with them; a listen address
                                                       off loopback serves mTLS only
=========================  ==========================  ============================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Unpack

from plugin_stub.decorator import ToolOptions, make_meta, tool_meta
from plugin_stub.local_tools import LocalTool, ToolTable
from toolcall import config, eventloop, grpc_env
from toolcall.address_policy import loopback_address_error
from toolcall.tls import ClientTLS, TLSSettings, is_local_address
from toolcall.tools import NAME_PATTERN
from toolcall.v1 import callback_pb2

# grpc loads when a plugin starts, not when plugin_stub is imported, so that
# ``run()`` can still apply gRPC's settings (toolcall/grpc_env.py).
if TYPE_CHECKING:
    import grpc

    from plugin_stub.registration import Registrar
    from toolcall.serving import ServiceHost
    from toolcall.telemetry import Telemetry, TelemetrySettings

log = logging.getLogger(__name__)

DEFAULT_PLUGIN_ADDRESS = "127.0.0.1:0"
DEFAULT_LEASE_TTL_S = 6.0
CALLBACK_SERVICE = callback_pb2.DESCRIPTOR.services_by_name["ToolCallback"].full_name


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class Plugin:
    """Base class of a plugin: subclass it and decorate methods with ``@llm_tool``.

    ``run()`` serves until SIGTERM/SIGINT; ``async with plugin:`` (or
    ``await start()`` / ``await stop()``) runs it inside an existing loop.
    Plain ``@llm_tool`` functions can be served with ``Plugin(tools=[f, g])``.
    """

    plugin_id: str = ""

    def __init__(
        self,
        *,
        plugin_id: str | None = None,
        registry_address: str | None = None,
        token: str | None = None,
        address: str | None = None,
        lease_ttl_s: float | None = None,
        max_workers: int | None = None,
        shutdown_grace_s: float = 2.0,
        tools: Iterable[Callable[..., Any]] = (),
        telemetry: TelemetrySettings | Telemetry | None = None,
        source: str | None = None,
    ) -> None:
        pid = (
            plugin_id
            or config.env("PLUGIN_ID")
            or type(self).plugin_id
            or snake_case(type(self).__name__)
        )
        if not NAME_PATTERN.match(pid):
            raise ValueError(f"plugin_id {pid!r} must match [A-Za-z0-9_.-]{{1,64}}")
        # An instance attribute: the class attribute is only the default.
        self.plugin_id = pid
        # The tools' source: what `toolcall tools clear --source` names. Bridges
        # set their own (`toolcall mcp mount` uses mcp:<server>).
        self.source = source or f"plugin:{pid}"
        self.registry_address = registry_address or config.registry_address()
        self.token = config.token() if token is None else token
        # TOOLCALL_TLS_*: dial the registry over TLS/mTLS (toolcall/tls.py).
        self.tls = TLSSettings.from_env()
        self.listen_address = address or config.env("PLUGIN_ADDRESS", DEFAULT_PLUGIN_ADDRESS)
        self.lease_ttl_s = lease_ttl_s or config.env_float("PLUGIN_LEASE_TTL", DEFAULT_LEASE_TTL_S)
        if not 1 <= self.lease_ttl_s <= 300:
            raise ValueError(f"lease_ttl_s must be between 1 and 300, got {self.lease_ttl_s}")
        self.max_workers = max_workers or config.env_int(
            "PLUGIN_WORKERS", min(32, (os.cpu_count() or 1) + 4)
        )
        self.shutdown_grace_s = shutdown_grace_s
        # Traces (OTEL_EXPORTER_OTLP_ENDPOINT or TOOLCALL_OTLP_ENDPOINT) and /metrics
        # (TOOLCALL_PLUGIN_METRICS_ADDRESS): both off unless set; None: read at start
        # (toolcall.telemetry loads grpc, which must wait for grpc_env.apply()).
        self.telemetry = telemetry
        self.address = ""  # the callback address, once started
        self._tools = ToolTable()
        self._host: ServiceHost | None = None
        self._registrar: Registrar | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stop_requested: asyncio.Event | None = None
        for handler in self._decorated_methods():
            self._add(handler)
        for func in tools:
            self._add(func)

    # -- tools -------------------------------------------------------------

    def _decorated_methods(self) -> list[Callable[..., Any]]:
        found: dict[str, Any] = {}
        for klass in reversed(type(self).__mro__):
            for attr, obj in vars(klass).items():
                found[attr] = obj
        return [
            getattr(self, attr)
            for attr, obj in found.items()
            if tool_meta(getattr(obj, "__func__", obj)) is not None
        ]

    def _add(self, handler: Callable[..., Any]) -> None:
        meta = tool_meta(handler)
        if meta is None:
            raise ValueError(f"{handler!r} is not decorated with @llm_tool")
        self._tools.add(LocalTool.build(meta, handler))

    def register_llm_tool(
        self, name: str, handler: Callable[..., Any], **options: Unpack[ToolOptions]
    ) -> dict[str, Any]:
        """Adds a tool at run time; registers it at once when the plugin is running.

        Same options and rules as ``@llm_tool``. ToolConflictError when the
        name is taken. Safe to call from handler threads.
        """
        meta = make_meta(handler, name, options)
        self._tools.add(LocalTool.build(meta, handler))
        self._request_sync()
        return meta.as_dict()

    def unregister_llm_tool(self, name: str) -> bool:
        """Removes a tool (and from the registry, when running); False if unknown."""
        removed = self._tools.remove(name) is not None
        if removed:
            self._request_sync()
        return removed

    def list_llm_tools(self) -> list[dict[str, Any]]:
        """The plugin's tools as plain dicts (name, description, parameters, ...)."""
        return [t.meta.as_dict() for t in self._tools]

    def _request_sync(self) -> None:
        if self._registrar is not None:
            self._registrar.request_sync()

    # -- lifecycle ---------------------------------------------------------

    async def on_start(self) -> None:
        """Hook: runs after the callback server started, before tools are registered."""

    async def on_stop(self) -> None:
        """Hook: runs after the tools were cleared and the server stopped."""

    @property
    def running(self) -> bool:
        return self._host is not None

    async def start(self) -> str:
        """Starts the callback server and registration; returns the callback address."""
        if self._host is not None:
            raise RuntimeError(f"plugin {self.plugin_id!r} is already running")
        from plugin_stub.callback_server import CallbackServicer, ToolRunner
        from plugin_stub.registration import Registrar
        from toolcall.serving import ServiceHost
        from toolcall.telemetry import TelemetrySettings, resolve
        from toolcall.v1 import callback_pb2_grpc

        self._executor = ThreadPoolExecutor(
            max_workers=self.max_workers, thread_name_prefix=f"tool-{self.plugin_id}"
        )
        servicer = CallbackServicer(self._tools, ToolRunner(self._executor), self.plugin_id)

        def add_servicers(server: grpc.aio.Server) -> None:
            callback_pb2_grpc.add_ToolCallbackServicer_to_server(servicer, server)

        # On another host's reach a plugin serves mTLS only: the registry and the
        # LLMService dial it with client certificates from the CA (docs/security.md).
        remote = not is_local_address(self.listen_address)
        if remote and not self.tls.requires_client_cert:
            raise ValueError(
                f"plugin address {self.listen_address!r} is not loopback: a plugin there serves "
                "mTLS only; set TOOLCALL_TLS_CERT, TOOLCALL_TLS_KEY and TOOLCALL_TLS_CA"
            )
        host = ServiceHost(
            self.listen_address,
            [CALLBACK_SERVICE],
            add_servicers,
            grace_s=self.shutdown_grace_s,
            credentials=self.tls.server_credentials() if remote else None,
            telemetry=resolve(
                self.telemetry
                or TelemetrySettings.from_env(f"plugin-{self.plugin_id}", "PLUGIN_METRICS_ADDRESS")
            ),
        )
        await host.start()
        if not remote and (err := loopback_address_error(host.target)):
            await host.stop()
            raise ValueError(f"plugin address {host.target!r} {err}")
        self._host, self.address = host, host.target
        await self.on_start()
        self._registrar = Registrar(
            registry_address=self.registry_address,
            callback_address=self.address,
            source=self.source,
            tools=self._tools,
            token=self.token,
            lease_ttl_s=self.lease_ttl_s,
            tls=ClientTLS.of(self.tls),
        )
        self._registrar.start()
        log.info(
            "plugin %s serves %d tools on %s; registry %s",
            self.plugin_id,
            len(self._tools),
            self.address,
            self.registry_address,
        )
        return self.address

    async def wait_registered(self, timeout_s: float | None = 10.0) -> None:
        """Returns once every tool is registered (TimeoutError otherwise)."""
        if self._registrar is None:
            raise RuntimeError("plugin is not running")
        await self._registrar.wait_synced(timeout_s)

    async def stop(self) -> None:
        """Clears the tools from the registry, revokes the lease, stops serving."""
        registrar, host, executor = self._registrar, self._host, self._executor
        self._registrar = self._host = self._executor = None
        if registrar is not None:
            await registrar.close()
        if host is not None:
            await host.stop()
        self.address = ""
        try:
            await self.on_stop()
        finally:
            if executor is not None:
                # Overrunning sync handlers cannot be killed; do not wait for them.
                executor.shutdown(wait=False, cancel_futures=True)

    def request_stop(self) -> None:
        """Makes ``serve()`` return (as SIGTERM does)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def serve(self) -> None:
        """Starts, serves until SIGTERM/SIGINT or ``request_stop()``, then stops."""
        self._stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(sig, self._stop_requested.set)
                signals.append(sig)
        try:
            await self.start()
            await self._stop_requested.wait()
            log.info("plugin %s stopping", self.plugin_id)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self.stop()

    def run(self, log_level: str | None = None) -> None:
        """Blocking entry point: ``serve()`` on a new event loop, with logging set up.

        Applies toolcall's gRPC settings first (one WARNING when the program
        loaded grpc before, see ``toolcall.grpc_env``). The loop is uvloop
        where installed (``toolcall.eventloop``).
        """
        grpc_env.apply()
        from toolcall.serving import setup_logging

        setup_logging(log_level)
        if grpc_env.missed():
            log.warning(grpc_env.TOO_LATE)
        eventloop.run(self.serve())

    async def __aenter__(self) -> Plugin:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
