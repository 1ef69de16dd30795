"""Backup of a running gateway and MES database, restore on a fresh install: nothing lost.

The gateway collects while InfluxDB is away, so everything it acknowledged waits in the
spool; ``microfactory backup`` copies it while the gateway runs; the box is "replaced" (fresh,
empty directories); ``microfactory restore`` puts the archive back; a gateway started on the
restored data delivers every unsent sample to a real InfluxDB, exactly once, and the MES
database comes back with its users.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from microfactory.cli.backup_archive import Sources, backup, restore
from microfactory.cli.ports import free_port
from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from tests.helpers.gateway import Publisher, both_connected, influx_stats, site_dict
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

PER_MACHINE = 500


def mes_user(db: Path, name: str) -> None:
    """A user in a MES database, made by the real command (migrations included)."""
    env = dict(os.environ, MICROFACTORY_MES__DB_URL=f"sqlite:///{db}")
    done = subprocess.run(
        [sys.executable, "-m", "microfactory", "mes", "create-user", name, "--role", "operator",
         "--password", "a long enough passphrase"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


async def test_restore_on_a_fresh_install_delivers_the_unsent_spool(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
) -> None:
    old = Sources(tmp_path / "old/data", tmp_path / "old/etc", tmp_path / "old/broker")
    for d in (old.data, old.config, old.broker):
        d.mkdir(parents=True)
    (old.config / "site.yaml").write_text("site: faults\n")
    (old.broker / "passwd").write_text("gateway:$7$not-a-real-hash\n")
    mes_user(old.data / "mes.sqlite", "alice")

    away = f"http://127.0.0.1:{free_port()}"  # InfluxDB not there: everything stays spooled
    gw = Gateway(
        parse_site_config(
            site_dict(old.data, big_queue_mosquitto.url, prefix=prefix, influx_url=away), "old"
        )
    )
    await gw.start()
    pub = publisher_factory(big_queue_mosquitto.url, prefix)
    try:
        await both_connected(gw, pub)
        pub.publish(PER_MACHINE)
        produced = len(pub.machines) * PER_MACHINE
        await wait_for(lambda: gw.health.spooled == produced, 60, "all spooled")
        archive = await asyncio.to_thread(backup, old, tmp_path / "backups", 3)  # running
    finally:
        await gw.stop(timeout_s=2)
    assert gw.health.delivered["influxdb"] == 0

    fresh = Sources(tmp_path / "new/data", tmp_path / "new/etc", tmp_path / "new/broker")
    restore(archive, fresh, force=False)
    with sqlite3.connect(fresh.data / "mes.sqlite") as db:
        users = [r[0] for r in db.execute("SELECT username FROM users")]
    assert users == ["alice"]
    assert (fresh.broker / "passwd").read_text().startswith("gateway:")

    new = site_dict(fresh.data, big_queue_mosquitto.url, prefix=prefix, influx_url=influxdb1.url)
    new["mqtt"]["client_id"] = f"gw2-{prefix}"  # a new box: its own broker session
    gw2 = Gateway(parse_site_config(new, "new"))
    await gw2.start()
    try:
        await wait_for(lambda: gw2.spool.depth("influxdb") == 0, 60, "restored spool delivered")
    finally:
        await gw2.stop(timeout_s=5)
    assert gw2.health.delivered["influxdb"] == produced
    series = await asyncio.to_thread(influx_stats, influxdb1, "faults")
    assert sum(s.count for s in series.values()) == produced
    assert {m: s.count for m, s in series.items()} == dict.fromkeys(pub.machines, PER_MACHINE)
