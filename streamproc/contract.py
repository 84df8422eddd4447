"""The topic contract: every topic streamproc reads or writes, in one registry.

One :class:`TopicContract` per topic says what its records are (key, headers, payload model),
which way they flow, how a reader parses them (the same functions the agents use), a few
examples, and the field a consumer dedupes on. From it come:

* the AsyncAPI 3 document (:func:`asyncapi_document`, ``streamproc schemas --asyncapi``,
  committed as docs/asyncapi.yaml and validated by the reference AsyncAPI parser in the tests);
* ``streamproc alerts tail`` (streamproc/alerts_tail.py), which parses and dedupes with it.

Adding a topic is one entry in :data:`TOPICS`, then ``streamproc schemas --asyncapi -o
docs/asyncapi.yaml`` (a test fails until the committed document matches); ``streamproc alerts tail``
then parses, filters and dedupes that topic with the entry.
"""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import BaseModel, TypeAdapter

from .record import check_key, parse_audio_frame
from .schemas import (
    AUDIO_HEADER_PREFIX,
    CALL_EVENT_ADAPTER,
    SCHEMA_VERSION,
    Alert,
    AlertAck,
    AudioFrameMeta,
    CallRisk,
    CallSummary,
    DeadLetter,
    Tick,
    TranscriptSegment,
    parse_call_event,
    parse_message,
)

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"

#: ``parse(key, value, headers)``: the message a record carries, or raises InputRejected.
Parser = Callable[[bytes | None, bytes | None, list[tuple[str, bytes]]], Any]


@dataclass(frozen=True)
class Example:
    """One example record: it must round-trip through the topic's parser (tests/unit/test_asyncapi.py)."""

    name: str
    summary: str
    key: str
    payload: dict[str, Any] | str  # a JSON object, or (audio) a description of the raw bytes
    headers: dict[str, str] | None = None
    value: bytes | None = None  # the record value when the payload is not JSON


@dataclass(frozen=True)
class TopicContract:
    name: str  # short name: the topic is ``{topic_prefix}calls.{name}``
    message: str  # message name in the AsyncAPI document
    title: str
    description: str
    sends: bool  # streamproc writes the topic
    receives: bool  # streamproc reads the topic
    parse: Parser
    examples: tuple[Example, ...]
    payload: TypeAdapter[Any] | None = None  # None: raw bytes
    headers: type[BaseModel] | None = None  # metadata in ``sp-<field>`` Kafka headers
    id_field: str | None = None  # deterministic id: consumers dedupe on it (at-least-once delivery)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"calls.{self.name}"

    def topic(self, prefix: str = "") -> str:
        return f"{prefix}{self.address}"


def _keyed(model: type[Any]) -> Parser:
    """Parser of a JSON topic whose messages carry ``call_id``: the key must equal it."""

    def parse(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        message = parse_message(model, value or b"")
        check_key(key, message.call_id)
        return message

    return parse


def _parse_event(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
    event = parse_call_event(value or b"")
    check_key(key, event.call_id)
    return event


def _parse_deadletter(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
    # The key of a dead letter is the rejected record's key, which may be anything (or none).
    return parse_message(DeadLetter, value or b"")


def _parse_audio(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
    return parse_audio_frame(key, headers)[1]


#: The docs/schemas.md example (its id is ``CallSummary.make_id("call-0001")``).
_SUMMARY_EXAMPLE: dict[str, Any] = {"schema_version": 1,
     "summary_id": "e2a3320c-d437-55cf-9d95-fb38c6d6eca5",
     "call_id": "call-0001",
     "queue": "billing",
     "agent_id": "agent-7",
     "direction": "inbound",
     "started_at": "2026-03-02T09:00:00Z",
     "ended_at": "2026-03-02T09:01:20Z",
     "end_reason": "hangup",
     "durations": {"total_s": 80.0,
                   "talk_s": 15.5,
                   "hold_total_s": 40.0,
                   "hold_count": 2,
                   "longest_hold_s": 30.0,
                   "dead_air_s": 21.0},
     "conversation": {"speakers": {"agent": {"talk_s": 7.0, "talk_ratio": 0.419, "interruptions": 0},
                                   "customer": {"talk_s": 9.0, "talk_ratio": 0.548, "interruptions": 1}},
                      "crosstalk_s": 0.5,
                      "crosstalk_ratio": 0.032,
                      "dead_air_min_s": 4.0,
                      "utterances": 4},
     "sentiment": {"agent": {"start": 0.637, "middle": 0.637, "end": 0.572, "utterances": 2},
                   "customer": {"start": -0.421, "middle": -0.421, "end": 0.818, "utterances": 2}},
     "alerts": {"call-at-risk": {"kind": "call_at_risk",
                                 "count": 1,
                                 "alert_ids": ["1f02106d-1446-5fe1-b87e-5721733b2753"]},
                "mgr": {"kind": "escalation", "count": 1, "alert_ids": ["7c37c3d5-402d-5f54-919c-8139e4daa97d"]},
                "no-price": {"kind": "window_phrase",
                             "count": 1,
                             "alert_ids": ["34fdf268-54ba-5465-a7ca-85a832e29f8d"]}},
     "alert_count": 3,
     "escalation": {"transferred": True, "transfers": 1, "to_queue": "retention", "escalation_alerts": 1},
     "checklist": [{"rule_id": "disclosure", "expect": "said", "result": "not_judged", "failures": 0},
                   {"rule_id": "greeting", "expect": "said", "result": "passed", "failures": 0},
                   {"rule_id": "no-price", "expect": "not_said", "result": "failed", "failures": 1}],
     "peak_risk_score": 63.5,
     "transcript": {"topic": "calls.transcripts",
                    "partition": 2,
                    "first_offset": 1,
                    "last_offset": 4,
                    "final_segments": 4,
                    "redacted": True},
     "transcription_complete": True}

_PCM_SILENCE = bytes(320)  # 10 ms of 16 kHz PCM16 silence

TOPICS: dict[str, TopicContract] = {
    contract.name: contract
    for contract in (
        TopicContract(
            name="events",
            message="CallEvent",
            title="Call events",
            description="Call lifecycle from the telephony system (CTI/PBX): start, hold, transfer, end. "
            "Discriminated by `type`. A record whose key is not the call id is dead-lettered (`key_mismatch`).",
            sends=False, receives=True,
            payload=CALL_EVENT_ADAPTER,
            parse=_parse_event,
            examples=(
                Example("call_started", "A call reaches an agent.", "CA-1001", {
                    "type": "call_started", "call_id": "CA-1001", "ts": "2026-11-24T10:00:00Z",
                    "event_id": "pbx-77812", "agent_id": "agent-ana", "queue": "billing",
                    "customer_id": "cust-42", "direction": "inbound"}),
                Example("hold_started", "The agent puts the customer on hold.", "CA-1001", {
                    "type": "hold_started", "call_id": "CA-1001", "ts": "2026-11-24T10:01:00.500000Z",
                    "reason": "checking account"}),
                Example("transferred", "The call moves to another queue.", "CA-1001", {
                    "type": "transferred", "call_id": "CA-1001", "ts": "2026-11-24T10:05:00Z", "to_queue": "retention"}),
                Example("call_ended", "The call ends.", "CA-1001", {
                    "type": "call_ended", "call_id": "CA-1001", "ts": "2026-11-24T10:09:30Z", "reason": "completed"}),
            ),
        ),
        TopicContract(
            name="audio",
            message="AudioFrame",
            title="Audio frames",
            description="Live call audio: the record value is raw audio bytes (no envelope); the frame's metadata "
            f"travels in Kafka headers named `{AUDIO_HEADER_PREFIX}<field>` with ASCII values. docs/audio.md has "
            "the full contract.",
            sends=False, receives=True,
            headers=AudioFrameMeta,
            parse=_parse_audio,
            examples=(
                Example("pcm16_frame", "10 ms of 16 kHz PCM16 from the customer's mono stream.", "CA-1001",
                        "<320 bytes of 16-bit little-endian PCM>",
                        headers={"sp-schema_version": "1", "sp-encoding": "pcm16", "sp-rate": "16000",
                                 "sp-channels": "1", "sp-layout": "mono", "sp-speaker": "customer",
                                 "sp-stream": "customer", "sp-seq": "0", "sp-offset_ms": "0"},
                        value=_PCM_SILENCE),
            ),
        ),
        TopicContract(
            name="transcripts",
            message="TranscriptSegment",
            title="Transcript segments",
            description="Partial and final recognition results per call and speaker. Partials of an utterance share "
            "`utterance` and grow `revision`; the final (`is_final`) replaces them. Written by the audio agent, "
            "read by the detection agent and the dashboard; a scripted source may write them too (`source: script`).",
            sends=True, receives=True,  # the audio agent writes them, the detection agent reads them
            payload=TypeAdapter(TranscriptSegment),
            parse=_keyed(TranscriptSegment),
            id_field="segment_id",
            examples=(
                Example("final_segment", "The final result of a customer utterance.", "CA-1001", {
                    "schema_version": 1, "segment_id": "CA-1001/customer/3/f", "call_id": "CA-1001",
                    "speaker": "customer", "utterance": 3, "revision": 4, "is_final": True,
                    "text": "i want to speak to your manager",
                    "words": [{"word": "manager", "start_s": 41.2, "end_s": 41.7, "conf": 0.93}],
                    "start_s": 39.9, "end_s": 41.7, "confidence": 0.91,
                    "audio_received_at": "2026-11-24T10:00:41.750000Z", "emitted_at": "2026-11-24T10:00:42.020000Z",
                    "source": "asr"}),
            ),
        ),
        TopicContract(
            name="alerts",
            message="Alert",
            title="Alerts",
            description="Alerts for supervisors and downstream services (stable contract). Delivery is at least "
            "once: after a worker crash an alert may arrive again, always with the same deterministic `alert_id` "
            "(uuid5 of call id, rule id and occurrence): dedupe on it. Consumers must tolerate `kind` values they "
            "do not know.",
            sends=True, receives=False,
            payload=TypeAdapter(Alert),
            parse=_keyed(Alert),
            id_field="alert_id",
            examples=(
                Example("hold_breach", "A hold passed the rule's threshold.", "CA-1001", {
                    "schema_version": 1, "alert_id": Alert.make_id("CA-1001", "hold-warning", 1), "call_id": "CA-1001",
                    "agent_id": "agent-ana", "queue": "billing", "kind": "hold_breach", "rule_id": "hold-warning",
                    "severity": "warning", "occurrence": 1, "title": "Customer on hold over 60s (hold #1)",
                    "evidence": {"value": 60.1, "threshold": 60.0, "unit": "seconds"},
                    "event_time": "2026-11-24T10:02:00.500000Z", "detected_at": "2026-11-24T10:02:00.640000Z",
                    "source_received_at": "2026-11-24T10:02:00.520000Z"}),
                Example("escalation", "A semantic escalation cue in the customer's words.", "CA-1002", {
                    "schema_version": 1, "alert_id": Alert.make_id("CA-1002", "churn-intent", 256),
                    "call_id": "CA-1002", "agent_id": "agent-ana", "queue": "billing", "kind": "escalation",
                    "rule_id": "churn-intent", "severity": "warning", "occurrence": 256,
                    "title": "Escalation (churn): customer said “i am going to take my custom to a rival firm” "
                    "(like “i'm going to a competitor”, p=0.82)",
                    "evidence": {"text": "i am going to take my custom to a rival firm", "speaker": "customer",
                                 "audio_start_s": 12.0, "audio_end_s": 15.6, "value": 0.8159, "threshold": 0.6,
                                 "unit": "semantic_probability", "matched_example": "i'm going to a competitor",
                                 "similarity": 0.71},
                    "event_time": "2026-11-24T10:02:15.600000Z", "detected_at": "2026-11-24T10:02:15.700000Z"}),
                Example("call_at_risk", "The live risk score crossed its threshold.", "CA-1002", {
                    "schema_version": 1, "alert_id": Alert.make_id("CA-1002", "call-at-risk", 0),
                    "call_id": "CA-1002", "agent_id": "agent-ana", "queue": "billing", "kind": "call_at_risk",
                    "rule_id": "call-at-risk", "severity": "critical", "occurrence": 0,
                    "title": "Call at risk: score 84/100 (hold 22, escalation 35, repeat_contact 15, sentiment 12)",
                    "evidence": {"value": 84.0, "threshold": 60.0, "unit": "risk_score",
                                 "factors": {"hold": 22.0, "sentiment": 12.0, "escalation": 35.0, "abuse": 0.0,
                                             "repeat_contact": 15.0, "dead_air": 0.0, "missed_window": 0.0}},
                    "event_time": "2026-11-24T10:04:01Z", "detected_at": "2026-11-24T10:04:01.080000Z"}),
            ),
        ),
        TopicContract(
            name="risk",
            message="CallRisk",
            title="Live call risk scores",
            description="Each live call's risk score (0-100) and the points each factor contributes, sent whenever its "
            "whole-point value changes (transcripts, alerts, the detection timer). The latest record per call wins; "
            "`call_at_risk` alerts on the alerts topic still mark the threshold crossing. Read by the dashboard.",
            sends=True, receives=False,
            payload=TypeAdapter(CallRisk),
            parse=_keyed(CallRisk),
            examples=(
                Example("rising_risk", "A call on hold whose customer has asked for a manager.", "CA-1002", {
                    "schema_version": 1, "call_id": "CA-1002", "rule_id": "call-at-risk", "score": 57.0,
                    "threshold": 60.0,
                    "factors": {"hold": 22.0, "sentiment": 0.0, "escalation": 35.0, "abuse": 0.0,
                                "repeat_contact": 0.0, "dead_air": 0.0, "missed_window": 0.0},
                    "updated_at": "2026-11-24T10:03:58.200000Z"}),
            ),
        ),
        TopicContract(
            name="summaries",
            message="CallSummary",
            title="Post-call summaries",
            description="One record per call once it ended and its transcription drained (docs/schemas.md#callssummaries): "
            "durations, talk ratios, crosstalk, dead air, sentiment trajectory, alerts by rule, transfer outcome, the "
            "said/not-said checklist, the peak risk score and a reference to the final transcripts. Figures and ids "
            "only, never text. At least once: a re-sent summary has the same deterministic `summary_id` and content.",
            sends=True, receives=False,
            payload=TypeAdapter(CallSummary),
            parse=_keyed(CallSummary),
            id_field="summary_id",
            examples=(
                Example("finished_call", "A billing call with two holds, a transfer and three alerts.", "call-0001",
                        _SUMMARY_EXAMPLE),
            ),
        ),
        TopicContract(
            name="acks",
            message="AlertAck",
            title="Alert acknowledgements",
            description="A supervisor acknowledged an alert (written by the dashboard or any client).",
            sends=False, receives=True,
            payload=TypeAdapter(AlertAck),
            parse=_keyed(AlertAck),
            examples=(
                Example("ack", "A supervisor takes over.", "CA-1001", {
                    "schema_version": 1, "alert_id": Alert.make_id("CA-1001", "hold-warning", 1),
                    "call_id": "CA-1001", "acked_by": "supervisor-kim", "acked_at": "2026-11-24T10:02:10Z",
                    "note": "taking over"}),
            ),
        ),
        TopicContract(
            name="deadletter",
            message="DeadLetter",
            title="Dead letters",
            description="Rejected input with the machine-readable reason and the original bytes (base64, at most "
            "64 KiB). The key is the rejected record's key, unchanged.",
            sends=True, receives=False,
            payload=TypeAdapter(DeadLetter),
            parse=_parse_deadletter,
            examples=(
                Example("missing_field", "A call_started without its agent.", "CA-1002", {
                    "schema_version": 1, "reason": "missing_field", "detail": "missing field 'agent_id'",
                    "source_topic": "calls.events", "partition": 2, "offset": 1183, "key": "CA-1002",
                    "payload_b64": "e30=", "payload_size": 2, "truncated": False,
                    "received_at": "2026-11-24T10:00:03Z"}),
            ),
        ),
        TopicContract(
            name="ticks",
            message="Tick",
            title="Hold timer ticks (internal)",
            description="Internal: the hold timer asks the owner of a call to evaluate its deadlines at wall time "
            "`at` (docs/state-and-restarts.md). Not for external use.",
            sends=True, receives=True,
            payload=TypeAdapter(Tick),
            parse=_keyed(Tick),
            examples=(
                Example("tick", "Evaluate CA-1001's hold deadlines.", "CA-1001", {
                    "schema_version": 1, "kind": "tick", "call_id": "CA-1001", "at": "2026-11-24T10:02:00.500000Z"}),
            ),
        ),
    )
}


def parse_record(contract: TopicContract, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None) -> Any:
    """The message a record of ``contract``'s topic carries (raises InputRejected like the agents do)."""
    return contract.parse(key, value, headers or [])


def example_record(example: Example) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """An example as the Kafka record a producer would write: key, value, headers."""
    value = example.value if example.value is not None else json.dumps(example.payload).encode("utf-8")
    headers = [(name, text.encode("ascii")) for name, text in (example.headers or {}).items()]
    return example.key.encode("utf-8"), value, headers


# --------------------------------------------------------------------------- AsyncAPI


class ContractError(ValueError):
    pass


def _schema_of(adapter: TypeAdapter[Any], components: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of ``adapter`` with its $defs moved into ``components`` (AsyncAPI Schema Objects)."""
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        _merge_component(components, name, definition)
    return _asyncapi_schema(schema)


def _merge_component(components: dict[str, Any], name: str, definition: dict[str, Any]) -> None:
    definition = _asyncapi_schema(definition)
    if name in components and components[name] != definition:
        raise ContractError(f"two different schemas are both named {name!r}")
    components[name] = definition


def _asyncapi_schema(schema: Any) -> Any:
    """AsyncAPI Schema is JSON Schema draft 7 plus a few keywords; pydantic writes the OpenAPI form of
    ``discriminator`` (an object), where AsyncAPI wants the property name."""
    if isinstance(schema, dict):
        out = {key: _asyncapi_schema(value) for key, value in schema.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(schema, list):
        return [_asyncapi_schema(item) for item in schema]
    return schema


def _header_schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """Kafka headers ``sp-<field>``: every value is ASCII text, so numbers and enums become strings."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    properties: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        options = [option for option in prop.get("anyOf", [prop]) if option.get("type") != "null"]
        [option] = options
        if "$ref" in option:
            option = defs[option["$ref"].rsplit("/", 1)[1]]
        header: dict[str, Any] = {"type": "string"}
        if "enum" in option:
            header["enum"] = [str(value) for value in option["enum"]]
        elif "const" in option:
            header["const"] = str(option["const"])
        elif option.get("type") == "integer":
            header["pattern"] = "^[0-9]+$" if option.get("minimum", -1) >= 0 else "^-?[0-9]+$"
        for keyword in ("minLength", "maxLength"):
            if keyword in option:
                header[keyword] = option[keyword]
        for keyword in ("title", "description"):
            if keyword in prop:
                header[keyword] = prop[keyword]
        if "default" in prop and prop["default"] is not None:
            header["default"] = str(prop["default"])
        properties[f"{AUDIO_HEADER_PREFIX}{name}"] = header
    required = [f"{AUDIO_HEADER_PREFIX}{name}" for name in schema.get("required", [])]
    description = " ".join(inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].split())
    return {"type": "object", "description": description,
            "properties": properties, "required": required}


def asyncapi_document(topics: dict[str, TopicContract] | None = None) -> dict[str, Any]:
    """The AsyncAPI 3 document of every topic (docs/asyncapi.yaml is this, written by ``streamproc schemas --asyncapi``)."""
    topics = TOPICS if topics is None else topics
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    key_schema = {"type": "string", "minLength": 1, "maxLength": 128,
                  "description": "The call id (UTF-8). Every topic is partitioned by call id."}
    for contract in topics.values():
        message: dict[str, Any] = {
            "name": contract.message,
            "title": contract.title,
            "summary": contract.description.split(". ")[0].rstrip(".") + ".",
            "description": contract.description,
            "bindings": {"kafka": {"key": copy.deepcopy(key_schema), "bindingVersion": KAFKA_BINDING_VERSION}},
        }
        if contract.name == "deadletter":
            message["bindings"]["kafka"]["key"] = {"type": "string", "description": "The rejected record's key, unchanged (may be absent)."}
        if contract.payload is not None:
            message["contentType"] = "application/json"
            schema_name = contract.message
            _merge_component(schemas, schema_name, _schema_of(contract.payload, schemas))
            message["payload"] = {"$ref": f"#/components/schemas/{schema_name}"}
        else:
            message["contentType"] = "application/octet-stream"
            message["payload"] = {"type": "string", "format": "binary",
                                  "description": "Raw audio samples in the encoding the headers name."}
        if contract.headers is not None:
            header_name = f"{contract.message}Headers"
            _merge_component(schemas, header_name, _header_schema(contract.headers, schemas))
            message["headers"] = {"$ref": f"#/components/schemas/{header_name}"}
        if contract.id_field:
            message["x-dedupe-key"] = contract.id_field
        message["examples"] = [
            {key: value for key, value in (
                # Example Objects take no extensions: the record key goes into the summary.
                ("name", example.name), ("summary", f"{example.summary} Record key: {example.key}."),
                ("headers", example.headers), ("payload", example.payload),
            ) if value is not None}
            for example in contract.examples
        ]
        messages[contract.message] = message
        channels[contract.address] = {
            "address": contract.address,
            "title": contract.title,
            "description": contract.description + " With `STREAMPROC_TOPIC_PREFIX` set, the topic name is the "
            "prefix followed by this address.",
            "messages": {contract.message: {"$ref": f"#/components/messages/{contract.message}"}},
            "bindings": {"kafka": {"topic": contract.address, "bindingVersion": KAFKA_BINDING_VERSION}},
        }
        for action, wanted, verb in (("send", contract.sends, "writes"), ("receive", contract.receives, "reads")):
            if wanted:  # a fresh list each: a shared one would come out as a YAML anchor and alias
                operations[f"{action}_{contract.name}"] = {
                    "action": action, "channel": {"$ref": f"#/channels/{contract.address}"},
                    "messages": [{"$ref": f"#/channels/{contract.address}/messages/{contract.message}"}],
                    "summary": f"streamproc {verb} {contract.title[0].lower() + contract.title[1:]}.",
                }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:streamproc:topics",
        "info": {
            "title": "streamproc topics",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Every Kafka topic streamproc reads or writes: real-time call monitoring for contact "
            "centers. Messages are UTF-8 JSON objects (audio: raw bytes with metadata in headers); the record key "
            "is the call id; every message carries `schema_version`; unknown fields are ignored (tolerant reader). "
            "Generated from the pydantic models in streamproc/schemas.py by `streamproc schemas --asyncapi`; "
            "docs/schemas.md is the human reference.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The Kafka cluster the workers use (STREAMPROC_BROKER).",
                "variables": {"bootstrap": {"default": "127.0.0.1:9092", "description": "host:port of a broker"}},
                "bindings": {"kafka": {"bindingVersion": KAFKA_BINDING_VERSION}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": dict(sorted(schemas.items())), "messages": messages},
    }


def dump_asyncapi(document: dict[str, Any], fmt: Literal["yaml", "json"] = "yaml") -> str:
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    import yaml

    header = "# Generated by `streamproc schemas --asyncapi -o docs/asyncapi.yaml` from streamproc/contract.py; do not edit.\n"
    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # every object written out in full: no &id001 / *id001 for readers to chase

    return header + yaml.dump(document, Dumper=NoAliases, sort_keys=False, allow_unicode=True, width=120)
