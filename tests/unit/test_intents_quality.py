"""Precision and recall of every phrase detector on the FROZEN test split.

Thirty-two rounds, each written before the tuning it measures and committed on its own:

* round 1, tests/data/intents_test.yaml: first run after the first tuning; its misses were
  then used to grow the examples, so from then on it is development data (reported, not
  asserted);
* round 2, tests/data/intents_test2.yaml: written before that tuning; its misses (and round 1's)
  then drove the second tuning, so it is development data too;
* round 3, tests/data/intents_test3.yaml: written before the third tuning, run once at its end;
  its misses drove the fourth tuning: development data;
* round 4, tests/data/intents_test4.yaml: written blind by someone other than the author of the
  examples, run once after the fourth tuning; its misses (and its training half) drove the fifth
  tuning: development data now (bench/intents_dev.py --round4);
* round 5, tests/data/intents_test5.yaml: written blind by another separate session from the
  seven definitions alone, committed on its own (a993b3c) before the fifth tuning's model was
  frozen (589e372), run once after (3 of 7 at the bar). 28 of its 390 lines nearly copy a
  training string of the fifth tuning (rapidfuzz ratio >= 80) and were never scored
  (BLIND_ROUNDS[5].leaked). Its training half and misses drove the sixth tuning: development data now
  (bench/intents_dev.py --round5);
* round 6, tests/data/intents_test6.yaml: written blind by a third separate session from the
  definitions alone (2fac838), merged before the sixth tuning's data was merged, run once after
  the model was frozen (b5ab2af; 1 of 7 at the bar). 2 of its 385 lines nearly copy a training
  string of the sixth tuning (BLIND_ROUNDS[6].leaked, never scored nor trained on). Since the seventh
  tuning all the rest of it is training examples: development data (bench/intents_dev.py --loro);
* round 7, tests/data/intents_test7.yaml: written blind by a fourth separate session from the
  definitions alone (c753052), merged before the seventh tuning's model was merged and frozen
  (b8e0292), run once after (4 of 7 at the bar). 2 of its 393 lines nearly copy a training string
  of the seventh tuning (rapidfuzz ratio 82 and 91, found before the run by a script that printed
  only scores and line numbers): BLIND_ROUNDS[7].leaked, never scored nor trained on. Since the eighth tuning
  all the rest of it is training examples: development data (bench/intents_dev.py --loro);
* round 8, tests/data/intents_test8.yaml: written blind by a fifth separate session from the
  definitions alone (ea89898), merged before the eighth tuning was merged and frozen (994aa95), run
  once after (3 of 7 at the bar, abuse and churn one line short; 29 errors against 38 for the rules
  before the eighth tuning on the same lines). 1 of its 395 lines nearly copies a training string of
  the eighth tuning (rapidfuzz ratio 82, found before the run by a script that printed only scores
  and line numbers): BLIND_ROUNDS[8].leaked, never scored nor trained on. Since the ninth tuning all the rest
  of it is training examples: development data (bench/intents_dev.py --loro);
* round 9, tests/data/intents_test9.yaml: written blind by a sixth separate session from the
  definitions alone (529d7ce), merged before the ninth tuning was merged and frozen (078ffef; its
  first parent c492f29 is the eighth tuning), run once after: 5 of 7 at the bar, rudeness and churn
  one line short (35 of 39); 33 errors, against 30 (4 of 7 at the bar) for the eighth tuning's rules
  on the same lines. No line within rapidfuzz ratio 80 of a training string (BLIND_ROUNDS[9].leaked empty).
  Since the tenth tuning all of it is training examples: development data (bench/intents_dev.py --loro);
* round 10, tests/data/intents_test10.yaml: written blind by a seventh separate
  session from the definitions alone (fbd6a55), merged and transcribed (4fc204b) before the tenth
  tuning was merged and frozen (5e4eea2; its first parent is the ninth tuning), run once after: 5 of
  7 at the bar, rudeness (34 of 39) and legal threat (35 of 39) below; 29 errors, against 31 (4 of 7
  at the bar) for the ninth tuning's rules on the same lines. The tenth tuning's opt-in fine-tuned
  encoder (detection.semantic.encoder: tuned), run once beside it as declared before the run: 24
  errors, 6 of 7 (abuse 35 of 39). No line within rapidfuzz ratio 80 of a training string (LEAKED empty).
  Since the eleventh tuning all of it is training examples and a leave-one-round-out fold
  (bench/intents_dev.py --loro): development data;
* round 11, tests/data/intents_test11.yaml: written blind by an eighth separate
  session from the definitions alone (c3f9344), merged and transcribed (0e61078) before the eleventh
  tuning was written, merged and frozen (65d48e2; its first parent is the tenth tuning), run once
  after: 6 of 7 at the bar, repeat contact below (33 of 39); 34 errors, against 38 (6 of 7 at the
  bar, repeat contact 32 of 39) for the tenth tuning's rules on the same lines. The eleventh tuning's
  opt-in tuned encoder, run once beside it as declared before the run: 35 errors, 4 of 7. No line
  within rapidfuzz ratio 80 of a training string (BLIND_ROUNDS[11].leaked empty). Since the twelfth tuning all
  of it is training examples and a leave-one-round-out fold: development data;
* round 12, tests/data/intents_test12.yaml: written blind by a ninth separate
  session from the definitions alone (8c9fb75), merged and transcribed (4da5ad7, c392072) before the
  eleventh tuning was merged; the twelfth tuning (round 11 as examples, 76f74ec) frozen, then run
  once: 5 of 7 at the bar, rudeness (31 of 39) and churn (34 of 39) below; 32 errors, against 35 (4 of
  7) for the eleventh tuning's rules on the same lines. The opt-in tuned encoder beside it, declared
  before the run: 33 errors, 6 of 7 (churn 33 of 39). No line within rapidfuzz ratio 80 of a training
  string (BLIND_ROUNDS[12].leaked empty). Since the thirteenth tuning all of it is training examples and a
  leave-one-round-out fold: development data;
* round 13, tests/data/intents_test13.yaml: written blind by a tenth separate
  session from the definitions alone (9bfae97), 396 lines of which 20 carry two intents, merged and
  transcribed (022f477, 73fc191) before the thirteenth tuning (windows, round 12 as examples) was
  written and frozen (b8141b5), run once after: 6 of 7 at the bar, profanity below (23 of 27, the
  lexicon-only detector); 15 errors, against 22 (5 of 7) for the twelfth tuning's rules on the same
  lines. The opt-in tuned encoder beside it, declared before the run: 16 errors, 6 of 7. No line within
  rapidfuzz ratio 80 of a training string (BLIND_ROUNDS[13].leaked empty). Since the fourteenth tuning all of it
  is training examples and a leave-one-round-out fold: development data;
* round 14, tests/data/intents_test14.yaml: written blind by an eleventh separate
  session from the definitions alone (518f672), 396 lines of which 20 carry two intents, merged and
  transcribed (9fd24ec) before the fourteenth tuning (windows pooled from one pass, round 13 as
  examples, profanity lexicon additions) was frozen (cde26cc), run once after: 4 of 7 at the bar,
  rudeness (35 of 39), churn (34 of 39) and profanity (20 of 27) below; 28 errors, against 31 (4 of 7)
  for the thirteenth tuning's rules on the same lines. The opt-in tuned encoder beside it, declared
  before the run: 34 errors, 4 of 7. No line within rapidfuzz ratio 80 of a training string
  (BLIND_ROUNDS[14].leaked empty). Since the fifteenth tuning all of it is training examples and a
  leave-one-round-out fold: development data;
* round 15, tests/data/intents_test15.yaml: written blind by a twelfth separate
  session from the definitions alone (bacb54e), 396 lines of which 20 carry two intents, merged and
  transcribed (2e116af) before the fifteenth tuning (a trained head for profanity beside its word
  list, round 14 as examples) was frozen (e51bb7e), run once after: 6 of 7 at the bar, profanity
  below (24 of 27); 13 errors, against 23 (5 of 7) for the fourteenth tuning's rules on the same
  lines. The opt-in tuned encoder beside it, declared before the run: 15 errors, 6 of 7. No line
  within rapidfuzz ratio 80 of a training string (BLIND_ROUNDS[15].leaked empty). Since the sixteenth tuning all
  of it is training examples and a leave-one-round-out fold: development data;
* round 16, tests/data/intents_test16.yaml: written blind by a thirteenth separate
  session from the definitions alone (9ad0907), 396 lines of which 20 carry two intents, merged and
  transcribed (04b73b1) after the sixteenth tuning (joined pieces for profanity, round 15 as examples)
  was frozen (dac2edc), run once after: 4 of 7 at the bar, rudeness (34 of 39), churn (35 of 39) and
  profanity (22 of 27) below; 27 errors, against 26 (5 of 7) for the fifteenth tuning's rules on the
  same lines. No line within rapidfuzz ratio 80 of a training string (BLIND_ROUNDS[16].leaked empty).
  Since the seventeenth tuning all of it is training examples and a leave-one-round-out fold;
* round 17, tests/data/intents_test17.yaml: written blind by a fourteenth separate
  session from the definitions alone (aa0ea85), 396 lines of which 20 carry two intents, transcribed
  (16684e1) while the seventeenth tuning (rudeness threshold 0.4, the window pre-screen, round 16 as
  examples) was built; frozen (eb300d2), then run once: 5 of 7 at the bar, profanity (22 of 27) and
  churn (35 of 39) below; 32 errors, against 34 (5 of 7) for the sixteenth tuning's rules on the same
  lines. No line within rapidfuzz ratio 80 of a training string (BLIND_ROUNDS[17].leaked empty). Since
  the eighteenth tuning all of it is training examples and a leave-one-round-out fold;
* round 18, tests/data/intents_test18.yaml: written blind by a fifteenth separate
  session from the definitions alone (91d9fa0), 396 lines of which 20 carry two intents, transcribed
  (0987692) while the eighteenth tuning (minced oaths as the profanity head's counter-examples, round 17
  as examples) was built; frozen (72ef30c), then run once: 4 of 7 at the bar, rudeness (35 of 39),
  profanity (24 of 27) and manager (precision 38 of 45) below; 27 errors, against 34 (3 of 7) for the
  seventeenth tuning's rules on the same lines. Line 8 is within rapidfuzz ratio 80 (90.1) of one of
  that tuning's hand-written minced oaths (written without sight of it): LEAKED, not scored. Since the
  nineteenth tuning all of it is training examples and a leave-one-round-out fold;
* round 19, tests/data/intents_test19.yaml: written blind by a sixteenth separate
  session from the definitions alone (56588e5), 396 lines of which 20 carry two intents, transcribed
  (f66ea49) while the nineteenth tuning (other languages' swears, manager hard negatives, round 18 as
  examples) was built; frozen (39b96ec), then run once: 5 of 7 at the bar, customer abuse (33 of 39)
  and repeat contact (34 of 39) below; 18 errors, against 22 (4 of 7) for the eighteenth tuning's
  rules on the same lines. No line within rapidfuzz ratio 80 of a training string
  (BLIND_ROUNDS[19].leaked empty). Since the twentieth tuning all of it is training examples and a
  leave-one-round-out fold;
* round 20, tests/data/intents_test20.yaml: written blind by a seventeenth separate
  session from the definitions alone (9c53e9d), 396 lines, transcribed while the twentieth tuning
  (hand-written abuse and repeat-contact examples, round 19 as examples) was built; frozen (3c07fb3),
  then run once: 7 of 7 at the bar; 11 errors, against 12 (6 of 7: abuse 35 of 39) for the nineteenth
  tuning's rules on the same lines. No line within rapidfuzz ratio 80 of a training string
  (BLIND_ROUNDS[20].leaked empty). Development data since round 21 replaced it; training examples
  since the twenty-first tuning;
* round 21, tests/data/intents_test21.yaml: written blind by an eighteenth separate
  session from the definitions alone (5c05db2), 396 lines, transcribed (3a1ed52) after the twentieth
  tuning was frozen; no tuning between rounds 20 and 21, so it measures the same rules a second time.
  Run once: 6 of 7 at the bar, customer abuse (32 of 39) below; 25 errors, against 26 (6 of 7) for the
  nineteenth tuning's rules. No line within rapidfuzz ratio 80 of a training string. Since the
  twenty-first tuning all of it is training examples (with round 20's);
* round 22, tests/data/intents_test22.yaml: written blind by a nineteenth separate
  session from the definitions alone (7e740ef), 396 lines, transcribed (477d9c9) while the twenty-first
  tuning (encoder int8, rounds 20 and 21 as examples, hand-written abuse lines) was built; frozen
  (5afd3ca), then run once: 6 of 7 at the bar, agent rudeness (33 of 39) below; 15 errors, against
  15 (6 of 7, rudeness 33 of 39 too) for the twentieth tuning's rules with the base encoder. No line within rapidfuzz ratio 80
  of a training string. Since the twenty-second tuning all of it is training examples;
* round 23, tests/data/intents_test23.yaml: written blind by a twentieth separate
  session from the definitions alone (0f50953), 396 lines, transcribed (ac4918e) while the twenty-second
  tuning (round 22 as examples, hand-written agent sarcasm lines, the int8 encoder re-quantised U8U8) was
  built; frozen (c454823), then run once: 6 of 7 at the bar, agent rudeness (34 of 38) below; 23 errors,
  against 22 (6 of 7, rudeness 34 of 38 too) for the twenty-first tuning's rules. Line 255 is within
  rapidfuzz ratio 87.6 of one of that tuning's hand-written lines (written without sight of it): LEAKED,
  not scored, so 395 lines count. Since the twenty-third tuning all of it is training examples;
* round 24, tests/data/intents_test24.yaml: written blind by a twenty-first separate
  session from the definitions alone (0752e26), 396 lines, transcribed (93403bf) while the twenty-third
  tuning (round 23 as examples, hand-written agent blame lines) was validated; frozen (a0180bd), then
  run once: 5 of 7 at the bar, agent rudeness (34 of 39) and churn (35 of 39) below; 20 errors, against
  20 (the same 5 of 7) for the twenty-second tuning's rules. No line within rapidfuzz ratio 80 of a
  training string of the frozen tuning (max 79.6). Since the twenty-fourth tuning all of it is
  training examples;
* round 25, tests/data/intents_test25.yaml: written blind by a twenty-second separate
  session from the definitions alone (0730c21), 396 lines, transcribed (3f34f77) while the twenty-fourth
  tuning (round 24 as examples, hand-written agent sarcasm and churn-after-a-grievance lines) was built;
  frozen (d2a466d), then run once: 7 of 7 at the bar; 16 errors, against 20 (6 of 7, churn 35 of 39
  below) for the twenty-third tuning's rules. No line within rapidfuzz ratio 80 of a training string of
  the frozen tuning (max 78.6). Development data since round 26's run;
* round 26, tests/data/intents_test26.yaml: written blind by a twenty-third separate
  session from the definitions alone (0231bb1), 396 lines, transcribed (93cbd21); the twenty-fourth tuning
  (d2a466d) still frozen, nothing tuned since round 25's run; then run once: 6 of 7 at the bar, churn (32 of
  39) below; 27 errors, against 28 (5 of 7, churn 32 and abuse 35 of 39 below) for the twenty-third
  tuning's rules. No line within rapidfuzz ratio 80 of a training string (max 79.7). Development data
  since round 27's run;
* round 27, tests/data/intents_test27.yaml: written blind by a twenty-fourth separate
  session from the definitions alone (46cf661), 396 lines, transcribed (22895da); the twenty-fourth tuning
  still frozen (a twenty-fifth, rounds 25 and 26 as examples, was level by leave-one-round-out and not
  adopted); then run once: 5 of 7 at the bar, profanity (24 of 27) and churn (0.89 / 0.85) below; 25
  errors, against 27 (4 of 7) for the twenty-third tuning's rules. No line within rapidfuzz ratio 80 of
  a training string (max 79.8). Its writer's brief named some kinds of round 26's misses as categories
  (docs/detection.md). Since the twenty-fifth tuning rounds 25-27 are training examples;
* round 28, tests/data/intents_test28.yaml: written blind by a twenty-fifth separate
  session from the definitions alone (9c0234e), 396 lines, transcribed (c7e6e74) while the twenty-fifth tuning
  (rounds 25-27 as examples, churn threshold 0.55, more languages' swears) was built; frozen (877277f),
  then run once: 6 of 7 at the bar, profanity (22 of 27, 2 false alerts) below; 20 errors, against 23
  (4 of 7) for the twenty-fourth tuning's rules. No line within rapidfuzz ratio 80 of a training string of
  the frozen tuning (max 79.7). Development data since round 29's run;
* round 29, tests/data/intents_test29.yaml: written blind by a twenty-sixth separate
  session from the definitions alone (0f62426), 396 lines, transcribed (16470d5); the twenty-fifth tuning
  (877277f) still frozen, nothing tuned since round 28's run; then run once: 5 of 7 at the bar, profanity
  (24 of 27) and churn (34 of 39) below; 19 errors, against 23 (5 of 7, profanity 22 and churn 35 below)
  for the twenty-fourth tuning's rules. No line within rapidfuzz ratio 80 of a training string (max 79.7).
  Development data since round 30's run;
* round 30, tests/data/intents_test30.yaml: written blind by a twenty-seventh separate
  session from the definitions alone (c067669), 396 lines, transcribed (de3ad04); the twenty-fifth tuning
  (877277f) still frozen, nothing tuned since round 28's run (a re-fine-tuned encoder was rejected on
  rounds 28-29 before round 30 was opened); then run once: 7 of 7 at the bar; 8 errors, against 9 (also
  7 of 7) for the twenty-fourth tuning's rules. No line within rapidfuzz ratio 80 of a training string
  (max 79.6). Development data since round 31's run;
* round 31, tests/data/intents_test31.yaml: written blind by a twenty-eighth separate
  session from the definitions alone (3ebf835), 396 lines, transcribed (7b787c5) while the twenty-sixth
  tuning (rounds 28-29 as examples, more languages' swears) was built; frozen (ec5fb51), then run once:
  6 of 7 at the bar, agent rudeness (35 of 39) below; 22 errors, against 20 (7 of 7) for the twenty-fifth
  tuning's rules. No line within rapidfuzz ratio 80 of a training string of the frozen tuning (max 79.8).
  Development data since round 32's run (a leave-one-round-out fold; not yet examples);
* round 32, tests/data/intents_test32.yaml: THE TEST SPLIT. Written blind by a twenty-ninth separate
  session from the definitions alone (9ae2274), 396 lines, transcribed (eac8b22) while the twenty-seventh
  tuning ("sod" no longer after "you"; round 30 as examples measured and not adopted: over the latency
  budget) was built; frozen (25d8424), then run once: 5 of 7 at the bar, agent profanity (24 of 27) and
  churn (34 of 39) below; 32 errors, the same 32 for the twenty-sixth tuning's rules (no line has "you sod").
  No line within rapidfuzz ratio 80 of a training string of the frozen tuning (max 79.2).

The semantic heads are trained on the rules file's like/not_like/neutral examples, which include
the lines of tests/data/labelled_utterances.yaml, tests/data/intents_dev.yaml, rounds 1-3 and
round 4's and round 5's training halves and (since the seventh to twenty-sixth tunings) rounds 6 to 29. The
sha256s below pin all thirty-two rounds: editing one to make a rule pass fails this test.

The bar is precision >= 0.9 and recall >= 0.9 per detector. Detectors that miss it on the test
split's one run are marked xfail(strict=True) with those figures (BELOW_BAR), so the gap stays
visible and the mark must go once a later, new round shows them at the bar
(docs/detection.md#quality). Never tune on the test split to remove a mark: write the next round first.

    .venv/bin/python -m tests.unit.test_intents_quality      # prints the tables and the misses
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.rules import load_rules
from tests.unit.test_detection_quality import _segment, table

DATA = Path(__file__).resolve().parents[1] / "data"
@dataclass(frozen=True)
class Round:
    """One blind round of labelled lines, pinned by its sha256 (test_test_splits_are_frozen)."""

    number: int
    sha256: str
    #: lines (0-based) that nearly copy a training string of the tuning it measured: never scored nor trained on
    leaked: frozenset[int] = frozenset()
    note: str = ""

    @property
    def path(self) -> Path:
        return DATA / ("intents_test.yaml" if self.number == 1 else f"intents_test{self.number}.yaml")

    @property
    def asr_path(self) -> Path:
        """Its lines as the English recogniser heard them (bench/through_asr.py)."""
        return self.path.with_name(self.path.stem + "_asr.yaml")

    @property
    def split(self) -> str:
        """Its name for bench/through_asr.py --split."""
        return self.path.stem.removeprefix("intents_")


#: every round, in the order written; each was run once on the tuning frozen before it, then became
#: development data (training examples and a leave-one-round-out fold) for the next tuning
BLIND_ROUNDS: dict[int, Round] = {r.number: r for r in (
    Round(1, "e509f4502c72e936dc68521af7e0a865bc5e543aa1b8616719d0e0d1c0257a43", note="development data"),
    Round(2, "b12304f7947a4b7fdb4c880b3eb902544d4027b81588061695fe3dcc8956048e", note="development data since round 3"),
    Round(3, "08dba3e31c492b91f3c53f114d7bb63571193d97bb632563f4e5dee4d64c4c92", note="development data since round 4"),
    Round(4, "0fd1da39ace930a18cd6b8d2092a29d8dcf667a9fcc88cda5ab46dc242387b6a", note="development data since round 5 (half of it training lines)"),
    Round(5, "319a6448f82d5382bc0e619543832b98411485cda6cd2a9b62e41e2ebc6af97e", frozenset({13, 31, 43, 66, 69, 78, 82, 97, 99, 100, 102, 111, 131, 162, 165, 190, 192, 197, 234, 248, 289, 331, 333, 334, 357, 365, 375, 385}), note="development data since round 6 (half of it training lines)"),
    Round(6, "2dd45190832e36bbca8223ad3bf1d07f4ac864f644b6be949584ffa6add8794b", frozenset({177, 187}), note="development data since the seventh tuning (all of it but the leaked lines training lines)"),
    Round(7, "02894b1f2faa067b1bc38ae779bfea952f218e49bc2e853f937575bafae5b6b1", frozenset({130, 363}), note="development data since the eighth tuning (all of it but the leaked lines training lines)"),
    Round(8, "5dd556090566277c6cda7fa4b0b1170584156552469d1893f17d042af6a3ad79", frozenset({31}), note="development data since the ninth tuning (all of it but the leaked lines training lines)"),
    Round(9, "672c2f8cd5cd2db6659213ea6d8ebf314b316bea1ae639a2577f4ad56acd47ea", note="development data since the tenth tuning (all of it training lines)"),
    Round(10, "62d9d404a1c221c8d2734c9afdd2c6c999b212f63bd69c90955e3c85d96b3b22", note="development data since the eleventh tuning (all of it training lines)"),
    Round(11, "ff4934ffe6650d39b0f5ed89bc13999d2226e14edd3f72ba1bfa92220892402b", note="development data since the twelfth tuning (all of it training lines)"),
    Round(12, "268b6014bf5d79c6a68e72515b9553bc69727802140f4f1ac0fc2b688dbb085c", note="development data since the thirteenth tuning (all of it training lines)"),
    Round(13, "4ee985c4c7924a9235b19a1f2c8489820c6591354a1e670b7bb8d566e0e9ad71", note="development data since the fourteenth tuning (all of it training lines)"),
    Round(14, "86c7a40c5683a40cf7b42d598ecf66ee6233693726c2636e316dd05f85ea9223", note="development data since the fifteenth tuning (all of it training lines)"),
    Round(15, "e439fb41175f07f24d4507b99c5739eb7185fd196fcd653c16a463307b39191a", note="development data since the sixteenth tuning (all of it training lines)"),
    Round(16, "19c1450b1e38decaab85980bff28bc2d97f3e6f4042a939163c7b0401630f1d5", note="development data since the seventeenth tuning (all of it training lines)"),
    Round(17, "d9fcde8f5e082e741bce28d0550b1be3b843a6d467df5ec806fd00b4af184735", note="development data since the eighteenth tuning (all of it training lines)"),
    Round(18, "951768da4776171f4485eb9a170918de016d62cfe32709220128d46b4fb2dd43", frozenset({8}), note="development data since the nineteenth tuning (all of it training lines)"),
    Round(19, "bbe31898f839daf3a938d5eaa680e0c5914b35bf6b9cd52f8b84fe00edba0abd", note="development data since the twentieth tuning (all of it training lines)"),
    Round(20, "6bc04c109206239e3440b8862e4ce85cc7330524b8b5265f4d65d7c37f4a5ecc", note="development data since the twenty-first tuning (all of it training lines)"),
    Round(21, "dd628e60dfd081e2133e82b378bb1da5b9c74d4a090bce955459435cbeb316fd", note="development data since the twenty-first tuning (all of it training lines)"),
    Round(22, "4b945da21bb64213c231a6ceebac0422c256daa43eff1412e8c4771eef1cd823", note="development data since the twenty-second tuning (all of it training lines)"),
    Round(23, "fd82eec7423253708a1f58024e999faaafd0ef856c4966c36b82537466d0dda7", leaked=frozenset({255}),
          note="development data since the twenty-third tuning (all of it training lines); line 255 within ratio 87.6 of a hand-written twenty-second-tuning line"),
    Round(24, "ce773062586a8cb5e292d68b1c341aade5903990a62caf5bd504d42e2cb48167",
          note="development data since the twenty-fourth tuning (all of it training lines)"),
    Round(25, "562bc38edf87647a3da224ff4af7372253da76c92d70f372365492318bea9d11",
          note="development data since round 26's run; training lines since the twenty-fifth tuning"),
    Round(26, "abccf51e0e14610789c495ee1643dad09bcdd245707354c6e0c2394c499cff5a",
          note="development data since round 27's run; training lines since the twenty-fifth tuning"),
    Round(27, "30e9faa3197a867bf865305497f6b73ed26049a98216f59dca7e026512ce15a6",
          note="development data since the twenty-fifth tuning (all of it training lines)"),
    Round(28, "4ebc051ebd7ffa00c5766b3202711f9d0f9f4d5f2cde4567b406e897552eeaa5",
          note="development data since round 29's run"),
    Round(29, "fbbad05ca23897ff12c4056be1392577f67ad20e468efca5523ccdebf450d0e2",
          note="development data since round 30's run"),
    Round(30, "d45464274f4e3c185087a9d99d143456fb711c2e1cef254ad63b7b3817c08623",
          note="development data since round 31's run"),
    Round(31, "8613c109612cfae930b9fa5d8e0b6352a92ea7fe6e094f296d17122214728742",
          note="development data since round 32's run"),
    Round(32, "04c428f9d645596a0cbe39a5333b6456fa9fef54a8c38bf97fe8f53dfb3638a1",
          note="THE TEST SPLIT: the held-out round the bar is asserted on"),
)}
TEST_ROUND = 32
TEST_SPLIT = BLIND_ROUNDS[TEST_ROUND].path  # the held-out split the bar is asserted on
LEAKED = BLIND_ROUNDS[TEST_ROUND].leaked
DEV_ROUNDS = tuple(r for n, r in BLIND_ROUNDS.items() if n != TEST_ROUND)
MIN_PRECISION = 0.9
MIN_RECALL = 0.9
MIN_POSITIVES = 5  # per detector in the test split; fewer and one line moves recall by > 0.2
DETECTORS = ("agent-rudeness", "agent-profanity", "customer-abuse", "manager-request", "churn-intent", "legal-threat", "repeat-contact")
#: test-split figures (precision, recall) of the detectors below the bar on round 32's one run (the twenty-seventh
#: tuning): profanity 0.96/0.889 (24 of 27) and churn 0.97/0.872 (34 of 39). At it: rudeness 0.92/0.92, abuse
#: 1.00/0.95, manager 0.907/1.00 (4 false alerts), legal 0.93/0.97, repeat 0.90/0.95; see docs/detection.md.
#: (Round 31's one run, the twenty-sixth tuning: rudeness 0.97/0.897 (35 of 39) below the bar; at it: profanity
#: 0.93/0.96, abuse 0.95/0.97, manager 0.93/1.00, churn 1.00/0.92, legal 0.975/1.00, repeat 0.93/0.97. Round 30's one run, the twenty-fifth
#: tuning: every detector at the bar: rudeness 0.97/0.97, profanity 1.00/0.96, abuse 1.00/1.00, manager
#: 0.907/1.00 (4 false alerts), churn 0.97/1.00, legal 1.00/1.00, repeat 1.00/1.00. Round 29's one run, the same
#: twenty-fifth tuning: profanity 1.00/0.89 (24 of 27) and churn 1.00/0.87 (34 of 39) below the bar; at it:
#: rudeness 1.00/0.92, abuse 1.00/1.00, manager 0.93/0.97, legal 1.00/1.00, repeat 0.97/0.92. Round 28's one run, the same
#: twenty-fifth tuning: profanity 0.92/0.81 below the bar; at it: rudeness 1.00/1.00, abuse 0.97/0.92, manager
#: 0.95/1.00, churn 0.97/0.92, legal 0.97/0.95, repeat 1.00/1.00. Round 27's one run, before the
#: twenty-fifth tuning: profanity 1.00/0.89 and churn 0.89/0.85 below the bar; at it: rudeness 0.97/0.95, abuse
#: 0.97/0.92, manager 0.95/1.00, legal 1.00/1.00, repeat 0.95/0.97. Round 26's one
#: run, the same twenty-fourth tuning: churn 0.97/0.82 below the bar; at it: rudeness 1.00/0.95, profanity
#: 0.96/1.00, abuse 0.97/0.92, manager 0.93/1.00, legal 0.93/0.97, repeat 0.90/0.97. Round 25's one run, the same twenty-fourth tuning: every
#: detector at the bar: rudeness 0.97/0.92, profanity 1.00/1.00, abuse 1.00/0.95, manager
#: 0.93/1.00, churn 0.97/0.95, legal 0.97/1.00, repeat 1.00/0.92. Round 24's one
#: run, before the twenty-fourth tuning: rudeness 1.00/0.87 (34 of 39) and churn 0.95/0.897 (35 of 39)
#: below the bar; at it: profanity 1.00/1.00, abuse 1.00/0.95, manager 0.97/1.00, legal 0.97/0.97, repeat
#: 0.97/0.92. Round 23's one run, before the
#: twenty-third tuning: rudeness 1.00/0.895 below the bar; at it: profanity 0.93/0.96, abuse 1.00/0.95,
#: manager 0.95/0.97, churn 0.95/0.92, legal 0.95/0.97, repeat 0.97/0.95. Round 22's
#: one run, before the twenty-second tuning: rudeness 0.94/0.85 below the bar; at it: profanity 0.93/1.00,
#: abuse 0.97/0.97, manager 1.00/1.00, churn 0.97/0.97, legal 0.97/1.00, repeat 1.00/1.00. Round 21's
#: one run, before the twenty-first tuning: abuse 0.97/0.82 below the bar. Round 20's
#: one run, the same twentieth tuning: every detector at the bar, abuse 1.00/0.92. Round 19's one run,
#: before the twentieth tuning: abuse 1.00/0.85 and repeat
#: 0.97/0.87 below the bar. Round 18's one run, before
#: the nineteenth tuning: rudeness 0.95/0.897, profanity 0.92/0.89 and manager 0.84/0.97 below the bar.
#: Round 17's one run, before the eighteenth tuning:
#: profanity 0.88/0.81 and churn 0.92/0.897 below the bar. Round 16's one run, before the
#: seventeenth tuning: rudeness 0.92/0.87, profanity 0.96/0.81 and churn 0.95/0.897 below the bar. Round 15's, before the sixteenth tuning:
#: profanity 0.96/0.89 below the bar, the six semantic detectors at it. Round 14's one
#: run, before the fifteenth tuning: rudeness 0.97/0.897, churn 0.92/0.87 and profanity 0.95/0.74 below
#: the bar. Round 13's, before the fourteenth: profanity 1.00/0.85. Round 12's one
#: run, before the thirteenth tuning: rudeness 0.91/0.79 and churn 0.94/0.87 below the bar. Round 11's,
#: before the twelfth: repeat 0.94/0.85. Round 10's
#: one run, before the eleventh tuning: rudeness 0.94/0.87 and legal 0.95/0.897 below the bar. Round 9's,
#: before the tenth: rudeness 0.95/0.897 and churn 0.95/0.897. Round 8's, before the ninth: abuse
#: 1.00/0.897, churn 1.00/0.897, legal 1.00/0.87, repeat 0.94/0.87. Round 7's, before the eighth: rudeness
#: 0.97/0.72, legal 0.94/0.89, repeat 0.86/1.00. Round 6's, before the seventh: rudeness 0.93/0.71, abuse
#: 1.00/0.87, manager 1.00/0.89, churn 0.85/0.89, legal 0.84/0.84, repeat 0.85/0.74.)
BELOW_BAR: dict[str, tuple[float, float]] = {"agent-profanity": (0.960, 0.889), "churn-intent": (0.971, 0.872)}


def evaluate(path: Path = TEST_SPLIT, rules=None, exclude: frozenset[int] | None = None) -> tuple[dict[str, Counter], list[str]]:
    """Counts and mistakes on ``path``; lines numbered in ``exclude`` (default: LEAKED for the test split) are not scored."""
    rules = rules or load_rules()
    engine = DetectionEngine(lambda: rules)
    items = yaml.safe_load(path.read_text())["utterances"]
    exclude = LEAKED if exclude is None and path == TEST_SPLIT else exclude or frozenset()
    items = [item for n, item in enumerate(items) if n not in exclude]
    detectors = [r.id for r in rules.detection.phrases]
    counts = {d: Counter() for d in detectors}
    mistakes = []
    for n, item in enumerate(items):
        alerts = engine.on_transcript(_segment(f"t{n}", item["speaker"], 0, item["text"]), CallInfo(), now=0.0).alerts
        fired = {a.rule_id: a for a in alerts}
        expected = set(item["expect"] or [])
        for detector in detectors:
            hit, want = detector in fired, detector in expected
            counts[detector]["tp" if hit and want else "fp" if hit else "fn" if want else "tn"] += 1
            if hit != want:
                why = ""
                if hit and fired[detector].evidence.matched_example:
                    why = f" (like “{fired[detector].evidence.matched_example}”, p={fired[detector].evidence.value:.2f})"
                mistakes.append(f"{'FP' if hit else 'FN'} {detector}: [{item['speaker']}] {item['text']}{why}")
    return counts, mistakes


def _pr(c: Counter) -> tuple[float, float]:
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
    return precision, recall


@pytest.fixture(scope="module")
def results():
    return evaluate()


def test_test_splits_are_frozen():
    assert list(BLIND_ROUNDS) == list(range(1, TEST_ROUND + 1))
    for blind in BLIND_ROUNDS.values():
        assert hashlib.sha256(blind.path.read_bytes()).hexdigest() == blind.sha256, (
            f"{blind.path.name} changed: it is a frozen test split; add new data to intents_dev.yaml"
        )


def test_labelled_set_is_big_enough():
    """The test split alone is big (>= 300 lines, >= 5 positives per detector); all labelled data >= 600.

    The development lines are also training examples since the fourth tuning, so they are counted
    once (as development data), not again as examples."""
    test = yaml.safe_load(TEST_SPLIT.read_text())["utterances"]
    dev = [i for p in (*(r.path for r in DEV_ROUNDS), DATA / "intents_dev.yaml") for i in yaml.safe_load(p.read_text())["utterances"]]
    old = yaml.safe_load((DATA / "labelled_utterances.yaml").read_text())
    old_n = sum(len(old[s]) for s in ("utterances", "holdout", "holdout2"))
    assert len(test) >= 300 and len(test) + len(dev) + old_n >= 1000
    assert sum(not item["expect"] for item in test) >= 60, "hard negatives"
    positives = Counter(rule for item in test for rule in item["expect"] or [])
    assert all(positives[d] >= MIN_POSITIVES for d in DETECTORS), positives


@pytest.mark.parametrize(
    "detector",
    [
        pytest.param(d, marks=pytest.mark.xfail(strict=True, reason=f"test split: P {BELOW_BAR[d][0]:.3f} R {BELOW_BAR[d][1]:.3f}"))
        if d in BELOW_BAR else d
        for d in DETECTORS
    ],
)
def test_precision_and_recall_on_the_frozen_test_split(results, detector):
    # Only the bar here: a strict xfail must not swallow any other assertion (those are below).
    counts, mistakes = results
    precision, recall = _pr(counts[detector])
    report = table(counts) + "\n" + "\n".join(m for m in mistakes if f" {detector}:" in m)
    assert precision >= MIN_PRECISION and recall >= MIN_RECALL, f"{detector}: P {precision:.2f} R {recall:.2f}\n{report}"


@pytest.mark.parametrize("detector", DETECTORS)
def test_every_detector_finds_its_intent_on_the_frozen_test_split(results, detector):
    """Outside the xfail above: a detector below the bar must still work at all."""
    counts, _ = results
    assert counts[detector]["tp"] > 0, detector


@pytest.mark.parametrize("detector", sorted(BELOW_BAR))  # with none below the bar: no case, reported as skipped
def test_detectors_below_the_bar_do_not_fall_further(results, detector):
    """The xfail above hides how far below the bar a detector is; this pins the test split's figures
    (minus 0.05 for one utterance either way on ~20 positives) so a regression still fails."""
    precision, recall = _pr(results[0][detector])
    assert precision >= BELOW_BAR[detector][0] - 0.05 and recall >= BELOW_BAR[detector][1] - 0.05, (
        f"{detector}: P {precision:.2f} R {recall:.2f}, its one run had P {BELOW_BAR[detector][0]:.2f} R {BELOW_BAR[detector][1]:.2f}")


def lexicon_only_rules():
    """The packaged rules without their semantic examples: the lexicon baseline."""
    rules = load_rules()
    detection = rules.detection
    return rules.model_copy(update={"detection": detection.model_copy(update={
        "phrases": tuple(p.model_copy(update={"like": (), "not_like": ()}) for p in detection.phrases)})})


def test_semantic_raises_recall_over_the_lexicon_alone(results):
    """Recall gain of the heads over the lexicon on the test split, and precision no worse than
    0.85, or a below-bar detector's own test-split figure where that was lower."""
    lexicon, _ = evaluate(rules=lexicon_only_rules())
    both, _ = results
    for detector in ("agent-rudeness", "customer-abuse", "manager-request", "churn-intent", "legal-threat", "repeat-contact"):
        assert _pr(both[detector])[1] > _pr(lexicon[detector])[1] + 0.2, detector
        assert _pr(both[detector])[0] >= min(0.85, BELOW_BAR.get(detector, (1.0, 1.0))[0]), detector


if __name__ == "__main__":
    import sys

    lexicon = "--lexicon-only" in sys.argv  # the baseline: packaged rules without semantic examples
    for path in [Path(p).resolve() for p in sys.argv[1:] if p != "--lexicon-only"] or [TEST_SPLIT, *(r.path for r in reversed(DEV_ROUNDS))]:
        counts, mistakes = evaluate(path, lexicon_only_rules() if lexicon else None)
        print(f"\n{path.name}: {sum(counts[next(iter(counts))].values())} utterances\n" + table(counts) + "\n" + "\n".join(mistakes))
