"""The registry on an etcd that requires TLS and client certificates (real etcd, real certs).

The cluster serves its client port with a certificate of a test CA
(``tests/support/tls.py``, made by ``toolcall certs``' functions) and
requires client certificates of that CA (``--client-cert-auth``). A
registry with ``TOOLCALL_ETCD_CA_FILE``/``_CERT_FILE``/``_KEY_FILE`` (here
the ``EtcdOptions`` they fill) stores and lists tools; one without a client
certificate, with a client certificate of another CA, or trusting another
CA does not start and says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_service import start_registry
from registry_service.etcd_storage import EtcdOptions
from registry_service.store import StorageError
from tests.support.etcd import EtcdCluster, EtcdTLS, start_cluster, stop_cluster
from tests.support.registry import etcd_options, running_registry, settings, tool
from tests.support.tls import Certs, make_certs

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("etcd-certs"))


@pytest.fixture(scope="module")
def tls_cluster(certs: Certs) -> Iterator[EtcdCluster]:
    tls = EtcdTLS(
        cert=Path(certs.path("server")),
        key=Path(certs.path("server", "key")),
        ca=Path(certs.path("ca")),
        client_cert=Path(certs.path("client-admin")),
        client_key=Path(certs.path("client-admin", "key")),
    )
    cluster = start_cluster(1, tls=tls)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


def options(tmp_path: Path, cluster: EtcdCluster, certs: Certs, **files: str) -> EtcdOptions:
    """Options for ``cluster`` with ``files`` (ca, cert, key: file stems of ``certs``)."""
    o = etcd_options(tmp_path, cluster.endpoints)
    o.timeout_s = 2.0
    if "ca" in files:
        o.ca_file = Path(certs.path(files["ca"]))
    if "cert" in files:
        o.cert_file = Path(certs.path(files["cert"]))
        o.key_file = Path(certs.path(files["cert"], "key"))
    return o


async def test_a_registry_with_the_clusters_ca_and_a_client_certificate_stores_tools(
    tmp_path: Path, tls_cluster: EtcdCluster, certs: Certs
) -> None:
    assert all(e.startswith("https://") for e in tls_cluster.endpoints)
    o = options(tmp_path, tls_cluster, certs, ca="ca", cert="client-alice")
    async with running_registry(tmp_path, store="etcd", etcd=o) as reg:
        await reg.register(tool("over_tls"))
        assert await reg.names() == [("default", "over_tls")]
    # Another process finds it (it is in etcd, not in the registry).
    async with running_registry(tmp_path, store="etcd", etcd=o) as again:
        assert await again.names() == [("default", "over_tls")]


@pytest.mark.parametrize(
    "files",
    [
        {"ca": "ca"},  # no client certificate: refused by --client-cert-auth
        {"ca": "ca", "cert": "client-foreign"},  # a client certificate of another CA
        {"ca": "other-ca", "cert": "client-alice"},  # the server's certificate not trusted
        {},  # plaintext to a TLS port (https:// endpoints: TLS with the system CAs)
    ],
    ids=["no-client-cert", "foreign-client-cert", "wrong-ca", "system-cas"],
)
async def test_a_registry_without_the_right_certificates_does_not_start_and_says_why(
    tmp_path: Path, tls_cluster: EtcdCluster, certs: Certs, files: dict[str, str]
) -> None:
    o = options(tmp_path, tls_cluster, certs, **files)
    with pytest.raises(StorageError, match="etcd"):
        await start_registry(settings(tmp_path, store="etcd", etcd=o))
