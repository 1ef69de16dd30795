"""OPC UA data types as the gateway sees them: which it stores, which are codes or text.

A variable's DataType is often a vendor subtype (``MyInt16Code`` below ``Int16``, an
enumeration below ``Enumeration``); what the gateway can do with the value depends on the
built-in ancestor. :func:`data_types` walks HasSubtype upwards to find it, and
:func:`enumeration_types` finds the integer subtypes that carry EnumStrings/EnumValues of
their own (OPC 10000-3 § 5.8.3), which the adapter reads as words.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds

from .batched import browse_children, node_key, read_attributes, value_of

# Data types the gateway stores (numbers, text, Boolean, DateTime, enumerations), by the
# name of their built-in ancestor; structures, byte strings, node ids and GUIDs are not.
STORABLE_TYPES = {
    "Boolean",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
    "DateTime",
    "LocalizedText",
    "QualifiedName",
    "Number",
    "Integer",
    "UInteger",
    "Enumeration",
    "BaseDataType",
}
INTEGER_TYPES = {
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Integer",
}
TEXT_TYPES = {"String", "LocalizedText", "QualifiedName"}


def storable_value(value: Any) -> bool:
    """A value of type BaseDataType (any): storable when it is, at run time, one we store."""
    if isinstance(value, list):
        return bool(value) and all(storable_value(v) for v in value)
    return isinstance(
        value, bool | int | float | str | datetime | ua.LocalizedText | ua.QualifiedName
    )


def is_builtin(node_id: ua.NodeId) -> bool:
    """A built-in data type (Boolean … Enumeration): namespace 0, identifier below 30."""
    return (
        node_id.NamespaceIndex == 0
        and isinstance(node_id.Identifier, int)
        and node_id.Identifier < 30
    )


def _type_name(node_id: ua.NodeId) -> str | None:
    if node_id.NamespaceIndex == 0 and isinstance(node_id.Identifier, int):
        return ObjectIdNames.get(node_id.Identifier)
    return None


async def _browse_name(client: Client, node_id: ua.NodeId) -> str:
    (dv,) = await read_attributes(client, [(node_id, AttributeIds.BrowseName)])
    value = value_of(dv)
    return value.Name if isinstance(value, ua.QualifiedName) else str(node_id)


async def _supertype(client: Client, node_id: ua.NodeId) -> ua.NodeId | None:
    (refs,) = await browse_children(
        client,
        [node_id],
        reference=ObjectIds.HasSubtype,
        node_classes=0,
        direction=ua.BrowseDirection.Inverse,
    )
    return refs[0].NodeId if refs else None


async def _has_enum_strings(client: Client, dtype: ua.NodeId) -> bool:
    (refs,) = await browse_children(
        client, [dtype], reference=ObjectIds.HasProperty, node_classes=0
    )
    return any(r.BrowseName.Name in {"EnumStrings", "EnumValues"} for r in refs)


async def data_types(
    client: Client, ids: Iterable[ua.NodeId]
) -> dict[tuple[int, str], tuple[str, str]]:
    """Data type id → (its name, its built-in ancestor's name), walking HasSubtype upwards."""
    out: dict[tuple[int, str], tuple[str, str]] = {}
    for dtype in ids:
        if node_key(dtype) in out:
            continue
        name = _type_name(dtype) or await _browse_name(client, dtype)
        current: ua.NodeId | None = dtype
        base = "Structure"
        for _ in range(32):  # a type hierarchy deeper than this is a loop
            if current is None:
                break
            if is_builtin(current):
                base = _type_name(current) or "Structure"
                break
            current = await _supertype(client, current)
        out[node_key(dtype)] = (name, base)
    return out


async def enumeration_types(
    client: Client,
    ids: Sequence[ua.NodeId],
    types: dict[tuple[int, str], tuple[str, str]],
) -> set[tuple[int, str]]:
    """Keys of the data types among ``ids`` whose values are enumeration codes."""
    # an integer subtype with EnumStrings of its own is an enumeration too (OPC 10000-3 § 5.8.3)
    derived = {
        node_key(d): d for d in ids if not is_builtin(d) and types[node_key(d)][1] in INTEGER_TYPES
    }
    return {k for k, (_, base) in types.items() if base == "Enumeration"} | {
        k for k, d in derived.items() if await _has_enum_strings(client, d)
    }
