"""The tenth tuning's training data (bench/finetune_encoder.py): what each intent learns as negatives.

Only the data side runs here (numpy and the rules): fine-tuning needs the optional ``train`` extra
(torch), which CI does not install."""

from __future__ import annotations

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
