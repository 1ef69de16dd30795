"""Write a site's broker config into a folder: Mosquitto's files and each program's secrets.

The one entry point of ``microfactory broker config``. Idempotent: a second run with the same
site config writes the same users, passwords and hashes (the secrets of the first run are
read back), unless ``rotate`` asks for new passwords.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SiteConfig
from . import credentials
from .identities import BrokerPlan, plan_identities
from .mosquitto import (
    MAX_INFLIGHT_MESSAGES,
    BrokerFiles,
    Listener,
    QueueLimits,
    TlsListener,
    render_acl,
    render_conf,
)
from .passwords import (
    hash_password,
    new_password,
    parse_password_file,
    render_password_file,
    verify_password,
)

CONF_FILE = "mosquitto.conf"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
DEFAULT_TLS_PORT = 8883
DEFAULT_DATA_DIR = Path("/var/lib/mosquitto")
BROKER_USER = "mosquitto"  # whom Mosquitto started as root changes to, unless `user` says


class BrokerConfigError(ValueError):
    """The options cannot make a working broker config (names the option and why)."""


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    """What the command line adds to the site config."""

    listen: Listener | None = None
    tls_listen: Listener | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    require_client_cert: bool = False
    data_dir: Path = DEFAULT_DATA_DIR
    run_as_user: str | None = None
    rotate: bool = False
    queue_hours: float | None = None  # None: the spool's max_age_s
    max_inflight: int = MAX_INFLIGHT_MESSAGES
    autosave_s: int = 60


@dataclass(slots=True)
class Generated:
    """What was written (no secret in it): files, users, listeners and notes, for the output."""

    plan: BrokerPlan
    files: dict[str, Path]
    plain: Listener
    tls: Listener | None
    limits: QueueLimits
    new_passwords: list[str] = field(default_factory=list)  # users whose password is new
    notes: list[str] = field(default_factory=list)


def parse_listener(text: str, what: str) -> Listener:
    """``HOST:PORT`` (``[::1]:1883`` for IPv6) as a listener; BrokerConfigError if not."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise BrokerConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    return Listener(host, int(port))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listeners(plan: BrokerPlan, opts: BrokerOptions) -> tuple[Listener, TlsListener | None]:
    site = plan.address
    has_tls = opts.tls_cert is not None or opts.tls_key is not None
    for name, path in (("--tls-cert", opts.tls_cert), ("--tls-key", opts.tls_key)):
        if has_tls and path is None:
            raise BrokerConfigError(f"{name}: needed with the other TLS file (give both)")
        if path is not None and not path.is_file():
            raise BrokerConfigError(f"{name}: no such file {str(path)!r}")
    if opts.tls_ca is not None and not opts.tls_ca.is_file():
        raise BrokerConfigError(f"--tls-ca: no such file {str(opts.tls_ca)!r}")
    if opts.tls_ca is not None and not has_tls:
        raise BrokerConfigError("--tls-ca: needs --tls-cert and --tls-key (a TLS listener)")
    if opts.require_client_cert and opts.tls_ca is None:
        raise BrokerConfigError(
            "--require-client-cert: give --tls-ca, the CA that signs the client certificates"
        )
    if not has_tls:
        if site.tls and opts.listen is None:
            raise BrokerConfigError(
                f"the site config's mqtt.url is {site} (TLS): give --tls-cert and --tls-key, "
                "or --listen HOST:PORT for a plain listener"
            )
        return opts.listen or Listener(site.host, site.port), None
    assert opts.tls_cert is not None and opts.tls_key is not None
    tls_at = opts.tls_listen or (
        Listener(site.host, site.port) if site.tls else Listener("", DEFAULT_TLS_PORT)
    )
    plain_port = opts.listen.port if opts.listen else (1883 if site.tls else site.port)
    if opts.listen is not None and not _is_loopback(opts.listen.host):
        raise BrokerConfigError(
            f"--listen {opts.listen}: with TLS the plain listener serves this machine only; "
            f"give --listen 127.0.0.1:{opts.listen.port}"
        )
    plain = Listener("127.0.0.1", plain_port)
    if plain.port == tls_at.port:
        raise BrokerConfigError(
            f"the plain listener and the TLS listener both use port {plain.port}: "
            "choose another with --listen or --tls-listen"
        )
    tls = TlsListener(
        tls_at,
        opts.tls_cert.resolve(),
        opts.tls_key.resolve(),
        opts.tls_ca.resolve() if opts.tls_ca else None,
        opts.require_client_cert,
    )
    return plain, tls


def _write(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` atomically; the file has ``mode`` from its first byte on."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)  # O_CREAT's mode is masked by the umask
    os.replace(tmp, path)


def _hand_to_broker(paths: list[Path], user: str) -> str | None:
    """Started as root, Mosquitto changes user before it reads its files: give them to it."""
    if os.geteuid() != 0:
        return None  # Mosquitto runs as this same user and reads them as they are
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return (
            f"there is no user {user!r}: Mosquitto started as root would run as 'nobody' and "
            "could not read passwd; give --run-as-user"
        )
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return None


def write_broker_config(site: SiteConfig, out: Path, opts: BrokerOptions) -> Generated:
    """Write mosquitto.conf, passwd, acl and the programs' secrets into ``out``."""
    plan = plan_identities(site)
    plain, tls = _listeners(plan, opts)
    if plan.address.tls and tls is None:
        plan.notes.append(f"mqtt.url is {plan.address} but the broker has no TLS listener")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = opts.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    files = BrokerFiles(out / PASSWORD_FILE, out / ACL_FILE, data_dir)
    hours = opts.queue_hours if opts.queue_hours is not None else site.spool.max_age_s / 3600
    limits = QueueLimits.for_outage(len(site.machines), hours, opts.max_inflight)

    old = credentials.Secrets(None, None, {}) if opts.rotate else credentials.read_secrets(out)
    generated = Generated(plan, {}, plain, tls.listener if tls else None, limits)
    passwords: dict[str, str] = {}

    def password_of(user: str, kept: str | None) -> str:
        if kept is None:
            kept = new_password()
            generated.new_passwords.append(user)
        passwords[user] = kept
        return kept

    gateway_users = plan.of("gateway")
    gateway_password = None
    if gateway_users:  # one password for all the gateway's connections
        gateway_password = password_of(gateway_users[0].username, old.gateway)
        for user in gateway_users[1:]:
            passwords[user.username] = gateway_password
            if gateway_users[0].username in generated.new_passwords:
                generated.new_passwords.append(user.username)
    mes_password = password_of(plan.of("mes")[0].username, old.mes)
    devices = plan.of("device")
    for device in devices:
        password_of(device.username, old.devices.get(device.username))

    previous = {}
    if (out / PASSWORD_FILE).is_file():
        previous = parse_password_file((out / PASSWORD_FILE).read_text(encoding="utf-8"))
    hashes = {
        user: previous[user]
        if user in previous and verify_password(pw, previous[user])
        else hash_password(pw)
        for user, pw in passwords.items()
    }

    conf = render_conf(
        plan,
        plain=plain,
        tls=tls,
        files=files,
        limits=limits,
        autosave_s=opts.autosave_s,
        run_as_user=opts.run_as_user,
    )
    writes: list[tuple[str, str, int]] = [
        (CONF_FILE, conf, 0o644),
        (ACL_FILE, render_acl(plan), 0o644),
        (PASSWORD_FILE, render_password_file(hashes), 0o600),
        (credentials.MES_ENV, credentials.mes_env(plan, mes_password), 0o600),
    ]
    if gateway_password is not None:
        writes.append(
            (credentials.GATEWAY_ENV, credentials.gateway_env(plan, gateway_password), 0o600)
        )
    if devices:
        writes.append((credentials.DEVICES_CSV, credentials.devices_csv(devices, passwords), 0o600))
    for name, text, mode in writes:
        _write(out / name, text, mode)
        generated.files[name] = out / name
    refused = _hand_to_broker(
        [out / PASSWORD_FILE, out / ACL_FILE, data_dir], opts.run_as_user or BROKER_USER
    )
    if refused is not None:
        plan.notes.append(refused)
    for stale in (credentials.GATEWAY_ENV, credentials.DEVICES_CSV):
        if stale not in generated.files and (out / stale).exists():
            (out / stale).unlink()  # nobody left to use these secrets
    generated.notes = list(plan.notes)
    return generated
