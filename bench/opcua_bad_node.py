"""Sessions, gaps and samples per node of one OPC UA adapter with a bad and an unknown node.

Against the node-opcua test server (an implementation we did not write; installed by
``bash deploy/setup.sh --test``): Power and Temperature are good, BadNode always answers
BadSensorFailure without a value, NoSuchNode does not exist. Each mode (poll every 200 ms,
subscribe) runs ``--duration`` seconds; a healthy adapter keeps one session and no gap.

    .venv/bin/python bench/opcua_bad_node.py --duration 20

The same script measures an older checkout: ``PYTHONPATH=<checkout> python bench/...``
(configs without the security fields are built when the adapter does not know them).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import ModuleType

from microfactory.gateway.adapters.opcua import plugin
from microfactory.gateway.sdk import AdapterContext
from microfactory.gateway.testing import RecordingEmitter


def _node_opcua_helper() -> ModuleType:
    """This checkout's tests/helpers/node_opcua.py, even when PYTHONPATH names an older one."""
    path = Path(__file__).resolve().parents[1] / "tests" / "helpers" / "node_opcua.py"
    spec = importlib.util.spec_from_file_location("bench_node_opcua", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


helper = _node_opcua_helper()
NodeOpcuaServer, nsu = helper.NodeOpcuaServer, helper.nsu

NODES = [
    {"node": nsu("Machine.Power"), "signal": "power_active", "unit": "kW"},
    {"node": nsu("Machine.BadNode"), "signal": "temperature"},
    {"node": nsu("Machine.NoSuchNode"), "signal": "torque"},
    {"node": nsu("Machine.Temperature"), "signal": "temperature_bed"},
]


async def run(endpoint: str, mode: str, seconds: float) -> None:
    data: dict[str, object] = {
        "type": "opcua",
        "name": "cell",
        "machine": "cell-1",
        "endpoint": endpoint,
        "timeout_s": 2,
        "watchdog_s": 0.5,
        "reconnect_max_s": 1,
        "nodes": [{**n, "mode": mode, "poll_interval_ms": 200} for n in NODES],
    }
    if "allow_insecure" in plugin.config_model.model_fields:
        data |= {"security_policy": "None", "security_mode": "None", "allow_insecure": True}
    cfg = plugin.config_model.model_validate(data)
    emitter = RecordingEmitter(adapter="cell", machines={"cell-1"})
    context = AdapterContext(
        site="bench",
        machines=frozenset({"cell-1"}),
        emitter=emitter,
        logger=logging.getLogger("cell"),
        state_dir=Path(tempfile.mkdtemp(prefix="bench-opcua-bad-")),
    )
    adapter = plugin.load()(cfg, context)
    await adapter.start()
    await asyncio.sleep(seconds)
    await adapter.stop(5)
    supervisor = getattr(adapter, "supervisor")  # noqa: B009 - both old and new adapters have one
    per_node = Counter(f"{s.signal}/{s.quality}" for s in emitter.samples)
    print(
        f"{mode:9s}: sessions {supervisor.sessions}, failures {supervisor.failures}, "
        f"gaps {len(emitter.gaps)}, samples {dict(sorted(per_node.items()))}, "
        f"refused by the pipeline {len(emitter.refused)}",
        flush=True,
    )


async def main(seconds: float) -> None:
    with NodeOpcuaServer(
        Path(tempfile.mkdtemp(prefix="bench-node-opcua-")), update_ms=100
    ) as server:
        for mode in ("poll", "subscribe"):
            await run(server.endpoint, mode, seconds)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=20)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(args.duration))
