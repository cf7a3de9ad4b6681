"""A throw-away PKI for one test control plane.

One CA signs the serving certificates (apiserver, controller-manager,
scheduler) and the client certificates each component and the admin user
authenticate with; a separate key pair signs service-account tokens. ECDSA
P-256 keys keep generation in the milliseconds, which matters for the warm
start time.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertPair", "Pki"]

_VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its PEM private key, both on disk."""

    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


class Pki:
    """Creates the CA in ``directory`` and issues certificates from it."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ca_key = _key()
        now = dt.datetime.now(dt.UTC)
        subject = _name("inferbox-testenv-ca")
        self._ca_cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca = CertPair(
            cert=_write(self.dir / "ca.crt", self._ca_cert.public_bytes(serialization.Encoding.PEM)),
            key=_write(self.dir / "ca.key", _key_pem(self._ca_key), private=True),
        )

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert.read_bytes()

    def serving(self, name: str, dns: list[str], ips: list[str]) -> CertPair:
        """A TLS server certificate valid for the given DNS names and IPs."""
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        return self._issue(name, _name(name), ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def client(self, name: str, user: str, groups: tuple[str, ...] = ()) -> CertPair:
        """A client certificate: CN is the user name, O entries are its groups."""
        return self._issue(name, _name(user, groups), ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def service_account_keys(self) -> CertPair:
        """Key pair that signs (private) and verifies (public) SA tokens.

        Returned as ``CertPair(cert=<public key PEM>, key=<private key PEM>)``.
        """
        key = _key()
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return CertPair(cert=_write(self.dir / "sa.pub", pub),
                        key=_write(self.dir / "sa.key", _key_pem(key), private=True))

    def _issue(self, file_stem: str, subject: x509.Name, usage: x509.ObjectIdentifier,
               sans: list[x509.GeneralName]) -> CertPair:
        key = _key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                           critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return CertPair(
            cert=_write(self.dir / f"{file_stem}.crt", cert.public_bytes(serialization.Encoding.PEM)),
            key=_write(self.dir / f"{file_stem}.key", _key_pem(key), private=True),
        )
