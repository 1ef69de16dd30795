"""Application-instance certificates: the gateway's own, and the servers' it trusts.

OPC UA security rests on two certificates: the client's (which the machine's server must
trust) and the server's (which the gateway must trust). This module makes the first (a
self-signed application-instance certificate with the application URI in subjectAltName, as
OPC 10000-6 § 6.2.2 asks, valid five years so an unattended gateway does not lose its
machines after one) and keeps the trust list for the second: a directory of DER or PEM
files, where a CA certificate trusts what it signed.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

VALID_DAYS = 5 * 365
RENEW_BEFORE = timedelta(days=30)
CERT_FILE = "cert.der"
KEY_FILE = "key.pem"


class CertificateError(Exception):
    """A certificate file that cannot be used; the message names the file and what is wrong."""


def default_application_uri(host: str | None = None) -> str:
    return f"urn:{host or socket.gethostname()}:microfactory:gateway"


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 thumbprint in hex, as OPC UA tools (UaExpert, node-opcua) show it."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def load_certificate(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CertificateError(f"{path}: cannot read certificate: {err.strerror}") from err
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as err:
        raise CertificateError(f"{path}: not a DER or PEM certificate ({err})") from err


def application_uri_of(cert: x509.Certificate) -> str | None:
    """The URI in the certificate's subjectAltName (what a client must announce)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def describe(cert: x509.Certificate) -> str:
    """Subject and thumbprint in words, for a message a person compares with a screen."""
    return f"{cert.subject.rfc4514_string()}, SHA-1 {thumbprint(cert)}"


def create_certificate(
    out_dir: Path,
    *,
    application_uri: str | None = None,
    host: str | None = None,
    common_name: str = "microfactory gateway",
    server: bool = False,
) -> tuple[Path, Path]:
    """Write ``out_dir/cert.der`` and ``out_dir/key.pem`` (mode 0600); return their paths."""
    host = host or socket.gethostname()
    uri = application_uri or default_application_uri(host)
    key = cert_gen.generate_private_key()
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        common_name,
        {},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(host)],
        extended=usage,
        days=VALID_DAYS,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / CERT_FILE, out_dir / KEY_FILE
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # O_CREAT's mode does not apply to an existing file
        f.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return cert_path, key_path


def ensure_certificate(out_dir: Path, application_uri: str | None) -> tuple[Path, Path, bool]:
    """The certificate in ``out_dir``, made (or renewed near expiry) when needed.

    Returns (certificate, key, created). A new certificate must be trusted again on every
    server, so it is renewed only within :data:`RENEW_BEFORE` of its end or when the
    application URI asked for is not the one it carries.
    """
    cert_path, key_path = out_dir / CERT_FILE, out_dir / KEY_FILE
    if cert_path.is_file() and key_path.is_file():
        cert = load_certificate(cert_path)
        fresh = cert.not_valid_after_utc - RENEW_BEFORE > datetime.now(UTC)
        if fresh and (application_uri is None or application_uri_of(cert) == application_uri):
            return cert_path, key_path, False
    cert_path, key_path = create_certificate(out_dir, application_uri=application_uri)
    return cert_path, key_path, True


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:64] or "server"


@dataclass(frozen=True, slots=True)
class Verdict:
    trusted: bool
    message: str  # why not, in words, naming the file to copy where; or what was done


class TrustList:
    """Server certificates the gateway trusts: every DER/PEM file in one directory.

    A refused certificate is written to ``rejected/`` beside the trust directory, so the
    message can say exactly which file to copy where (the way UaExpert and node-opcua's
    PKI folders work). With ``trust_on_first_use``, the first certificate an adapter meets
    is stored as ``<adapter>.der`` and later ones must match it or be trusted by hand.
    """

    def __init__(self, trust_dir: Path, *, trust_on_first_use: bool, owner: str) -> None:
        self.trust_dir = trust_dir
        self.rejected_dir = trust_dir.parent / "rejected"
        self._tofu = trust_on_first_use
        self._owner = owner

    def _trusted(self) -> list[x509.Certificate]:
        out: list[x509.Certificate] = []
        if not self.trust_dir.is_dir():
            return out
        for path in sorted(self.trust_dir.iterdir()):
            if path.suffix.lower() in {".der", ".pem", ".crt", ".cer"} and path.is_file():
                try:
                    out.append(load_certificate(path))
                except CertificateError:
                    continue  # one unreadable file must not distrust every server
        return out

    def check(self, cert: x509.Certificate, endpoint: str) -> Verdict:
        now = datetime.now(UTC)
        if cert.not_valid_after_utc < now:
            return Verdict(
                False,
                f"the server certificate of {endpoint} ({describe(cert)}) expired on "
                f"{cert.not_valid_after_utc:%Y-%m-%d}; renew it on the machine",
            )
        trusted = self._trusted()
        der = cert.public_bytes(serialization.Encoding.DER)
        if any(t.public_bytes(serialization.Encoding.DER) == der for t in trusted):
            return Verdict(True, "")
        if any(_signed_by(cert, ca) for ca in trusted if ca.subject == cert.issuer):
            return Verdict(True, "")
        pinned = self.trust_dir / f"{_safe(self._owner)}.der"
        if self._tofu and not pinned.exists():
            self.trust_dir.mkdir(parents=True, exist_ok=True)
            pinned.write_bytes(der)
            return Verdict(True, f"trusted on first use: {describe(cert)}, stored as {pinned}")
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        rejected = self.rejected_dir / f"{_safe(self._owner)}-{thumbprint(cert)[:16]}.der"
        rejected.write_bytes(der)
        changed = " (it differs from the one trusted on first use)" if pinned.exists() else ""
        return Verdict(
            False,
            f"the server certificate of {endpoint} is not trusted{changed}: {describe(cert)}. "
            f"Check the thumbprint on the machine, then copy {rejected} into {self.trust_dir}/",
        )


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False  # wrong signature or key type: not signed by this CA
    return True
