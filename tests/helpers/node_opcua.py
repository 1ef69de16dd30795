"""A node-opcua OPC UA server (npm) for the tests: a real implementation that none of us wrote.

Our client adapter is tested against asyncua servers too; a second, independent server is what
catches assumptions that only hold for the library we also use as client (policy names,
endpoint matching, certificate checks, status codes, enumeration encodings). The server is
``tests/helpers/node_opcua/server.mjs``; ``bash deploy/setup.sh --test`` installs its npm
packages. Its address space is described in that file and in :data:`NODES`.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self

from microfactory.cli.ports import free_port

SERVER_DIR = Path(__file__).parent / "node_opcua"
NAMESPACE_URI = "urn:microfactory:test:node-opcua"
# Standard namespaces loaded with ``companion=True``.
MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
MACHINE_TOOL_URI = "http://opcfoundation.org/UA/MachineTool/"

# Browse name under Objects/Machine -> string node id in NAMESPACE_URI.
NODES: Mapping[str, str] = {
    name: f"Machine.{name}"
    for name in (
        "Power",
        "Temperature",
        "PartCount",
        "Running",
        "StartTime",
        "Phases",
        "StateCode",
        "StateEnum",
        "StateEnumValues",
        "BadNode",
        "UncertainNode",
        "FrozenTs",
        "GoodThenBad",
    )
}

# With ``companion=True``: OPC 40501-1 MachineToolType instance Objects/Machines/Mill (in
# NAMESPACE_URI), browse path below Mill -> string node id. There is no PartsBad in the
# MachineTool nodeset: scrap is PartsCompleted - PartsGood.
COMPANION_NODES: Mapping[str, str] = {
    "MachineryBuildingBlocks/MachineryItemState/CurrentState": (
        "Mill-MachineryBuildingBlocks-MachineryItemState-CurrentState"
    ),
    "Production/ActiveProgram/Name": "Mill-Production-ActiveProgram-Name",
    "Production/ActiveProgram/State/CurrentState": (
        "Mill-Production-ActiveProgram-State-CurrentState"
    ),
    "Production/ProductionPlan/Job1/RunsCompleted": "Mill-Production-ProductionPlan-Job1-RunsCompleted",
    "Production/ProductionPlan/Job1/PartsCompleted": (
        "Mill-Production-ProductionPlan-Job1-PartsCompleted"
    ),
    "Production/ProductionPlan/Job1/PartsGood": "Mill-Production-ProductionPlan-Job1-PartsGood",
    "Production/ProductionPlan/Job1/State/CurrentState": (
        "Mill-Production-ProductionPlan-Job1-State-CurrentState"
    ),
}

SECURITY_POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
SECURITY_MODES = ("None", "Sign", "SignAndEncrypt")
EVERY_SECURITY: tuple[tuple[str, str], ...] = (
    ("None", "None"),
    *((policy, mode) for policy in SECURITY_POLICIES[1:] for mode in SECURITY_MODES[1:]),
)

START_TIMEOUT_S = 30.0


class NodeOpcuaError(RuntimeError):
    """The node-opcua server could not be started (its stderr is in the message)."""


def nsu(node_id: str, namespace_uri: str = NAMESPACE_URI) -> str:
    """The ``nsu=`` form of a string node id of the test server (what site configs use)."""
    return f"nsu={namespace_uri};s={node_id}"


def node_command() -> list[str]:
    """``node server.mjs``, or an error saying how to install what is missing."""
    node = shutil.which("node")
    if node is None:
        raise NodeOpcuaError("Node.js is not installed; run `bash deploy/setup.sh --test`")
    if not (SERVER_DIR / "node_modules" / "node-opcua").is_dir():
        raise NodeOpcuaError(
            f"node-opcua is not installed in {SERVER_DIR}; run `bash deploy/setup.sh --test` "
            f"(or `npm ci` in {SERVER_DIR})"
        )
    return [node, str(SERVER_DIR / "server.mjs")]


@dataclass
class NodeOpcuaServer:
    """The node-opcua server as a subprocess on a free 127.0.0.1 port, data under ``workdir``.

    ``security`` lists the (policy, mode) pairs offered, in node-opcua's names
    (:data:`SECURITY_POLICIES`, :data:`SECURITY_MODES`); every other pair is refused. Client
    certificates not listed in ``trusted_client_certificates`` are refused.
    """

    workdir: Path
    security: Sequence[tuple[str, str]] = (("None", "None"),)
    allow_anonymous: bool = True
    users: Mapping[str, str] = field(default_factory=dict)
    trusted_client_certificates: Sequence[Path] = ()
    update_ms: int = 200
    companion: bool = False
    port: int = 0
    endpoint: str = field(init=False, default="")
    certificate_path: Path = field(init=False, default=Path())
    namespace_uri: str = field(init=False, default=NAMESPACE_URI)
    start_seconds: float = field(init=False, default=0.0)
    _proc: subprocess.Popen[bytes] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        for i, (policy, mode) in enumerate(self.security):
            if policy not in SECURITY_POLICIES or mode not in SECURITY_MODES:
                raise ValueError(
                    f"security[{i}] = ({policy!r}, {mode!r}): expected a policy of "
                    f"{SECURITY_POLICIES} and a mode of {SECURITY_MODES}"
                )
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "node-opcua.stderr"

    @property
    def trusted_dir(self) -> Path:
        """Where node-opcua keeps trusted client certificates (copy one here, then restart)."""
        return self.workdir / "pki" / "server" / "trusted" / "certs"

    @property
    def rejected_dir(self) -> Path:
        """Where node-opcua puts the certificates of clients it refused."""
        return self.workdir / "pki" / "server" / "rejected"

    def config(self) -> dict[str, object]:
        return {
            "port": self.port,
            "host": "127.0.0.1",
            "pki_dir": str(self.workdir / "pki"),
            "security": [list(pair) for pair in self.security],
            "allow_anonymous": self.allow_anonymous,
            "users": dict(self.users),
            "trusted_client_certificates": [str(p) for p in self.trusted_client_certificates],
            "update_ms": self.update_ms,
            "companion": self.companion,
        }

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start and wait for the ready line; on failure, raise with the server's stderr."""
        if self._proc is not None:
            raise NodeOpcuaError(f"node-opcua server on port {self.port} is already running")
        config_file = self.workdir / "config.json"
        config_file.write_text(json.dumps(self.config(), indent=2))
        began = time.monotonic()
        with self.stderr_path.open("ab") as stderr:
            self._proc = subprocess.Popen(
                [*node_command(), str(config_file)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=SERVER_DIR,
            )
        assert self._proc.stdout is not None
        try:
            ready = _read_ready_line(self._proc, self._proc.stdout, timeout_s)
        except NodeOpcuaError as err:
            self.stop()
            tail = self.stderr_path.read_text(errors="replace")[-3000:]
            raise NodeOpcuaError(f"{err} (port {self.port}); its stderr:\n{tail}") from None
        self.start_seconds = time.monotonic() - began
        self.endpoint = str(ready["endpoint"])
        self.certificate_path = Path(str(ready["certificate"]))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 5 s."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_ready_line(
    proc: subprocess.Popen[bytes], stdout: IO[bytes], timeout_s: float
) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    fd = stdout.fileno()
    buffer = b""
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NodeOpcuaError(f"node-opcua server not ready after {timeout_s} s")
        readable, _, _ = select.select([fd], [], [], min(left, 0.2))
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise NodeOpcuaError(f"node-opcua server exited with code {proc.wait()}")
            buffer += chunk
        elif proc.poll() is not None:
            raise NodeOpcuaError(f"node-opcua server exited with code {proc.returncode}")
    line = buffer.split(b"\n", 1)[0]
    try:
        ready = json.loads(line)
    except json.JSONDecodeError:
        raise NodeOpcuaError(f"node-opcua server printed {line!r}, not its ready line") from None
    if not isinstance(ready, dict) or ready.get("ready") is not True:
        raise NodeOpcuaError(f"node-opcua server printed {line!r}, not its ready line")
    return ready


@dataclass(frozen=True)
class ClientCertificate:
    """A client application-instance certificate (DER) and its private key (PEM)."""

    certificate: Path
    private_key: Path
    application_uri: str


def make_client_certificate(
    directory: Path, application_uri: str = "urn:microfactory:test:client", name: str = "client"
) -> ClientCertificate:
    """A self-signed client certificate in ``directory/name`` with ``application_uri`` in
    subjectAltName, made the way the gateway makes its own.

    The client must announce the same URI (asyncua: ``client.application_uri``), or node-opcua
    refuses the session.
    """
    # imported here: tests/conftest.py imports this module, and most tests need no asyncua
    from microfactory.gateway.adapters.opcua.certificates import create_certificate

    cert, key = create_certificate(
        directory / name, application_uri=application_uri, host="localhost", common_name=name
    )
    return ClientCertificate(cert, key, application_uri)
