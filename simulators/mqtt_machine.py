"""Simulated machines that push JSON over MQTT (paho-mqtt 2.x), each in its own dialect.

The printer, the assembly bench and the meter deliberately disagree on field names, units and
timestamp formats, as devices from three vendors would, so the gateway's mapping and unit
conversion are exercised for real. Publishing never blocks the simulation and never raises
when the broker is away: the MQTT client keeps QoS 1 messages queued and reconnects on its
own (:class:`microfactory.mqtt.client.MqttClient`, reconnect mode AUTO).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from microfactory.mqtt.client import Delivery, MqttClient, PublishError, PublishStatus, Reconnect
from microfactory.mqtt.settings import MqttSettings, TlsSettings

from .model import MachineSnapshot, MeterSnapshot
from .truth import TruthRecorder

TOPIC_ROOT: Final = "microfactory/sim"
METER_QUANTITIES: Final = (
    "energy_total",
    "power_total",
    "power_l1",
    "power_l2",
    "power_l3",
    "voltage_l1",
    "voltage_l2",
    "voltage_l3",
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

log = logging.getLogger(__name__)


def iso_utc_us(ts_ns: int) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``, the way the assembly bench writes it."""
    dt = _EPOCH + timedelta(microseconds=ts_ns // 1000)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def printer_topic(machine_id: str) -> str:
    return f"{TOPIC_ROOT}/{machine_id}/telemetry"


def assembly_topic(machine_id: str) -> str:
    return f"{TOPIC_ROOT}/{machine_id}/status"


def meter_topic(machine_id: str, quantity: str) -> str:
    return f"{TOPIC_ROOT}/{machine_id}/{quantity}"


def printer_payload(s: MachineSnapshot) -> dict[str, Any]:
    return {
        "ts": s.ts_ns // 1_000_000,
        "state": s.state,
        "power_w": s.power_w,
        "energy_wh": s.energy_wh,
        "parts_total": s.part_count,
        "good": s.good_count,
        "scrap": s.scrap_count,
        "nozzle_temp_c": s.gauges["nozzle_temp_c"],
        "bed_temp_c": s.gauges["bed_temp_c"],
        "job": s.program,
    }


def assembly_payload(s: MachineSnapshot) -> dict[str, Any]:
    return {
        "timestamp": iso_utc_us(s.ts_ns),
        "status": s.state,
        "power": {"value": s.power_w / 1000, "unit": "kW"},
        "energy": {"value": s.energy_wh / 1000, "unit": "kWh"},
        "counters": {"total": s.part_count, "ok": s.good_count, "nok": s.scrap_count},
        "torque_nm": s.gauges["torque_nm"],
        "job": s.program,
    }


def meter_payloads(s: MeterSnapshot) -> dict[str, dict[str, Any]]:
    ts = s.ts_ns // 1_000_000
    values: dict[str, tuple[float, str]] = {
        "energy_total": (s.energy_kwh, "kWh"),
        "power_total": (s.power_w, "W"),
        "power_l1": (s.power_l_w[0], "W"),
        "power_l2": (s.power_l_w[1], "W"),
        "power_l3": (s.power_l_w[2], "W"),
        "voltage_l1": (s.voltage_l_v[0], "V"),
        "voltage_l2": (s.voltage_l_v[1], "V"),
        "voltage_l3": (s.voltage_l_v[2], "V"),
    }
    return {q: {"value": v, "unit": u, "ts": ts} for q, (v, u) in values.items()}


class MqttLink:
    """One device's MQTT session: connects in the background and reconnects forever.

    ``url`` is ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` (with ``tls``); a device
    that logs in gives ``username``/``password``.
    """

    def __init__(
        self,
        *,
        url: str,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        tls: TlsSettings | None = None,
        max_queued: int = 10_000,
        logger: logging.Logger | None = None,
    ) -> None:
        settings = MqttSettings(
            url=url, client_id=client_id, username=username, password=password, tls=tls
        )
        self.address = settings.address
        self.client_id = client_id
        self._log = logger or log
        self._client = MqttClient(
            settings,
            name=client_id,
            max_queued=max_queued,
            reconnect=Reconnect.AUTO,
            reconnect_max_s=5,
            logger=self._log,
        )
        self._last: Delivery | None = None
        self._started = False
        self.dropped = 0

    @property
    def connected(self) -> bool:
        return self._client.connected

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        # in the background: the client keeps retrying if the broker is not up yet
        self._client.start()

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait (bounded) until the broker has accepted the session; False on timeout."""
        if self._client.connected:
            return True
        return await asyncio.to_thread(self._client.wait_connected, timeout_s)

    def publish(self, topic: str, payload: Mapping[str, Any]) -> bool:
        """Queue one QoS 1 message; False (and counted) only if the local queue is full."""
        delivery = self._client.publish(topic, orjson.dumps(payload), qos=1)
        if delivery.status is not PublishStatus.REFUSED:
            self._last = delivery
            return True
        self.dropped += 1
        self._log.warning("%s: message on %s dropped: %s", self.client_id, topic, delivery.reason)
        return False

    async def stop(self, timeout_s: float = 3.0) -> None:
        """Let in-flight QoS 1 messages be acknowledged (bounded), then disconnect."""
        if not self._started:
            return
        self._started = False
        last = self._last
        if last is not None and self.connected:
            try:
                await asyncio.to_thread(last.wait, timeout_s)
            except PublishError as err:
                self._log.warning("%s: last message not confirmed: %s", self.client_id, err)
        await asyncio.to_thread(self._client.stop, timeout_s)


class _Cadence:
    """Periodic telemetry in simulated time, but never faster than a floor in wall time."""

    def __init__(self, interval_s: float, min_wall_interval_s: float) -> None:
        self._interval_ns = round(interval_s * 1e9)
        self._min_wall_s = min_wall_interval_s
        self._last_ts_ns: int | None = None
        self._last_wall = 0.0

    def due(self, ts_ns: int) -> bool:
        if self._last_ts_ns is None:
            return True
        return (
            ts_ns - self._last_ts_ns >= self._interval_ns
            and time.monotonic() - self._last_wall >= self._min_wall_s
        )

    def same_instant(self, ts_ns: int) -> bool:
        return self._last_ts_ns == ts_ns

    def mark(self, ts_ns: int) -> None:
        self._last_ts_ns = ts_ns
        self._last_wall = time.monotonic()


class MqttMachine:
    """The printer (``telemetry``) or the assembly bench (``status``): one JSON per sample."""

    def __init__(
        self,
        *,
        machine_id: str,
        kind: str,
        link: MqttLink,
        truth: TruthRecorder | None = None,
        telemetry_interval_s: float = 1.0,
        min_wall_interval_s: float = 0.2,
    ) -> None:
        if kind == "printer_3d":
            self.topic = printer_topic(machine_id)
        elif kind == "assembly_station":
            self.topic = assembly_topic(machine_id)
        else:
            raise ValueError(f"{machine_id}: no MQTT dialect for kind {kind!r}")
        self.machine_id = machine_id
        self.kind = kind
        self.link = link
        self._truth = truth
        self._cadence = _Cadence(telemetry_interval_s, min_wall_interval_s)

    def attach_truth(self, truth: TruthRecorder | None) -> None:
        self._truth = truth

    def publish(self, snapshot: MachineSnapshot, *, tick: bool = False) -> None:
        """Events go out at once; ticks only when the telemetry interval is due."""
        if tick and (
            self._cadence.same_instant(snapshot.ts_ns) or not self._cadence.due(snapshot.ts_ns)
        ):
            return
        self._cadence.mark(snapshot.ts_ns)
        if self.kind == "printer_3d":
            payload = printer_payload(snapshot)
            if self.link.publish(self.topic, payload) and self._truth is not None:
                ts_ns = payload["ts"] * 1_000_000
                self._record(ts_ns, payload["energy_wh"], snapshot)
        else:
            payload = assembly_payload(snapshot)
            if self.link.publish(self.topic, payload) and self._truth is not None:
                ts_ns = snapshot.ts_ns // 1000 * 1000
                self._record(ts_ns, payload["energy"]["value"] * 1000, snapshot)

    def _record(self, ts_ns: int, energy_wh: float, s: MachineSnapshot) -> None:
        assert self._truth is not None
        self._truth.published(self.machine_id, ts_ns, "energy_active", energy_wh)
        self._truth.published(self.machine_id, ts_ns, "part_count", s.part_count)
        self._truth.published(self.machine_id, ts_ns, "good_count", s.good_count)
        self._truth.published(self.machine_id, ts_ns, "scrap_count", s.scrap_count)


class MqttMeter:
    """The three-phase meter: one topic per quantity, value + unit + epoch-ms timestamp."""

    def __init__(
        self,
        *,
        machine_id: str,
        link: MqttLink,
        truth: TruthRecorder | None = None,
        telemetry_interval_s: float = 1.0,
        min_wall_interval_s: float = 0.2,
    ) -> None:
        self.machine_id = machine_id
        self.kind = "energy_meter"
        self.link = link
        self._truth = truth
        self._cadence = _Cadence(telemetry_interval_s, min_wall_interval_s)

    def attach_truth(self, truth: TruthRecorder | None) -> None:
        self._truth = truth

    def publish(self, snapshot: MeterSnapshot, *, tick: bool = True) -> None:
        if tick and (
            self._cadence.same_instant(snapshot.ts_ns) or not self._cadence.due(snapshot.ts_ns)
        ):
            return
        self._cadence.mark(snapshot.ts_ns)
        for quantity, payload in meter_payloads(snapshot).items():
            ok = self.link.publish(meter_topic(self.machine_id, quantity), payload)
            if ok and quantity == "energy_total" and self._truth is not None:
                self._truth.published(
                    self.machine_id,
                    payload["ts"] * 1_000_000,
                    "energy_active",
                    payload["value"] * 1000,
                )
