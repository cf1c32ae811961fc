"""The HTTP client a mount talks streamable HTTP with: every JSON answer bounded.

The MCP SDK bounds each SSE event (``max_sse_event_size``) but reads a JSON
answer whole (``response.aread()``): a server answering with 1 GB of JSON
would grow the mount by as much. This client's transport counts the bytes of
every response that is not an event stream and, past ``max_body_bytes``,
ends it with ``ResponseTooLarge`` (an ``httpx2.StreamError``, which the SDK
turns into an error answer to that one request). ``Accept-Encoding:
identity`` keeps the count honest: no compressed body can expand past it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2

# The MCP SDK's own defaults (mcp.shared._httpx_utils): a response stream may stay open.
CONNECT_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 300.0


class ResponseTooLarge(httpx2.StreamError):
    """A JSON answer longer than the mount takes."""


class _BoundedBody(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(
                    f"RESOURCE_EXHAUSTED: the MCP server answered with more than {self._limit} "
                    "bytes; the mount's limit is --max-message-bytes"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class BoundedTransport(httpx2.AsyncBaseTransport):
    """``httpx2.AsyncHTTPTransport`` whose non-SSE response bodies stop at ``max_body_bytes``."""

    def __init__(self, max_body_bytes: int) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._limit = max_body_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            assert isinstance(response.stream, httpx2.AsyncByteStream)
            response.stream = _BoundedBody(response.stream, self._limit)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def bounded_client(max_body_bytes: int) -> httpx2.AsyncClient:
    """An AsyncClient for ``streamable_http_client(..., http_client=...)``."""
    return httpx2.AsyncClient(
        transport=BoundedTransport(max_body_bytes),
        timeout=httpx2.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        headers={"Accept-Encoding": "identity"},
    )
