"""One scripted call whose alerts depend on detection state kept across utterances.

Used by tests/unit/test_detection_snapshot.py (engine level: snapshot → JSON → a new engine) and
tests/integration/test_detection_state_restart.py (real worker processes, SIGKILL between the two
parts). Each part-2 utterance needs what part 1 left:

* u4 repeats the manager request 13 s after u0: inside the 60 s cooldown, so no second alert;
* u5 is the third negative customer final: the sentiment window (u2, u3, u4, u5) fires;
* u6 moves the call's audio past the 30 s apology window opened by the complaint in u2: the
  missed-apology alert fires;
* the risk score reached its first level in part 1 (escalation + the customer's falling sentiment,
  a trend over u0, u2, u3) and reaches the next one in part 2 (the missed windows add their
  points), without repeating the first.

A worker that starts part 2 from zero instead fires the manager request again (a second id),
misses the sentiment and window alerts, and re-fires risk level 0.
"""

from __future__ import annotations

import json

RULES_YAML = """
version: 1
detection:
  phrases:
    - {id: manager-request, kind: escalation, category: manager_request, speaker: customer, severity: warning,
       cooldown_s: 60, phrases: ["speak|talk to * manager|supervisor"]}
  sentiment:
    - {id: customer-negative-sentiment, speaker: customer, severity: warning, window: 4, min_utterances: 3,
       threshold: -0.3, min_negative: 3, max_trend: 0.1, cooldown_s: 120}
  windows:
    - id: apology-after-complaint
      severity: info
      expect: said
      after: trigger
      within_s: 30
      trigger: {speaker: customer, phrases: ["terrible", "awful"]}
      cue: {speaker: agent, phrases: ["sorry", "apologise", "apologize"]}
  risk:
    - id: call-at-risk
      severity: warning
      threshold: 25
      sentiment_window: 4
      weights: {hold: 0, sentiment: 20, escalation: 20, abuse: 0, repeat_contact: 0, dead_air: 0, missed_window: 20}
"""

#: (speaker, text, start_s, end_s); part 1 is LINES[:CRASH_AFTER].
LINES: list[tuple[str, str, float, float]] = [
    ("customer", "I want to speak to your manager", 1.0, 3.0),
    ("agent", "let me check that for you", 4.0, 6.0),
    ("customer", "this is terrible and I am really angry", 7.0, 9.0),
    ("customer", "your service is awful and useless", 10.0, 12.0),
    ("customer", "I said I want to speak to your manager", 14.0, 16.0),
    ("customer", "this is the worst horrible experience ever", 17.0, 19.0),
    ("agent", "thank you for waiting on the line", 45.0, 47.0),
]
CRASH_AFTER = 4


def segment_json(call_id: str, utterance: int) -> dict:
    speaker, text, start_s, end_s = LINES[utterance]
    return {
        "segment_id": f"{call_id}/{speaker}/{utterance}/f", "call_id": call_id, "speaker": speaker,
        "utterance": utterance, "is_final": True, "text": text, "start_s": start_s, "end_s": end_s,
        "source": "script",
    }


def segment_bytes(call_id: str, utterance: int) -> bytes:
    return json.dumps(segment_json(call_id, utterance)).encode()
