"""A stdio transport for MCP clients whose every message is bounded.

The MCP SDK's ``stdio_client`` reads a server's stdout into one growing
string until a newline: a server that writes a 1 GB result (or never writes
a newline) grows the mount by as much. This transport spawns the server the
same way (own process group, stdin/stdout pipes, stderr passed through) and
hands the SDK's ``ClientSession`` the same pair of streams, with three
differences:

* a line longer than ``max_message_bytes`` is never held: the transport keeps
  its first and last 256 bytes, discards the rest, and answers the request it
  belongs to (its JSON-RPC id is found at the line's start, where Python
  servers write it, or end, where Node's SDK writes it) with a JSON-RPC error
  naming the size and the limit, so the caller gets a clear error result
  instead of a mount that grows or a call that hangs;
* a line that is not JSON-RPC (a ``print()`` in the server) is skipped with a
  log line (the first ``GARBAGE_LOG_LINES`` of each run, then a count), never
  a traceback, never passed to the session;
* ``exited`` is set when the server's stdout ends (it exited or crashed), so
  the mount notices a dead server at once rather than at the next call.

Framing only: JSON-RPC parsing, correlation and the MCP protocol itself are
the SDK's (``mcp.types.jsonrpc_message_adapter``, ``ClientSession``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import types
from mcp.client.stdio import StdioServerParameters, get_default_environment
from mcp.shared.message import SessionMessage

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 64 * 1024
# What is kept of an oversized line to find its request id.
EDGE_BYTES = 256
GARBAGE_LOG_LINES = 5
# After stdin closes the server may exit on its own; then SIGTERM, then SIGKILL.
EXIT_GRACE_S = 1.0
TERM_GRACE_S = 1.0

_ID = rb'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.){0,64}")'
_ENDED = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError)
_HEAD_ID = re.compile(rb'^\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*' + _ID)
_TAIL_ID = re.compile(_ID + rb"\s*\}\s*$")


@dataclass
class StdioConnection:
    """The streams a ``ClientSession`` runs over, and what the mount watches."""

    read_stream: MemoryObjectReceiveStream[SessionMessage | Exception]
    write_stream: MemoryObjectSendStream[SessionMessage]
    pid: int
    exited: anyio.Event = field(default_factory=anyio.Event)
    returncode: int | None = None
    garbage_lines: int = 0
    oversized_lines: int = 0


def oversized_reply(head: bytes, tail: bytes, size: int, limit: int) -> SessionMessage | None:
    """The JSON-RPC error standing in for an oversized response, if its id can be found."""
    found = _HEAD_ID.search(head) or _TAIL_ID.search(tail)
    if found is None:
        return None
    raw = found.group(1)
    request_id: int | str = int(raw) if raw[:1] != b'"' else raw[1:-1].decode(errors="replace")
    error = types.JSONRPCError(
        jsonrpc="2.0",
        id=request_id,
        error=types.ErrorData(
            code=types.INTERNAL_ERROR,
            message=(
                f"RESOURCE_EXHAUSTED: the MCP server answered with a message of {size} bytes "
                f"or more; the mount's limit is {limit} bytes"
            ),
        ),
    )
    return SessionMessage(error)


class _LineReader:
    """Splits stdout into lines of at most ``limit`` bytes, without holding more."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._held = 0
        # Set while discarding an oversized line: its head, rolling tail and size.
        self._head: bytes | None = None
        self._tail = b""
        self._skipped = 0

    def feed(self, chunk: bytes) -> list[bytes | tuple[bytes, bytes, int]]:
        """Complete lines (bytes), or (head, tail, size) for each oversized one."""
        out: list[bytes | tuple[bytes, bytes, int]] = []
        while chunk:
            newline = chunk.find(b"\n")
            piece, chunk = (chunk, b"") if newline < 0 else (chunk[:newline], chunk[newline + 1 :])
            self._add(piece)
            if newline >= 0:
                out.append(self._end_line())
        return out

    def _add(self, piece: bytes) -> None:
        if self._head is not None:
            self._skipped += len(piece)
            self._tail = (self._tail + piece)[-EDGE_BYTES:]
            return
        self._parts.append(piece)
        self._held += len(piece)
        if self._held > self.limit:
            line = b"".join(self._parts)
            self._head, self._tail, self._skipped = line[:EDGE_BYTES], line[-EDGE_BYTES:], len(line)
            self._parts, self._held = [], 0

    def _end_line(self) -> bytes | tuple[bytes, bytes, int]:
        if self._head is not None:
            result = (self._head, self._tail, self._skipped)
            self._head, self._tail, self._skipped = None, b"", 0
            return result
        line = b"".join(self._parts)
        self._parts, self._held = [], 0
        return line


@contextlib.asynccontextmanager
async def bounded_stdio(
    server: StdioServerParameters, *, max_message_bytes: int, name: str
) -> AsyncIterator[StdioConnection]:
    """Spawns ``server`` and yields its connection; stops the server's process group on exit."""
    env = get_default_environment() | (server.env or {})
    process = await anyio.open_process(
        [server.command, *server.args],
        env=env,
        cwd=server.cwd,
        stderr=None,  # the server's log lines go where ours go
        start_new_session=True,  # its own group: a stop reaches its children too
    )
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    conn = StdioConnection(read_stream, write_stream, process.pid)

    async def stdout_reader() -> None:
        assert process.stdout is not None
        lines = _LineReader(max_message_bytes)
        try:
            async with read_writer:
                while True:
                    try:
                        chunk = await process.stdout.receive(READ_CHUNK_BYTES)
                    except _ENDED:
                        return  # the server exited (or closed its stdout)
                    for line in lines.feed(chunk):
                        message = _message(conn, line, max_message_bytes, name)
                        if message is not None:
                            await read_writer.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the session is gone
        finally:
            conn.exited.set()

    async def stdin_writer() -> None:
        assert process.stdin is not None
        try:
            async with write_reader:
                async for session_message in write_reader:
                    data = session_message.message.model_dump_json(
                        by_alias=True, exclude_unset=True
                    )
                    await process.stdin.send(data.encode() + b"\n")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_writer.aclose()  # the server stopped reading: end the session

    async with anyio.create_task_group() as tg:
        tg.start_soon(stdout_reader)
        tg.start_soon(stdin_writer)
        try:
            yield conn
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process)
                conn.returncode = process.returncode
                for stream in (read_stream, write_stream, read_writer, write_reader):
                    await stream.aclose()
            tg.cancel_scope.cancel()


def _message(
    conn: StdioConnection, line: bytes | tuple[bytes, bytes, int], limit: int, name: str
) -> SessionMessage | None:
    if isinstance(line, tuple):
        head, tail, size = line
        conn.oversized_lines += 1
        reply = oversized_reply(head, tail, size, limit)
        log.warning(
            "MCP server %s wrote a message of %d bytes or more (limit %d); %s",
            name,
            size,
            limit,
            "its request gets an error" if reply else "no request id found: dropped",
        )
        return reply
    if not line.strip():
        return None
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError:
        conn.garbage_lines += 1
        if conn.garbage_lines <= GARBAGE_LOG_LINES:
            log.warning(
                "MCP server %s wrote a line that is not JSON-RPC on stdout (skipped; servers "
                "must log to stderr): %r%s",
                name,
                line[:120],
                "" if conn.garbage_lines < GARBAGE_LOG_LINES else " (further such lines counted)",
            )
        return None


async def _stop(process: anyio.abc.Process) -> None:
    """Close stdin, wait, then SIGTERM and SIGKILL the server's process group."""
    if process.stdin is not None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
        with anyio.move_on_after(EXIT_GRACE_S if sig is None else TERM_GRACE_S):
            # Polled, not process.wait(): that also waits for the pipes to close,
            # which a child of the server holding them open can delay forever.
            while process.returncode is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        if process.returncode is not None:
            break
    # Children left in the group (the leader exited first) go too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.stdout is not None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdout.aclose()
