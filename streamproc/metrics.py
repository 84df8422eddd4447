"""Every Prometheus metric streamproc exports, in one place.

They live in prometheus-client's default registry, which Faust's Prometheus sensor
serves on the worker's ``/metrics`` alongside its own consumer/producer/commit/rebalance
metrics. Labels are bounded: never a call id or free text; an agent id only when allow-listed (agent_label). Queue labels are
limited to the queues named in the rules file (others are reported as ``other``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
HOLD_BUCKETS = (5, 15, 30, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600)

ACTIVE_CALLS = Gauge("streamproc_active_calls", "Calls in progress owned by this worker (including those on hold).")
CALLS_ON_HOLD = Gauge("streamproc_calls_on_hold", "Calls currently on hold owned by this worker.")
HOLD_DURATION = Histogram(
    "streamproc_hold_duration_seconds",
    "Duration of completed holds, in event time.",
    ["queue"],
    buckets=HOLD_BUCKETS,
)
EVENTS = Counter("streamproc_call_events_total", "Call events accepted, by type.", ["type"])
DUPLICATE_EVENTS = Counter("streamproc_duplicate_events_total", "Call events dropped as duplicates (same event id).")
ALERTS = Counter("streamproc_alerts_total", "Alerts emitted, by kind and severity.", ["kind", "severity"])
ALERT_LATENCY = Histogram(
    "streamproc_alert_latency_seconds",
    "Processing latency: the moment the alert condition became true (its source reached us) until the alert was sent.",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter("streamproc_dead_letters_total", "Inputs sent to the dead-letter topic, by reason.", ["reason"])
TICKS = Counter("streamproc_hold_timer_ticks_total", "Deadline ticks the hold timer sent to the events agent.")
TIMER_LAG = Histogram(
    "streamproc_hold_timer_lag_seconds",
    "How late the hold timer noticed a due deadline (timer scheduling delay).",
    buckets=LATENCY_BUCKETS,
)
TICKS_DEFERRED = Counter(
    "streamproc_hold_timer_ticks_deferred_total",
    "Hold-timer ticks set aside because call events of their partition were not processed yet.",
)
RULES_LOADED = Gauge("streamproc_rules_loaded_timestamp_seconds", "Unix time the rules in force were loaded.")
RULES_RELOADS = Counter(
    "streamproc_rules_reloads_total", "Rules file changes seen by the hot reloader: ok, or rejected (old rules kept).", ["result"]
)
# Detection (streamproc/detect/engine.py, docs/detection.md)
DETECTION_SEGMENTS = Counter(
    "streamproc_detection_segments_total", "Transcript segments run through the detectors, by stage.", ["stage"]
)
DETECTION_SUPPRESSED = Counter(
    "streamproc_detection_suppressed_total",
    "Detector matches not alerted: already alerted (partial then final), cooldown, semantic veto (lexicon_veto).",
    ["reason"],
)
DETECTION_UNCONFIRMED = Counter(
    "streamproc_detection_unconfirmed_total", "Alerts fired on a partial whose match is gone from the final transcript."
)
DETECTION_SECONDS = Histogram(
    "streamproc_detection_seconds", "Time to run the detectors on one input.", ["input"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
DETECTION_CALLS = Gauge("streamproc_detection_calls", "Calls with detection state held in memory by this worker.")
DASHBOARD_CLIENTS = Gauge("streamproc_dashboard_clients", "Browsers connected to this worker's live dashboard stream.")
DASHBOARD_RECORDS = Counter(
    "streamproc_dashboard_records_total", "Records the dashboard's all-partition reader folded into its view, by topic kind.", ["topic"]
)

BRIDGE_CONNECTIONS = Gauge("streamproc_bridge_connections", "Media-stream WebSocket connections open on this bridge.")
BRIDGE_FRAMES = Counter("streamproc_bridge_audio_frames_total", "Audio frames the bridge produced to the audio topic.")
BRIDGE_CLOSES = Counter(
    "streamproc_bridge_closes_total",
    "Bridge connections ended, by reason (completed, disconnected, protocol_error, bad_sequence, flood, backpressure, ...).",
    ["reason"],
)
BRIDGE_REJECTED = Counter(
    "streamproc_bridge_rejected_total",
    "Bridge connections refused as unauthenticated: missing_signature, bad_signature, bad_token.",
    ["reason"],
)

# Audio and transcription (docs/audio.md). Per worker process; no call ids in labels.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
AUDIO_SECONDS = Counter("streamproc_audio_seconds_total", "Seconds of audio decoded (per speaker channel), by encoding.", ["encoding"])
AUDIO_FRAMES = Counter(
    "streamproc_audio_frames_total", "Audio frames received, by outcome: accepted, duplicate, rejected.", ["outcome"]
)
AUDIO_GAP_SECONDS = Counter("streamproc_audio_gap_seconds_total", "Audio lost in sequence gaps (filled with silence or skipped).")
DECODE_CPU_SECONDS = Counter("streamproc_decode_cpu_seconds_total", "CPU seconds spent decoding and recognising audio.")
REAL_TIME_FACTOR = Gauge(
    "streamproc_transcription_real_time_factor",
    "Decode CPU seconds per audio second over the last ~30 s of audio (below 1: faster than real time per core).",
)
TRANSCRIPTION_READY = Gauge("streamproc_transcription_ready", "1 once the speech model is loaded and sessions can decode.")
ASR_DECODE_SECONDS = Counter(
    "streamproc_asr_decode_seconds_total",
    "Decoder time by kind: stream (Vosk), partial (Whisper re-decodes of an open utterance), final.",
    ["kind"],
)
ASR_DECODE_BATCH = Histogram(
    "streamproc_asr_decode_batch_size",
    "Utterances per batched Whisper model call (STREAMPROC_WHISPER_BATCH_SIZE > 1; 1 when batching is off).",
    buckets=(1, 2, 4, 8, 16, 32),
)
ASR_GATED_SECONDS = Counter(
    "streamproc_asr_gated_seconds_total",
    "Speech gate (Vosk): seconds of speaker-channel audio passed to the decoder or skipped as non-speech.",
    ["result"],
)
ASR_DECODES = Counter("streamproc_asr_decodes_total", "Decoder runs by kind (partial, final; Vosk: stream chunks).", ["kind"])
AUDIO_UNACKED_FRAMES = Gauge(
    "streamproc_audio_unacked_frames",
    "Audio frames held unacknowledged because their utterance is not final yet (a crash re-decodes them).",
)
# Decoder scheduling and capacity (streamproc/scheduling.py, docs/audio.md#decoder-scheduling). No call ids.
AUDIO_QUEUED_SECONDS = Gauge(
    "streamproc_audio_queued_seconds",
    "Speaker-channel seconds of audio read from calls.audio and waiting for a decoder lane.",
)
AUDIO_QUEUE_CAPACITY_SECONDS = Gauge(
    "streamproc_audio_queue_capacity_seconds",
    "Bound on queued audio (STREAMPROC_TRANSCRIPTION_MAX_QUEUED_AUDIO_S); at it the worker stops reading calls.audio.",
)
AUDIO_BACKPRESSURE_SECONDS = Counter(
    "streamproc_audio_backpressure_seconds_total",
    "Wall seconds the audio agent waited for room in the decode queues (consumption paused; Kafka keeps the audio).",
)
DECODER_LANES = Gauge("streamproc_decoder_lanes", "Decoder lanes (threads) of this worker.")
DECODER_BUSY_SECONDS = Counter(
    "streamproc_decoder_busy_seconds_total",
    "Wall seconds decoder lanes spent decoding; rate / streamproc_decoder_lanes is the busy fraction.",
)
DECODE_BATCH_FRAMES = Histogram(
    "streamproc_decode_batch_frames",
    "Frames decoded per executor call (a batch of one call's queued frames).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
VOSK_RECOGNIZERS = Gauge(
    "streamproc_vosk_recognizers",
    "Vosk recognisers of this worker's pool: lent to a session (in_use) or kept warm (idle); each holds its graph cache.",
    ["state"],
)
ACTIVE_SESSIONS = Gauge("streamproc_transcription_active_sessions", "Vosk recogniser sessions (call × speaker) open on this worker.")
SESSIONS_REJECTED = Counter(
    "streamproc_transcription_sessions_rejected_total", "Frames dead-lettered because the session cap was reached."
)
SESSIONS_CLOSED = Counter("streamproc_transcription_sessions_closed_total", "Sessions finalised and freed, by cause.", ["cause"])
TRANSCRIPT_SEGMENTS = Counter("streamproc_transcript_segments_total", "Transcript segments emitted, by kind (partial, final).", ["kind"])
TRANSCRIPTION_LAG = Histogram(
    "streamproc_transcription_lag_seconds",
    "Wall time from the newest audio of a segment reaching the worker to the segment being sent, by kind.",
    ["kind"],
    buckets=LAG_BUCKETS,
)

# Post-call summaries (streamproc/summary.py). Labels: queue (queues named in the rules file, else "other")
# and agent (only ids in STREAMPROC_SUMMARY_METRIC_AGENTS, at most MAX_AGENT_LABELS, else "other").
HANDLE_BUCKETS = (30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 2700, 3600, 7200)
SUMMARY_HOLD_BUCKETS = (0, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
MAX_AGENT_LABELS = 50
SUMMARIES = Counter("streamproc_call_summaries_total", "Post-call summaries sent, by queue and completeness.", ["queue", "complete"])
SUMMARY_LATE_INPUTS = Counter(
    "streamproc_postcall_late_inputs_total", "Records of a call read after its summary was sent (ignored)."
)
CALL_HANDLE_TIME = Histogram(
    "streamproc_call_handle_seconds", "Call duration (call_started to call_ended), from summaries, by queue.",
    ["queue"], buckets=HANDLE_BUCKETS,
)
CALL_HOLD_TOTAL = Histogram(
    "streamproc_call_hold_total_seconds", "Total hold time per call, from summaries, by queue.",
    ["queue"], buckets=SUMMARY_HOLD_BUCKETS,
)
CALL_ESCALATIONS = Counter(
    "streamproc_call_transfers_total", "Calls that were transferred (escalation outcome), from summaries, by queue.", ["queue"]
)
CALL_ALERTED = Counter(
    "streamproc_call_alerted_total", "Calls with at least one alert, from summaries, by queue.", ["queue"]
)
AGENT_HANDLE_TIME = Histogram(
    "streamproc_agent_handle_seconds", "Call duration from summaries, by agent (allow-listed ids, else other).",
    ["agent"], buckets=HANDLE_BUCKETS,
)
AGENT_CALLS_TRANSFERRED = Counter(
    "streamproc_agent_transfers_total", "Transferred calls from summaries, by agent (allow-listed ids, else other).", ["agent"]
)


def queue_label(queue: str | None, known_queues: frozenset[str]) -> str:
    """Bounded label value for a queue name."""
    if not queue:
        return "none"
    return queue if queue in known_queues else "other"


OFFSETS_RESET = Counter(
    "streamproc_offsets_reset_total",
    "Partitions whose committed or recovered offset the broker no longer has (data lost on the broker: "
    "empty restart, recreated topic, unclean leader election), re-read from what is left.",
    ["topic_kind", "reason"],  # topic_kind: input | changelog; reason: beyond_end | before_start
)
RECOVERY_RESTARTS = Counter(
    "streamproc_recovery_restarts_total",
    "Table recoveries restarted because neither a recovery (re)start nor a changelog record came within the stall "
    "limit during a rebalance (agents/compat.py fix 7); "
    "the worker logs a 'table recovery stalled' warning with what each recovery step was waiting on.",
)
DETECTION_STATE_ADOPTED = Counter(
    "streamproc_detection_state_adopted_total",
    "Calls whose detection state this worker took over from the detection-state table (after a crash or rebalance).",
)


def agent_label(agent_id: str | None, allowed: frozenset[str]) -> str:
    """Bounded label value for an agent id: only allow-listed ids (at most MAX_AGENT_LABELS) are kept."""
    if not agent_id:
        return "none"
    return agent_id if agent_id in allowed else "other"
