"""Site config: every bad config gives the exact message that names file, field and problem."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from microfactory.gateway.config import load_site_config, parse_site_config
from microfactory.gateway.errors import ConfigError

BASE_YAML = """
site: shop
machines:
  - {id: mill-1, kind: cnc_mill}
  - {id: printer-1, kind: printer_3d}
adapters:
  - type: opcua
    name: mill
    machine: mill-1
    endpoint: opc.tcp://127.0.0.1:4840
    namespace_uri: urn:x
    nodes:
      - {node: s=State, signal: state}
      - {node: s=ActivePower, signal: power_active, unit: kW}
  - type: mqtt
    name: shop-mqtt
    subscriptions:
      - topic: shop/printer-1/telemetry
        machine: printer-1
        fields:
          - {path: power_w, signal: power_active, unit: W}
"""

Mutation = Callable[[dict[str, Any]], object]


def _opcua(d: dict[str, Any]) -> dict[str, Any]:
    adapter: dict[str, Any] = d["adapters"][0]
    return adapter


def _sub(d: dict[str, Any]) -> dict[str, Any]:
    sub: dict[str, Any] = d["adapters"][1]["subscriptions"][0]
    return sub


BAD_CONFIGS: list[tuple[str, Mutation, str]] = [
    ("no machines", lambda d: d.pop("machines"), "machines: required field is missing"),
    (
        "machine id with a space",
        lambda d: d["machines"][0].update(id="Mill 1"),
        "machines[0].id: machine id 'Mill 1' must be lowercase letters, digits, '-', '_' or '.' "
        "(it becomes an InfluxDB tag and an MQTT topic level)",
    ),
    (
        "duplicate machine",
        lambda d: d["machines"].append({"id": "mill-1"}),
        "machines: duplicate machine id mill-1",
    ),
    (
        "unknown adapter type",
        lambda d: _opcua(d).update(type="profinet"),
        "adapters[0].type: unknown adapter type 'profinet' (expected one of: 'modbus', 'mqtt', "
        "'opcua', 'sparkplug')",
    ),
    (
        "adapter for an undeclared machine",
        lambda d: _opcua(d).update(machine="mill-9"),
        "adapters[0] (mill): machine 'mill-9' is not declared under 'machines' "
        "(declared: mill-1, printer-1)",
    ),
    (
        "OPC UA namespace by index",
        lambda d: _opcua(d)["nodes"][0].update(node="ns=2;s=State"),
        "adapters[0].nodes[0].node: node 'ns=2;s=State' names its namespace by index; use "
        "'nsu=<namespace URI>;...' or set namespace_uri (indexes may change when the server "
        "restarts)",
    ),
    (
        "OPC UA endpoint not opc.tcp",
        lambda d: _opcua(d).update(endpoint="http://plc"),
        "adapters[0].endpoint: expected opc.tcp://HOST:PORT[/path], got 'http://plc'",
    ),
    (
        "OPC UA without security, not allowed",
        lambda d: _opcua(d).update(security_policy="None", security_mode="None"),
        "adapters[0]: security_policy None sends values (and any password) in clear text; "
        "choose Basic256Sha256 (the default) or write allow_insecure: true",
    ),
    (
        "OPC UA policy and mode that do not go together",
        lambda d: _opcua(d).update(security_mode="None", allow_insecure=True),
        "adapters[0]: security_policy 'Basic256Sha256' with security_mode 'None': either "
        "both are None or neither is",
    ),
    (
        "OPC UA unknown security policy",
        lambda d: _opcua(d).update(security_policy="Basic128Rsa15"),
        "adapters[0].security_policy: Input should be 'None', 'Basic256Sha256', "
        "'Aes128Sha256RsaOaep' or 'Aes256Sha256RsaPss' (got 'Basic128Rsa15')",
    ),
    (
        "OPC UA certificate without its key",
        lambda d: _opcua(d).update(certificate="pki/cert.der"),
        "adapters[0]: certificate and private_key go together: give both or neither",
    ),
    (
        "OPC UA password from an unset variable",
        lambda d: _opcua(d).update(username="op", password_env="MICROFACTORY_TEST_UNSET_PW"),
        "adapters[0]: password_env names 'MICROFACTORY_TEST_UNSET_PW', which is not set in "
        "the environment",
    ),
    (
        "OPC UA password without user",
        lambda d: _opcua(d).update(password="s3cret"),
        "adapters[0]: a password without a username: set username too",
    ),
    (
        "OPC UA same node mapped twice",
        lambda d: _opcua(d)["nodes"].append(
            {"node": "nsu=urn:x;s=ActivePower", "signal": "power_l1", "unit": "kW"}
        ),
        "adapters[0].nodes: nodes[2]: node 'nsu=urn:x;s=ActivePower' is already mapped by "
        "nodes[1]; one node feeds one mapping",
    ),
    (
        "OPC UA array node with both index and elements",
        lambda d: _opcua(d)["nodes"].append(
            {"node": "s=Phases", "index": 0, "elements": ["voltage_l1"], "unit": "V"}
        ),
        "adapters[0].nodes[2]: node 's=Phases': `index` and `elements` exclude each other",
    ),
    (
        "OPC UA deadband on a polled node",
        lambda d: _opcua(d)["nodes"][1].update(
            mode="poll", deadband={"type": "absolute", "value": 0.1}
        ),
        "adapters[0].nodes[1]: node 's=ActivePower': a deadband filters monitored items; it "
        "does nothing with mode: poll",
    ),
    (
        "OPC UA credentials in the endpoint",
        lambda d: _opcua(d).update(endpoint="opc.tcp://op:s3cret@127.0.0.1:4840"),
        "adapters[0].endpoint: the endpoint holds credentials (user:password@); write "
        "username and password (or password_env) instead, so they are sent in a user token "
        "and never logged (got 'opc.tcp://127.0.0.1:4840')",
    ),
    (
        "misspelt adapter field",
        lambda d: _opcua(d).update(publishing_intervall_ms=100),
        "adapters[0].publishing_intervall_ms: unknown field (check its spelling and "
        "indentation) (got 100)",
    ),
    (
        "unit that cannot be converted",
        lambda d: _opcua(d)["nodes"][1].update(unit="degC"),
        "adapters[0].nodes[1].unit: signal 'power_active' is measured in 'W'; cannot convert "
        "from 'degC'",
    ),
    (
        "MQTT fields and value together",
        lambda d: _sub(d).update(value={"path": "v"}),
        "adapters[1].subscriptions[0]: topic 'shop/printer-1/telemetry': give either 'fields' "
        "(JSON object payload) or 'value' (one value per message), not both or neither",
    ),
    (
        "MQTT placeholder inside a level",
        lambda d: _sub(d).update(topic="shop/x{machine}/t", machine=None),
        "adapters[1].subscriptions[0].topic: placeholder must fill a whole topic level, got "
        "level 'x{machine}' (got 'shop/x{machine}/t')",
    ),
    (
        "MQTT wildcard inside a level",
        lambda d: _sub(d).update(topic="shop/b#"),
        "adapters[1].subscriptions[0].topic: invalid wildcard in topic level 'b#' (got 'shop/b#')",
    ),
    (
        "MQTT timestamp format",
        lambda d: _sub(d).update(timestamp={"path": "ts", "format": "epoch_days"}),
        "adapters[1].subscriptions[0].timestamp.format: Input should be 'auto', 'epoch_s', "
        "'epoch_ms', 'epoch_us', 'epoch_ns' or 'iso8601' (got 'epoch_days')",
    ),
    (
        "InfluxDB v1 without database",
        lambda d: d.update(influxdb={"api": "v1", "url": "http://127.0.0.1:8086"}),
        "influxdb: api v1 needs 'database' (the InfluxDB 1.x database to write to)",
    ),
    (
        "InfluxDB v2 without bucket",
        lambda d: d.update(influxdb={"api": "v2", "url": "http://127.0.0.1:8086", "org": "o"}),
        "influxdb: api v2 needs 'bucket'",
    ),
    (
        "InfluxDB URL without scheme",
        lambda d: d.update(influxdb={"api": "v1", "url": "127.0.0.1:8086", "database": "x"}),
        "influxdb.url: expected http://HOST:PORT or https://HOST:PORT, got '127.0.0.1:8086'",
    ),
    (
        "broker URL with the wrong scheme",
        lambda d: d.update(mqtt={"url": "http://broker"}),
        "mqtt.url: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'http://broker'",
    ),
    (
        "unknown top-level section",
        lambda d: d.update(sinks=[]),
        "sinks: unknown field (check its spelling and indentation)",
    ),
    (
        "unknown overflow policy",
        lambda d: d.update(spool={"overflow": "drop_newest"}),
        "spool.overflow: Input should be 'drop_oldest' or 'stop_accepting' (got 'drop_newest')",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [(m, msg) for _, m, msg in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_gives_exact_message(mutate: Mutation, message: str) -> None:
    data = yaml.safe_load(BASE_YAML)
    mutate(data)
    with pytest.raises(ConfigError) as caught:
        parse_site_config(data, "site.yaml")
    assert caught.value.problems == [message]
    assert str(caught.value).startswith("site.yaml: invalid site config\n")


def test_base_config_is_valid() -> None:
    site = parse_site_config(copy.deepcopy(yaml.safe_load(BASE_YAML)))
    assert [m.id for m in site.machines] == ["mill-1", "printer-1"]
    assert site.history_enabled  # no InfluxDB: the local history stores the data


def test_every_problem_is_reported_at_once() -> None:
    data = yaml.safe_load(BASE_YAML)
    data["machines"][0]["id"] = "Bad Id"
    data["spool"] = {"overflow": "nope"}
    with pytest.raises(ConfigError) as caught:
        parse_site_config(data, "site.yaml")
    paths = [p.split(":")[0] for p in caught.value.problems]
    assert paths == ["machines[0].id", "spool.overflow"]


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("site: shop\nmachines:\n  - {id: mill-1\n")
    with pytest.raises(ConfigError) as caught:
        load_site_config(path)
    assert caught.value.source == str(path)
    assert caught.value.problems[0].startswith("line 4, column 1: not valid YAML")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_site_config(tmp_path / "nope.yaml")
    assert caught.value.problems == ["cannot read file: No such file or directory"]


def test_environment_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load(BASE_YAML)
    data["influxdb"] = {"api": "v1", "url": "http://10.0.0.1:8086", "database": "from_file"}
    monkeypatch.setenv("MICROFACTORY_INFLUXDB__URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("MICROFACTORY_INFLUXDB__DATABASE", "from_env")
    monkeypatch.setenv("MICROFACTORY_MQTT__URL", "mqtt://127.0.0.1:1884")
    site = parse_site_config(data)
    assert site.influxdb is not None
    assert (site.influxdb.url, site.influxdb.database) == ("http://127.0.0.1:9999", "from_env")
    assert site.influxdb.api == "v1"  # not overridden: kept from the file
    assert site.mqtt is not None and site.mqtt.url == "mqtt://127.0.0.1:1884"


def test_environment_override_is_validated_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROFACTORY_INFLUXDB__API", "v3")
    data = yaml.safe_load(BASE_YAML)
    data["influxdb"] = {"url": "http://127.0.0.1:8086", "database": "x"}
    with pytest.raises(ConfigError) as caught:
        parse_site_config(data)
    assert caught.value.problems == ["influxdb.api: Input should be 'v1' or 'v2' (got 'v3')"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "microfactory.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE_YAML)
    ok = _cli("config", "check", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "OK — site shop, 2 machines, 2 adapters" in ok.stdout

    data = yaml.safe_load(BASE_YAML)
    data["adapters"][0]["nodes"][0]["node"] = "ns=3;i=1001"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = _cli("config", "check", str(bad))
    assert result.returncode == 2
    assert f"{bad}: invalid site config" in result.stderr
    assert "adapters[0].nodes[0].node: node 'ns=3;i=1001' names its namespace by index" in (
        result.stderr
    )


def test_demo_config_is_valid(tmp_path: Path) -> None:
    from microfactory.cli.demo import demo_site_config

    data = demo_site_config(
        "mqtt://127.0.0.1:1883",
        {"mill-1": "opc.tcp://127.0.0.1:4840", "laser-1": "opc.tcp://127.0.0.1:4841"},
        tmp_path,
    )
    site = parse_site_config(data, "demo_site.yaml")
    assert sorted(m.id for m in site.machines) == [
        "assembly-1",
        "laser-1",
        "meter-1",
        "mill-1",
        "printer-1",
    ]


def test_opcua_paths_are_relative_to_the_config_file_and_passwords_come_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from microfactory.gateway.adapters.opcua.config import OpcUaAdapterConfig

    data = yaml.safe_load(BASE_YAML)
    data["adapters"][0].update(
        certificate="pki/cert.der",
        private_key="pki/key.pem",
        trust_dir="/etc/microfactory/trusted",
        username="operator",
        password_env="MILL_OPCUA_PASSWORD",
    )
    monkeypatch.setenv("MILL_OPCUA_PASSWORD", "from-the-env")
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "site.yaml").write_text(yaml.safe_dump(data))
    mill = load_site_config(folder / "site.yaml").adapters[0]
    assert isinstance(mill, OpcUaAdapterConfig)
    assert mill.certificate == folder.resolve() / "pki" / "cert.der"
    assert mill.private_key == folder.resolve() / "pki" / "key.pem"
    assert mill.trust_dir == Path("/etc/microfactory/trusted")
    assert mill.password is not None and mill.password.get_secret_value() == "from-the-env"
    assert "from-the-env" not in repr(mill)


def test_two_adapters_feeding_one_machines_energy_counter_are_refused() -> None:
    data = yaml.safe_load(BASE_YAML)
    _opcua(data)["nodes"].append({"node": "s=Energy", "signal": "energy_active", "unit": "Wh"})
    second = copy.deepcopy(_opcua(data))
    second.update(name="mill-meter", endpoint="opc.tcp://127.0.0.1:4841")
    second["nodes"] = [{"node": "s=Total", "signal": "energy_active", "unit": "kWh"}]
    data["adapters"].append(second)
    with pytest.raises(ConfigError) as caught:
        parse_site_config(data, "site.yaml")
    [problem] = caught.value.problems
    assert problem.startswith(
        "machine 'mill-1' gets energy_active from adapters 'mill', 'mill-meter': keep one"
    )
    second["nodes"][0].update(signal="power_active", unit="kW")  # two powers are only two series
    assert parse_site_config(data, "site.yaml").adapters[2].name == "mill-meter"
