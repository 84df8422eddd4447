"""Replay recorded calls to Kafka: audio frames + call events (+ scripted text), paced like a live call.

A recorded call is a WAV file in any supported layout (16-bit PCM, G.711 μ-law or A-law;
8 or 16 kHz; mono for one speaker, or stereo with the agent on channel 0 and the customer
on channel 1) plus an optional events JSONL (``offset_s`` per event, as written by
``streamproc synth``; events with only a ``ts`` are placed relative to the first one).

The audio bytes are sent as they are in the file (no transcoding), cut into frames of
``chunk_ms`` at sample boundaries, with :class:`~streamproc.schemas.AudioFrameMeta` in the
headers, key = call id, so a call's events and audio land on the same partition.
In real-time mode a frame is sent when its last sample would have been spoken (as a live
media fork does); events at their offset. Many copies of a call can run at once with
distinct call ids and staggered starts (load generation).
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .audio import WavAudio, read_wav as audio_read_wav
from .schemas import (
    AudioFrameMeta,
    AudioLayout,
    CALL_EVENT_ADAPTER,
    Speaker,
    TranscriptSegment,
    from_epoch,
)

MIN_CHUNK_MS, MAX_CHUNK_MS = 20, 1000


class ReplayError(ValueError):
    """A recording that cannot be replayed (unsupported WAV, bad events file)."""


def read_wav(path: Path) -> WavAudio:
    """Parse a WAV of PCM16, A-law or μ-law (streamproc.audio.read_wav) with replay's error type."""
    try:
        return audio_read_wav(path)
    except ValueError as exc:
        raise ReplayError(str(exc)) from None


# --------------------------------------------------------------------------- recorded call


@dataclass(frozen=True)
class RecordedCall:
    name: str
    audio: WavAudio | None
    speaker: Speaker | None  # who speaks on a mono recording
    events: tuple[dict, ...]  # event fields with "offset_s", without ts
    script: tuple[dict, ...] = ()  # {"speaker", "start_s", "end_s", "text"}

    @property
    def duration_s(self) -> float:
        ends = [e["offset_s"] for e in self.events] + [line["end_s"] for line in self.script]
        return max([self.audio.duration_s if self.audio else 0.0, *ends])


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ReplayError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ReplayError(f"{path}:{number}: expected a JSON object")
        records.append(record)
    return records


def load_events(path: Path) -> list[dict]:
    """Events with ``offset_s``; events with only ``ts`` (epoch or ISO) are placed relative to the first."""
    records = _read_jsonl(path)
    stamps = []
    for number, record in enumerate(records, 1):
        if "offset_s" in record:
            stamps.append(None)
            continue
        if "ts" not in record:
            raise ReplayError(f"{path}:{number}: an event needs offset_s or ts")
        probe = dict(record, call_id=record.get("call_id", "x"))
        try:
            stamps.append(CALL_EVENT_ADAPTER.validate_python(probe).ts.timestamp())
        except Exception as exc:
            raise ReplayError(f"{path}:{number}: {exc}") from None
    known = [s for s in stamps if s is not None]
    origin = min(known) if known else 0.0
    events = []
    for number, (record, stamp) in enumerate(zip(records, stamps), 1):
        record = dict(record)
        record.pop("ts", None)
        record.pop("event_id", None)  # derived again from the new call id and time
        if stamp is not None:
            record["offset_s"] = round(stamp - origin, 3)
        try:
            record["offset_s"] = float(record["offset_s"])
        except (TypeError, ValueError):
            raise ReplayError(f"{path}:{number}: offset_s must be a number") from None
        # Validate now, with a placeholder time, so a bad file fails before anything is sent.
        try:
            CALL_EVENT_ADAPTER.validate_python({k: v for k, v in record.items() if k != "offset_s"} | {"ts": 0, "call_id": "x"})
        except Exception as exc:
            raise ReplayError(f"{path}:{number}: invalid event: {exc}") from None
        events.append(record)
    return sorted(events, key=lambda e: e["offset_s"])


def load_script(path: Path) -> list[dict]:
    lines = _read_jsonl(path)
    for number, line in enumerate(lines, 1):
        if not {"speaker", "start_s", "end_s", "text"} <= line.keys() or line["speaker"] not in ("agent", "customer"):
            raise ReplayError(f"{path}:{number}: a script line needs speaker (agent|customer), start_s, end_s, text")
    return lines


def load_recording(wav: Path | None, events: Path | None = None, script: Path | None = None, *, speaker: Speaker | None = None) -> RecordedCall:
    """A WAV (optional for script-only replay) with its events/script files; companions are found by name."""
    from .synth import companion_paths

    if wav is not None:
        default_events, default_script = companion_paths(Path(wav))
        events = events or (default_events if default_events.exists() else None)
        script = script or (default_script if default_script.exists() else None)
    audio = read_wav(Path(wav)) if wav is not None else None
    if audio is not None and audio.channels == 1 and speaker is None:
        raise ReplayError(f"{wav} is mono: say who speaks on it (--speaker agent|customer)")
    return RecordedCall(
        name=Path(wav or events or script or "call").stem,
        audio=audio,
        speaker=speaker,
        events=tuple(load_events(events)) if events else (),
        script=tuple(load_script(script)) if script else (),
    )


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Outgoing:
    topic_kind: str  # events | audio | transcripts
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


def audio_frames(audio: WavAudio, chunk_ms: int) -> Iterable[tuple[int, int, bytes]]:
    """(offset_ms, duration_ms, bytes) per frame; the last frame may be shorter."""
    if not MIN_CHUNK_MS <= chunk_ms <= MAX_CHUNK_MS:
        raise ReplayError(f"chunk_ms must be within {MIN_CHUNK_MS}..{MAX_CHUNK_MS}")
    step = audio.rate * chunk_ms // 1000 * audio.bytes_per_frame
    minimum = audio.rate * MIN_CHUNK_MS // 1000 * audio.bytes_per_frame
    starts = list(range(0, len(audio.data), step))
    if len(starts) > 1 and len(audio.data) - starts[-1] < minimum:
        starts.pop()  # a tail shorter than 20 ms rides on the previous frame
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(audio.data)
        piece = audio.data[start:end]
        duration_ms = len(piece) // audio.bytes_per_frame * 1000 // audio.rate
        yield start // audio.bytes_per_frame * 1000 // audio.rate, duration_ms, piece


def audio_meta(call: RecordedCall, seq: int, offset_ms: int) -> AudioFrameMeta:
    assert call.audio is not None
    stereo = call.audio.channels == 2
    return AudioFrameMeta(
        encoding=call.audio.encoding,
        rate=call.audio.rate,
        channels=call.audio.channels,
        layout=AudioLayout.agent_customer if stereo else AudioLayout.mono,
        speaker=None if stereo else call.speaker,
        stream="main" if stereo else (call.speaker.value if call.speaker else "main"),
        seq=seq,
        offset_ms=offset_ms,
    )


def event_message(fields: dict, call_id: str, ts: float) -> bytes:
    body = {k: v for k, v in fields.items() if k != "offset_s"} | {"call_id": call_id, "ts": from_epoch(ts)}
    return CALL_EVENT_ADAPTER.validate_python(body).to_json_bytes()


def script_segment(line: dict, call_id: str, utterance: int, *, is_final: bool, revision: int, text: str) -> bytes:
    return TranscriptSegment(
        segment_id=TranscriptSegment.make_id(call_id, line["speaker"], utterance, revision, is_final),
        call_id=call_id,
        speaker=line["speaker"],
        utterance=utterance,
        revision=revision,
        is_final=is_final,
        text=text,
        start_s=line["start_s"],
        end_s=line["end_s"],
        source="script",
    ).to_json_bytes()


def schedule(call: RecordedCall, call_id: str, *, chunk_ms: int = 250, audio: bool = True, script: bool = False) -> list[tuple[float, Callable[[float], Outgoing]]]:
    """Everything one call sends, as (seconds after the call starts, build(send_time) → message).

    Messages are built at send time so event ``ts`` and frame ``sent_at_ms`` carry the real clock.
    Scripted text goes out as one partial half-way through the line (first half of the words)
    and a final at its end, like a recogniser's output, marked ``source="script"``.
    """
    key = call_id.encode()
    # (offset, rank, build): at equal times call_started goes before audio, call_ended after it.
    items: list[tuple[float, int, Callable[[float], Outgoing]]] = []
    rank = {"call_started": -1, "call_ended": 1}
    for fields in call.events:
        items.append((fields["offset_s"], rank.get(fields.get("type"), 0),
                      lambda now, f=fields: Outgoing("events", key, event_message(f, call_id, now))))
    if audio and call.audio is not None:
        for seq, (offset_ms, duration_ms, piece) in enumerate(audio_frames(call.audio, chunk_ms)):
            meta = audio_meta(call, seq, offset_ms)

            def build(now: float, meta=meta, piece=piece) -> Outgoing:
                stamped = meta.model_copy(update={"sent_at_ms": int(now * 1000)})
                return Outgoing("audio", key, piece, stamped.to_headers())

            items.append(((offset_ms + duration_ms) / 1000, 0, build))
    if script:
        counters: dict[str, int] = {}
        for line in call.script:
            utterance = counters.get(line["speaker"], 0)
            counters[line["speaker"]] = utterance + 1
            words = line["text"].split()
            if len(words) > 1:
                half = " ".join(words[: (len(words) + 1) // 2])
                items.append(((line["start_s"] + line["end_s"]) / 2, 0, lambda now, l=line, u=utterance, t=half: Outgoing(
                    "transcripts", key, script_segment(l, call_id, u, is_final=False, revision=0, text=t))))
            items.append((line["end_s"], 0, lambda now, l=line, u=utterance: Outgoing(
                "transcripts", key, script_segment(l, call_id, u, is_final=True, revision=0, text=l["text"]))))
    items.sort(key=lambda item: (item[0], item[1]))  # stable: equal times keep their order
    return [(offset, build) for offset, _, build in items]


# --------------------------------------------------------------------------- player


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    build: Callable[[float], Outgoing] = field(compare=False)
    call_id: str = field(compare=False)
    offset_s: float = field(compare=False)


class Replayer:
    """Sends scheduled messages of many calls from one thread, at real-time pace or as fast as possible.

    ``send(topic_kind, key, value, headers)`` does the producing (kafka-python in the CLI);
    ``on_sent(call_id, outgoing, offset_s)`` observes progress (progress bar, demo output).
    """

    def __init__(self, send: Callable[[Outgoing], None], *, realtime: bool = True,
                 on_sent: Callable[[str, Outgoing, float], None] | None = None):
        self._send = send
        self.realtime = realtime
        self._on_sent = on_sent or (lambda call_id, out, offset: None)
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self.sent = 0
        self.max_lag_s = 0.0  # worst lateness of a send against its schedule (real-time mode)

    def add(self, call: RecordedCall, call_id: str, start_at: float, **schedule_options: Any) -> None:
        for offset, build in schedule(call, call_id, **schedule_options):
            heapq.heappush(self._heap, _Due(start_at + offset, next(self._seq), build, call_id, offset))

    @property
    def pending(self) -> int:
        return len(self._heap)

    def stop(self) -> None:
        self._stop.set()

    def run(self, until: float | None = None) -> None:
        while self._heap and not self._stop.is_set():
            item = self._heap[0]
            now = time.time()
            if until is not None and now >= until:
                return
            if self.realtime and item.at > now:
                self._stop.wait(min(item.at - now, 0.25))
                continue
            heapq.heappop(self._heap)
            stamp = now if self.realtime else item.at
            if self.realtime:
                self.max_lag_s = max(self.max_lag_s, now - item.at)
            outgoing = item.build(stamp)
            self._send(outgoing)
            self.sent += 1
            self._on_sent(item.call_id, outgoing, item.offset_s)


def kafka_sender(producer, settings) -> Callable[[Outgoing], None]:
    """A Replayer send function for a kafka-python producer and the configured topic names."""
    topics = {kind: settings.topic(kind) for kind in ("events", "audio", "transcripts")}

    def send(outgoing: Outgoing) -> None:
        producer.send(topics[outgoing.topic_kind], key=outgoing.key, value=outgoing.value, headers=outgoing.headers)

    return send


def call_ids(base: str, count: int) -> list[str]:
    return [base] if count == 1 else [f"{base}-{index:03d}" for index in range(1, count + 1)]


def run_cli(settings, *, wav: Path | None, events: Path | None, script: Path | None, speaker: str | None,
            call_id: str | None, calls: int, stagger: float, realtime: bool, chunk_ms: int, text: bool,
            audio: bool, console) -> str:
    """``streamproc replay``: load, produce with a progress bar (audio seconds of all copies), return a summary line."""
    import uuid

    from kafka import KafkaProducer
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .kafka_admin import client_security, ensure_topics

    if wav is None and events is None and script is None:
        raise ReplayError("give a WAV, or --events / --script for a call without audio")
    try:
        who = Speaker(speaker) if speaker else None
    except ValueError:
        raise ReplayError(f"--speaker must be agent or customer, not {speaker!r}") from None
    try:
        call = load_recording(wav, events, script, speaker=who)
    except OSError as exc:
        raise ReplayError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if text and not call.script:
        raise ReplayError("--text needs a script file (NAME.script.jsonl from `streamproc synth`, or --script)")
    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5, **client_security(settings))
    ids = call_ids(call_id or f"replay-{uuid.uuid4().hex[:8]}", calls)
    total_s = call.duration_s * len(ids)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} s"),
                        TimeElapsedColumn(), console=console, transient=False)
    task = progress.add_task(f"{len(ids)} call{'s' if len(ids) > 1 else ''}", total=total_s)
    done: dict[str, float] = {}

    def on_sent(cid: str, outgoing: Outgoing, offset_s: float) -> None:
        advance = offset_s - done.get(cid, 0.0)
        if advance > 0:
            done[cid] = offset_s
            progress.advance(task, advance)

    player = Replayer(kafka_sender(producer, settings), realtime=realtime, on_sent=on_sent)
    start = time.time() + 0.2
    for index, cid in enumerate(ids):
        player.add(call, cid, start + (stagger * index if realtime else 0), chunk_ms=chunk_ms, audio=audio, script=text)
    began = time.monotonic()
    try:
        with progress:
            player.run()
    except KeyboardInterrupt:
        player.stop()
        console.print("[yellow]interrupted[/yellow]")
    finally:
        producer.flush(30)
        producer.close(10)
    elapsed = time.monotonic() - began
    first = ids[0] if len(ids) == 1 else f"{ids[0]} … {ids[-1]}"
    pace = f"max send lag {player.max_lag_s * 1000:.0f} ms" if realtime else f"{total_s / max(elapsed, 1e-9):.0f}× real time"
    return f"sent {player.sent} messages for {len(ids)} call(s) ({first}) to {settings.topic('audio')} / {settings.topic('events')} in {elapsed:.1f}s ({pace})"
