"""InfluxDB line protocol for our one schema (see microfactory.contract and docs/wire-contract.md)."""

from __future__ import annotations

from microfactory.contract import (
    FIELD_TEXT,
    FIELD_VALUE,
    MEASUREMENT_TELEMETRY,
    TAG_MACHINE,
    TAG_QUALITY,
    TAG_SIGNAL,
    TAG_SITE,
    TAG_UNIT,
)

from .sample import Sample

_TAG_ESCAPE = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})


def _tag(v: str) -> str:
    return v.translate(_TAG_ESCAPE)


def _string_field(v: str) -> str:
    # only backslash and double quote are escaped in a string field; a newline stays literal
    # inside the quotes (escaping it would store a backslash and an "n" instead)
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode(sample: Sample, site: str) -> str:
    """One line; tags sorted by key as InfluxDB prefers, empty tags omitted."""
    tags = {
        TAG_MACHINE: sample.machine,
        TAG_QUALITY: sample.quality,
        TAG_SIGNAL: sample.signal,
        TAG_SITE: site,
    }
    if sample.unit:
        tags[TAG_UNIT] = sample.unit
    for k, v in sample.tags.items():
        if v:
            tags[k] = v
    tag_str = ",".join(f"{k}={_tag(tags[k])}" for k in sorted(tags) if tags[k])
    if isinstance(sample.value, str):
        field = f"{FIELD_TEXT}={_string_field(sample.value)}"
    else:
        field = f"{FIELD_VALUE}={float(sample.value)!r}"
    return f"{MEASUREMENT_TELEMETRY},{tag_str} {field} {sample.ts_ns}"


def encode_batch(samples: list[Sample], site: str) -> bytes:
    return "\n".join(encode(s, site) for s in samples).encode()
