"""Walk an OPC UA server's address space: what an integrator needs to write a site config.

An integrator facing a controller nobody documented needs the node ids, in the ``nsu=`` form
the config accepts (namespace indexes move when a server restarts), with each variable's
data type, value, access and EngineeringUnits. :func:`walk` reads the tree below ``Objects``
level by level, in a few batched requests per level, bounded in depth and in node count;
:func:`browse_server` connects as the adapter would (secured, trust list checked), walks, and
asks :mod:`.companion` for the standard objects it recognises. What the nodes are called is
:mod:`.proposals`' business, the written config :mod:`.snippet`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaStatusCodeError

from .batched import (
    UnknownNamespace,
    browse_children,
    node_key,
    ns0,
    nsu_node_id,
    read_attributes,
    value_of,
)
from .companion import CompanionNode, discover
from .config import OpcUaAdapterConfig
from .connect import (
    client_identity,
    disconnect,
    list_endpoints,
    open_client,
    trust_list,
)
from .datatypes import (
    INTEGER_TYPES,
    STORABLE_TYPES,
    data_types,
    enumeration_types,
    storable_value,
)
from .proposals import config_unit
from .status import status_name

DEFAULT_DEPTH = 8
DEFAULT_MAX_NODES = 2000

log = logging.getLogger(__name__)


class BrowseError(Exception):
    """The server could not be browsed; the message says what to do."""


@dataclass(frozen=True, slots=True)
class BrowsedNode:
    """One Object or Variable of the tree, as the config and the printed tree need it."""

    depth: int
    browse_name: str
    node: str  # nsu= form
    node_class: Literal["Object", "Variable"]
    browse_path: str  # "Machine/ActivePower", below Objects
    data_type: str = ""
    base_type: str = ""  # the built-in ancestor of data_type: Double, Enumeration, Structure
    value: Any = None
    status: str = "Good"
    array_length: int | None = None  # None: a scalar
    readable: bool = True
    unit: str | None = None  # in the config's spelling
    unit_unknown: str | None = None  # an EngineeringUnits entry not mapped to a config unit
    enum: bool = False  # integer codes with EnumStrings/EnumValues (node or data type)
    more: bool = False  # has children past the depth limit

    @property
    def storable(self) -> bool:
        """A readable Variable of a type the gateway stores."""
        if self.node_class != "Variable" or not self.readable:
            return False
        if self.base_type == "BaseDataType":
            return storable_value(self.value)
        return self.base_type in STORABLE_TYPES


@dataclass(frozen=True, slots=True)
class BrowseResult:
    """What one browse found: the server's names, the tree, the companion proposals."""

    endpoint: str
    application_name: str
    application_uri: str
    nodes: list[BrowsedNode]
    truncated: bool
    companion: list[CompanionNode] = field(default_factory=list)


# --------------------------------------------------------------------------- the walk
@dataclass(slots=True)
class _Pending:
    """A node found by Browse, waiting for its attributes and properties."""

    node_id: ua.NodeId
    parent: ua.NodeId | None
    depth: int
    browse_name: str
    node_class: Literal["Object", "Variable"]
    path: str
    properties: dict[str, ua.NodeId] = field(default_factory=dict)
    more: bool = False


def _local(ref: ua.ExpandedNodeId, namespaces: Sequence[str]) -> ua.NodeId | None:
    """The plain NodeId of a reference target (its namespace by index)."""
    idx = int(ref.NamespaceIndex)
    uri = getattr(ref, "NamespaceUri", None)  # asyncua decodes plain NodeIds when it can
    if uri:
        if uri not in namespaces:
            return None
        idx = namespaces.index(uri)
    return ua.NodeId(ref.Identifier, ua.Int16(idx), ref.NodeIdType)


_REFUSED = {"BadNotReadable", "BadUserAccessDenied", "BadSecurityModeInsufficient"}


def _can_read(access: Any) -> bool:
    return isinstance(access, int) and bool(access & ua.AccessLevel.CurrentRead.mask)


async def walk(
    client: Client, *, max_depth: int = DEFAULT_DEPTH, max_nodes: int = DEFAULT_MAX_NODES
) -> tuple[list[BrowsedNode], bool]:
    """Objects and readable Variables below ``Objects``, in tree order; (nodes, truncated).

    Namespace 0 (the server's own diagnostics) is left out, and so are properties
    (EngineeringUnits, EURange, EnumStrings, …): they describe a variable, they are not
    values of the machine. Each level costs one Browse and one Read per 200 nodes.
    """
    if max_depth < 1 or max_nodes < 1:
        raise ValueError("max_depth and max_nodes must be at least 1")
    namespaces = await client.get_namespace_array()
    root = ns0(ObjectIds.ObjectsFolder)
    found: dict[tuple[int, str], _Pending] = {}
    children: dict[tuple[int, str], list[_Pending]] = {}
    truncated = False
    parents: list[ua.NodeId] = [root]
    parent_items: list[_Pending | None] = [None]
    depth = 1
    while parents:
        results = await browse_children(client, parents)
        level = []
        for parent, item, refs in zip(parents, parent_items, results, strict=True):
            for ref in refs:
                name = ref.BrowseName.Name or ""
                if ref.ReferenceTypeId == ns0(ObjectIds.HasProperty):
                    if item is not None:
                        item.properties[name] = ref.NodeId
                    continue
                node_id = _local(ref.NodeId, namespaces)
                elsewhere = bool(getattr(ref.NodeId, "ServerIndex", None))
                if node_id is None or node_id.NamespaceIndex == 0 or elsewhere:
                    continue  # the server's own nodes, or another server's
                if depth > max_depth:
                    if item is not None:
                        item.more = True
                    continue
                if node_key(node_id) in found:
                    continue  # reached twice (Organizes and HasComponent): listed once
                if len(found) >= max_nodes:
                    truncated = True
                    continue
                kind: Literal["Object", "Variable"] = (
                    "Variable" if ref.NodeClass == ua.NodeClass.Variable else "Object"
                )
                path = f"{item.path}/{name}" if item is not None else name
                pending = _Pending(node_id, parent, depth, name, kind, path)
                found[node_key(node_id)] = pending
                children.setdefault(node_key(parent), []).append(pending)
                level.append(pending)
        parents = [p.node_id for p in level]
        parent_items = list(level)
        depth += 1
    variables = [p for p in found.values() if p.node_class == "Variable"]
    attrs = (
        AttributeIds.Value,
        AttributeIds.DataType,
        AttributeIds.AccessLevel,
        AttributeIds.UserAccessLevel,
    )
    values = await read_attributes(client, [(v.node_id, a) for v in variables for a in attrs])
    props = [
        (v, name, nid)
        for v in variables
        for name, nid in v.properties.items()
        if name in {"EngineeringUnits", "EnumStrings", "EnumValues"}
    ]
    prop_values = await read_attributes(client, [(nid, AttributeIds.Value) for _, _, nid in props])
    by_var: dict[tuple[int, str], dict[str, Any]] = {}
    for (v, name, _), dv in zip(props, prop_values, strict=True):
        by_var.setdefault(node_key(v.node_id), {})[name] = value_of(dv)
    dtype_ids = [
        value_of(values[i * len(attrs) + 1])
        for i in range(len(variables))
        if isinstance(value_of(values[i * len(attrs) + 1]), ua.NodeId)
    ]
    types = await data_types(client, dtype_ids)
    enum_types = await enumeration_types(client, dtype_ids, types)
    done: dict[tuple[int, str], BrowsedNode] = {}
    for p in found.values():
        done[node_key(p.node_id)] = BrowsedNode(
            depth=p.depth,
            browse_name=p.browse_name,
            node=nsu_node_id(p.node_id, namespaces),
            node_class=p.node_class,
            browse_path=p.path,
            more=p.more,
        )
    for i, v in enumerate(variables):
        value_dv, dtype_dv, access_dv, user_dv = values[i * len(attrs) : (i + 1) * len(attrs)]
        dtype = value_of(dtype_dv)
        name, base = (
            types.get(node_key(dtype), ("?", "Structure"))
            if isinstance(dtype, ua.NodeId)
            else ("?", "BaseDataType")
        )
        value = value_of(value_dv)
        status = status_name(value_dv.StatusCode)
        readable = _can_read(value_of(access_dv)) and status not in _REFUSED
        user = value_of(user_dv)
        if user is not None:  # what this session's user may read (a server may not say)
            readable = readable and _can_read(user)
        extra = by_var.get(node_key(v.node_id), {})
        unit, unknown = config_unit(extra.get("EngineeringUnits"))
        enum = base == "Enumeration" or (
            base in INTEGER_TYPES
            and (
                bool(extra.get("EnumStrings"))
                or bool(extra.get("EnumValues"))
                or (isinstance(dtype, ua.NodeId) and node_key(dtype) in enum_types)
            )
        )
        done[node_key(v.node_id)] = replace(
            done[node_key(v.node_id)],
            data_type=name,
            base_type=base,
            value=value,
            status=status,
            array_length=len(value) if isinstance(value, list) else None,
            readable=readable,
            unit=unit,
            unit_unknown=unknown,
            enum=enum,
        )
    ordered: list[BrowsedNode] = []

    def visit(parent: ua.NodeId) -> None:
        for child in children.get(node_key(parent), []):
            ordered.append(done[node_key(child.node_id)])
            visit(child.node_id)

    visit(root)
    return ordered, truncated


# --------------------------------------------------------------------------- one browse
async def application_name(cfg: OpcUaAdapterConfig) -> tuple[str, str]:
    """(ApplicationName, ApplicationUri) the server announces, asked without security."""
    endpoints = await list_endpoints(cfg.endpoint, cfg.timeout_s)
    if not endpoints:
        raise BrowseError(f"{cfg.endpoint} answered GetEndpoints with no endpoint")
    app = endpoints[0].Server
    return (app.ApplicationName.Text or "" if app.ApplicationName else ""), app.ApplicationUri or ""


async def browse_server(
    cfg: OpcUaAdapterConfig,
    *,
    state_dir: Path,
    max_depth: int = DEFAULT_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
) -> BrowseResult:
    """Connect as ``cfg`` says (secured, trust list checked), walk, and ask for companions."""
    name, uri = await application_name(cfg)
    client = await open_client(cfg, state_dir=state_dir, log=log)
    try:
        nodes, truncated = await walk(client, max_depth=max_depth, max_nodes=max_nodes)
        companion = await discover(client, max_nodes=max_nodes)
    except UnknownNamespace as err:
        raise BrowseError(f"{cfg.endpoint}: {err}") from err
    except UaStatusCodeError as err:
        raise BrowseError(
            f"{cfg.endpoint} refused a browse or read: {status_name(err.code)}"
        ) from err
    finally:
        await disconnect(client)
    return BrowseResult(cfg.endpoint, name, uri, nodes, truncated, companion)


def identity_paths(cfg: OpcUaAdapterConfig, state_dir: Path) -> tuple[Path, Path, Path]:
    """(client certificate, private key, trust dir) a secured browse used for ``cfg``."""
    ident = client_identity(cfg, state_dir)
    return ident.certificate, ident.private_key, trust_list(cfg, state_dir).trust_dir
