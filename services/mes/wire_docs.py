"""The wire contract's JSON Schemas, rendered into docs/mes.md (``microfactory mes schemas``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter

from microfactory.contract import CONTRACT_VERSION, MachineContext, MachineEvent

BEGIN = "<!-- BEGIN GENERATED: wire contract JSON Schemas (microfactory mes schemas) -->"
END = "<!-- END GENERATED -->"


def contract_schemas() -> dict[str, dict[str, object]]:
    """JSON Schema of the retained context and of the event union, from the pydantic models."""
    return {
        "MachineContext": MachineContext.model_json_schema(),
        "MachineEvent": TypeAdapter(MachineEvent).json_schema(),
    }


def render() -> str:
    parts = [BEGIN, "", f"Contract version {CONTRACT_VERSION}.", ""]
    for name, schema in contract_schemas().items():
        parts += [f"#### {name}", "", "```json", json.dumps(schema, indent=2), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def update(doc: Path) -> bool:
    """Replace the generated section of ``doc``; True if the file changed."""
    text = doc.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + render() + text[end:]
    if new == text:
        return False
    doc.write_text(new, encoding="utf-8")
    return True
