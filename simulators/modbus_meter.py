"""A simulated Modbus energy meter (pymodbus server) impersonating real DIN-rail meters.

Each model carries its OWN register table, transcribed here from the vendor's manual: this
is the device's "firmware" side and deliberately shares nothing with the gateway's YAML
maps, so a wrong map (or a wrong table here) shows up as a disagreement over the wire.

What every device does, as the real one does:

- the quantities we simulate are encoded exactly as the manual says (float32 big-endian for
  Eastron, Janitza and Schneider; INT32 least-significant-word-first with fixed weights for
  Carlo Gavazzi; Int64 Wh for Schneider's energy);
- registers the device has but we do not simulate (reactive energies, demand, THD, ...)
  answer 0;
- addresses outside the device's table answer exception 02 (Illegal Data Address);
  coils and discrete inputs (which no meter here has) and every write answer exception 01
  (Illegal Function): the simulated meters are read-only;
- requests for another unit id get no answer at all, as an RS-485 slave that is not
  addressed stays silent (a client times out).

The energy register is the machine's exact lifetime energy (the integer mW*ms of
:mod:`.model`, what :mod:`.truth` records), rounded only by the device's own format:

- ``eastron_sdm630``, ``eastron_sdm120``: input register 0x0048, float32 kWh (import).
  float32 keeps 24 bits: 0.06 Wh at 1 MWh, 1 Wh from about 16 MWh.
- ``janitza_umg604``: holding register 19068, float32 Wh (L1..L3 consumed): 0.008 Wh at
  100 kWh, 1 Wh from about 16.7 MWh.
- ``schneider_iem3155``: register 3204 (address 3203), Int64 Wh: exact to the whole Wh;
  also register 45100 (address 45099), float32 kWh.
- ``carlo_gavazzi_em24``: 0x0034, INT32 in 0.1 kWh: steps of 100 Wh.

Integer counters are floored (a counter steps when a whole unit is complete); floats are
the nearest representable value.

Usage (the workshop calls :meth:`ModbusMeterServer.update` every tick; a read between two
ticks returns the last tick's values)::

    feed = MeterFeed.for_machine(machine_model, seed=7)
    srv = ModbusMeterServer(model="eastron_sdm630", unit_id=1, reading=feed.reading())
    await srv.start()          # srv.endpoint == "127.0.0.1:PORT"
    srv.update(feed.reading())
    await srv.stop()

Over RS-485 (e.g. one end of a socat pseudo-terminal pair)::

    ModbusMeterServer(model="eastron_sdm120", transport="rtu", serial_port="/tmp/ttyA",
                      baudrate=9600, parity="N")
"""

from __future__ import annotations

import logging
import math
import random
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.base import ModbusBaseServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from .model import ENERGY_UNITS_PER_WH, MachineModel, MeterModel, derive_seed

log = logging.getLogger(__name__)

Transport = Literal["tcp", "rtu"]
Registers = dict[int, int]

MODELS: Final[tuple[str, ...]] = (
    "eastron_sdm630",
    "eastron_sdm120",
    "janitza_umg604",
    "schneider_iem3155",
    "carlo_gavazzi_em24",
)

_UNITS_PER_KWH: Final = ENERGY_UNITS_PER_WH * 1000


# ---------------------------------------------------------------------- what a meter measures
@dataclass(frozen=True, slots=True)
class MeterReading:
    """The electrical quantities at the meter's terminals at one instant.

    ``energy_units`` is the lifetime import energy in the model's exact integer mW*ms.
    """

    ts_ns: int
    energy_units: int
    power_w: tuple[float, float, float]
    voltage_v: tuple[float, float, float]
    power_factor: float = 1.0
    frequency_hz: float = 50.0

    @property
    def power_total_w(self) -> float:
        return self.power_w[0] + self.power_w[1] + self.power_w[2]

    @property
    def energy_wh(self) -> float:
        return self.energy_units / ENERGY_UNITS_PER_WH

    @property
    def energy_kwh(self) -> float:
        return self.energy_units / _UNITS_PER_KWH

    def current_a(self, phase: int) -> float:
        """Phase current from P = V * I * PF (0 when the phase carries no power)."""
        volts = self.voltage_v[phase]
        if volts <= 0 or self.power_factor == 0:
            return 0.0
        return abs(self.power_w[phase]) / (volts * abs(self.power_factor))

    @property
    def single_phase_current_a(self) -> float:
        """Current of a single-phase meter carrying the whole load on L1."""
        volts = self.voltage_v[0]
        if volts <= 0 or self.power_factor == 0:
            return 0.0
        return abs(self.power_total_w) / (volts * abs(self.power_factor))

    @property
    def apparent_power_va(self) -> float:
        return abs(self.power_total_w) / abs(self.power_factor) if self.power_factor else 0.0

    @property
    def reactive_power_var(self) -> float:
        s = self.apparent_power_va
        p = abs(self.power_total_w)
        return math.sqrt(max(0.0, s * s - p * p))


# what a meter's terminals show: ts_ns, lifetime energy (mW*ms), phase powers (mW), and the
# phase voltages when the source has its own (None: the feed draws them)
_Terminals = tuple[int, int, tuple[int, int, int], tuple[float, float, float] | None]


def _split_mw(total_mw: int, phases: tuple[float, float, float]) -> tuple[int, int, int]:
    # the same integer split as MeterModel: L1 + L2 + L3 equals the total exactly
    a = round(total_mw * phases[0])
    b = round(total_mw * phases[1])
    return a, b, total_mw - a - b


class MeterFeed:
    """Turns a simulated machine (or the workshop incomer) into meter readings.

    Voltage noise and frequency drift come from the feed's own random stream so they never
    disturb the machines' streams (and thus the ground truth). Energy and power are the
    model's own, untouched.
    """

    def __init__(
        self,
        source: Callable[[], _Terminals],
        *,
        seed: int,
        name: str,
        nominal_voltage_v: float = 230.0,
        power_factor: float = 0.95,
        frequency_hz: float = 50.0,
    ) -> None:
        if not 0 < power_factor <= 1:
            raise ValueError(f"{name}: power_factor must be in (0, 1], got {power_factor}")
        self.name = name
        self._source = source
        self._rng = random.Random(derive_seed(seed, f"{name}:modbus"))
        self._nominal_v = nominal_voltage_v
        self._pf = power_factor
        self._hz = frequency_hz

    @classmethod
    def for_machine(
        cls, machine: MachineModel, *, seed: int, power_factor: float = 0.95
    ) -> MeterFeed:
        """A meter in front of one machine: its lifetime energy, its power split by phase."""

        def source() -> _Terminals:
            mw = _split_mw(machine.power_mw, machine.spec.phases)
            return machine.now_ns, machine.energy_total_units, mw, None

        return cls(source, seed=seed, name=machine.machine_id, power_factor=power_factor)

    @classmethod
    def for_incomer(cls, meter: MeterModel, *, seed: int, power_factor: float = 0.95) -> MeterFeed:
        """The workshop's incomer: MeterModel's energy, phase powers and voltages."""

        def source() -> _Terminals:
            snap = meter.snapshot()
            mw = (
                round(snap.power_l_w[0] * 1000),
                round(snap.power_l_w[1] * 1000),
                round(snap.power_l_w[2] * 1000),
            )
            return snap.ts_ns, meter.energy_total_units, mw, snap.voltage_l_v

        return cls(source, seed=seed, name=meter.machine_id, power_factor=power_factor)

    def reading(self) -> MeterReading:
        """The meter's view now; draws fresh voltage and frequency noise."""
        ts_ns, units, mw, volts_given = self._source()
        rng = self._rng
        if volts_given is not None:
            volts = volts_given
        else:
            # the same small sag under load and noise as MeterModel shows
            v = [round(self._nominal_v - 0.00012 * (p / 1000) + rng.gauss(0.0, 0.4), 2) for p in mw]
            volts = (v[0], v[1], v[2])
        loaded = sum(mw) > 0
        return MeterReading(
            ts_ns=ts_ns,
            energy_units=units,
            power_w=(mw[0] / 1000, mw[1] / 1000, mw[2] / 1000),
            voltage_v=volts,
            power_factor=self._pf if loaded else 1.0,
            frequency_hz=round(self._hz + rng.gauss(0.0, 0.01), 3),
        )


# ---------------------------------------------------------------------- register encodings
def _f32(value: float) -> list[int]:
    """IEEE 754 single, high word first, big-endian bytes (Eastron, Janitza, Schneider)."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def _i64(value: int) -> list[int]:
    """Signed 64-bit, most significant word first (Schneider Int64)."""
    return list(struct.unpack(">HHHH", struct.pack(">q", value)))


def _i32_lsw(value: int) -> list[int]:
    """Signed 32-bit, least significant word first (Carlo Gavazzi INT32)."""
    hi, lo = struct.unpack(">HH", struct.pack(">i", value))
    return [lo, hi]


def _i16(value: int) -> list[int]:
    return [struct.unpack(">H", struct.pack(">h", value))[0]]


def _put(regs: Registers, address: int, words: list[int]) -> None:
    for i, w in enumerate(words):
        regs[address + i] = w


def _clamp_i32(value: int) -> int:
    return max(-(2**31), min(2**31 - 1, value))


# Each device: the address blocks of its table per function code, and how it fills them.
Block = tuple[int, int]  # first and last protocol address, inclusive


@dataclass(frozen=True, slots=True)
class DeviceTable:
    """One meter model's Modbus face, transcribed from its manual."""

    model: str
    title: str
    document: str
    holding_blocks: tuple[Block, ...]
    input_blocks: tuple[Block, ...]
    encode: Callable[[MeterReading, int], tuple[Registers, Registers]]
    """(holding image, input image) for a reading and the unit id."""


def _eastron_sdm630(r: MeterReading, unit_id: int) -> tuple[Registers, Registers]:
    # input registers (FC04), float32; start addresses from the manual's "Hex" column
    i: Registers = {}
    for n in range(3):
        _put(i, 0x0000 + 2 * n, _f32(r.voltage_v[n]))  # 30001.. phase L-N volts
        _put(i, 0x0006 + 2 * n, _f32(r.current_a(n)))  # 30007.. phase current
        _put(i, 0x000C + 2 * n, _f32(r.power_w[n]))  # 30013.. phase power
        s = r.current_a(n) * r.voltage_v[n]
        _put(i, 0x0012 + 2 * n, _f32(s))  # 30019.. phase volt amps
        _put(i, 0x0018 + 2 * n, _f32(math.sqrt(max(0.0, s * s - r.power_w[n] ** 2))))
        _put(i, 0x001E + 2 * n, _f32(r.power_factor))  # 30031.. phase power factor
    _put(i, 0x002A, _f32(sum(r.voltage_v) / 3))  # 30043 average L-N volts
    currents = [r.current_a(n) for n in range(3)]
    _put(i, 0x002E, _f32(sum(currents) / 3))  # 30047 average line current
    _put(i, 0x0030, _f32(sum(currents)))  # 30049 sum of line currents
    _put(i, 0x0034, _f32(r.power_total_w))  # 30053 total system power
    _put(i, 0x0038, _f32(r.apparent_power_va))  # 30057 total system VA
    _put(i, 0x003C, _f32(r.reactive_power_var))  # 30061 total system VAr
    _put(i, 0x003E, _f32(r.power_factor))  # 30063 total system power factor
    _put(i, 0x0046, _f32(r.frequency_hz))  # 30071 frequency
    _put(i, 0x0048, _f32(r.energy_kwh))  # 30073 total import kWh
    _put(i, 0x0156, _f32(r.energy_kwh))  # 30343 total kWh (import + export; no export)
    for a, b in ((0, 1), (1, 2), (2, 0)):  # 30201.. line-to-line volts (120 degrees apart)
        vll = math.sqrt(r.voltage_v[a] ** 2 + r.voltage_v[b] ** 2 + r.voltage_v[a] * r.voltage_v[b])
        _put(i, 0x00C8 + 2 * a, _f32(vll))
    # holding registers (FC03): set-up parameters, float32
    h: Registers = {}
    _put(h, 0x000A, _f32(3.0))  # 40011 system type: 3 = 3p4w
    _put(h, 0x0014, _f32(float(unit_id)))  # 40021 network node (Modbus address)
    return h, i


def _eastron_sdm120(r: MeterReading, unit_id: int) -> tuple[Registers, Registers]:
    i: Registers = {}
    amps = r.single_phase_current_a
    _put(i, 0x0000, _f32(r.voltage_v[0]))  # 30001 line to neutral volts
    _put(i, 0x0006, _f32(amps))  # 30007 current
    _put(i, 0x000C, _f32(r.power_total_w))  # 30013 active power
    _put(i, 0x0012, _f32(r.apparent_power_va))  # 30019 apparent power
    _put(i, 0x0018, _f32(r.reactive_power_var))  # 30025 reactive power
    _put(i, 0x001E, _f32(r.power_factor))  # 30031 power factor
    _put(i, 0x0046, _f32(r.frequency_hz))  # 30071 frequency
    _put(i, 0x0048, _f32(r.energy_kwh))  # 30073 import active energy
    _put(i, 0x0156, _f32(r.energy_kwh))  # 30343 total active energy
    h: Registers = {}
    _put(h, 0x0014, _f32(float(unit_id)))  # 40021 meter id
    return h, i


def _janitza_umg604(r: MeterReading, unit_id: int) -> tuple[Registers, Registers]:
    # "frequently required readings", float, protocol addresses as printed; FC03 and FC04
    d: Registers = {}
    for n in range(3):
        amps = r.current_a(n)
        s = amps * r.voltage_v[n]
        _put(d, 19000 + 2 * n, _f32(r.voltage_v[n]))  # voltage Ln-N
        _put(d, 19012 + 2 * n, _f32(amps))  # apparent current Ln
        _put(d, 19020 + 2 * n, _f32(r.power_w[n]))  # real power Ln
        _put(d, 19028 + 2 * n, _f32(s))  # apparent power Ln
        _put(d, 19036 + 2 * n, _f32(math.sqrt(max(0.0, s * s - r.power_w[n] ** 2))))
        _put(d, 19044 + 2 * n, _f32(r.power_factor))  # cos phi Ln (fundamental)
    _put(d, 19026, _f32(r.power_total_w))  # sum real power
    _put(d, 19034, _f32(r.apparent_power_va))  # sum apparent power
    _put(d, 19042, _f32(r.reactive_power_var))  # sum reactive power
    _put(d, 19050, _f32(r.frequency_hz))  # measured frequency
    _put(d, 19052, _f32(1.0))  # rotation field: 1 = right
    _put(d, 19060, _f32(r.energy_wh))  # real energy L1..L3 (consumed - delivered)
    _put(d, 19068, _f32(r.energy_wh))  # real energy L1..L3, consumed
    return d, d


def _schneider_iem3155(r: MeterReading, unit_id: int) -> tuple[Registers, Registers]:
    # the manual lists register numbers; the protocol address is register - 1
    h: Registers = {}

    def reg(number: int, words: list[int]) -> None:
        _put(h, number - 1, words)

    for n in range(3):
        reg(3000 + 2 * n, _f32(r.current_a(n)))  # current I1..I3, A
        reg(3028 + 2 * n, _f32(r.voltage_v[n]))  # voltage L1-N..L3-N, V
        reg(3054 + 2 * n, _f32(r.power_w[n] / 1000))  # active power phase 1..3, kW
        reg(3078 + 2 * n, _f32(r.power_factor))  # power factor phase 1..3 (quadrant 1)
    currents = [r.current_a(n) for n in range(3)]
    reg(3010, _f32(sum(currents) / 3))  # current avg
    reg(3036, _f32(sum(r.voltage_v) / 3))  # voltage L-N avg
    reg(3060, _f32(r.power_total_w / 1000))  # total active power, kW
    reg(3068, _f32(r.reactive_power_var / 1000))  # total reactive power, kVAR
    reg(3076, _f32(r.apparent_power_va / 1000))  # total apparent power, kVA
    reg(3084, _f32(r.power_factor))  # total power factor (four-quadrant code, Q1 = PF)
    reg(3110, _f32(r.frequency_hz))  # frequency, Hz
    wh = r.energy_units // ENERGY_UNITS_PER_WH
    reg(3204, _i64(wh))  # total active energy import, Int64 Wh
    reg(45100, _f32(r.energy_kwh))  # total active energy import, Float32 kWh
    return h, {}


def _carlo_gavazzi_em24(r: MeterReading, unit_id: int) -> tuple[Registers, Registers]:
    # INT32 LSW first; weights: V x10, A x1000, W/VA/var x10, PF x1000, Hz x10, kWh x10
    d: Registers = {}

    def i32(address: int, value: float) -> None:
        _put(d, address, _i32_lsw(_clamp_i32(round(value))))

    for n in range(3):
        amps = r.current_a(n)
        s = amps * r.voltage_v[n]
        i32(0x0000 + 2 * n, r.voltage_v[n] * 10)  # V Ln-N
        i32(0x000C + 2 * n, amps * 1000)  # A Ln
        i32(0x0012 + 2 * n, r.power_w[n] * 10)  # W Ln
        i32(0x0018 + 2 * n, s * 10)  # VA Ln
        i32(0x001E + 2 * n, math.sqrt(max(0.0, s * s - r.power_w[n] ** 2)) * 10)  # var Ln
        _put(d, 0x002E + n, _i16(round(r.power_factor * 1000)))  # PF Ln
    for a, b in ((0, 1), (1, 2), (2, 0)):  # V L1-L2, L2-L3, L3-L1
        vll = math.sqrt(r.voltage_v[a] ** 2 + r.voltage_v[b] ** 2 + r.voltage_v[a] * r.voltage_v[b])
        i32(0x0006 + 2 * a, vll * 10)
    i32(0x0024, sum(r.voltage_v) / 3 * 10)  # V L-N sys
    i32(0x0028, r.power_total_w * 10)  # W sys
    i32(0x002A, r.apparent_power_va * 10)  # VA sys
    i32(0x002C, r.reactive_power_var * 10)  # var sys
    _put(d, 0x0031, _i16(round(r.power_factor * 1000)))  # PF sys
    _put(d, 0x0033, _i16(round(r.frequency_hz * 10)))  # Hz
    tenth_kwh = _clamp_i32(r.energy_units // (_UNITS_PER_KWH // 10))
    _put(d, 0x0034, _i32_lsw(tenth_kwh))  # kWh (+) TOT
    _put(d, 0xA000, [7])  # application: 7 = "H"
    return d, d


DEVICES: Final[Mapping[str, DeviceTable]] = MappingProxyType(
    {
        "eastron_sdm630": DeviceTable(
            model="eastron_sdm630",
            title="Eastron SDM630-Modbus V2",
            document="Eastron SDM630-Modbus V2 user manual, Modbus Protocol Input/Holding Registers",
            holding_blocks=((0x0000, 0x001D),),
            input_blocks=(
                (0x0000, 0x0057),  # 30001-30088
                (0x0064, 0x006B),  # 30101-30108 VA demand, neutral current demand
                (0x00C8, 0x00CF),  # 30201-30208 line-to-line volts
                (0x00E0, 0x00E1),  # 30225 neutral current
                (0x00EA, 0x00FB),  # 30235-30252 THD
                (0x0102, 0x010D),  # 30259-30270 phase current demand and maxima
                (0x014E, 0x017D),  # 30335-30382 L-L THD, totals, per-phase energies
            ),
            encode=_eastron_sdm630,
        ),
        "eastron_sdm120": DeviceTable(
            model="eastron_sdm120",
            title="Eastron SDM120-Modbus",
            document="Eastron SDM120-Modbus protocol manual, Modbus Protocol Input Registers",
            holding_blocks=((0x000C, 0x001D),),
            input_blocks=(
                (0x0000, 0x0025),  # 30001-30038
                (0x0046, 0x005F),  # 30071-30096
                (0x0102, 0x0103),  # 30259 current demand
                (0x0108, 0x0109),  # 30265 maximum current demand
                (0x0156, 0x0159),  # 30343-30346 total kWh, total kVArh
            ),
            encode=_eastron_sdm120,
        ),
        "janitza_umg604": DeviceTable(
            model="janitza_umg604",
            title="Janitza UMG 604",
            document="Janitza UMG 604 Modbus address list, frequently required readings",
            holding_blocks=((19000, 19121),),
            input_blocks=((19000, 19121),),
            encode=_janitza_umg604,
        ),
        "schneider_iem3155": DeviceTable(
            model="schneider_iem3155",
            title="Schneider Electric iEM3155",
            document="Schneider Electric DOCA0005EN iEM3100/3200/3300 user manual, register list",
            holding_blocks=(
                (29, 139),  # registers 30-140: meter name, model, manufacturer, serial, hw rev.
                (2999, 3111),  # registers 3000-3112: meter data, Float32
                (3203, 3227),  # registers 3204-3228: energies, Int64 Wh/VARh
                (3517, 3528),  # registers 3518-3529: active energy import per phase, Int64 Wh
                (45099, 45130),  # registers 45100-45131: energies, Float32 k-units
            ),
            input_blocks=(),
            encode=_schneider_iem3155,
        ),
        "carlo_gavazzi_em24": DeviceTable(
            model="carlo_gavazzi_em24",
            title="Carlo Gavazzi EM24 DIN",
            document="Carlo Gavazzi EM24 DIN Ethernet communication protocol",
            holding_blocks=(
                (0x0000, 0x0051),  # instantaneous variables and meters
                (0x005A, 0x005B),  # hour counter
                (0x006E, 0x007B),  # reactive tariff meters, demands
                (0xA000, 0xA000),  # application
            ),
            input_blocks=(
                (0x0000, 0x0051),
                (0x005A, 0x005B),
                (0x006E, 0x007B),
                (0xA000, 0xA000),
            ),
            encode=_carlo_gavazzi_em24,
        ),
    }
)
assert tuple(DEVICES) == MODELS


# ---------------------------------------------------------------------- the server
class _OneUnit(SimCore):
    """pymodbus' store for one unit id; other ids raise NoSuchId so the server stays silent."""

    def __init__(self, device: SimDevice) -> None:
        super().__init__(device)
        self._unit_id = device.id

    def _check(self, device_id: int) -> None:
        if device_id != self._unit_id:
            raise NoSuchIdException(f"unit id {device_id} is not this meter ({self._unit_id})")

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        self._check(device_id)
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        self._check(device_id)
        return await super().async_setValues(device_id, func_code, address, values)


def _blocks(blocks: tuple[Block, ...]) -> list[SimData]:
    if not blocks:
        # a register space the device lacks: one invalid cell, every read answers 02
        return [SimData(address=0, count=1, datatype=DataType.INVALID)]
    return [
        SimData(address=first, count=last - first + 1, values=0, datatype=DataType.REGISTERS)
        for first, last in blocks
    ]


class ModbusMeterServer:
    """One simulated meter on Modbus TCP or RTU, answering from the last :meth:`update`."""

    def __init__(
        self,
        *,
        model: str,
        unit_id: int = 1,
        transport: Transport = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        serial_port: str | None = None,
        baudrate: int = 9600,
        parity: Literal["N", "E", "O"] = "N",
        stopbits: int = 1,
        reading: MeterReading | None = None,
        name: str | None = None,
    ) -> None:
        if model not in DEVICES:
            raise ValueError(f"unknown meter model {model!r}; known: {', '.join(MODELS)}")
        if not 1 <= unit_id <= 247:
            raise ValueError(f"{model}: unit_id must be 1..247, got {unit_id}")
        if transport not in ("tcp", "rtu"):
            raise ValueError(f"{model}: transport must be 'tcp' or 'rtu', got {transport!r}")
        if transport == "rtu" and not serial_port:
            raise ValueError(f"{model}: transport 'rtu' needs serial_port")
        self.model = model
        self.table = DEVICES[model]
        self.unit_id = unit_id
        self.transport: Transport = transport
        self.host = host
        self._port = port
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.name = name or model
        self._log = logging.LoggerAdapter(log, {"machine": self.name})
        self._server: ModbusBaseServer | None = None
        self._images: tuple[Registers, Registers] = ({}, {})
        self._reading: MeterReading | None = None
        self.requests = 0
        if reading is not None:
            self.update(reading)

    # ------------------------------------------------------------------ introspection
    @property
    def port(self) -> int:
        """The TCP port actually listened on (after :meth:`start`; 0 for RTU)."""
        return self._port

    @property
    def endpoint(self) -> str:
        """``host:port`` for TCP, the serial device path for RTU."""
        if self.transport == "rtu":
            return self.serial_port or ""
        return f"{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def reading(self) -> MeterReading | None:
        """The reading the registers show now."""
        return self._reading

    # ------------------------------------------------------------------ data
    def update(self, reading: MeterReading) -> None:
        """Show ``reading`` from now on (encoded once here, not per request)."""
        self._images = self.table.encode(reading, self.unit_id)
        self._reading = reading

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Fill the requested registers from the current image (pymodbus calls this per read)."""
        if set_values is not None or function_code not in (3, 4):
            return ExcCodes.ILLEGAL_FUNCTION
        self.requests += 1
        image = self._images[0] if function_code == 3 else self._images[1]
        base = address - start_address
        for k in range(count):
            registers[base + k] = image.get(address + k, 0)
        return None

    def _device(self) -> SimDevice:
        t = self.table
        no_bits = [SimData(address=0, count=1, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=self.unit_id,
            simdata=(
                list(no_bits),
                list(no_bits),
                _blocks(t.holding_blocks),
                _blocks(t.input_blocks),
            ),
            action=self._action,
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Listen (TCP) or open the serial port (RTU); idempotent."""
        if self._server is not None:
            return
        device = self._device()
        server: ModbusBaseServer
        if self.transport == "tcp":
            server = ModbusTcpServer(
                device, address=(self.host, self._port), ignore_missing_devices=True
            )
        else:
            server = ModbusSerialServer(
                device,
                framer=FramerType.RTU,
                port=self.serial_port or "",
                baudrate=self.baudrate,
                parity=self.parity,
                stopbits=self.stopbits,
                ignore_missing_devices=True,
            )
        # one unit id per meter, silent for the others (see _OneUnit)
        server.context = _OneUnit(device)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(
                f"{self.name}: cannot open Modbus {self.transport} endpoint "
                f"{self.endpoint if self.transport == 'rtu' else (self.host, self._port)}"
            ) from exc
        if self.transport == "tcp":
            sockets = getattr(server.transport, "sockets", None) or ()
            if sockets:
                self._port = int(sockets[0].getsockname()[1])
        self._server = server
        self._log.info(
            "Modbus meter %s (%s) unit %d on %s %s",
            self.name,
            self.model,
            self.unit_id,
            self.transport,
            self.endpoint,
        )

    async def stop(self) -> None:
        """Close the listener and every connection; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus: untyped
        self._log.info("Modbus meter %s stopped", self.name)

    async def __aenter__(self) -> ModbusMeterServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
