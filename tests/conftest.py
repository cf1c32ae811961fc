"""Shared pytest setup: async tests run on asyncio through anyio's plugin."""

from __future__ import annotations

import pytest

from toolcall import grpc_env

# The tests' in-process servers run on the gRPC settings toolcall's programs
# use; here, before any test module loads grpc (children inherit them).
grpc_env.apply()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """Every test gets its own TOOLCALL_DATA_DIR so SQLite files never leak between tests."""
    monkeypatch.setenv("TOOLCALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TOOLCALL_TOKEN", raising=False)
