"""Decoder scheduling on a real worker and broker: one call's backlog dumped at once does not hold back a live
call's transcripts on the same decoder lane (streamproc/scheduling.py, docs/audio.md#decoder-scheduling)."""

from __future__ import annotations

import re
import threading
import time

import pytest

from streamproc.schemas import AudioFrameMeta
from tests.conftest import http_get
from tests.speech import frames, speech_corpus, tools_available

pytestmark = [pytest.mark.broker, pytest.mark.skipif(not tools_available(), reason="needs espeak-ng and sox")]

FRAME_MS = 250
BACKLOG_REPEATS = 8  # ~55 s of a stereo call: ~110 speaker-channel seconds, within the default queue bound (120)


def metric(worker, name: str, labels: str = "") -> float:
    status, body = http_get(f"{worker.base_url}/metrics")
    assert status == 200
    found = re.findall(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", body.decode(), re.M)
    return sum(float(v) for found_labels, v in found if labels in found_labels)


@pytest.mark.parametrize("scheduling", ["fair", pytest.param("fifo", marks=pytest.mark.slow)])
def test_a_backlog_dumped_at_once_does_not_hold_back_a_live_calls_transcripts(worker_factory, reader, producer, scheduling):
    """Both calls on partition 0 and on the single decoder lane: the backlog's frames are all read before any of
    the live call's. With ``fair`` the live call's transcripts come out while the backlog is still in its first
    half; with ``fifo`` (the lane before, the control that shows the observation can fail) they queue behind it."""
    corpus = speech_corpus()
    variant = corpus.get("mulaw", 8000, 2)
    worker = worker_factory(asr_model="lang:ko", transcription_threads=1, transcription_scheduling=scheduling,
                            dashboard_enabled="false")
    worker.wait_transcription_ready()
    audio_topic = worker.topic("audio")
    transcripts = reader(worker.topic("transcripts"))
    layout = dict(encoding=variant.encoding, rate=variant.rate, channels=2, layout="agent_customer")
    clip = list(frames(variant, FRAME_MS))
    clip_s = len(clip) * FRAME_MS / 1000

    # The backlog: a call whose audio was captured two minutes ago (a producer that buffered it, or a partition
    # whose previous owner died) arrives all at once.
    captured = time.time() - 120 - BACKLOG_REPEATS * clip_s
    for repeat in range(BACKLOG_REPEATS):
        for seq, offset_ms, payload in clip:
            seq, offset_ms = repeat * len(clip) + seq, repeat * len(clip) * FRAME_MS + offset_ms
            meta = AudioFrameMeta(**layout, seq=seq, offset_ms=offset_ms, sent_at_ms=int((captured + offset_ms / 1000) * 1000))
            producer.send(audio_topic, key=b"backlog", value=payload, headers=meta.to_headers(), partition=0)
    producer.flush()
    backlog_s = BACKLOG_REPEATS * clip_s

    # The live call, at real-time pace, behind the backlog on the same partition.
    failures: list[Exception] = []

    def live() -> None:
        try:
            started = time.monotonic()
            for seq, offset_ms, payload in clip:
                meta = AudioFrameMeta(**layout, seq=seq, offset_ms=offset_ms, sent_at_ms=int(time.time() * 1000))
                producer.send(audio_topic, key=b"live", value=payload, headers=meta.to_headers(), partition=0)
                time.sleep(max(0.0, started + (seq + 1) * FRAME_MS / 1000 - time.monotonic()))
            producer.flush()
        except Exception as exc:  # surfaced below
            failures.append(exc)

    player = threading.Thread(target=live)
    player.start()

    def finals(values, call_id):
        return [v for v in values if v["call_id"] == call_id and v["is_final"] and v["text"]]

    # Done when the live call has finals for both speakers and the backlog reached its last repeat.
    transcripts.wait_for(
        lambda v: {s["speaker"] for s in finals(v, "live")} == {"agent", "customer"}
        and any(s["end_s"] > backlog_s - clip_s for s in finals(v, "backlog")),
        timeout_s=300,
    )
    player.join(30)
    assert not failures
    # Transcripts go to the audio's partition: partition 0's offsets are the order the worker sent them in.
    pairs = sorted(((r.offset, v) for r, v in zip(transcripts.records, transcripts.values()) if r.partition == 0),
                   key=lambda pair: pair[0])
    values = [v for _, v in pairs]
    first_live = next(i for i, v in enumerate(values) if v["call_id"] == "live" and v["text"])
    backlog_second_half = next(i for i, v in enumerate(values) if v["call_id"] == "backlog" and v["end_s"] > backlog_s / 2)
    positions = {"first live segment": first_live, "first backlog segment past half its audio": backlog_second_half,
                 "segments": len(values)}
    print(f"{scheduling}: {positions}")
    if scheduling == "fair":
        assert first_live < backlog_second_half, positions
    else:
        assert first_live > backlog_second_half, positions

    # Nothing lost, nothing out of order: every repeat of the backlog has its finals, per speaker in order.
    for call_id, repeats in (("backlog", BACKLOG_REPEATS), ("live", 1)):
        for speaker in ("agent", "customer"):
            segments = [v for v in values if v["call_id"] == call_id and v["speaker"] == speaker]
            keys = [(s["utterance"], 1 if s["is_final"] else 0, s["revision"]) for s in segments]
            assert keys == sorted(keys), (call_id, speaker, keys)
            ends = [s["end_s"] for s in finals(segments, call_id)]
            assert ends == sorted(ends)
            heard = {int(end // clip_s) for end in ends}
            assert heard >= set(range(repeats - 1)), (call_id, speaker, ends)  # the last repeat may still be open
    if scheduling == "fair":
        # The backlog was decoded in batches (one executor call for several of its frames).
        assert metric(worker, "streamproc_decode_batch_frames_count") > metric(worker, "streamproc_decode_batch_frames_bucket", 'le="1.0"')
