"""The simulated Modbus meters read by a plain pymodbus client, decoded as each manual says.

The decoding here is written from the vendors' manuals on purpose (not imported from the
simulator nor from the gateway): a third transcription, so that a mistake in the simulator's
register table shows up as a wrong value here.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from microfactory.sim.machines import DEFAULT_MACHINES
from microfactory.sim.modbus_meter import (
    MODELS,
    MeterFeed,
    MeterReading,
    ModbusMeterServer,
)
from microfactory.sim.model import (
    ENERGY_UNITS_PER_WH,
    MachineModel,
    MeterModel,
    energy_units_to_wh,
)
from tests.helpers.markers import starts_server
from tests.helpers.modbus_server import pty_pair

from .util import T0, S

pytestmark = pytest.mark.integration  # every test here talks to a real pymodbus server

Start = Callable[..., Awaitable[ModbusMeterServer]]


@pytest.fixture
@starts_server("pymodbus simulated meter")
async def start_meter() -> AsyncIterator[Start]:
    """``await start_meter(model=..., reading=...)``: a started meter, stopped after the test."""
    started: list[ModbusMeterServer] = []

    async def start(**kwargs: object) -> ModbusMeterServer:
        srv = ModbusMeterServer(**kwargs)  # type: ignore[arg-type]
        await srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.stop()


@contextlib.asynccontextmanager
async def tcp_client(srv: ModbusMeterServer, answer_s: float = 2.0) -> AsyncIterator[Client]:
    client = AsyncModbusTcpClient(srv.host, port=srv.port, timeout=answer_s, retries=0)
    assert await client.connect(), f"cannot connect to {srv.endpoint}"
    try:
        yield Client(client)
    finally:
        client.close()


@dataclass
class Client:
    """Reads raw words with the function code a manual names; fails loudly on an exception."""

    c: AsyncModbusTcpClient | AsyncModbusSerialClient
    unit: int = 1

    async def words(self, fc: int, address: int, count: int) -> list[int]:
        read = self.c.read_input_registers if fc == 4 else self.c.read_holding_registers
        rr = await read(address, count=count, device_id=self.unit)
        assert not rr.isError(), f"FC{fc} {address} x{count}: {rr}"
        return list(rr.registers)

    async def exception(self, fc: int, address: int, count: int = 2) -> int:
        read = {
            1: self.c.read_coils,
            3: self.c.read_holding_registers,
            4: self.c.read_input_registers,
        }[fc]
        rr = await read(address, count=count, device_id=self.unit)
        assert rr.isError(), f"FC{fc} {address} x{count} answered {rr}, expected an exception"
        return int(rr.exception_code)


# ------------------------------------------------------------------ manuals' encodings
def f32(words: list[int]) -> float:
    """IEEE 754 single, high word first (Eastron, Janitza, Schneider)."""
    value: float = struct.unpack(">f", struct.pack(">HH", *words))[0]
    return value


def i64(words: list[int]) -> int:
    """Schneider Int64: four words, most significant first."""
    value: int = struct.unpack(">q", struct.pack(">HHHH", *words))[0]
    return value


def i32_lsw(words: list[int]) -> int:
    """Carlo Gavazzi INT32: least significant word first."""
    value: int = struct.unpack(">i", struct.pack(">HH", words[1], words[0]))[0]
    return value


def i16(word: int) -> int:
    value: int = struct.unpack(">h", struct.pack(">H", word))[0]
    return value


def f32_close(got: float, want: float) -> bool:
    """Equal within float32 rounding (half an ulp is 2^-24 relative)."""
    return math.isclose(got, want, rel_tol=2**-23, abs_tol=1e-9)


@dataclass(frozen=True)
class Decoded:
    energy_wh: float
    energy_resolution_wh: float
    power_w: float
    voltage_l1_v: float
    frequency_hz: float
    power_factor: float


async def decode(model: str, c: Client) -> Decoded:
    """Energy, total power, V L1, Hz and PF of ``model`` as its manual says to read them."""
    if model == "eastron_sdm630":
        w = await c.words(4, 0x0000, 0x4A)  # 30001..30074 in one request (<= 40 parameters)
        return Decoded(
            energy_wh=f32(w[0x48:0x4A]) * 1000,
            energy_resolution_wh=0,
            power_w=f32(w[0x34:0x36]),
            voltage_l1_v=f32(w[0:2]),
            frequency_hz=f32(w[0x46:0x48]),
            power_factor=f32(w[0x3E:0x40]),
        )
    if model == "eastron_sdm120":
        block = await c.words(4, 0x0000, 0x20)
        tail = await c.words(4, 0x0046, 4)
        return Decoded(
            energy_wh=f32(tail[2:4]) * 1000,
            energy_resolution_wh=0,
            power_w=f32(block[0x0C:0x0E]),
            voltage_l1_v=f32(block[0:2]),
            frequency_hz=f32(tail[0:2]),
            power_factor=f32(block[0x1E:0x20]),
        )
    if model == "janitza_umg604":
        w = await c.words(3, 19000, 70)  # 19000..19069
        cos_phi_l1 = f32(w[44:46])
        return Decoded(
            energy_wh=f32(w[68:70]),
            energy_resolution_wh=0,
            power_w=f32(w[26:28]),
            voltage_l1_v=f32(w[0:2]),
            frequency_hz=f32(w[50:52]),
            power_factor=cos_phi_l1,
        )
    if model == "schneider_iem3155":
        # register numbers from the manual minus one
        data = await c.words(3, 3000 - 1, 112)  # registers 3000..3111
        energy = await c.words(3, 3204 - 1, 4)
        return Decoded(
            energy_wh=i64(energy),
            energy_resolution_wh=1,
            power_w=f32(data[60:62]) * 1000,  # register 3060, kW
            voltage_l1_v=f32(data[28:30]),  # register 3028
            frequency_hz=f32(data[110:112]),  # register 3110
            power_factor=f32(data[84:86]),  # register 3084, quadrant 1 = plain PF
        )
    if model == "carlo_gavazzi_em24":
        w = await c.words(3, 0x0000, 0x36)
        return Decoded(
            energy_wh=i32_lsw(w[0x34:0x36]) / 10 * 1000,  # kWh x10
            energy_resolution_wh=100,
            power_w=i32_lsw(w[0x28:0x2A]) / 10,  # W x10
            voltage_l1_v=i32_lsw(w[0:2]) / 10,  # V x10
            frequency_hz=i16(w[0x33]) / 10,  # Hz x10
            power_factor=i16(w[0x31]) / 1000,  # PF x1000
        )
    raise AssertionError(f"no decoding for {model}")


# addresses just outside each device's table (the function code it answers on)
OUTSIDE: dict[str, tuple[int, int]] = {
    "eastron_sdm630": (4, 0x0200),
    "eastron_sdm120": (4, 0x0030),
    "janitza_umg604": (3, 19200),
    "schneider_iem3155": (3, 3400),
    "carlo_gavazzi_em24": (3, 0x0100),
}


def machine_after(seconds: int, spec_index: int = 0) -> MachineModel:
    spec = DEFAULT_MACHINES[spec_index]
    model = MachineModel(spec, seed=7, start_ns=T0, power_loss_probability=0.0)
    model.advance(T0 + seconds * S)
    return model


def big_reading(energy_wh: float = 123_456.789) -> MeterReading:
    return MeterReading(
        ts_ns=T0,
        energy_units=round(energy_wh * ENERGY_UNITS_PER_WH),
        power_w=(2100.0, 1800.5, 950.25),
        voltage_v=(230.4, 229.1, 231.7),
        power_factor=0.95,
        frequency_hz=50.02,
    )


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("model", MODELS)
async def test_each_meter_shows_the_machines_ground_truth_energy(
    model: str, start_meter: Start
) -> None:
    machine = machine_after(3 * 3600)
    feed = MeterFeed.for_machine(machine, seed=7)
    reading = feed.reading()
    truth_wh = energy_units_to_wh(machine.energy_total_units)  # what truth.py records
    assert truth_wh > 1000, "the machine should have used energy in 3 h"
    srv = await start_meter(model=model, reading=reading)
    async with tcp_client(srv) as c:
        got = await decode(model, c)
    if got.energy_resolution_wh:  # an integer counter: floored to its step
        assert truth_wh - got.energy_resolution_wh < got.energy_wh <= truth_wh, (
            f"{model}: energy {got.energy_wh} Wh, truth {truth_wh} Wh"
        )
    else:  # a float: the nearest float32 of the value in the device's unit
        unit = 1 if model == "janitza_umg604" else 1000
        assert f32_close(got.energy_wh / unit, truth_wh / unit), (
            f"{model}: energy {got.energy_wh} Wh, truth {truth_wh} Wh"
        )
    power_w = machine.power_mw / 1000
    power_tol = 0.05 if model == "carlo_gavazzi_em24" else max(1e-3, power_w * 2**-22)
    assert abs(got.power_w - power_w) <= power_tol, f"{model}: power {got.power_w} vs {power_w}"
    assert 225 < got.voltage_l1_v < 235, f"{model}: L1 voltage {got.voltage_l1_v}"
    assert abs(got.voltage_l1_v - reading.voltage_v[0]) <= 0.05 + 1e-4
    assert abs(got.frequency_hz - 50.0) < 0.2, f"{model}: frequency {got.frequency_hz}"
    assert abs(got.power_factor - reading.power_factor) <= 0.001


@pytest.mark.parametrize("model", MODELS)
async def test_float32_and_scaled_formats_hold_a_large_energy(
    model: str, start_meter: Start
) -> None:
    reading = big_reading()
    srv = await start_meter(model=model, reading=reading)
    async with tcp_client(srv) as c:
        got = await decode(model, c)
    want = reading.energy_wh
    if got.energy_resolution_wh:
        assert want - got.energy_resolution_wh < got.energy_wh <= want
    else:
        unit = 1 if model == "janitza_umg604" else 1000
        assert f32_close(got.energy_wh / unit, want / unit), f"{model}: {got.energy_wh} vs {want}"
    # a single-phase meter carries the whole load on L1: its power is the total too
    assert math.isclose(got.power_w, reading.power_total_w, rel_tol=1e-5, abs_tol=0.05 + 1e-6)


@pytest.mark.parametrize("model", MODELS)
async def test_an_address_outside_the_table_answers_illegal_data_address(
    model: str, start_meter: Start
) -> None:
    srv = await start_meter(model=model, reading=big_reading())
    fc, address = OUTSIDE[model]
    async with tcp_client(srv) as c:
        assert await c.exception(fc, address) == 2, f"{model}: FC{fc} {address}"
        assert await c.exception(1, 0, 1) == 1, f"{model}: coils are not a meter's"


async def test_per_phase_values_of_a_three_phase_meter(start_meter: Start) -> None:
    reading = big_reading()
    srv = await start_meter(model="eastron_sdm630", reading=reading)
    async with tcp_client(srv) as c:
        w = await c.words(4, 0x0000, 0x12)
    for n in range(3):
        volts = f32(w[2 * n : 2 * n + 2])
        amps = f32(w[6 + 2 * n : 8 + 2 * n])
        watts = f32(w[12 + 2 * n : 14 + 2 * n])
        assert f32_close(volts, reading.voltage_v[n])
        assert f32_close(watts, reading.power_w[n])
        # P = V * I * PF
        assert math.isclose(volts * amps * 0.95, watts, rel_tol=1e-5), f"phase {n + 1}"


async def test_schneider_float_energy_block_and_em24_weights(start_meter: Start) -> None:
    reading = big_reading(energy_wh=4_321_098.7)
    iem = await start_meter(model="schneider_iem3155", reading=reading)
    em24 = await start_meter(model="carlo_gavazzi_em24", reading=reading)
    async with tcp_client(iem) as c:
        kwh = f32(await c.words(3, 45100 - 1, 2))  # register 45100, Float32 kWh
        assert f32_close(kwh, reading.energy_kwh)
        assert i64(await c.words(3, 3204 - 1, 4)) == 4_321_098
    async with tcp_client(em24) as c:
        w = await c.words(3, 0x000C, 2)
        assert i32_lsw(w) == round(reading.current_a(0) * 1000), "A L1 is A x1000"
        assert w[1] == 0 and w[0] > 0, "INT32 LSW first: a small value has its MSW second"
        assert i32_lsw(await c.words(3, 0x0034, 2)) == 43_210, "kWh (+) TOT is kWh x10"
        # the same table answers on FC04
        assert i32_lsw(await c.words(4, 0x0034, 2)) == 43_210


async def test_reads_between_updates_show_the_last_update(start_meter: Start) -> None:
    machine = machine_after(600)
    feed = MeterFeed.for_machine(machine, seed=7)
    srv = await start_meter(model="eastron_sdm120", reading=feed.reading())
    async with tcp_client(srv) as c:
        first = await c.words(4, 0x0048, 2)
        assert await c.words(4, 0x0048, 2) == first, "no update, so the same registers"
        machine.advance(T0 + 1200 * S)
        srv.update(feed.reading())
        later = f32(await c.words(4, 0x0048, 2)) * 1000
        assert f32(first) * 1000 < later
        assert f32_close(later / 1000, energy_units_to_wh(machine.energy_total_units) / 1000)


async def test_another_unit_id_gets_no_answer(start_meter: Start) -> None:
    srv = await start_meter(model="janitza_umg604", unit_id=5, reading=big_reading())
    async with tcp_client(srv, answer_s=0.5) as c:
        assert f32(await Client(c.c, unit=5).words(3, 19026, 2)) > 0
        with pytest.raises(ModbusException):
            rr = await c.c.read_holding_registers(19026, count=2, device_id=6)
            raise AssertionError(f"unit 6 answered: {rr}")


async def test_incomer_feed_shows_the_workshop_meter(start_meter: Start) -> None:
    machines = [
        MachineModel(spec, seed=7, start_ns=T0, power_loss_probability=0.0)
        for spec in DEFAULT_MACHINES
    ]
    incomer = MeterModel("meter-main", machines, seed=7, start_ns=T0)
    for m in machines:
        m.advance(T0 + 1800 * S)
    incomer.advance(T0 + 1800 * S)
    reading = MeterFeed.for_incomer(incomer, seed=7).reading()
    snap = incomer.snapshot()
    assert reading.voltage_v == snap.voltage_l_v
    srv = await start_meter(model="janitza_umg604", reading=reading)
    async with tcp_client(srv) as c:
        got = await decode("janitza_umg604", c)
    assert f32_close(got.energy_wh, energy_units_to_wh(incomer.energy_total_units))
    assert math.isclose(got.power_w, snap.power_w, rel_tol=1e-6)


def test_the_feed_splits_power_like_the_workshop_meter() -> None:
    machine = machine_after(900, spec_index=1)
    reading = MeterFeed.for_machine(machine, seed=1).reading()
    assert math.isclose(reading.power_total_w, machine.power_mw / 1000, abs_tol=1e-9)
    for n, share in enumerate(machine.spec.phases):
        if share == 0:
            assert reading.power_w[n] == 0
            assert reading.current_a(n) == 0
    assert reading.energy_units == machine.energy_total_units


def test_unknown_model_and_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown meter model 'abb_b23'"):
        ModbusMeterServer(model="abb_b23")
    with pytest.raises(ValueError, match="serial_port"):
        ModbusMeterServer(model="eastron_sdm120", transport="rtu")
    with pytest.raises(ValueError, match="unit_id"):
        ModbusMeterServer(model="eastron_sdm120", unit_id=0)


# ------------------------------------------------------------------ RTU over a pty pair
@pytest.fixture
@starts_server("socat pseudo-terminal pair")
def pty(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with pty_pair(tmp_path) as (a, b):
        yield str(a), str(b)


@pytest.mark.parametrize("model", ["eastron_sdm120", "carlo_gavazzi_em24"])
async def test_rtu_over_a_pseudo_terminal_pair(
    model: str, pty: tuple[str, str], start_meter: Start
) -> None:
    server_end, client_end = pty
    reading = big_reading()
    srv = await start_meter(
        model=model,
        transport="rtu",
        serial_port=server_end,
        baudrate=19200,
        unit_id=3,
        reading=reading,
    )
    assert srv.endpoint == server_end
    client = AsyncModbusSerialClient(client_end, baudrate=19200, timeout=2, retries=1)
    assert await client.connect(), f"cannot open {client_end}"
    try:
        await asyncio.sleep(0.1)
        got = await decode(model, Client(client, unit=3))
    finally:
        client.close()
    if got.energy_resolution_wh:
        assert reading.energy_wh - got.energy_resolution_wh < got.energy_wh <= reading.energy_wh
    else:
        assert f32_close(got.energy_wh / 1000, reading.energy_kwh)
    assert abs(got.voltage_l1_v - reading.voltage_v[0]) <= 0.05 + 1e-4
