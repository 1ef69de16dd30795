"""A simulated machine controller exposing its values as an OPC UA server (asyncua).

Each machine is its own server with its own endpoint and namespace, as two controllers from
different vendors would be. The model lives outside the server, so the server can be stopped
and started again on the same port (a fault-injection test does exactly that) while the
machine keeps producing.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping
from copy import copy
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

from .model import MachineSnapshot
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

log = logging.getLogger(__name__)


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
        if self._server is None:
            self._server = await self._build()
        await self._server.start()
        self._status = copy(await self._server.get_node(self._server_status).read_value())
        self._running = True
        self._last.clear()
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
        self._log.info("opcua server %s stopped", self.machine_id)

    async def _build(self) -> Server:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"microfactory simulator {self.machine_id}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        # the server clock shows simulated time (written on every tick) instead of wall time;
        # this also spares the 1 s wait asyncua's clock task adds to every stop()
        server.disable_clock(True)
        await server.set_application_uri(f"{self.namespace_uri}:server")
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
