"""Password hashing (stdlib scrypt), the password policy, and HMAC bearer tokens that carry
the user's token version (bumped on a password change or a disable: old tokens die)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from microfactory.mes.models import Role

_N, _R, _P = 2**14, 8, 1
DEMO_PASSWORDS = {"operator": "operator", "manager": "manager", "admin": "admin"}
ROLE_RANK = {Role.operator: 1, Role.manager: 2, Role.admin: 3}
MIN_PASSWORD_LENGTH = 10
COMMON_PASSWORDS = "common_passwords.txt"  # in microfactory/mes/wordlists; header: its source
_EDGES = re.compile(r"^[^a-z]+|[^a-z]+$")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def is_demo_password(username: str, password: str) -> bool:
    """The documented demo credentials; only accepted when the MES runs with ``demo``."""
    return password in DEMO_PASSWORDS.values() or password == username


@cache
def common_passwords() -> frozenset[str]:
    """The shipped blocklist (lowercased), read once."""
    text = (files("microfactory.mes") / "wordlists" / COMMON_PASSWORDS).read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def password_problem(username: str, password: str) -> str | None:
    """Why ``password`` is refused for ``username``, or None when it is acceptable.

    NIST SP 800-63B's rules: a minimum length, and no password from a list of known ones
    (also not one with only digits or symbols around it: ``Password2026!``).
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"at least {MIN_PASSWORD_LENGTH} characters"
    lowered = password.casefold()
    if lowered == username.casefold():
        return "must not be the user name"
    if is_demo_password(username, password):
        return "a demo password is refused"
    blocklist = common_passwords()
    if lowered in blocklist:
        return "too common: it is in the list of known passwords"
    stem = _EDGES.sub("", lowered)
    if stem != lowered and len(stem) >= 4 and stem in blocklist:
        return f"too common: a known password ({stem!r}) with digits or symbols around it"
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    username: str
    version: int  # the user's token_version when issued; a different one now means revoked


def issue_token(
    secret: str, username: str, ttl_s: int, now: float | None = None, *, version: int = 0
) -> str:
    claims = {"sub": username, "exp": int((now or time.time()) + ttl_s), "ver": version}
    body = _b64(json.dumps(claims).encode())
    sig = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}"


def read_token(secret: str, token: str, now: float | None = None) -> TokenClaims | None:
    """Claims of a valid, unexpired token, else None (the version is checked by the caller)."""
    try:
        body, sig = token.split(".")
        want = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(want, sig):
            return None
        claims = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp < (now or time.time()):
        return None
    version = claims.get("ver", 0)  # tokens from before versions existed: version 0
    if not isinstance(version, int) or isinstance(version, bool):
        return None
    return TokenClaims(username=claims["sub"], version=version)


def has_role(role: str, needed: Role) -> bool:
    try:
        return ROLE_RANK[Role(role)] >= ROLE_RANK[needed]
    except ValueError:
        return False
