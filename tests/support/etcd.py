"""A real etcd cluster for tests: three members on loopback ports, data in a temp dir.

The binary comes from Debian's ``etcd-server`` package (``make test`` installs
it when missing and running as root). Without it the tests that need it fail
with a message saying so; they are not skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.plugins import reap

MISSING = (
    "etcd is not installed: run `make test` as root (it apt-installs etcd-server), "
    "or `apt-get install etcd-server`, or put an etcd 3.4+ binary on PATH"
)


def etcd_binary() -> str:
    """The etcd binary; fails the test with how to install it when there is none."""
    found = shutil.which("etcd") or (
        "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None
    )
    if found is None:
        pytest.fail(MISSING, pytrace=False)
    return found


def _die_with_parent() -> None:
    """Linux: the member gets SIGKILL when the test process dies (a killed pytest
    leaves no etcd behind)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def die_with_parent() -> tuple[list[str], Any]:
    """(argv prefix, preexec_fn) for a child that dies with this process.

    ``setpriv --pdeathsig KILL`` when there is one: a ``preexec_fn`` runs
    Python in the forked child, which crashes now and then (SIGSEGV before
    the exec) when the parent has gRPC threads running, as a test under load
    does when it restarts a member."""
    if setpriv := shutil.which("setpriv"):
        return [setpriv, "--pdeathsig", "KILL", "--"], None
    return [], _die_with_parent


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"


@dataclass
class EtcdTLS:
    """Client-side TLS of a cluster: its server certificate and key, and the CA
    whose client certificates it requires (``--client-cert-auth``)."""

    cert: Path
    key: Path
    ca: Path
    # What the health checks dial with (a client certificate of ``ca``).
    client_cert: Path
    client_key: Path


@dataclass
class EtcdCluster:
    """``members`` running from ``root``; ``endpoints`` is what TOOLCALL_ETCD_ENDPOINTS takes."""

    root: Path
    members: list[Member] = field(default_factory=list)
    tls: EtcdTLS | None = None  # clients must use TLS and a client certificate

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoints(self) -> list[str]:
        if self.tls:
            return [f"https://{m.endpoint}" for m in self.members]
        return [m.endpoint for m in self.members]

    def _tls_flags(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--cert-file", str(self.tls.cert),
            "--key-file", str(self.tls.key),
            "--trusted-ca-file", str(self.tls.ca),
            "--client-cert-auth",
        ]  # fmt: skip

    def _urlopen(self, url: str, data: bytes | None = None) -> Any:
        import ssl
        import urllib.request

        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
        return urllib.request.urlopen(request, timeout=2, context=context)

    def _start(self, member: Member, state: str) -> None:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        client_url = f"{self.scheme}://127.0.0.1:{member.client_port}"
        log = open(self.root / f"{member.name}.log", "ab")
        prefix, preexec = die_with_parent()
        member.process = subprocess.Popen(
            [
                *prefix,
                etcd_binary(),
                "--name", member.name,
                "--data-dir", str(member.data_dir),
                "--listen-client-urls", client_url,
                "--advertise-client-urls", client_url,
                *self._tls_flags(),
                "--listen-peer-urls", f"http://127.0.0.1:{member.peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{member.peer_port}",
                "--initial-cluster", initial,
                "--initial-cluster-state", state,
                "--initial-cluster-token", self.root.name,
                # Quick elections on loopback; fsync is not what these tests are about.
                "--heartbeat-interval", "50",
                "--election-timeout", "500",
                "--unsafe-no-fsync",
                "--logger", "zap",
                "--log-level", "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ETCD_UNSUPPORTED_ARCH": ""},
            preexec_fn=preexec,
        )  # fmt: skip
        log.close()

    def start(self, size: int = 3) -> None:
        ports = free_ports(2 * size)
        self.members = [
            Member(f"m{i}", ports[2 * i], ports[2 * i + 1], self.root / f"m{i}")
            for i in range(size)
        ]
        for member in self.members:
            self._start(member, "new")
        self.wait_healthy()

    def wait_healthy(self, timeout_s: float = 30.0, members: list[Member] | None = None) -> None:
        """Waits until each running member answers a linearizable read (a leader exists)."""
        deadline = time.monotonic() + timeout_s
        for member in members or [m for m in self.members if m.process is not None]:
            while True:
                try:
                    with self._urlopen(f"{self.scheme}://{member.endpoint}/health") as reply:
                        if b'"true"' in reply.read():
                            break
                except OSError:
                    pass
                if member.process is not None and member.process.poll() is not None:
                    log = (self.root / f"{member.name}.log").read_text()[-2000:]
                    code = member.process.returncode
                    pytest.fail(f"etcd member {member.name} exited ({code}):\n{log}", pytrace=False)
                if time.monotonic() > deadline:
                    pytest.fail(f"etcd member {member.name} not healthy in {timeout_s}s")
                time.sleep(0.05)

    def kill(self, member: Member) -> None:
        """kill -9: no goodbye to the cluster."""
        if member.process is not None:
            member.process.send_signal(signal.SIGKILL)
            member.process.wait()
            member.process = None

    def relaunch(self, member: Member) -> None:
        """Starts a stopped member again, without waiting. Call it from a thread that
        outlives the member: PR_SET_PDEATHSIG fires when the forking thread ends."""
        self._start(member, "existing")

    def restart(self, member: Member) -> None:
        self.relaunch(member)
        self.wait_healthy(members=[member])

    def leader(self) -> Member:
        import json

        for member in self.members:
            if member.process is None:
                continue
            url = f"{self.scheme}://{member.endpoint}/v3/maintenance/status"
            with self._urlopen(url, b"{}") as reply:
                status = json.loads(reply.read())
            if status["header"]["member_id"] == status["leader"]:
                return member
        raise AssertionError("no etcd leader")

    def stop(self) -> None:
        for member in self.members:
            if member.process is not None:
                member.process.terminate()
        for member in self.members:
            if member.process is not None:
                reap(member.process, 5)
                member.process = None


def start_cluster(size: int = 3, tls: EtcdTLS | None = None) -> EtcdCluster:
    cluster = EtcdCluster(Path(tempfile.mkdtemp(prefix="toolcall-etcd-")), tls=tls)
    try:
        cluster.start(size)
    except BaseException:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
        raise
    return cluster


def stop_cluster(cluster: EtcdCluster) -> None:
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)
