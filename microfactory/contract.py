"""The wire contract between the gateway, the MES and anyone else on the wire.

The gateway never imports the MES and the MES never imports the gateway; what crosses
between them (MQTT topics, JSON payloads, the InfluxDB schema, the signal vocabulary) is
defined here once and versioned. An integrator can speak to either side from this module,
or from its description in ``docs/wire-contract.md`` (JSON Schemas of the events in ``docs/mes.md``).

Bump ``CONTRACT_VERSION`` on any incompatible change; additive optional fields do not bump it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

CONTRACT_VERSION = 1
TOPIC_ROOT = f"microfactory/v{CONTRACT_VERSION}"

# --------------------------------------------------------------------------- InfluxDB schema
# One line-protocol schema for every sink. A field keeps its type forever (InfluxDB refuses a
# type change within a shard), so numeric values (booleans as 0.0 / 1.0) always go to ``value``
# (float) and text
# values (machine state, program name) always go to ``text`` (string).
MEASUREMENT_TELEMETRY = "telemetry"
MEASUREMENT_EVENT = "machine_event"
TAG_SITE = "site"
TAG_MACHINE = "machine"
TAG_SIGNAL = "signal"
TAG_UNIT = "unit"
TAG_QUALITY = "quality"
CONTEXT_TAGS = ("order", "batch", "operation", "product")
FIELD_VALUE = "value"
FIELD_TEXT = "text"

Quality = Literal["good", "uncertain", "bad"]


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One entry of the signal vocabulary: the canonical unit every source is normalised to."""

    name: str
    unit: str
    kind: Literal["gauge", "counter", "text", "boolean"]
    description: str


SIGNALS: dict[str, SignalSpec] = {
    s.name: s
    for s in (
        SignalSpec("state", "", "text", "off | idle | setup | running | fault"),
        SignalSpec("program", "", "text", "current NC program, job or recipe name"),
        SignalSpec("power_active", "W", "gauge", "instantaneous active power"),
        SignalSpec("power_l1", "W", "gauge", "active power, phase L1"),
        SignalSpec("power_l2", "W", "gauge", "active power, phase L2"),
        SignalSpec("power_l3", "W", "gauge", "active power, phase L3"),
        SignalSpec("energy_active", "Wh", "counter", "active energy counter (may reset)"),
        SignalSpec("part_count", "count", "counter", "parts completed (good + scrap)"),
        SignalSpec("good_count", "count", "counter", "good parts completed"),
        SignalSpec("scrap_count", "count", "counter", "scrapped parts"),
        SignalSpec("spindle_speed", "rpm", "gauge", "spindle speed"),
        SignalSpec("laser_power", "W", "gauge", "laser source output power"),
        SignalSpec("feed_rate", "mm/min", "gauge", "axis feed rate"),
        SignalSpec("temperature", "degC", "gauge", "generic temperature"),
        SignalSpec("temperature_spindle", "degC", "gauge", "spindle bearing temperature"),
        SignalSpec("temperature_coolant", "degC", "gauge", "coolant temperature"),
        SignalSpec("temperature_resonator", "degC", "gauge", "laser resonator temperature"),
        SignalSpec("temperature_chiller", "degC", "gauge", "chiller water temperature"),
        SignalSpec("temperature_nozzle", "degC", "gauge", "3D printer nozzle temperature"),
        SignalSpec("temperature_bed", "degC", "gauge", "3D printer bed temperature"),
        SignalSpec("torque", "N*m", "gauge", "tool torque"),
        SignalSpec("voltage_l1", "V", "gauge", "voltage L1-N"),
        SignalSpec("voltage_l2", "V", "gauge", "voltage L2-N"),
        SignalSpec("voltage_l3", "V", "gauge", "voltage L3-N"),
        SignalSpec("current_l1", "A", "gauge", "current, phase L1"),
        SignalSpec("current_l2", "A", "gauge", "current, phase L2"),
        SignalSpec("current_l3", "A", "gauge", "current, phase L3"),
        SignalSpec("power_factor", "", "gauge", "total power factor (-1 to 1)"),
        SignalSpec("frequency", "Hz", "gauge", "supply frequency"),
        SignalSpec(
            "online", "", "boolean", "device reachable: 1, or not: 0 (e.g. from an MQTT LWT)"
        ),
    )
}

MACHINE_STATES = ("off", "idle", "setup", "running", "fault")


# --------------------------------------------------------------------------- MQTT topics
def context_topic(site: str, machine: str) -> str:
    """Retained topic on which the MES publishes what a machine is working on."""
    return f"{TOPIC_ROOT}/{site}/context/{machine}"


def context_subscription(site: str) -> str:
    return f"{TOPIC_ROOT}/{site}/context/+"


def event_topic(site: str, machine: str) -> str:
    """QoS 1 topic on which the gateway publishes machine events for the MES."""
    return f"{TOPIC_ROOT}/{site}/events/{machine}"


def event_subscription(site: str) -> str:
    return f"{TOPIC_ROOT}/{site}/events/+"


def mes_client_id(site: str) -> str:
    """The MES's client id (and, on a broker from ``microfactory broker config``, its user).

    Fixed per site so the broker keeps the MES's persistent session, and the events queued
    in it, across restarts.
    """
    return f"microfactory-mes-{site}"


# --------------------------------------------------------------------------- payload bounds
# What a receiver accepts, so that nobody on the broker can hand it a 10 MB batch name or a
# newline in a tag. Generous against what the programs produce: site and machine ids are at
# most 64 characters in the site config and the MES, the gateway hashes event ids above 128,
# MES codes (order, lot, product, user) are at most 64 and operation names 200 ("seq:name").
MAX_ID_CHARS = 64  # site, machine (also topic levels)
MAX_EVENT_ID_CHARS = 128
MAX_CODE_CHARS = 128  # order, batch, product, operator
MAX_OPERATION_CHARS = 256
MAX_STATE_CHARS = 1024  # the gateway's normalise.max_text_length default
MAX_REASON_CHARS = 500
# Payload size caps, checked before parsing: a signed event is well under 2 KiB.
MAX_EVENT_BYTES = 64 * 1024
MAX_CONTEXT_BYTES = 8 * 1024
# Control characters (Unicode category Cc: C0, DEL, C1) break logs, tags and line protocol.
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"

TopicLevel = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f\x7f-\x9f/+#]+$"
    ),
]
"""A site or machine id: also one MQTT topic level, so no ``/``, ``+``, ``#``."""
Code = Annotated[str, StringConstraints(max_length=MAX_CODE_CHARS, pattern=_NO_CONTROL)]
Operation = Annotated[str, StringConstraints(max_length=MAX_OPERATION_CHARS, pattern=_NO_CONTROL)]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID_CHARS)]
State = Annotated[str, StringConstraints(max_length=MAX_STATE_CHARS)]


# --------------------------------------------------------------------------- payloads
class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    contract_version: int = CONTRACT_VERSION


class MachineContext(_Payload):
    """What a machine is working on, published retained by the MES.

    A context with ``order`` = None clears it. The MES never publishes an empty retained
    message, and the gateway ignores one: anyone on the broker could send it.
    """

    site: TopicLevel
    machine: TopicLevel
    order: Code | None = None
    batch: Code | None = None
    operation: Operation | None = None
    operator: Code | None = None
    product: Code | None = None
    since_ns: int = Field(description="UTC ns when this context became active")


class _Event(_Payload):
    event_id: EventId = Field(description="stable id: replays with the same id must be ignored")
    site: TopicLevel
    machine: TopicLevel
    ts_ns: int = Field(description="UTC ns, source time of the machine")
    order: Code | None = None
    batch: Code | None = None
    operation: Operation | None = None
    product: Code | None = None


class StateChanged(_Event):
    """A machine entered ``state`` at ``ts_ns``; what it used in the state that just ended.

    ``previous_energy_wh`` is the energy counter difference between ``previous_since_ns`` (or
    ``previous_energy_from_ns``, the first counter reading, when the state began before the
    gateway could read the counter) and ``ts_ns``, corrected for counter resets; None when it
    is not known.
    """

    kind: Literal["state_changed"] = "state_changed"
    state: State
    previous: State | None = None
    previous_since_ns: int | None = Field(
        default=None, description="UTC ns when the previous state began (None: not seen)"
    )
    previous_energy_wh: float | None = Field(
        default=None, description="Wh the machine used in the previous state (None: unknown)"
    )
    previous_energy_from_ns: int | None = Field(
        default=None,
        description="UTC ns from which previous_energy_wh counts when the energy counter was "
        "first read after the previous state began (None: from previous_since_ns)",
    )


class PartCompleted(_Event):
    """One part finished on a machine, with the energy it took on its own.

    ``energy_wh`` is the energy counter difference between the previous part's completion
    (or the start of the run) and this one, corrected for counter resets.
    """

    kind: Literal["part_completed"] = "part_completed"
    part_count: int
    good: bool | None = None
    energy_wh: float | None = None
    cycle_time_s: float | None = None


class GapReported(_Event):
    """The gateway lost a source for a while; data in [start_ns, ts_ns] may be missing."""

    kind: Literal["gap"] = "gap"
    start_ns: int
    reason: Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)]


MachineEvent = Annotated[StateChanged | PartCompleted | GapReported, Field(discriminator="kind")]

EVENT_ADAPTER: TypeAdapter[StateChanged | PartCompleted | GapReported] = TypeAdapter(MachineEvent)


# --------------------------------------------------------------------------- signatures
# For a broker without ACLs, where anyone may publish anywhere: with a key shared by the
# gateway and the MES, every event and context carries an HMAC-SHA256 over its topic and body
# as the LAST member of its JSON object, ``,"sig":"<64 hex>"``. Byte-exact, no
# canonicalisation: the receiver strips that trailing member and checks the MAC over exactly
# the bytes that remain. The topic is inside the MAC, so a signed message of one machine
# cannot be replayed on another machine's (or site's) topic.
SIG_MEMBER = "sig"
MIN_SIGNING_KEY_BYTES = 32
_SIG_OPEN = b'"sig":"'
_HEX_MAC = re.compile(rb"[0-9a-f]{64}")


class SignatureError(ValueError):
    """A message that must be signed is not, or not by our key.

    ``reason``: ``missing`` (no trailing ``sig`` member), ``malformed`` (a ``sig`` that is not
    the last member or not 64 lowercase hex digits), ``bad`` (the MAC does not match).
    """

    def __init__(self, reason: Literal["missing", "bad", "malformed"], detail: str) -> None:
        super().__init__(f"signature {reason}: {detail}")
        self.reason: Literal["missing", "bad", "malformed"] = reason
        self.detail = detail


def _key_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


def _mac(key: bytes | str, topic: str, body: bytes) -> bytes:
    data = topic.encode() + b"\n" + body
    return hmac.new(_key_bytes(key), data, hashlib.sha256).hexdigest().encode()


def sign(key: bytes | str, topic: str, body: bytes) -> bytes:
    """``body`` (one JSON object) with ``,"sig":"<HMAC-SHA256 of topic + '\\n' + body>"`` last."""
    body = body.rstrip()
    if not (body.lstrip().startswith(b"{") and body.endswith(b"}")):
        raise ValueError("sign: the body must be one JSON object ({...})")
    inner = body[:-1]
    comma = b"" if inner.rstrip().endswith(b"{") else b","  # "{}" gets no comma
    return inner + comma + _SIG_OPEN + _mac(key, topic, body) + b'"}'


def _split_signed(payload: bytes) -> tuple[bytes, bytes] | None:
    """(body without the trailing sig member, the sig's value), or None without one."""
    end = payload.rstrip()
    if not end.endswith(b'"}'):
        return None
    at = end.rfind(_SIG_OPEN)
    if at < 0:
        return None
    value = end[at + len(_SIG_OPEN) : -2]
    if b'"' in value:  # a "sig" member, but not the last one
        return None
    start = at - 1 if end[at - 1 : at] == b"," else at
    return end[:start] + b"}", value


def open_signed(key: bytes | str | None, topic: str, payload: bytes) -> bytes:
    """The body of a message without its trailing ``sig`` member, checked when ``key`` is set.

    With a key, raises :class:`SignatureError` unless the message carries our MAC over this
    topic and the returned body. Without a key a trailing ``sig`` is stripped, not checked.
    """
    split = _split_signed(payload)
    if split is None:
        if key is None:
            return payload
        if b'"sig"' in payload:
            raise SignatureError("malformed", 'the "sig" member must be the last of the object')
        raise SignatureError("missing", 'no trailing "sig" member: the message is not signed')
    body, sig = split
    if key is None:
        return body
    if not _HEX_MAC.fullmatch(sig):
        raise SignatureError("malformed", '"sig" must be 64 lowercase hex digits')
    if not hmac.compare_digest(sig, _mac(key, topic, body)):
        raise SignatureError(
            "bad", "the MAC does not match this topic and body (another key, or moved/altered)"
        )
    return body


def check_signing_key(
    value: str | None,
    variable: str,
    hint: str = "e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`",
) -> str | None:
    """An HMAC key of at least :data:`MIN_SIGNING_KEY_BYTES`, or None; the error names the
    variable (and says how to make one): a short or empty key lets anyone forge what it signs."""
    if value is not None and len(value.encode()) < MIN_SIGNING_KEY_BYTES:
        raise ValueError(
            f"{variable}: at least {MIN_SIGNING_KEY_BYTES} bytes, got {len(value.encode())} "
            f"({hint})"
        )
    return value


# --------------------------------------------------------------------------- receiving
RefusalReason = Literal[
    "too_large",
    "topic",
    "site",
    "other_site",  # the topic of another site (MES bridge: a site id differs, said once per site)
    "machine",
    "empty",
    "signature_missing",
    "signature_bad",
    "signature_malformed",
    "invalid",
]


class Refused(ValueError):
    """A message a receiver does not act on; ``reason`` is what it is counted by."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RefusalReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TopicParts:
    """``<TOPIC_ROOT>/<site>/<kind>/<machine>``, split."""

    site: str
    kind: Literal["events", "context"]
    machine: str


def parse_topic(topic: str) -> TopicParts | None:
    """The site, kind and machine of an event or context topic; None for any other topic."""
    prefix = TOPIC_ROOT + "/"
    if not topic.startswith(prefix):
        return None
    levels = topic[len(prefix) :].split("/")
    if len(levels) != 3 or not all(levels):
        return None
    site, kind, machine = levels
    if kind == "events":
        return TopicParts(site, "events", machine)
    if kind == "context":
        return TopicParts(site, "context", machine)
    return None


def _first_error(err: ValidationError) -> str:
    """The first validation error without the input (which may be huge or hostile)."""
    errors = err.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


class _Addressed(Protocol):
    """What the receive checks compare with the topic (read-only: the payloads are frozen)."""

    @property
    def site(self) -> str: ...

    @property
    def machine(self) -> str: ...


_T = TypeVar("_T", bound=_Addressed)


def _receive(
    topic: str,
    payload: bytes,
    parse: Callable[[bytes], _T],
    *,
    site: str,
    key: bytes | str | None,
    kind: Literal["events", "context"],
    limit: int,
) -> _T:
    """The checks every received message passes, in order: size, topic, site, not empty,
    signature, validation, then the payload's site and machine against the topic."""
    if len(payload) > limit:
        raise Refused("too_large", f"{len(payload)} bytes, more than the {limit} allowed")
    parts = parse_topic(topic)
    if parts is None or parts.kind != kind:
        raise Refused("topic", f"not a {TOPIC_ROOT}/<site>/{kind}/<machine> topic")
    if parts.site != site:
        raise Refused("site", f"topic of site {parts.site!r}, this is site {site!r}")
    if not payload.strip():
        if kind == "context":
            raise Refused(
                "empty",
                "empty retained message ignored, the context is kept: the MES clears a "
                "context by publishing one without order",
            )
        raise Refused("empty", "empty payload")
    try:
        body = open_signed(key, topic, payload)
    except SignatureError as err:
        reason: RefusalReason = f"signature_{err.reason}"  # type: ignore[assignment]
        raise Refused(reason, err.detail) from err
    try:
        message = parse(body)
    except ValidationError as err:
        raise Refused("invalid", _first_error(err)) from err
    if message.site != site:
        raise Refused("site", f"payload of site {message.site!r}, this is site {site!r}")
    if message.machine != parts.machine:
        raise Refused(
            "machine", f"payload of machine {message.machine!r} on the topic of {parts.machine!r}"
        )
    return message


def receive_event(
    topic: str, payload: bytes, *, site: str, key: bytes | str | None = None
) -> StateChanged | PartCompleted | GapReported:
    """An event from the wire, only if it is small, signed (when ``key``), valid, and its
    topic, site and machine agree with the payload and with ``site``; else :class:`Refused`."""
    return _receive(
        topic,
        payload,
        EVENT_ADAPTER.validate_json,
        site=site,
        key=key,
        kind="events",
        limit=MAX_EVENT_BYTES,
    )


def receive_context(
    topic: str, payload: bytes, *, site: str, key: bytes | str | None = None
) -> MachineContext:
    """A machine context from the wire, under the same conditions as :func:`receive_event`.

    An empty payload is refused (reason ``empty``): the MES clears a context by publishing
    one without ``order``; an empty retained message can come from anyone.
    """
    return _receive(
        topic,
        payload,
        MachineContext.model_validate_json,
        site=site,
        key=key,
        kind="context",
        limit=MAX_CONTEXT_BYTES,
    )


class RefusalLog:
    """Refused messages counted by reason; logged once per (topic, reason), then summarised.

    Anyone on an open broker can send thousands of bad messages: the log gets the first of
    each kind per topic, then at most one summary line per ``summary_every_s``; the counts stay
    exact. :meth:`snapshot` may be called from any thread (an API, a metrics scrape).
    """

    MAX_KEYS = 1024  # topics remembered for "once": a spray of topics cannot grow memory

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        summary_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counts: Counter[str] = Counter()
        self._log = logger
        self._what = what
        self._every = summary_every_s
        self._clock = clock
        self._seen: set[tuple[str, str]] = set()
        self._unlogged: Counter[str] = Counter()
        self._last_summary = clock()
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return sum(self.snapshot().values())

    def snapshot(self) -> dict[str, int]:
        """The counts by reason, copied under the lock."""
        with self._lock:
            return dict(self.counts)

    def refuse(self, topic: str, refusal: Refused) -> None:
        with self._lock:
            self.counts[refusal.reason] += 1
        key = (topic, refusal.reason)
        if key not in self._seen and len(self._seen) < self.MAX_KEYS:
            self._seen.add(key)
            self._log.warning(
                "%s: refused a message on %s: %s (further ones are counted, summarised "
                "at most every %g s)",
                self._what,
                _printable(topic),
                _printable(str(refusal)),
                self._every,
            )
            return
        self._unlogged[refusal.reason] += 1
        now = self._clock()
        if now - self._last_summary >= self._every:
            self._log.warning(
                "%s: %d more refused messages since the last report (%s)",
                self._what,
                sum(self._unlogged.values()),
                ", ".join(f"{r}: {n}" for r, n in sorted(self._unlogged.items())),
            )
            self._unlogged.clear()
            self._last_summary = now


def _printable(text: str, limit: int = 200) -> str:
    """Text a log line can carry: control characters escaped, long text cut."""
    cut = text[:limit]
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return safe + ("…" if len(text) > limit else "")
