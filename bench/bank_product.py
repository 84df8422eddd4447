"""Where a slow segment's semantic time goes, and whether an 8-bit bank product would shorten it.

    .venv/bin/pip install onnx==1.23.2          # the `train` extra's pin, for the MatMulInteger graph only
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bank_product [--utterances N] [--products N]

Two measurements in one run, thread CPU time, one thread:

1. **Breakdown of the slowest 1 % of segments** (the stream of bench.semantic: every labelled utterance as
   partials growing word by word, then the final, through the packaged rules): per segment, the time in the
   encoder, in the sparse heads, in the dense heads (``_score_one``) and in the window pre-screen, and the rest of
   ``SemanticModel.score`` — the bank products (one float32 matrix-vector product of the whole example bank per
   vector kept) and their bookkeeping. Those segments set the p99 of docs/performance.md.
2. **One bank product, three ways**, on the packaged example vectors (the bank as shipped), with the last-level
   cache flushed before each product as a segment's encoder pass flushes it in the worker: numpy float32
   (OpenBLAS sgemv, shipped); onnxruntime ``MatMulInteger`` on a uint8 copy of the bank passed as an input (the
   bank changes with the rules, so it cannot be a constant of a pre-built graph, and onnxruntime then packs it on
   every call); numpy's own int8 product. Each as p50/p99 and as a ratio to float32 measured in the same run;
   also the largest error of the 8-bit cosine (per-row scale, zero point 128).
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.semantic import percentile, segments
from streamproc.detect.engine import CallInfo, DetectionEngine
from streamproc.rules import load_rules

#: larger than any last-level cache here (32 MB on the AMD EPYC hosts): summing it evicts the bank
_FLUSH = np.ones(64 * 1024 * 1024 // 8)


def breakdown(utterances: int) -> dict:
    import streamproc.detect.semantic as semantic

    rules = load_rules()
    engine = DetectionEngine(lambda: rules)
    model = engine.semantic_model()
    spent: collections.Counter = collections.Counter()

    def timed(owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args, **kwargs):
            started = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] += time.thread_time() - started
        setattr(owner, name, wrapper)

    timed(model.encoder, "encode", "encoder")
    timed(model.encoder, "encode_with_spans", "encoder")
    timed(semantic.SparseHeads, "probabilities", "sparse heads")
    timed(semantic.SemanticModel, "_score_one", "dense heads")
    timed(semantic.SemanticModel, "_may_count", "window pre-screen")
    timed(semantic.SemanticModel, "score", "semantic")
    for segment in segments(20):  # warm-up, as bench.semantic
        engine.on_transcript(segment, CallInfo(), now=0.0)
    model.encoder.clear_cache()
    rows = []
    for segment in segments(utterances):
        spent.clear()
        started = time.thread_time()
        engine.on_transcript(segment, CallInfo(), now=0.0)
        total = time.thread_time() - started
        row: dict[str, float] = {k: v * 1000 for k, v in spent.items()}
        parts = sum(v for k, v in row.items() if k != "semantic")
        row["bank products and bookkeeping"] = row.get("semantic", 0.0) - parts
        row["outside semantic"] = total * 1000 - row.get("semantic", 0.0)
        rows.append((total * 1000, row, segment.is_final))
    rows.sort(key=lambda r: -r[0])
    slowest = rows[: max(1, len(rows) // 100)]
    labels = ["encoder", "bank products and bookkeeping", "dense heads", "sparse heads", "window pre-screen", "outside semantic"]
    return {
        "segments": len(rows),
        "slowest_1pct": len(slowest),
        "of_which_finals": sum(1 for r in slowest if r[2]),
        "total_ms_median": round(float(np.median([r[0] for r in slowest])), 2),
        "median_ms_per_part": {k: round(float(np.median([r[1].get(k, 0.0) for r in slowest])), 2) for k in labels},
    }


def _bank_graph(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("MatMulInteger", ["queries", "bank", "queries_zero_point", "bank_zero_point"], ["dots"])
    graph = helper.make_graph(
        [node], "bank_product",
        [helper.make_tensor_value_info("queries", TensorProto.UINT8, ["m", 384]),
         helper.make_tensor_value_info("bank", TensorProto.UINT8, [384, "n"])],
        [helper.make_tensor_value_info("dots", TensorProto.INT32, ["m", "n"])],
        initializer=[helper.make_tensor("queries_zero_point", TensorProto.UINT8, [], [128]),
                     helper.make_tensor("bank_zero_point", TensorProto.UINT8, [], [128])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _quantize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 8-bit codes per row (stored with zero point 128) and each row's scale."""
    scale = np.abs(rows).max(axis=-1) / 127
    codes = np.clip(np.rint(rows / scale[..., None]), -127, 127)
    return (codes + 128).astype(np.uint8), scale.astype(np.float32)


def products(count: int) -> dict:
    import onnxruntime as ort

    from streamproc.embeddings import default_example_vectors_path

    with np.load(default_example_vectors_path()) as packaged:
        bank = np.ascontiguousarray(packaged["vectors"], dtype=np.float32)
    rng = np.random.default_rng(0)
    queries = bank[rng.choice(len(bank), count)] + rng.normal(0, 0.05, (count, bank.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    bank_codes, bank_scale = _quantize(bank)
    bank_codes_t = np.ascontiguousarray(bank_codes.T)
    signed_bank = (bank_codes.astype(np.int16) - 128).astype(np.int8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "bank_product.onnx"
        _bank_graph(graph)
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def int8_ort(query: np.ndarray) -> np.ndarray:
        codes, scale = _quantize(query[None])
        (dots,) = session.run(None, {"queries": codes, "bank": bank_codes_t})
        return dots[0] * (bank_scale * scale[0])

    def int8_numpy(query: np.ndarray) -> np.ndarray:
        codes, scale = _quantize(query)
        return (signed_bank @ (codes.astype(np.int16) - 128).astype(np.int8)) * (bank_scale * scale)

    ways = {"float32 (shipped)": lambda q: bank @ q, "int8 onnxruntime MatMulInteger": int8_ort, "int8 numpy": int8_numpy}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for query in queries:  # interleaved, so that the host's drift hits every way alike
        for name, way in ways.items():
            _FLUSH.sum()
            started = time.thread_time()
            way(query)
            times[name].append((time.thread_time() - started) * 1000)
    error = max(float(np.abs(int8_ort(q) - bank @ q).max()) for q in queries[:50])
    baseline = float(np.median(times["float32 (shipped)"]))
    return {
        "bank_rows": len(bank),
        "ms": {name: {"p50": round(float(np.median(t)), 3), "p99": round(percentile(t, 99), 3)} for name, t in times.items()},
        "p50_ratio_to_float32": {name: round(float(np.median(t)) / baseline, 2) for name, t in times.items()},
        "int8_max_abs_cosine_error": round(error, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=300)
    parser.add_argument("--products", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps({"breakdown": breakdown(args.utterances), "bank_product": products(args.products)}, indent=2))


if __name__ == "__main__":
    main()
