"""Line protocol: whatever text a machine sends survives the trip through a real InfluxDB."""

from __future__ import annotations

import asyncio
import logging
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microfactory.gateway.config import InfluxSettings
from microfactory.gateway.lineprotocol import encode
from microfactory.gateway.sample import Sample
from microfactory.gateway.sinks import SinkContext
from microfactory.gateway.sinks.influxdb.v1 import InfluxV1Sink
from tests.helpers.servers import InfluxDB1

# what shows up in programs, job names and operator-entered context
_TEXT = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_categories=("Cs", "Cc"),
        include_characters=' ,="\\\n\t',
    ),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() == s and not s.endswith("\\"))


def test_encode_shape() -> None:
    s = Sample("mill-1", "power_active", 1500.0, "W", 1_700_000_000_000_000_000)
    s.tags["batch"] = "B 7,a=b"
    assert encode(s, "shop") == (
        "telemetry,batch=B\\ 7\\,a\\=b,machine=mill-1,quality=good,signal=power_active,"
        "site=shop,unit=W value=1500.0 1700000000000000000"
    )


def test_text_field_escaping() -> None:
    s = Sample("mill-1", "program", 'say "hi"\\ now', "", 1)
    assert encode(s, "shop").endswith(' text="say \\"hi\\"\\\\ now" 1')


@pytest.mark.integration
def test_round_trip_through_influxdb(influxdb1: InfluxDB1) -> None:
    """Generated tag and text values written by the real sink, read back unchanged."""
    sink = InfluxV1Sink(
        InfluxSettings(api="v1", url=influxdb1.url, database="lp"),
        SinkContext("shop", Path("."), logging.getLogger("test")),
    )
    written: list[tuple[str, str, int]] = []

    async def write(samples: list[Sample]) -> None:
        await sink.open()
        await sink.ensure_database()
        await sink.write(samples)
        await sink.close()

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(program=_TEXT, batch=_TEXT.filter(lambda s: "\n" not in s and "\t" not in s))
    def one(program: str, batch: str) -> None:
        ts = 1_700_000_000_000_000_000 + len(written)
        sample = Sample("mill-1", "program", program, "", ts, tags={"batch": batch})
        asyncio.run(write([sample]))
        written.append((program, batch, ts))

    one()
    rows = influxdb1.rows('SELECT "text", "batch" FROM "telemetry"', "lp")
    stored = {(r["text"], r["batch"], int(r["time"])) for r in rows}
    assert stored == set(written)


@pytest.mark.integration
def test_numbers_round_trip(influxdb1: InfluxDB1) -> None:
    values = [0.0, -0.0, 1e-300, 1.7976931348623157e308, 123456789.123456789, -42.5, 3.0]
    samples = [
        Sample("m", "power_active", v, "W", 1_700_000_000_000_000_000 + i)
        for i, v in enumerate(values)
    ]
    sink = InfluxV1Sink(
        InfluxSettings(api="v1", url=influxdb1.url, database="num"),
        SinkContext("shop", Path("."), logging.getLogger("test")),
    )

    async def go() -> None:
        await sink.open()
        await sink.ensure_database()
        await sink.write(samples)
        await sink.close()

    asyncio.run(go())
    rows = influxdb1.rows('SELECT "value" FROM "telemetry"', "num")
    assert [r["value"] for r in sorted(rows, key=lambda r: r["time"])] == values


def test_machine_ids_allowed_by_config_need_no_escaping() -> None:
    allowed = set(string.ascii_lowercase + string.digits + "_.-")
    assert not allowed & set(',= "\\\n')


@pytest.mark.integration
def test_multiline_text_round_trips(influxdb1: InfluxDB1) -> None:
    """A program listing or operator note with newlines is stored as sent, not as '\\n'."""
    text = 'N10 G0 X0\nN20 G1 X10 "fast"\r\nN30 M30 \\ end'
    sink = InfluxV1Sink(
        InfluxSettings(api="v1", url=influxdb1.url, database="ml"),
        SinkContext("shop", Path("."), logging.getLogger("test")),
    )

    async def go() -> None:
        await sink.open()
        await sink.ensure_database()
        await sink.write([Sample("mill-1", "program", text, "", 1_700_000_000_000_000_000)])
        await sink.close()

    asyncio.run(go())
    assert [r["text"] for r in influxdb1.rows('SELECT "text" FROM "telemetry"', "ml")] == [text]
