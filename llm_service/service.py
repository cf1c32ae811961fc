"""Wiring: the LLMService's parts, started and stopped in the right order."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import grpc

from llm_service.orchestrator import Orchestrator
from llm_service.providers import Providers
from llm_service.servicer import LLMServicer
from llm_service.settings import LLMSettings
from llm_service.store import ConversationStore, make_store
from llm_service.tasks import AsyncTasks
from toolcall import auth
from toolcall.address_policy import canonical_address
from toolcall.clients import auth_metadata
from toolcall.dispatch import Dispatcher
from toolcall.registry_view import RegistryView
from toolcall.serving import ServiceHost
from toolcall.telemetry import GaugeSample, resolve
from toolcall.tls import ClientTLS, insecure_warning
from toolcall.tools import ToolSpec
from toolcall.v1 import llm_pb2, llm_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["LLMService"].full_name


class AddressUsers:
    """Counts the view's tools per callback address; releases a channel with the last one.

    Without it the LLMService's channels to removed plugins stayed open until
    the dispatcher's idle close. Bound: one entry per distinct address among
    the view's tools (so as many as the registry serves, no more).
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        # raw address -> (canonical address, tools using that spelling): each
        # spelling is canonicalised once, not once per tool change.
        self._spellings: dict[str, tuple[str, int]] = {}
        self._users: dict[str, int] = {}  # canonical address -> spellings in use

    def changed(self, gone: Iterable[ToolSpec], added: Iterable[ToolSpec]) -> None:
        # Added first: a tool replaced at the same address keeps its channel.
        for spec in added:
            self._add(spec.callback_address)
        for spec in gone:
            self._drop(spec.callback_address)

    def _add(self, address: str) -> None:
        key, count = self._spellings.get(address, ("", 0))
        if not count:
            key = canonical_address(address)
            self._users[key] = self._users.get(key, 0) + 1
        self._spellings[address] = (key, count + 1)

    def _drop(self, address: str) -> None:
        key, count = self._spellings.pop(address, ("", 0))
        if count > 1:
            self._spellings[address] = (key, count - 1)
            return
        if not count:
            return
        left = self._users.pop(key) - 1
        if left:
            self._users[key] = left
        else:
            self._dispatcher.release(key)


class LLMServiceHost(ServiceHost):
    """The gRPC server plus what it owns; ``start`` opens them, ``stop`` closes them.

    ``view`` (the registry view), ``store`` and ``tasks`` are exposed for
    tests and embedding.
    """

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self.store: ConversationStore = make_store(settings)
        self.telemetry = telemetry = resolve(settings.telemetry)
        self.dispatcher = settings.dispatcher(telemetry)
        self.view = RegistryView(
            settings.registry_address,
            on_change=AddressUsers(self.dispatcher).changed,
            tls=ClientTLS.of(settings.tls),
            metadata=auth_metadata(settings.registry_token),
            remote=self.dispatcher.remote,
        )
        self.providers = Providers(settings)
        self.tasks = AsyncTasks(
            self.store,
            self.dispatcher,
            max_per_session=settings.max_async_tasks_per_session,
            max_total=settings.max_async_tasks,
            subscribe_buffer=settings.subscribe_buffer,
            subscribe_buffer_bytes=settings.subscribe_buffer_bytes,
            tool_spec=self.view.get,
            telemetry=telemetry,
        )
        self.orchestrator = Orchestrator(
            settings,
            view=self.view,
            dispatcher=self.dispatcher,
            providers=self.providers,
            store=self.store,
            tasks=self.tasks,
            telemetry=telemetry,
        )
        self.tasks.follow_up = self.orchestrator.follow_up
        servicer = LLMServicer(
            settings,
            orchestrator=self.orchestrator,
            store=self.store,
            tasks=self.tasks,
            view=self.view,
            telemetry=telemetry,
        )

        def add(server: grpc.aio.Server) -> None:
            llm_pb2_grpc.add_LLMServiceServicer_to_server(servicer, server)

        # With principals or mTLS every RPC is authorised and sessions have owners.
        security = auth.gate(
            settings.principals_file, shared_token="", mtls=settings.tls.requires_client_cert
        )
        super().__init__(
            settings.address,
            [SERVICE_NAME],
            add,
            interceptors=[security] if security else [],
            grace_s=settings.grace_s,
            credentials=settings.tls.server_credentials(),
            telemetry=telemetry,
        )
        self.add_gauges(lambda: _gauges(servicer, self.tasks))
        self._stopped = False
        self.on_stop(self._close_parts)

    async def start(self) -> int:
        """Raises ``StoreError`` when the database cannot be opened (see ``main``)."""
        s = self.settings
        if warning := insecure_warning(s.address, s.tls, authenticated=bool(s.principals_file)):
            log.warning("%s", warning)
        try:
            await self.store.open()
            await self.tasks.recover()
        except BaseException:
            await self._close_parts()
            raise
        try:
            self.view.start()
            port = await super().start()
        except BaseException:
            await self._close_parts()
            raise
        # Long-job handles name this service, so plugins report back here.
        self.tasks.llm_address = self.target
        log.info(
            "history in %s; registry %s; default provider %s",
            self.store.describe(),
            self.settings.registry_address,
            self.settings.default_provider,
        )
        return port

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Subscribe streams never end by themselves; end them so the drain
        # below waits only for chat turns.
        self.tasks.end_streams()
        await super().stop()

    async def _close_parts(self) -> None:
        await self.tasks.close(self.settings.task_grace_s)
        await self.view.close()
        await self.dispatcher.close()
        await self.providers.close()
        await self.store.close()


def _gauges(servicer: LLMServicer, tasks: AsyncTasks) -> list[GaugeSample]:
    samples: list[GaugeSample] = [
        ("toolcall_chat_turns_in_flight", "Chat and ChatStream turns running", {},
         servicer.turns_in_flight),
        ("toolcall_async_tasks_running", "Async tool tasks running", {}, tasks.running()),
        ("toolcall_subscribe_streams", "Subscribe streams open", {}, tasks.subscribers),
    ]  # fmt: skip
    # Counted by the SQLite store; PostgreSQL is shared by replicas, so no one
    # replica's count would be the truth.
    if (unacked := getattr(tasks.store, "unacked", None)) is not None:
        samples.append(
            ("toolcall_async_results_awaiting_ack", "Finished async tasks not yet acknowledged",
             {}, unacked)
        )  # fmt: skip
    return samples


async def start_llm(settings: LLMSettings | None = None) -> LLMServiceHost:
    """Starts the LLMService; ``host.target`` is its address, ``await host.stop()`` ends it."""
    host = LLMServiceHost(settings or LLMSettings.from_env())
    await host.start()
    return host
