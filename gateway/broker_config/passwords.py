"""Mosquitto 2.0 password-file hashes, written without ``mosquitto_passwd``.

Mosquitto 2.0's ``password_file`` holds ``user:$7$<iterations>$<salt>$<hash>``: PBKDF2 with
HMAC-SHA512, 101 iterations, a 12-byte salt and a 64-byte hash, both standard base64
(``src/password_mosq.c``; checked against ``mosquitto_passwd`` 2.0.11 by the tests). Writing
the hash here means the command needs no Mosquitto tools on the machine that runs it, and
never puts a password on a command line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets

ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64
_PREFIX = "$7$"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The ``$7$…`` hash of ``password`` (a fresh random salt unless one is given)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS, HASH_BYTES)
    b64 = base64.b64encode
    return f"{_PREFIX}{ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (a ``$7$`` entry) is the hash of ``password``; False if unreadable."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        digest = base64.b64decode(parts[4], validate=True)
    except (binascii.Error, ValueError):
        return False
    iterations = int(parts[2])
    if not 1 <= iterations <= 1_000_000 or not digest:
        return False
    mine = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(digest))
    return hmac.compare_digest(mine, digest)


def new_password() -> str:
    """A random password: 32 URL-safe characters (192 bits), safe in env files and CSV."""
    return secrets.token_urlsafe(24)


def parse_password_file(text: str) -> dict[str, str]:
    """``user -> hash`` of a password file (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if sep:
            out[user] = hashed.strip()
    return out


def render_password_file(hashes: dict[str, str]) -> str:
    """The password file of ``user -> hash``, one user a line, in a stable order."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in sorted(hashes.items()))
