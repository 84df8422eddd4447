"""Worker settings: one pydantic model, read from ``STREAMPROC_*`` environment variables.

The CLI turns its flags into these environment variables before the Faust app is
imported, so ``streamproc worker --broker ...`` and ``faust -A agents.app worker``
read the same settings. docs/configuration.md lists every field.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TOPIC_NAMES = ("events", "audio", "transcripts", "alerts", "deadletter", "acks", "ticks")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMPROC_", extra="ignore")

    broker: str = Field(
        "kafka://127.0.0.1:9092",
        description="Kafka bootstrap URL(s) for the worker, e.g. kafka://host1:9092;host2:9092.",
    )
    app_id: str = Field("streamproc", description="Faust app id: consumer group and changelog topic prefix.")
    topic_prefix: str = Field("", description="Prefix for every topic name, e.g. 'acme.' gives 'acme.calls.events'.")
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of every topic (they must match: a call co-locates).")
    replication_factor: int = Field(1, ge=1, description="Replication factor used when topics are created.")
    rules_file: Path | None = Field(None, description="Rules YAML; the packaged default rules when unset.")
    web_host: str = Field("127.0.0.1", description="Bind address of the worker's web server (/metrics, dashboard).")
    web_port: int = Field(6066, ge=0, le=65535, description="Port of the worker's web server.")
    data_dir: Path = Field(Path("streamproc-data"), description="Faust data directory (table stores).")
    tick_interval_s: float = Field(0.1, gt=0, le=10, description="How often the hold timer checks due deadlines.")
    ended_call_retention_s: float = Field(
        900.0, ge=0, description="How long an ended call stays in the state table to reject late events."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Kafka client security, passed through to Faust/aiokafka (docs/configuration.md).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: Path | None = None

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
