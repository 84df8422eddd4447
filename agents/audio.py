"""calls.audio → speech engine (Whisper or Vosk) → calls.transcripts. Wiring only: streamproc.transcribe does the work.

Record path (the shape of streamproc/record.py): parse the key and headers
(``parse_audio_frame``), decide (the call-end check, then ``Transcriber.process_frame`` on the
call's lane), then outputs: transcript segments, audio features for acoustic detection
(agents/shared.py), dead letters (agents/outputs.py).

Ordering and concurrency: every call is pinned to one of ``transcription_threads`` lanes
(crc32 of the call id; one lane per core by default). A lane has per-call queues
(streamproc.scheduling.LaneScheduler: live calls before catch-up, round robin by audio seconds)
drained by one task that decodes a *batch* (the run of one call's queued frames the scheduler
hands out) in one call on the lane's own single-thread executor, then sends each frame's
results in order. So one call's frames are decoded and its segments sent strictly in order,
one call's backlog cannot hold the lane's other calls back for more than a batch, different calls
decode in parallel (Vosk and CTranslate2 release the GIL; so do the two channels of a stereo
frame, on a shared channel pool), and the event loop never runs a decoder: timers
(the hold timer) and Kafka heartbeats keep running under decode load.

Backpressure: at most ``transcription_max_queued_audio_s`` of audio waits for the lanes; at the
bound the agent stops reading (Kafka keeps the audio) and ``streamproc_audio_backpressure_seconds_total``
counts the wait. Nothing is dropped.

Records are acked (manual acks) only once their audio is in a *final* segment: a frame
of an utterance still open is held until the utterance ends (``Transcriber.pending_since_s``).
Faust commits contiguous acks, so the committed offset never passes audio whose final
transcript was not sent: a worker killed mid-utterance loses none of it, and the new
owner decodes the interrupted utterance again from its first frame. Before a rebalance or
a stop, ``release_held_audio`` finalises the open utterances so Faust's wait for acks ends.

Call end: the call-state table (written by agents/calls.py from calls.events; same
partition number as the audio) says ``status: ended``; once no frame of the call has been
read for END_DRAIN_S (decoding may lag behind the events), a timer finalises its sessions.
A frame *sent* more than CALL_END_GRACE_S after the call's end is dead-lettered as ``call_ended``;
a frame sent before it but read late is still transcribed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from streamproc import metrics
from streamproc.audio import CALL_END_GRACE_S, bytes_per_sample
from streamproc.errors import InputRejected, RejectReason
from streamproc.record import RecordRef, RecordResult, check_key, guarded_async, parse_audio_frame, rejected
from streamproc.redact import redact_segment
from streamproc.scheduling import Batch, LaneScheduler, lane_count
from streamproc.schemas import AudioFrameMeta, TranscriptSegment, from_epoch
from streamproc.transcribe import (
    FrameResult, ModelError, Transcriber, TranscriberConfig, load_model, resolve_model_path,
)

from .app import app, settings
from .outputs import send_dead_letters
from .shared import call_partitions, on_audio_features, speech_ready, stored_state
from .topics import audio_topic, transcripts_topic

log = logging.getLogger("streamproc.audio")

RTF_WINDOW_AUDIO_S = 30.0
# A call that ended is finalised after no frame of it was read for this long (its backlog drained).
END_DRAIN_S = 1.0

if settings.audio_enabled:
    # Cheap check at import (the worker's start): a bad setting is one clear error, not one per frame.
    resolve_model_path(settings.asr_model)


@dataclass
class _Job:
    kind: str  # "frame" | "end" | "idle" | "flush"
    call_id: str
    event: Any = None
    received_at: float = 0.0
    ended_wall: float | None = None  # wall-clock end of the call, when the call-state table says it ended
    end_s: float | None = None  # where a decoded frame ends on the call's audio timeline
    done: asyncio.Future | None = None  # set when a close or flush job has run


class _State:
    transcriber: Transcriber | None = None
    ready: asyncio.Event | None = None
    lanes: list[LaneScheduler[_Job]] = []
    wakeups: list[asyncio.Event] = []  # set when the lane has work
    room: asyncio.Event | None = None  # set while queued audio is below the bound
    executors: list[ThreadPoolExecutor] = []
    stream: Any = None
    closing: set[str] = set()
    partitions: dict[str, int] = {}  # call id → partition its audio arrives on (transcripts go there too)
    last_frame_at: dict[str, float] = {}  # call id → wall time this worker last read one of its frames
    blocked: bool = False  # the agent waits for room in a full lane: no frame of any call is being read
    unblocked_at: float = 0.0  # when it last stopped waiting
    rtf_window: collections.deque = collections.deque()
    unacked: dict[str, collections.deque] = {}  # call id → (frame end on the call timeline, event), in order


state = _State()


def lane_of(call_id: str) -> int:
    return zlib.crc32(call_id.encode()) % len(state.lanes)


def _ref(message) -> RecordRef:
    return RecordRef(message.topic, message.key, message.value, message.partition, message.offset)


async def _send_rejection(result: RecordResult, partition: int | None) -> None:
    """Dead letters of a rejected frame, counted as a rejected frame (and a refused session)."""
    if result.rejection is None:
        return
    metrics.AUDIO_FRAMES.labels("rejected").inc()
    if result.rejection is RejectReason.session_limit:
        metrics.SESSIONS_REJECTED.inc()
    await send_dead_letters(result.dead_letters, partition)


async def _send_segments(segments: list[TranscriptSegment], partition: int | None) -> None:
    for segment in segments:
        now = time.time()
        segment = segment.model_copy(update={"emitted_at": from_epoch(now)})  # the moment it leaves, not when decoded
        if settings.redact_transcripts:  # before it leaves the worker: nothing downstream sees the PII
            segment = redact_segment(segment)
        kind = "final" if segment.is_final else "partial"
        metrics.TRANSCRIPT_SEGMENTS.labels(kind).inc()
        if segment.audio_received_at is not None:
            metrics.TRANSCRIPTION_LAG.labels(kind).observe(max(0.0, now - segment.audio_received_at.timestamp()))
        await transcripts_topic.send(key=segment.call_id.encode(), value=segment.to_json_bytes(), partition=partition)


def _record_work(meta: AudioFrameMeta, result: FrameResult) -> None:
    channel_s = result.audio_s * meta.channels
    metrics.AUDIO_FRAMES.labels("duplicate" if result.duplicate else "accepted").inc()
    metrics.AUDIO_SECONDS.labels(meta.encoding.value).inc(channel_s)
    metrics.DECODE_CPU_SECONDS.inc(result.cpu_s)
    for kind, seconds in result.decode.seconds.items():
        metrics.ASR_DECODE_SECONDS.labels(kind).inc(seconds)
        metrics.ASR_DECODES.labels(kind).inc(result.decode.count.get(kind, 0))
    for size, decodes in result.decode.batches.items():
        for _ in range(decodes):
            metrics.ASR_DECODE_BATCH.observe(size)
    for gate_result, seconds in result.decode.gated.items():
        metrics.ASR_GATED_SECONDS.labels(gate_result).inc(seconds)
    if result.gap_s:
        metrics.AUDIO_GAP_SECONDS.inc(result.gap_s)
    window = state.rtf_window
    window.append((channel_s, result.cpu_s))
    while len(window) > 1 and sum(a for a, _ in window) - window[0][0] >= RTF_WINDOW_AUDIO_S:
        window.popleft()
    audio_total = sum(a for a, _ in window)
    if audio_total > 0:
        metrics.REAL_TIME_FACTOR.set(sum(c for _, c in window) / audio_total)


async def _forward_features(call_id: str, result: RecordResult) -> None:
    if not result.features:
        return
    try:
        await on_audio_features(result.features)
    except Exception:  # detection bugs must not stop transcription
        log.exception("on_audio_features failed for call %s", call_id)


@dataclass
class _Decoded:
    """What the lane's thread made of one frame of a batch."""

    result: RecordResult
    frame: FrameResult | None = None
    meta: AudioFrameMeta | None = None
    pending_since_s: float | None = None  # the call's oldest non-final audio right after this frame


def _set_session_gauges(transcriber: Transcriber) -> None:
    metrics.ACTIVE_SESSIONS.set(transcriber.active_sessions)
    recognizers = transcriber.recognizers()
    if recognizers is not None:
        metrics.VOSK_RECOGNIZERS.labels("in_use").set(recognizers["in_use"])
        metrics.VOSK_RECOGNIZERS.labels("idle").set(recognizers["idle"])


def _decide_frame(job: _Job, newest: bool = True) -> _Decoded:
    """Decide one frame, on the lane's thread (blocking). Raises for a bad frame.

    ``newest``: no later frame of the call is in this batch; only then is a partial worth making.
    """
    message = job.event.message
    transcriber = state.transcriber
    call_id, meta = parse_audio_frame(message.key, message.headers)
    sent_wall = meta.sent_at_ms / 1000.0 if meta.sent_at_ms is not None else message.timestamp
    if job.ended_wall is not None and sent_wall > job.ended_wall + CALL_END_GRACE_S:
        # Sent after the call was over (not merely read late because decoding lags): flush, reject.
        ended_segments = transcriber.end_call(call_id)
        rejection = InputRejected(
            RejectReason.call_ended,
            f"audio frame seq {meta.seq} sent {sent_wall - job.ended_wall:.1f} s after call_ended",
        )
        result = rejected(_ref(message), rejection)
        result.segments = ended_segments
        return _Decoded(result)
    frame = transcriber.process_frame(call_id, meta, message.value or b"", job.received_at, partial=newest)
    return _Decoded(
        RecordResult(call_id, segments=frame.segments, features=frame.levels, stage="accepted"),
        frame, meta, transcriber.pending_since_s(call_id),
    )


def _decode_batch(jobs: list[_Job]) -> list[_Decoded | Exception]:
    """One executor call for a batch of one call's frames; a bad frame fails alone, its neighbours go on."""
    outcomes: list[_Decoded | Exception] = []
    for index, job in enumerate(jobs):
        try:
            # The batch's outputs are published together after it: only the newest frame's partial is seen.
            outcomes.append(_decide_frame(job, newest=index == len(jobs) - 1))
        except Exception as exc:  # classified on the loop by guarded_async, like any record's error
            outcomes.append(exc)
    return outcomes


async def _run_frames(jobs: list[_Job], loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
    started = time.perf_counter()
    try:
        outcomes = await loop.run_in_executor(executor, _decode_batch, jobs)
    finally:
        metrics.DECODER_BUSY_SECONDS.inc(time.perf_counter() - started)
    metrics.DECODE_BATCH_FRAMES.observe(len(jobs))
    for job, outcome in zip(jobs, outcomes):
        try:
            await _finish_frame(job, outcome)
        except Exception:  # one frame's outputs failing must not cost its neighbours theirs
            log.exception("audio outputs failed for a frame of call %s", job.call_id)
            await _ack(job.event)  # nothing more will happen to it: do not hold the partition's commits


async def _finish_frame(job: _Job, outcome: _Decoded | Exception) -> None:
    """Outputs of one decoded frame, in the call's order: segments, dead letters, features, then acks."""
    message = job.event.message

    async def decided() -> RecordResult:
        if isinstance(outcome, Exception):
            raise outcome
        if outcome.frame is not None and outcome.meta is not None:
            _record_work(outcome.meta, outcome.frame)
            job.end_s = outcome.frame.end_s if outcome.frame.end_s is not None else float("-inf")
        return outcome.result

    result = await guarded_async(_ref(message), decided)
    if result.rejection is None:
        _set_session_gauges(state.transcriber)
    await _send_segments(result.segments, message.partition)
    await _send_rejection(result, message.partition)
    await _forward_features(job.call_id, result)
    if job.end_s is None:  # rejected: nothing of it is pending
        await _ack(job.event)
        return
    assert isinstance(outcome, _Decoded)
    state.unacked.setdefault(job.call_id, collections.deque()).append((job.end_s, job.event))
    await _ack_final(job.call_id, outcome.pending_since_s)


async def _ack(event) -> None:
    if event is not None and state.stream is not None:
        await state.stream.ack(event)


async def _ack_final(call_id: str, pending_since_s: float | None) -> None:
    """Ack the call's held frames whose audio is all in final segments (everything when nothing is pending)."""
    held = state.unacked.get(call_id)
    while held and (pending_since_s is None or held[0][0] <= pending_since_s):
        await _ack(held.popleft()[1])
    if not held:
        state.unacked.pop(call_id, None)
    metrics.AUDIO_UNACKED_FRAMES.set(sum(len(q) for q in state.unacked.values()))


async def _run_close(job: _Job, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
    transcriber = state.transcriber
    try:
        segments = await loop.run_in_executor(executor, lambda: transcriber.end_call(job.call_id, ended=job.kind == "end"))
        metrics.SESSIONS_CLOSED.labels({"end": "call_ended", "idle": "idle", "flush": "handover"}[job.kind]).inc()
        _set_session_gauges(transcriber)
        partition = state.partitions.get(job.call_id)
        if job.kind == "end":  # kept after an idle close: the call may resume
            state.partitions.pop(job.call_id, None)
            state.last_frame_at.pop(job.call_id, None)
        await _send_segments(segments, partition)
        await _ack_final(job.call_id, None)  # every utterance of the call is final now
        log.info("closed transcription of call %s (%s): %d final segment(s)", job.call_id, job.kind, len(segments))
    finally:
        state.closing.discard(job.call_id)
        if job.done is not None and not job.done.done():
            job.done.set_result(None)


#: How long a rebalance or stop waits for open utterances to be finalised before acking them anyway.
RELEASE_TIMEOUT_S = 10.0


async def release_held_audio() -> None:
    """Before a rebalance or stop: finalise every open utterance, so its frames can be acked.

    Faust waits for every started record to be acked before it gives partitions up. Frames of an
    unfinished utterance are held unacked (a crash must not lose them); on an orderly hand-over
    the utterance is flushed as a final instead, and the next owner continues at the next frame.
    """
    if state.transcriber is None or not state.unacked:
        return
    loop = asyncio.get_running_loop()
    jobs = [_Job("flush", call_id, done=loop.create_future()) for call_id in list(state.unacked)]
    for job in jobs:
        _push_control(job)
    try:
        await asyncio.wait_for(asyncio.gather(*(job.done for job in jobs)), RELEASE_TIMEOUT_S)
    except asyncio.TimeoutError:
        log.warning("open utterances not finalised within %.0f s; acking their frames", RELEASE_TIMEOUT_S)
    for call_id in list(state.unacked):
        await _ack_final(call_id, None)
    log.info("released held audio of %d call(s) before a rebalance or stop", len(jobs))


def _queued_s() -> float:
    return sum(lane.queued_s for lane in state.lanes)


def _queue_changed() -> None:
    """Keep the queued-audio gauge and the agent's room signal current."""
    queued = _queued_s()
    metrics.AUDIO_QUEUED_SECONDS.set(queued)
    if state.room is not None:
        if queued < settings.transcription_max_queued_audio_s:
            state.room.set()
        else:
            state.room.clear()


def _push_control(job: _Job) -> None:
    index = lane_of(job.call_id)
    state.lanes[index].push_control(job.call_id, job)
    state.wakeups[index].set()


def _frame_cost(message) -> tuple[float, float | None]:
    """Speaker-channel seconds of a frame and when its producer sent it, from the headers (0, None if unreadable:
    the lane rejects such a frame at once)."""
    try:
        _, meta = parse_audio_frame(message.key, message.headers)
    except Exception:
        return 0.0, None
    seconds = len(message.value or b"") / (bytes_per_sample(meta.encoding) * meta.rate)
    sent_at = meta.sent_at_ms / 1000.0 if meta.sent_at_ms is not None else message.timestamp
    return seconds, sent_at


async def _lane(index: int) -> None:
    scheduler = state.lanes[index]
    wakeup = state.wakeups[index]
    executor = state.executors[index]
    loop = asyncio.get_running_loop()
    await state.ready.wait()
    while True:
        batch: Batch[_Job] | None = scheduler.pop(time.time())
        if batch is None:
            wakeup.clear()
            await wakeup.wait()
            continue
        _queue_changed()
        try:
            if batch.frames:
                await _run_frames(batch.items, loop, executor)  # acks each frame once its audio is final
            else:
                await _run_close(batch.items[0], loop, executor)
        except Exception:  # the executor itself failed (a frame's own failure is handled in _run_frames)
            log.exception("audio lane %d failed on a batch of %d job(s) for call %s", index, len(batch.items), batch.call_id)
            for job in batch.items:  # nothing more will happen to them: do not hold the partition's commits
                await _ack(job.event)


def _ended_wall(call_id: str) -> float | None:
    """Wall-clock time the call ended (from the call-state table), or None while it goes on."""
    stored = stored_state(call_id)
    return stored.ended_wall if stored is not None else None


def _drained(call_id: str, now: float) -> bool:
    """No frame of the call read for a while: audio produced before call_ended has been consumed.

    While the agent waits for room in a full lane (decoding lags) it reads nothing, so "no frame
    read" says nothing about the backlog then: the quiet time counts from when it could read again.
    """
    if state.blocked:
        return False
    return now - max(state.last_frame_at.get(call_id, 0.0), state.unblocked_at) >= END_DRAIN_S


if settings.audio_enabled:

    app.before_wait_empty.append(release_held_audio)

    @app.task
    async def start_transcription() -> None:
        """Load the model off the event loop and start the lanes (once per worker process)."""
        state.ready = asyncio.Event()
        count = lane_count(settings.transcription_threads)
        state.executors = [ThreadPoolExecutor(1, thread_name_prefix=f"asr-{i}") for i in range(count)]
        state.lanes = [
            LaneScheduler(
                policy=settings.transcription_scheduling,
                quantum_s=settings.transcription_batch_max_s,
                max_batch_frames=settings.transcription_batch_max_frames,
                live_window_s=settings.transcription_live_window_s,
            )
            for _ in range(count)
        ]
        state.wakeups = [asyncio.Event() for _ in range(count)]
        state.room = asyncio.Event()
        state.room.set()
        metrics.DECODER_LANES.set(count)
        metrics.AUDIO_QUEUE_CAPACITY_SECONDS.set(settings.transcription_max_queued_audio_s)
        for index in range(count):
            asyncio.ensure_future(_lane(index))
        loop = asyncio.get_running_loop()
        def load_and_warm_up():
            engine = load_model(
                settings.asr_model, workers=count, whisper_min_window_s=settings.whisper_min_window_s,
                device=settings.asr_device, whisper_batch_size=settings.whisper_batch_size,
            )
            # /ready means a session can decode, not only that the file was read. Vosk: two warm
            # recognisers per lane, so calls arriving together (a rebalance) do not stall the lanes.
            engine.warm_up(recognizers=min(settings.vosk_idle_recognizers, 2 * count))
            return engine

        try:
            engine = await loop.run_in_executor(state.executors[0], load_and_warm_up)
        except ModelError as exc:
            log.error("%s", exc)
            await app.crash(exc)
            return
        state.transcriber = Transcriber(
            engine,
            TranscriberConfig.from_settings(settings),
            channel_pool=ThreadPoolExecutor(count, thread_name_prefix="asr-channel") if count > 1 else None,
        )
        state.ready.set()
        speech_ready.set()
        metrics.TRANSCRIPTION_READY.set(1)
        _set_session_gauges(state.transcriber)  # a Vosk worker shows its warm recognisers from the start
        log.info("transcription ready: %s, %d decoder thread(s), cap %d sessions",
                 engine.description, count, settings.transcription_max_sessions)

    @app.agent(audio_topic)
    async def process_audio(stream):
        state.stream = stream = stream.noack()
        async for event in stream.events():
            received_at = time.time()
            message = event.message
            try:
                call_id = check_key(message.key, None)  # the lane is picked by call id: reject an unkeyed frame here
            except InputRejected as rejection:
                await _send_rejection(rejected(_ref(message), rejection), message.partition)
                await stream.ack(event)
                continue
            state.partitions[call_id] = message.partition
            call_partitions[call_id] = message.partition  # where the call's detection state is written
            state.last_frame_at[call_id] = received_at
            while not state.lanes or state.room is None:  # the start task has not run yet
                await asyncio.sleep(0.05)
            job = _Job("frame", call_id, event=event, received_at=received_at, ended_wall=_ended_wall(call_id))
            if not state.room.is_set():  # backpressure: the decoders are behind; Kafka keeps the audio (see _drained)
                state.blocked = True
                waited_from = time.time()
                try:
                    await state.room.wait()
                finally:
                    state.blocked = False
                    state.unblocked_at = time.time()
                    metrics.AUDIO_BACKPRESSURE_SECONDS.inc(state.unblocked_at - waited_from)
            cost_s, sent_at = _frame_cost(message)
            index = lane_of(call_id)
            state.lanes[index].push_frame(call_id, job, cost_s, sent_at)
            state.wakeups[index].set()
            _queue_changed()

    @app.timer(interval=0.5)
    async def close_sessions() -> None:
        """Finalise sessions of calls that ended (call-state table) or went quiet (idle timeout)."""
        transcriber = state.transcriber
        if transcriber is None:
            return
        idle = transcriber.idle_calls()
        now = time.time()
        for call_id in transcriber.calls():
            if call_id in state.closing:
                continue
            # A call that ended is finalised once its backlog of audio is drained, so audio sent before
            # the hang-up is still transcribed when decoding lags behind the events.
            ended = _ended_wall(call_id) is not None and _drained(call_id, now)
            kind = "end" if ended else "idle" if call_id in idle else None
            if kind is None:
                continue
            state.closing.add(call_id)
            _push_control(_Job(kind, call_id))  # after the call's queued frames
        metrics.ACTIVE_SESSIONS.set(transcriber.active_sessions)

    @app.timer(interval=30.0)
    async def release_idle_recognizers() -> None:
        """Free pooled Vosk recognisers idle past STREAMPROC_VOSK_IDLE_RECOGNIZER_TTL_S: off the loop, since
        freeing one returns its heap to the OS (malloc_trim, ~40 ms); not on a lane, which may be decoding."""
        transcriber = state.transcriber
        if transcriber is not None:
            await asyncio.get_running_loop().run_in_executor(None, transcriber.release_idle_recognizers)
