"""Any text, in every place of a line, survives a real InfluxDB 1.6.7 and VictoriaMetrics.

What is read back is the text itself, or exactly the documented mapping of it
(docs/wire-contract.md, modelled by ``documented_tag`` in test_lineprotocol_escaping.py); a
batch is never refused. One server per module: each example is a point at its own instant.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microfactory.contract import CONTEXT_TAGS
from microfactory.gateway.config import InfluxSettings
from microfactory.gateway.lineprotocol import encode, encode_batch, escape_measurement, escape_tag
from microfactory.gateway.sample import Sample
from microfactory.gateway.sinks import SinkContext
from microfactory.gateway.sinks.influxdb.v1 import InfluxV1Sink
from microfactory.gateway.sinks.influxdb.v2 import InfluxV2Sink
from tests.gateway.test_lineprotocol_escaping import ANY_TEXT, NL, documented_tag
from tests.helpers.markers import starts_server
from tests.helpers.servers import InfluxDB1, VictoriaMetrics

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000_000_000
FIXED_KEYS = {"machine", "quality", "signal", "site", "unit", *CONTEXT_TAGS}
# a tag key named like a field gets a suffix in SELECT *, and ``time`` is renamed: not drawn
KEYS = ANY_TEXT.filter(lambda k: documented_tag(k) not in FIXED_KEYS | {"", "text", "value"})
KEYS = KEYS.filter(lambda k: k not in ("time", "_time"))


@pytest.fixture(scope="module")
@starts_server("InfluxDB 1.x")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    with InfluxDB1(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


@pytest.fixture(scope="module")
@starts_server("VictoriaMetrics")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path_factory.mktemp("vm")) as server:
        yield server


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:  # the server's reason, for the failing example
        raise AssertionError(f"{err.code}: {err.read()!r} for {body!r}") from None


def _write(influx: InfluxDB1, db: str, body: bytes) -> None:
    """Write ``body`` into ``db`` (created if missing); InfluxDB must take every line."""
    create = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'})
    assert _post(f"{influx.url}/query?{create}", b"") == 200
    params = urllib.parse.urlencode({"db": db, "precision": "ns"})
    assert _post(f"{influx.url}/write?{params}", body) == 204


def _stored(v: str) -> str | None:
    """A tag as SELECT returns it: the documented text, or null when it was left out."""
    return documented_tag(v) or None


def _sink_context() -> SinkContext:
    return SinkContext("shop", Path("."), logging.getLogger("test"))


def test_any_text_in_every_tag_key_value_and_text_round_trips(influx: InfluxDB1) -> None:
    written: list[dict[str, Any]] = []

    @settings(max_examples=60, deadline=None)
    @given(
        context=st.fixed_dictionaries({k: ANY_TEXT for k in CONTEXT_TAGS}),
        signal=ANY_TEXT.filter(lambda s: documented_tag(s) != ""),
        key=KEYS,
        text=ANY_TEXT,
    )
    def one(context: dict[str, str], signal: str, key: str, text: str) -> None:
        ts = T0 + len(written)
        sample = Sample("mill-1", signal, text, "", ts, tags={**context, key: "k"})
        _write(influx, "lp", encode_batch([sample], "shop"))
        rows = influx.rows(f'SELECT * FROM "telemetry" WHERE time = {ts}', "lp")
        assert len(rows) == 1, rows
        row = rows[0]
        assert row["text"] == "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
        for k, v in context.items():
            assert row[k] == _stored(v), (k, v)
        assert row["signal"] == documented_tag(signal)
        assert row[documented_tag(key)] == "k"
        assert row["machine"] == "mill-1" and row["site"] == "shop"
        written.append({"context": context, "key": key})

    one()
    assert len(written) >= 50  # the property really ran (filters reject few examples)
    for k in CONTEXT_TAGS:
        (series,) = influx.query(f'SHOW TAG VALUES FROM "telemetry" WITH KEY = "{k}"', "lp")
        shown = {v for _, v in series["values"]}
        expected = {documented_tag(w["context"][k]) for w in written} - {""}
        assert shown == expected
    (series,) = influx.query('SHOW TAG KEYS FROM "telemetry"', "lp")
    keys = {k for (k,) in series["values"]}
    expected_keys = {documented_tag(w["key"]) for w in written}
    assert keys - FIXED_KEYS == expected_keys
    assert keys >= {"machine", "quality", "signal", "site"}


def test_any_text_as_measurement_and_field_key(influx: InfluxDB1) -> None:
    """Our measurement and field keys are constants, but their escaping holds for any text."""
    expected: set[tuple[str, str]] = set()

    # InfluxDB 1.x skips tab and NUL before a measurement and before the first field key,
    # takes a line starting with '#' for a comment and refuses a field 'time': none of that can
    # be escaped, and none of it touches our constant names
    names = ANY_TEXT.filter(lambda s: documented_tag(s) != "" and s[0] not in "#\t\x00")

    @settings(max_examples=40, deadline=None)
    @given(measurement=names, field=names.filter(lambda s: s != "time"))
    def one(measurement: str, field: str) -> None:
        line = f"{escape_measurement(measurement)} {escape_tag(field)}=1.0 {T0}"
        _write(influx, "names", line.encode())
        # the measurement rule is the tag rule, except that '=' needs no backslash
        expected.add((documented_tag(measurement), documented_tag(field)))

    one()
    assert len(expected) >= 30
    shown = {
        (s["name"], key) for s in influx.query("SHOW FIELD KEYS", "names") for key, _ in s["values"]
    }
    assert shown == expected


def test_batch_name_with_backslash_quotes_newline_emoji_is_delivered(influx: InfluxDB1) -> None:
    """The finding of issue 12: such a batch name made InfluxDB refuse the whole batch."""
    batch = 'Lot "7"\nGrün 😀 C:\\jobs\\'
    sink = InfluxV1Sink(InfluxSettings(api="v1", url=influx.url, database="sink"), _sink_context())
    samples = [
        Sample("mill-1", "power_active", 1500.0, "W", T0, tags={"batch": batch}),
        Sample("mill-1", "program", 'O1000 "main"\nM30 \\', "", T0, tags={"batch": batch}),
    ]

    async def deliver() -> None:
        await sink.open()
        try:
            await sink.ensure_database()
            await sink.write(samples)  # raises SinkError on a refusal (-> quarantine)
        finally:
            await sink.close()

    asyncio.run(deliver())
    rows = influx.rows('SELECT "value", "text", "batch" FROM "telemetry"', "sink")
    stored = f'Lot "7"{NL}Grün 😀 C:\\jobs\uff3c'
    assert sorted((r["value"], r["text"], r["batch"]) for r in rows if r["value"] is not None) == [
        (1500.0, None, stored)
    ]
    assert [(r["text"], r["batch"]) for r in rows if r["text"] is not None] == [
        ('O1000 "main"\nM30 \\', stored)
    ]


def _labels(vm: VictoriaMetrics, match: str) -> list[dict[str, str]]:
    return [r["metric"] for r in vm.export(match)]


def test_any_tag_text_round_trips_through_victoriametrics(vm: VictoriaMetrics) -> None:
    """The v2 sink (influxdb-client sending our lines) against VictoriaMetrics' /api/v2/write."""
    sink = InfluxV2Sink(
        InfluxSettings(api="v2", url=vm.url, org="o", bucket="b", token="t"), _sink_context()
    )
    written: list[dict[str, str]] = []

    @settings(max_examples=40, deadline=None)
    @given(context=st.fixed_dictionaries({k: ANY_TEXT for k in CONTEXT_TAGS}))
    def one(context: dict[str, str]) -> None:
        n = len(written)
        written.append(context)
        sample = Sample(f"m{n}", "power_active", float(n), "W", T0, tags=context)

        async def deliver() -> None:
            await sink.open()
            try:
                await sink.write([sample])
            finally:
                await sink.close()

        asyncio.run(deliver())

    one()
    assert len(written) >= 30
    got = {m["machine"]: m for m in _labels(vm, '{__name__="telemetry_value"}')}
    assert len(got) == len(written)
    for n, context in enumerate(written):
        labels = got[f"m{n}"]
        expected = {k: documented_tag(v) for k, v in context.items() if documented_tag(v)}
        assert {k: v for k, v in labels.items() if k in CONTEXT_TAGS} == expected, context


def test_text_cannot_forge_points_in_victoriametrics(vm: VictoriaMetrics) -> None:
    """VictoriaMetrics ends a line at a newline even inside quotes: the v2 sink never sends one."""
    forged = 'N10\nforged,machine=evil,site=shop value=666 1700000000000000000\n"'
    sample = Sample("mill-9", "program", forged, "", T0)
    sink = InfluxV2Sink(
        InfluxSettings(api="v2", url=vm.url, org="o", bucket="b", token="t"), _sink_context()
    )

    async def deliver() -> None:
        await sink.open()
        try:
            await sink.write([sample])
        finally:
            await sink.close()

    asyncio.run(deliver())
    assert _labels(vm, '{machine="evil"}') == []
    # and why: the same text with its newlines kept would have been a second point
    assert _post(f"{vm.url}/write", encode(sample, "shop").encode()) == 204
    assert [m["__name__"] for m in _labels(vm, '{machine="evil"}')] == ["forged_value"]


def test_json_of_the_read_back_is_what_was_written(influx: InfluxDB1) -> None:
    """Control characters and NUL come back from InfluxQL's JSON as the same characters."""
    text = "".join(chr(c) for c in range(32)) + "\x7f"
    _write(
        influx, "ctl", encode_batch([Sample("m", "note", text, "", T0, tags={"batch": text})], "s")
    )
    (row,) = influx.rows('SELECT "text", "batch" FROM "telemetry"', "ctl")
    assert row["text"] == text
    assert row["batch"] == text.replace("\n", NL)
