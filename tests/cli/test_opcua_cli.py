"""``microfactory opcua cert`` and ``opcua browse`` as an integrator types them.

The commands run in-process through typer's runner (they call ``asyncio.run`` themselves,
so the simulated mill runs on its own event loop in a thread); one test runs the real
``python -m microfactory`` to prove the sub-command is mounted on the installed command.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from cryptography import x509
from typer.testing import CliRunner

from microfactory.cli import opcua as opcua_cli
from microfactory.cli.main import app
from microfactory.gateway.adapters.opcua import snippet
from microfactory.gateway.adapters.opcua.certificates import load_certificate, thumbprint
from microfactory.gateway.adapters.opcua.config import OpcUaAdapterConfig
from microfactory.gateway.config import load_site_config
from microfactory.sim.opcua_machine import OpcUaMachineServer
from tests.helpers.markers import starts_server
from tests.helpers.node_opcua import NODES, NodeOpcuaServer, nsu

T = TypeVar("T")
NS = "urn:microfactory:sim:mill-1"
PASSWORD_ENV = "MICROFACTORY_OPCUA_PASSWORD"


class ThreadedMill:
    """The simulated CNC mill on an event loop of its own, so a CLI can ``asyncio.run``."""

    def __init__(self, pki_dir: Path, users: dict[str, str] | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = OpcUaMachineServer(
            machine_id="mill-1", kind="cnc_mill", port=0, pki_dir=pki_dir, users=users
        )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def __enter__(self) -> OpcUaMachineServer:
        self._thread.start()
        self.run(self.server.start())
        return self.server

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@pytest.fixture
@starts_server("simulated CNC mill (asyncua OPC UA server, own thread)")
def mill(tmp_path: Path) -> Iterator[OpcUaMachineServer]:
    with ThreadedMill(tmp_path / "mill-pki") as server:
        yield server


@pytest.fixture
@starts_server("simulated CNC mill with a user name and password")
def mill_with_users(tmp_path: Path) -> Iterator[OpcUaMachineServer]:
    with ThreadedMill(tmp_path / "mill-pki", users={"op": "s3cret-word"}) as server:
        yield server


def invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(app, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_password_env_name_is_the_same_in_cli_and_config_writer() -> None:
    assert opcua_cli.PASSWORD_ENV == snippet.PASSWORD_ENV == PASSWORD_ENV


@pytest.mark.parametrize("command", ["cert", "browse"])
def test_help_renders(command: str) -> None:
    result = invoke(["opcua", command, "--help"])
    assert result.exit_code == 0 and "--out" in result.output, result.output


# --------------------------------------------------------------------------- cert
def test_cert_writes_a_private_key_and_a_certificate_naming_the_application(
    tmp_path: Path,
) -> None:
    out = tmp_path / "pki"
    result = invoke(
        ["opcua", "cert", "--out", str(out), "--application-uri", "urn:pi-7:gw", "--host", "pi-7"]
    )
    assert result.exit_code == 0, result.output
    cert_path, key_path = out / "cert.der", out / "key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600, "the key is readable by its owner only"
    cert = load_certificate(cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:pi-7:gw"]
    assert "pi-7" in san.get_values_for_type(x509.DNSName)
    assert f"certificate: {cert_path}" in result.output
    assert f"private key: {key_path}" in result.output
    assert "application URI: urn:pi-7:gw" in result.output
    assert f"SHA-1 thumbprint: {thumbprint(cert)}" in result.output

    again = invoke(["opcua", "cert", "--out", str(out)])
    assert again.exit_code == 1 and "--force" in again.output
    assert load_certificate(cert_path) == cert, "an existing certificate is not replaced silently"
    forced = invoke(["opcua", "cert", "--out", str(out), "--force"])
    assert forced.exit_code == 0 and load_certificate(cert_path) != cert


@pytest.mark.integration  # a subprocess: the installed command, end to end
def test_cert_through_python_dash_m_microfactory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "microfactory", "opcua", "cert", "--out", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c" / "cert.der").is_file() and "SHA-1 thumbprint" in proc.stdout


# --------------------------------------------------------------------------- browse
@pytest.mark.integration
def test_browse_the_mill_without_security_writes_a_config_that_passes_check(
    mill: OpcUaMachineServer, tmp_path: Path
) -> None:
    out = tmp_path / "mill.yaml"
    args = ["opcua", "browse", mill.endpoint, "--out", str(out), "--state-dir", str(tmp_path)]
    refused = invoke([*args, "--security-policy", "None"])
    assert refused.exit_code == 2 and "allow_insecure" in refused.output, refused.output
    assert not out.exists()

    result = invoke(
        [*args, "--security-policy", "None", "--security-mode", "None", "--allow-insecure"]
    )
    assert result.exit_code == 0, result.output
    tree = result.stdout.splitlines()
    assert "Machine  nsu=urn:microfactory:sim:mill-1;s=Machine  Object" in tree
    assert any(
        line.startswith(f"  ActivePower  nsu={NS};s=ActivePower  Double = ") for line in tree
    ), tree
    assert "ns=" not in result.stdout.replace("nsu=", ""), "never a namespace index"

    check = invoke(["config", "check", str(out)])
    assert check.exit_code == 0, check.output
    (adapter,) = load_site_config(out).adapters
    assert isinstance(adapter, OpcUaAdapterConfig)
    assert adapter.machine == "microfactory-simulator-mill-1", "named after the server"
    assert adapter.security_policy == "None" and adapter.allow_insecure
    assert adapter.trust_dir is None, "no trust list without security"
    signals = {n.signal: n.node for n in adapter.nodes}
    assert signals["power_active"] == f"nsu={NS};s=ActivePower"
    assert signals["spindle_speed"] == f"nsu={NS};s=SpindleSpeed"

    again = invoke([*args, "--security-policy", "None", "--allow-insecure"])
    assert again.exit_code == 1 and "--force" in again.output, "an edited config is kept"


@pytest.mark.integration
def test_secure_browse_with_a_password_writes_only_the_env_name(
    mill_with_users: OpcUaMachineServer, tmp_path: Path
) -> None:
    out = tmp_path / "conf" / "mill.yaml"
    state = tmp_path / "state"
    args = [
        "opcua",
        "browse",
        mill_with_users.endpoint,
        "--out",
        str(out),
        "--state-dir",
        str(state),
        "--machine",
        "mill-1",
        "--trust-on-first-use",
        "--username",
        "op",
    ]
    wrong = invoke(args, env={PASSWORD_ENV: "wrong"})
    assert wrong.exit_code == 1 and "check username and password" in wrong.output, wrong.output
    result = invoke(args, env={PASSWORD_ENV: "s3cret-word"})
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "s3cret-word" not in text and f"password_env: {PASSWORD_ENV}" in text
    data = yaml.safe_load(text)["adapters"][0]
    assert data["security_policy"] == "Basic256Sha256"
    assert data["security_mode"] == "SignAndEncrypt"
    assert "allow_insecure" not in data
    trusted = state / "opcua" / "trusted"
    assert (
        trusted / "mill-1-opcua.der"
    ).read_bytes() == mill_with_users.certificate_path.read_bytes()
    assert (out.parent / data["trust_dir"]).resolve() == trusted.resolve()
    assert (out.parent / data["certificate"]).resolve() == (
        state / "opcua" / "client" / "cert.der"
    ).resolve()

    unset = invoke(["config", "check", str(out)], env={PASSWORD_ENV: None})  # type: ignore[dict-item]
    assert unset.exit_code == 2 and PASSWORD_ENV in unset.output, unset.output
    check = invoke(["config", "check", str(out)], env={PASSWORD_ENV: "s3cret-word"})
    assert check.exit_code == 0, check.output


@pytest.mark.integration
def test_browse_of_an_unreachable_server_says_so(tmp_path: Path) -> None:
    from microfactory.cli.ports import free_port

    url = f"opc.tcp://127.0.0.1:{free_port()}"
    result = invoke(
        [
            "opcua",
            "browse",
            url,
            "--out",
            str(tmp_path / "x.yaml"),
            "--timeout",
            "1",
            "--security-policy",
            "None",
            "--allow-insecure",
            "--state-dir",
            str(tmp_path),
        ]
    )
    assert result.exit_code == 1 and f"cannot reach {url}" in result.output, result.output
    assert not (tmp_path / "x.yaml").exists()


@pytest.mark.integration
def test_browse_node_opcua_secured_with_our_certificate(
    node_opcua: Callable[..., NodeOpcuaServer], tmp_path: Path
) -> None:
    pki = tmp_path / "client"
    made = invoke(["opcua", "cert", "--out", str(pki), "--application-uri", "urn:test:gw"])
    assert made.exit_code == 0, made.output
    server = node_opcua(
        security=[("Basic256Sha256", "SignAndEncrypt")],
        trusted_client_certificates=[pki / "cert.der"],
        companion=True,
    )
    out = tmp_path / "node-opcua.yaml"
    state = tmp_path / "state"
    untrusted = invoke(
        [
            *("opcua", "browse", server.endpoint, "--out", str(out), "--trust-on-first-use"),
            *("--state-dir", str(state), "--machine", "press-1"),
        ]
    )
    made_here = state / "opcua" / "client" / "cert.der"
    assert untrusted.exit_code == 1 and str(made_here) in untrusted.output, untrusted.output
    assert not out.exists()
    result = invoke(
        [
            "opcua",
            "browse",
            server.endpoint,
            "--out",
            str(out),
            "--certificate",
            str(pki / "cert.der"),
            "--private-key",
            str(pki / "key.pem"),
            "--trust-on-first-use",
            "--state-dir",
            str(state),
            "--machine",
            "press-1",
        ]
    )
    assert result.exit_code == 0, result.output
    assert nsu(NODES["Power"]) in result.stdout
    check = invoke(["config", "check", str(out)])
    assert check.exit_code == 0, check.output
    (adapter,) = load_site_config(out).adapters
    assert isinstance(adapter, OpcUaAdapterConfig)
    by_node = {n.node: n for n in adapter.nodes}
    power = by_node[nsu(NODES["Power"])]
    assert (power.signal, power.unit) == ("power_active", "kW"), "unit from EngineeringUnits"
    temperature = by_node[nsu(NODES["Temperature"])]
    assert (temperature.signal, temperature.unit) == ("temperature", "degC")
    phases = by_node[nsu(NODES["Phases"])]
    assert phases.elements is not None and len(phases.elements) == 3
    assert (
        adapter.certificate is not None
        and adapter.certificate.resolve() == (pki / "cert.der").resolve()
    )
    assert os.path.commonpath([adapter.trust_dir or "", tmp_path]) == str(tmp_path)


def test_library_records_are_debug_only() -> None:
    """asyncua's warnings and tracebacks reach the log only at --log-level debug."""
    import logging

    from microfactory.cli.main import DemoteLibraries

    def shown(level: int, name: str) -> tuple[bool, str]:
        record = logging.LogRecord(name, logging.WARNING, __file__, 1, "msg", None, None)
        keep = DemoteLibraries(level).filter(record)
        return bool(keep), record.levelname

    assert shown(logging.INFO, "asyncua.client.ua_client") == (False, "DEBUG")
    assert shown(logging.DEBUG, "asyncua.client.ua_client") == (True, "DEBUG")
    assert shown(logging.INFO, "microfactory.gateway.adapters.opcua.mill") == (True, "WARNING")
