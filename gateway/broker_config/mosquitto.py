"""The text of a Mosquitto 2.0 config and ACL file for a site's broker users.

Pure functions of their arguments (no file access), so what the broker runs with can be
read in a test. ``use_username_as_clientid`` is a listener setting in Mosquitto 2.0: it is
written in every listener block, since one listener without it would let a client pick the
MES's client id and take its session over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .identities import BrokerPlan

# What the broker queues per persistent session while its client is away. The one session
# that must hold a long outage is the MES's: the gateway's MES link hands its events to the
# broker (PUBACK) and forgets them, so while the MES is down the broker's queue IS the spool
# for events. Sized from the spool's own promise (spool.max_age_s) and a generous event rate.
EVENTS_PER_MACHINE_HOUR = 240  # a part a minute with its state changes, twice over
MIN_QUEUED_MESSAGES = 1000  # Mosquitto's default: never less
QUEUED_BYTES_PER_MESSAGE = 2048  # an event is ~0.5 KiB of JSON: the byte cap bounds memory
MAX_INFLIGHT_MESSAGES = 1000  # as many as the gateway's adapters keep unacknowledged


@dataclass(frozen=True, slots=True)
class Listener:
    """Where one listener binds: ``host`` empty or ``0.0.0.0``/``::`` means every address."""

    host: str
    port: int

    def line(self) -> str:
        if self.host in ("", "0.0.0.0", "::"):
            return f"listener {self.port}"
        return f"listener {self.port} {self.host}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host or "0.0.0.0"
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener: the broker's certificate and key, and the CA of client certificates."""

    listener: Listener
    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    require_client_cert: bool = False


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where the generated files are (absolute paths: Mosquitto resolves none itself)."""

    password_file: Path
    acl_file: Path
    data_dir: Path


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_queued_messages: int
    max_queued_bytes: int
    max_inflight_messages: int
    hours: float
    machines: int

    @classmethod
    def for_outage(cls, machines: int, hours: float, max_inflight: int) -> QueueLimits:
        """Limits that hold ``hours`` of events of ``machines`` for the MES's session."""
        messages = max(MIN_QUEUED_MESSAGES, round(machines * EVENTS_PER_MACHINE_HOUR * hours))
        return cls(messages, messages * QUEUED_BYTES_PER_MESSAGE, max_inflight, hours, machines)


def render_conf(
    plan: BrokerPlan,
    *,
    plain: Listener,
    tls: TlsListener | None,
    files: BrokerFiles,
    limits: QueueLimits,
    autosave_s: int,
    run_as_user: str | None,
) -> str:
    """mosquitto.conf: logins and the ACL on every listener, persistence, queue limits."""
    out = [
        f"# Mosquitto 2.0 broker of site {plan.site!r}, written by `microfactory broker config`.",
        "# Re-run the command after changing the site config; edits here are overwritten.",
        "",
        "# Nobody without a login; each program and each device is its own user, and may use",
        "# only the topics the ACL file grants it (everything else is denied).",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {files.password_file}",
        f"acl_file {files.acl_file}",
        "",
        "# Persistent sessions (the MES's queued events, the adapters' subscriptions) survive",
        f"# a broker restart; a power cut loses at most the last {autosave_s} s of it.",
        "persistence true",
        f"persistence_location {files.data_dir}/",
        f"autosave_interval {autosave_s}",
        "",
        "# Queue per persistent session while its client is away. While the MES is down, the",
        "# broker holds the events the gateway has already handed over: this holds",
        f"# {limits.hours:g} h (the spool's promise, spool.max_age_s) of {limits.machines} "
        f"machine(s) at {EVENTS_PER_MACHINE_HOUR} events/h each;",
        f"# the byte cap ({QUEUED_BYTES_PER_MESSAGE} B/message) bounds the memory it may take.",
        "# Past either limit the broker drops new messages for that client.",
        f"max_queued_messages {limits.max_queued_messages}",
        f"max_queued_bytes {limits.max_queued_bytes}",
        "# Unacknowledged QoS 1 messages in flight per client (Mosquitto's default is 20):",
        "# the gateway acknowledges after its spool commit and catches up faster with more.",
        f"max_inflight_messages {limits.max_inflight_messages}",
        "",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
    ]
    if run_as_user is not None:
        out += ["", "# started as root, Mosquitto changes to this user", f"user {run_as_user}"]
    out += [
        "",
        "# Plain MQTT" + (" (this machine only: remote clients use TLS)" if tls else ""),
        plain.line(),
        "use_username_as_clientid true",
    ]
    if tls is not None:
        out += [
            "",
            "# MQTT over TLS",
            tls.listener.line(),
            "use_username_as_clientid true",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            "tls_version tlsv1.2",
        ]
        if tls.cafile is not None:
            out.append(f"cafile {tls.cafile}")
        if tls.require_client_cert:
            out += [
                "# a client certificate signed by cafile, and a login, on this listener",
                "require_certificate true",
            ]
    return "\n".join(out) + "\n"


def render_acl(plan: BrokerPlan) -> str:
    """The ACL file: one ``user`` block per identity; nothing is granted to anyone else."""
    out = [
        f"# Topic access of the broker users of site {plan.site!r}, written by",
        "# `microfactory broker config`. A topic not granted here is denied.",
    ]
    for identity in sorted(plan.identities, key=lambda i: (i.program, i.username)):
        out += ["", f"# {identity.role}", f"user {identity.username}"]
        out += [f"topic {g.access} {g.topic}" for g in identity.grants]
    return "\n".join(out) + "\n"
