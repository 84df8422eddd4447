"""Cross-session batching of decoder calls: many decoder threads, one batched model call.

A GPU runs one Whisper decode of 8 or 16 utterances in about the time of one, but the worker's
sessions decode one utterance at a time, each on its decoder thread. :class:`DecodeBatcher`
puts them together without changing the sessions: a thread calls :meth:`DecodeBatcher.submit`
and blocks; the first thread to arrive while no batch is running becomes the *leader*, waits
up to ``max_wait_s`` for others (or until ``max_batch`` requests queue), runs the batch, hands
every caller its own result, and steps down. Requests that arrived during the batch are taken
by the next leader. No extra thread, no event loop involvement; with ``max_batch`` 1 it is a
plain call.

On a CPU the batch buys little (CTranslate2 already runs one decode per core); the worker
enables it with ``STREAMPROC_WHISPER_BATCH_SIZE`` > 1, meant for ``STREAMPROC_ASR_DEVICE=cuda``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


@dataclass(eq=False)  # identity: requests hold numpy arrays, and each caller waits for its own
class _Pending(Generic[Request, Result]):
    request: Request
    done: threading.Event = field(default_factory=threading.Event)
    result: Result | None = None
    error: BaseException | None = None
    batch_size: int = 0


class DecodeBatcher(Generic[Request, Result]):
    """Coalesces concurrent ``submit`` calls into calls of ``run_batch`` (one result per request, in order)."""

    def __init__(self, run_batch: Callable[[Sequence[Request]], Sequence[Result]], *, max_batch: int, max_wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._cv = threading.Condition()
        self._queue: list[_Pending[Request, Result]] = []
        self._leading = False

    def submit(self, request: Request) -> tuple[Result, int]:
        """The request's result and the size of the batch it ran in. Blocks until it has run."""
        pending: _Pending[Request, Result] = _Pending(request)
        with self._cv:
            self._queue.append(pending)
            self._cv.notify_all()
            while not pending.done.is_set() and self._leading:
                self._cv.wait()
            if pending.done.is_set():
                return self._outcome(pending)
            self._leading = True  # nobody is running a batch and ours has not run: lead one
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._cv.wait(left)
            # The leader's own request always runs: one that waited longest cannot be left over.
            batch = [pending, *[p for p in self._queue if p is not pending][: self.max_batch - 1]]
            self._queue = [p for p in self._queue if p not in batch]
        try:
            self._run(batch)
        finally:
            with self._cv:
                self._leading = False
                self._cv.notify_all()  # the followers' results are in; a queued request may lead next
        return self._outcome(pending)

    def _run(self, batch: list[_Pending[Request, Result]]) -> None:
        try:
            results = self.run_batch([p.request for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} requests returned {len(results)} results")
            for p, r in zip(batch, results):
                p.result, p.batch_size = r, len(batch)
        except BaseException as exc:  # every caller of the batch gets the error, not only the leader
            for p in batch:
                p.error = exc
        finally:
            for p in batch:
                p.done.set()

    @staticmethod
    def _outcome(pending: _Pending[Request, Result]) -> tuple[Result, int]:
        if pending.error is not None:
            raise pending.error
        return pending.result, pending.batch_size  # type: ignore[return-value]
