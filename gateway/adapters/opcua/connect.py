"""Open a secured asyncua client the same way for the adapter and for ``opcua browse``.

The order matters for security: the endpoints are listed on an unsecured channel (as every
OPC UA client does), the server certificate they carry is checked against the trust list
*before* a secure channel is opened or a password sent, and only then does asyncua connect
with the policy, mode, certificates and user token the config asks for. When the server
offers nothing that matches, the error lists what it does offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies as sp
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509

from ...sdk import NeedsAttention
from .certificates import (
    TrustList,
    application_uri_of,
    default_application_uri,
    ensure_certificate,
    load_certificate,
)
from .config import OpcUaAdapterConfig
from .status import status_name

POLICIES: dict[str, type[sp.SecurityPolicy]] = {
    "Basic256Sha256": sp.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": sp.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": sp.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
_POLICY_NAMES = {cls.URI: name for name, cls in POLICIES.items()} | {
    sp.SecurityPolicyNone.URI: "None"
}


class ConnectError(UaError, NeedsAttention):
    """A connection refused for a reason a person must fix; the message says what and where."""


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The gateway's application-instance certificate for one adapter."""

    certificate: Path
    private_key: Path
    application_uri: str
    created: bool


def client_identity(cfg: OpcUaAdapterConfig, state_dir: Path) -> ClientIdentity:
    """The configured certificate, or the gateway's own (made once under ``state_dir``)."""
    if cfg.certificate is not None and cfg.private_key is not None:
        uri = cfg.application_uri or application_uri_of(load_certificate(cfg.certificate))
        if uri is None:
            raise ConnectError(
                f"{cfg.certificate}: the certificate has no application URI in its "
                "subjectAltName; make one with `microfactory opcua cert` or set application_uri"
            )
        return ClientIdentity(cfg.certificate, cfg.private_key, uri, False)
    uri = cfg.application_uri or default_application_uri()
    cert, key, created = ensure_certificate(state_dir / "opcua" / "client", uri)
    return ClientIdentity(cert, key, uri, created)


def trust_list(cfg: OpcUaAdapterConfig, state_dir: Path) -> TrustList:
    trust_dir = cfg.trust_dir or state_dir / "opcua" / "trusted"
    return TrustList(trust_dir, trust_on_first_use=cfg.trust_on_first_use, owner=cfg.name)


def _offered(endpoints: list[ua.EndpointDescription]) -> str:
    seen = sorted(
        {
            f"{_POLICY_NAMES.get(ep.SecurityPolicyUri, ep.SecurityPolicyUri.rpartition('#')[2])}"
            f"/{ep.SecurityMode.name.rstrip('_')}"
            for ep in endpoints
        }
    )
    return ", ".join(seen) or "no endpoints"


async def list_endpoints(url: str, timeout_s: float) -> list[ua.EndpointDescription]:
    """GetEndpoints on an unsecured channel (needs no certificate, sends no credential)."""
    probe = Client(url, timeout=timeout_s)
    endpoints = await asyncio.wait_for(probe.connect_and_get_server_endpoints(), timeout_s * 2)
    return list(endpoints)


def choose_endpoint(
    cfg: OpcUaAdapterConfig, endpoints: list[ua.EndpointDescription]
) -> ua.EndpointDescription:
    """The endpoint matching the configured policy and mode, or an error listing the offer."""
    mode = MODES[cfg.security_mode]
    uri = POLICIES[cfg.security_policy].URI if cfg.secure else sp.SecurityPolicyNone.URI
    for ep in endpoints:
        if ep.SecurityMode == mode and ep.SecurityPolicyUri == uri:
            return ep
    raise ConnectError(
        f"{cfg.endpoint} offers {_offered(endpoints)}, not "
        f"{cfg.security_policy}/{cfg.security_mode}; set security_policy and security_mode "
        "to one of those"
    )


def _check_user_token(cfg: OpcUaAdapterConfig, ep: ua.EndpointDescription) -> None:
    wanted = ua.UserTokenType.UserName if cfg.username else ua.UserTokenType.Anonymous
    kinds = {t.TokenType for t in ep.UserIdentityTokens or []}
    if kinds and wanted not in kinds:
        names = ", ".join(sorted(k.name for k in kinds))
        what = f"user name {cfg.username!r}" if cfg.username else "anonymous access"
        hint = "set username and password" if not cfg.username else "remove username"
        raise ConnectError(
            f"{cfg.endpoint} does not accept {what} on "
            f"{cfg.security_policy}/{cfg.security_mode} (it accepts: {names}); {hint}"
        )


def explain(err: BaseException, cfg: OpcUaAdapterConfig, identity: ClientIdentity | None) -> str:
    """A status code a server answered with, in words that say what to do."""
    code = err.code if isinstance(err, UaStatusCodeError) else None
    if code is None:
        return str(err)
    name = status_name(code)
    where = cfg.endpoint
    if name in {"BadCertificateUntrusted", "BadSecurityChecksFailed", "BadCertificateInvalid"}:
        cert = identity.certificate if identity else "the client certificate"
        return (
            f"{where} refused the gateway's certificate ({name}): trust {cert} on the "
            "machine (its OPC UA server's certificate manager or PKI 'trusted' folder)"
        )
    if name in {"BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"}:
        who = f"user {cfg.username!r}" if cfg.username else "anonymous access"
        return f"{where} refused {who} ({name}): check username and password"
    if name in {"BadSecurityModeRejected", "BadSecurityPolicyRejected"}:
        return f"{where} rejected {cfg.security_policy}/{cfg.security_mode} ({name})"
    return f"{where}: {name}"


async def open_client(
    cfg: OpcUaAdapterConfig,
    *,
    state_dir: Path,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> Client:
    """A connected, activated client; raises :class:`ConnectError` (or a network error)."""
    endpoints = await list_endpoints(cfg.endpoint, cfg.timeout_s)
    ep = choose_endpoint(cfg, endpoints)
    _check_user_token(cfg, ep)
    client = Client(cfg.endpoint, timeout=cfg.timeout_s)
    client.session_timeout = 60_000  # ms; a dead session is freed by the server soon
    identity: ClientIdentity | None = None
    if cfg.secure:
        identity = client_identity(cfg, state_dir)
        if identity.created:
            log.warning(
                "%s: made the gateway's OPC UA certificate %s (application URI %s); "
                "trust it on the machine",
                cfg.name,
                identity.certificate,
                identity.application_uri,
            )
        if not ep.ServerCertificate:
            raise ConnectError(f"{cfg.endpoint} sent no server certificate")
        server_cert = x509.load_der_x509_certificate(_first_der(ep.ServerCertificate))
        verdict = trust_list(cfg, state_dir).check(server_cert, cfg.endpoint)
        if not verdict.trusted:
            raise ConnectError(verdict.message)
        if verdict.message:
            log.warning("%s: %s", cfg.name, verdict.message)
        client.application_uri = identity.application_uri
        await client.set_security(
            POLICIES[cfg.security_policy],
            identity.certificate,
            identity.private_key,
            server_certificate=_first_der(ep.ServerCertificate),
            mode=MODES[cfg.security_mode],
        )
    if cfg.username:
        client.set_user(cfg.username)
        if cfg.password is not None:
            client.set_password(cfg.password.get_secret_value())
    try:
        await asyncio.wait_for(client.connect(), cfg.timeout_s * 2)
    except BaseException as err:
        await asyncio.shield(disconnect(client))
        if isinstance(err, UaStatusCodeError):
            raise ConnectError(explain(err, cfg, identity)) from err
        if isinstance(err, AssertionError) and identity is not None:
            # asyncua 2.1 cannot parse the error a server answers OpenSecureChannel with
            # (node-opcua: BadSecurityChecksFailed) and trips an assertion instead
            raise ConnectError(
                f"{cfg.endpoint} closed the secure channel while it was being "
                "opened; most often it refused the gateway's certificate: trust "
                f"{identity.certificate} on the machine (its OPC UA server's certificate "
                "manager or PKI 'trusted' folder)"
            ) from err
        raise
    return client


def _first_der(chain: bytes) -> bytes:
    """The leaf of a DER certificate chain (servers may send their CA chain after it)."""
    # a DER SEQUENCE: 0x30, then a long-form length (certificates exceed 127 bytes)
    if len(chain) < 4 or chain[0] != 0x30 or not chain[1] & 0x80:
        return chain
    n = chain[1] & 0x7F
    length = int.from_bytes(chain[2 : 2 + n], "big")
    return chain[: 2 + n + length]


async def disconnect(client: Client) -> None:
    """Close the session politely if the server still answers, then the socket anyway."""
    # A broken client can fail to close in any way asyncua likes; the socket goes regardless.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 2.0)
    with contextlib.suppress(Exception):
        client.disconnect_socket()
