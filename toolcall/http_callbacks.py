"""The HTTP transport of the Dispatcher: tools whose callback is ``http://127.0.0.1:PORT/path``.

The contract of the HTTP tool registries this mirrors (plugins that are small
HTTP servers): the dispatcher POSTs ``{"name", "arguments", "call_id",
"raw_arguments"}`` (plus ``session_id`` and ``role``) as JSON to the URL and
reads back either ``{"output": ..., "is_error": ..., "error": ...}`` or a bare
JSON value, which is the output. Everything after that (output cap, output
schema, error texts) is the Dispatcher's one routine, shared with gRPC
plugins: this module only turns an HTTP exchange into a
``ToolResult`` (what gRPC plugins' replies are decoded into too).

Bounds: one ``httpx2`` client per Dispatcher with a bounded connection pool
(``max_connections``, idle keep-alive connections closed after ``idle_s``,
4 s by default);
a reply body is read in chunks and dropped past ``max_reply_bytes``
(declared or streamed), never buffered whole; the whole exchange (pool wait,
connect, send, read) runs under the tool's deadline. No proxies from the
environment (a loopback call must not leave through ``HTTP_PROXY``), no
redirects (a plugin cannot bounce the call to another host).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
from google.protobuf import json_format

from toolcall.jsonvalue import to_value
from toolcall.v1 import tools_pb2

DEFAULT_MAX_CONNECTIONS = 256
# Parts parsed from one answer at most (the Dispatcher's own bound, 16 by
# default, then decides): the parse never walks a list of millions.
MAX_PARTS_READ = 256
# An idle kept-alive connection is closed by us before the plugin's server
# closes it (uvicorn's and Node's http default to 5 s): a call sent on a
# connection the server is closing at that moment would fail.
DEFAULT_IDLE_S = 4.0
# identity: the cap counts the bytes as sent, and no compressed reply expands past it.
CALLBACK_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    "accept-encoding": "identity",
}


class CallbackFailed(Exception):
    """The exchange failed; ``str()`` is the reason after the tool's name ("is unreachable")."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        super().__init__(reason)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_reply(body: bytes) -> tools_pb2.ToolResult:
    """The plugin's JSON answer as a reply; CallbackFailed when it is not one.

    ``{"output": v, "is_error": b, "error": s, "parts": [...]}`` (each
    optional; an object with ``output`` or ``is_error`` is read this way) or
    any other JSON value, which is the output whole. ``parts`` are content
    parts in protobuf's JSON mapping (``{"image": {"mime_type": "image/png",
    "data": "<base64>"}}``, ``{"text": "..."}``...), bounded like a gRPC
    plugin's by the Dispatcher.
    """
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise CallbackFailed("INVALID_ARGUMENT", "answered JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN, bad UTF-8, huge integers
        raise CallbackFailed(
            "INVALID_ARGUMENT", f"answered a body that is not JSON: {str(exc)[:120]}"
        ) from None
    is_error, error, parts = False, "", None
    if isinstance(value, dict) and ("output" in value or "is_error" in value):
        flag, text = value.get("is_error", False), value.get("error")
        if not isinstance(flag, bool):
            raise CallbackFailed("INVALID_ARGUMENT", "answered an is_error that is not a boolean")
        if text is not None and not isinstance(text, str):
            raise CallbackFailed("INVALID_ARGUMENT", "answered an error that is not a string")
        is_error, error, parts = flag, text or "", value.get("parts")
        if "output" in value:  # else the whole body is the output, as the contract says
            value = value["output"]
    try:
        output = to_value(value)
    except (ValueError, RecursionError):
        raise CallbackFailed("INVALID_ARGUMENT", "answered an output nested too deeply") from None
    result = tools_pb2.ToolResult(output=output, is_error=is_error, error=error)
    if parts is not None:
        if not isinstance(parts, list) or len(parts) > MAX_PARTS_READ:
            reason = f"answered parts that are not a list of at most {MAX_PARTS_READ}"
            raise CallbackFailed("INVALID_ARGUMENT", reason)
        try:
            json_format.ParseDict({"parts": parts}, result)
        except (json_format.ParseError, ValueError, RecursionError) as exc:
            raise CallbackFailed(
                "INVALID_ARGUMENT", f"answered parts that are not content parts: {str(exc)[:160]}"
            ) from None
    return result


class HttpCallbacks:
    """POSTs tool calls to HTTP plugins over one bounded connection pool."""

    def __init__(
        self,
        *,
        max_reply_bytes: int,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_s: float = DEFAULT_IDLE_S,
    ) -> None:
        if max_reply_bytes < 1 or max_connections < 1 or not idle_s > 0:
            raise ValueError("HTTP callback limits must be positive")
        self._max_reply_bytes = max_reply_bytes
        self._limits = httpx2.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=idle_s,
        )
        self._client: httpx2.AsyncClient | None = None

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:  # made on first use, inside the running loop
            self._client = httpx2.AsyncClient(
                limits=self._limits,
                trust_env=False,
                follow_redirects=False,
                timeout=None,  # the caller's deadline bounds the whole exchange
            )
        return self._client

    async def invoke(self, url: str, body: bytes, timeout_s: float) -> tools_pb2.ToolResult:
        """One call. CallbackFailed on anything but a 2xx JSON answer within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                return decode_reply(await self._exchange(url, body))
        except TimeoutError:
            raise CallbackFailed(
                "DEADLINE_EXCEEDED", f"did not answer within {timeout_s:g}s"
            ) from None

    async def _exchange(self, url: str, body: bytes) -> bytes:
        limit = self._max_reply_bytes
        try:
            async with self._http().stream(
                "POST", url, content=body, headers=CALLBACK_HEADERS
            ) as reply:
                if not 200 <= reply.status_code < 300:
                    raise CallbackFailed(
                        "UNAVAILABLE" if reply.status_code >= 500 else "FAILED_PRECONDITION",
                        f"answered HTTP {reply.status_code}",
                    )
                return await read_bounded(reply, limit)
        except httpx2.TransportError:
            # Like the gRPC transport: the reason the connect failed is logged
            # by nobody and told to nobody (it would describe this host).
            raise CallbackFailed("UNAVAILABLE", "is unreachable") from None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


async def read_bounded(reply: httpx2.Response, limit: int) -> bytes:
    """A streamed answer's body; CallbackFailed RESOURCE_EXHAUSTED past ``limit`` bytes,
    declared (``content-length``) or sent, without buffering beyond it."""
    declared = reply.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_big(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in reply.aiter_raw():
        size += len(chunk)
        if size > limit:
            raise _too_big(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_big(limit: int) -> CallbackFailed:
    return CallbackFailed(
        "RESOURCE_EXHAUSTED", f"returned more than the {limit} byte message limit"
    )
