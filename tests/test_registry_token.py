"""Where the registry's token comes from: a file or the environment, never only the command line.

``--token`` shows the secret to every local user in the process list, so the
registry also reads it from ``--token-file`` / ``TOOLCALL_TOKEN_FILE``, and the
CLI and the plugin SDK read the same file. An unusable token file is one clear
error, never a silent "no token".
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from plugin_stub import Plugin
from registry_service.main import add_arguments, settings_from_args
from tests.support.plugins import REPO_ROOT, ChildProcess, child_env, free_port
from tests.support.registry import tool
from toolcall import config
from toolcall.clients import auth_metadata, channel, wait_healthy
from toolcall.v1 import registry_pb2, registry_pb2_grpc

TOKEN = "file-token-4f1c"


def token_file(tmp_path: Path, content: str | bytes = TOKEN + "\n") -> Path:
    path = tmp_path / "token"
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in child_env().items() if not k.startswith("TOOLCALL_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "toolcall.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**env, **extra},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.anyio
async def test_a_token_file_keeps_the_token_off_the_command_line_and_the_cli_reads_it(
    tmp_path: Path,
) -> None:
    path = token_file(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "toolcall.cli", "registry", "--address", address]
    argv += ["--data-dir", str(tmp_path), "--token-file", str(path)]
    with ChildProcess(argv, tmp_path / "registry.log", child_env()) as registry:
        await wait_healthy(address, timeout_s=20)
        cmdline = await asyncio.to_thread(Path(f"/proc/{registry.proc.pid}/cmdline").read_bytes)
        assert TOKEN.encode() not in cmdline
        async with channel(address) as ch:
            stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)
            request = registry_pb2.RegisterRequest(tool=tool("t", source="tok"))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Register(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert (await stub.Register(request, timeout=5, metadata=auth_metadata(TOKEN))).ok

        # The CLI reads the same file; without it the change is refused.
        refused = cli("tools", "--registry", address, "clear", "--source", "tok")
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
        done = cli(
            "tools", "--registry", address, "clear", "--source", "tok",
            TOOLCALL_TOKEN_FILE=str(path),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "removed 1"
    assert "process list" not in registry.log()


def _parse(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(args))


def test_token_on_the_command_line_still_works_but_warns(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.WARNING):
        settings = settings_from_args(_parse("--token", TOKEN, "--data-dir", str(tmp_path)))
    assert settings.token == TOKEN
    assert any("process list" in r.getMessage() for r in caplog.records)
    path = token_file(tmp_path)
    assert settings_from_args(_parse("--token-file", str(path))).token == TOKEN


@pytest.mark.parametrize(
    ("why", "content"),
    [
        ("is empty", b" \n"),
        ("larger than", b"x" * (config.MAX_TOKEN_BYTES + 1)),
        ("not UTF-8", b"\xff\xfe"),
        ("printable ASCII", b"two words\n"),
        ("printable ASCII", b"tok\x1b[2Jen"),
    ],
)
def test_an_unusable_token_file_is_an_error_naming_the_file(
    tmp_path: Path, why: str, content: bytes
) -> None:
    path = token_file(tmp_path, content)
    with pytest.raises(config.ConfigError) as info:
        config.read_token_file(path)
    assert why in str(info.value) and str(path) in str(info.value)
    with pytest.raises(SystemExit) as exited:
        settings_from_args(_parse("--token-file", str(path)))
    assert str(path) in str(exited.value)


def test_the_environment_names_one_token_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = token_file(tmp_path)
    monkeypatch.delenv("TOOLCALL_TOKEN", raising=False)
    monkeypatch.setenv("TOOLCALL_TOKEN_FILE", str(path))
    assert config.token() == TOKEN
    assert auth_metadata() == (("authorization", f"Bearer {TOKEN}"),)
    assert Plugin(plugin_id="p").token == TOKEN  # the SDK reads the file too
    monkeypatch.setenv("TOOLCALL_TOKEN", "other")
    with pytest.raises(config.ConfigError, match="not both"):
        config.token()
    monkeypatch.delenv("TOOLCALL_TOKEN")
    monkeypatch.setenv("TOOLCALL_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(config.ConfigError, match="missing"):
        config.token()


def test_the_cli_reports_an_unreadable_token_file_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    out = cli(
        "tools", "--registry", "127.0.0.1:1", "clear", "--source", "s",
        TOOLCALL_TOKEN_FILE=str(missing),
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and str(missing) in out.stderr
    assert "Traceback" not in out.stderr


def test_a_token_file_others_can_read_is_used_but_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private = token_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="toolcall.config"):
        assert config.read_token_file(private) == TOKEN
    assert not caplog.records
    shared = tmp_path / "shared-token"
    shared.write_text(TOKEN)
    shared.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="toolcall.config"):
        assert config.read_token_file(shared) == TOKEN
        assert config.read_token_file(shared) == TOKEN
    [warning] = caplog.records
    assert str(shared) in warning.getMessage() and "chmod 600" in warning.getMessage()
