"""``python -m bench`` (``make bench``): run every benchmark once with small, quick settings.

Each benchmark runs as its own process (``python -m bench.<name> ...``), one after the other,
with the arguments below; the figures in docs/performance.md come from the benchmarks' own,
bigger defaults (run a module directly for those). ``python -m bench NAME...`` runs only the
named ones. Exit status: the number of benchmarks that failed (0 when all ran).
"""

from __future__ import annotations

import subprocess
import sys
import time

#: name → arguments of a quick run (seconds to a few minutes each on a laptop).
QUICK: dict[str, list[str]] = {
    "dashboard": ["--calls", "200", "--clients", "5"],
    "events": ["--events", "2000"],
    "transcription": ["--repeat", "1", "--backlog-calls", "1", "--max-calls", "1"],
    "latency": ["--calls", "4", "--concurrent", "2"],
    "scheduling": ["--runs", "1", "--backlog-repeats", "2", "--live-repeats", "1"],
    "whisper_streaming": ["--quick"],
    "sizing": ["--quick"],
    "faults": ["fuzz", "--fuzz-examples", "200"],
}


def main(argv: list[str]) -> int:
    names = argv or list(QUICK)
    unknown = sorted(set(names) - set(QUICK))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(QUICK)}", file=sys.stderr)
        return 2
    failed: list[str] = []
    for name in names:
        command = [sys.executable, "-m", f"bench.{name}", *QUICK[name]]
        print(f"\n=== bench.{name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        status = subprocess.call(command)
        print(f"=== bench.{name}: {'ok' if status == 0 else f'FAILED (exit {status})'} in {time.monotonic() - started:.0f} s",
              flush=True)
        if status != 0:
            failed.append(name)
    print(f"\n{len(names) - len(failed)}/{len(names)} benchmarks ran" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return len(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
