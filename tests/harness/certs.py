"""Certificates for the test control plane: a CA, the apiserver's serving certificate, an admin
client certificate (``O=system:masters``), the service-account signing key pair, and the pair
between kube-apiserver and the pod runner's kubelet endpoint (a serving certificate for
127.0.0.1 and the apiserver's kubelet client certificate).

ECDSA P-256 keeps generation instant. Python's TLS stack is strict, so the CA carries a critical
``basicConstraints CA:TRUE`` and every leaf an ``authorityKeyIdentifier``.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names a pod (or kubectl) might use for the apiserver, plus the first service IP of the
# service range the apiserver is started with (10.0.0.0/24): the `kubernetes` Service.
SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVING_IPS = ("127.0.0.1", "10.0.0.1")
# The identity kube-apiserver presents to kubelets (`--kubelet-client-certificate`); RBAC, not a
# privileged group, lets it read logs (tests.harness.cluster binds it to system:kubelet-api-admin).
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"


@dataclass(frozen=True)
class ClusterCertificates:
    """Paths of the PEM files written by :func:`write_certificates`."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_public_key: Path
    kubelet_serving_cert: Path
    kubelet_serving_key: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> ClusterCertificates:
        """Where :func:`write_certificates` puts each file in ``directory``."""
        return cls(
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            serving_cert=directory / "apiserver.crt",
            serving_key=directory / "apiserver.key",
            admin_cert=directory / "admin.crt",
            admin_key=directory / "admin.key",
            service_account_key=directory / "sa.key",
            service_account_public_key=directory / "sa.pub",
            kubelet_serving_cert=directory / "kubelet.crt",
            kubelet_serving_key=directory / "kubelet.key",
            kubelet_client_cert=directory / "apiserver-kubelet-client.crt",
            kubelet_client_key=directory / "apiserver-kubelet-client.key",
        )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    # Backdated an hour: a clock a little behind must not see "not yet valid".
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=365)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Signing only; a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _ca(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odoo-upgrade-test-ca")])
    not_before, not_after = _validity()
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    usage: x509.ObjectIdentifier,
    alt_names: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.write_bytes(data)
    path.chmod(0o600 if private else 0o644)


def _subject(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _write_leaf(
    cert_path: Path,
    key_path: Path,
    subject: x509.Name,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    usage: x509.ObjectIdentifier,
    alt_names: list[x509.GeneralName] | None = None,
) -> None:
    key = _new_key()
    cert = _leaf(subject, key, ca_cert, ca_key, usage=usage, alt_names=alt_names)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _key_pem(key), private=True)


def issue_client_certificate(
    pki_dir: Path,
    directory: Path,
    common_name: str,
    organizations: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """A client certificate for user ``common_name`` (groups ``organizations``) signed by the
    CA in ``pki_dir``, written to ``directory``; returns (certificate, key) paths."""
    pki = ClusterCertificates.in_directory(pki_dir)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.ca_key} is not the harness's ECDSA CA key")
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{common_name}.crt", directory / f"{common_name}.key"
    subject = _subject(common_name, organizations)
    _write_leaf(
        cert_path, key_path, subject, ca_cert, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return cert_path, key_path


def write_certificates(directory: Path, *, node_name: str) -> ClusterCertificates:
    """Generate a fresh CA, serving, admin, service-account and kubelet key material into
    ``directory``; the kubelet serving certificate is node ``node_name``'s, for 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = ClusterCertificates.in_directory(directory)
    ca_key = _new_key()
    ca_cert = _ca(ca_key)
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(paths.ca_key, _key_pem(ca_key), private=True)

    _write_leaf(
        paths.serving_cert,
        paths.serving_key,
        _subject("kube-apiserver"),
        ca_cert,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt_names=[x509.DNSName(name) for name in SERVING_DNS_NAMES]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVING_IPS],
    )
    _write_leaf(
        paths.admin_cert,
        paths.admin_key,
        _subject("admin", ("system:masters",)),
        ca_cert,
        ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    # kube-apiserver dials the Node's InternalIP (127.0.0.1) and checks it against this SAN.
    _write_leaf(
        paths.kubelet_serving_cert,
        paths.kubelet_serving_key,
        _subject(f"system:node:{node_name}", ("system:nodes",)),
        ca_cert,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt_names=[
            x509.DNSName("localhost"),
            x509.DNSName(node_name),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    _write_leaf(
        paths.kubelet_client_cert,
        paths.kubelet_client_key,
        _subject(KUBELET_CLIENT_USER),
        ca_cert,
        ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )

    sa_key = _new_key()
    _write(paths.service_account_key, _key_pem(sa_key), private=True)
    _write(
        paths.service_account_public_key,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return paths
