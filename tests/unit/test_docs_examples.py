"""The JSON examples in docs/schemas.md are valid messages of the topic they are labelled with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamproc.schemas import DOCUMENTED_MESSAGES, parse_call_event

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
