"""The one routine that calls a plugin: parse, validate, dispatch, shape errors.

``Registry.Invoke`` and the LLMService's chat loop both call
``Dispatcher.invoke``; the LLMService uses it to reach plugins directly (one
hop) from its Watch-fed view of the registry. Every failure of the tool itself
comes back as a ``ToolResult`` with ``is_error`` set and a readable reason;
only cancellation by the caller propagates as an exception.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf import struct_pb2
from google.protobuf.unknown_fields import UnknownFieldSet

from toolcall import config
from toolcall.address_policy import RemoteAllowList, is_http
from toolcall.callback_channels import (
    DEFAULT_CHANNEL_IDLE_S,
    DEFAULT_MAX_CHANNELS,
    UNDECODABLE_REPLY,
    CallbackChannels,
)
from toolcall.http_callbacks import DEFAULT_IDLE_S as DEFAULT_HTTP_IDLE_S
from toolcall.http_callbacks import DEFAULT_MAX_CONNECTIONS, CallbackFailed, HttpCallbacks
from toolcall.ids import new_call_id
from toolcall.jsonvalue import from_value, shape_error, to_struct, to_value
from toolcall.parts import MAX_IMAGES, MAX_PART_BYTES, MAX_PARTS, PartLimits, parts_error
from toolcall.schemas import ValueValidator
from toolcall.telemetry import Telemetry
from toolcall.tls import ClientTLS
from toolcall.tools import ToolSpec
from toolcall.v1 import callback_pb2, tools_pb2

log = logging.getLogger(__name__)

# A NaN or infinite double in the serialized output: tag 0x11 (Value.number_value,
# fixed64) then 8 little-endian bytes whose exponent bits are all ones. A cheap
# prefilter over at most MAX_TOOL_OUTPUT_BYTES; a hit (which string bytes can
# also give) is confirmed by walking the value.
_NON_FINITE_BYTES = re.compile(rb"\x11[\x00-\xff]{6}[\xf0-\xff][\x7f\xff]")
# Deeper than protobuf can decode, so the walk never refuses for depth.
_ANY_DEPTH = 1_000


def error_result(error: str, output: Any = None) -> tools_pb2.ToolResult:
    """An is_error result; ``output`` is a plain value or an already built ``Value``."""
    if isinstance(output, struct_pb2.Value):
        return tools_pb2.ToolResult(output=output, is_error=True, error=error)
    return tools_pb2.ToolResult(output=to_value(output), is_error=True, error=error)


@dataclass(frozen=True, slots=True)
class DispatchLimits:
    """The Dispatcher's bounds; each service's settings carry one as ``dispatch``."""

    # Largest tool output (serialized) passed on to a caller or a model.
    max_tool_output_bytes: int = config.MAX_TOOL_OUTPUT_BYTES
    # Channels to plugins kept open at once (least recently used closes
    # first), and how long an unused one stays open.
    max_callback_channels: int = DEFAULT_MAX_CHANNELS
    callback_channel_idle_s: float = DEFAULT_CHANNEL_IDLE_S
    # A result's content parts (toolcall/parts.py): how many, how many images,
    # and the bytes of each.
    max_result_parts: int = MAX_PARTS
    max_result_images: int = MAX_IMAGES
    max_part_bytes: int = MAX_PART_BYTES
    # Where plugins on other hosts may be (CIDRs, host names; docs/security.md).
    remote_plugins: str = ""

    @property
    def parts(self) -> PartLimits:
        return PartLimits(self.max_result_parts, self.max_result_images, self.max_part_bytes)

    @classmethod
    def from_env(cls) -> DispatchLimits:
        """Read by the services' settings (the programs' edge), never by the Dispatcher."""
        return cls(
            max_tool_output_bytes=config.env_int(
                "MAX_TOOL_OUTPUT_BYTES", config.MAX_TOOL_OUTPUT_BYTES
            ),
            max_callback_channels=config.env_int("MAX_CALLBACK_CHANNELS", DEFAULT_MAX_CHANNELS),
            callback_channel_idle_s=config.env_float(
                "CALLBACK_CHANNEL_IDLE", DEFAULT_CHANNEL_IDLE_S
            ),
            max_result_parts=config.env_int("MAX_RESULT_PARTS", MAX_PARTS),
            max_result_images=config.env_int("MAX_RESULT_IMAGES", MAX_IMAGES),
            max_part_bytes=config.env_int("MAX_PART_BYTES", MAX_PART_BYTES),
            remote_plugins=config.env("REMOTE_PLUGINS"),
        )

    def problems(self) -> list[str]:
        """Limits that cannot work, as sentences."""
        bad = []
        if self.max_tool_output_bytes < 1:
            bad.append("max_tool_output_bytes must be at least 1")
        if self.max_callback_channels < 1:
            bad.append("max_callback_channels must be at least 1")
        if not self.callback_channel_idle_s > 0:
            bad.append("callback_channel_idle_s must be a positive number of seconds")
        try:
            RemoteAllowList.parse(self.remote_plugins)
        except ValueError as exc:
            bad.append(f"TOOLCALL_REMOTE_PLUGINS: {exc}")
        return bad + self.parts.problems()

    def dispatcher(
        self,
        remote_tls: ClientTLS | None = None,
        *,
        telemetry: Telemetry = Telemetry.OFF,
        path: str = "invoke",
    ) -> Dispatcher:
        """``remote_tls``: how plugins on the allow-list are dialled; an allow-list
        without it is a ValueError (they are reached over mTLS only)."""
        if problems := self.problems():
            raise ValueError("; ".join(problems))
        allow = RemoteAllowList.parse(self.remote_plugins)
        if allow and remote_tls is None:
            raise ValueError(REMOTE_NEEDS_MTLS)
        return Dispatcher(
            max_output_bytes=self.max_tool_output_bytes,
            max_channels=self.max_callback_channels,
            channel_idle_s=self.callback_channel_idle_s,
            part_limits=self.parts,
            remote=allow or None,
            remote_tls=remote_tls if allow else None,
            telemetry=telemetry,
            path=path,
        )


REMOTE_NEEDS_MTLS = (
    "plugins on other hosts (TOOLCALL_REMOTE_PLUGINS) are reached over mTLS only: set "
    "TOOLCALL_TLS_CA and TOOLCALL_TLS_CLIENT_CERT/_KEY"
)


class Dispatcher:
    """Calls plugins' ToolCallback services over a bounded pool of channels
    (``toolcall/callback_channels.py``: shared per socket, closed on
    ``release``, when idle for ``channel_idle_s`` or past ``max_channels``),
    and HTTP callback plugins (``http://`` addresses) over a bounded pool of
    connections (``toolcall/http_callbacks.py``). One routine for both: the
    transport only carries the request and brings back a reply.

    ``telemetry`` records every call (an ``execute_tool`` span whose
    ``traceparent`` goes to the plugin, a latency sample labelled with
    ``path``: ``chat`` in the LLMService, ``invoke`` for Registry.Invoke)."""

    def __init__(
        self,
        *,
        max_message_bytes: int = config.MAX_MESSAGE_BYTES,
        max_output_bytes: int = config.MAX_TOOL_OUTPUT_BYTES,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        channel_idle_s: float = DEFAULT_CHANNEL_IDLE_S,
        part_limits: PartLimits = PartLimits(),  # noqa: B008 (frozen)
        remote: RemoteAllowList | None = None,
        remote_tls: ClientTLS | None = None,
        telemetry: Telemetry = Telemetry.OFF,
        path: str = "invoke",
    ) -> None:
        if max_output_bytes < 1 or part_limits.problems():
            raise ValueError("Dispatcher limits must be positive")
        self._max_message_bytes = max_message_bytes
        self._max_output_bytes = max_output_bytes
        self._part_limits = part_limits
        # The allow-list of plugins on other hosts, checked by ToolSpec.from_definition.
        self.remote = remote
        self._telemetry = telemetry
        self._path = path
        self._channels = CallbackChannels(
            max_channels=max_channels,
            idle_s=channel_idle_s,
            max_message_bytes=max_message_bytes,
            remote_tls=remote_tls,
        )
        # Replies are read up to the gRPC message limit, as from gRPC plugins.
        self._http = HttpCallbacks(
            max_reply_bytes=max_message_bytes,
            max_connections=max(max_channels, DEFAULT_MAX_CONNECTIONS),
            idle_s=min(channel_idle_s, DEFAULT_HTTP_IDLE_S),
        )

    @property
    def open_channels(self) -> int:
        """Channels to plugins open now (see ``CallbackChannels``)."""
        return self._channels.open_count

    def release(self, address: str) -> None:
        """The owner's word that no tool uses ``address`` any more: close its channel."""
        self._channels.release(address)

    async def close(self) -> None:
        await self._channels.close()
        await self._http.close()

    async def invoke(
        self,
        spec: ToolSpec,
        *,
        raw_arguments: str = "",
        arguments: dict[str, Any] | None = None,
        call_id: str = "",
        session_id: str = "",
        role: str = "",
        timeout_s: float | None = None,
        checked: bool = False,
        job: callback_pb2.LongJob | None = None,
    ) -> tools_pb2.ToolResult:
        """Calls ``spec``'s plugin. ``arguments`` wins over ``raw_arguments`` when given.

        ``job``: the long-job handle offered to the plugin (async calls of the
        LLMService); only then may the answer be ``accepted`` (a result holding
        nothing else). Without one, an "accepted" answer is an error result.

        ``timeout_s`` (the caller's remaining deadline) shortens the tool's own
        timeout, never lengthens it. ``checked``: the caller has already run
        ``spec.check_arguments`` on these arguments (the async path does, to
        answer the model at once), so they are not checked again.
        """
        call_id = call_id or new_call_id()

        def run(metadata: Sequence[tuple[str, str]] | None = None) -> Any:
            return self._invoke(
                spec,
                raw_arguments,
                arguments,
                call_id,
                session_id,
                role,
                timeout_s,
                checked,
                metadata,
                job,
            )

        if not self._telemetry.on:
            return await run()
        return await self._telemetry.tool_call(
            spec, role=role, path=self._path, call_id=call_id, run=run
        )

    async def _invoke(
        self,
        spec: ToolSpec,
        raw_arguments: str,
        arguments: dict[str, Any] | None,
        call_id: str,
        session_id: str,
        role: str,
        timeout_s: float | None,
        checked: bool,
        metadata: Sequence[tuple[str, str]] | None = None,
        job: callback_pb2.LongJob | None = None,
    ) -> tools_pb2.ToolResult:
        if not checked:
            arguments, refused = spec.check_arguments(raw_arguments, arguments)
            if refused:
                return error_result(refused)
        timeout = spec.timeout_s if timeout_s is None else max(0.0, min(spec.timeout_s, timeout_s))
        try:
            if is_http(spec.callback_address):
                reply = await self._call_http(
                    spec, raw_arguments, arguments, call_id, session_id, role, timeout
                )
            else:
                reply = await self._call_grpc(
                    spec,
                    raw_arguments,
                    arguments,
                    call_id,
                    session_id,
                    role,
                    timeout,
                    metadata,
                    job,
                )
        except _Failed as failed:
            return error_result(str(failed))
        if reply is UNDECODABLE_REPLY:
            return error_result(
                f"INVALID_ARGUMENT: {_where(spec)} returned an output nested too deeply to decode"
            )
        if reply.HasField("accepted"):
            return accepted_result(reply.accepted, _where(spec), offered=job is not None)
        return self.check_result(reply, _where(spec), spec.validate_output)

    def check_result(
        self,
        reply: tools_pb2.ToolResult,
        where: str,
        validate_output: ValueValidator | None = None,
    ) -> tools_pb2.ToolResult:
        """A plugin's result as passed on: ``reply`` itself, or an error result
        naming the bound it broke (output size, NaN, content parts, output schema).

        Also checks results that arrive later (LLMService.CompleteTask).
        """
        # Serialized once: its length is the size check, its bytes the prefilter.
        output = reply.output.SerializeToString()
        if len(output) > self._max_output_bytes:
            return error_result(
                f"RESOURCE_EXHAUSTED: {where} returned {len(output)} bytes of output; "
                f"the limit is {self._max_output_bytes} bytes"
            )
        if _NON_FINITE_BYTES.search(output) and shape_error(from_value(reply.output), _ANY_DEPTH):
            # JSON has no NaN or Infinity: the model's request (and every later
            # one replaying the history) would not be JSON.
            return error_result(
                f"INVALID_ARGUMENT: {where} returned NaN or Infinity, which JSON cannot carry"
            )
        if reply.is_error and not reply.error:
            reply.error = "tool reported an error without a message"
        if reply.parts and (err := parts_error(list(reply.parts), self._part_limits)):
            code, _, reason = err.partition(": ")
            return error_result(f"{code}: {where} {reason}", reply.output)
        if validate_output is not None and not reply.is_error:
            if mismatch := validate_output(from_value(reply.output)):
                return error_result(
                    f"INVALID_ARGUMENT: {where} returned an output that does not match "
                    f"the tool's output_schema: {mismatch}",
                    reply.output,
                )
        if len(UnknownFieldSet(reply)):
            # Fields this version does not know are not passed on as if they were ours.
            return tools_pb2.ToolResult(
                output=reply.output, is_error=reply.is_error, error=reply.error, parts=reply.parts
            )
        return reply

    async def cancel_job(
        self, address: str, request: callback_pb2.CancelJobRequest, timeout_s: float
    ) -> str:
        """Tells the plugin at ``address`` that a long job ended (ToolCallback.CancelJob).

        '' when it answered; otherwise why not (the status name), never raised:
        the job has ended either way.
        """
        if is_http(address):  # HTTP plugins cannot accept jobs: nothing to tell
            return "UNIMPLEMENTED"
        entry = self._channels.acquire(address)
        try:
            await entry.stub.CancelJob(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        finally:
            self._channels.done(entry)
        return ""

    async def _call_grpc(
        self,
        spec: ToolSpec,
        raw_arguments: str,
        arguments: dict[str, Any] | None,
        call_id: str,
        session_id: str,
        role: str,
        timeout: float,  # noqa: ASYNC109 (a gRPC deadline, not an asyncio timeout)
        metadata: Sequence[tuple[str, str]] | None = None,
        job: callback_pb2.LongJob | None = None,
    ) -> tools_pb2.ToolResult:
        request = callback_pb2.ToolCallbackInvokeRequest(
            name=spec.name,
            arguments=to_struct(arguments),
            raw_arguments=raw_arguments or (json.dumps(arguments) if arguments else ""),
            call_id=call_id,
            session_id=session_id,
            role=role,
        )
        if job is not None:
            request.job.CopyFrom(job)
        if (size := request.ByteSize()) > self._max_message_bytes:
            # The request carries the arguments twice (Struct and raw string):
            # gRPC would refuse to send it, with a status that reads like an
            # oversized reply.
            raise self._request_too_big(size)
        entry = self._channels.acquire(spec.callback_address)
        try:
            # Decoded as a ToolResult (toolcall/callback_channels.py).
            return cast(
                tools_pb2.ToolResult,
                await entry.stub.Invoke(request, timeout=timeout, metadata=metadata),
            )
        except grpc.aio.AioRpcError as exc:
            raise _Failed(self._describe_rpc_error(spec, exc, timeout)) from None
        finally:
            self._channels.done(entry)

    async def _call_http(
        self,
        spec: ToolSpec,
        raw_arguments: str,
        arguments: dict[str, Any] | None,
        call_id: str,
        session_id: str,
        role: str,
        timeout: float,  # noqa: ASYNC109 (a gRPC deadline, not an asyncio timeout)
    ) -> tools_pb2.ToolResult:
        try:
            encoded = json.dumps(arguments or {}, allow_nan=False)
        except (ValueError, RecursionError):
            raise _Failed(
                "INVALID_ARGUMENT: arguments hold NaN or Infinity, which JSON cannot carry"
            ) from None
        # Built by hand so the arguments are encoded once (also for raw_arguments).
        body = (
            f'{{"name":{json.dumps(spec.name)},"arguments":{encoded},'
            f'"call_id":{json.dumps(call_id)},'
            f'"raw_arguments":{json.dumps(raw_arguments or encoded)},'
            f'"session_id":{json.dumps(session_id)},'
            f'"role":{json.dumps(role)}}}'
        )
        data = body.encode()
        if len(data) > self._max_message_bytes:
            raise self._request_too_big(len(data))
        try:
            return await self._http.invoke(spec.callback_address, data, timeout)
        except CallbackFailed as exc:
            raise _Failed(f"{exc.code}: {_where(spec)} {exc}") from None

    def _request_too_big(self, size: int) -> _Failed:
        return _Failed(
            f"INVALID_ARGUMENT: arguments make a {size} byte request to the plugin; "
            f"the message limit is {self._max_message_bytes} bytes (send smaller arguments)"
        )

    def _describe_rpc_error(self, spec: ToolSpec, exc: grpc.aio.AioRpcError, timeout: float) -> str:
        code = exc.code()
        where = _where(spec)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"DEADLINE_EXCEEDED: {where} did not answer within {timeout:g}s"
        if code == grpc.StatusCode.UNAVAILABLE:
            # gRPC's details say why the connect failed ("No such file or
            # directory", "Connection refused"...): the caller chose the
            # address, and the dial ran with this process's rights, so the
            # details would tell it what exists on this host. The log keeps them.
            log.debug("%s is unreachable: %s", where, exc.details())
            return f"UNAVAILABLE: {where} is unreachable"
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return (
                f"RESOURCE_EXHAUSTED: {where} returned more than the "
                f"{self._max_message_bytes} byte message limit"
            )
        if code == grpc.StatusCode.CANCELLED:
            return f"CANCELLED: the call to {where} was cancelled"
        return f"{code.name}: {where} failed: {exc.details()}"


# A plugin's job id (JobAccepted.job_id) is at most this many printable characters.
MAX_JOB_ID_CHARS = 128


def accepted_result(
    accepted: tools_pb2.JobAccepted, where: str, *, offered: bool
) -> tools_pb2.ToolResult:
    """The result for a plugin's "accepted" answer: only ``accepted``, or an error result."""
    if not offered:
        return error_result(
            f"FAILED_PRECONDITION: {where} answered 'accepted', but only async calls of the "
            "LLMService can become long jobs (this call offered none)"
        )
    job_id = accepted.job_id
    if len(job_id) > MAX_JOB_ID_CHARS or not job_id.isprintable():
        return error_result(
            f"INVALID_ARGUMENT: {where} accepted a job whose id is not at most "
            f"{MAX_JOB_ID_CHARS} printable characters"
        )
    return tools_pb2.ToolResult(accepted=tools_pb2.JobAccepted(job_id=job_id))


class _Failed(Exception):
    """A transport's failure, as the text of the is_error result."""


def _where(spec: ToolSpec) -> str:
    return f"plugin for tool '{spec.name}' at {spec.callback_address}"
