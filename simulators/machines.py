"""The default virtual workshop: four producing machines and the meter at the incomer.

Figures are plausible for small shop-floor equipment; they are data, so a test or a demo can
build a different workshop with :func:`dataclasses.replace` without touching the model.
"""

from __future__ import annotations

from typing import Final

from .model import GaugeSpec, MachineSpec, PowerProfile

MILL: Final = MachineSpec(
    machine_id="mill-1",
    kind="cnc_mill",
    power=PowerProfile(idle_w=800.0, setup_w=1200.0, running_w=(5500.0, 7000.0), fault_w=650.0),
    cycle_time_s=45.0,
    scrap_probability=0.04,
    programs=("O1001-BRACKET", "O1002-HOUSING", "O2040-FLANGE", "O3107-SHAFT-ADAPTER"),
    gauges=(
        GaugeSpec(
            "spindle_speed_rpm",
            targets={"setup": 0.0, "idle": 0.0},
            running=(8000.0, 12000.0),
            noise=15.0,
            decimals=0,
        ),
        GaugeSpec(
            "spindle_temperature_c",
            targets={"off": 21.0, "idle": 28.0, "setup": 30.0, "running": 52.0, "fault": 35.0},
            tau_s=300.0,
            noise=0.15,
        ),
        GaugeSpec(
            "coolant_temperature_c",
            targets={"off": 20.0, "idle": 22.0, "setup": 22.5, "running": 27.0, "fault": 23.0},
            tau_s=600.0,
            noise=0.1,
        ),
    ),
)

LASER: Final = MachineSpec(
    machine_id="laser-1",
    kind="laser_cutter",
    power=PowerProfile(idle_w=1500.0, setup_w=2000.0, running_w=(8000.0, 12000.0), fault_w=1200.0),
    cycle_time_s=20.0,
    scrap_probability=0.03,
    programs=("CUT-PANEL-A3", "CUT-GASKET-12", "CUT-LOGO-PLATE", "CUT-BRACKET-S235"),
    gauges=(
        GaugeSpec(
            "laser_power_w",
            targets={"setup": 0.0, "idle": 0.0},
            running=(2000.0, 4000.0),
            noise=20.0,
            decimals=1,
        ),
        GaugeSpec(
            "resonator_temperature_c",
            targets={"off": 21.0, "idle": 25.0, "setup": 26.0, "running": 34.0, "fault": 27.0},
            tau_s=120.0,
            noise=0.1,
        ),
        GaugeSpec(
            "chiller_temperature_c",
            targets={"off": 21.0, "idle": 18.0, "setup": 18.0, "running": 20.5, "fault": 18.5},
            tau_s=300.0,
            noise=0.05,
        ),
    ),
)

PRINTER: Final = MachineSpec(
    machine_id="printer-1",
    kind="printer_3d",
    power=PowerProfile(idle_w=40.0, setup_w=150.0, running_w=(180.0, 260.0), fault_w=35.0),
    cycle_time_s=300.0,
    scrap_probability=0.05,
    setup_s=(120.0, 240.0),
    programs=("enclosure-v3.gcode", "knob-m6.gcode", "cable-clip.gcode", "fixture-jaw.gcode"),
    phases=(1.0, 0.0, 0.0),
    gauges=(
        GaugeSpec(
            "nozzle_temp_c",
            targets={"off": 21.0, "idle": 25.0, "setup": 210.0, "running": 215.0, "fault": 60.0},
            tau_s=60.0,
            noise=0.4,
            decimals=1,
        ),
        GaugeSpec(
            "bed_temp_c",
            targets={"off": 21.0, "idle": 24.0, "setup": 60.0, "running": 60.0, "fault": 40.0},
            tau_s=180.0,
            noise=0.2,
            decimals=1,
        ),
    ),
)

ASSEMBLY: Final = MachineSpec(
    machine_id="assembly-1",
    kind="assembly_station",
    power=PowerProfile(idle_w=100.0, setup_w=150.0, running_w=(400.0, 700.0), fault_w=90.0),
    cycle_time_s=30.0,
    scrap_probability=0.03,
    setup_s=(60.0, 150.0),
    programs=("ASM-ENCL-V3", "ASM-KNOB-KIT", "ASM-SENSOR-HEAD"),
    phases=(0.0, 1.0, 0.0),
    gauges=(
        GaugeSpec(
            "torque_nm",
            targets={"setup": 0.0, "idle": 0.0},
            running=(4.0, 12.0),
            noise=0.3,
        ),
    ),
)

DEFAULT_MACHINES: Final[tuple[MachineSpec, ...]] = (MILL, LASER, PRINTER, ASSEMBLY)
METER_ID: Final = "meter-1"
