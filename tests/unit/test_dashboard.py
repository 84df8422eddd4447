"""The dashboard's view model (streamproc.dashboard.CallBoard) and its access check, without Kafka."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.dashboard import BoardTopics, CallBoard, is_authorized, session_value
from streamproc.rules import parse_rules
from streamproc.schemas import Alert, AlertAck, AlertKind, CallRisk, Evidence, Severity, TranscriptSegment, from_epoch

TOPICS = BoardTopics(events="calls.events", alerts="calls.alerts", acks="calls.acks", transcripts="calls.transcripts", risk="calls.risk")
RULES = parse_rules(
    """
version: 1
hold:
  defaults:
    thresholds:
      - {id: hold-warning, after_s: 60, severity: warning}
      - {id: hold-critical, after_s: 180, severity: critical}
  queues:
    vip:
      thresholds:
        - {id: vip-hold-warning, after_s: 30, severity: warning}
"""
)
T0 = 1_700_000_000.0


def board(**options) -> CallBoard:
    return CallBoard(RULES, TOPICS, **options)


def call_event(board: CallBoard, call_id: str, type_: str, ts: float, *, received: float | None = None, key: str | None = None, **fields) -> bool:
    body = {"type": type_, "call_id": call_id, "ts": ts} | fields
    stamp = int((received if received is not None else ts) * 1000)
    return board.apply(TOPICS.events, (key or call_id).encode(), json.dumps(body).encode(), timestamp_ms=stamp, partition=2)


def alert(call_id: str = "c1", rule_id: str = "hold-warning", detected: float = T0 + 60, severity=Severity.warning, **fields) -> Alert:
    return Alert(
        alert_id=Alert.make_id(call_id, rule_id, 1),
        call_id=call_id,
        agent_id="a1",
        queue="billing",
        kind=AlertKind.hold_breach,
        rule_id=rule_id,
        severity=severity,
        title=f"{rule_id} for {call_id}",
        evidence=Evidence(value=61, threshold=60, unit="seconds"),
        event_time=datetime.fromtimestamp(detected, timezone.utc),
        detected_at=datetime.fromtimestamp(detected, timezone.utc),
        **fields,
    )


def ack(alert_id: str, by: str = "dana", call_id: str = "c1", at: float = T0 + 90) -> AlertAck:
    return AlertAck(alert_id=alert_id, call_id=call_id, acked_by=by, acked_at=datetime.fromtimestamp(at, timezone.utc))


def segment(call_id="c1", speaker="agent", utterance=0, revision=0, final=False, text="hello") -> bytes:
    return TranscriptSegment(
        segment_id=TranscriptSegment.make_id(call_id, speaker, utterance, revision, final),
        call_id=call_id,
        speaker=speaker,
        utterance=utterance,
        revision=revision,
        is_final=final,
        text=text,
    ).to_json_bytes()


# --------------------------------------------------------------------------- calls


def test_hold_start_is_shown_in_wall_clock_from_the_record_timestamp():
    b = board()
    # Event time runs 3600 s behind the wall clock (a replayed recording): the record timestamps tell.
    call_event(b, "c1", "call_started", T0, received=T0 + 3600, agent_id="a1", queue="billing")
    call_event(b, "c1", "hold_started", T0 + 10, received=T0 + 3610.5)
    [call] = b.calls()
    assert call["status"] == "on_hold"
    assert call["started_at"] == pytest.approx(T0 + 3600)
    assert call["hold_started_at"] == pytest.approx(T0 + 10 + 3600.5)
    assert call["hold_count"] == 1
    assert [t["after_s"] for t in call["hold_thresholds"]] == [60, 180]


def test_thresholds_are_the_rules_of_the_calls_queue():
    b = board()
    call_event(b, "v1", "call_started", T0, agent_id="a1", queue="vip")
    assert b.calls()[0]["hold_thresholds"] == [{"id": "vip-hold-warning", "after_s": 30, "severity": "warning"}]
    call_event(b, "v1", "transferred", T0 + 5, to_queue="billing")
    assert [t["id"] for t in b.calls()[0]["hold_thresholds"]] == ["hold-warning", "hold-critical"]


def test_hold_ended_and_call_ended_update_the_call():
    b = board()
    call_event(b, "c1", "call_started", T0, agent_id="a1", queue="billing")
    call_event(b, "c1", "hold_started", T0 + 10)
    call_event(b, "c1", "hold_ended", T0 + 40)
    call = b.calls()[0]
    assert call["status"] == "active" and call["hold_started_at"] is None and call["completed_hold_s"] == 30
    call_event(b, "c1", "call_ended", T0 + 50)
    assert b.calls()[0]["status"] == "ended" and b.calls()[0]["ended_at"] == pytest.approx(T0 + 50)


def test_bad_duplicate_and_miskeyed_events_do_not_change_the_view():
    b = board()
    assert call_event(b, "c1", "call_started", T0, agent_id="a1", queue="billing")
    seq = b.seq
    assert not call_event(b, "c1", "call_started", T0, agent_id="a1", queue="billing")  # duplicate
    assert not call_event(b, "c1", "hold_started", T0 + 1, key="other-call")  # the worker rejects it too
    assert not call_event(b, "c9", "hold_started", T0 + 1)  # never started
    assert not b.apply(TOPICS.events, b"c1", b"{not json", timestamp_ms=int(T0 * 1000))
    assert not b.apply(TOPICS.alerts, b"c1", b'{"call_id": "c1"}')
    assert b.seq == seq
    assert b.rejected == {"malformed_json": 1, "missing_field": 1}
    assert b.calls()[0]["status"] == "active"


def test_ended_calls_linger_then_go_and_silent_calls_age_out():
    b = board(ended_linger_s=60, history_s=3600)
    call_event(b, "c1", "call_started", T0, agent_id="a1", queue="billing")
    call_event(b, "c1", "call_ended", T0 + 10)
    call_event(b, "c2", "call_started", T0, agent_id="a2", queue="billing")
    b.apply(TOPICS.transcripts, b"c1", segment("c1", final=True))
    assert b.expire(now=T0 + 30) == 0
    seq = b.seq
    assert b.expire(now=T0 + 71) == 1
    assert [c["call_id"] for c in b.calls()] == ["c2"]
    assert b.transcript("c1") == []
    assert b.changes_since(seq) == [{"type": "call_removed", "call_id": "c1", "queue": "billing"}]
    b.expire(now=T0 + 3601)
    assert b.calls() == []


# --------------------------------------------------------------------------- alerts and acks


def test_alerts_are_deduplicated_by_id_and_listed_newest_first():
    b = board()
    first, second = alert(rule_id="hold-warning", detected=T0 + 60), alert(rule_id="hold-critical", detected=T0 + 180)
    assert b.apply(TOPICS.alerts, b"c1", first.to_json_bytes(), partition=3)
    assert b.apply(TOPICS.alerts, b"c1", second.to_json_bytes(), partition=3)
    assert not b.apply(TOPICS.alerts, b"c1", first.to_json_bytes(), partition=3), "a re-sent alert is not news"
    assert [a["rule_id"] for a in b.alerts()] == ["hold-critical", "hold-warning"]
    assert b.alert_partition(first.alert_id) == 3


def test_an_ack_attaches_to_its_alert_whichever_arrives_first():
    b = board()
    early = alert(rule_id="hold-warning")
    b.apply(TOPICS.acks, b"c1", ack(early.alert_id, by="lee").to_json_bytes())
    b.apply(TOPICS.alerts, b"c1", early.to_json_bytes())
    assert b.alert(early.alert_id)["ack"]["acked_by"] == "lee"

    late = alert(rule_id="hold-critical")
    b.apply(TOPICS.alerts, b"c1", late.to_json_bytes())
    seq = b.seq
    b.apply(TOPICS.acks, b"c1", ack(late.alert_id, by="dana").to_json_bytes())
    assert b.alert(late.alert_id)["ack"]["acked_by"] == "dana"
    [change] = b.changes_since(seq)
    assert change["type"] == "ack" and change["ack"]["alert_id"] == late.alert_id


def test_alert_count_is_bounded_oldest_dropped_first():
    b = board(max_alerts=3)
    for n in range(5):
        b.apply(TOPICS.alerts, b"c1", alert(call_id=f"c{n}", detected=T0 + n).to_json_bytes())
    assert [a["call_id"] for a in b.alerts()] == ["c4", "c3", "c2"]


def test_old_alerts_leave_with_the_history_window():
    b = board(history_s=600)
    b.apply(TOPICS.alerts, b"c1", alert(call_id="old", detected=T0).to_json_bytes())
    b.apply(TOPICS.alerts, b"c1", alert(call_id="new", detected=T0 + 500).to_json_bytes())
    b.expire(now=T0 + 700)
    assert [a["call_id"] for a in b.alerts()] == ["new"]


alert_ids = [alert(rule_id=f"r{n}", detected=T0 + n).alert_id for n in range(4)]


@settings(max_examples=200, deadline=None)
@given(st.permutations([("alert", n) for n in range(4)] + [("ack", n) for n in (0, 2, 3)]))
def test_the_alert_feed_does_not_depend_on_how_topics_interleave(order):
    b = board()
    for topic, n in order:
        if topic == "alert":
            b.apply(TOPICS.alerts, b"c1", alert(rule_id=f"r{n}", detected=T0 + n).to_json_bytes())
        else:
            b.apply(TOPICS.acks, b"c1", ack(alert_ids[n], by=f"sup{n}").to_json_bytes())
    feed = b.alerts()
    assert [a["rule_id"] for a in feed] == ["r3", "r2", "r1", "r0"]
    assert [a["ack"]["acked_by"] if a["ack"] else None for a in feed] == ["sup3", "sup2", None, "sup0"]


# --------------------------------------------------------------------------- transcripts


def test_partials_grow_and_a_final_replaces_them():
    b = board()
    b.apply(TOPICS.transcripts, b"c1", segment(revision=0, text="i"))
    b.apply(TOPICS.transcripts, b"c1", segment(revision=2, text="i want to"))
    assert not b.apply(TOPICS.transcripts, b"c1", segment(revision=1, text="i want")), "a late older partial"
    b.apply(TOPICS.transcripts, b"c1", segment(speaker="customer", revision=0, text="hello?"))
    b.apply(TOPICS.transcripts, b"c1", segment(final=True, text="i want to help"))
    assert not b.apply(TOPICS.transcripts, b"c1", segment(revision=3, text="i want to he")), "final wins"
    lines = b.transcript("c1")
    assert [(l["speaker"], l["text"], l["is_final"]) for l in lines] == [
        ("agent", "i want to help", True),
        ("customer", "hello?", False),
    ]


def test_transcript_lines_per_call_are_bounded():
    b = board(transcript_lines=3)
    for n in range(5):
        b.apply(TOPICS.transcripts, b"c1", segment(utterance=n, final=True, text=f"line {n}"))
    assert [l["text"] for l in b.transcript("c1")] == ["line 2", "line 3", "line 4"]


def test_transcript_text_is_kept_verbatim():
    b = board()
    text = '<script>alert(1)</script> & "quotes"'
    b.apply(TOPICS.transcripts, b"c1", segment(final=True, text=text))
    assert b.transcript("c1")[0]["text"] == text  # escaping is the page's job (textContent)


# --------------------------------------------------------------------------- change stream


def test_changes_since_filters_transcripts_to_the_selected_call():
    b = board()
    call_event(b, "c1", "call_started", T0, agent_id="a1", queue="billing")
    b.apply(TOPICS.transcripts, b"c1", segment("c1", final=True, text="one"))
    b.apply(TOPICS.transcripts, b"c2", segment("c2", final=True, text="two"))
    assert [c["type"] for c in b.changes_since(0)] == ["call"]
    assert [c.get("line", {}).get("text") for c in b.changes_since(0, "c2")] == [None, "two"]
    assert b.changes_since(b.seq) == []


def test_a_client_behind_the_change_ring_must_take_a_snapshot():
    b = board(change_log=3)
    for n in range(5):
        call_event(b, f"c{n}", "call_started", T0, agent_id="a", queue="q")
    assert b.changes_since(0) is None
    assert b.changes_since(1) is None
    assert len(b.changes_since(2)) == 3
    snap = b.snapshot("c1", now=T0)
    assert snap["seq"] == 5 and len(snap["calls"]) == 5 and snap["transcript"] == {"call_id": "c1", "lines": []}


# --------------------------------------------------------------------------- access


def test_no_token_configured_means_open():
    assert is_authorized(None)
    assert is_authorized("")


@pytest.mark.parametrize(
    "credentials, allowed",
    [
        ({}, False),
        ({"authorization": "Bearer s3cret"}, True),
        ({"authorization": "bearer s3cret"}, True),
        ({"authorization": "Bearer wrong"}, False),
        ({"authorization": "Basic s3cret"}, False),
        ({"query_token": "s3cret"}, True),
        ({"query_token": "s3cre"}, False),
        ({"cookie": session_value("s3cret")}, True),
        ({"cookie": "s3cret"}, False),  # the raw token is not a session
        ({"cookie": session_value("other")}, False),
    ],
)
def test_token_check(credentials, allowed):
    assert is_authorized("s3cret", **credentials) is allowed


def test_session_value_is_derived_not_the_token():
    assert session_value("s3cret") != "s3cret" and len(session_value("s3cret")) == 64
    assert session_value("s3cret") == session_value("s3cret")


def test_calls_sort_by_risk_score_from_call_at_risk_alerts():
    b = board()
    for n, call_id in enumerate(("calm", "risky", "riskier")):
        call_event(b, call_id, "call_started", T0 + n, agent_id="a1", queue="billing")
    assert [c["call_id"] for c in b.calls()] == ["calm", "risky", "riskier"]
    for call_id, score in (("risky", 62.0), ("riskier", 81.5)):
        risk_alert = alert(call_id, "call-at-risk").model_copy(update={
            "kind": AlertKind.call_at_risk,
            "evidence": Evidence(value=score, threshold=60, unit="risk_score", factors={"hold": 30.0, "escalation": score - 30}),
        })
        b.apply(TOPICS.alerts, call_id.encode(), risk_alert.to_json_bytes(), timestamp_ms=int(T0 * 1000), partition=2)
    calls = b.calls()
    assert [(c["call_id"], c["risk"]) for c in calls] == [("riskier", 81.5), ("risky", 62.0), ("calm", None)]
    assert b.alerts()[0]["evidence"]["factors"]["hold"] == 30.0


# --------------------------------------------------------------------------- per-supervisor views


def test_a_supervisor_sees_only_their_queues_in_snapshots_and_changes():
    from streamproc.supervisors import ANONYMOUS, Supervisor

    dana = Supervisor(name="Dana", queues=frozenset({"billing"}))
    b = board()
    seq = b.seq
    call_event(b, "c1", "call_started", T0, agent_id="a1", queue="billing")
    call_event(b, "c2", "call_started", T0, agent_id="a2", queue="sales")
    # An alert of a call whose events this board never read: its own queue field decides.
    b.apply(TOPICS.alerts, b"c3", alert("c3").model_copy(update={"queue": "sales"}).to_json_bytes())
    sales_alert = alert("c2").model_copy(update={"queue": "sales"})
    b.apply(TOPICS.alerts, b"c2", sales_alert.to_json_bytes())
    b.apply(TOPICS.alerts, b"c1", alert("c1").to_json_bytes())
    b.apply(TOPICS.acks, b"c2", ack(sales_alert.alert_id, call_id="c2").to_json_bytes())
    b.apply(TOPICS.transcripts, b"c2", segment("c2", final=True, text="sales talk"))
    b.apply(TOPICS.transcripts, b"c1", segment("c1", final=True, text="billing talk"))

    snap = b.snapshot("c2", viewer=dana)
    assert [c["call_id"] for c in snap["calls"]] == ["c1"]
    assert [a["call_id"] for a in snap["alerts"]] == ["c1"]
    assert snap["transcript"] is None, "another queue's transcript is not served even when asked for by id"
    assert b.snapshot("c1", viewer=dana)["transcript"]["lines"][0]["text"] == "billing talk"
    changes = b.changes_since(seq, "c2", viewer=dana)
    assert {c["type"] for c in changes} == {"call", "alert"}
    assert all(c.get("call", c.get("alert", {})).get("call_id") == "c1" for c in changes)
    # Without identities (shared token / open on loopback): everything, as before.
    everything = b.changes_since(seq, "c2", viewer=ANONYMOUS)
    assert {c["type"] for c in everything} == {"call", "alert", "ack", "transcript"}
    assert len(b.snapshot(viewer=ANONYMOUS)["calls"]) == 2
    assert b.alert_queue(sales_alert.alert_id) == "sales"


def test_a_call_with_no_known_queue_is_hidden_from_queue_limited_supervisors():
    from streamproc.supervisors import Supervisor

    b = board()
    b.apply(TOPICS.transcripts, b"cx", segment("cx", final=True))
    assert b.changes_since(0, "cx", viewer=Supervisor(name="Dana", queues=frozenset({"billing"}))) == []


# --------------------------------------------------------------------------- identities


def test_tokens_file_maps_tokens_to_supervisors_and_stores_only_hashes(tmp_path):
    from streamproc.dashboard import authenticate
    from streamproc.supervisors import Directory, add_supervisor, load_supervisors

    path = tmp_path / "supervisors.yaml"
    dana = add_supervisor(path, "Dana Park", ["billing"])
    lee = add_supervisor(path, "Lee Chen", ["*"], team="floor")
    text = path.read_text()
    assert dana not in text and lee not in text and "token_sha256" in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [e.name for e in load_supervisors(path).supervisors] == ["Dana Park", "Lee Chen"]

    directory = Directory(path, session_key=b"k" * 32)
    who = authenticate("shared", directory, authorization=f"Bearer {dana}")
    assert who is not None and who.name == "Dana Park" and who.may_see("billing") and not who.may_see("sales")
    assert authenticate(None, directory, query_token=lee).may_see("anything")
    cookie = directory.session_for(dana)
    assert dana not in cookie and authenticate(None, directory, cookie=cookie).name == "Dana Park"
    assert Directory(path, session_key=b"x" * 32).by_session(cookie) is None, "cookies are keyed by the server secret"
    # The shared page token carries no identity: refused once identities exist.
    assert authenticate("shared", directory, authorization="Bearer shared") is None
    assert authenticate("shared", directory, authorization="Bearer nope", cookie="forged") is None
    # Re-issuing a token replaces the old one; the directory picks the change up.
    dana2 = add_supervisor(path, "Dana Park", ["billing", "support"])
    directory.refresh()
    assert authenticate(None, directory, query_token=dana) is None
    assert authenticate(None, directory, query_token=dana2).may_see("support")


def test_a_broken_tokens_file_says_where(tmp_path):
    from streamproc.supervisors import SupervisorsFileError, load_supervisors

    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nsupervisors:\n  - name: Dana\n    token_sha256: not-a-hash\n    queues: [billing]\n")
    with pytest.raises(SupervisorsFileError, match=r"line 4, supervisors.0.token_sha256"):
        load_supervisors(path)


def test_supervisors_add_prints_the_token_once_and_stores_its_hash(tmp_path):
    import subprocess
    import sys

    from streamproc.supervisors import load_supervisors, token_hash

    path = tmp_path / "supervisors.yaml"
    result = subprocess.run([sys.executable, "-m", "streamproc", "supervisors", "add", "Dana Park", "--queue", "billing",
                             "--queue", "support", "--file", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert len(token) >= 40 and "\n" not in token, "the token, alone on stdout"
    [entry] = load_supervisors(path).supervisors
    assert entry.token_sha256 == token_hash(token) and entry.queues == ("billing", "support")
    assert token not in path.read_text()
    listing = subprocess.run([sys.executable, "-m", "streamproc", "supervisors", "list", "--file", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert "Dana Park" in listing.stdout and "billing, support" in listing.stdout and token not in listing.stdout


def risk_record(call_id: str, score: float, factors: dict[str, float], at: float = T0) -> bytes:
    return CallRisk(call_id=call_id, rule_id="call-at-risk", score=score, threshold=60, factors=factors,
                    updated_at=from_epoch(at)).to_json_bytes()


def test_every_call_learns_its_live_risk_score_and_factors_from_calls_risk():
    b = board()
    for n, call_id in enumerate(("calm", "rising", "held")):
        call_event(b, call_id, "call_started", T0 + n, agent_id="a1", queue="billing")
    seq = b.seq
    # below the call_at_risk threshold: no alert exists, yet the page must sort by the score
    assert b.apply(TOPICS.risk, b"rising", risk_record("rising", 35.0, {"escalation": 15.0, "sentiment": 20.0, "hold": 0.0}), partition=1)
    b.apply(TOPICS.risk, b"held", risk_record("held", 12.5, {"hold": 12.5}), partition=2)
    calls = b.calls()
    assert [(c["call_id"], c["risk"]) for c in calls] == [("rising", 35.0), ("held", 12.5), ("calm", None)]
    assert calls[0]["risk_factors"] == {"escalation": 15.0, "sentiment": 20.0} and calls[0]["risk_threshold"] == 60
    changes = b.changes_since(seq)
    assert [c["call"]["call_id"] for c in changes if c["type"] == "call"] == ["rising", "held"]
    # the same score again changes nothing; a falling score is shown as it is (latest wins, not the max)
    assert not b.apply(TOPICS.risk, b"held", risk_record("held", 12.5, {"hold": 12.5}), partition=2)
    b.apply(TOPICS.risk, b"rising", risk_record("rising", 5.0, {"escalation": 5.0}), partition=1)
    assert [(c["call_id"], c["risk"]) for c in b.calls()] == [("held", 12.5), ("rising", 5.0), ("calm", None)]
    # once a call has a live score, a call_at_risk alert does not overwrite it with an older, higher one
    risk_alert = alert("rising", "call-at-risk").model_copy(update={
        "kind": AlertKind.call_at_risk, "evidence": Evidence(value=62.0, threshold=60, unit="risk_score", factors={"hold": 62.0})})
    b.apply(TOPICS.alerts, b"rising", risk_alert.to_json_bytes(), timestamp_ms=int(T0 * 1000), partition=1)
    assert b.call_view(b._calls["rising"])["risk"] == 5.0
    # a bad record is counted and skipped
    assert not b.apply(TOPICS.risk, b"held", b"{not json", partition=2)
    assert sum(b.rejected.values()) == 1


def test_a_summary_is_kept_per_call_and_sent_only_to_its_page():
    from tests.unit.test_summary import SCRIPT, run_script

    topics = BoardTopics(events="calls.events", alerts="calls.alerts", acks="calls.acks", transcripts="calls.transcripts", risk="calls.risk",
                         summaries="calls.summaries")
    board = CallBoard(RULES, topics)
    summary = run_script(SCRIPT).summaries[0]
    board.apply("calls.events", b"call-0001", json.dumps({"type": "call_started", "call_id": "call-0001", "ts": 1.0,
                                                          "agent_id": "a", "queue": "q"}).encode())
    seq = board.seq
    assert board.apply("calls.summaries", b"call-0001", summary.to_json_bytes())
    assert not board.apply("calls.summaries", b"call-0001", summary.to_json_bytes()), "a re-sent summary changes nothing"
    assert board.snapshot("call-0001")["summary"]["summary_id"] == summary.summary_id
    assert board.snapshot("other")["summary"] is None
    assert board.calls()[0]["has_summary"]
    mine = board.changes_since(seq, "call-0001")
    assert [c["type"] for c in mine] == ["summary", "call"]
    assert [c["type"] for c in board.changes_since(seq, "other")] == ["call"]
    assert not board.apply("calls.summaries", b"call-0001", b"{bad")
    assert board.rejected == {"malformed_json": 1}
