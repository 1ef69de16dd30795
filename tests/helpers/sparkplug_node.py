"""A Sparkplug B edge node (Eclipse Tahu's npm ``sparkplug-client``) for the tests.

Our adapter decodes payloads with protobuf classes compiled from Tahu's .proto; an edge node
written by others (Tahu's JavaScript client, with its own protobufjs encoder and MQTT.js) is
what catches assumptions that only hold for our own encoder: aliases, seq wrapping, the
NDEATH will, the rebirth command as a real node understands it. The node is
``tests/helpers/sparkplug_node/edge_node.mjs``, driven over stdin/stdout JSON lines;
``bash deploy/setup.sh --test`` installs its npm packages.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self

NODE_DIR = Path(__file__).parent / "sparkplug_node"
REPLY_TIMEOUT_S = 10.0


class SparkplugNodeError(RuntimeError):
    """The edge node could not be started or did not answer (its stderr is in the message)."""


def node_command() -> list[str]:
    """``node edge_node.mjs``, or an error saying how to install what is missing."""
    node = shutil.which("node")
    if node is None:
        raise SparkplugNodeError("Node.js is not installed; run `bash deploy/setup.sh --test`")
    if not (NODE_DIR / "node_modules" / "sparkplug-client").is_dir():
        raise SparkplugNodeError(
            f"sparkplug-client is not installed in {NODE_DIR}; run `bash deploy/setup.sh "
            f"--test` (or `npm ci` in {NODE_DIR})"
        )
    return [node, str(NODE_DIR / "edge_node.mjs")]


def metric(
    name: str,
    alias: int,
    type_: str,
    value: object,
    *,
    eng_unit: str | None = None,
) -> dict[str, Any]:
    """A birth metric in sparkplug-payload's terms (``type`` as its names: Double, Int32...)."""
    out: dict[str, Any] = {"name": name, "alias": alias, "type": type_, "value": value}
    if eng_unit is not None:
        out["properties"] = {"engUnit": {"type": "String", "value": eng_unit}}
    return out


class SparkplugEdgeNode:
    """One edge node process: births on connect, DATA and deaths on command.

    ``devices`` maps device ids to their birth metrics (:func:`metric`); ``node_metrics`` are
    the node's own. Events the node printed are kept in :attr:`events`, in order.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        url: str,
        group: str,
        node: str,
        devices: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        node_metrics: Sequence[Mapping[str, Any]] = (),
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.config = {
            "url": url,
            "username": username,
            "password": password,
            "group": group,
            "node": node,
            "client_id": f"edge-{group}-{node}",
            "node_metrics": [dict(m) for m in node_metrics],
            "devices": {d: [dict(m) for m in ms] for d, ms in dict(devices or {}).items()},
        }
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._next_id = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "edge-node.stderr"

    def start(self) -> None:
        """Start the process; it connects and births by itself (wait for :meth:`births`)."""
        if self._proc is not None:
            raise SparkplugNodeError("the edge node is already running")
        with self.stderr_path.open("ab") as stderr:
            self._proc = subprocess.Popen(
                [*node_command(), json.dumps(self.config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=NODE_DIR,
            )
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self._proc.stdout,), name="sparkplug-node", daemon=True
        )
        self._reader.start()

    def stop(self) -> None:
        """End the process (closing stdin ends it; killed after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ commands
    def command(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command and return its answer; raise if it failed or never came."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise SparkplugNodeError("the edge node is not running")
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        line = json.dumps({"id": ident, "cmd": cmd, **args}) + "\n"
        proc.stdin.write(line.encode())
        proc.stdin.flush()
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        with self._cond:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or proc.poll() is not None:
                    raise SparkplugNodeError(
                        f"edge node did not answer {cmd!r}; its stderr:\n{self._stderr()}"
                    )
                self._cond.wait(min(left, 0.2))
            reply = self._replies.pop(ident)
        if not reply.get("ok"):
            raise SparkplugNodeError(f"edge node refused {cmd!r}: {reply.get('error')}")
        return reply

    def ready(self, connects: int = 1, timeout_s: float = 15.0) -> None:
        """Block until the node has connected ``connects`` times in all, born, and its NCMD
        subscription is in (a command sent sooner is not routed to it)."""
        self.wait_event("birth", connects, timeout_s)
        self.wait_event("suback", 2 * connects, timeout_s)

    def ddata(self, device: str, metrics: Sequence[Mapping[str, Any]]) -> int:
        """Publish a DDATA; return the seq the next message will carry."""
        return int(self.command("ddata", device=device, metrics=list(metrics))["seq"])

    def count(self, event: str) -> int:
        with self._cond:
            return sum(1 for e in self.events if e.get("event") == event)

    def wait_event(self, event: str, count: int = 1, timeout_s: float = 15.0) -> None:
        """Block until the node has printed ``event`` at least ``count`` times in all."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while sum(1 for e in self.events if e.get("event") == event) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e.get("event") for e in self.events]
                    raise AssertionError(
                        f"edge node: no {count}x {event!r} within {timeout_s} s (events: {seen});"
                        f" stderr:\n{self._stderr()}"
                    )
                self._cond.wait(min(left, 0.2))

    # ------------------------------------------------------------------ its output
    def _read(self, stdout: IO[bytes]) -> None:
        for raw in stdout:
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                obj = {"event": "garbage", "line": raw.decode(errors="replace")}
            with self._cond:
                if "id" in obj and "event" not in obj:
                    self._replies[int(obj["id"])] = obj
                else:
                    self.events.append(obj)
                self._cond.notify_all()

    def _stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no stderr)"
