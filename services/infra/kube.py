"""etcd and kube-apiserver: pinned builds, certificates, and a throwaway test cluster.

The cluster is the control plane only, as envtest runs it: objects are stored and
validated, but with no kubelet or controller-manager nothing is scheduled, reconciled
or garbage-collected (namespaces stay ``Terminating``; never use ``helm --wait``).
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import shutil
import ssl
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s

from services.infra.cache import Cache
from services.infra.gobuild import GoCommand, build
from services.infra.process import Service, free_port

KUBE_VERSION = "v1.34.3"
#: The staging modules (k8s.io/api, client-go, ...) are published as v0.<minor>.<patch>.
KUBE_STAGING_VERSION = "v0.34.3"
ETCD_VERSION = "v3.6.13"

ETCD = GoCommand(
    name="etcd",
    module="go.etcd.io/etcd/server/v3",
    version=ETCD_VERSION,
    # The module root is etcd's `main` package (server/main.go -> etcdmain.Main).
    package="go.etcd.io/etcd/server/v3",
    # Its local replaces (../api, ../pkg, ./FORBIDDEN_DEPENDENCY) are dropped: the
    # require lines already pin the sibling modules at the same release.
    local_version=None,
    env={"CGO_ENABLED": "0"},
)

KUBE_APISERVER = GoCommand(
    name="kube-apiserver",
    module="k8s.io/kubernetes",
    version=KUBE_VERSION,
    package="k8s.io/kubernetes/cmd/kube-apiserver",
    local_version=KUBE_STAGING_VERSION,
    # Helm reads the server's gitVersion for `.Capabilities.KubeVersion`; the default
    # "v0.0.0-master+$Format:%H$" breaks charts' kubeVersion constraints.
    ldflags=" ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={KUBE_VERSION}",
            "-X k8s.io/component-base/version.gitMajor=1",
            "-X k8s.io/component-base/version.gitMinor=34",
        ]
    ),
    env={"CGO_ENABLED": "0"},
)

#: The user the kubeconfig authenticates as; system:masters bypasses RBAC.
ADMIN_USER = "admin"
ADMIN_GROUP = "system:masters"
_CERT_VALIDITY = datetime.timedelta(days=7)
#: RFC 5737 documentation address (TEST-NET-2): never routed, never in use.
_ADVERTISE_ADDRESS = "198.51.100.1"


@dataclass(frozen=True, kw_only=True)
class KubeBinaries:
    etcd: Path
    kube_apiserver: Path


def provision(cache: Cache) -> KubeBinaries:
    """Paths of the pinned etcd and kube-apiserver, built on first use."""
    return KubeBinaries(etcd=build(ETCD, cache), kube_apiserver=build(KUBE_APISERVER, cache))


# --- certificates -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClusterCerts:
    """PEM files of a test cluster's PKI, all in one directory."""

    ca_cert: Path  #: signs the serving cert; clients trust it
    serving_cert: Path
    serving_key: Path
    client_ca_cert: Path  #: the apiserver accepts client certs it signed
    client_ca_key: Path  #: signs certs for more users (:meth:`KubeCluster.user_kubeconfig`)
    admin_cert: Path
    admin_key: Path
    sa_public_key: Path  #: service-account tokens: verification ...
    sa_private_key: Path  #: ... and signing


@dataclass(frozen=True, kw_only=True)
class _Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys are generated in microseconds, unlike RSA, and Go and OpenSSL accept them.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    # Back-dated a little so a skewed clock between us and Go does not reject it.
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _CERT_VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _new_ca(common_name: str) -> _Issuer:
    key = _new_key()
    name = _name(common_name)
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return _Issuer(cert=cert, key=key)


def _issue(
    ca: _Issuer,
    subject: x509.Name,
    *,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _builder(subject, ca.cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca.key, hashes.SHA256()), key


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return path


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path} is not an EC private key")
    return key


def _write_public_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.write_bytes(pem)
    return path


def write_certs(directory: Path) -> ClusterCerts:
    """Generate a fresh PKI for one cluster into ``directory``.

    Like envtest: one CA for the serving cert, a separate client CA for user certs, and
    an admin user in ``system:masters``.
    """
    ca = _new_ca("wsched-test-ca")
    client_ca = _new_ca("wsched-test-client-ca")
    serving, serving_key = _issue(
        ca,
        _name("localhost"),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))],
    )
    admin, admin_key = _issue(
        client_ca, _name(ADMIN_USER, ADMIN_GROUP), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    sa_key = _new_key()
    return ClusterCerts(
        ca_cert=_write_cert(directory / "ca.crt", ca.cert),
        serving_cert=_write_cert(directory / "apiserver.crt", serving),
        serving_key=_write_key(directory / "apiserver.key", serving_key),
        client_ca_cert=_write_cert(directory / "client-ca.crt", client_ca.cert),
        client_ca_key=_write_key(directory / "client-ca.key", client_ca.key),
        admin_cert=_write_cert(directory / "admin.crt", admin),
        admin_key=_write_key(directory / "admin.key", admin_key),
        sa_public_key=_write_public_key(directory / "sa-signer.pub", sa_key),
        sa_private_key=_write_key(directory / "sa-signer.key", sa_key),
    )


def write_kubeconfig(
    path: Path,
    *,
    server_url: str,
    certs: ClusterCerts,
    user: str = ADMIN_USER,
    cert: Path | None = None,
    key: Path | None = None,
) -> Path:
    """A kubeconfig for the admin user (or ``user`` with its ``cert`` and ``key``), in
    the shape envtest writes."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "wsched-test",
                "cluster": {"server": server_url, "certificate-authority": str(certs.ca_cert)},
            },
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(cert or certs.admin_cert),
                    "client-key": str(key or certs.admin_key),
                },
            },
        ],
        "contexts": [
            {
                "name": "wsched-test",
                "context": {"cluster": "wsched-test", "user": user, "namespace": "default"},
            },
        ],
        "current-context": "wsched-test",
    }
    # helm warns on stderr about a group- or world-readable kubeconfig.
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- the cluster --------------------------------------------------------------------


def _distinct_free_ports(count: int) -> list[int]:
    # Each free_port() releases its port at once, so two calls may return the same one.
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _etcd_healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status == 200 and b'"true"' in response.read()
    finally:
        conn.close()


def _admin_tls(certs: ClusterCerts) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    context.load_cert_chain(str(certs.admin_cert), str(certs.admin_key))
    return context


def _apiserver_ready(port: int, context: ssl.SSLContext) -> bool:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=context)
    try:
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    finally:
        conn.close()


class KubeCluster:
    """A throwaway etcd + kube-apiserver on free loopback ports.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Everything it
    writes (etcd data, certificates, kubeconfig, logs) lives in one temporary directory
    that :meth:`stop` removes.
    """

    def __init__(self, *, binaries: KubeBinaries, start_timeout_s: float = 120) -> None:
        self._binaries = binaries
        self._start_timeout_s = start_timeout_s
        self._work_dir: Path | None = None
        self._certs: ClusterCerts | None = None
        self._kubeconfig: Path | None = None
        self._port = 0
        self._services: list[Service] = []
        #: Seconds from start() until /readyz answered, for benchmarks and reports.
        self.startup_s: float | None = None

    @property
    def server_url(self) -> str:
        if not self._port:
            raise RuntimeError("the cluster is not started")
        return f"https://127.0.0.1:{self._port}"

    @property
    def kubeconfig_path(self) -> Path:
        if self._kubeconfig is None:
            raise RuntimeError("the cluster is not started")
        return self._kubeconfig

    @property
    def certs(self) -> ClusterCerts:
        if self._certs is None:
            raise RuntimeError("the cluster is not started")
        return self._certs

    def api_client(self) -> k8s.ApiClient:
        """A new client authenticated as the admin user; the caller closes it."""
        config = k8s.Configuration(host=self.server_url)
        config.ssl_ca_cert = str(self.certs.ca_cert)
        config.cert_file = str(self.certs.admin_cert)
        config.key_file = str(self.certs.admin_key)
        return k8s.ApiClient(configuration=config)

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for another user (a client cert with CN ``user``, O ``groups``),
        who has the rights RBAC bindings give it and no more."""
        certs = self.certs
        issuer = _Issuer(
            cert=x509.load_pem_x509_certificate(certs.client_ca_cert.read_bytes()),
            key=_load_ec_key(certs.client_ca_key),
        )
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, user)]
            + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        )
        cert, key = _issue(issuer, subject, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        stem = self._dir / f"user-{user.replace(':', '_')}"
        return write_kubeconfig(
            stem.with_suffix(".kubeconfig"),
            server_url=self.server_url,
            certs=certs,
            user=user,
            cert=_write_cert(stem.with_suffix(".crt"), cert),
            key=_write_key(stem.with_suffix(".key"), key),
        )

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd, then kube-apiserver, and wait until the API is ready."""
        if self._work_dir is not None:
            raise RuntimeError("the cluster is already started")
        started = time.monotonic()
        self._work_dir = Path(tempfile.mkdtemp(prefix="wsched-kube-"))
        try:
            self._certs = write_certs(self._work_dir)
            etcd_port = self._start_etcd()
            self._start_apiserver(etcd_port)
            self._kubeconfig = write_kubeconfig(
                self._work_dir / "kubeconfig", server_url=self.server_url, certs=self._certs
            )
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started

    def stop(self) -> None:
        """Stop the apiserver before etcd (it would log errors otherwise) and clean up."""
        for service in reversed(self._services):
            service.stop()
        self._services.clear()
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
        self._work_dir = None
        self._certs = None
        self._kubeconfig = None
        self._port = 0

    @property
    def _dir(self) -> Path:
        if self._work_dir is None:
            raise RuntimeError("the cluster is not started")
        return self._work_dir

    def _launch(self, name: str, argv: list[str]) -> Service:
        service = Service(name=name, argv=argv, log_path=self._dir / f"{name}.log")
        self._services.append(service)
        service.start()
        return service

    def _start_etcd(self) -> int:
        client_port, peer_port = _distinct_free_ports(2)
        client_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        argv = [
            str(self._binaries.etcd),
            "--name=wsched-test",
            f"--data-dir={self._dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=wsched-test={peer_url}",
            # Test data is thrown away, so durability only costs time (envtest does too).
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        etcd = self._launch("etcd", argv)
        etcd.wait_ready(lambda: _etcd_healthy(client_port), timeout_s=self._start_timeout_s)
        return client_port

    def _start_apiserver(self, etcd_port: int) -> None:
        certs = self.certs
        self._port = free_port()
        argv = [
            str(self._binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--secure-port={self._port}",
            "--bind-address=127.0.0.1",
            # Only names the endpoint of the in-cluster `kubernetes` Service, which nothing
            # here dials; set so start-up does not depend on the host having a default
            # route, and not loopback, which Endpoints validation rejects.
            f"--advertise-address={_ADVERTISE_ADDRESS}",
            f"--tls-cert-file={certs.serving_cert}",
            f"--tls-private-key-file={certs.serving_key}",
            f"--client-ca-file={certs.client_ca_cert}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # No controller-manager creates service-account tokens for pods.
            "--disable-admission-plugins=ServiceAccount",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server_url}/",
            f"--service-account-key-file={certs.sa_public_key}",
            f"--service-account-signing-key-file={certs.sa_private_key}",
        ]
        apiserver = self._launch("kube-apiserver", argv)
        context = _admin_tls(certs)
        apiserver.wait_ready(
            lambda: _apiserver_ready(self._port, context), timeout_s=self._start_timeout_s
        )
