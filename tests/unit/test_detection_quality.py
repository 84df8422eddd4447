"""Precision and recall of every detector on the labelled set in tests/data/labelled_utterances.yaml.

Each utterance runs alone, as a final transcript of its speaker, through the packaged
default rules (the rules a contact center starts with). The table is printed (pytest -s)
and docs/detection.md quotes it. The bar: precision >= 0.9 and recall >= 0.85 per detector.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.rules import load_rules
from streamproc.schemas import Speaker, TranscriptSegment

DATA = Path(__file__).resolve().parents[1] / "data" / "labelled_utterances.yaml"
MIN_PRECISION = 0.9
MIN_RECALL = 0.85
SENTIMENT_RULE = "customer-negative-sentiment"


def _segment(call_id: str, speaker: str, utterance: int, text: str) -> TranscriptSegment:
    return TranscriptSegment(
        segment_id=TranscriptSegment.make_id(call_id, speaker, utterance, 0, True),
        call_id=call_id, speaker=Speaker(speaker), utterance=utterance, is_final=True, text=text,
        start_s=float(utterance * 5), end_s=float(utterance * 5 + 3), source="script",
    )


def evaluate(sections=("utterances", "holdout", "holdout2"), conversations=True) -> tuple[dict[str, Counter], list[str], int]:
    data = yaml.safe_load(DATA.read_text())
    rules = load_rules()
    engine = DetectionEngine(lambda: rules)
    detectors = [r.id for r in rules.detection.phrases] + [SENTIMENT_RULE]
    counts = {d: Counter() for d in detectors}
    mistakes: list[str] = []
    items = [item for section in sections for item in data[section]]
    for n, item in enumerate(items):
        result = engine.on_transcript(_segment(f"u{n}", item["speaker"], 0, item["text"]), CallInfo(), now=0.0)
        fired = {a.rule_id for a in result.alerts} - {SENTIMENT_RULE}
        expected = set(item["expect"])
        for detector in detectors[:-1]:
            hit, want = detector in fired, detector in expected
            counts[detector]["tp" if hit and want else "fp" if hit else "fn" if want else "tn"] += 1
            if hit != want:
                mistakes.append(f"{'FP' if hit else 'FN'} {detector}: [{item['speaker']}] {item['text']}")
    for n, conversation in enumerate(data["conversations"] if conversations else []):
        fired = False
        for k, text in enumerate(conversation["customer"]):
            result = engine.on_transcript(_segment(f"c{n}", "customer", k, text), CallInfo(), now=float(k))
            fired |= any(a.rule_id == SENTIMENT_RULE for a in result.alerts)
        want = conversation["expect"]
        counts[SENTIMENT_RULE]["tp" if fired and want else "fp" if fired else "fn" if want else "tn"] += 1
        if fired != want:
            mistakes.append(f"{'FP' if fired else 'FN'} {SENTIMENT_RULE}: {conversation['name']}")
    return counts, mistakes, len(items)


def table(counts: dict[str, Counter]) -> str:
    lines = ["| detector | TP | FP | FN | TN | precision | recall |", "|---|---:|---:|---:|---:|---:|---:|"]
    for detector, c in counts.items():
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        lines.append(f"| {detector} | {c['tp']} | {c['fp']} | {c['fn']} | {c['tn']} | {precision:.2f} | {recall:.2f} |")
    return "\n".join(lines)


def test_labelled_set_is_big_enough():
    data = yaml.safe_load(DATA.read_text())
    assert len(data["utterances"]) + len(data["holdout"]) + len(data["holdout2"]) >= 150
    positives = Counter(rule for item in data["utterances"] for rule in item["expect"])
    assert all(positives[r.id] >= 10 for r in load_rules().detection.phrases if r.id), positives


def test_precision_and_recall_per_detector():
    counts, mistakes, _ = evaluate()
    print("\n" + table(counts))
    print("\n".join(mistakes))
    for detector, c in counts.items():
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        assert c["tp"] > 0, f"{detector} has no positives in the labelled set"
        assert precision >= MIN_PRECISION, f"{detector} precision {precision:.2f} < {MIN_PRECISION}\n" + "\n".join(mistakes)
        assert recall >= MIN_RECALL, f"{detector} recall {recall:.2f} < {MIN_RECALL}\n" + "\n".join(mistakes)


if __name__ == "__main__":  # python -m tests.unit.test_detection_quality: print the tables for docs
    for title, sections, conversations in (
        ("all", ("utterances", "holdout", "holdout2"), True),
        ("held out, round 2 (never tuned on)", ("holdout2",), False),
    ):
        counts, mistakes, n = evaluate(sections, conversations)
        print(f"\n{title}: {n} utterances\n" + table(counts) + "\n" + "\n".join(mistakes))
