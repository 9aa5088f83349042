"""Certificates and keys for the local control plane (one throw-away CA per cluster)."""

from __future__ import annotations

import datetime
import ipaddress
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=30)
# The `kubernetes` Service address (lipsync_testbed.hostnet).
_SERVICE_IP = "198.19.0.1"
# Where the test bed registers KEDA (lipsync_testbed.autoscaling); its certificate names them.
KEDA_NAMESPACE = "keda"
KEDA_OPERATOR_SERVICE = "keda-operator"
KEDA_METRICS_SERVICE = "keda-metrics-apiserver"


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and PEM private key written to disk."""

    cert_path: Path
    key_path: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert_path.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key_path.read_bytes()


@dataclass(frozen=True)
class ClusterPKI:
    ca: KeyPair
    apiserver: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    kwok: KeyPair
    # The aggregation layer: the API server authenticates to extension API servers (KEDA's
    # metrics server) with front_proxy_client, issued by a CA of its own (as kubeadm does), so
    # no other client certificate of the cluster CA can pass as the front proxy.
    front_proxy_ca: KeyPair
    front_proxy_client: KeyPair
    # Autoscaling components (lipsync_testbed.autoscaling): one admin client for Karpenter,
    # KEDA and Prometheus, and KEDA's mutual TLS between its operator and metrics server
    # (serving and client use, like the certificates KEDA generates itself).
    autoscaling: KeyPair
    keda: KeyPair
    # Real nodes: the API server's client for kubelets (logs, exec, port-forward), kube-proxy.
    kubelet_client: KeyPair
    kube_proxy: KeyPair
    service_account_key: Path
    service_account_pub: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    # Kubernetes reads the user from the CN, and a node's user is `system:node:<node name>`;
    # node names (Karpenter's) can pass X.509's 64-character bound, which Kubernetes does not
    # enforce, so neither do we (cryptography then warns).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name, _validate=False)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> KeyPair:
    pair = KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    pair.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key_path.write_bytes(_key_pem(key))
    pair.key_path.chmod(0o600)
    return pair


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    *,
    server_names: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
    client_too: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    server = bool(server_names or server_ips)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    if server and client_too:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if server:
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _new_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_key = _new_key()
    ca_name = _name(common_name)
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca_cert, ca_key


def generate_pki(directory: Path, api_ips: tuple[str, ...] = ()) -> ClusterPKI:
    """Create a CA, the API server's serving certificate (for 127.0.0.1, the `kubernetes`
    Service and `api_ips`), client certificates and SA keys."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _new_ca("lipsync-testbed-ca")
    ca = _write(directory, "ca", ca_cert, ca_key)
    proxy_ca_cert, proxy_ca_key = _new_ca("lipsync-testbed-front-proxy-ca")
    proxy_client_cert, proxy_client_key = _issue(
        proxy_ca_cert, proxy_ca_key, _name("front-proxy-client")
    )
    keda_cert, keda_key = _issue(
        ca_cert,
        ca_key,
        _name("keda"),
        server_names=(
            "localhost",
            f"{KEDA_OPERATOR_SERVICE}.{KEDA_NAMESPACE}.svc",
            f"{KEDA_METRICS_SERVICE}.{KEDA_NAMESPACE}.svc",
        ),
        server_ips=("127.0.0.1",),
        client_too=True,
    )

    def client(stem: str, common_name: str, organization: str | None = None) -> KeyPair:
        cert, key = _issue(ca_cert, ca_key, _name(common_name, organization))
        return _write(directory, stem, cert, key)

    serving_cert, serving_key = _issue(
        ca_cert,
        ca_key,
        _name("kube-apiserver"),
        server_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        server_ips=("127.0.0.1", _SERVICE_IP, *api_ips),
    )
    sa_key = _new_key()
    sa_key_path = directory / "sa.key"
    sa_key_path.write_bytes(_key_pem(sa_key))
    sa_key_path.chmod(0o600)
    sa_pub_path = directory / "sa.pub"
    sa_pub_path.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ClusterPKI(
        ca=ca,
        apiserver=_write(directory, "apiserver", serving_cert, serving_key),
        admin=client("admin", "kubernetes-admin", "system:masters"),
        controller_manager=client("controller-manager", "system:kube-controller-manager"),
        scheduler=client("scheduler", "system:kube-scheduler"),
        kwok=client("kwok", "kwok-controller", "system:masters"),
        front_proxy_ca=_write(directory, "front-proxy-ca", proxy_ca_cert, proxy_ca_key),
        front_proxy_client=_write(
            directory, "front-proxy-client", proxy_client_cert, proxy_client_key
        ),
        autoscaling=client("autoscaling", "lipsync-testbed-autoscaling", "system:masters"),
        keda=_write(directory, "keda", keda_cert, keda_key),
        kubelet_client=client("kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
        kube_proxy=client("kube-proxy", "system:kube-proxy"),
        service_account_key=sa_key_path,
        service_account_pub=sa_pub_path,
    )


@dataclass(frozen=True)
class NodeCertificates:
    """A real node's kubelet identity (system:node:<name>) and serving certificate."""

    client: KeyPair
    serving: KeyPair


def issue_node_certificates(
    pki_dir: Path, out_dir: Path, node_name: str, address: str
) -> NodeCertificates:
    """Certificates for the kubelet of `node_name`, signed by the cluster CA in `pki_dir`."""
    ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki_dir / 'ca.key'} is not an EC key")
    out_dir.mkdir(parents=True, exist_ok=True)
    client_cert, client_key = _issue(
        ca_cert, ca_key, _name(f"system:node:{node_name}", "system:nodes")
    )
    serving_cert, serving_key = _issue(
        ca_cert, ca_key, _name(node_name), server_names=(node_name,), server_ips=(address,)
    )
    return NodeCertificates(
        client=_write(out_dir, "kubelet-client", client_cert, client_key),
        serving=_write(out_dir, "kubelet-serving", serving_cert, serving_key),
    )


class CertificateAuthority:
    """A throw-away CA for TLS tests of our own servers: ``ca.crt`` in ``directory``, then
    ``issue(...)`` server or client certificates next to it."""

    def __init__(self, common_name: str, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._cert, self._key = _new_ca(f"{common_name}-ca")  # never a leaf's name
        self.pair = _write(directory, f"{common_name}-ca", self._cert, self._key)

    def issue(
        self, common_name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()
    ) -> KeyPair:
        """A server certificate for ``dns`` and ``ips``, or a client one when both are empty."""
        cert, key = _issue(
            self._cert, self._key, _name(common_name), server_names=dns, server_ips=ips
        )
        return _write(self.directory, common_name, cert, key)
