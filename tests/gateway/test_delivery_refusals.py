"""A sink that says "not now" (429 / 503 + Retry-After) or "never" (a poison point).

The overloaded server is a real HTTP endpoint in front of the real InfluxDB 1.x: it refuses
as scripted, then forwards, so what finally lands is checked in InfluxDB itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path

import orjson
import pytest

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from tests.helpers.gateway import (
    ORIGIN_NS,
    Publisher,
    both_connected,
    expected_stats,
    influx_stats,
    site_dict,
)
from tests.helpers.overloaded_influx import OverloadedInflux, Refusal
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults


async def _connected(gw: Gateway, pub: Publisher) -> None:
    await both_connected(gw, pub)
    await asyncio.sleep(0.3)  # the subscription settles on the broker


async def test_retry_after_is_honoured_and_nothing_is_lost(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
) -> None:
    script = [Refusal(503, "2"), Refusal(429, "1"), Refusal(503, "date+1"), Refusal(429, "0")]
    with OverloadedInflux(influxdb1.url, script) as server:
        data = site_dict(tmp_path, mosquitto.url, prefix=prefix, influx_url=server.url)
        gw = Gateway(parse_site_config(data, "faults"))
        await gw.start()
        pub = publisher_factory(mosquitto.url, prefix)
        try:
            await _connected(gw, pub)
            pub.publish(750)
            await asyncio.to_thread(pub.wait_all_acked)
            await wait_for(lambda: gw.health.spooled == 3000, 30, "3000 samples spooled")
            await wait_for(lambda: gw.spool.depth("influxdb") == 0, 60, "everything delivered")
        finally:
            await gw.stop(timeout_s=10)
        writes = server.writes()

    refused = [w for w in writes if w.status in (429, 503)]
    assert [w.status for w in refused] == [503, 429, 503, 429], writes
    for i, w in enumerate(writes[:-1]):
        if w.status not in (429, 503):
            continue
        assert w.retry_after is not None
        nxt = writes[i + 1]
        if w.retry_after.isdigit():
            not_before = w.at_wall + int(w.retry_after)
        else:
            not_before = parsedate_to_datetime(w.retry_after).timestamp()
        assert nxt.at_wall >= not_before, (
            f"retried {not_before - nxt.at_wall:.3f} s before Retry-After {w.retry_after!r}"
        )
    assert gw.health.retried["influxdb"] == 4
    assert gw.health.delivered["influxdb"] == 3000
    stats = await asyncio.to_thread(influx_stats, influxdb1, "faults")
    assert {m: s for m, s in stats.items()} == {m: expected_stats(750) for m in pub.machines}


def _influx_write(influx: InfluxDB1, db: str, line: str) -> None:
    q = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'})
    urllib.request.urlopen(f"{influx.url}/query?{q}", data=b"", timeout=10).close()
    params = urllib.parse.urlencode({"db": db, "precision": "ns"})
    # InfluxDB 1.6 may answer 404 "database not found" for a moment after CREATE DATABASE
    deadline = time.monotonic() + 10
    while True:
        req = urllib.request.Request(f"{influx.url}/write?{params}", data=line.encode())
        try:
            urllib.request.urlopen(req, timeout=10).close()
            return
        except urllib.error.HTTPError as err:
            if err.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


async def test_poison_point_is_quarantined_and_the_rest_written(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
) -> None:
    # Someone wrote the text field as a number into this shard: from now on InfluxDB refuses
    # every text point of the measurement there ("field type conflict"), for good.
    await asyncio.to_thread(
        _influx_write,
        influxdb1,
        "faults",
        f"telemetry,machine=m1,signal=program,site=faults text=1.0 {ORIGIN_NS - 10**9}",
    )
    with OverloadedInflux(influxdb1.url) as server:
        server.hold.set()  # hold writes back so the poison travels inside a big batch
        data = site_dict(tmp_path, mosquitto.url, prefix=prefix, influx_url=server.url)
        gw = Gateway(parse_site_config(data, "faults"))
        await gw.start()
        pub = publisher_factory(mosquitto.url, prefix)
        try:
            await _connected(gw, pub)
            pub.publish(250)
            payload = orjson.dumps({"ts": ORIGIN_NS + 5, "value": "P-100"})
            pub.publish_raw(f"{prefix}/m2/program", payload)
            pub.publish(250)
            await wait_for(lambda: gw.health.spooled == 2001, 30, "2001 samples spooled")
            server.hold.clear()
            await wait_for(lambda: gw.spool.depth("influxdb") == 0, 60, "everything settled")
            spool_stats = await gw.spool.stats()
        finally:
            await gw.stop(timeout_s=10)

    stats = await asyncio.to_thread(influx_stats, influxdb1, "faults")
    assert stats == {m: expected_stats(500) for m in pub.machines}
    assert gw.health.delivered["influxdb"] == 2000
    assert gw.health.quarantined["influxdb"] == 1
    assert spool_stats.delivered["influxdb"] == 2000
    assert spool_stats.quarantined["influxdb"] == 1
    with sqlite3.connect(tmp_path / "spool.sqlite") as db:
        rows = db.execute("SELECT sink, reason, line FROM quarantine").fetchall()
    assert len(rows) == 1, rows
    sink, reason, line = rows[0]
    assert sink == "influxdb"
    assert "field type conflict" in reason, reason
    assert 'text="P-100"' in line and "machine=m2" in line, line
