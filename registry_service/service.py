"""Wiring: the registry's parts, started and stopped in the right order."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from registry_service import wire
from registry_service.access import MutationGate
from registry_service.archive import ToolArchive
from registry_service.registry import Registry
from registry_service.servicer import RegistryServicer
from registry_service.settings import RegistrySettings
from toolcall import auth
from toolcall.serving import ServiceHost
from toolcall.telemetry import GaugeSample, resolve
from toolcall.tls import insecure_warning
from toolcall.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["ToolRegistry"].full_name


class RegistryHost(ServiceHost):
    """The gRPC server plus the ``registry`` it serves (exposed for tests and embedding)."""

    def __init__(self, settings: RegistrySettings) -> None:
        if problems := settings.problems():
            raise ValueError("; ".join(problems))
        self.settings = settings
        self.telemetry = telemetry = resolve(settings.telemetry)
        self.registry = Registry(
            settings.roles,
            to_message=wire.watch_event,
            archive=ToolArchive(settings.resolved_data_path()),
            dispatcher=settings.dispatcher(telemetry),
            sweep_interval_s=settings.lease_sweep_interval_s,
            watch_queue_size=settings.watch_queue_size,
            max_tools=settings.max_tools,
            max_definition_bytes=settings.max_definition_bytes,
        )
        servicer = RegistryServicer(self.registry)

        def add(server: grpc.aio.Server) -> None:
            registry_pb2_grpc.add_ToolRegistryServicer_to_server(servicer, server)

        # With principals or mTLS every RPC is authorised (toolcall/auth.py);
        # otherwise today's gate: local peers and the optional shared token.
        security = auth.gate(
            settings.principals_file,
            shared_token=settings.token,
            mtls=settings.tls.requires_client_cert,
        )
        super().__init__(
            settings.address,
            [SERVICE_NAME],
            add,
            interceptors=[security or MutationGate(SERVICE_NAME, settings.token)],
            grace_s=settings.grace_s,
            credentials=settings.tls.server_credentials(),
            telemetry=telemetry,
        )
        self.add_gauges(lambda: _gauges(self.registry))
        self._stopped = False
        self.on_stop(self.registry.close)

    async def start(self) -> int:
        s = self.settings
        if warning := insecure_warning(s.address, s.tls, authenticated=bool(s.principals_file)):
            log.warning("%s", warning)
        try:
            await self.registry.open()
            port = await super().start()
        except BaseException:
            await self.registry.close()
            raise
        log.info(
            "registry %s on %s; roles: %s; token %s; %d stored tools from %s; "
            "limits: %d tools, %d definition bytes",
            self.registry.instance_id,
            self.target,
            ", ".join(self.registry.roles),
            "required for changes and Invoke" if self.settings.token else "not required",
            len(self.registry.store),
            self.settings.resolved_data_path(),
            self.registry.max_tools,
            self.registry.max_definition_bytes,
        )
        return port

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Watch streams never end by themselves; end them so the drain waits
        # only for unary calls.
        self.registry.end_watches()
        await super().stop()


def _gauges(registry: Registry[Any]) -> list[GaugeSample]:
    tools = [
        ("toolcall_registry_tools", "Tools registered, per role", {"role": role},
         registry.store.count(role))
        for role in registry.roles
    ]  # fmt: skip
    return [
        *tools,
        ("toolcall_registry_leases", "Leases alive", {}, len(registry.leases)),
        ("toolcall_registry_watch_streams", "Watch streams open", {}, len(registry.hub)),
    ]


async def start_registry(settings: RegistrySettings | None = None) -> RegistryHost:
    """Starts the registry; ``host.target`` is its address, ``await host.stop()`` ends it."""
    host = RegistryHost(settings or RegistrySettings.from_env())
    await host.start()
    return host
