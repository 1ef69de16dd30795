"""Password hashing (stdlib scrypt) and stateless HMAC bearer tokens: no extra dependency."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from microfactory.mes.models import Role

_N, _R, _P = 2**14, 8, 1
DEMO_PASSWORDS = {"operator": "operator", "manager": "manager", "admin": "admin"}
ROLE_RANK = {Role.operator: 1, Role.manager: 2, Role.admin: 3}
MIN_PASSWORD_LENGTH = 8


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(secret: str, username: str, ttl_s: int, now: float | None = None) -> str:
    body = _b64(json.dumps({"sub": username, "exp": int((now or time.time()) + ttl_s)}).encode())
    sig = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}"


def read_token(secret: str, token: str, now: float | None = None) -> str | None:
    """Username of a valid, unexpired token, else None."""
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
    sub: str = claims["sub"]
    return sub


def has_role(role: str, needed: Role) -> bool:
    try:
        return ROLE_RANK[Role(role)] >= ROLE_RANK[needed]
    except ValueError:
        return False
