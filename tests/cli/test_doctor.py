"""``microfactory doctor`` against a live install: a broker from the generated config, a real
gateway, InfluxDB 1.x and the MES; then the faults it must name (an open broker, a missing
database, the MES on another site id, certificates that expire)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from microfactory.cli.doctor_checks import check_certificate, environment, read_env_file
from microfactory.cli.main import app
from microfactory.cli.ports import free_port
from microfactory.gateway.config import load_site_config
from microfactory.gateway.runtime import Gateway
from microfactory.mes.settings import MesSettings
from tests.helpers.servers import InfluxDB1, Mosquitto, MosquittoConfigured
from tests.helpers.waiting import wait_for
from tests.mes.live import LiveMes
from tests.security.test_broker_config import SITE, generate

pytestmark = pytest.mark.integration


def doctor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["doctor", *args])
    return result.exit_code, result.output


def lines(output: str) -> dict[str, list[str]]:
    """Check name -> the levels it got."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        level, _, rest = line.partition(" ")
        if level in ("OK", "WARN", "FAIL"):
            found.setdefault(rest.strip().partition(":")[0], []).append(level)
    return found


@pytest.fixture
def install(tmp_path: Path, influxdb1: InfluxDB1) -> Iterator[tuple[Path, Path, Path, LiveMes]]:
    """A live install: generated broker, the gateway on it, InfluxDB, the MES on the same site."""
    out, site_file, port = generate(tmp_path)
    data = yaml.safe_load(site_file.read_text())
    data["influxdb"] = {"api": "v1", "url": influxdb1.url, "database": "doctor", "timeout_s": 2}
    data["health"] = {"port": free_port()}
    site_file.write_text(yaml.safe_dump(data))
    mes_env = tmp_path / "mes.env"
    mes_env.write_text(f"MICROFACTORY_MES__SITE={SITE}\n")
    with MosquittoConfigured(tmp_path / "mosquitto", out / "mosquitto.conf", port):
        mes = LiveMes(MesSettings(db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}", site=SITE))
        yield site_file, out / "gateway.env", mes_env, mes
        mes.close()


async def test_doctor_on_a_live_install_then_each_fault_named(
    install: tuple[Path, Path, Path, LiveMes], tmp_path: Path, mosquitto: Mosquitto
) -> None:
    import asyncio

    site_file, gateway_env, mes_env, mes = install
    with environment(read_env_file(gateway_env)):
        gw = Gateway(load_site_config(site_file))
    await gw.start()
    try:
        await wait_for(lambda: gw.health.connections.get("plugs") == "connected", 15, "adapter")
        await wait_for(lambda: gw.health.sink_errors == {}, 15, "sinks up")
        args = ["--config", str(site_file), "--gateway-env", str(gateway_env)]
        args += ["--mes-env", str(mes_env), "--mes-url", mes.url]
        code, output = await asyncio.to_thread(doctor, *args)
        print(output)  # the all-OK case, for the record (pytest -s)
        found = lines(output)
        assert code == 0, output
        for check in ("config", "broker", "broker security", "gateway", "influxdb", "disk"):
            assert found.get(check) and set(found[check]) == {"OK"}, output
        assert "anonymous clients are refused" in output
        assert "database doctor exists" in output
        assert found["mes"] in (["OK"], ["WARN"]), output  # WARN: this MES runs no broker link
        password = read_env_file(gateway_env)["MICROFACTORY_MQTT__PASSWORD"]
        assert password not in output  # no secret printed

        # the MES on another site id: named, with both ids
        other = tmp_path / "mes-other.env"
        other.write_text("MICROFACTORY_MES__SITE=workshop\n")
        code, output = await asyncio.to_thread(
            doctor, *args[:4], "--mes-env", str(other), "--mes-url", mes.url
        )
        assert code == 1 and "FAIL site id" in output, output
        assert f"'{SITE}'" in output and "'workshop'" in output
    finally:
        await gw.stop(timeout_s=2)

    # the gateway stopped: its health check fails, by name
    code, output = await asyncio.to_thread(doctor, *args)
    assert code == 1 and lines(output)["gateway"] == ["FAIL"], output

    # an open broker and a database that does not exist
    data = yaml.safe_load(site_file.read_text())
    data["mqtt"]["url"] = mosquitto.url
    data["influxdb"]["database"] = "never_created"
    open_site = tmp_path / "open.yaml"
    open_site.write_text(yaml.safe_dump(data))
    code, output = await asyncio.to_thread(
        doctor, "--config", str(open_site), "--gateway-env", str(gateway_env), *args[4:]
    )
    assert code == 1, output
    assert "FAIL broker security: the broker accepts anonymous clients" in output
    assert "FAIL influxdb: database never_created does not exist" in output


def _certificate(path: Path, not_after: dt.datetime) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker.workshop")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=400))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_certificates_expired_soon_and_fine(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = check_certificate("mqtt", _certificate(tmp_path / "a.pem", now - dt.timedelta(1)))
    soon = check_certificate("mqtt", _certificate(tmp_path / "b.pem", now + dt.timedelta(10)))
    fine = check_certificate("mqtt", _certificate(tmp_path / "c.pem", now + dt.timedelta(300)))
    assert (expired.level, soon.level, fine.level) == ("FAIL", "WARN", "OK")
    assert "expired on" in expired.text and "days" in soon.text
    broken = tmp_path / "d.pem"
    broken.write_text("not a certificate")
    assert check_certificate("mqtt", broken).level == "FAIL"
