"""``microfactory doctor``: check a live install, one line per check, exit 1 on any FAIL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .doctor_checks import (
    Finding,
    check_broker,
    check_certificate,
    check_clock,
    check_disk,
    check_gateway,
    check_influx_v1,
    check_mes,
    environment,
    read_env_file,
)

if TYPE_CHECKING:
    from microfactory.gateway.config import SiteConfig


def run_checks(
    config: Path, gateway_env: Path | None, mes_env: Path | None, mes_url: str | None
) -> list[Finding]:
    """Every check, in the order a person would look: config, broker, gateway, stores, box."""
    from microfactory.gateway.config import load_site_config
    from microfactory.gateway.errors import ConfigError

    genv = read_env_file(gateway_env)
    menv = read_env_file(mes_env)
    try:
        with environment(genv):  # the config as the service sees it, overrides included
            site = load_site_config(config)
    except ConfigError as err:
        return [Finding("FAIL", "config", str(err).replace("\n", "; "))]
    found = [Finding("OK", "config", f"{config}: site {site.site}, {len(site.machines)} machines")]
    if site.mqtt is not None and (site.adapters or site.mes_link is not None):
        found += check_broker(site.mqtt)
    if site.health.enabled:
        found.append(check_gateway(f"http://{site.health.host}:{site.health.port}/healthz"))
    influx = site.influxdb
    if influx is not None and influx.api == "v1" and influx.database:
        found.append(check_influx_v1(influx.url, influx.database, influx.username, influx.password))
    elif influx is not None:
        found.append(Finding("WARN", "influxdb", "InfluxDB 2.x: the bucket is not checked here"))
    url = mes_url or (
        f"http://{menv.get('MICROFACTORY_MES__HOST', '127.0.0.1')}:"
        f"{menv.get('MICROFACTORY_MES__PORT', '8081')}"
    )
    found += check_mes(url, site.site, menv.get("MICROFACTORY_MES__SITE"))
    found.append(check_disk(Path(site.spool.path).resolve().parent))
    found.append(check_clock())
    found += [check_certificate(name, path) for name, path in certificates(site, menv)]
    return found


def certificates(site: SiteConfig, mes_env: dict[str, str]) -> list[tuple[str, Path]]:
    """(label, path) of each certificate the configs name: the gateway's MQTT TLS files, each
    OPC UA adapter's client certificate, the MES's HTTPS certificate and its MQTT TLS files.
    A certificate the programs make themselves (OPC UA without ``certificate:``) is not listed."""
    certs: list[tuple[str, Path]] = []
    if site.mqtt is not None and site.mqtt.tls is not None:
        for label, path in (("mqtt ca", site.mqtt.tls.ca_file), ("mqtt", site.mqtt.tls.cert_file)):
            if path is not None:
                certs.append((label, path))
    for adapter in site.adapters:
        path = getattr(adapter, "certificate", None)  # OPC UA adapters (DER or PEM)
        if isinstance(path, Path):
            certs.append((f"opcua {adapter.name}", path))
    for label, key in (
        ("mes https", "MICROFACTORY_MES__TLS_CERT"),
        ("mes mqtt ca", "MICROFACTORY_MES__MQTT_TLS__CA_FILE"),
        ("mes mqtt", "MICROFACTORY_MES__MQTT_TLS__CERT_FILE"),
    ):
        if mes_env.get(key):
            certs.append((label, Path(mes_env[key])))
    return certs


def doctor(
    config: Annotated[
        Path, typer.Option("--config", help="the site config the gateway runs")
    ] = Path("/etc/microfactory/site.yaml"),
    gateway_env: Annotated[
        Path | None, typer.Option("--gateway-env", help="the gateway's environment file")
    ] = Path("/etc/microfactory/gateway.env"),
    mes_env: Annotated[
        Path | None, typer.Option("--mes-env", help="the MES's environment file")
    ] = Path("/etc/microfactory/mes.env"),
    mes_url: Annotated[
        str | None, typer.Option("--mes-url", help="the MES (default: from mes.env, port 8081)")
    ] = None,
) -> None:
    """Check a live install: config, broker, gateway health, InfluxDB, the MES and its site
    id, disk, clock, certificates. One line per check; exit 1 when one FAILs."""
    findings = run_checks(config, gateway_env, mes_env, mes_url)
    for finding in findings:
        typer.echo(finding.line())
    failed = sum(f.level == "FAIL" for f in findings)
    warned = sum(f.level == "WARN" for f in findings)
    plural = "" if warned == 1 else "s"
    typer.echo(f"doctor: {len(findings)} checks, {failed} failed, {warned} warning{plural}")
    if failed:
        raise typer.Exit(1)
