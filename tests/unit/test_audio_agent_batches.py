"""The audio agent's batch path (agents/audio.py) without a broker: one executor call for a run of one call's
frames, each frame's outputs in order, a bad frame dead-lettered alone, acks only for final audio."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest

from streamproc.asr import DecodeStats
from streamproc.asr.base import make_segment
from streamproc.schemas import AudioFrameMeta, Speaker
from streamproc.transcribe import Transcriber, TranscriberConfig


@dataclass
class CountingSession:
    """A session whose utterance is final at every second frame: the first frame of each pair is held."""

    call_id: str
    speaker: Speaker
    start_s: float
    utterance: int = 0
    last_activity: float = 0.0
    fed_s: float = 0.0
    open_since: float | None = None
    partials_wanted: list[bool] = field(default_factory=list)

    def feed(self, samples16k: np.ndarray, received_at: float, now: float, speech: bool = False, partial: bool = True):
        self.partials_wanted.append(partial)
        begin = self.start_s + self.fed_s
        self.fed_s += len(samples16k) / 16000
        if self.open_since is None:
            self.open_since = begin
            return []
        segment = make_segment(call_id=self.call_id, speaker=self.speaker, utterance=self.utterance, revision=0,
                               is_final=True, text=f"u{self.utterance}", words=[], received_at=received_at, now=now,
                               span=(self.open_since, self.start_s + self.fed_s))
        self.utterance += 1
        self.open_since = None
        return [segment]

    def skip(self, seconds: float) -> None:
        self.fed_s += seconds

    def finish(self, now: float):
        return []

    def pending_since_s(self):
        return self.open_since

    def take_stats(self):
        return DecodeStats()


class CountingEngine:
    kind = "test"
    language = None
    description = "counting"

    def new_session(self, call_id, speaker, start_s, config, now):
        return CountingSession(call_id, speaker, start_s)

    def warm_up(self, recognizers: int = 1) -> None:
        pass


def frame_event(call_id: str, seq: int, offset: int, payload: bytes | None = None):
    meta = AudioFrameMeta(encoding="pcm16", rate=16000, channels=1, speaker="agent", seq=seq, offset_ms=seq * 250)
    message = SimpleNamespace(topic="calls.audio", key=call_id.encode(), value=payload if payload is not None else b"\0" * 8000,
                              partition=0, offset=offset, headers=meta.to_headers(), timestamp=0.0)
    return SimpleNamespace(message=message)


@pytest.mark.asyncio
async def test_a_bad_frame_in_a_batch_is_dead_lettered_alone_and_its_neighbours_keep_their_order_and_acks(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMPROC_DATA_DIR", str(tmp_path))
    from agents import audio, outputs

    acked: list[int] = []

    async def ack(event):
        acked.append(event.message.offset)

    transcriber = Transcriber(CountingEngine(), TranscriberConfig(speech_gate=False))
    monkeypatch.setattr(audio.state, "transcriber", transcriber)
    monkeypatch.setattr(audio.state, "stream", SimpleNamespace(ack=ack))
    monkeypatch.setattr(audio.state, "unacked", {})
    events = [
        frame_event("b1", 0, 10), frame_event("b1", 1, 11),
        frame_event("b1", 2, 12, payload=b"\0" * 3),  # odd byte count: rejected; the stream's sequence does not move
        frame_event("b1", 2, 13), frame_event("b1", 3, 14), frame_event("b1", 4, 15),
    ]
    jobs = [audio._Job("frame", "b1", event=e, received_at=1.0) for e in events]
    executor = ThreadPoolExecutor(1)
    calls_to_executor = 0
    real_run = asyncio.get_running_loop().run_in_executor

    def counting_run(pool, fn, *args):
        nonlocal calls_to_executor
        calls_to_executor += pool is executor
        return real_run(pool, fn, *args)

    with mock.patch.object(audio.transcripts_topic, "send", new=mock.AsyncMock()) as transcripts_send, \
            mock.patch.object(outputs.deadletter_topic, "send", new=mock.AsyncMock()) as dead_send, \
            mock.patch.object(asyncio.get_running_loop(), "run_in_executor", side_effect=counting_run):
        await audio._run_frames(jobs, asyncio.get_running_loop(), executor)
    executor.shutdown()

    assert calls_to_executor == 1  # the whole batch in one hop to the lane's thread
    segments = [json.loads(c.kwargs["value"]) for c in transcripts_send.await_args_list]
    assert [s["text"] for s in segments] == ["u0", "u1"]  # frames 0+1 and 2+3 closed an utterance each
    assert [(s["start_s"], s["end_s"]) for s in segments] == [(0.0, 0.5), (0.5, 1.0)]  # the timeline is exact
    letters = [json.loads(c.kwargs["value"]) for c in dead_send.await_args_list]
    assert [(letter["reason"], letter["offset"]) for letter in letters] == [("odd_byte_count", 12)]
    # Acked: the rejected frame at once, the others once their audio is final; the last frame's utterance is open.
    assert sorted(acked) == [10, 11, 12, 13, 14]
    assert [event.message.offset for _, event in audio.state.unacked["b1"]] == [15]
    # The batch's segments are published together: only its newest frame may make a partial.
    session = transcriber._sessions[("b1", Speaker.agent)]
    assert session.partials_wanted == [False, False, False, False, True]
