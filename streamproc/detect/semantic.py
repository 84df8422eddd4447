"""Semantic intents: a logistic-regression head per intent on sentence embeddings.

A rule's ``like`` examples are the positives of its head; its ``not_like`` counter-examples,
the shared ``detection.semantic.neutral`` lines and the ``like`` examples of every *other*
intent are the negatives (so "get me your supervisor" teaches churn what it is not). Each
head is scikit-learn ``LogisticRegression`` (balanced class weights), trained when the rules
are loaded — at worker start and on every hot reload, in an executor, never on the event
loop — and kept as plain numpy coefficients: scoring a segment is one embedding (≈5–8 ms)
plus one dot product per head. Heads are cached by the hash of their training data, so a
reload that leaves an intent's examples alone does not retrain it, and the encoder caches
example embeddings, so a reload re-embeds only new examples.

Since the seventh tuning each intent also has a sparse head (SparseHeads: logistic regression on
TF-IDF word and character n-grams of the text, trained with the dense heads and cached the same
way), averaged with the dense score by ``detection.semantic.sparse_weight``; the per-segment cost
is ≈0.1 ms.

Why a trained head rather than cosine similarity to the nearest example: see
docs/detection.md#semantic-intents (raw cosine put a hard negative above a paraphrase).
The evidence of an alert names the nearest ``like`` example (cosine) and the head's
probability.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..embeddings import Encoder
    from ..rules import DetectionRules


@dataclass(frozen=True)
class IntentSpec:
    key: str  # rule id, or "<window rule id>/cue" / "/trigger"
    like: tuple[str, ...]
    not_like: tuple[str, ...]
    threshold: float


@dataclass(frozen=True)
class SemanticHit:
    probability: float
    example: str  # the nearest like example
    similarity: float  # its cosine similarity
    threshold: float
    counter_example: str | None = None  # the nearest not_like example, when it is nearer than any like one

    @property
    def fired(self) -> bool:
        return self.probability >= self.threshold and self.counter_example is None


#: words that flip an utterance's polarity. Sentence embeddings barely see them ("i'm asking for a
#: manager" and "i'm not asking for your manager" are near neighbours), so a counter-example of the
#: other polarity must not veto: see Head.score.
_NEGATION = re.compile(r"\b(?:not|no|never|nothing|nobody|cannot)\b|n't\b|\b(?:dont|doesnt|didnt|isnt|wont|cant|havent|aint)\b")


def negated(text: str) -> bool:
    return bool(_NEGATION.search(text.lower().replace("’", "'")))


@dataclass(frozen=True)
class NeighbourVote:
    """The k nearest examples' vote: mean cosine of the k nearest positives minus that of the k
    nearest negatives, through a logistic of slope ``scale``. Averaged with the logistic head it
    lifted recall on paraphrases that sit next to one example but off the head's hyperplane
    (round 4's held-out half, docs/detection.md#the-fifth-tuning)."""

    negatives: tuple[str, ...]
    k: int
    scale: float

    def probability(self, positive_sims: np.ndarray, bank_sims: np.ndarray, negative_rows: np.ndarray,
                    negative_mask: np.ndarray, nearest: np.ndarray | None = None) -> float:
        """``nearest``: the bank's rows most similar to the segment, most similar first (SemanticModel.NEAREST of
        them): when k of this head's negatives are among them, they are its k nearest, and the partition of all
        its negatives (most of the bank, per head and per window) is not needed."""
        k = min(self.k, len(positive_sims), len(negative_rows))
        near_positive = np.partition(positive_sims, -k)[-k:].mean()
        hits = nearest[negative_mask[nearest]][:k] if nearest is not None else ()
        if len(hits) == k:
            near_negative = bank_sims[hits].mean()
        else:
            near_negative = np.partition(bank_sims[negative_rows], -k)[-k:].mean()
        return float(1.0 / (1.0 + np.exp(-self.scale * (near_positive - near_negative))))


class ExampleBank:
    """Every example vector of every head, once: a segment is compared with all of them in one
    matrix-vector product, and each head reads its rows by index (the heads share most of their
    negatives: the neutral lines and each other's positives)."""

    def __init__(self, heads: Iterable["Head"], encoder: "Encoder"):
        texts = list(dict.fromkeys(t for h in heads for t in (*h.like, *h.not_like, *(h.vote.negatives if h.vote else ()))))
        self.row = {t: i for i, t in enumerate(texts)}
        self.vectors = np.ascontiguousarray(encoder.encode(texts), dtype=np.float32) if texts else np.zeros((0, 384), np.float32)

    def rows(self, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.row[t] for t in texts), dtype=np.int64, count=len(texts))


class Head:
    """A trained intent: its logistic weights and the example texts it compares a segment with
    (their vectors live in the SemanticModel's ExampleBank)."""

    def __init__(self, spec: IntentSpec, weights: np.ndarray, bias: float, like: Sequence[str], not_like: Sequence[str] = (),
                 vote: NeighbourVote | None = None):
        self.spec = spec
        self.vote = vote
        self.like = tuple(like)  # deduplicated
        self.not_like = tuple(not_like)
        self.weights = weights.astype(np.float32)
        self.bias = float(bias)

    def bank_rows(self, bank: ExampleBank) -> tuple:
        """Where this head's like, not_like and vote examples sit in ``bank`` (the vote's also as a mask)."""
        negative_rows = bank.rows(self.vote.negatives) if self.vote else None
        negative_mask = None
        if negative_rows is not None:
            negative_mask = np.zeros(len(bank.vectors), dtype=bool)
            negative_mask[negative_rows] = True
        return bank.rows(self.like), bank.rows(self.not_like), negative_rows, negative_mask

    def score(self, vector: np.ndarray, text: str | None, bank_sims: np.ndarray, rows: tuple,
              sparse: float | None = None, sparse_weight: float = 0.0, nearest: np.ndarray | None = None) -> SemanticHit:
        """The head's probability; with ``text``, a counter-example vetoes only when it has the
        same polarity (negated or not) as the utterance. ``bank_sims`` and ``rows``: the segment's
        similarity to every row of an ExampleBank, and this head's rows in it (bank_rows).
        ``sparse``: the intent's SparseHeads probability, weighted ``sparse_weight`` against the
        dense score (the logistic head, averaged with the neighbour vote)."""
        like_rows, not_like_rows, negative_rows, negative_mask = rows
        sims = bank_sims[like_rows]
        vote = self.vote.probability(sims, bank_sims, negative_rows, negative_mask, nearest) if self.vote is not None else None
        probability = self._probability(vector, vote, sparse, sparse_weight)
        best = int(np.argmax(sims))
        counter = None
        if len(not_like_rows):  # counter-example veto: nearer to a not_like than to any like
            against = bank_sims[not_like_rows]
            worst = int(np.argmax(against))
            if against[worst] > sims[best] and (text is None or negated(text) == negated(self.not_like[worst])):
                counter = self.not_like[worst]
        return SemanticHit(round(probability, 4), self.like[best], round(float(sims[best]), 4), self.spec.threshold, counter)


    def probability_bound(self, vector: np.ndarray, sparse: float | None = None, sparse_weight: float = 0.0) -> float:
        """score()'s probability with the neighbour vote at its maximum, 1: an upper bound that needs no bank."""
        return self._probability(vector, 1.0 if self.vote is not None else None, sparse, sparse_weight)

    def _probability(self, vector: np.ndarray, vote: float | None, sparse: float | None, sparse_weight: float) -> float:
        """The logistic head, averaged with the neighbour vote, then mixed with the sparse head."""
        probability = float(1.0 / (1.0 + np.exp(-(float(vector @ self.weights) + self.bias))))
        if vote is not None:
            probability = (probability + vote) / 2
        if sparse is not None:
            probability = (1.0 - sparse_weight) * probability + sparse_weight * sparse
        return probability


def _train(spec: IntentSpec, negatives: Sequence[str], regularization: float, encoder: "Encoder",
           neighbours: int = 0, neighbour_scale: float = 30.0) -> Head:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    positives = list(dict.fromkeys(spec.like))
    own = set(positives)
    negatives = [t for t in dict.fromkeys(negatives) if t not in own]
    like_vectors = encoder.encode(positives)
    x = np.vstack([like_vectors, encoder.encode(negatives)]) if negatives else like_vectors
    y = np.array([1] * len(positives) + [0] * len(negatives))
    if len(set(y)) < 2:  # no negatives at all: a head that fires on nothing but near-copies
        return Head(spec, like_vectors.mean(axis=0) * 10.0, -8.0, positives)
    model = LogisticRegression(C=regularization, class_weight="balanced", max_iter=2000)
    # One BLAS thread: the fit is small (≈0.05 s), and OpenBLAS's default of one thread per core
    # made it 100× slower on a busy machine (12.6 s for six heads at load average 12, 0.3 s with one).
    with threadpool_limits(limits=1):
        model.fit(x, y)
    not_like = [t for t in dict.fromkeys(spec.not_like) if t not in own]
    vote = NeighbourVote(tuple(negatives), neighbours, neighbour_scale) if neighbours else None
    return Head(spec, model.coef_[0], model.intercept_[0], positives, not_like, vote)


class SparseHeads:
    """A logistic regression per intent on TF-IDF features of the text itself: word 1–2-grams and
    character 2–5-grams (across word boundaries). Sentence embeddings blur the exact words that carry some
    intents ("third time", "ombudsman", "mate", "whatever") and misspellings the recogniser makes
    ("super visor", "can sell"); sparse n-grams keep them. One vocabulary for every intent (fitted
    on all their training texts), so a segment is featurized once; each intent is one column of
    ``weights``. A segment's features are computed here from the fitted vectorizers' analyzers,
    vocabularies and idf weights — what ``TfidfVectorizer.transform`` computes (sublinear tf, idf,
    L2 per vectorizer), without its per-call validation, which cost ≈1 ms of the ≈1.2 ms."""

    def __init__(self, vectorizers: Sequence, weights: np.ndarray, bias: np.ndarray, keys: Sequence[str]):
        self.vectorizers = tuple(vectorizers)
        self.weights = weights  # features × intents, the vectorizers' features one after the other
        self.bias = bias
        self.column = {k: i for i, k in enumerate(keys)}  # intents without negatives have none: their dense score stands
        self._blocks = []
        offset = 0
        for vectorizer in self.vectorizers:
            self._blocks.append((vectorizer.build_analyzer(), vectorizer.vocabulary_, vectorizer.idf_.astype(np.float32), offset))
            offset += len(vectorizer.vocabulary_)

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and TF-IDF values of ``text``'s features."""
        text = _sparse_text(text)
        indices: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for analyze, vocabulary, idf, offset in self._blocks:
            counts: dict[int, int] = {}
            for term in analyze(text):
                column = vocabulary.get(term)
                if column is not None:
                    counts[column] = counts.get(column, 0) + 1
            if not counts:
                continue
            columns = np.fromiter(counts, dtype=np.int64, count=len(counts))
            tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float32, count=len(counts)))
            weighted = tf * idf[columns]
            indices.append(columns + offset)
            values.append(weighted / np.linalg.norm(weighted))
        if not indices:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(indices), np.concatenate(values)

    def probabilities(self, text: str) -> np.ndarray:
        indices, values = self.features(text)
        logits = values @ self.weights[indices] + self.bias
        return 1.0 / (1.0 + np.exp(-logits))


def _sparse_text(text: str) -> str:
    return text.lower().replace("’", "'")


def _train_sparse(training: Sequence[tuple[str, Sequence[str], Sequence[str]]], regularization: float) -> SparseHeads:
    """``training``: (key, positives, negatives) per intent, the same lines as its dense head."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion
    from threadpoolctl import threadpool_limits

    texts = list(dict.fromkeys(_sparse_text(t) for _, pos, neg in training for t in (*pos, *neg)))
    vectorizer = FeatureUnion([
        ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w[\w']*\b", dtype=np.float32)),
        # "char", not "char_wb": n-grams across the space see the recogniser's split words ("super visor", "can sell")
        ("chars", TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True, min_df=2, dtype=np.float32)),
    ])
    matrix = vectorizer.fit(texts).transform(texts).tocsr()
    row = {t: i for i, t in enumerate(texts)}
    columns: list[np.ndarray] = []
    biases: list[float] = []
    keys: list[str] = []
    with threadpool_limits(limits=1):
        for key, positives, negatives in training:
            pos = list(dict.fromkeys(_sparse_text(t) for t in positives))
            own = set(pos)
            neg = [t for t in dict.fromkeys(_sparse_text(t) for t in negatives) if t not in own]
            if not neg:  # no negatives, nothing to learn: the intent has no column and its dense head judges alone
                continue
            x = matrix[[row[t] for t in (*pos, *neg)]]
            y = np.array([1] * len(pos) + [0] * len(neg))
            model = LogisticRegression(C=regularization, class_weight="balanced", max_iter=2000)
            model.fit(x, y)
            columns.append(model.coef_[0].astype(np.float32))
            biases.append(float(model.intercept_[0]))
            keys.append(key)
    weights = np.stack(columns, axis=1) if columns else np.zeros((matrix.shape[1], 0), np.float32)
    return SparseHeads([v for _, v in vectorizer.transformer_list], np.ascontiguousarray(weights), np.array(biases, np.float32), keys)


_CACHE: dict[str, Head] = {}
_SPARSE_CACHE: dict[str, SparseHeads] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 256


def specs_of(detection: "DetectionRules") -> list[IntentSpec]:
    """Every semantic intent in the rules: phrase rules with ``like`` and window cues/triggers with ``like``."""
    default = detection.semantic.threshold
    own = detection.semantic.tuned_thresholds if detection.semantic.encoder == "tuned" else {}
    specs = [
        IntentSpec(r.id, tuple(r.like), tuple(r.not_like), own.get(r.id) or r.threshold or default)
        for r in detection.phrases
        if r.enabled and r.like
    ]
    for w in detection.windows:
        if not w.enabled:
            continue
        for name, cue in (("cue", w.cue), ("trigger", w.trigger)):
            if cue is not None and cue.like:
                specs.append(IntentSpec(f"{w.id}/{name}", tuple(cue.like), tuple(cue.not_like), cue.threshold or default))
    return specs


class SemanticModel:
    """The heads for one version of the rules. Build it off the event loop (it embeds and trains)."""

    #: bank rows kept per segment, most similar first, for the heads' neighbour votes (NeighbourVote.probability)
    NEAREST = 64
    #: skip the bank for windows whose cheap parts rule them out (exact: _may_count); off only to test that
    prescreen_windows = True

    def __init__(self, detection: "DetectionRules", encoder: "Encoder"):
        self.encoder = encoder
        self.min_words = detection.semantic.min_words
        self.min_words_final = detection.semantic.min_words_final
        self.window_words = detection.semantic.window_words
        self.window_margin = detection.semantic.window_margin
        self.window_encoding = detection.semantic.window_encoding
        specs = specs_of(detection)
        neutral = tuple(detection.semantic.neutral)
        self.heads: dict[str, Head] = {}
        self.sparse_weight = detection.semantic.sparse_weight
        training: list[tuple[str, Sequence[str], Sequence[str]]] = []
        for spec in specs:
            others = [t for other in specs if other.key.split("/")[0] != spec.key.split("/")[0] for t in other.like]
            negatives = (*spec.not_like, *neutral, *others)
            training.append((spec.key, spec.like, negatives))
            key = hashlib.sha256(
                json.dumps([spec.key, spec.like, spec.not_like, spec.threshold, negatives, detection.semantic.regularization,
                            detection.semantic.neighbours, detection.semantic.neighbour_scale,
                            getattr(encoder, "model_sha256", None)]).encode()  # a head is only valid for its encoder's vectors
            ).hexdigest()
            with _CACHE_LOCK:
                head = _CACHE.get(key)
            if head is None:
                head = _train(spec, negatives, detection.semantic.regularization, encoder,
                              detection.semantic.neighbours, detection.semantic.neighbour_scale)
                with _CACHE_LOCK:
                    if len(_CACHE) >= _CACHE_MAX:
                        _CACHE.pop(next(iter(_CACHE)))
                    _CACHE[key] = head
            self.heads[spec.key] = head
        self.sparse: SparseHeads | None = None
        if self.sparse_weight > 0 and any(negatives for _, _, negatives in training):
            key = hashlib.sha256(json.dumps([training, detection.semantic.sparse_regularization]).encode()).hexdigest()
            with _CACHE_LOCK:
                sparse = _SPARSE_CACHE.get(key)
            if sparse is None:
                sparse = _train_sparse(training, detection.semantic.sparse_regularization)
                with _CACHE_LOCK:
                    if len(_SPARSE_CACHE) >= 8:  # one per recent version of the rules
                        _SPARSE_CACHE.pop(next(iter(_SPARSE_CACHE)))
                    _SPARSE_CACHE[key] = sparse
            self.sparse = sparse
        self.sparse_column = self.sparse.column if self.sparse is not None else {}
        self.bank = ExampleBank(self.heads.values(), encoder)
        self.rows = {key: head.bank_rows(self.bank) for key, head in self.heads.items()}

    def __bool__(self) -> bool:
        return bool(self.heads)

    def score(self, text: str, keys: Iterable[str], *, final: bool = True) -> dict[str, SemanticHit]:
        """Probability of each intent in ``keys`` for ``text`` (one embedding, shared by all heads); with
        ``window_words``, a long final's windows too, each intent keeping its most probable one."""
        keys = [k for k in keys if k in self.heads]
        if not keys or len(text.split()) < (self.min_words_final if final else self.min_words):
            return {}
        words = text.split()
        spans = window_spans(len(words), self.window_words) if final else []
        texts = [text, *(" ".join(words[start:end]) for start, end in spans)]
        if spans and self.window_encoding == "pooled":
            vectors = self.encoder.encode_with_spans(text, spans)  # one pass for the segment and its windows
        else:
            vectors = self.encoder.encode(texts)  # one batch for the segment and its windows
        sparse = [self.sparse.probabilities(piece) for piece in texts] if self.sparse is not None else [None] * len(texts)
        # A window counts only at its threshold + window_margin: those that cannot reach it on their cheap parts
        # (the logistic head and the sparse head, with the neighbour vote taken at its maximum, 1) skip the
        # comparison with every bank row, the per-window cost (docs/detection.md#seventeenth-tuning-window-pre-screen).
        scored = [0, *(i for i in range(1, len(texts)) if not self.prescreen_windows or self._may_count(vectors[i], sparse[i], keys))]
        # one matrix-vector product per vector kept: for the 1-4 of a segment and its windows that beats one matrix
        # product, where OpenBLAS first copies (packs) the whole bank (≈18 MB): 0.9 against 2.2 ms for two vectors,
        # 1.3 against 2.5 for three (docs/detection.md#latency-of-the-semantic-layer)
        bank_sims = np.stack([self.bank.vectors @ vectors[i] for i in scored])
        best = self._score_one(text, vectors[0], bank_sims[0], keys, sparse[0])
        for row, i in enumerate(scored[1:], start=1):
            for key, hit in self._score_one(texts[i], vectors[i], bank_sims[row], keys, sparse[i]).items():
                if hit.fired and hit.probability >= hit.threshold + self.window_margin and (
                        not best[key].fired or hit.probability > best[key].probability):
                    best[key] = hit
        return best

    def _may_count(self, vector: np.ndarray, sparse: np.ndarray | None, keys: list[str]) -> bool:
        """Whether any head's probability for a window may reach its threshold + window_margin (Head.probability_bound)."""
        for key in keys:
            column = self.sparse_column.get(key)
            sparse_probability = float(sparse[column]) if sparse is not None and column is not None else None
            bound = self.heads[key].probability_bound(vector, sparse_probability, self.sparse_weight)
            if bound + 1e-4 >= self.heads[key].spec.threshold + self.window_margin:  # the hit's probability is rounded to 4 places
                return True
        return False

    def _score_one(self, text: str, vector: np.ndarray, bank_sims: np.ndarray, keys: list[str],
                   sparse: np.ndarray | None = None) -> dict[str, SemanticHit]:
        count = min(self.NEAREST, len(bank_sims))
        top = np.argpartition(bank_sims, -count)[-count:] if count else np.zeros(0, np.int64)
        nearest = top[np.argsort(-bank_sims[top])]  # shared by every head's neighbour vote
        if self.sparse is None:
            return {k: self.heads[k].score(vector, text, bank_sims, self.rows[k], nearest=nearest) for k in keys}
        if sparse is None:
            sparse = self.sparse.probabilities(text)
        column = self.sparse_column
        return {k: self.heads[k].score(vector, text, bank_sims, self.rows[k], float(sparse[column[k]]) if k in column else None,
                                       self.sparse_weight, nearest)
                for k in keys}


def window_spans(word_count: int, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the ``size``-word windows over ``word_count`` words, half overlapping, the last one
    ending on the last word; none when ``size`` is 0 or the text is no longer than that."""
    if size <= 0 or word_count <= size:
        return []
    step = max(1, size // 2)
    starts = list(range(0, word_count - size, step)) + [word_count - size]
    return [(i, i + size) for i in dict.fromkeys(starts)]


def build_model(detection: "DetectionRules", encoder: "Encoder | None" = None) -> SemanticModel | None:
    """Heads for the rules' semantic intents, or None when the rules have none (no model is loaded then)."""
    if not specs_of(detection):
        return None
    if encoder is None:
        from ..embeddings import shared_encoder

        encoder = shared_encoder(detection.semantic.encoder)
    return SemanticModel(detection, encoder)


@dataclass(frozen=True)
class SemanticMatch:
    """A semantic hit dressed as a lexicon match: the whole segment is the evidence."""

    first: int
    last: int
    semantic: SemanticHit


def semantic_match(tokens: Sequence, hit: SemanticHit) -> SemanticMatch:
    return SemanticMatch(0, len(tokens) - 1, hit)


def semantic_evidence(evidence, hit: SemanticHit, title: str, fixed_title: str | None):
    """Evidence and title of a semantic alert: the nearest example and the head's probability."""
    evidence = evidence.model_copy(
        update={
            "value": hit.probability, "threshold": hit.threshold, "unit": "semantic_probability",
            "matched_example": hit.example, "similarity": hit.similarity,
        }
    )
    if fixed_title is None:
        title = f"{title} (like “{hit.example}”, p={hit.probability:.2f})"
    return evidence, title
