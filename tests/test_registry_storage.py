"""The registry's database under real file faults: deleted, full, read-only, corrupt.

Before: a write error was logged and swallowed after the change was already
applied in memory, so Register said OK for a tool that was not stored, and
Unregister removed a tool that came back after a restart; a database deleted
while running took writes into an unlinked file; a corrupt file at startup
was a line without the file's name, or (truncated) sometimes none. Now the
write comes first, a failed one is UNAVAILABLE naming the file with nothing
changed, and a corrupt or unwritable database stops startup with one line
naming it. Everything is a real file: deleted, ``chmod a-w`` (read-only for
root too: no write bit counts as read-only), and a small tmpfs (root only)
filled up or mounted read-only (only at startup: a file system cannot be
remounted read-only while the registry holds the database open for writing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from registry_service.archive import ArchiveError
from tests.support.plugins import REPO_ROOT, child_env, free_port
from tests.support.registry import Registry, running_registry, tool
from toolcall.v1 import registry_pb2

pytestmark = [pytest.mark.anyio, pytest.mark.sqlite_store]

DB = "registry.sqlite3"
# ~24 KiB of definition: needs new pages in the WAL, so a full disk refuses it.
BIG = {"description": "€" * 4096, "ack_message": "€" * 4096}


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int = 1024) -> Iterator[Path]:
    """A real small file system at ``path`` (needs root; skips otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def fill_disk(path: Path) -> Path:
    """Writes a file until the file system at ``path`` is full."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


async def refused_unavailable(call: object, *words: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
    details = info.value.details() or ""
    for word in words:
        assert word in details, details
    assert "Traceback" not in details


def delete_database(directory: Path) -> None:
    for f in directory.glob(DB + "*"):  # the file, its WAL and shared-memory index
        f.unlink()


def unregister(reg: Registry, name: str) -> object:
    return reg.stub.Unregister(registry_pb2.UnregisterRequest(name=name), timeout=5)


async def test_a_database_deleted_while_running_refuses_changes_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path) as reg:
        assert (await reg.register(tool("kept"))).ok
        delete_database(tmp_path)
        await refused_unavailable(reg.register(tool("new")), str(tmp_path / DB), "deleted")
        await refused_unavailable(unregister(reg, "kept"), "deleted")
        clear = reg.stub.Clear(registry_pb2.ClearRequest(source="x"), timeout=5)
        assert (await clear).removed == 0  # nothing to remove: nothing to write
        assert await reg.names() == [("default", "kept")]
        # Leased tools are never stored, so plugins keep working.
        lease = await reg.stub.CreateLease(registry_pb2.CreateLeaseRequest(ttl_seconds=30))
        assert (await reg.register(tool("leased"), lease_id=lease.lease_id)).ok


async def test_a_full_disk_refuses_register_and_changes_nothing(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        async with running_registry(disk) as reg:
            assert (await reg.register(tool("small"))).ok
            filler = fill_disk(disk)
            await refused_unavailable(reg.register(tool("big", **BIG)), str(disk / DB), "full")
            await refused_unavailable(reg.register(tool("big2", **BIG)), "full")
            assert await reg.names() == [("default", "small")]
            filler.unlink()
            assert (await reg.register(tool("big", **BIG))).ok
        async with running_registry(disk) as reg:  # what was acknowledged, nothing else
            assert await reg.names() == [("default", "big"), ("default", "small")]


async def test_a_database_made_read_only_while_running_refuses_changes_then_recovers(
    tmp_path: Path,
) -> None:
    db = tmp_path / DB
    async with running_registry(tmp_path) as reg:
        assert (await reg.register(tool("kept"))).ok
        set_mode(db, 0o444)  # no write bit: read-only for root too
        try:
            await refused_unavailable(reg.register(tool("new")), str(db), "read-only")
            await refused_unavailable(unregister(reg, "kept"), "read-only")
            assert await reg.names() == [("default", "kept")]
        finally:
            set_mode(db, 0o644)
        assert (await reg.register(tool("new"))).ok
    async with running_registry(tmp_path) as reg:
        assert await reg.names() == [("default", "kept"), ("default", "new")]


async def test_a_read_only_database_at_startup_is_an_error_naming_the_file(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path) as reg:
        assert (await reg.register(tool("kept"))).ok
    db = tmp_path / DB
    set_mode(db, 0o444)
    try:
        with pytest.raises(ArchiveError, match=f"{db} is read-only"):
            async with running_registry(tmp_path):
                pass
    finally:
        set_mode(db, 0o644)


async def test_a_read_only_file_system_at_startup_is_an_error_naming_the_file(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        async with running_registry(disk) as reg:
            assert (await reg.register(tool("kept"))).ok
        # The registry has closed the file, so the mount can turn read-only.
        remount(disk, "ro")
        try:
            with pytest.raises(ArchiveError, match=str(disk / DB)):
                async with running_registry(disk):
                    pass
        finally:
            remount(disk, "rw")


def set_mode(path: Path, mode: int) -> None:
    path.chmod(mode)


def corrupt_garbage(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[:100] = b"this is not sqlite " * 5 + b"xxxxx"
    db.write_bytes(bytes(data))


def corrupt_truncate(db: Path) -> None:
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)


def corrupt_middle(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[8192:16384] = os.urandom(8192)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [corrupt_garbage, corrupt_truncate, corrupt_middle])
async def test_a_corrupt_database_is_a_one_line_startup_error_naming_the_file(
    tmp_path: Path, corrupt: object
) -> None:
    async with running_registry(tmp_path) as reg:
        for i in range(300):
            assert (await reg.register(tool(f"t{i:03d}", description="x" * 300))).ok
    db = tmp_path / DB
    assert not (tmp_path / (DB + "-wal")).exists()  # checkpointed on close: all in the file
    corrupt(db)  # type: ignore[operator]
    argv = [sys.executable, "-m", "toolcall.cli", "registry"]
    argv += ["--address", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path)]
    proc = await asyncio.to_thread(
        subprocess.run,
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=child_env(),
    )
    assert proc.returncode == 1
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert str(db) in lines[0] and "corrupt" in lines[0]
