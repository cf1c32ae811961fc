"""``toolcall registry`` as a process: health, reflection, grpcurl (the documented
examples), the token over the wire, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from toolcall.clients import wait_healthy
from toolcall.v1 import registry_pb2, registry_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GRPCURL = BIN / "grpcurl"
DOC_ADDRESS = "127.0.0.1:48911"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def registry_process(
    tmp_path: Path, *args: str, token: str = ""
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    address = f"127.0.0.1:{_free_port()}"
    log_path = tmp_path / "registry.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), TOOLCALL_TOKEN=token)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "toolcall.cli",
                "registry",
                "--address",
                address,
                "--data-dir",
                str(tmp_path / "data"),
                *args,
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        asyncio.run(wait_healthy(address, timeout_s=15))
        yield address, proc, log_path
    except BaseException:
        print(log_path.read_text(errors="replace"), file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GRPCURL), *args], capture_output=True, text=True, timeout=30)


def test_health_and_reflection(tmp_path: Path) -> None:
    with registry_process(tmp_path) as (address, _, _), grpc.insecure_channel(address) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs declare no methods
        for service in ("", "toolcall.v1.ToolRegistry"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"toolcall.v1.ToolRegistry", "grpc.health.v1.Health"} <= services
        proto = db.FindFileContainingSymbol("toolcall.v1.ToolRegistry")
        [registry] = [s for s in proto.service if s.name == "ToolRegistry"]
        assert {m.name for m in registry.method} == {
            "Register",
            "Unregister",
            "Clear",
            "List",
            "Invoke",
            "Watch",
            "CreateLease",
            "KeepAlive",
            "RevokeLease",
        }


def _documented_examples() -> str:
    text = (REPO / "docs" / "registry.md").read_text()
    section = text.split("## grpcurl examples", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return block.group(1)


def test_documented_grpcurl_examples_work(tmp_path: Path) -> None:
    script = _documented_examples()
    assert script.count("grpcurl ") >= 8
    with registry_process(tmp_path, "--roles", "default,admin") as (address, _, _):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script.replace(DOC_ADDRESS, address)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", TOOLCALL_TOKEN=""),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "toolcall.v1.ToolRegistry" in out and "SERVING" in out
        assert '"ok": true' in out and '"affected_roles"' in out
        assert '"is_error": true' in out and "UNAVAILABLE" in out
        assert '"lease_id": "lease_' in out
        assert "EVENT_TYPE_SYNCED" in out
        assert '"removed": 2' in out  # the final Clear, in both roles


def test_token_over_the_wire_with_grpcurl(tmp_path: Path) -> None:
    with registry_process(tmp_path, token="s3cret") as (address, _, log_path):
        body = ["-d", '{"source": "x"}', address, "toolcall.v1.ToolRegistry/Clear"]
        refused = grpcurl("-plaintext", *body)
        assert refused.returncode != 0 and "Unauthenticated" in refused.stderr
        allowed = grpcurl("-plaintext", "-H", "authorization: Bearer s3cret", *body)
        assert allowed.returncode == 0, allowed.stderr
        listed = grpcurl("-plaintext", "-d", "{}", address, "toolcall.v1.ToolRegistry/List")
        assert listed.returncode == 0
        assert "token required" in log_path.read_text()


def test_sigterm_stops_cleanly_and_tools_persist(tmp_path: Path) -> None:
    with registry_process(tmp_path, "--roles", "a,b") as (address, proc, log_path):
        register = grpcurl(
            "-plaintext",
            "-d",
            '{"tool": {"name": "kept", "callback_address": "127.0.0.1:9"}}',
            address,
            "toolcall.v1.ToolRegistry/Register",
        )
        assert register.returncode == 0, register.stderr
        # An open Watch must not hold up the shutdown.
        watch = subprocess.Popen(
            [str(GRPCURL), "-plaintext", "-d", "{}", address, "toolcall.v1.ToolRegistry/Watch"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 4
        watch.wait(timeout=10)
        log = log_path.read_text()
        assert "roles: a, b" in log and "token not required" in log
        assert "stopped toolcall.v1.ToolRegistry" in log
        assert "Traceback" not in log
    # Same data dir, new process: the leaseless tool is back.
    with registry_process(tmp_path, "--roles", "a,b") as (address, _, _):
        with grpc.insecure_channel(address) as channel:
            stub = registry_pb2_grpc.ToolRegistryStub(channel)
            reply = stub.List(registry_pb2.ListRequest(), timeout=5)
        assert [(t.role, t.tool.name) for t in reply.tools] == [("a", "kept"), ("b", "kept")]


def test_help_documents_the_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "toolcall.cli", "registry", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 0
    for flag in (
        "--address",
        "--roles",
        "--token",
        "--data-dir",
        "TOOLCALL_ROLES",
        "TOOLCALL_TOKEN",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize("roles", [",", " , "])
def test_empty_roles_are_refused(tmp_path: Path, roles: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "toolcall.cli",
            "registry",
            "--address",
            "127.0.0.1:0",
            "--roles",
            roles,
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode != 0
    assert "--roles" in result.stderr


def test_a_taken_port_is_one_readable_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "toolcall.cli",
                "registry",
                "--address",
                address,
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
    assert result.returncode == 1
    assert f"cannot start the registry on {address}" in result.stderr
    assert "Traceback" not in result.stderr
