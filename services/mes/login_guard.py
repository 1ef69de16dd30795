"""Password checks that hold under a flood: a short cache of verified credentials, at most a
few scrypt runs at once (16 MiB each), and the login-failure limits in front of them.

Measured before this existed: 200 wrong passwords, 40 at a time, ran 40 scrypt at once and
took the MES from 150 MB to 710 MB RSS and ``/health`` to 7.7 s. Now a waiting check holds
no thread (an asyncio semaphore, not a lock in the threadpool), so ``/health`` keeps its
threads, and memory is bounded by ``concurrency`` times 16 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from microfactory.mes.ratelimit import Clock, LoginThrottle
from microfactory.mes.security import hash_password, verify_password
from microfactory.mes.settings import MesSettings

CACHE_TTL_S = 300.0
CACHE_SIZE = 1024
SCRYPT_NICE = 10
WAIT_S = 5.0  # a check waits this long for a free scrypt slot, then 503 with Retry-After


class Busy(Exception):
    """No scrypt slot came free in time; the caller answers 503 with Retry-After."""


class VerifiedCredentials:
    """Credentials scrypt accepted in the last ``ttl_s`` seconds, so a Basic-auth client does
    not cost 80 ms and 16 MiB per request.

    Keyed by an HMAC (a random key of this process) of user name, password and *stored hash*:
    the password itself is never kept, and a changed password (a new hash) misses at once.
    """

    def __init__(
        self, ttl_s: float = CACHE_TTL_S, size: int = CACHE_SIZE, clock: Clock = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, username: str, password: str, stored_hash: str) -> bytes:
        message = "\x00".join((username, password, stored_hash)).encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def hit(self, username: str, password: str, stored_hash: str) -> bool:
        digest = self._digest(username, password, stored_hash)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return False
            if entry[1] <= self._clock():
                del self._entries[digest]
                return False
            return True

    def add(self, username: str, password: str, stored_hash: str) -> None:
        digest = self._digest(username, password, stored_hash)
        with self._lock:
            self._entries[digest] = (username, self._clock() + self.ttl_s)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def forget(self, username: str) -> None:
        """The user changed (disabled, new role, new password): verify afresh next time."""
        with self._lock:
            for digest in [d for d, (u, _) in self._entries.items() if u == username]:
                del self._entries[digest]


def _lower_priority() -> None:
    """On Linux, nice this scrypt thread (only it, by its thread id): on a Pi with a few cores
    busy hashing, the event loop still gets a core at once for ``/health`` and the others."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SCRYPT_NICE)


class Verifier:
    """scrypt on its own ``concurrency`` threads; checks beyond those wait on the event loop.

    Own threads, not the shared threadpool: a queue of checks never takes the threads that
    ``/health`` and the other routes need, and only these few threads ever allocate scrypt's
    16 MiB, so glibc's per-thread arenas keep at most ``concurrency`` of them (with the
    shared pool of 40 threads, a flood left ~150 MiB behind).
    """

    def __init__(self, concurrency: int, wait_s: float = WAIT_S) -> None:
        self.concurrency = concurrency
        self.wait_s = wait_s
        self._pool: ThreadPoolExecutor | None = None  # made at first use, again after close()
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running = 0
        self.peak = 0

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # a test may run two loops in turn
            self._slots, self._loop = asyncio.Semaphore(self.concurrency), loop
        return self._slots

    async def verify(self, password: str, stored_hash: str) -> bool:
        slots = self._semaphore()
        try:
            await asyncio.wait_for(slots.acquire(), self.wait_s)
        except TimeoutError as err:
            raise Busy from err
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor(), verify_password, password, stored_hash
            )
        finally:
            self.running -= 1
            slots.release()

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.concurrency, thread_name_prefix="mes-scrypt", initializer=_lower_priority
            )
        return self._pool

    def close(self) -> None:
        """End the scrypt threads; an app served again (another lifespan) makes new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class LoginGuard:
    """What stands between a password and scrypt; one per app (no module state)."""

    throttle: LoginThrottle
    cache: VerifiedCredentials
    verifier: Verifier
    # a hash to check unknown user names against, so their answer takes as long as a real one
    dummy_hash: str
    rate_limited: int = 0
    busy: int = 0
    failures: int = 0

    def limited(self, wait_s: float) -> tuple[int, str]:
        """Count a login refused by the limits: (Retry-After in whole seconds, the answer)."""
        self.rate_limited += 1
        retry = max(1, int(wait_s + 0.999))
        return retry, f"too many failed logins; try again in {retry} s"

    @classmethod
    def from_settings(cls, settings: MesSettings) -> LoginGuard:
        return cls(
            throttle=LoginThrottle(
                settings.auth_failures_per_user,
                settings.auth_failures_per_address,
                settings.auth_failure_window_s,
                per_user_total=settings.auth_failures_per_user_total,
            ),
            cache=VerifiedCredentials(),
            verifier=Verifier(settings.auth_concurrent_verifications),
            dummy_hash=hash_password(secrets.token_urlsafe(16)),
        )
