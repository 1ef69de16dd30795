"""The wire contract's receiver checks without a broker: signatures, bounds, topic agreement,
size caps and the rate-limited refusal log (issue 12, findings 1 and 2)."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from microfactory import contract
from microfactory.contract import Refused, SignatureError, open_signed, sign

KEY = "k" * 32
OTHER_KEY = "o" * 32
TOPIC = contract.event_topic("demo", "mill-1")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
topics = st.text(min_size=1, max_size=80).filter(lambda t: "\x00" not in t)


def _encode(obj: dict[str, object], compact: bool) -> bytes:
    seps = (",", ":") if compact else (", ", ": ")
    return json.dumps(obj, separators=seps, ensure_ascii=False).encode()


@given(objects, topics, st.booleans())
def test_sign_then_open_gives_the_body_back_byte_for_byte(
    obj: dict[str, object], topic: str, compact: bool
) -> None:
    body = _encode(obj, compact)
    signed = sign(KEY, topic, body)
    assert open_signed(KEY, topic, signed) == body
    assert open_signed(None, topic, signed) == body  # no key: stripped, not checked
    assert json.loads(signed)[contract.SIG_MEMBER]  # still one JSON object, sig included
    assert json.loads(open_signed(KEY, topic, signed)) == obj


@given(objects, topics, st.data())
def test_any_change_of_body_topic_or_key_is_detected(
    obj: dict[str, object], topic: str, data: st.DataObject
) -> None:
    body = _encode(obj, True)
    signed = sign(KEY, topic, body)
    with pytest.raises(SignatureError) as other_key:
        open_signed(OTHER_KEY, topic, signed)
    assert other_key.value.reason == "bad"
    other_topic = data.draw(topics.filter(lambda t: t != topic))
    with pytest.raises(SignatureError) as moved:
        open_signed(KEY, other_topic, signed)
    assert moved.value.reason == "bad"
    # flip one byte anywhere: refused, whatever the reason (bad MAC, malformed, missing)
    at = data.draw(st.integers(0, len(signed) - 1))
    flipped = bytes([signed[at] ^ data.draw(st.integers(1, 255))])
    tampered = signed[:at] + flipped + signed[at + 1 :]
    with pytest.raises(SignatureError):
        open_signed(KEY, topic, tampered)


def test_signature_reasons() -> None:
    body = b'{"a":1}'
    with pytest.raises(SignatureError) as missing:
        open_signed(KEY, TOPIC, body)
    assert missing.value.reason == "missing"
    signed = sign(KEY, TOPIC, body)
    not_last = b'{"sig":"' + signed[-66:-2] + b'","a":1}'
    with pytest.raises(SignatureError) as malformed:
        open_signed(KEY, TOPIC, not_last)
    assert malformed.value.reason == "malformed"
    upper = signed[:-66] + signed[-66:-2].upper() + b'"}'
    with pytest.raises(SignatureError) as hex_case:
        open_signed(KEY, TOPIC, upper)
    assert hex_case.value.reason == "malformed"
    assert open_signed(KEY, TOPIC, signed + b"\n") == body  # a tool's trailing newline is fine
    with pytest.raises(ValueError, match="one JSON object"):
        sign(KEY, TOPIC, b"[1]")


def test_short_signing_keys_are_refused_naming_the_variable() -> None:
    from microfactory.gateway.config import MesLinkSettings
    from microfactory.mes.settings import MesSettings

    with pytest.raises(ValidationError, match="MICROFACTORY_MES__MQTT_SIGNING_KEY: at least 32"):
        MesSettings(mqtt_signing_key="short")
    with pytest.raises(ValidationError, match="MICROFACTORY_MES_LINK__SIGNING_KEY"):
        MesLinkSettings(signing_key="")
    settings = MesLinkSettings(signing_key=KEY)
    assert KEY not in repr(settings)
    assert KEY not in repr(MesSettings(mqtt_signing_key=KEY))


def _event(**over: object) -> dict[str, object]:
    event: dict[str, object] = {
        "kind": "part_completed",
        "event_id": "demo/mill-1/part/1/1",
        "site": "demo",
        "machine": "mill-1",
        "ts_ns": 1,
        "part_count": 1,
    }
    event.update(over)
    return event


def _refusal(topic: str, payload: bytes, key: str | None = None) -> str:
    with pytest.raises(Refused) as refused:
        contract.receive_event(topic, payload, site="demo", key=key)
    return refused.value.reason


def test_receive_event_requires_topic_site_and_machine_to_agree() -> None:
    good = json.dumps(_event()).encode()
    assert contract.receive_event(TOPIC, good, site="demo").machine == "mill-1"
    assert _refusal(contract.event_topic("demo", "lathe-1"), good) == "machine"
    assert _refusal(contract.event_topic("other", "mill-1"), good) == "site"
    assert _refusal(TOPIC, json.dumps(_event(site="other")).encode()) == "site"
    assert _refusal(contract.context_topic("demo", "mill-1"), good) == "topic"
    assert _refusal(f"{contract.TOPIC_ROOT}/demo/events/mill-1/x", good) == "topic"
    assert _refusal(TOPIC, b"") == "empty"
    assert _refusal(TOPIC, b"{") == "invalid"
    too_big = json.dumps(_event(pad="x" * contract.MAX_EVENT_BYTES)).encode()
    assert _refusal(TOPIC, too_big) == "too_large"


def test_receive_event_with_a_key() -> None:
    good = json.dumps(_event()).encode()
    assert _refusal(TOPIC, good, KEY) == "signature_missing"
    assert _refusal(TOPIC, sign(OTHER_KEY, TOPIC, good), KEY) == "signature_bad"
    moved = sign(KEY, contract.event_topic("demo", "lathe-1"), good)
    assert _refusal(TOPIC, moved, KEY) == "signature_bad"
    assert contract.receive_event(TOPIC, sign(KEY, TOPIC, good), site="demo", key=KEY).kind == (
        "part_completed"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("machine", "m" * 65),
        ("machine", "a/b"),
        ("site", ""),
        ("batch", "B" * 129),
        ("batch", "B1\n"),
        ("operator", "x\x1b[31m"),
        ("operation", "o" * 257),
        ("product", "p\x85"),
    ],
)
def test_context_fields_are_bounded(field: str, value: str) -> None:
    ctx = {"site": "demo", "machine": "mill-1", "since_ns": 1, "order": "SO-1", field: value}
    topic = contract.context_topic("demo", "mill-1")
    with pytest.raises(Refused) as refused:
        contract.receive_context(topic, json.dumps(ctx).encode(), site="demo")
    assert refused.value.reason in {"invalid", "site", "machine"}
    assert field in refused.value.detail or refused.value.reason != "invalid"
    assert not value or value not in refused.value.detail  # hostile input is not echoed


def test_documented_examples_still_pass_the_bounds() -> None:
    ctx = (
        b'{"contract_version": 1, "site": "workshop", "machine": "mill-1", "order": "SO-1001",'
        b' "batch": "SO-1001-01", "operation": "10:milling", "operator": "anna", '
        b'"product": "bracket-a", "since_ns": 1718000000000000000}'
    )
    got = contract.receive_context(
        contract.context_topic("workshop", "mill-1"), ctx, site="workshop"
    )
    assert got.batch == "SO-1001-01"
    # the MES's longest operation text: "<seq>:<200-character name>"
    assert contract.MachineContext(
        site="s", machine="m", since_ns=0, operation="999:" + "n" * 200
    ).operation


def test_empty_context_is_refused_with_the_reason() -> None:
    with pytest.raises(Refused) as refused:
        contract.receive_context(contract.context_topic("demo", "m"), b"", site="demo")
    assert refused.value.reason == "empty"
    assert "without order" in refused.value.detail


def test_refusal_log_logs_once_per_topic_and_reason_then_summarises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    refusals = contract.RefusalLog(
        logging.getLogger("test.refusals"), "test", summary_every_s=60, clock=lambda: now[0]
    )
    caplog.set_level(logging.WARNING, "test.refusals")
    for i in range(1000):
        now[0] = i * 0.05  # 50 s in all: no summary yet
        refusals.refuse("t/a", Refused("machine", "x"))
        refusals.refuse("t/a\nFAKE LOG LINE", Refused("site", "y"))
    assert len(caplog.records) == 2
    assert all("\n" not in r.getMessage() for r in caplog.records)
    now[0] = 61.0
    refusals.refuse("t/a", Refused("machine", "x"))
    assert len(caplog.records) == 3
    assert "1999 more refused messages" in caplog.records[-1].getMessage()
    assert refusals.counts == {"machine": 1001, "site": 1000}
    assert refusals.total == 2001
