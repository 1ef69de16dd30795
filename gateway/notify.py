"""systemd ``Type=notify`` and ``WatchdogSec=`` without a dependency: datagrams to $NOTIFY_SOCKET.

``READY=1`` once the gateway has started, ``STATUS=…`` on changes, ``WATCHDOG=1`` every
WATCHDOG_USEC/2 only while :meth:`HealthCheck.pipeline_moves` says the pipeline really moves
(a stuck loop stops the pings and systemd restarts the process), ``STOPPING=1`` on stop.
Runs on a thread of its own: the event loop being stuck is what it must notice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from .healthz import HealthCheck

log = logging.getLogger(__name__)


def notify_address(value: str) -> str:
    """$NOTIFY_SOCKET as a socket address: a leading '@' is Linux's abstract namespace."""
    return "\0" + value[1:] if value.startswith("@") else value


class Notifier:
    """Does nothing when $NOTIFY_SOCKET is unset (not run by systemd, or Type=simple)."""

    def __init__(self, check: HealthCheck, started: Callable[[], bool]) -> None:
        self._check = check
        self._started = started
        self._address = os.environ.get("NOTIFY_SOCKET") or None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        ok_pid = not pid or pid == str(os.getpid())
        self._interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and ok_pid else 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = ""

    def send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(message.encode(), notify_address(self._address))
        except OSError as err:
            log.debug("sd_notify %r: %s", message, err)

    def start(self) -> None:
        if self._address is None:
            return
        self._thread = threading.Thread(target=self._run, name="sd-notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = self._interval_s or 1.0
        while not self._stop.wait(0.2 if self._status in ("", "starting") else tick):
            if not self._started():
                self._status = self._status or "starting"
                continue
            if self._status in ("", "starting"):
                self.send("READY=1\nSTATUS=running")
                log.info("systemd: ready")
                self._status = "running"
            moves = self._check.pipeline_moves()
            status = "running" if moves else "pipeline stalled"
            if status != self._status:
                self.send(f"STATUS={status}")
                log.log(logging.INFO if moves else logging.WARNING, "systemd watchdog: %s", status)
                self._status = status
            if moves and self._interval_s:
                self.send("WATCHDOG=1")

    def stop(self) -> None:
        if self._address is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.send("STOPPING=1\nSTATUS=stopping")
