"""Config validation of the Modbus adapter: every mistake named at its path, no connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from microfactory.gateway.adapters.modbus import (
    ModbusAdapterConfig,
    bundled_maps,
    load_map,
)
from microfactory.gateway.adapters.modbus.maps import MapError
from microfactory.gateway.testing import field_paths

HERE = Path(__file__).parent
TEST_MAP = HERE / "maps" / "test_meter.yaml"
BUNDLED = ("eastron_sdm630", "eastron_sdm120", "janitza_umg604", "schneider_iem3155")


def config(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "modbus", "name": "meters", "host": "127.0.0.1"}
    base.update(kw)
    return base


def refused(data: dict[str, Any], **kw: Any) -> tuple[list[str], str]:
    with pytest.raises(ValidationError) as info:
        ModbusAdapterConfig.model_validate(data, **kw)
    return field_paths(info.value), str(info.value)


# ---------------------------------------------------------------------- maps
def test_every_bundled_map_loads_and_names_its_source() -> None:
    maps = bundled_maps()
    for name in BUNDLED:
        assert name in maps, f"bundled map {name} is missing (have {sorted(maps)})"
    for name in maps:
        meter = load_map(name)
        assert meter.name == name and meter.source.strip()
        assert {"energy_active", "power_active"} <= {r.signal for r in meter.registers}


def test_an_unknown_map_lists_the_bundled_ones() -> None:
    paths, text = refused(config(machine="press-1", meter="eastron_sdm999"))
    assert paths == ["meter"]
    assert "unknown meter map 'eastron_sdm999'" in text and "eastron_sdm630" in text


def test_a_missing_map_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    paths, text = refused(config(machine="press-1", meter=str(missing)))
    assert paths == ["meter"] and f"map file {missing}: cannot read it" in text


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"type": "bool"}, "registers[2]: type bool on a input register"),
        ({"type": "float128"}, "registers[2].type: Input should be"),
        ({"unit": "kWh"}, "registers[2].unit"),
        ({"address": 0x0001}, "registers[2] (input register 1, power_active) overlaps"),
        (
            {"signal": "voltage_l1", "unit": "V"},
            "registers[2]: signal 'voltage_l1' is already read by registers[0]",
        ),
        ({"colour": "red"}, "registers[2].colour: unknown field"),
        ({"signal": "Power Active"}, "is not a signal name"),
    ],
)
def test_an_invalid_map_file_names_file_register_and_field(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    import yaml

    data = yaml.safe_load(TEST_MAP.read_text())
    data["registers"][2].update(change)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(MapError) as info:
        load_map(str(path))
    assert str(path) in str(info.value) and expected in str(info.value)
    paths, text = refused(config(machine="press-1", meter=str(path)))
    assert paths == ["meter"] and expected in text


def test_a_map_without_source_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nosource.yaml"
    path.write_text("name: x\ntitle: x\nregisters: [{address: 0, signal: voltage_l1}]\n")
    with pytest.raises(MapError, match=r"source: required|source: Field required"):
        load_map(str(path))


def test_own_map_with_the_maps_defaults_and_scale() -> None:
    cfg = ModbusAdapterConfig.model_validate(config(machine="press-1", meter=str(TEST_MAP)))
    by_signal = {p.signal: p for p in cfg.points()}
    assert by_signal["energy_active"].function == "input"
    assert by_signal["energy_active"].type == "float32"
    assert by_signal["energy_active"].address == 0x48
    assert by_signal["power_factor"].function == "holding"
    assert by_signal["power_factor"].scale == 0.001


def test_a_relative_map_path_is_taken_from_the_config_files_folder() -> None:
    data = config(machine="press-1", meter="maps/test_meter.yaml")
    cfg = ModbusAdapterConfig.model_validate(data)  # folder unknown yet: loaded later
    based = cfg.with_base_dir(HERE)
    assert based.meter == str(HERE / "maps" / "test_meter.yaml")
    assert ("press-1", "energy_active") in based.signals_referenced()
    # with the folder given at validation, it is checked at once
    checked = ModbusAdapterConfig.model_validate(data, context={"base_dir": HERE})
    assert ("press-1", "frequency") in checked.signals_referenced()
    paths, text = refused(data, context={"base_dir": HERE / "elsewhere"})
    assert paths == ["meter"] and "elsewhere/maps/test_meter.yaml: cannot read it" in text
    with pytest.raises(ValidationError, match="cannot read it"):
        cfg.with_base_dir(HERE / "elsewhere")


# ---------------------------------------------------------------------- connection
def test_tcp_without_host() -> None:
    paths, text = refused(
        {"type": "modbus", "name": "m", "machine": "a", "meter": "eastron_sdm120"}
    )
    assert paths == ["host"] and "needs the `host`" in text


def test_rtu_without_serial_port_and_with_a_host() -> None:
    paths, text = refused(config(transport="rtu", machine="a", meter="eastron_sdm120"))
    assert sorted(paths) == ["host", "serial_port"]
    assert "needs a `serial_port`" in text


def test_rtu_defaults() -> None:
    cfg = ModbusAdapterConfig.model_validate(
        {
            "type": "modbus",
            "name": "bus",
            "transport": "rtu",
            "serial_port": "/dev/ttyUSB0",
            "machine": "a",
            "meter": "eastron_sdm120",
        }
    )
    assert (cfg.baudrate, cfg.parity, cfg.stopbits, cfg.bytesize) == (9600, "N", 1, 8)
    assert (cfg.port, cfg.poll_interval_ms, cfg.max_gap_registers) == (502, 1000, 8)


@pytest.mark.parametrize(
    ("field", "value"),
    [("parity", "X"), ("port", 0), ("max_registers_per_read", 126), ("max_bits_per_read", 2001)],
)
def test_out_of_range_connection_fields(field: str, value: object) -> None:
    paths, _ = refused(config(machine="a", meter="eastron_sdm120", **{field: value}))
    assert paths == [field]


# ---------------------------------------------------------------------- registers
@pytest.mark.parametrize(
    ("register", "path", "words"),
    [
        ({"address": 0, "signal": "online", "type": "bool"}, "registers[0]", "bool is for coils"),
        (
            {"address": 0, "signal": "x", "function": "coil", "type": "int16"},
            "registers[0]",
            "use type bool",
        ),
        (
            {"address": 0, "signal": "power_active", "unit": "degC"},
            "registers[0].unit",
            "cannot convert",
        ),
        ({"address": 65535, "signal": "x", "type": "float32"}, "registers[0]", "needs 2 registers"),
        ({"address": 70000, "signal": "x"}, "registers[0].address", "less than or equal"),
        ({"address": "0xZZ", "signal": "x"}, "registers[0].address", "not a number"),
        ({"address": 0, "signal": "state"}, "registers[0]", "is text"),
        (
            {"address": 0, "signal": "power_active", "function": "coil", "type": "bool"},
            "registers[0]",
            "gives true/false",
        ),
    ],
)
def test_register_mistakes(register: dict[str, Any], path: str, words: str) -> None:
    paths, text = refused(config(machine="a", registers=[register]))
    assert paths == [path] and words in text


def test_hex_addresses_in_quotes() -> None:
    cfg = ModbusAdapterConfig.model_validate(
        config(machine="a", registers=[{"address": "0x0048", "signal": "x"}])
    )
    assert cfg.points()[0].address == 0x48


def test_inline_registers_overlapping_each_other_or_the_map() -> None:
    regs = [{"address": 0, "signal": "x", "type": "uint32"}, {"address": 1, "signal": "y"}]
    paths, text = refused(config(machine="a", registers=regs))
    assert (
        paths == ["registers"]
        and "registers[1] (holding register 1, y) overlaps registers[0]" in text
    )
    regs = [{"address": 0x48, "signal": "x", "function": "input"}]
    paths, text = refused(config(machine="a", meter="eastron_sdm120", registers=regs))
    assert paths == ["registers"] and "overlaps meter eastron_sdm120's energy_active" in text


def test_same_address_on_another_function_is_no_overlap() -> None:
    regs = [{"address": 0, "signal": "x", "function": "holding"}]
    ModbusAdapterConfig.model_validate(config(machine="a", meter="eastron_sdm120", registers=regs))


def test_duplicate_machine_and_signal() -> None:
    regs = [{"address": 500, "signal": "energy_active", "function": "input"}]
    _, text = refused(config(machine="a", meter="eastron_sdm120", registers=regs))
    assert "registers[0]: machine 'a' signal 'energy_active' is already read by meter" in text
    devices = [
        {"unit_id": 1, "machine": "a", "meter": "eastron_sdm120"},
        {"unit_id": 2, "registers": [{"address": 0, "signal": "energy_active", "machine": "a"}]},
    ]
    _, text = refused(config(devices=devices))
    assert (
        "devices[1].registers[0]: machine 'a' signal 'energy_active' is already read by devices[0]"
        in text
    )


def test_a_register_without_machine() -> None:
    paths, text = refused(config(registers=[{"address": 0, "signal": "x"}]))
    assert paths == ["registers"] and "registers[0] (x): no machine" in text


def test_a_map_without_machine_or_nothing_at_all() -> None:
    _, text = refused(config(meter="eastron_sdm120"))
    assert "give the `machine` the meter measures" in text
    _, text = refused(config(machine="a"))
    assert "give a `meter` or `registers`" in text


# ---------------------------------------------------------------------- devices
def test_devices_exclude_the_single_device_fields() -> None:
    devices = [{"unit_id": 2, "machine": "a", "meter": "eastron_sdm120"}]
    _, text = refused(config(machine="a", devices=devices))
    assert "machine and `devices` exclude each other" in text


def test_duplicate_unit_ids() -> None:
    devices = [
        {"unit_id": 2, "machine": "a", "meter": "eastron_sdm120"},
        {"unit_id": 2, "machine": "b", "meter": "eastron_sdm120"},
    ]
    _, text = refused(config(devices=devices))
    assert "devices[1]: unit id 2 is already devices[0]" in text


def test_device_errors_name_the_device() -> None:
    devices = [{"unit_id": 2, "machine": "a", "meter": "nope"}]
    paths, _ = refused(config(devices=devices))
    assert paths == ["devices[0].meter"]
    devices = [
        {"unit_id": 2, "machine": "a", "registers": [{"address": 0, "signal": "x", "type": "bool"}]}
    ]
    paths, _ = refused(config(devices=devices))
    assert paths == ["devices[0].registers[0]"]


def test_machines_and_signals_referenced() -> None:
    devices = [
        {"unit_id": 1, "machine": "press-1", "meter": "eastron_sdm630"},
        {
            "unit_id": 2,
            "machine": "lathe-1",
            "meter": "eastron_sdm120",
            "registers": [
                {
                    "address": 0x200,
                    "signal": "energy_active",
                    "machine": "saw-1",
                    "function": "input",
                    "type": "float32",
                    "unit": "kWh",
                }
            ],
        },
    ]
    cfg = ModbusAdapterConfig.model_validate(config(devices=devices))
    assert cfg.machines_referenced() == {"press-1", "lathe-1", "saw-1"}
    signals = cfg.signals_referenced()
    for machine in ("press-1", "lathe-1", "saw-1"):
        assert (machine, "energy_active") in signals
    assert ("press-1", "voltage_l3") in signals and ("lathe-1", "voltage_l3") not in signals
    assert {p.unit_id for p in cfg.points() if p.machine == "saw-1"} == {2}


def test_default_stale_time_follows_the_slowest_poll() -> None:
    cfg = ModbusAdapterConfig.model_validate(
        config(machine="a", registers=[{"address": 0, "signal": "x", "poll_interval_ms": 10000}])
    )
    assert cfg.device_stale_after_s(cfg.points()) == pytest.approx(31.0)
    assert cfg.device_stale_after_s([]) == 5.0
