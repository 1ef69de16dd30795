"""OPC UA status codes by name: ``BadNodeIdUnknown``, not ``StatusCode(value=2150891520)``."""

from __future__ import annotations

from asyncua import ua
from asyncua.ua.status_codes import get_name_and_doc


def status_name(code: int | ua.StatusCode | None) -> str:
    """The status code's name from the spec's table; unknown codes in hex."""
    if code is None:
        return "Good"
    value = code.value if isinstance(code, ua.StatusCode) else int(code)
    try:
        name, _doc = get_name_and_doc(value)
    except KeyError:
        return f"0x{value:08X}"
    return name or f"0x{value:08X}"
