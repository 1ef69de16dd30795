"""A simulated machine controller exposing its values as an OPC UA server (asyncua).

Each machine is its own server with its own endpoint and namespace, as two controllers from
different vendors would be. The model lives outside the server, so the server can be stopped
and started again on the same port (a fault-injection test does exactly that) while the
machine keeps producing.

The CNC mill also shows the OPC UA companion-specification objects (OPC 40001-1 Machinery,
OPC 40501-1 Machine Tools) beside its own namespace: see :mod:`.opcua_companion`.

Security as real controllers ship it: besides None, every server offers Basic256Sha256 Sign
and SignAndEncrypt with a self-signed application-instance certificate (application URI in
subjectAltName) generated once per server instance into ``pki_dir``. A simulator accepts
any client certificate (no trust list to seed in tests) and, when ``users`` is given, a
user name and password besides anonymous access.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from copy import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from .model import MachineSnapshot
from .opcua_companion import CompanionFace
from .truth import CounterSignal, TruthRecorder

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

COMMON_VARIABLES: Final[tuple[tuple[str, Any], ...]] = (
    ("State", ua.VariantType.String),
    ("Program", ua.VariantType.String),
    ("ActivePower", ua.VariantType.Double),
    ("EnergyCounter", ua.VariantType.Double),
    ("PartCounter", ua.VariantType.Int64),
    ("GoodCounter", ua.VariantType.Int64),
    ("ScrapCounter", ua.VariantType.Int64),
)

# OPC UA variable -> model gauge, per machine kind
GAUGE_VARIABLES: Final[Mapping[str, Mapping[str, str]]] = {
    "cnc_mill": {
        "SpindleSpeed": "spindle_speed_rpm",
        "SpindleTemperature": "spindle_temperature_c",
        "CoolantTemperature": "coolant_temperature_c",
    },
    "laser_cutter": {
        "LaserPower": "laser_power_w",
        "ResonatorTemperature": "resonator_temperature_c",
        "ChillerTemperature": "chiller_temperature_c",
    },
}

_COUNTERS: Final[Mapping[str, CounterSignal]] = {
    "EnergyCounter": "energy_active",
    "PartCounter": "part_count",
    "GoodCounter": "good_count",
    "ScrapCounter": "scrap_count",
}
_PART_VARIABLES: Final = ("PartCounter", "GoodCounter", "ScrapCounter", "EnergyCounter")

SECURITY_POLICIES: Final = (
    ua.SecurityPolicyType.NoSecurity,
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
)
# the model's default batch size (MachineSpec.batch_size): the runs a simulated job plans
RUNS_PLANNED: Final = 20

if TYPE_CHECKING:
    from asyncua.server.internal_server import InternalServer

log = logging.getLogger(__name__)


class _Users(UserManager):
    """Anonymous, or one of the given user names with its password; nothing else."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None:
            return User(role=UserRole.User)
        if username in self._users and self._users[username] == password:
            return User(role=UserRole.User, name=username)
        return None


def ns_to_datetime(ts_ns: int) -> datetime:
    """UTC datetime for a model instant; exact because model instants are whole milliseconds."""
    return _EPOCH + timedelta(microseconds=ts_ns // 1000)


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a free TCP port so the endpoint URL can name it before the server binds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class OpcUaMachineServer:
    """OPC UA face of one machine: ``Objects/Machine`` with string node ids."""

    def __init__(
        self,
        *,
        machine_id: str,
        kind: str,
        host: str = "127.0.0.1",
        port: int = 4840,
        truth: TruthRecorder | None = None,
        pki_dir: Path | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        if kind not in GAUGE_VARIABLES:
            raise ValueError(f"{machine_id}: no OPC UA address space for kind {kind!r}")
        self.machine_id = machine_id
        self.kind = kind
        self.host = host
        self.port = port or free_port(host)
        self.namespace_uri = f"urn:microfactory:sim:{machine_id}"
        self._truth = truth
        self._log = logging.LoggerAdapter(log, {"machine": machine_id})
        self._server: Server | None = None
        self._running = False
        self._nodes: dict[str, Node] = {}
        self._types: dict[str, Any] = {}
        self._last: dict[str, Any] = {}
        self._last_ts_ns: int | None = None
        self._current_time = ua.NodeId(ua.Int32(ObjectIds.Server_ServerStatus_CurrentTime))
        self._server_status = ua.NodeId(ua.Int32(ObjectIds.Server_ServerStatus))
        self._status: Any = None  # ServerStatusDataType, CurrentTime kept at simulated time
        self._clock_ns: int | None = None
        self.startup_s: float | None = None
        self._pki_dir = pki_dir
        self._pki_tmp: Path | None = None  # ours to delete on stop
        self._cert_der: bytes | None = None
        self._key_pem: bytes | None = None
        self._users = dict(users) if users else None
        self._companion = (
            CompanionFace(machine_id=machine_id, runs_planned=RUNS_PLANNED)
            if kind == "cnc_mill"
            else None
        )
        self._companion_last: dict[str, Any] = {}
        self.certificate_s: float | None = None  # time the certificate took to make, once

    @property
    def application_uri(self) -> str:
        return f"{self.namespace_uri}:server"

    @property
    def certificate_path(self) -> Path:
        """The server's certificate (DER), for a client's trust list; exists once started."""
        return self._pki_paths()[0]

    def _pki_paths(self) -> tuple[Path, Path]:
        base = self._pki_dir or self._pki_tmp
        if base is None:
            base = self._pki_tmp = Path(tempfile.mkdtemp(prefix=f"mf-sim-{self.machine_id}-"))
        return base / f"{self.machine_id}-server-cert.der", base / f"{self.machine_id}-key.pem"

    def _certificate(self) -> tuple[bytes, bytes]:
        """Certificate (DER) and key (PEM): made on the first start, rewritten if the dir went.

        The subjectAltName holds the application URI (clients check it against the endpoint's
        ApplicationDescription), the endpoint's host and this machine's host name (asyncua
        warns at every start when that one is missing).
        """
        cert_path, key_path = self._pki_paths()
        if self._cert_der is None and self._pki_dir is not None and cert_path.is_file():
            # a kept pki_dir: the same certificate as last run, which gateways already trust
            self._cert_der, self._key_pem = cert_path.read_bytes(), key_path.read_bytes()
        if self._cert_der is None or self._key_pem is None:
            t0 = time.perf_counter()
            key = cert_gen.generate_private_key()
            names: list[x509.GeneralName] = [
                x509.UniformResourceIdentifier(self.application_uri),
                x509.DNSName(socket.gethostname()),
                x509.DNSName("localhost"),
            ]
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(self.host)))
            except ValueError:
                names.append(x509.DNSName(self.host))
            cert = cert_gen.generate_self_signed_app_certificate(
                key,
                f"microfactory simulator {self.machine_id}",
                {"organizationName": "microfactory"},
                names,
                extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                days=3650,
            )
            self._cert_der = cert.public_bytes(Encoding.DER)
            self._key_pem = cert_gen.dump_private_key_as_pem(key)
            self.certificate_s = time.perf_counter() - t0
        if not cert_path.exists():
            cert_path.parent.mkdir(parents=True, exist_ok=True)
            cert_path.write_bytes(self._cert_der)
            key_path.write_bytes(self._key_pem)
            key_path.chmod(0o600)
        return self._cert_der, self._key_pem

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/microfactory/{self.machine_id}"

    def attach_truth(self, truth: TruthRecorder | None) -> None:
        self._truth = truth

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        """Listen on the endpoint; the address space is built once and reused on restart."""
        if self._running:
            return
        t0 = time.perf_counter()
        self._certificate()  # the files again after a stop removed the temporary directory
        if self._server is None:
            self._server = await self._build()
        await self._server.start()
        self._status = copy(await self._server.get_node(self._server_status).read_value())
        self._running = True
        self._last.clear()
        self._companion_last.clear()
        self._last_ts_ns = None
        self._clock_ns = None
        self.startup_s = time.perf_counter() - t0
        self._log.info(
            "opcua server %s listening on %s (%.2f s)",
            self.machine_id,
            self.endpoint,
            self.startup_s,
        )

    async def stop(self) -> None:
        if not self._running or self._server is None:
            return
        self._running = False
        await self._server.stop()
        if self._pki_tmp is not None:
            shutil.rmtree(self._pki_tmp, ignore_errors=True)
            self._pki_tmp = None
        self._log.info("opcua server %s stopped", self.machine_id)

    async def _build(self) -> Server:
        server = Server(user_manager=_Users(self._users) if self._users else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"microfactory simulator {self.machine_id}")
        server.set_security_policy(list(SECURITY_POLICIES))
        tokens: list[type] = [ua.AnonymousIdentityToken]
        if self._users:
            tokens.append(ua.UserNameIdentityToken)
        server.set_identity_tokens(tokens)
        cert, key = self._certificate()
        await server.load_certificate(cert, format="der")
        await server.load_private_key(key, format="pem")
        # the server clock shows simulated time (written on every tick) instead of wall time;
        # this also spares the 1 s wait asyncua's clock task adds to every stop()
        server.disable_clock(True)
        await server.set_application_uri(self.application_uri)
        idx = await server.register_namespace(self.namespace_uri)
        machine = await server.nodes.objects.add_object(
            ua.NodeId(ua.String("Machine"), ua.Int16(idx)), ua.QualifiedName("Machine", idx)
        )
        variables = list(COMMON_VARIABLES) + [
            (name, ua.VariantType.Double) for name in GAUGE_VARIABLES[self.kind]
        ]
        for name, vtype in variables:
            initial: Any = (
                ""
                if vtype == ua.VariantType.String
                else (0.0 if vtype == ua.VariantType.Double else 0)
            )
            self._nodes[name] = await machine.add_variable(
                ua.NodeId(ua.String(name), ua.Int16(idx)),
                ua.QualifiedName(name, idx),
                ua.Variant(initial, vtype),
            )
            self._types[name] = vtype
        if self._companion is not None:
            await self._companion.build(server, idx)
        return server

    async def _write_server_time(self, ts: ua.DateTime) -> None:
        """Show simulated time as the server's CurrentTime, alone and inside ServerStatus."""
        assert self._server is not None
        await self._server.write_attribute_value(
            self._current_time, ua.DataValue(Value=ua.Variant(ts, ua.VariantType.DateTime))
        )
        if self._status is not None:
            self._status.CurrentTime = ts
            await self._server.write_attribute_value(
                self._server_status,
                ua.DataValue(Value=ua.Variant(self._status, ua.VariantType.ExtensionObject)),
            )

    async def publish(
        self, snapshot: MachineSnapshot, *, part_completed: bool = False, tick: bool = False
    ) -> None:
        """Write what changed; gauges on every tick; the part counters together on a part."""
        if self._companion is not None:
            self._companion.observe(snapshot)
        if not self._running or self._server is None:
            return
        if tick and snapshot.ts_ns == self._last_ts_ns:
            return  # an event already published this instant
        self._last_ts_ns = snapshot.ts_ns
        values: dict[str, Any] = {
            "State": snapshot.state,
            "Program": snapshot.program,
            "ActivePower": snapshot.power_w,
            "EnergyCounter": snapshot.energy_wh,
            "PartCounter": snapshot.part_count,
            "GoodCounter": snapshot.good_count,
            "ScrapCounter": snapshot.scrap_count,
        }
        for var, gauge in GAUGE_VARIABLES[self.kind].items():
            values[var] = snapshot.gauges[gauge]
        always: set[str] = set()
        if tick:
            always.update(GAUGE_VARIABLES[self.kind], ("ActivePower",))
        if part_completed:
            always.update(_PART_VARIABLES)
        ts = cast(ua.DateTime, ns_to_datetime(snapshot.ts_ns))
        if self._clock_ns is None or snapshot.ts_ns > self._clock_ns:
            await self._write_server_time(ts)
            self._clock_ns = snapshot.ts_ns
        for name, value in values.items():
            if name not in always and self._last.get(name) == value:
                continue
            dv = ua.DataValue(
                Value=ua.Variant(value, self._types[name]),
                StatusCode=ua.StatusCode(),  # Good
                SourceTimestamp=ts,
                ServerTimestamp=ts,
            )
            await self._server.write_attribute_value(self._nodes[name].nodeid, dv)
            self._last[name] = value
            signal = _COUNTERS.get(name)
            if signal is not None and self._truth is not None:
                self._truth.published(self.machine_id, snapshot.ts_ns, signal, value)
        if self._companion is not None:
            await self._publish_companion(snapshot, ts, part_completed=part_completed)

    async def _publish_companion(
        self, snapshot: MachineSnapshot, ts: ua.DateTime, *, part_completed: bool
    ) -> None:
        """The companion objects, with the same source timestamps as the machine's own nodes."""
        assert self._server is not None and self._companion is not None
        for key, value in self._companion.values(snapshot).items():
            if self._companion_last.get(key) == value and not (
                part_completed and key.startswith(("Job.Parts", "Job.Runs", "Lifetime"))
            ):
                continue
            nodeid, vtype = self._companion.node(key)
            dv = ua.DataValue(
                Value=ua.Variant(value, vtype),
                StatusCode=ua.StatusCode(),
                SourceTimestamp=ts,
                ServerTimestamp=ts,
            )
            await self._server.write_attribute_value(nodeid, dv)
            self._companion_last[key] = value
