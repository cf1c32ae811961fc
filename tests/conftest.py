"""Shared pytest setup: async tests run on asyncio through anyio's plugin."""

from __future__ import annotations

import pytest

from toolcall import grpc_env

# The test process and the processes it starts run on toolcall's gRPC runtime,
# like the services: set before any test module imports grpc, and inherited.
grpc_env.apply()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """Every test gets its own TOOLCALL_DATA_DIR so SQLite files never leak between tests."""
    monkeypatch.setenv("TOOLCALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TOOLCALL_TOKEN", raising=False)
