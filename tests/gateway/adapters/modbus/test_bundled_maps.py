"""Every bundled map against the simulated meter of that model (its own register table).

The simulator (microfactory.sim.modbus_meter) transcribes each vendor's table on its own,
sharing nothing with the maps; the adapter reading it with ``meter: <model>`` must see the
quantities the simulator was given, so a wrong address, type or word order on either side
shows up here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from microfactory.gateway.adapters.modbus import bundled_maps
from microfactory.gateway.config import PipelineSettings
from microfactory.gateway.normalise import Normaliser
from microfactory.gateway.testing import wait_until
from microfactory.sim.modbus_meter import MeterReading, ModbusMeterServer
from microfactory.sim.model import ENERGY_UNITS_PER_WH

from .conftest import MakeAdapter

pytestmark = pytest.mark.integration

READING = MeterReading(
    ts_ns=0,
    energy_units=0,  # replaced below: 1234.5 kWh in the model's integer units
    power_w=(1100.0, 1200.0, 1300.0),
    voltage_v=(230.5, 231.0, 229.8),
    power_factor=0.9,
    frequency_hz=50.0,
)


@pytest.mark.parametrize("model", sorted(bundled_maps()))
async def test_the_adapter_reads_the_simulated_meter_of_each_bundled_map(
    model: str, make_adapter: MakeAdapter
) -> None:
    reading = replace(READING, energy_units=int(1_234_567 * ENERGY_UNITS_PER_WH))  # 1234.567 kWh
    server = ModbusMeterServer(model=model, unit_id=7, reading=reading)
    await server.start()
    try:
        adapter, emitter = make_adapter(
            {
                "type": "modbus",
                "name": f"{model}-meter",
                "host": "127.0.0.1",
                "port": server.port,
                "unit_id": 7,
                "machine": "press-1",
                "meter": model,
                "poll_interval_ms": 100,
                "timeout_s": 0.5,
            }
        )
        await adapter.start()
        try:
            await wait_until(
                lambda: any(s.signal == "energy_active" for s in emitter.samples),
                10,
                f"energy from the simulated {model}",
            )
        finally:
            await adapter.stop(2)
    finally:
        await server.stop()
    assert not adapter.problems, adapter.problems
    assert not emitter.refused and not emitter.dead_letters
    normalise = Normaliser(PipelineSettings())
    got = {}
    for raw in emitter.samples:
        sample = normalise(raw, raw.ts_ns or 0)
        got[sample.signal] = (sample.value, sample.unit)
    energy, unit = got["energy_active"]
    assert unit == "Wh"
    assert energy == pytest.approx(1_234_567, abs=100), f"{model}: energy {energy} Wh"
    assert got["voltage_l1"][0] == pytest.approx(230.5, abs=0.1)
    assert got["frequency"][0] == pytest.approx(50.0, abs=0.1)
    if "power_l3" in got:  # three-phase meters
        assert got["power_active"][0] == pytest.approx(reading.power_total_w, rel=0.01)
        assert got["voltage_l3"][0] == pytest.approx(229.8, abs=0.1)
        assert got["power_l2"][0] == pytest.approx(1200.0, rel=0.01)
