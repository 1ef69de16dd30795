"""The conformance kit bites: an adapter that breaks a rule fails the check for that rule.

The example adapter of the docs passes the kit (tests/docs/test_example_conformance.py);
here two copies of it are broken on purpose — one ignores the stop timeout, one hands out
float timestamps in milliseconds — and the kit, run in a pytest of its own, must fail them in
exactly the checks that guard those rules and pass the rest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # starts the example's HTTP meter on 127.0.0.1

pytest_plugins = ["pytester"]

BROKEN = """
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from microfactory.gateway.sdk import AdapterPlugin
from microfactory.gateway.testing import AdapterConformance
from tests.docs.test_example_conformance import Meter, example


class SlowToStop(example.HttpJsonAdapter):  # type: ignore[misc, name-defined]
    async def stop(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s + 3)  # ignores its time limit
        await super().stop(timeout_s)


class MillisecondClock(example.HttpJsonAdapter):  # type: ignore[misc, name-defined]
    def __init__(self, config: Any, context: Any) -> None:
        emitter = context.emitter

        class Skewed:
            def __getattr__(self, name: str) -> Any:
                return getattr(emitter, name)

            def submit(self, samples: Any, ack: Any = None) -> None:
                for s in samples:
                    s.ts_ns = (s.ts_ns or 0) / 1e6  # a float in ms, not int ns
                emitter.submit(samples, ack)

        super().__init__(config, dataclasses.replace(context, emitter=Skewed()))


class TestSlowToStop(AdapterConformance):
    plugin = AdapterPlugin(config_model=example.HttpJsonAdapterConfig, load=lambda: SlowToStop)
    machines = frozenset({"meter-2"})

    @pytest.fixture
    def counterpart(self) -> Meter:
        return Meter()


class TestMillisecondClock(AdapterConformance):
    plugin = AdapterPlugin(
        config_model=example.HttpJsonAdapterConfig, load=lambda: MillisecondClock
    )
    machines = frozenset({"meter-2"})

    @pytest.fixture
    def counterpart(self) -> Meter:
        return Meter()
"""


def test_kit_fails_the_broken_rules(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[3]))  # tests.docs
    pytester.makepyfile(test_broken=BROKEN)
    result = pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "-k", "valid_config or stop_within or timestamps"
    )
    out = result.stdout.str()
    failed = {line.split(" ")[1] for line in result.outlines if line.startswith("FAILED ")}
    assert "test_broken.py::TestSlowToStop::test_stop_within_timeout_while_connected" in failed, out
    assert "stop(2.0) took" in out, "the failure should say how long stop took"
    timestamps = "test_samples_have_utc_ns_timestamps_and_declared_machines"
    assert f"test_broken.py::TestMillisecondClock::{timestamps}" in failed, out
    assert "ts_ns must be int UTC ns or None, got" in out
    # what the broken copies still do right passes: the kit does not fail everything
    assert not any("test_valid_config_validates" in f for f in failed), out
    assert result.parseoutcomes().get("passed", 0) == 2, out
