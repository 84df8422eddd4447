"""The AsyncAPI document (docs/asyncapi.yaml): up to date with the models, valid for the reference
AsyncAPI parser (npm @asyncapi/parser, tests/asyncapi/), and its examples are records the agents accept."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from streamproc.cli import app
from streamproc.contract import TOPICS, asyncapi_document, dump_asyncapi, example_record, parse_record
from streamproc.schemas import DOCUMENTED_MESSAGES, Alert

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "asyncapi.yaml"
VALIDATOR = ROOT / "tests" / "asyncapi"


def validate(document: dict, tmp_path: Path) -> tuple[int, dict]:
    """Run the real AsyncAPI parser on ``document``: (exit code, its report)."""
    node = shutil.which("node")
    assert node, "node is missing: scripts/install-system-deps.sh installs nodejs"
    assert (VALIDATOR / "node_modules" / "@asyncapi" / "parser").is_dir(), (
        "the AsyncAPI parser is not installed: run `make asyncapi-validator` (npm ci in tests/asyncapi)"
    )
    path = tmp_path / "asyncapi.yaml"
    path.write_text(dump_asyncapi(document))
    result = subprocess.run([node, "validate.mjs", str(path)], cwd=VALIDATOR, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_committed_document_is_up_to_date_with_the_models():
    assert DOC.read_text() == dump_asyncapi(asyncapi_document()), (
        "docs/asyncapi.yaml is stale: run `streamproc schemas --asyncapi -o docs/asyncapi.yaml`"
    )


def test_cli_writes_the_document(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["schemas", "--asyncapi", "-o", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a.json").read_text()) == asyncapi_document()
    result = runner.invoke(app, ["schemas", "--asyncapi"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout) == asyncapi_document()


def test_every_documented_topic_is_in_the_contract():
    # DOCUMENTED_MESSAGES drives `streamproc schemas`; a topic added there needs its registry entry.
    documented = {name.split(" ")[0] for name in DOCUMENTED_MESSAGES}
    assert documented <= {contract.address for contract in TOPICS.values()}
    channels = asyncapi_document()["channels"]
    assert set(channels) == {contract.address for contract in TOPICS.values()}
    for contract in TOPICS.values():
        assert contract.examples, f"{contract.address} has no example"


def test_reference_parser_accepts_the_document_and_its_examples(tmp_path):
    code, report = validate(yaml.safe_load(DOC.read_text()), tmp_path)
    errors = [d for d in report["diagnostics"] if d["severity"] == "error"]
    assert code == 0 and report["valid"] and errors == [], json.dumps(report, indent=1)
    assert report["version"] == "3.0.0"
    # Every example's payload (and headers for audio) was checked against the message's schema.
    assert report["examples"] == sum(len(c.examples) + sum(1 for e in c.examples if e.headers) for c in TOPICS.values())
    # Nothing but the note that 3.1.0 exists: no warnings either.
    assert {d["code"] for d in report["diagnostics"]} <= {"asyncapi-latest-version"}, report["diagnostics"]


def test_reference_parser_rejects_a_broken_document(tmp_path):
    """The validator is not a rubber stamp: a dangling $ref, a missing required field, an example
    that does not match its schema each fail."""
    document = asyncapi_document()
    dangling = copy.deepcopy(document)
    dangling["components"]["schemas"]["Alert"]["properties"]["evidence"] = {"$ref": "#/components/schemas/Nowhere"}
    code, report = validate(dangling, tmp_path)
    assert code == 1 and any(d["code"] == "invalid-ref" for d in report["diagnostics"]), report
    no_info = copy.deepcopy(document)
    del no_info["info"]
    code, report = validate(no_info, tmp_path)
    assert code == 1 and not report["valid"], report
    bad_example = copy.deepcopy(document)
    bad_example["components"]["messages"]["Alert"]["examples"][0]["payload"]["severity"] = "loud"
    code, report = validate(bad_example, tmp_path)
    assert [d["message"] for d in report["diagnostics"] if d["code"] == "example-does-not-match-schema"] == [
        "payload/severity must be equal to one of the allowed values"
    ]
    bad_header = copy.deepcopy(document)
    bad_header["components"]["messages"]["AudioFrame"]["examples"][0]["headers"]["sp-rate"] = "44100"
    code, report = validate(bad_header, tmp_path)
    assert code == 1 and any("headers/sp-rate" in d["message"] for d in report["diagnostics"]), report


@pytest.mark.parametrize(
    "name, index",
    [(name, index) for name, contract in TOPICS.items() for index in range(len(contract.examples))],
)
def test_example_round_trips_through_the_agents_parsers(name, index):
    contract = TOPICS[name]
    example = contract.examples[index]
    key, value, headers = example_record(example)
    message = parse_record(contract, key, value, headers)  # the parse functions the agents use
    if contract.payload is None:
        # Audio: the headers are the message; written back they are the same headers.
        assert dict((n, v.decode()) for n, v in message.to_headers()) == example.headers
        return
    again = json.loads(message.to_json_bytes())
    assert parse_record(contract, key, message.to_json_bytes(), headers) == message
    # Every field of the example survives (times normalised to the same instant).
    assert type(message).model_validate(example.payload) == message
    assert set(example.payload) <= set(again) | {"event_id"}
    # And the document carries the example unchanged.
    messages = asyncapi_document()["components"]["messages"]
    assert messages[contract.message]["examples"][index]["payload"] == example.payload


def test_alert_examples_use_the_deterministic_id():
    for example in TOPICS["alerts"].examples:
        assert isinstance(example.payload, dict)
        payload = example.payload
        assert payload["alert_id"] == Alert.make_id(payload["call_id"], payload["rule_id"], payload["occurrence"])


def test_dedupe_keys_are_in_the_document():
    messages = asyncapi_document()["components"]["messages"]
    assert messages["Alert"]["x-dedupe-key"] == "alert_id"
    assert "x-dedupe-key" not in messages["CallEvent"]
