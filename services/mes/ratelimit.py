"""Login-failure limits per user name and per client address, in memory and bounded.

Why in memory: the MES is one process on a Raspberry Pi; a restart forgetting the counters
costs an attacker a restart they cannot trigger. Why bounded: a flood of random user names
must not grow a dict without end, so each key keeps at most ``limit`` timestamps and the table
at most ``max_keys`` keys (the least recently touched go first).

An attempt is counted *before* the password is checked (scrypt), so forty concurrent guesses
do not all get to run scrypt before the first failure is known: only ``limit`` of them do.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

Clock = Callable[[], float]
MAX_KEYS = 4096
KEY_CHARS = 64  # user names are at most 64 characters in the database


class FailureWindow:
    """Sliding log of the last ``limit`` attempts per key within ``window_s`` seconds."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        max_keys: int = MAX_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        if limit < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("limit, window_s and max_keys must be positive")
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._log: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._log)

    def _fresh(self, key: str, now: float) -> deque[float] | None:
        entries = self._log.get(key)
        if entries is None:
            return None
        while entries and entries[0] <= now - self.window_s:
            entries.popleft()
        if not entries:
            del self._log[key]
            return None
        return entries

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0.0 when it may now."""
        with self._lock:
            now = self._clock()
            entries = self._fresh(key, now)
            if entries is None or len(entries) < self.limit:
                return 0.0
            return max(entries[0] + self.window_s - now, 0.001)

    def add(self, key: str) -> float:
        """Count one attempt now; returns its timestamp (to take it back with :meth:`remove`)."""
        with self._lock:
            now = self._clock()
            entries = self._fresh(key, now)
            if entries is None:
                entries = self._log[key] = deque(maxlen=self.limit)
                while len(self._log) > self.max_keys:
                    self._log.popitem(last=False)
            else:
                self._log.move_to_end(key)
            entries.append(now)
            return now

    def remove(self, key: str, stamp: float) -> None:
        """Take back one attempt (it succeeded, or was never checked)."""
        with self._lock:
            entries = self._log.get(key)
            if entries is not None and stamp in entries:
                entries.remove(stamp)
                if not entries:
                    del self._log[key]

    def clear(self, key: str) -> None:
        with self._lock:
            self._log.pop(key, None)


def user_key(username: str) -> str:
    """Case-folded and bounded: ``Admin`` and ``admin`` share one counter."""
    return username.casefold()[:KEY_CHARS]


class Attempt:
    """One counted login attempt; a failure leaves it counted."""

    def __init__(
        self, throttle: LoginThrottle, keys: tuple[str, str, str], stamps: tuple[float, ...]
    ) -> None:
        self._throttle = throttle
        self._keys = keys
        self._stamps = stamps
        self._open = True

    def succeeded(self) -> None:
        """The right password: this user's failures *from this address* are forgotten, and
        this attempt is taken back elsewhere; other failures (other users from this address,
        this user from other addresses) stay counted, so a login of one's own does not reset
        them."""
        if self._open:
            self._open = False
            pair, user, address = self._keys
            self._throttle.pairs.clear(pair)
            self._throttle.users.remove(user, self._stamps[1])
            self._throttle.addresses.remove(address, self._stamps[2])

    def cancelled(self) -> None:
        """Never checked (the server was busy): not a failure."""
        if self._open:
            self._open = False
            for window, key, stamp in zip(
                self._throttle.windows, self._keys, self._stamps, strict=True
            ):
                window.remove(key, stamp)


class LoginThrottle:
    """The limits of a login, all checked before any password check.

    - per user name *and* address (``per_user``, e.g. 5): one client guessing one account;
      it does not lock the real user out from their own workstation;
    - per user name from all addresses (``per_user_total``, e.g. 50): guesses spread over
      many addresses (each one contributes at most ``per_user``);
    - per address (``per_address``, e.g. 20): one client trying many user names.
    """

    def __init__(
        self,
        per_user: int,
        per_address: int,
        window_s: float,
        *,
        per_user_total: int | None = None,
        max_keys: int = MAX_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        total = per_user_total if per_user_total is not None else 10 * per_user
        self.pairs = FailureWindow(per_user, window_s, max_keys=max_keys, clock=clock)
        self.users = FailureWindow(total, window_s, max_keys=max_keys, clock=clock)
        self.addresses = FailureWindow(per_address, window_s, max_keys=max_keys, clock=clock)
        self.windows = (self.pairs, self.users, self.addresses)

    @staticmethod
    def _keys(username: str, address: str) -> tuple[str, str, str]:
        user = user_key(username)
        return f"{user}\x00{address}", user, address

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until this user name may be tried from this address; 0.0 when now."""
        keys = self._keys(username, address)
        return max(w.retry_after(k) for w, k in zip(self.windows, keys, strict=True))

    def begin(self, username: str, address: str) -> Attempt:
        """Count an attempt on every key before checking the password."""
        keys = self._keys(username, address)
        stamps = tuple(w.add(k) for w, k in zip(self.windows, keys, strict=True))
        return Attempt(self, keys, stamps)
