"""Browse and Read in batches, the way a Pi and a busy PLC both prefer to be asked.

The walk and the data-type lookups ask for hundreds of nodes at a time; one request per node
would take minutes on a controller answering in tens of milliseconds. These helpers send at
most :data:`CHUNK` nodes per request (below every server's MaxNodesPerRead seen) and follow
Browse continuation points, so callers see whole answers.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

CHUNK = 200  # nodes per Browse/Read request: below every server's MaxNodesPerRead seen


def ns0(identifier: int) -> ua.NodeId:
    """A standard node (namespace 0) by its numeric identifier."""
    return ua.NodeId(ua.Int32(identifier), ua.Int16(0))


def node_key(node_id: ua.NodeId) -> tuple[int, str]:
    """A hashable key for a node id that tells numeric 1 from string "1"."""
    return node_id.NamespaceIndex, repr(node_id.Identifier)


def value_of(dv: ua.DataValue) -> Any:
    """The value a read returned, None when there is none."""
    return dv.Value.Value if dv.Value is not None else None


class UnknownNamespace(ValueError):
    """A node id names a namespace index the server's NamespaceArray does not list."""


def nsu_node_id(node_id: ua.NodeId, namespaces: Sequence[str]) -> str:
    """``nsu=<namespace URI>;s=…`` (or ``i=``/``g=``/``b=``): the form a site config accepts."""
    idx = node_id.NamespaceIndex
    if idx >= len(namespaces):
        raise UnknownNamespace(
            f"node {node_id} names namespace {idx}, which the server does not list"
        )
    kind = {
        ua.NodeIdType.TwoByte: "i",
        ua.NodeIdType.FourByte: "i",
        ua.NodeIdType.Numeric: "i",
        ua.NodeIdType.String: "s",
        ua.NodeIdType.Guid: "g",
        ua.NodeIdType.ByteString: "b",
    }[node_id.NodeIdType]
    ident = node_id.Identifier
    text = base64.b64encode(ident).decode("ascii") if isinstance(ident, bytes) else str(ident)
    return f"nsu={namespaces[idx]};{kind}={text}"


async def browse_children(
    client: Client,
    parents: Sequence[ua.NodeId],
    *,
    reference: int = ObjectIds.HierarchicalReferences,
    node_classes: int = ua.NodeClass.Object | ua.NodeClass.Variable,
    direction: ua.BrowseDirection = ua.BrowseDirection.Forward,
) -> list[list[ua.ReferenceDescription]]:
    """The references of each parent (hierarchical, forward, objects and variables unless
    told otherwise; subtypes of the reference included), continuation points followed.

    ``node_classes`` 0 means every node class.
    """
    out: list[list[ua.ReferenceDescription]] = []
    for start in range(0, len(parents), CHUNK):
        chunk = parents[start : start + CHUNK]
        params = ua.BrowseParameters()
        params.View = ua.ViewDescription()
        params.RequestedMaxReferencesPerNode = 0
        params.NodesToBrowse = [
            ua.BrowseDescription(
                NodeId=parent,
                BrowseDirection=direction,
                ReferenceTypeId=ns0(reference),
                IncludeSubtypes=True,
                NodeClassMask=node_classes,
                ResultMask=ua.BrowseResultMask.All,
            )
            for parent in chunk
        ]
        for result in await client.uaclient.browse(params):
            refs = list(result.References or [])
            point = result.ContinuationPoint
            while point:
                more = ua.BrowseNextParameters()
                more.ReleaseContinuationPoints = False
                more.ContinuationPoints = [point]
                (next_result,) = await client.uaclient.browse_next(more)
                refs.extend(next_result.References or [])
                point = next_result.ContinuationPoint
            out.append(refs)
    return out


async def read_attributes(
    client: Client,
    items: Iterable[tuple[ua.NodeId, AttributeIds]],
    *,
    timestamps: ua.TimestampsToReturn = ua.TimestampsToReturn.Neither,
) -> list[ua.DataValue]:
    """One DataValue per (node, attribute), in order, each with its own status."""
    todo = [ua.ReadValueId(NodeId=n, AttributeId=a) for n, a in items]
    out: list[ua.DataValue] = []
    for start in range(0, len(todo), CHUNK):
        params = ua.ReadParameters()
        params.NodesToRead = todo[start : start + CHUNK]
        params.TimestampsToReturn = timestamps
        out.extend(await client.uaclient.read(params))
    return out
