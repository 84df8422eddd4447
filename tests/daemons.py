"""A local server binary run for a test: started on enter, ready when its HTTP check says so, stopped on exit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import http_get


class Daemon:
    """Subclasses set ``name``, ``workdir``, ``log_path`` and give ``command()`` and ``ready_url``."""

    name = "daemon"
    workdir: Path
    log_path: Path
    process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def ready_url(self) -> str:
        raise NotImplementedError

    def __enter__(self):
        self.process = subprocess.Popen(self.command(), stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.name} exited:\n{self.log_path.read_text()}"
            try:
                if http_get(self.ready_url, timeout=1)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready:\n{self.log_path.read_text()}")

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
