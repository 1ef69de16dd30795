"""Site-config model of the OPC UA adapter (``type: opcua``)."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ...sdk import AdapterConfigBase, check_unit

_NODE = re.compile(r"^(?:nsu=(?P<uri>[^;]+);)?(?P<kind>[isgb])=(?P<ident>.+)$", re.DOTALL)


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(
        description=(
            "`nsu=<namespace URI>;s=Name`, or `s=Name` / `i=123` / `g=…` / `b=…` in"
            " the adapter's `namespace_uri`. `ns=<index>` is refused."
        )
    )
    signal: str = Field(
        description="Signal name: from the vocabulary (see the wire contract) or your own."
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

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        if v.startswith("ns="):
            raise ValueError(
                f"node {v!r} names its namespace by index; use 'nsu=<namespace URI>;...' or set "
                "namespace_uri (indexes may change when the server restarts)"
            )
        if not _NODE.match(v):
            raise ValueError(f"node {v!r} is not a node id like 'nsu=urn:x;s=Name' or 's=Name'")
        return v

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str | None, info: ValidationInfo) -> str | None:
        signal = info.data.get("signal")
        return check_unit(signal, v) if signal else v

    def parts(self) -> tuple[str | None, str, str]:
        """(namespace URI or None, identifier kind, identifier)."""
        m = _NODE.match(self.node)
        assert m is not None  # checked by the validator
        return m.group("uri"), m.group("kind"), m.group("ident")


class OpcUaAdapterConfig(AdapterConfigBase):
    type: Literal["opcua"] = Field(default="opcua", description="`opcua`.")
    name: str = Field(
        description="Adapter name, unique in the file; used in logs, dead letters and the health counters."
    )
    machine: str = Field(description="The machine (declared under `machines`) all nodes belong to.")
    endpoint: str = Field(description="`opc.tcp://HOST:PORT[/path]`.")
    namespace_uri: str | None = Field(
        default=None,
        description=(
            "Namespace URI of node ids written without `nsu=`; unset: namespace 0. "
            "Resolved to an index at every connect (indexes may change)."
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
    nodes: list[NodeSpec] = Field(min_length=1, description="The nodes to read (at least one).")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise ValueError(f"expected opc.tcp://HOST:PORT[/path], got {v!r}")
        return v

    def machines_referenced(self) -> set[str]:
        return {self.machine}
