"""Who connects to the site's broker and what each may do, derived from the site config.

Every connection is its own broker user (the generated Mosquitto config binds client ids to
usernames), and each user gets only the topics its program uses:

- the MES (:func:`~microfactory.contract.mes_client_id`): reads the machine events, writes
  the machine context;
- the gateway's MES link: writes the events (when ``mes_link.events``), reads the context;
- each gateway adapter on the site broker: reads what it subscribes to (a Sparkplug adapter
  also sends its nodes the rebirth command, NCMD);
- each machine publishing on MQTT: writes only its own topics (its last will included);
- each Sparkplug edge node: writes its own node and device messages, reads its commands.

Only the MES may write context and only the gateway's MES link may write events, so a
machine's credentials cannot forge either. Adapters with their own ``broker`` talk to
another broker: they are reported, not given identities here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from microfactory import contract
from microfactory.mqtt.settings import BrokerAddress, MqttSettings

from ..adapters.base import AdapterConfigBase
from ..adapters.mqtt.broker import BrokerAdapterConfig
from ..adapters.mqtt.config import MqttAdapterConfig
from ..adapters.sparkplug.config import NAMESPACE, SparkplugAdapterConfig
from ..config import SiteConfig

Access = Literal["read", "write", "readwrite"]
Program = Literal["mes", "gateway", "device"]

# A broker username is also a client id, a password-file key (before ':') and the rest of an
# ACL `user` line: keep to characters every device's settings page and every file accepts.
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
MACHINE_PREFIX = "machine-"
EDGE_NODE_PREFIX = "sparkplug-"
_PLACEHOLDER = re.compile(r"\{(machine|signal)\}")


class IdentityError(ValueError):
    """The site config cannot be turned into broker users (a name no broker accepts)."""


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One ACL line: ``topic <access> <topic>``."""

    topic: str
    access: Access


@dataclass(slots=True)
class Identity:
    """One broker user: the program holding its password and the topics it may use."""

    username: str
    program: Program
    role: str  # in words, for the command's output and the ACL file's comments
    grants: list[Grant] = field(default_factory=list)

    def grant(self, access: Access, topic: str) -> None:
        if any(c in topic for c in "\n\r\0") or not topic:
            raise IdentityError(f"{self.role}: topic {topic!r} cannot go into an ACL file")
        merged = {g.topic: g.access for g in self.grants}
        old = merged.get(topic)
        merged[topic] = "readwrite" if old is not None and old != access else access
        self.grants = sorted(Grant(t, a) for t, a in merged.items())


@dataclass(slots=True)
class BrokerPlan:
    """The users of one site's broker, and what the generator left out (in words)."""

    site: str
    address: BrokerAddress
    identities: list[Identity]
    notes: list[str]

    def of(self, program: Program) -> list[Identity]:
        return [i for i in self.identities if i.program == program]

    def user(self, username: str) -> Identity:
        for identity in self.identities:
            if identity.username == username:
                return identity
        raise KeyError(username)


def _check_username(name: str, what: str) -> str:
    if not _USERNAME.match(name):
        raise IdentityError(
            f"{what}: {name!r} cannot be a broker username (it becomes the client id too): "
            "use letters, digits, '-', '_' and '.', at most 128, starting with a letter or digit"
        )
    return name


def _concrete(topic: str, machine: str | None) -> str:
    """A subscription's topic as one machine publishes it: ``{machine}`` filled, ``{signal}``
    (and wildcards) left as ACL wildcards."""
    if machine is not None:
        topic = topic.replace("{machine}", machine)
    return _PLACEHOLDER.sub("+", topic)


class _Users:
    """Identities by username, merged when two adapters name the same device."""

    def __init__(self) -> None:
        self.by_name: dict[str, Identity] = {}

    def get(self, username: str, program: Program, role: str) -> Identity:
        _check_username(username, role)
        found = self.by_name.get(username)
        if found is None:
            found = self.by_name[username] = Identity(username, program, role)
        elif found.program != program:
            raise IdentityError(
                f"{role} and {found.role} would both log in as {username!r}: give one of "
                "them another client id"
            )
        return found


def plan_identities(site: SiteConfig) -> BrokerPlan:
    """The broker users of ``site``: the MES, each gateway connection, each device."""
    broker = site.mqtt or MqttSettings()
    users = _Users()
    notes: list[str] = []
    name = site.site

    mes = users.get(contract.mes_client_id(name), "mes", "the MES")
    mes.grant("read", contract.event_subscription(name))
    mes.grant("readwrite", contract.context_subscription(name))

    if site.mes_link is not None:
        link_id = site.mes_link.client_id or f"{broker.client_id}-mes"
        link = users.get(link_id, "gateway", "the gateway's MES link")
        link.grant("read", contract.context_subscription(name))
        if site.mes_link.events:
            link.grant("write", contract.event_subscription(name))
    else:
        notes.append("no mes_link: the gateway gets no MES-link user (no events, no context)")

    if broker.username is not None:
        notes.append(
            f"mqtt.username ({broker.username!r}) is set in the site config: remove it (and "
            "mqtt.password); gateway.env makes each connection log in as its client id"
        )
    for adapter in site.adapters:
        _adapter_users(adapter, site, users, notes)
    return BrokerPlan(name, broker.address, list(users.by_name.values()), notes)


def _adapter_users(
    adapter: AdapterConfigBase, site: SiteConfig, users: _Users, notes: list[str]
) -> None:
    if not isinstance(adapter, BrokerAdapterConfig):
        return  # OPC UA, Modbus: not on the broker
    where = f"adapter {adapter.name}"
    if adapter.broker is not None:
        own = adapter.connection().address
        same = own == (site.mqtt or MqttSettings()).address
        notes.append(
            f"{where} has its own broker {own}: not in these files"
            + (
                " (it is this broker's address: remove its `broker:` to use the generated user)"
                if same
                else " (that broker needs its own users and ACL)"
            )
        )
        return
    connection = adapter.connection()
    if adapter.username is not None:
        notes.append(
            f"{where} sets its own username: remove `username`/`password` from it to log in "
            f"as the generated user {connection.client_id!r}"
        )
    user = users.get(connection.client_id, "gateway", f"gateway {where}")
    if isinstance(adapter, MqttAdapterConfig):
        _mqtt_adapter(adapter, site, user, users, notes)
    elif isinstance(adapter, SparkplugAdapterConfig):
        _sparkplug_adapter(adapter, user, users)
    else:
        notes.append(
            f"{where} (type {adapter.type}): its topics are unknown here; its user "
            f"{user.username!r} may connect but use no topic until the ACL grants one"
        )


def _mqtt_adapter(
    adapter: MqttAdapterConfig,
    site: SiteConfig,
    gateway: Identity,
    users: _Users,
    notes: list[str],
) -> None:
    declared = [m.id for m in site.machines]
    for sub in adapter.subscriptions:
        gateway.grant("read", sub.filter)
        wild = _PLACEHOLDER.sub("", sub.topic)
        if sub.machine is not None and ("+" in wild or "#" in wild):
            notes.append(
                f"adapter {adapter.name}: machine {sub.machine} may publish on "
                f"{_concrete(sub.topic, None)!r} (a wildcard of its subscription): write the "
                "device's own topic level instead of '+' to narrow it"
            )
        machines: Iterable[str] = [sub.machine] if sub.machine is not None else declared
        for machine in machines:
            device = users.get(
                f"{MACHINE_PREFIX}{machine}", "device", f"machine {machine} (MQTT publisher)"
            )
            device.grant("write", _concrete(sub.topic, machine))


def _sparkplug_adapter(adapter: SparkplugAdapterConfig, gateway: Identity, users: _Users) -> None:
    group = adapter.group_id
    for node in adapter.edge_nodes():
        base = f"{NAMESPACE}/{group}/+/{node}"
        gateway.grant("read", base)  # the adapter's own filters (adapter.filters())
        gateway.grant("read", f"{base}/+")
        gateway.grant("write", f"{NAMESPACE}/{group}/NCMD/{node}")  # rebirth requests
        user = users.get(
            f"{EDGE_NODE_PREFIX}{group}-{node}", "device", f"Sparkplug edge node {group}/{node}"
        )
        for kind in ("NBIRTH", "NDATA", "NDEATH"):
            user.grant("write", f"{NAMESPACE}/{group}/{kind}/{node}")
        for kind in ("DBIRTH", "DDATA", "DDEATH"):
            user.grant("write", f"{NAMESPACE}/{group}/{kind}/{node}/+")
        user.grant("read", f"{NAMESPACE}/{group}/NCMD/{node}")
        user.grant("read", f"{NAMESPACE}/{group}/DCMD/{node}/+")
