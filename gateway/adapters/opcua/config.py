"""Site-config model of the OPC UA adapter (``type: opcua``).

Secure by default: without a word in the config the adapter asks for Basic256Sha256 with
SignAndEncrypt, a client certificate (made once in the gateway's state directory when none
is given) and a server certificate found in the trust directory. Talking in clear text to a
machine is a decision someone writes down (``allow_insecure: true``), never a default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ...sdk import AdapterConfigBase, check_unit

_NODE = re.compile(r"^(?:nsu=(?P<uri>[^;]+);)?(?P<kind>[isgb])=(?P<ident>.+)$", re.DOTALL)

SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]
SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]
TimestampChoice = Literal["source", "server", "receive"]


def check_node_id(v: str) -> str:
    """A node id as the config writes it: ``nsu=`` URI or the adapter's namespace, never an index."""
    if v.startswith("ns="):
        raise ValueError(
            f"node {v!r} names its namespace by index; use 'nsu=<namespace URI>;...' or set "
            "namespace_uri (indexes may change when the server restarts)"
        )
    if not _NODE.match(v):
        raise ValueError(f"node {v!r} is not a node id like 'nsu=urn:x;s=Name' or 's=Name'")
    return v


def node_id_parts(v: str) -> tuple[str | None, str, str]:
    """(namespace URI or None, identifier kind ``i``/``s``/``g``/``b``, identifier)."""
    m = _NODE.match(v)
    if m is None:
        raise ValueError(f"node {v!r} is not a node id like 'nsu=urn:x;s=Name' or 's=Name'")
    return m.group("uri"), m.group("kind"), m.group("ident")


class Deadband(BaseModel):
    """A data-change filter: the server reports a change only when it exceeds the band."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["absolute", "percent"] = Field(
        description=(
            "`absolute`: in the node's own unit. `percent`: of the node's EURange (the "
            "server refuses it for a node without EURange)."
        )
    )
    value: float = Field(gt=0, description="Width of the band.")

    @model_validator(mode="after")
    def _percent(self) -> Self:
        if self.type == "percent" and self.value > 100:
            raise ValueError(f"a percent deadband is at most 100, got {self.value}")
        return self


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(
        description=(
            "`nsu=<namespace URI>;s=Name`, or `s=Name` / `i=123` / `g=…` / `b=…` in"
            " the adapter's `namespace_uri`. `ns=<index>` is refused."
        )
    )
    signal: str | None = Field(
        default=None,
        description=(
            "Signal name: from the vocabulary (see the wire contract) or your own. "
            "Required unless `elements` names one signal per array element."
        ),
    )
    index: int | None = Field(
        default=None,
        ge=0,
        description="For an array value: store this element only (0 is the first).",
    )
    elements: list[str] | None = Field(
        default=None,
        min_length=1,
        description=(
            "For an array value: one signal per element, in order (`[voltage_l1, "
            "voltage_l2, voltage_l3]`); elements past the list are ignored."
        ),
    )
    unit: str | None = Field(
        default=None,
        description=(
            "Unit the server reports in; converted to the signal's canonical unit. "
            "Checked at load time. Unset: already canonical."
        ),
    )
    scale: float = Field(
        default=1.0, description="Multiply numeric values (before unit conversion)."
    )
    offset: float = Field(default=0.0, description="Add to numeric values after `scale`.")
    value_map: dict[int | str, str] | None = Field(
        default=None,
        description=(
            "Integer or text codes to the words stored (`{0: off, 1: idle, 2: running, 3: "
            "fault}`); a code not in the map is stored as bad quality. Unset, an "
            "enumeration node uses the EnumStrings/EnumValues the server declares."
        ),
    )
    mode: Literal["subscribe", "poll"] = Field(
        default="subscribe",
        description="`subscribe`: monitored item (data changes). `poll`: read every `poll_interval_ms`.",
    )
    sampling_interval_ms: float = Field(
        default=100.0, ge=0, description="Server-side sampling interval of the monitored item."
    )
    poll_interval_ms: float = Field(
        default=1000.0, ge=10, description="Read interval for `mode: poll`."
    )
    deadband: Deadband | None = Field(
        default=None,
        description="Report changes larger than this only (`{type: absolute, value: 0.5}`); subscribe mode.",
    )
    timestamp: TimestampChoice | None = Field(
        default=None, description="Overrides the adapter's `timestamp` for this node."
    )

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        return check_node_id(v)

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str | None, info: ValidationInfo) -> str | None:
        signal = info.data.get("signal")
        if v is not None and signal:
            return check_unit(signal, v)
        for name in info.data.get("elements") or ():
            check_unit(name, v)
        return v

    @field_validator("value_map")
    @classmethod
    def _value_map(cls, v: dict[int | str, str] | None) -> dict[int | str, str] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("value_map is empty; remove it or list the codes")
        # YAML writes `"2": running` as often as `2: running`: decimal text keys are integers
        out: dict[int | str, str] = {}
        for key, word in v.items():
            code: int | str = (
                int(key) if isinstance(key, str) and key.lstrip("-").isdigit() else key
            )
            if not word:
                raise ValueError(f"value_map: code {key!r} maps to an empty word")
            out[code] = word
        return out

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if (self.signal is None) == (self.elements is None):
            raise ValueError(
                f"node {self.node!r}: give either `signal` or `elements` (one signal per array element)"
            )
        if self.elements is not None and self.index is not None:
            raise ValueError(f"node {self.node!r}: `index` and `elements` exclude each other")
        if self.deadband is not None and self.mode == "poll":
            raise ValueError(
                f"node {self.node!r}: a deadband filters monitored items; it does nothing with mode: poll"
            )
        return self

    @property
    def signals(self) -> list[str]:
        """The signals this node feeds."""
        return list(self.elements) if self.elements is not None else [self.signal or ""]

    def parts(self) -> tuple[str | None, str, str]:
        """(namespace URI or None, identifier kind, identifier)."""
        return node_id_parts(self.node)


class OpcUaAdapterConfig(AdapterConfigBase):
    type: Literal["opcua"] = Field(default="opcua", description="`opcua`.")
    name: str = Field(
        description="Adapter name, unique in the file; used in logs, dead letters and the health counters."
    )
    machine: str = Field(description="The machine (declared under `machines`) all nodes belong to.")
    endpoint: str = Field(
        description="`opc.tcp://HOST:PORT[/path]`; credentials go in `username`/`password`."
    )
    namespace_uri: str | None = Field(
        default=None,
        description=(
            "Namespace URI of node ids written without `nsu=`; unset: namespace 0. "
            "Resolved to an index at every connect (indexes may change)."
        ),
    )
    security_policy: SecurityPolicy = Field(
        default="Basic256Sha256",
        description="`Basic256Sha256`, `Aes128Sha256RsaOaep`, `Aes256Sha256RsaPss`, or `None` (needs `allow_insecure`).",
    )
    security_mode: SecurityMode = Field(
        default="SignAndEncrypt",
        description="`SignAndEncrypt`, `Sign`, or `None` (needs `allow_insecure`).",
    )
    allow_insecure: bool = Field(
        default=False,
        description=(
            "Allow `security_policy: None`: values, and any password, cross the network in "
            "clear text. Write it only for a machine that offers nothing else."
        ),
    )
    certificate: Path | None = Field(
        default=None,
        description=(
            "Client application-instance certificate (DER or PEM); relative to the config "
            "file. Unset: made once in the state directory (`microfactory opcua cert` makes "
            "one by hand)."
        ),
    )
    private_key: Path | None = Field(
        default=None, description="Private key (PEM) of `certificate`; relative to the config file."
    )
    application_uri: str | None = Field(
        default=None,
        description=(
            "Application URI the client announces; must match the certificate's "
            "subjectAltName. Unset: read from `certificate`, or `urn:<host>:microfactory:gateway`."
        ),
    )
    trust_dir: Path | None = Field(
        default=None,
        description=(
            "Directory of trusted server certificates (DER or PEM; a CA certificate "
            "trusts what it signed); relative to the config file. Unset: "
            "`<state dir>/opcua/trusted`."
        ),
    )
    trust_on_first_use: bool = Field(
        default=False,
        description=(
            "Trust the server certificate seen on the first connection and store it in "
            "`trust_dir`; later a different certificate is refused."
        ),
    )
    username: str | None = Field(default=None, description="User name token; unset: anonymous.")
    password: SecretStr | None = Field(
        default=None,
        description="Password of `username`; never logged. Prefer `password_env`.",
    )
    password_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the password (read at load time).",
    )
    timestamp: TimestampChoice = Field(
        default="source",
        description=(
            "Which time a sample gets: `source` (the device's; the server's when there is "
            "none), `server`, or `receive` (the gateway's clock)."
        ),
    )
    companion: Literal["off", "auto"] = Field(
        default="off",
        description=(
            "`auto`: find OPC 40001-1 Machinery / OPC 40501-1 Machine Tools objects at "
            "connect and read `state`, `part_count`, `good_count`, `scrap_count` from them "
            "(nodes you list win for the same signal)."
        ),
    )
    publishing_interval_ms: float = Field(
        default=100.0, gt=0, description="Publishing interval of the one subscription per session."
    )
    queue_size: int = Field(
        default=100,
        ge=0,
        description="Server-side queue per monitored item: data changes kept between two publishes.",
    )
    timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description=(
            "Timeout of connecting and of every read; a read that times out ends "
            "the session and starts a reconnect."
        ),
    )
    # with timeout_s, bounds how long data stays away after the server is back (<= 30 s)
    reconnect_max_s: float = Field(
        default=10.0,
        ge=1,
        le=600,
        description="Longest pause between reconnect attempts (the pause doubles from 0.5 s).",
    )
    watchdog_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description=(
            "How often the session is probed (reads the server state): a blackholed"
            " network is noticed within `watchdog_s + timeout_s`."
        ),
    )
    nodes: list[NodeSpec] = Field(
        default_factory=list,
        description="The nodes to read (at least one, unless `companion: auto`).",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise ValueError(f"expected opc.tcp://HOST:PORT[/path], got {v!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "the endpoint holds credentials (user:password@); write username and "
                "password (or password_env) instead, so they are sent in a user token "
                "and never logged"
            )
        return v

    @model_validator(mode="after")
    def _checks(self) -> Self:
        insecure = self.security_policy == "None" or self.security_mode == "None"
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                f"security_policy {self.security_policy!r} with security_mode "
                f"{self.security_mode!r}: either both are None or neither is"
            )
        if insecure and not self.allow_insecure:
            raise ValueError(
                "security_policy None sends values (and any password) in clear text; "
                "choose Basic256Sha256 (the default) or write allow_insecure: true"
            )
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together: give both or neither")
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if (self.password is not None or self.password_env is not None) and not self.username:
            raise ValueError("a password without a username: set username too")
        if self.password_env is not None:
            secret = os.environ.get(self.password_env)
            if secret is None:
                raise ValueError(
                    f"password_env names {self.password_env!r}, which is not set in the environment"
                )
            self.password = SecretStr(secret)
        return self

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, nodes: list[NodeSpec], info: ValidationInfo) -> list[NodeSpec]:
        if not nodes and info.data.get("companion") != "auto":
            raise ValueError("list at least one node (or set companion: auto)")
        namespace = info.data.get("namespace_uri") or ""
        seen: dict[tuple[str, int | None], int] = {}
        for i, spec in enumerate(nodes):
            uri, kind, ident = spec.parts()
            key = (f"nsu={uri or namespace};{kind}={ident}", spec.index)
            if key in seen:
                raise ValueError(
                    f"nodes[{i}]: node {spec.node!r}"
                    + (f" index {spec.index}" if spec.index is not None else "")
                    + f" is already mapped by nodes[{seen[key]}]; one node feeds one mapping"
                )
            seen[key] = i
        return nodes

    def machines_referenced(self) -> set[str]:
        return {self.machine}

    def signals_referenced(self) -> set[tuple[str, str]]:
        out = set()
        for node in self.nodes:
            for signal in (node.signal, *(node.elements or ())):
                if signal:
                    out.add((self.machine, signal))
        return out

    def with_base_dir(self, base: Path) -> Self:
        """Relative certificate, key and trust paths are taken from the config file's folder."""
        changes = {
            name: base / path
            for name in ("certificate", "private_key", "trust_dir")
            if (path := getattr(self, name)) is not None and not path.is_absolute()
        }
        return self.model_copy(update=changes) if changes else self

    @property
    def secure(self) -> bool:
        return self.security_policy != "None"
