"""The Modbus adapter against a real pymodbus TCP server whose datastore the test writes."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import Any

import pytest

from microfactory.gateway.config import PipelineSettings
from microfactory.gateway.normalise import Normaliser
from microfactory.gateway.sample import RawSample
from microfactory.gateway.testing import RecordingEmitter, wait_until
from tests.helpers.modbus_server import ModbusStore, ModbusTcpTestServer, int_words

from .conftest import MakeAdapter

pytestmark = pytest.mark.integration

TEST_MAP = str(Path(__file__).parent / "maps" / "test_meter.yaml")


def tcp(server: ModbusTcpTestServer, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "modbus",
        "name": "meters",
        "host": "127.0.0.1",
        "port": server.port,
        "poll_interval_ms": 100,
        "timeout_s": 0.5,
        "reconnect_max_s": 1,
    }
    base.update(kw)
    return base


def fill_test_meter(store: ModbusStore, unit: int = 1) -> None:
    store.set_float32(unit, "input", 0x00, 230.5)
    store.set_float32(unit, "input", 0x06, 4.25)
    store.set_float32(unit, "input", 0x0C, 980.0)
    store.set_float32(unit, "input", 0x46, 50.0)
    store.set_float32(unit, "input", 0x48, 1234.5)
    store.set_words(unit, "holding", 0x10, int_words(-870, 1))


def latest(emitter: RecordingEmitter) -> dict[tuple[str, str], RawSample]:
    out: dict[tuple[str, str], RawSample] = {}
    for s in emitter.snapshot()[0]:
        out[(s.machine, s.signal)] = s
    return out


async def has(emitter: RecordingEmitter, *keys: tuple[str, str], timeout_s: float = 10) -> None:
    await wait_until(lambda: set(keys) <= set(latest(emitter)), timeout_s, f"samples for {keys}")


async def test_meter_map_values_units_scale_and_coalesced_reads(
    modbus_tcp: ModbusTcpTestServer, store: ModbusStore, make_adapter: MakeAdapter
) -> None:
    fill_test_meter(store)
    adapter, emitter = make_adapter(tcp(modbus_tcp, machine="press-1", meter=TEST_MAP))
    await adapter.start()
    try:
        await has(emitter, ("press-1", "energy_active"), ("press-1", "power_factor"))
    finally:
        await adapter.stop(2)
    got = latest(emitter)
    assert got[("press-1", "voltage_l1")].value == 230.5
    assert got[("press-1", "current_l1")].value == 4.25
    assert got[("press-1", "power_factor")].value == pytest.approx(-0.87)
    energy = got[("press-1", "energy_active")]
    assert (energy.value, energy.unit) == (1234.5, "kWh")
    normalised = Normaliser(PipelineSettings())(energy, time.time_ns())
    assert (normalised.value, normalised.unit) == (1234500.0, "Wh")  # kWh -> Wh by the gateway
    assert not emitter.refused and not emitter.violations
    # one read per block: 0..13 (holes of 4 bridged), 70..73, and the holding register apart
    asked = {(fc, addr, count) for unit, fc, addr, count in store.requests}
    assert asked == {(4, 0, 14), (4, 70, 4), (3, 16, 1)}
    # one timestamp per read: every register of one read carries the same one
    block = [s for s in emitter.samples if s.signal in ("voltage_l1", "current_l1", "power_active")]
    assert block[0].ts_ns == block[1].ts_ns == block[2].ts_ns
    assert abs(block[0].ts_ns - time.time_ns()) < 60e9  # type: ignore[operator]


async def test_word_orders_types_scale_and_offset(
    modbus_tcp: ModbusTcpTestServer, store: ModbusStore, make_adapter: MakeAdapter
) -> None:
    store.set_float32(1, "holding", 0, 230.5, word_order="little")
    store.set_words(1, "holding", 2, [0x6643, 0x0080])  # 230.5, bytes swapped in each word
    store.set_words(1, "holding", 4, int_words(123456789012, 4, signed=False, word_order="little"))
    store.set_words(1, "holding", 8, int_words(-12, 2))
    store.set_words(1, "holding", 10, [2982])  # tenths of kelvin
    registers = [
        {
            "address": 0,
            "signal": "voltage_l1",
            "type": "float32",
            "word_order": "little",
            "unit": "V",
        },
        {"address": 2, "signal": "voltage_l2", "type": "float32", "byte_order": "little"},
        {
            "address": 4,
            "signal": "energy_active",
            "type": "uint64",
            "word_order": "little",
            "unit": "Wh",
        },
        {"address": 8, "signal": "power_active", "type": "int32", "scale": 0.5, "unit": "kW"},
        {"address": 10, "signal": "temperature", "scale": 0.1, "offset": -273.15, "unit": "degC"},
    ]
    adapter, emitter = make_adapter(tcp(modbus_tcp, machine="press-1", registers=registers))
    await adapter.start()
    try:
        await has(emitter, ("press-1", "temperature"))
    finally:
        await adapter.stop(2)
    got = {k: s.value for k, s in latest(emitter).items()}
    assert got[("press-1", "voltage_l1")] == 230.5
    assert got[("press-1", "voltage_l2")] == 230.5
    assert got[("press-1", "energy_active")] == 123456789012
    assert got[("press-1", "power_active")] == -6.0
    assert got[("press-1", "temperature")] == pytest.approx(25.05)
    assert {count for _, _, _, count in store.requests} == {11}  # one contiguous read


async def test_several_units_and_function_codes_1_to_4(
    modbus_tcp: ModbusTcpTestServer, store: ModbusStore, make_adapter: MakeAdapter
) -> None:
    fill_test_meter(store, unit=1)
    store.set_bits(2, "coil", 5, [True])
    store.set_bits(2, "discrete", 7, [True])
    store.set_words(2, "holding", 100, [42])
    store.set_words(2, "input", 200, int_words(70000, 2, signed=False))
    devices = [
        {"unit_id": 1, "machine": "press-1", "meter": TEST_MAP},
        {
            "unit_id": 2,
            "machine": "lathe-1",
            "registers": [
                {"address": 5, "signal": "online", "function": "coil", "type": "bool"},
                {"address": 7, "signal": "door_open", "function": "discrete", "type": "bool"},
                {"address": 100, "signal": "part_count"},
                {"address": 200, "signal": "spindle_speed", "function": "input", "type": "uint32"},
                {"address": 300, "signal": "energy_active", "machine": "saw-1"},
            ],
        },
    ]
    adapter, emitter = make_adapter(tcp(modbus_tcp, devices=devices))
    await adapter.start()
    try:
        await has(
            emitter,
            ("press-1", "energy_active"),
            ("lathe-1", "spindle_speed"),
            ("saw-1", "energy_active"),
        )
        await has(emitter, ("lathe-1", "online"), ("lathe-1", "door_open"))
    finally:
        await adapter.stop(2)
    got = {k: s.value for k, s in latest(emitter).items()}
    assert got[("lathe-1", "online")] is True
    assert got[("lathe-1", "door_open")] is True
    assert got[("lathe-1", "part_count")] == 42
    assert got[("lathe-1", "spindle_speed")] == 70000
    assert got[("press-1", "voltage_l1")] == 230.5
    assert {fc for unit, fc, _, _ in store.requests if unit == 2} == {1, 2, 3, 4}
    assert emitter.device_state("unit 1") == "live" and emitter.device_state("unit 2") == "live"


async def test_a_refused_register_is_left_out_its_neighbours_flow_and_it_recovers(
    modbus_tcp: ModbusTcpTestServer,
    store: ModbusStore,
    make_adapter: MakeAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fill_test_meter(store)
    store.refuse(1, "input", 0x06)  # current_l1: 02 Illegal Data Address
    adapter, emitter = make_adapter(
        tcp(modbus_tcp, machine="press-1", meter=TEST_MAP, retry_failed_s=1)
    )
    caplog.set_level(logging.INFO, logger="microfactory.test.modbus")
    await adapter.start()
    try:
        await has(emitter, ("press-1", "voltage_l1"), ("press-1", "power_active"))
        before = emitter.count()
        await wait_until(lambda: emitter.count() > before + 20, 10, "more polls")
        assert ("press-1", "current_l1") not in latest(emitter)
        problem = adapter.problems[(1, "input", 6)]
        assert "exception 02 Illegal Data Address" in problem.message
        warnings = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "meters: unit 1 input register 6 (FC4, press-1/current_l1) refused" in warnings[0]
        # after the split, the plan reads around the refused register, never across it
        recent = store.requests[-6:]
        assert all(not (a <= 6 < a + n) for _, fc, a, n in recent if fc == 4 and n > 2), recent
        store.refuse(1, "input", 0x06, refused=False)
        await has(emitter, ("press-1", "current_l1"), timeout_s=5)
        assert (1, "input", 6) not in adapter.problems
    finally:
        await adapter.stop(2)
    recovered = [r for r in caplog.records if "reads again" in r.getMessage()]
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO
    assert not emitter.dead_letters  # a refused register is a problem, not a payload


async def test_a_read_refused_across_an_unmapped_hole_is_read_more_finely(
    modbus_tcp: ModbusTcpTestServer,
    store: ModbusStore,
    make_adapter: MakeAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fill_test_meter(store)
    store.refuse(1, "input", 0x03)  # unmapped, inside the hole between voltage and current
    adapter, emitter = make_adapter(tcp(modbus_tcp, machine="press-1", meter=TEST_MAP))
    caplog.set_level(logging.WARNING, logger="microfactory.test.modbus")
    await adapter.start()
    try:
        await has(emitter, ("press-1", "voltage_l1"), ("press-1", "current_l1"))
        before = emitter.count()
        await wait_until(lambda: emitter.count() > before + 20, 10, "more polls")
    finally:
        await adapter.stop(2)
    assert not adapter.problems
    notes = [r.getMessage() for r in caplog.records if "refused as one read" in r.getMessage()]
    assert len(notes) == 1 and "reading only contiguous registers together" in notes[0]
    recent = [(a, n) for _, fc, a, n in store.requests[-10:] if fc == 4]
    assert all(not (a <= 3 < a + n) for a, n in recent), recent


async def test_nan_is_left_out_and_dead_lettered_once(
    modbus_tcp: ModbusTcpTestServer, store: ModbusStore, make_adapter: MakeAdapter
) -> None:
    fill_test_meter(store)
    store.set_float32(1, "input", 0x0C, math.nan)
    adapter, emitter = make_adapter(tcp(modbus_tcp, machine="press-1", meter=TEST_MAP))
    await adapter.start()
    try:
        await has(emitter, ("press-1", "voltage_l1"))
        before = emitter.count()
        await wait_until(lambda: emitter.count() > before + 30, 10, "more polls")
        assert ("press-1", "power_active") not in latest(emitter)
        assert len(emitter.dead_letters) == 1
        letter = emitter.dead_letters[0]
        assert letter.origin == "unit 1 input 12" and "no valid reading" in letter.reason
        assert letter.payload == bytes.fromhex("7fc00000")
        assert adapter.problems[(1, "input", 12)].count > 3
        store.set_float32(1, "input", 0x0C, 990.0)
        await has(emitter, ("press-1", "power_active"))
        assert (1, "input", 12) not in adapter.problems
    finally:
        await adapter.stop(2)
    assert not emitter.refused


@pytest.mark.parametrize("gateway", [False, True], ids=["no-answer", "gateway-0B"])
async def test_a_silent_unit_goes_stale_while_the_others_are_polled(
    modbus_tcp: ModbusTcpTestServer, store: ModbusStore, make_adapter: MakeAdapter, gateway: bool
) -> None:
    fill_test_meter(store, unit=1)
    fill_test_meter(store, unit=2)
    devices = [
        {"unit_id": 1, "machine": "press-1", "meter": TEST_MAP},
        {"unit_id": 2, "machine": "lathe-1", "meter": TEST_MAP},
    ]
    adapter, emitter = make_adapter(
        tcp(modbus_tcp, devices=devices, timeout_s=0.3, stale_after_s=1.0)
    )
    await adapter.start()
    try:
        await has(emitter, ("press-1", "energy_active"), ("lathe-1", "energy_active"))
        store.unplug(2, gateway=gateway)
        await wait_until(lambda: emitter.device_state("unit 2") == "stale", 10, "unit 2 stale")
        assert not adapter.problems  # an absent device is not a list of refused registers
        lathe_before = sum(1 for s in emitter.samples if s.machine == "lathe-1")
        press_before = sum(1 for s in emitter.samples if s.machine == "press-1")
        await asyncio.sleep(1.0)
        assert sum(1 for s in emitter.samples if s.machine == "press-1") > press_before + 10
        assert sum(1 for s in emitter.samples if s.machine == "lathe-1") == lathe_before
        assert emitter.device_state("unit 1") == "live"
        assert emitter.states[-1] == "connected"  # the connection is fine: one device is not
        store.unplug(2, unplugged=False)
        await wait_until(lambda: emitter.device_state("unit 2") == "live", 10, "unit 2 live")
    finally:
        await adapter.stop(2)
    gaps = [g for g in emitter.gaps if g.machine == "lathe-1"]
    assert len(gaps) == 1 and "device unit 2" in gaps[0].reason
    assert not [g for g in emitter.gaps if g.machine == "press-1"]


async def test_server_restart_reports_a_gap_and_data_comes_again(
    modbus_tcp: ModbusTcpTestServer, store: ModbusStore, make_adapter: MakeAdapter
) -> None:
    fill_test_meter(store)
    adapter, emitter = make_adapter(tcp(modbus_tcp, machine="press-1", meter=TEST_MAP))
    await adapter.start()
    try:
        await has(emitter, ("press-1", "energy_active"))
        await modbus_tcp.stop()
        await wait_until(lambda: emitter.states[-1] != "connected", 10, "the outage noticed")
        await asyncio.sleep(0.5)
        await modbus_tcp.start()
        await wait_until(lambda: emitter.gaps != [], 15, "a gap after reconnecting")
        count = emitter.count()
        await wait_until(lambda: emitter.count() > count + 5, 10, "data after the restart")
    finally:
        await adapter.stop(2)
    gap = emitter.gaps[0]
    assert gap.machine == "press-1" and gap.end_ns > gap.start_ns
    assert emitter.states[-1] == "stopped"
    assert not emitter.violations
