"""The ``streamproc`` command."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="streamproc: real-time call monitoring on Kafka.", no_args_is_help=True, add_completion=False)
rules_app = typer.Typer(help="Work with rules files.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(topics_app, name="topics")

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


def _export_settings(**values: object) -> None:
    """Flags become STREAMPROC_* environment variables, read by streamproc.config (also in subprocesses)."""
    for name, value in values.items():
        if value is not None:
            os.environ[f"STREAMPROC_{name.upper()}"] = str(value)
    from .config import get_settings

    get_settings.cache_clear()


@app.command()
def worker(
    broker: Optional[str] = typer.Option(None, help="Kafka URL, e.g. kafka://host:9092 (env STREAMPROC_BROKER)."),
    rules: Optional[Path] = typer.Option(None, help="Rules YAML (env STREAMPROC_RULES_FILE)."),
    web_port: Optional[int] = typer.Option(None, help="Port for /metrics and the dashboard (env STREAMPROC_WEB_PORT)."),
    web_host: Optional[str] = typer.Option(None, help="Bind address (env STREAMPROC_WEB_HOST, default 127.0.0.1)."),
    topic_prefix: Optional[str] = typer.Option(None, help="Topic name prefix (env STREAMPROC_TOPIC_PREFIX)."),
    loglevel: str = typer.Option("info", "--loglevel", "-l", help="debug, info, warning or error."),
) -> None:
    """Run the production worker (the same as `faust -A agents.app worker`)."""
    _export_settings(broker=broker, rules_file=rules, web_port=web_port, web_host=web_host, topic_prefix=topic_prefix)
    from .config import get_settings
    from .rules import RulesError, load_rules

    settings = get_settings()
    try:
        load_rules(settings.rules_file)  # fail here with a readable message, not inside Faust
    except RulesError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    run_faust_worker(loglevel)


def run_faust_worker(loglevel: str = "info") -> None:
    from faust.worker import Worker

    from agents.app import app as faust_app

    Worker(faust_app, loglevel=loglevel, console_port=0).execute_from_commandline()


@rules_app.command("check")
def rules_check(file: Path = typer.Argument(..., help="The rules YAML file to validate.")) -> None:
    """Validate a rules file; exit 1 with every problem (path and line) if it is invalid."""
    from .rules import RulesError, load_rules

    try:
        rules = load_rules(file)
    except RulesError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    hold = rules.hold
    console.print(f"[green]ok[/green] {file}: rules version {rules.version}")
    console.print(
        f"  hold: {len(hold.defaults.thresholds)} thresholds, {len(hold.defaults.cumulative)} cumulative, "
        f"{len(hold.defaults.repeated)} repeated; queue overrides: {', '.join(hold.queues) or 'none'}"
    )


@topics_app.command("create")
def topics_create(
    broker: Optional[str] = typer.Option(None, help="Kafka URL (env STREAMPROC_BROKER)."),
    topic_prefix: Optional[str] = typer.Option(None),
    partitions: Optional[int] = typer.Option(None),
) -> None:
    """Create every streamproc topic with the configured partition count."""
    _export_settings(broker=broker, topic_prefix=topic_prefix, partitions=partitions)
    from .config import get_settings
    from .kafka_admin import ensure_topics

    for name, count in ensure_topics(get_settings()).items():
        console.print(f"{name}: {count} partitions")


@app.command()
def schemas(topic: Optional[str] = typer.Argument(None, help="Only this topic, e.g. calls.alerts.")) -> None:
    """Print the JSON Schema of every message streamproc reads or writes."""
    from .schemas import DOCUMENTED_MESSAGES

    selected = {name: adapter for name, adapter in DOCUMENTED_MESSAGES.items() if topic in (None, name)}
    if not selected:
        err.print(f"unknown topic {topic!r}; one of {', '.join(DOCUMENTED_MESSAGES)}")
        raise typer.Exit(1)
    console.print_json(json.dumps({name: adapter.json_schema() for name, adapter in selected.items()}))


# --------------------------------------------------------------------------- demo


def _wait_http(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _print_alert(raw: bytes, started: float) -> None:
    alert = json.loads(raw)
    severity = alert.get("severity", "info")
    style = SEVERITY_STYLE.get(severity, "white")
    evidence = alert.get("evidence", {})
    detail = f" [dim]{evidence['text']}[/dim]" if evidence.get("text") else ""
    console.print(
        f"[dim]{time.time() - started:6.1f}s[/dim] [{style}]ALERT {severity.upper():8}[/{style}] "
        f"{alert.get('kind'):16} call={alert.get('call_id')} agent={alert.get('agent_id')} queue={alert.get('queue')} "
        f"— {alert.get('title')}{detail}"
    )


@app.command()
def demo(
    broker: Optional[str] = typer.Option(None, help="Use this Kafka instead of starting the embedded broker."),
    duration: float = typer.Option(0, help="Stop after this many seconds (0: run until Ctrl-C)."),
    web_port: int = typer.Option(0, help="Worker web port (0: pick a free one)."),
    rounds: int = typer.Option(0, help="How many rounds of demo calls (0: keep going)."),
) -> None:
    """Start a broker and a worker, play simulated calls, and print alerts live."""
    from kafka import KafkaConsumer, KafkaProducer

    from .broker import BrokerError, EmbeddedBroker, free_port
    from .config import get_settings
    from .kafka_admin import ensure_topics
    from .rules import DEMO_RULES_RESOURCE, packaged_rules_path
    from .simulate import DEMO_CALLS, CallPlayer

    started = time.time()
    embedded: EmbeddedBroker | None = None
    worker_proc: subprocess.Popen | None = None
    stop = threading.Event()
    previous_sigterm = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    data_dir = Path(tempfile.mkdtemp(prefix="streamproc-demo-"))
    try:
        if broker is None:
            try:
                embedded = EmbeddedBroker(log_path=data_dir / "broker.log").start()
            except BrokerError as exc:
                err.print(f"[red]cannot start the embedded broker: {exc}[/red]")
                raise typer.Exit(1)
            broker = embedded.url
            console.print(f"[green]●[/green] embedded Kafka broker (Tansu) on {embedded.bootstrap}  [dim]({time.time() - started:.2f}s)[/dim]")
        port = web_port or free_port()
        _export_settings(
            broker=broker,
            web_port=port,
            rules_file=packaged_rules_path(DEMO_RULES_RESOURCE),
            data_dir=data_dir / "faust",
            app_id=f"streamproc-demo-{uuid.uuid4().hex[:6]}" if broker and embedded is None else None,
        )
        settings = get_settings()
        ensure_topics(settings)
        worker_log = open(data_dir / "worker.log", "wb")
        worker_proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "worker", "--loglevel", "warning"],
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        base = f"http://{settings.web_host}:{port}"
        if not _wait_http(f"{base}/ready", 90, worker_proc):
            err.print(f"[red]the worker did not start; its log is {data_dir / 'worker.log'}[/red]")
            raise typer.Exit(1)
        console.print(f"[green]●[/green] worker ready  [dim]({time.time() - started:.2f}s)[/dim]")
        console.print(f"  metrics:   {base}/metrics")
        console.print(f"  rules:     demo rules (hold warning 8s, critical 16s; vip 5s/10s; 3 holds; 24s in total)")
        console.print(f"  logs:      {data_dir}")
        console.print("[bold]Playing simulated calls. Alerts appear below as they happen; Ctrl-C to stop.[/bold]")

        consumer = KafkaConsumer(
            settings.topic("alerts"),
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            consumer_timeout_ms=200,
        )
        alert_ids: set[str] = set()

        def watch_alerts() -> None:
            while not stop.is_set():
                for record in consumer:
                    alert_id = json.loads(record.value).get("alert_id")
                    if alert_id in alert_ids:  # at-least-once: dedupe by id
                        continue
                    alert_ids.add(alert_id)
                    _print_alert(record.value, started)
                    if stop.is_set():
                        break

        watcher = threading.Thread(target=watch_alerts, daemon=True)
        watcher.start()
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
        events_topic = settings.topic("events")

        def on_event(call_id: str, kind: str, call) -> None:
            console.print(f"[dim]{time.time() - started:6.1f}s   event {kind:13} call={call_id} ({call.name}, queue {call.queue})[/dim]")

        player = CallPlayer(lambda key, value: producer.send(events_topic, key=key.encode(), value=value), on_event=on_event)
        until = started + duration if duration else None
        round_number = 0
        while not stop.is_set() and (until is None or time.time() < until) and (rounds == 0 or round_number < rounds):
            round_number += 1
            now = time.time()
            for index, call in enumerate(DEMO_CALLS):
                player.schedule(call, f"demo-{round_number}-{index + 1}", now + 1.5 * index)
            runner = threading.Thread(target=player.run, kwargs={"until": until}, daemon=True)
            runner.start()
            while runner.is_alive() and not stop.is_set():
                runner.join(0.2)
            producer.flush()
            stop.wait(3)  # let the last alerts of the round arrive
        stop.set()
        player.stop()
        watcher.join(2)
        consumer.close()
        producer.close()
        console.print(f"[bold]demo finished:[/bold] {len(alert_ids)} alerts in {time.time() - started:.1f}s")
    except KeyboardInterrupt:
        console.print("\n[bold]stopping…[/bold]")
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous_sigterm)
        if worker_proc is not None and worker_proc.poll() is None:
            os.killpg(worker_proc.pid, signal.SIGTERM)
            try:
                worker_proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker_proc.pid, signal.SIGKILL)
                worker_proc.wait()
        if embedded is not None:
            embedded.stop()
            console.print("[green]●[/green] broker stopped")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
