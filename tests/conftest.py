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


@pytest.fixture(scope="session")
def etcd_cluster():
    """A real three-member etcd cluster on loopback (tests/support/etcd.py), one per session."""
    from tests.support.etcd import start_cluster, stop_cluster

    cluster = start_cluster(3)
    yield cluster
    stop_cluster(cluster)


def pytest_addoption(parser):
    _llm_store_option(parser)
    parser.addoption(
        "--registry-store",
        choices=["sqlite", "etcd"],
        default="sqlite",
        help="backend of the registries the tests start (etcd: a three-member cluster)",
    )


@pytest.fixture(autouse=True)
def _registry_store(request):
    """With --registry-store=etcd, every registry a test starts through
    tests/support/registry.py keeps its tools in the session's etcd cluster."""
    if request.config.getoption("--registry-store") != "etcd":
        yield
        return
    from tests.support import registry

    registry.ETCD_ENDPOINTS[:] = request.getfixturevalue("etcd_cluster").endpoints
    yield
    registry.ETCD_ENDPOINTS.clear()


def pytest_collection_modifyitems(config, items):
    """--registry-store=etcd leaves out the tests of the SQLite backend itself (deselected,
    so the summary counts them)."""
    if (config.getoption("--registry-store"), config.getoption("--llm-store")) == (
        "sqlite",
        "sqlite",
    ):
        return
    keep = [item for item in items if item.get_closest_marker("sqlite_store") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on loopback (tests/support/postgres.py), one per session."""
    from tests.support.postgres import start_server, stop_server

    server = start_server()
    yield server
    stop_server(server)


def _llm_store_option(parser):
    parser.addoption(
        "--llm-store",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="store of the LLMServices the tests start (postgres: a real server)",
    )


@pytest.fixture(autouse=True)
def _llm_store(request):
    """With --llm-store=postgres, every LLMService a test starts through
    tests/support/llm_env.py keeps history and tasks in the session's PostgreSQL."""
    if request.config.getoption("--llm-store") != "postgres":
        yield
        return
    from tests.support import llm_env

    llm_env.PG_DSN[:] = [request.getfixturevalue("postgres_server").dsn()]
    yield
    llm_env.PG_DSN.clear()
