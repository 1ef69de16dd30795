"""The simulated workshop feeding the real gateway: the start sequence every end-to-end test needs.

Started paused, the simulators' OPC UA servers and MQTT links are up but their clock stands
still; the gateway is built from the demo's own site config (what ``microfactory demo`` runs)
and started; only once every adapter is connected (and, when asked, the MES link holds the
machines' batch contexts) does simulated time run. So the gateway sees every machine from its
first instant, and nothing the simulators publish is lost to a connection still being made.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microfactory.cli.demo import demo_site_config
from microfactory.gateway.config import SiteConfig, parse_site_config
from microfactory.gateway.runtime import Gateway
from microfactory.gateway.sinks import Sink
from microfactory.gateway.sinks.mes_events.link import MesLink
from microfactory.sim.workshop import ModbusMeterSettings, Workshop, WorkshopSettings
from tests.helpers.waiting import gateway_quiet, wait_for

CONNECT_TIMEOUT_S = 30.0
CONTEXT_TIMEOUT_S = 10.0
SUBSCRIPTION_SETTLE_S = 0.5  # the broker has acknowledged SUBSCRIBE; let it settle the routes


@dataclass(frozen=True)
class RunningWorkshop:
    """The simulated workshop with its clock running, and the gateway reading it."""

    workshop: Workshop
    gateway: Gateway
    site: SiteConfig
    truth_dir: Path

    def mes_link(self) -> MesLink:
        """The gateway's MES link (the demo site config always has it)."""
        link = self.gateway.sink("mes_events")
        assert isinstance(link, MesLink), "the demo site config has the MES link on"
        return link

    async def finish(self) -> None:
        """Stop the simulators (their last instant is published) and wait for the gateway to
        have received everything they sent."""
        await self.workshop.stop()
        await gateway_quiet(self.gateway)


def assembly_own_counter(data: dict[str, Any]) -> None:
    """Read assembly-1's power and energy from its own payload instead of its Modbus meter.

    For a ``configure`` of a run much faster than real time: the meter has no clock and is
    polled in wall time, so at 40x one poll spans many simulated seconds and cannot resolve
    one part (tests/e2e/test_meter_energy.py checks the meter in real time instead).
    """
    data["adapters"] = [a for a in data["adapters"] if a["type"] != "modbus"]
    mqtt = next(a for a in data["adapters"] if a["type"] == "mqtt")
    sub = next(s for s in mqtt["subscriptions"] if s.get("machine") == "assembly-1")
    sub["fields"] += [
        {"path": "power.value", "signal": "power_active", "unit_path": "power.unit"},
        {"path": "energy.value", "signal": "energy_active", "unit_path": "energy.unit"},
    ]


@asynccontextmanager
async def workshop_through_gateway(
    tmp: Path,
    mqtt_url: str,
    *,
    seed: int,
    speed: float,
    data_dir: Path,
    site_name: str,
    power_loss_probability: float | None = None,
    start_ns: int | None = None,
    configure: Callable[[dict[str, Any]], None] | None = None,
    extra_sinks: Callable[[SiteConfig], Sequence[Sink]] | None = None,
    contexts: int = 0,
    stop_timeout_s: float = 30.0,
) -> AsyncIterator[RunningWorkshop]:
    """Run the demo workshop (truth in ``tmp/truth``) through a gateway storing in ``data_dir``.

    ``configure`` edits the demo site config (a dict, as the YAML file gives it) before it is
    parsed, e.g. to add InfluxDB; ``extra_sinks`` adds sinks the config cannot describe;
    ``contexts`` is how many machine contexts the MES link must hold before the clock runs.
    On exit the simulators and then the gateway are stopped, whatever happened.
    """
    overrides: dict[str, Any] = {}
    if power_loss_probability is not None:
        overrides["power_loss_probability"] = power_loss_probability
    truth_dir = tmp / "truth"
    workshop = Workshop(
        WorkshopSettings(
            seed=seed,
            speed=speed,
            mqtt_url=mqtt_url,
            opcua_ports={"mill-1": 0, "laser-1": 0},  # free ports
            modbus_meters=[ModbusMeterSettings(port=0)],
            truth_dir=truth_dir,
            start_ns=start_ns,
            **overrides,
        )
    )
    gateway: Gateway | None = None
    try:
        await workshop.start(paused=True)
        _model, meter_port, _unit = workshop.modbus_meters["assembly-1"]
        data = demo_site_config(mqtt_url, workshop.opcua_endpoints, data_dir, meter_port)
        if configure is not None:
            configure(data)
        site = parse_site_config(data, site_name)
        gateway = Gateway(
            site,
            extra_sinks=list(extra_sinks(site)) if extra_sinks else None,
            clock=workshop.now_ns,  # receive times are instants of the simulated world
        )
        await gateway.start()
        running = RunningWorkshop(workshop, gateway, site, truth_dir)
        await _connected(running, contexts)
        await workshop.resume()
        yield running
    finally:
        await workshop.stop()
        if gateway is not None:
            await gateway.stop(timeout_s=stop_timeout_s)


async def _connected(running: RunningWorkshop, contexts: int) -> None:
    """Wait until every adapter is connected and the MES link holds ``contexts`` contexts."""
    gateway = running.gateway
    names = [a.name for a in running.site.adapters]
    await wait_for(
        lambda: all(gateway.health.connections.get(n) == "connected" for n in names),
        CONNECT_TIMEOUT_S,
        f"every gateway adapter connected ({', '.join(names)})",
    )
    if contexts:
        link = running.mes_link()
        await wait_for(
            lambda: len(link.context) >= contexts,
            CONTEXT_TIMEOUT_S,
            f"{contexts} machine contexts at the gateway's MES link",
        )
    await asyncio.sleep(SUBSCRIPTION_SETTLE_S)
