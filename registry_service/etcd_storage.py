"""The registry on etcd (v3 API): tools are keys, leases are etcd leases, the view follows a watch.

Several registry replicas on one etcd cluster serve the same tools: a plugin
may create its lease, register and keep alive through any replica, every
replica's view (List, Invoke, Watch) is fed by one etcd watch of the key
prefix, and a replica that dies loses nothing (its plugins' leases live in
etcd). The revision on Watch events is etcd's: it increases, with gaps, and
the tools of one Register share one.

Client: etcd's own gRPC API through ``grpc.aio`` with the stubs that the
``aetcd`` package ships (``aetcd.rpc``). Not aetcd's ``Client``: it dials a
single host without TLS, while a registry needs every member of the cluster
(``round_robin`` over them, so a dead member is skipped), TLS and
authentication, on the same grpc.aio runtime the services already use.

Layout under ``prefix`` (default ``/toolcall/registry/``):

- ``tools/<role>\\0<name>``: a ``RegisteredTool`` (definition, role,
  registered_at), bound to the plugin's etcd lease or to none.
- ``why`` and ``why/<lease>``: the reason of the removals in the same
  revision ("unregistered", "cleared", "lease revoked"); removals with no
  reason beside them are etcd expiring a lease ("lease expired").

etcd refuses transactions of more than 128 operations (``--max-txn-ops``):
a larger Clear is written in several transactions, each atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from registry_service.leases import Lease, UnknownLeaseError
from registry_service.storage import LEASE_EXPIRED, LEASE_REVOKED
from registry_service.store import Entry, Key, StorageError, ToolStore
from toolcall import config
from toolcall.address_policy import RemoteAllowList
from toolcall.channels import open_channel
from toolcall.tls import ClientTLS, read_pem
from toolcall.tools import DefinitionError, ToolSpec
from toolcall.v1 import registry_pb2

log = logging.getLogger(__name__)

R = TypeVar("R")

DEFAULT_PREFIX = "/toolcall/registry/"
# etcd's default --max-txn-ops is 128; one op is the "why" key.
MAX_TXN_OPS = 120
# Keys per Range page when loading: bounded memory per message, under gRPC's limit.
RANGE_PAGE = 2_000
# Replies from etcd (a Range page, a watch response of a large transaction).
MAX_RECEIVE_BYTES = 64 * 1024 * 1024
RESYNCED = "resynced"


class EtcdError(StorageError):
    """etcd cannot be reached or refused a request; the message says which and why."""

    changed_nothing = False


# One attempt of a call waits at most this long (all attempts: timeout_s): a
# member that sent a write to a leader that just died gets no answer for it
# (etcd drops the proposal); without a bound per attempt, every write then
# waited the whole timeout_s (5 s) instead of about one election. Writes are
# safe to repeat: puts and deletes are idempotent, a repeated lease grant is
# recognised ("lease already exists").
ATTEMPT_S = 1.5


def _pem(path: Path | None, what: str) -> bytes | None:
    """A TLS file for the etcd channel, bounded and checked like the services' own."""
    return read_pem(path, what) if path else None


@dataclass
class EtcdOptions:
    """How to reach etcd: ``TOOLCALL_ETCD_*`` (registry_service/settings.py)."""

    # host:port or http(s)://host:port, one per member.
    endpoints: list[str] = field(default_factory=list)
    prefix: str = DEFAULT_PREFIX
    # TLS: a CA file turns TLS on; cert and key add a client certificate.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # etcd authentication (user and password), when the cluster has it enabled.
    user: str = ""
    password: str = ""
    # Bound of one request, retries on an unavailable member included.
    timeout_s: float = 5.0

    def problems(self) -> list[str]:
        bad: list[str] = []
        if not self.endpoints:
            bad.append("the etcd store needs endpoints (TOOLCALL_ETCD_ENDPOINTS)")
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            bad.append("the etcd prefix must start and end with '/'")
        if bool(self.cert_file) != bool(self.key_file):
            bad.append("give both an etcd client certificate and its key, or neither")
        if bool(self.user) != bool(self.password):
            bad.append("give both an etcd user and its password, or neither")
        if not 0 < self.timeout_s <= 60:
            bad.append("the etcd timeout must be between 0 and 60 seconds")
        return bad


def _range_end(prefix: bytes) -> bytes:
    """The end of the key range holding every key that starts with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def lease_name(lease: int) -> str:
    return f"lease_{lease:016x}"


def lease_number(lease_id: str) -> int:
    """The etcd lease of ``lease_id``; UnknownLeaseError when it cannot be one."""
    digits = lease_id.removeprefix("lease_")
    if len(digits) != 16 or digits == lease_id:
        raise UnknownLeaseError(lease_id)
    try:
        return int(digits, 16)
    except ValueError:
        raise UnknownLeaseError(lease_id) from None


def _split(endpoint: str) -> tuple[bool, str, int]:
    """(tls, host, port) of ``host:port``, ``http://host:port`` or ``https://...``."""
    tls = endpoint.startswith("https://")
    rest = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r} is not host:port")
    return tls, host.strip("[]"), int(port)


async def channel_target(endpoints: Sequence[str]) -> tuple[str, bool, str]:
    """(gRPC target naming every member, TLS?, server name for TLS checks).

    grpc's ``ipv4:``/``ipv6:`` targets list addresses for ``round_robin``;
    host names are resolved once, here.
    """
    addresses: list[tuple[int, str, int]] = []
    tls_any = False
    first_host = ""
    loop = asyncio.get_running_loop()
    for endpoint in endpoints:
        tls, host, port = _split(endpoint)
        tls_any |= tls
        first_host = first_host or host
        try:
            ip = ip_address(host)
            addresses.append((ip.version, str(ip), port))
            continue
        except ValueError:
            pass
        for family, *_, sockaddr in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            version = 6 if family == socket.AF_INET6 else 4
            addresses.append((version, str(sockaddr[0]), port))
    versions = {v for v, _, _ in addresses}
    if not addresses:
        raise ValueError("no etcd endpoint resolved")
    if versions == {4}:
        target = "ipv4:" + ",".join(f"{a}:{p}" for _, a, p in addresses)
    elif versions == {6}:
        target = "ipv6:" + ",".join(f"[{a}]:{p}" for _, a, p in addresses)
    else:
        target = "ipv4:" + ",".join(f"{a}:{p}" for v, a, p in addresses if v == 4)
    return target, tls_any, first_host


class EtcdStorage:
    """The registry's state in etcd; see the module docstring."""

    kind = "etcd"

    def __init__(self, options: EtcdOptions) -> None:
        if problems := options.problems():
            raise ValueError("; ".join(problems))
        self.options = options
        self._prefix = options.prefix.encode()
        self._tools = self._prefix + b"tools/"
        self._why = self._prefix + b"why"
        self._channel: grpc.aio.Channel | None = None
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._store: ToolStore | None = None
        self._remote: RemoteAllowList | None = None
        self._cluster_id = 0
        # Revision the view reflects; changes wait for it to pass theirs.
        self._applied = 0
        self._progress = asyncio.Condition()
        # mod_revision of each key in the view (a resync updates only what changed).
        self._mod: dict[Key, int] = {}
        # Entries this replica just wrote, by key and value: the watch reuses
        # them instead of parsing the definition again. Bounded: cleared once seen.
        self._own: dict[tuple[Key, bytes], Entry] = {}
        self._follower: asyncio.Task[None] | None = None
        self._watch_call: Any = None
        self._closed = False

    # -- connection --------------------------------------------------------

    async def _connect(self) -> None:
        o = self.options
        target, tls, server_name = await channel_target(o.endpoints)
        options: list[tuple[str, Any]] = [
            ("grpc.lb_policy_name", "round_robin"),
            # A member that stops answering (not one that died: its socket
            # closes) is noticed by the watch stream within ~20 s.
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        client_tls = None
        if tls or o.ca_file:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_pem(o.ca_file, "etcd CA (TOOLCALL_ETCD_CA_FILE)"),
                private_key=_pem(o.key_file, "etcd client key (TOOLCALL_ETCD_KEY_FILE)"),
                certificate_chain=_pem(
                    o.cert_file, "etcd client certificate (TOOLCALL_ETCD_CERT_FILE)"
                ),
            )
            override = (
                ()
                if target.startswith(server_name)
                else (("grpc.ssl_target_name_override", server_name),)
            )
            client_tls = ClientTLS(creds, override)
        self._channel = open_channel(
            target, max_message_bytes=MAX_RECEIVE_BYTES, tls=client_tls, extra_options=options
        )
        self._kv = rpc.KVStub(self._channel)
        self._leases = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)
        self._auth = rpc.AuthStub(self._channel)
        if o.user:
            await self._authenticate()

    async def _authenticate(self) -> None:
        reply = await self._auth.Authenticate(
            rpc.AuthenticateRequest(name=self.options.user, password=self.options.password),
            timeout=self.options.timeout_s,
        )
        self._metadata = (("token", reply.token),)

    async def _call(self, what: str, method: Callable[..., Awaitable[R]], request: Any) -> R:
        """One unary etcd call, retried on an unavailable member or leader change
        until ``timeout_s``; anything else is an EtcdError (or UnknownLeaseError)."""
        deadline = time.monotonic() + self.options.timeout_s
        delay = 0.05
        reauthenticated = False
        while True:
            left = min(deadline - time.monotonic(), ATTEMPT_S)
            try:
                return await method(request, timeout=max(left, 0.01), metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                code, detail = exc.code(), exc.details() or ""
                if code == grpc.StatusCode.NOT_FOUND and "lease not found" in detail:
                    number = getattr(request, "ID", 0) or getattr(request, "lease", 0)
                    if not number and getattr(request, "success", None):  # a Txn of puts
                        number = request.success[0].request_put.lease
                    raise UnknownLeaseError(lease_name(number)) from None
                if (
                    (code == grpc.StatusCode.UNAUTHENTICATED or "invalid auth token" in detail)
                    and self.options.user
                    and not reauthenticated
                ):
                    reauthenticated = True
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await self._authenticate()
                    continue
                retryable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if not retryable or time.monotonic() + delay >= deadline:
                    raise EtcdError(f"etcd {what} failed ({code.name}: {detail[:200]})") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    # -- Storage -----------------------------------------------------------

    @property
    def store(self) -> ToolStore:
        assert self._store is not None, "storage not opened"
        return self._store

    def describe(self) -> str:
        return f"etcd {','.join(self.options.endpoints)} prefix {self.options.prefix}"

    def instance_id(self, local: str) -> str:
        # Every replica on one cluster and prefix is one registry to its watchers.
        return f"etcd-{self._cluster_id:016x}" if self._cluster_id else local

    async def open(self, store: ToolStore, remote: RemoteAllowList | None = None) -> None:
        self._store = store
        self._remote = remote
        try:
            await self._connect()
            await self._load(initial=True)
        except (grpc.aio.AioRpcError, EtcdError, OSError, ValueError) as exc:
            await self.close()
            raise EtcdError(f"cannot load the registry from {self.describe()}: {exc}") from None
        self._follower = asyncio.create_task(self._follow(), name="registry-etcd-watch")

    async def close(self) -> None:
        self._closed = True
        follower, call = self._follower, self._watch_call
        if follower is not None:
            # Cancel the watch call, not the task reading it: the pending read
            # then ends on this loop. (A cancelled task leaves grpc a read to
            # complete later, on a loop that may be gone by then.)
            if call is not None and not call.done():
                call.cancel()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(follower), 2.0)
            if not follower.done():
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            self._follower = None
        if self._channel is not None:
            # Calls still running get a moment to end, then are cancelled; the
            # completions of cancelled calls reach this loop from grpc's poller
            # thread a little later: let them land before the loop may close.
            await self._channel.close(grace=0.5)
            self._channel = None
            await asyncio.sleep(0.05)

    async def put(self, entries: list[Entry], lease_id: str) -> None:
        lease = lease_number(lease_id) if lease_id else 0
        ops = []
        own = [(entry.key, _encode(entry)) for entry in entries]
        for entry, (_, value) in zip(entries, own, strict=True):
            self._own[(entry.key, value)] = entry
            ops.append(
                rpc.RequestOp(
                    request_put=rpc.PutRequest(key=self._key(entry.key), value=value, lease=lease)
                )
            )
        try:
            for chunk in _chunks(ops, MAX_TXN_OPS):
                reply = await self._call("put", self._kv.Txn, rpc.TxnRequest(success=chunk))
                await self._caught_up(reply.header.revision)
        finally:
            for mine in own:
                self._own.pop(mine, None)

    async def remove(self, keys: list[Key], reason: str) -> list[Entry]:
        removed = [e for k in keys if (e := self.store.find(k[1], k[0])) is not None]
        why = rpc.RequestOp(request_put=rpc.PutRequest(key=self._why, value=reason.encode()))
        for chunk in _chunks(keys, MAX_TXN_OPS):
            ops = [why] + [
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._key(k)))
                for k in chunk
            ]
            reply = await self._call("delete", self._kv.Txn, rpc.TxnRequest(success=ops))
            await self._caught_up(reply.header.revision)
        return removed

    async def create_lease(self, ttl_s: float, holder: str) -> Lease:
        ttl = math.ceil(ttl_s or config.DEFAULT_LEASE_TTL_S)
        # A random id, not etcd's sequential one: a lease id is what lets a
        # plugin keep alive or revoke, so it must not be guessable.
        number = secrets.randbits(62) | 1
        try:
            reply = await self._call(
                "lease grant", self._leases.LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl, ID=number)
            )
        except EtcdError as exc:
            if "lease already exists" not in str(exc):  # a retry of a grant that committed
                raise
        else:
            if reply.error:
                raise EtcdError(f"etcd refused a lease: {reply.error[:200]}")
        return Lease(lease_name(number), float(ttl), holder, time.monotonic() + ttl)

    async def renew_lease(self, lease_id: str) -> Lease:
        number = lease_number(lease_id)
        deadline = time.monotonic() + self.options.timeout_s
        while True:
            call = self._leases.LeaseKeepAlive(
                metadata=self._metadata,
                timeout=max(min(deadline - time.monotonic(), ATTEMPT_S), 0.01),
            )
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=number))
                reply = await call.read()
                # Half-close and let etcd end the stream: a call ended this way
                # leaves no completion behind for grpc to deliver later.
                await call.done_writing()
                await call.code()
            except grpc.aio.AioRpcError as exc:
                retryable = exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                if not retryable or time.monotonic() >= deadline:
                    raise EtcdError(f"etcd keep-alive failed ({exc.code().name})") from None
                await asyncio.sleep(0.1)
                continue
            finally:
                if not call.done():
                    call.cancel()
                    await _ended(call)
            if reply is grpc.aio.EOF:
                raise EtcdError("etcd ended the keep-alive stream")
            if reply.TTL <= 0:
                raise UnknownLeaseError(lease_id)
            return Lease(lease_id, float(reply.TTL), "", time.monotonic() + reply.TTL)

    async def revoke_lease(self, lease_id: str) -> list[Entry]:
        number = lease_number(lease_id)
        # The reason rides on a key of the lease itself: it goes in the same
        # revision as the lease's tools. No such lease: NOT_FOUND, nothing written.
        why = self._why + b"/" + lease_name(number).encode()
        await self._call(
            "put", self._kv.Put, rpc.PutRequest(key=why, value=LEASE_REVOKED.encode(), lease=number)
        )
        removed = [e for e in self.store.entries() if e.lease_id == lease_id]
        reply = await self._call(
            "lease revoke", self._leases.LeaseRevoke, rpc.LeaseRevokeRequest(ID=number)
        )
        await self._caught_up(reply.header.revision)
        return removed

    def sweep(self) -> list[Entry]:
        return []  # etcd expires leases and deletes their keys; the watch brings it here

    # -- the view ------------------------------------------------------------

    def _key(self, key: Key) -> bytes:
        role, name = key
        return self._tools + role.encode() + b"\0" + name.encode()

    def _parse_key(self, raw: bytes) -> Key | None:
        if not raw.startswith(self._tools):
            return None
        role, sep, name = raw[len(self._tools) :].partition(b"\0")
        if not sep:
            return None
        return role.decode(errors="replace"), name.decode(errors="replace")

    async def _caught_up(self, revision: int) -> None:
        """Returns once the view reflects ``revision`` (read your writes)."""
        if self._applied >= revision:
            return
        try:
            async with asyncio.timeout(self.options.timeout_s):
                async with self._progress:
                    await self._progress.wait_for(lambda: self._applied >= revision)
        except TimeoutError:
            raise EtcdError(
                f"etcd committed revision {revision} but this replica's watch did not bring it "
                f"within {self.options.timeout_s:g}s"
            ) from None

    async def _advance(self, revision: int) -> None:
        if revision > self._applied:
            self._applied = revision
            async with self._progress:
                self._progress.notify_all()

    def _entry(self, key: Key, kv: Any) -> Entry | None:
        """The entry a tool key's value stands for, or None (logged) when it cannot be served."""
        own = self._own.get((key, kv.value))
        if own is not None:
            return own
        role = key[0]
        if not self.store.has_role(role):
            return None  # another replica serves more roles; not ours
        tool = registry_pb2.RegisteredTool()
        try:
            tool.ParseFromString(kv.value)
            spec = ToolSpec.from_definition(tool.tool, remote=self._remote)
        except DefinitionError as exc:
            log.warning("tool %r in etcd not served: %s", key[1][:80], exc)
            return None
        except Exception:
            log.warning("unreadable tool %r in etcd not served", key[1][:80])
            return None
        lease = lease_name(kv.lease) if kv.lease else ""
        return Entry.create(spec, role, lease, tool.registered_at.ToNanoseconds() / 1e9)

    async def _load(self, initial: bool) -> None:
        """Reads every tool at one revision; applies the difference to the view."""
        start, end = self._tools, _range_end(self._tools)
        revision = 0
        seen: dict[Key, Any] = {}
        while True:
            reply = await self._call(
                "range",
                self._kv.Range,
                rpc.RangeRequest(key=start, range_end=end, limit=RANGE_PAGE, revision=revision),
            )
            if not revision:
                revision = reply.header.revision
                self._cluster_id = reply.header.cluster_id
            for kv in reply.kvs:
                if (key := self._parse_key(kv.key)) is not None:
                    seen[key] = kv
            if not reply.more or not reply.kvs:
                break
            start = reply.kvs[-1].key + b"\0"
        store = self.store
        reason = "registered" if initial else RESYNCED
        for key in [k for k in self._mod if k not in seen]:
            del self._mod[key]
            store.remove([key], reason, revision)
        for key, kv in seen.items():
            if self._mod.get(key) == kv.mod_revision:
                continue
            entry = self._entry(key, kv)
            if entry is not None:
                self._mod[key] = kv.mod_revision
                store.put(entry, reason, revision)
        if revision > store.revision:
            store.revision = revision
        await self._advance(revision)

    async def _follow(self) -> None:
        """Follows the watch for ever: reconnects after a member dies, resyncs after compaction."""
        delay = 0.1
        while not self._closed:
            try:
                await self._watch_once()
                delay = 0.1
            except asyncio.CancelledError:
                if self._closed:
                    return
                raise
            except Exception as exc:
                log.warning("etcd watch interrupted (%s); resuming", str(exc)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _watch_once(self) -> None:
        call = self._watch_call = self._watch.Watch(metadata=self._metadata)
        try:
            await call.write(
                rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(
                        key=self._prefix,
                        range_end=_range_end(self._prefix),
                        start_revision=self._applied + 1,
                        prev_kv=True,
                        progress_notify=True,
                    )
                )
            )
            while True:
                reply = await call.read()
                if reply is grpc.aio.EOF or self._closed:
                    return
                if reply.compact_revision or reply.canceled:
                    # Changes we missed were compacted away: read everything again.
                    log.warning(
                        "etcd watch cancelled (compacted at %d: %s); resyncing",
                        reply.compact_revision,
                        reply.cancel_reason[:200],
                    )
                    await self._load(initial=False)
                    return
                if reply.events:
                    self._apply(reply.events)
                    await self._advance(reply.events[-1].kv.mod_revision)
                elif not reply.created:
                    # A progress notification: every revision up to it was sent.
                    await self._advance(reply.header.revision)
        finally:
            self._watch_call = None
            if not call.done():
                call.cancel()
                await _ended(call)

    def _apply(self, events: Sequence[Any]) -> None:
        """Applies watch events, one etcd revision at a time, with that revision's reason."""
        i = 0
        while i < len(events):
            revision = events[i].kv.mod_revision
            j = i
            while j < len(events) and events[j].kv.mod_revision == revision:
                j += 1
            group = events[i:j]
            i = j
            reason = LEASE_EXPIRED
            for ev in group:
                if ev.kv.key.startswith(self._why):
                    value = ev.prev_kv.value if ev.type == rpc.Event.DELETE else ev.kv.value
                    reason = value.decode(errors="replace")[:80] or reason
            for ev in group:
                key = self._parse_key(ev.kv.key)
                if key is None:
                    continue
                if ev.type == rpc.Event.DELETE:
                    self._mod.pop(key, None)
                    self.store.remove([key], reason, revision)
                    continue
                entry = self._entry(key, ev.kv)
                if entry is None:
                    continue
                self._mod[key] = revision
                self.store.put(entry, "registered", revision)
            if revision > self.store.revision:
                self.store.revision = revision


async def _ended(call: Any) -> None:
    """Waits for a cancelled call's status, so its completion is handled on this loop."""
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(asyncio.shield(call.code()), 1.0)


def _encode(entry: Entry) -> bytes:
    tool = registry_pb2.RegisteredTool(role=entry.role)
    tool.tool.CopyFrom(entry.spec.definition)
    tool.registered_at.FromNanoseconds(int(entry.registered_at * 1e9))
    return tool.SerializeToString(deterministic=True)


def _chunks(items: Sequence[R], size: int) -> list[Sequence[R]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
