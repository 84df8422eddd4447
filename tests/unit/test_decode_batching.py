"""Batched decoding: DecodeBatcher coalesces concurrent calls; Whisper's batched call hears what single calls hear."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc import audio
from streamproc.asr.batching import DecodeBatcher
from tests import flite


def run_concurrently(batcher: DecodeBatcher, requests: list[int]) -> list[tuple[int, int]]:
    """Every request submitted from its own thread, all released at once; (result, batch size) per request."""
    start = threading.Barrier(len(requests))
    out: list[tuple[int, int] | None] = [None] * len(requests)
    errors: list[BaseException] = []

    def call(i: int) -> None:
        start.wait()
        try:
            out[i] = batcher.submit(requests[i])
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a caller never got its result"
    if errors:
        raise errors[0]
    return [o for o in out if o is not None]


def test_concurrent_calls_share_batches_and_each_caller_gets_its_own_result():
    batches: list[list[int]] = []

    def square_all(requests):
        batches.append(list(requests))
        return [r * r for r in requests]

    batcher = DecodeBatcher(square_all, max_batch=4, max_wait_s=0.2)
    results = run_concurrently(batcher, list(range(8)))
    assert [r for r, _ in results] == [i * i for i in range(8)]
    assert sorted(x for b in batches for x in b) == list(range(8)), "every request ran exactly once"
    assert max(len(b) for b in batches) <= 4
    assert len(batches) < 8, "concurrent calls were not batched"
    assert all(size == len(next(b for b in batches if i in b)) for i, (_, size) in enumerate(results))


def test_an_error_in_a_batch_reaches_every_caller_of_that_batch_and_the_batcher_goes_on():
    def fail_on_seven(requests):
        if 7 in requests:
            raise ValueError("bad audio")
        return list(requests)

    batcher = DecodeBatcher(fail_on_seven, max_batch=8, max_wait_s=0.2)
    with pytest.raises(ValueError, match="bad audio"):
        run_concurrently(batcher, [1, 2, 7])
    assert [r for r, _ in run_concurrently(batcher, [1, 2, 3])] == [1, 2, 3]


@settings(max_examples=25, deadline=None)
@given(callers=st.integers(1, 12), max_batch=st.integers(1, 5))
def test_nothing_lost_or_run_twice_whatever_the_batch_limit(callers, max_batch):
    ran: list[int] = []
    lock = threading.Lock()

    def echo(requests):
        with lock:
            ran.extend(requests)
        return [r + 1000 for r in requests]

    batcher = DecodeBatcher(echo, max_batch=max_batch, max_wait_s=0.01)
    results = run_concurrently(batcher, list(range(callers)))
    assert [r for r, _ in results] == [i + 1000 for i in range(callers)]
    assert sorted(ran) == list(range(callers))
    assert all(1 <= size <= max_batch for _, size in results)


# --------------------------------------------------------------------------- Whisper, real speech

LINES = (
    ("I want to speak to your supervisor right now.", "slt"),
    ("Please cancel my account today.", "awb"),
    ("Thank you for calling, how can I help you?", "rms"),
)


@pytest.fixture(scope="module")
def speech16k() -> list[np.ndarray]:
    return [audio.resample(flite.phone_line(text, voice), 8000, 16000).astype(np.float32) / 32768.0 for text, voice in LINES]


@pytest.fixture(scope="module")
def engine():
    from streamproc.asr import load_engine

    return load_engine("lang:en", workers=2)


def test_one_batched_whisper_call_hears_what_separate_calls_hear_with_the_same_word_times(engine, speech16k):
    singles = [engine.decode(samples, words=True) for samples in speech16k]
    batched = engine.decode_batch([(samples, True) for samples in speech16k])
    for (said, _), single, together in zip(LINES, singles, batched):
        assert flite.wer(said, together.text) <= 0.15, together.text
        assert together.text == single.text
        assert [w["word"] for w in together.words] == [w["word"] for w in single.words]
        assert np.allclose([w["start"] for w in together.words], [w["start"] for w in single.words], atol=0.06)


def test_a_batch_mixing_partials_finals_and_silence_gives_words_only_where_asked(engine, speech16k):
    partial, silence, final = engine.decode_batch([(speech16k[0], False), (np.zeros(16000, np.float32), True), (speech16k[2], True)])
    assert flite.wer(LINES[0][0], partial.text) <= 0.15 and partial.words == []
    assert not silence.text.strip(" .")
    assert flite.wer(LINES[2][0], final.text) <= 0.15 and final.words


def test_decoder_threads_share_one_model_call_when_batching_is_on(speech16k):
    from streamproc.asr.models import resolve_model
    from streamproc.asr.whisper import WhisperEngine

    batched_engine = WhisperEngine(resolve_model("lang:en"), workers=3, batch_size=4)
    batched_engine._batcher.max_wait_s = 0.5  # type: ignore[union-attr]  # the three threads meet on a loaded machine too
    out: list = [None] * 3
    start = threading.Barrier(3)

    def decode(i: int) -> None:
        start.wait()
        out[i] = batched_engine.decode(speech16k[i], words=True)

    threads = [threading.Thread(target=decode, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [o.batch_size for o in out] == [3, 3, 3]
    for (said, _), decoded in zip(LINES, out):
        assert flite.wer(said, decoded.text) <= 0.15 and decoded.words
