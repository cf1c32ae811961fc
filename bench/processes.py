"""Servers under test, each in its own process, and how to read their memory.

A bench server prints ``READY <target>`` on stdout once it accepts calls (and
nothing after it); our own services, started through the ``toolcall`` CLI on
an address picked here, are ready when their gRPC health check says SERVING;
a program that does neither (the Go, TypeScript and Java example plugins, given
their address) is ready once a gRPC connection to it is.
``ServerProcess`` starts either with ``sys.executable`` (or the program
named), waits until it is
ready and stops it with SIGTERM (SIGKILL after a grace period). Output goes to
a log file whose tail is shown when the server fails to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import grpc
import httpx2 as httpx

from toolcall.clients import wait_healthy

log = logging.getLogger(__name__)

READY_PREFIX = "READY "
REPO_ROOT = Path(__file__).resolve().parents[1]


# Servers running now, pid -> name: the runner reads their CPU time (bench/cpu.py).
LIVE: dict[int, str] = {}


class ServerFailed(RuntimeError):
    """A server under test did not start."""


def announce_ready(target: str) -> None:
    """Called by a bench server once it serves: tells the bench where to connect."""
    print(f"{READY_PREFIX}{target}", flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers given an address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` in /proc/<pid>/status), 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ServerProcess:
    """One server under test running as ``python <args>``."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_dir: Path,
        healthy_at: str | None = None,
        connectable_at: str | None = None,
        executable: str = sys.executable,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.executable = executable
        self.args = list(args)
        self.env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
        self.log_path = log_dir / f"{name}.log"
        self.startup_timeout_s = startup_timeout_s
        # Ready when this address answers health checks, instead of a READY line.
        self.healthy_at = healthy_at
        # Ready when a gRPC connection to this address is (a server with no health service).
        self.connectable_at = connectable_at
        self.target = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def start(self) -> str:
        with self.log_path.open("w") as output:
            self._proc = await asyncio.create_subprocess_exec(
                self.executable,
                *self.args,
                stdout=asyncio.subprocess.PIPE if self._reads_ready else output,
                stderr=output,
                env=self.env,
                cwd=REPO_ROOT,
            )
        LIVE[self._proc.pid] = self.name
        try:
            async with asyncio.timeout(self.startup_timeout_s):
                if self.healthy_at:
                    self.target = await self._wait_healthy(self.healthy_at)
                elif self.connectable_at:
                    self.target = await self._wait_connectable(self.connectable_at)
                else:
                    self.target = await self._read_ready()
        except (TimeoutError, ServerFailed) as exc:
            await self.stop()
            tail = self.log_path.read_text()[-2000:]
            raise ServerFailed(f"{self.name} did not start ({exc}); its log:\n{tail}") from None
        log.debug("%s ready at %s (pid %d)", self.name, self.target, self.pid)
        return self.target

    @property
    def _reads_ready(self) -> bool:
        return not (self.healthy_at or self.connectable_at)

    async def _wait_connectable(self, address: str) -> str:
        assert self._proc is not None
        while self._proc.returncode is None:
            async with grpc.aio.insecure_channel(address) as probe:
                try:
                    await asyncio.wait_for(probe.channel_ready(), 0.5)
                    return address
                except TimeoutError:
                    continue
        raise ServerFailed(f"exited with code {self._proc.returncode}")

    async def _read_ready(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        while line := (await stdout.readline()).decode():
            if line.startswith(READY_PREFIX):
                # Whatever the server prints later goes to its log: a pipe
                # nobody reads would fill up and stall the server mid-run.
                self._drain = asyncio.create_task(self._copy_to_log(stdout))
                return line[len(READY_PREFIX) :].strip()
        raise ServerFailed(f"exited with code {await self._proc.wait()}")

    async def _copy_to_log(self, stdout: asyncio.StreamReader) -> None:
        with self.log_path.open("ab") as out:
            while chunk := await stdout.read(65536):
                out.write(chunk)

    async def _wait_healthy(self, address: str) -> str:
        """gRPC health for a service, ``GET <url>/healthz`` for an HTTP one (the gateway)."""
        assert self._proc is not None
        while self._proc.returncode is None:
            if address.startswith("http://"):
                if await _http_healthy(address):
                    return address
                await asyncio.sleep(0.1)
                continue
            try:
                await wait_healthy(address, timeout_s=0.5)
                return address
            except TimeoutError:
                continue
        raise ServerFailed(f"exited with code {self._proc.returncode}")

    async def stop(self, grace_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        drain, self._drain = self._drain, None
        if proc is not None:
            LIVE.pop(proc.pid, None)
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(grace_s):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            # Ends at EOF once the process is gone; a child still holding the
            # pipe must not hold up the bench.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(drain)
            drain.cancel()


async def _http_healthy(url: str) -> bool:
    async with httpx.AsyncClient(timeout=0.5) as http:
        try:
            return (await http.get(f"{url}/healthz")).status_code == 200
        except httpx.TransportError:
            return False


@contextlib.asynccontextmanager
async def running(
    name: str,
    args: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    healthy_at: str | None = None,
    connectable_at: str | None = None,
    executable: str = sys.executable,
) -> AsyncIterator[ServerProcess]:
    """Starts a server process for the duration of the block."""
    server = ServerProcess(
        name,
        args,
        env=env,
        log_dir=log_dir,
        healthy_at=healthy_at,
        connectable_at=connectable_at,
        executable=executable,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def short_tmp_dir(prefix: str) -> Path:
    """A fresh directory under /tmp: unix socket paths must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
