"""The tenth tuning's training data (bench/finetune_encoder.py): what each intent learns as negatives;
the eleventh's leave-one-round-out folds and per-rule threshold offsets.

Only the data side runs here (numpy and the rules): fine-tuning needs the optional ``train`` extra
(torch), which CI does not install."""

from __future__ import annotations

import pytest

from bench.finetune_encoder import training_data
from streamproc.rules import parse_rules

RULES = """
version: 1
detection:
  semantic: {neutral: ["what's my balance", "thanks bye"]}
  phrases:
    - {id: rude, kind: rude_phrase, severity: warning, speaker: agent,
       like: ["that's your problem not mine", "are you thick", "read the email"], not_like: ["that's not a problem at all"]}
    - {id: abuse, kind: rude_phrase, severity: warning, speaker: customer,
       like: ["you're useless", "Are you thick", "you idiot"]}
    - {id: mgr, kind: escalation, category: manager_request, severity: warning, speaker: customer,
       like: ["get me your manager", "a supervisor now", "someone senior"], not_like: ["you're useless"]}
"""


def test_negatives_are_the_same_speakers_intents_and_every_explicit_negative():
    texts, labels, mask, intents = training_data(parse_rules(RULES).detection)
    assert intents == ["rude", "abuse", "mgr"]
    row = {t: i for i, t in enumerate(texts)}
    assert len(texts) == len(set(texts)) == 11  # normalised ("Are you thick" is "are you thick") and distinct
    rude, abuse, mgr = 0, 1, 2
    # a line of two intents is a positive of both
    assert labels[row["are you thick"], rude] == labels[row["are you thick"], abuse] == 1
    # a customer intent's line never trains the agent intent's head as a negative (that head never sees a customer)...
    assert mask[row["get me your manager"], rude] == 0 and mask[row["you're useless"], rude] == 0
    # ...but a customer intent's line is a negative of the other customer intents
    assert labels[row["get me your manager"], abuse] == 0 and mask[row["get me your manager"], abuse] == 1
    # an explicit not_like is a negative even when another speaker's intent lists it as like
    assert labels[row["you're useless"], mgr] == 0 and mask[row["you're useless"], mgr] == 1
    # neutral lines and not_like are negatives of every intent
    assert all(mask[row["thanks bye"], k] == 1 and labels[row["thanks bye"], k] == 0 for k in (rude, abuse, mgr))
    assert mask[row["that's not a problem at all"], rude] == 1 and labels[row["that's not a problem at all"], rude] == 0


def test_per_rule_threshold_offsets_move_only_the_named_semantic_rule():
    from bench.finetune_encoder import _offsets, with_thresholds

    rules = parse_rules(RULES.replace("semantic: {", "semantic: {threshold: 0.5, ").replace('id: mgr, kind', 'id: mgr, threshold: 0.6, kind'))
    moved = with_thresholds(rules, 0.05, _offsets(["rude=+0.1", "mgr=-0.05"]))
    thresholds = {r.id: r.threshold for r in moved.detection.phrases}
    # the rule's own threshold (mgr) or the semantic default (0.5) is the starting point; the common offset adds to both
    assert thresholds == {"rude": 0.65, "abuse": 0.55, "mgr": 0.6}
    assert with_thresholds(rules) is rules
    with pytest.raises(SystemExit, match="no semantic rule"):
        with_thresholds(rules, 0.0, {"rudeness": 0.1})


def test_leave_one_round_out_folds_are_every_development_round_from_4():
    from bench.intents_dev import LORO_ROUNDS, _span

    held = [path.name for path, _, _ in LORO_ROUNDS]
    assert held == [f"intents_test{n}.yaml" for n in range(4, 32)] and _span() == "4-31"
    # each fold also drops the round's transcripts, which must exist (a missing file would leave them in the examples)
    assert all(asr.is_file() and asr.name == path.name.replace(".yaml", "_asr.yaml") for path, asr, _ in LORO_ROUNDS)
