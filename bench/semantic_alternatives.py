"""Compare ways of deciding a semantic intent, on the development data only (never the test split).

    .venv/bin/python -m bench.semantic_alternatives

A. lexicon only; B. lexicon + cosine similarity to the nearest ``like`` example ≥ t (t swept);
C. lexicon + logistic head (p ≥ threshold); D. C + counter-example veto (shipped).
Data: tests/data/intents_dev.yaml (paraphrases and hard negatives) plus
tests/data/labelled_utterances.yaml. Both were used to grow the training examples, so absolute
figures are optimistic; the comparison between methods is what this is for.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

import streamproc.detect.semantic as semantic
from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.rules import load_rules
from tests.unit.test_detection_quality import _segment

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def items():
    dev = yaml.safe_load((DATA / "intents_dev.yaml").read_text())["utterances"]
    old = yaml.safe_load((DATA / "labelled_utterances.yaml").read_text())
    return dev + [i for s in ("utterances", "holdout", "holdout2") for i in old[s]]


SEMANTIC_IDS = [r.id for r in load_rules().detection.phrases if r.like]


def run(rules, data) -> tuple[float, float, float, float]:
    engine = DetectionEngine(lambda: rules)
    c = Counter()
    for n, item in enumerate(data):
        fired = {a.rule_id for a in engine.on_transcript(_segment(f"a{n}", item["speaker"], 0, item["text"]), CallInfo(), 0.0).alerts}
        want = set(item["expect"] or [])
        for rule in SEMANTIC_IDS:
            c["tp" if rule in fired and rule in want else "fp" if rule in fired else "fn" if rule in want else "tn"] += 1
    p = c["tp"] / max(1, c["tp"] + c["fp"])
    r = c["tp"] / max(1, c["tp"] + c["fn"])
    return p, r, c["fp"], c["fn"]


def main() -> None:
    rules = load_rules()
    data = items()
    d = rules.detection
    lexicon = rules.model_copy(update={"detection": d.model_copy(update={"phrases": tuple(p.model_copy(update={"like": (), "not_like": ()}) for p in d.phrases)})})
    rows = [("A lexicon only", *run(lexicon, data))]
    original = semantic.Head.score

    def cosine(self, vector, t):
        hit = original(self, vector)
        return semantic.SemanticHit(hit.similarity, hit.example, hit.similarity, t)

    for t in (0.5, 0.6, 0.7, 0.8):
        semantic.Head.score = lambda self, v, t=t: cosine(self, v, t)
        rows.append((f"B lexicon + nearest-example cosine >= {t}", *run(rules, data)))
    semantic.Head.score = lambda self, v: semantic.SemanticHit(*[getattr(original(self, v), f) for f in ("probability", "example", "similarity", "threshold")])
    rows.append(("C lexicon + logistic head p >= 0.6", *run(rules, data)))
    semantic.Head.score = original
    rows.append(("D lexicon + logistic head + counter-example veto (shipped)", *run(rules, data)))
    print(f"{len(data)} development utterances, 6 semantic detectors pooled\n")
    print("| method | precision | recall | FP | FN |\n|---|---:|---:|---:|---:|")
    for name, p, r, fp, fn in rows:
        print(f"| {name} | {p:.2f} | {r:.2f} | {fp} | {fn} |")


if __name__ == "__main__":
    main()
