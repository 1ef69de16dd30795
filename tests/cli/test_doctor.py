"""``microfactory doctor`` against a live install: a broker from the generated config, a real
gateway, InfluxDB 1.x and the MES; then the faults it must name (an open broker, a missing
database, the MES on another site id, certificates that expire)."""

from __future__ import annotations

import asyncio
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
from microfactory.mes.api.app import create_app
from microfactory.mes.server import RunningServer, serve_in_loop
from microfactory.mes.settings import MesSettings
from tests.helpers.servers import InfluxDB1, Mosquitto, MosquittoConfigured
from tests.helpers.waiting import wait_for
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
def install(tmp_path: Path, influxdb1: InfluxDB1) -> Iterator[tuple[Path, Path, Path]]:
    """A live install's files: the generated broker running, the site on it with InfluxDB."""
    out, site_file, port = generate(tmp_path)
    data = yaml.safe_load(site_file.read_text())
    data["influxdb"] = {"api": "v1", "url": influxdb1.url, "database": "doctor", "timeout_s": 2}
    data["health"] = {"port": free_port()}
    site_file.write_text(yaml.safe_dump(data))
    with MosquittoConfigured(tmp_path / "mosquitto", out / "mosquitto.conf", port):
        yield site_file, out / "gateway.env", out / "mes.env"


async def _bridged_mes(mes_env: Path, mqtt_url: str, tmp: Path) -> RunningServer:
    """The MES with its broker link up, logged in with the generated mes.env (as installed)."""
    with environment(read_env_file(mes_env)):
        settings = MesSettings(db_url=f"sqlite:///{tmp / 'mes.sqlite'}", mqtt_url=mqtt_url)
    assert settings.site == SITE
    app = create_app(settings)
    server = await serve_in_loop(app, "127.0.0.1", free_port())
    status = app.state.runtime.mqtt_status
    await wait_for(lambda: status() == "connected", 15, "the MES's broker link")
    return server


async def test_doctor_on_a_live_install_then_each_fault_named(
    install: tuple[Path, Path, Path], tmp_path: Path, mosquitto: Mosquitto
) -> None:
    site_file, gateway_env, mes_env = install
    with environment(read_env_file(gateway_env)):
        site = load_site_config(site_file)
    assert site.mqtt is not None
    gw = Gateway(site)
    await gw.start()
    mes = await _bridged_mes(mes_env, site.mqtt.url, tmp_path)
    try:
        await wait_for(lambda: gw.health.connections.get("plugs") == "connected", 15, "adapter")
        await wait_for(lambda: gw.health.sink_errors == {}, 15, "sinks up")
        args = ["--config", str(site_file), "--gateway-env", str(gateway_env)]
        args += ["--mes-env", str(mes_env), "--mes-url", mes.url]
        code, output = await asyncio.to_thread(doctor, *args)
        print(output)  # the all-OK case, for the record (pytest -s)
        found = lines(output)
        assert code == 0, output
        checks = ("config", "broker", "broker security", "gateway", "influxdb", "mes", "disk")
        for check in checks:
            assert found.get(check) == ["OK"], output
        assert set(found) == {*checks, "clock"}, output  # no other line, no certificate named
        assert found["clock"] in (["OK"], ["WARN"]), output  # WARN: a box without NTP
        assert "anonymous clients are refused" in output
        assert "database doctor exists" in output
        assert "broker link connected" in output
        password = read_env_file(gateway_env)["MICROFACTORY_MQTT__PASSWORD"]
        assert password not in output  # no secret printed

        # the MES on another site id: named, with both ids and both settings
        other = tmp_path / "mes-other.env"
        other.write_text("MICROFACTORY_MES__SITE=workshop\n")
        code, output = await asyncio.to_thread(
            doctor, *args[:4], "--mes-env", str(other), "--mes-url", mes.url
        )
        assert code == 1 and lines(output)["site id"] == ["FAIL"], output
        assert f"site {SITE!r} but mes.env says MICROFACTORY_MES__SITE='workshop'" in output

        # the gateway on another site than the MES answers: both ids and both settings named
        data = yaml.safe_load(site_file.read_text())
        data["site"] = "acme-north"
        renamed = tmp_path / "acme-north.yaml"
        renamed.write_text(yaml.safe_dump(data))
        code, output = await asyncio.to_thread(
            doctor,
            "--config",
            str(renamed),
            *args[2:4],
            "--mes-env",
            str(tmp_path / "none.env"),
            "--mes-url",
            mes.url,
        )
        assert code == 1 and lines(output)["site id"] == ["FAIL"], output
        assert f"serves site {SITE!r}, the gateway site 'acme-north'" in output, output
        assert "`site:` in site.yaml or MICROFACTORY_MES__SITE in mes.env" in output
    finally:
        await mes.stop()
        await gw.stop(timeout_s=2)

    # the gateway stopped: its health check fails, by name
    code, output = await asyncio.to_thread(doctor, *args)
    assert code == 1 and lines(output)["gateway"] == ["FAIL"], output

    # an open broker, a database that does not exist, an OPC UA client certificate expired
    # (DER, as OPC UA keeps them) and the MES's HTTPS certificate expiring in 10 days
    now = dt.datetime.now(dt.UTC)
    data = yaml.safe_load(site_file.read_text())
    data["mqtt"]["url"] = mosquitto.url
    data["influxdb"]["database"] = "never_created"
    der = _certificate(
        tmp_path / "opcua.der", now - dt.timedelta(days=2), serialization.Encoding.DER
    )
    data["adapters"].append(
        {
            **{"type": "opcua", "name": "mill", "machine": "mill-1"},
            **{"endpoint": "opc.tcp://127.0.0.1:4840/", "namespace_uri": "urn:mill"},
            **{"certificate": str(der), "private_key": str(tmp_path / "opcua.key")},
            "nodes": [{"node": "s=ActivePower", "signal": "power_active", "unit": "W"}],
        }
    )
    open_site = tmp_path / "open.yaml"
    open_site.write_text(yaml.safe_dump(data))
    pem = _certificate(tmp_path / "mes.pem", now + dt.timedelta(days=10))
    faulty_env = tmp_path / "mes-tls.env"
    faulty_env.write_text(f"{mes_env.read_text()}MICROFACTORY_MES__TLS_CERT={pem}\n")
    code, output = await asyncio.to_thread(
        doctor, "--config", str(open_site), "--gateway-env", str(gateway_env),
        "--mes-env", str(faulty_env), "--mes-url", mes.url,
    )  # fmt: skip
    assert code == 1, output
    found = lines(output)
    assert "FAIL broker security: the broker accepts anonymous clients" in output
    assert "FAIL influxdb: database never_created does not exist" in output
    assert found["certificate opcua mill"] == ["FAIL"] and "expired on" in output, output
    assert found["certificate mes https"] == ["WARN"] and "(9 days)" in output, output
    assert found["mes"] == ["FAIL"], output  # stopped above: named, not skipped


def _certificate(
    path: Path,
    not_after: dt.datetime,
    encoding: serialization.Encoding = serialization.Encoding.PEM,
) -> Path:
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
    path.write_bytes(cert.public_bytes(encoding))
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
