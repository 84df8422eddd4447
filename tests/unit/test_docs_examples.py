"""The JSON examples in docs/schemas.md are valid messages of the topic they are labelled with."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streamproc.schemas import DOCUMENTED_MESSAGES, Alert, TranscriptSegment, parse_call_event

DOC = Path(__file__).resolve().parents[2] / "docs" / "schemas.md"
EXAMPLES = re.findall(r"```json (\S+)\n(.*?)```", DOC.read_text(), re.S)


def test_there_are_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("topic, text", EXAMPLES, ids=[f"{t}-{i}" for i, (t, _) in enumerate(EXAMPLES)])
def test_example_is_valid(topic, text):
    if topic == "calls.events":
        parse_call_event(text)
    else:
        DOCUMENTED_MESSAGES[topic].validate_json(text)


def test_example_ids_are_what_the_id_functions_return():
    """An example id must be the id streamproc would give that record, not a made-up UUID."""
    alert_ids = set()
    for topic, text in EXAMPLES:
        value = json.loads(text)
        if topic == "calls.alerts":
            assert value["alert_id"] == Alert.make_id(value["call_id"], value["rule_id"], value["occurrence"]), value
            alert_ids.add(value["alert_id"])
        elif topic == "calls.transcripts":
            assert value["segment_id"] == TranscriptSegment.make_id(
                value["call_id"], value["speaker"], value["utterance"], value.get("revision", 0), value["is_final"])
    assert alert_ids, "the doc shows alerts"
    for topic, text in EXAMPLES:
        if topic == "calls.acks":
            assert json.loads(text)["alert_id"] in alert_ids, "an ack acknowledges one of the example alerts"
