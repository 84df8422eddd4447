"""The supervisor dashboard in a real browser (Debian chromium driven by Playwright) against a
real worker on the real broker. Screenshots land in test-artifacts/dashboard-*.png."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from playwright.sync_api import expect

from streamproc.schemas import AlertAck, TranscriptSegment
from tests.conftest import ARTIFACTS, FAST_HOLD_RULES, ROOT, event, http_get, send

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AMBER = "rgb(245, 158, 11)"  # --warning-strong in style.css
RED = "rgb(220, 38, 38)"  # --critical-strong


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    tab.problems = problems
    yield tab
    context.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def open_dashboard(page, worker) -> None:
    page.goto(worker.base_url + "/")
    page.wait_for_selector("#connection[data-state=live]", timeout=15_000)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


WATCH_ALERTS = """() => {
  // Wall-clock time (ms) at which each alert first appeared in the feed.
  window.__alertSeenAt = {};
  const record = () => {
    for (const item of document.querySelectorAll('#alerts li.alert')) {
      window.__alertSeenAt[item.dataset.alertId] ??= Date.now();
    }
  };
  new MutationObserver(record).observe(document.getElementById('alerts'), {childList: true});
  record();
}"""


def hold_timer(page, call_id: str):
    return page.locator(f'tr[data-call-id="{call_id}"] .hold-timer')


@pytest.mark.both_brokers
def test_hold_breach_shows_live_and_can_be_acknowledged(worker_factory, producer, reader, page):
    worker = worker_factory()  # hold thresholds: warning at 2 s, critical at 4 s
    alerts = reader(worker.topic("alerts"))
    acks = reader(worker.topic("acks"))
    open_dashboard(page, worker)
    page.evaluate(WATCH_ALERTS)
    events = worker.topic("events")

    send(producer, events, "call-1", event("call-1", "call_started", agent_id="agent-7", queue="billing"))
    send(producer, events, "call-2", event("call-2", "call_started", agent_id="agent-9", queue="sales"))
    send(producer, events, "call-1", event("call-1", "hold_started"))

    timer = hold_timer(page, "call-1")
    page.wait_for_selector('tr[data-call-id="call-1"] .hold-timer.on', timeout=5_000)
    first = int(timer.get_attribute("data-seconds"))
    # Wait on the timer itself (no fixed pause): it must pass first + 1 while no event arrives.
    page.wait_for_function(
        "([sel, first]) => Number(document.querySelector(sel).dataset.seconds) >= first + 1",
        arg=['tr[data-call-id="call-1"] .hold-timer', first], timeout=10_000,
    )
    assert int(timer.get_attribute("data-seconds")) >= first + 1, "the on-hold timer counts up on its own between server messages"

    # The warning threshold (2 s) turns the timer amber, the critical one (4 s) red.
    page.wait_for_selector('tr[data-call-id="call-1"] .hold-timer[data-severity=warning]', timeout=5_000)
    assert timer.evaluate("node => getComputedStyle(node).backgroundColor") == AMBER
    screenshot(page, "hold-amber")
    page.wait_for_selector('tr[data-call-id="call-1"] .hold-timer[data-severity=critical]', timeout=5_000)
    assert timer.evaluate("node => getComputedStyle(node).backgroundColor") == RED

    # Each alert appears on the page within 2 s of the worker emitting it.
    emitted = alerts.wait_for(lambda v: len(v) >= 2, timeout_s=10)
    assert [a["rule_id"] for a in emitted] == ["hold-warning", "hold-critical"]
    for alert in emitted:
        page.wait_for_selector(f'li.alert[data-alert-id="{alert["alert_id"]}"]', timeout=2_000)
        seen_at = page.evaluate("id => window.__alertSeenAt[id]", alert["alert_id"]) / 1000
        latency = seen_at - epoch(alert["detected_at"])
        print(f"alert {alert['rule_id']}: on the page {latency * 1000:.0f} ms after the worker emitted it")
        assert 0 <= latency < 2.0, f"alert {alert['rule_id']} took {latency:.2f}s to reach the page"
    feed = page.locator("#alerts li.alert")
    assert feed.first.get_attribute("data-severity") == "critical", "newest first"
    assert feed.first.locator(".badge").evaluate("node => getComputedStyle(node).backgroundColor") == RED
    assert "agent-7" in feed.first.inner_text() and "hold breach" in feed.first.inner_text()
    screenshot(page, "hold-breach")

    # Queue filter: only billing calls.
    assert page.locator("tr[data-call-id]").count() == 2
    page.select_option("#filter-queue", "sales")
    assert page.locator("tr[data-call-id]").count() == 1
    assert page.locator("#alerts li.alert").count() == 0, "both alerts are for the billing queue"
    page.select_option("#filter-queue", "")
    page.select_option("#filter-agent", "agent-9")
    assert [r.get_attribute("data-call-id") for r in page.locator("tr[data-call-id]").all()] == ["call-2"]
    assert page.locator("#alerts li.alert").count() == 0
    page.select_option("#filter-agent", "")
    page.select_option("#filter-severity", "critical")
    assert page.locator("#alerts li.alert").count() == 1
    page.select_option("#filter-severity", "")

    # Acknowledge without a name: refused on the page, nothing sent.
    critical = next(a for a in emitted if a["severity"] == "critical")
    item = page.locator(f'li.alert[data-alert-id="{critical["alert_id"]}"]')
    item.locator(".ack-button").click()
    assert page.locator("#banner.warn").is_visible()
    page.fill("#supervisor", "Dana Park")
    page.locator("#supervisor").dispatch_event("change")
    item.locator(".ack-button").click()
    acked = acks.wait_for(lambda v: any(a["alert_id"] == critical["alert_id"] for a in v), timeout_s=5)
    ack = AlertAck.model_validate(next(a for a in acked if a["alert_id"] == critical["alert_id"]))
    assert ack.acked_by == "Dana Park" and ack.call_id == "call-1"
    assert len(acked) == 1, "exactly one ack for one click"
    # The page shows the ack once it is read back from the topic (what every other worker sees too).
    item.locator(".acked-by").wait_for(timeout=5_000)
    assert "acknowledged by Dana Park" in item.inner_text()
    assert page.locator("#alerts-count").inner_text() == "1", "one alert left unacknowledged"
    screenshot(page, "acknowledged")

    send(producer, events, "call-1", event("call-1", "hold_ended"))
    page.wait_for_selector('tr[data-call-id="call-1"] .hold-timer[data-severity=none]', timeout=5_000)
    assert page.problems == []


XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> you said <b>what</b>?'


def segment(call_id: str, speaker: str, utterance: int, revision: int, final: bool, text: str) -> bytes:
    return TranscriptSegment(
        segment_id=TranscriptSegment.make_id(call_id, speaker, utterance, revision, final),
        call_id=call_id,
        speaker=speaker,
        utterance=utterance,
        revision=revision,
        is_final=final,
        text=text,
        source="script",  # injected by the test, not recognised audio
    ).to_json_bytes()


def test_transcript_lines_show_as_text_never_markup(worker_factory, producer, page):
    worker = worker_factory()
    events, transcripts, alerts = worker.topic("events"), worker.topic("transcripts"), worker.topic("alerts")
    open_dashboard(page, worker)
    send(producer, events, "call-x", event("call-x", "call_started", agent_id="agent-1", queue="support"))
    page.locator('tr[data-call-id="call-x"]').click()

    send(producer, transcripts, "call-x", segment("call-x", "customer", 0, 0, False, "i want to"))
    send(producer, transcripts, "call-x", segment("call-x", "customer", 0, 1, False, "i want to cancel"))
    send(producer, transcripts, "call-x", segment("call-x", "customer", 0, 0, True, "i want to cancel my plan"))
    send(producer, transcripts, "call-x", segment("call-x", "agent", 0, 0, True, XSS))
    send(producer, transcripts, "call-x", segment("call-x", "agent", 1, 0, False, "let me check"))
    # A detector's alert carries transcript text as evidence: also text only.
    alert = {
        "alert_id": "xss-alert-1", "call_id": "call-x", "agent_id": "agent-1", "queue": "support",
        "kind": "rude_phrase", "rule_id": "rude-1", "severity": "warning", "title": "Rude phrase",
        "evidence": {"text": XSS, "speaker": "agent"},
        "event_time": datetime.now(timezone.utc).isoformat(), "detected_at": datetime.now(timezone.utc).isoformat(),
    }
    send(producer, alerts, "call-x", json.dumps(alert).encode())

    lines = page.locator("#transcript li.line")
    expect(lines).to_have_count(3, timeout=5_000)
    page.wait_for_selector('li.alert[data-alert-id="xss-alert-1"] blockquote.evidence', timeout=5_000)
    texts = lines.locator(".text").all_inner_texts()
    assert texts == ["i want to cancel my plan", XSS, "let me check"], "partials replaced by their final, in order"
    assert lines.nth(0).get_attribute("class") == "line speaker-customer"
    assert "partial" in lines.nth(2).get_attribute("class")
    assert lines.locator(".source-tag").all_inner_texts() == ["script"] * 3, "injected text is marked, not passed off as ASR"
    # Inert: nothing ran, no element was created from the text.
    assert page.evaluate("window.__xss") is None
    assert page.locator("#transcript script, #transcript img, #transcript b").count() == 0
    assert page.locator("#alerts script, #alerts img, #alerts .evidence *").count() == 0
    assert page.locator('li.alert[data-alert-id="xss-alert-1"] blockquote.evidence').inner_text() == XSS
    screenshot(page, "transcript-xss")
    # Phone-sized: the panels stack, the filters wrap, nothing is cut off sideways.
    page.set_viewport_size({"width": 420, "height": 900})
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    screenshot(page, "narrow")
    assert page.problems == []


def xss(field: str) -> str:
    """Markup that would set window.__xss to the field's name if the page ever parsed it."""
    return f'<img src=x onerror="window.__xss=\'{field}\'"><script>window.__xss=\'{field}\'</script><b>{field}</b>'


def test_every_free_text_field_shows_as_text_never_markup(worker_factory, producer, reader, page):
    """agent_id, queue, call_id (call row, alert, transcript header), alert title, acked_by and the
    ack note, each carrying markup: all shown as literal text, nothing runs, no element is made."""
    worker = worker_factory()
    events, alerts_topic, acks_topic = worker.topic("events"), worker.topic("alerts"), worker.topic("acks")
    acks = reader(acks_topic)
    open_dashboard(page, worker)
    call_id = xss("call_id")[:120]
    assert len(call_id) <= 128
    send(producer, events, call_id, event(call_id, "call_started", agent_id=xss("agent_id"), queue=xss("queue")))
    row = page.locator("#calls-body tr.call").first
    row.wait_for(timeout=10_000)
    assert row.get_attribute("data-call-id") == call_id
    row.click()
    alert = {
        "alert_id": "xss-fields-1", "call_id": call_id, "agent_id": xss("alert.agent_id"), "queue": xss("alert.queue"),
        "kind": "escalation", "rule_id": "manager-request", "severity": "warning", "title": xss("title"),
        "event_time": datetime.now(timezone.utc).isoformat(), "detected_at": datetime.now(timezone.utc).isoformat(),
    }
    send(producer, alerts_topic, call_id, json.dumps(alert).encode())
    item = page.locator('li.alert[data-alert-id="xss-fields-1"]')
    item.wait_for(timeout=10_000)
    ack = AlertAck(alert_id="xss-fields-1", call_id=call_id, acked_by=xss("acked_by"), note=xss("note"))
    send(producer, acks_topic, call_id, ack.to_json_bytes())
    acks.wait_for(lambda v: len(v) >= 1, timeout_s=10)
    item.locator(".acked-by").wait_for(timeout=10_000)

    assert row.locator(".call-id").inner_text() == call_id
    assert row.locator(".agent").inner_text() == xss("agent_id")
    assert row.locator(".queue").inner_text() == xss("queue")
    assert item.locator(".title").inner_text() == xss("title")
    assert item.locator(".agent").inner_text() == xss("alert.agent_id")
    assert item.locator(".queue").inner_text() == xss("alert.queue")
    assert item.locator(".call-link").inner_text() == call_id
    assert xss("acked_by") in item.locator(".acked-by").inner_text()
    assert page.locator("#transcript-call").inner_text() == call_id
    # Inert: nothing ran, no element was created from any of the text.
    assert page.evaluate("window.__xss") is None
    for region in ("#calls-body", "#alerts", "#transcript-call"):
        assert page.locator(f"{region} script, {region} img").count() == 0, region
        # The page's own <b> (agent and queue in an alert's meta line) are the only ones; the payload's <b> is text.
        assert page.locator(f"{region} b:not(.agent):not(.queue)").count() == 0, region
    screenshot(page, "fields-xss")
    assert page.problems == []


def test_page_shows_disconnected_and_resumes_after_worker_restart(worker_factory, producer, reader, page):
    worker = worker_factory()
    alerts = reader(worker.topic("alerts"))
    events = worker.topic("events")
    open_dashboard(page, worker)
    send(producer, events, "call-r", event("call-r", "call_started", agent_id="agent-3", queue="billing"))
    send(producer, events, "call-r", event("call-r", "hold_started"))
    before = alerts.wait_for(lambda v: len(v) >= 1, timeout_s=10)
    page.wait_for_selector("li.alert", timeout=5_000)

    worker.stop()
    page.wait_for_selector("#connection[data-state=disconnected]", timeout=10_000)
    assert page.locator("#banner.error").is_visible()
    assert "Disconnected" in page.locator("#banner").inner_text()
    screenshot(page, "disconnected")

    worker.start()
    page.wait_for_selector("#connection[data-state=live]", timeout=30_000)
    assert page.locator("#banner").is_hidden()
    # The new process rebuilt the view from the topics: the call is still on hold, its alerts still listed.
    page.wait_for_selector('tr[data-call-id="call-r"] .hold-timer.on', timeout=10_000)
    for alert in before:
        page.wait_for_selector(f'li.alert[data-alert-id="{alert["alert_id"]}"]', timeout=10_000)
    held = int(hold_timer(page, "call-r").get_attribute("data-seconds"))
    assert held >= 4, "the hold timer continues from the hold's start, not from the restart"
    screenshot(page, "reconnected")


def outside_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("203.0.113.1", 9))
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_token_protects_the_dashboard_but_not_metrics(worker_factory, browser):
    token = "tkn-3f9a7c2e"
    worker = worker_factory(dashboard_token=token)
    base = worker.base_url
    status, body = http_get(base + "/")
    assert status == 401 and b"/dashboard/login" in body, "the login page, not the dashboard"
    assert http_get(base + "/dashboard/api/state")[0] == 401
    assert http_get(base + "/dashboard/events")[0] == 401
    assert http_get(base + "/dashboard/api/state", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert http_get(base + "/dashboard/api/state", headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert http_get(base + "/metrics")[0] == 200, "Prometheus scrapes without the dashboard token"
    assert http_get(base + "/ready")[0] == 200
    # Safe default: the web server listens on loopback only (STREAMPROC_WEB_HOST unset).
    address = outside_address()
    if address is not None:
        with pytest.raises(OSError):
            socket.create_connection((address, worker.settings.web_port), timeout=2).close()

    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(base + "/")
        page.fill("input[name=token]", "not-it")
        page.click("button[type=submit]")
        assert page.locator(".login-error").is_visible()
        screenshot(page, "login-failed")
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.wait_for_selector("#connection[data-state=live]", timeout=15_000)
        cookie = next(c for c in context.cookies() if c["name"] == "streamproc_dashboard")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert token not in cookie["value"], "the cookie holds a derived value, not the token"
        screenshot(page, "after-login")
    finally:
        context.close()

    # A link with ?token= works once and leaves no token in the address bar.
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{base}/?token={token}")
        page.wait_for_selector("#connection[data-state=live]", timeout=15_000)
        assert page.url == base + "/"
    finally:
        context.close()


@pytest.fixture(scope="module")
def scenario_wav(tmp_path_factory):
    """A two-sided call rendered from a packaged scenario: English flite voices as a phone line
    delivers it (8 kHz μ-law), for the worker's default model, Whisper tiny.en."""
    out = tmp_path_factory.mktemp("scenario") / "angry.wav"
    subprocess.run(
        [sys.executable, "-m", "streamproc", "synth", "angry_customer", "--language", "en", "--rate", "8000",
         "--encoding", "mulaw", "--out", str(out)],
        check=True, capture_output=True, timeout=120, cwd=ROOT,
    )
    return out


#: Words of the scenario's first lines ("Good morning, billing team. How can I help?" …): readable English.
ENGLISH_WORDS = re.compile(r"\b(good|morning|billing|team|help|charged|twice|month|sorry)\b", re.I)


def test_recognised_speech_of_the_selected_call_shows_live(worker_factory, page, scenario_wav, tmp_path):
    """Real audio at real-time pace → the worker's recogniser (Whisper tiny.en) → calls.transcripts → the page."""
    worker = worker_factory()
    open_dashboard(page, worker)
    log = open(tmp_path / "replay.log", "wb")
    replay = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "replay", str(scenario_wav), "--call-id", "asr-call",
         "--broker", worker.settings.broker, "--topic-prefix", worker.settings.topic_prefix],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    try:
        row = page.locator('tr[data-call-id="asr-call"]')
        row.wait_for(timeout=15_000)
        assert "agent-cho" in row.inner_text() and "billing" in row.inner_text()
        row.click()
        # A final line: the recogniser saw an utterance end (first one ends ~3 s into the call).
        page.wait_for_selector("#transcript li.line:not(.partial)", timeout=40_000)
        assert replay.poll() is None, "the transcript shows while the call is still being played"
        lines = json.loads(http_get(worker.base_url + "/dashboard/api/state?call=asr-call")[1])["transcript"]["lines"]
        finals = [line for line in lines if line["is_final"]]
        assert finals and all(line["source"] == "asr" for line in lines), "recognised, not scripted"
        assert any(ENGLISH_WORDS.search(line["text"]) for line in finals), finals
        shown = page.locator("#transcript li.line .text").all_inner_texts()
        assert finals[0]["text"] in shown
        assert page.locator("#transcript .source-tag").count() == 0, "recognised lines carry no 'script' tag"
        page.wait_for_timeout(4_000)  # a few more lines for the screenshot
        screenshot(page, "live-transcript")
        assert page.problems == []
    finally:
        replay.terminate()
        replay.wait(10)


# --------------------------------------------------------------------------- supervisor identities


def post_json(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


#: In the page, with the page's own session cookie: what its script could do if someone edited it.
PAGE_POST_ACK = """async (body) => {
  const r = await fetch('/dashboard/api/ack', {method: 'POST', credentials: 'same-origin',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  return [r.status, await r.json()];
}"""
PAGE_FIRST_SNAPSHOT = """(url) => new Promise((resolve, reject) => {
  const source = new EventSource(url);
  source.addEventListener('snapshot', (e) => { source.close(); resolve(JSON.parse(e.data)); });
  setTimeout(() => { source.close(); reject(new Error('no snapshot')); }, 10000);
})"""


def test_each_supervisor_sees_their_queues_and_acknowledges_as_themselves(worker_factory, producer, reader, browser, tmp_path):
    from streamproc.supervisors import add_supervisor

    tokens_file = tmp_path / "supervisors.yaml"
    dana = add_supervisor(tokens_file, "Dana Park", ["billing"])
    lee = add_supervisor(tokens_file, "Lee Chen", ["sales"], team="sales floor")
    worker = worker_factory(dashboard_tokens_file=tokens_file, dashboard_token="old-shared-token")
    base = worker.base_url
    alerts, acks = reader(worker.topic("alerts")), reader(worker.topic("acks"))
    events, transcripts = worker.topic("events"), worker.topic("transcripts")
    send(producer, events, "call-b", event("call-b", "call_started", agent_id="agent-1", queue="billing"))
    send(producer, events, "call-s", event("call-s", "call_started", agent_id="agent-2", queue="sales"))
    send(producer, transcripts, "call-s", segment("call-s", "customer", 0, 0, True, "sales secret line"))
    send(producer, events, "call-b", event("call-b", "hold_started"))
    send(producer, events, "call-s", event("call-s", "hold_started"))
    emitted = alerts.wait_for(lambda v: {a["call_id"] for a in v if a["severity"] == "critical"} == {"call-b", "call-s"}, timeout_s=15)
    billing = [a for a in emitted if a["call_id"] == "call-b"]
    sales = [a for a in emitted if a["call_id"] == "call-s"]

    # The shared page token is no identity: refused once supervisors have their own tokens.
    assert http_get(base + "/dashboard/api/state", headers={"Authorization": "Bearer old-shared-token"})[0] == 401

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(base + "/")
        page.fill("input[name=token]", dana)
        page.click("button[type=submit]")
        page.wait_for_selector("#connection[data-state=live]", timeout=15_000)
        for alert in billing:
            page.wait_for_selector(f'li.alert[data-alert-id="{alert["alert_id"]}"]', timeout=10_000)
        # Dana's view: billing only, her name from the server, not editable.
        assert [r.get_attribute("data-call-id") for r in page.locator("tr[data-call-id]").all()] == ["call-b"]
        assert page.locator("#alerts li.alert").count() == len(billing)
        supervisor = page.locator("#supervisor")
        assert supervisor.input_value() == "Dana Park" and supervisor.get_attribute("readonly") is not None
        screenshot(page, "supervisor-dana")

        # Her acknowledgement carries her authenticated name.
        critical = next(a for a in billing if a["severity"] == "critical")
        page.locator(f'li.alert[data-alert-id="{critical["alert_id"]}"] .ack-button').click()
        acked = acks.wait_for(lambda v: any(a["alert_id"] == critical["alert_id"] for a in v), timeout_s=10)
        assert [a["acked_by"] for a in acked] == ["Dana Park"]
        page.locator(f'li.alert[data-alert-id="{critical["alert_id"]}"] .acked-by').wait_for(timeout=5_000)

        # Forged name, from the page itself (her cookie): refused, nothing produced.
        warning = next(a for a in billing if a["severity"] == "warning")
        status, body = page.evaluate(PAGE_POST_ACK, {"alert_id": warning["alert_id"], "acked_by": "Lee Chen"})
        assert status == 403 and "Dana Park" in body["error"]
        # Another queue's alert: refused.
        status, body = page.evaluate(PAGE_POST_ACK, {"alert_id": sales[0]["alert_id"]})
        assert status == 403 and "queue" in body["error"]
        # Another queue's call through the page's own event stream, asked for by id: not served.
        snapshot = page.evaluate(PAGE_FIRST_SNAPSHOT, "/dashboard/events?call=call-s")
        assert [c["call_id"] for c in snapshot["calls"]] == ["call-b"]
        assert {a["call_id"] for a in snapshot["alerts"]} == {"call-b"} and snapshot["transcript"] is None
        assert snapshot["viewer"] == {"name": "Dana Park", "team": None, "queues": ["billing"], "identified": True}
    finally:
        context.close()

    # Direct HTTP with Dana's token: the same limits.
    dana_auth = {"Authorization": f"Bearer {dana}"}
    state = json.loads(http_get(base + "/dashboard/api/state?call=call-s", headers=dana_auth)[1])
    assert [c["call_id"] for c in state["calls"]] == ["call-b"] and state["transcript"] is None
    assert "sales secret line" not in json.dumps(state)
    assert post_json(base + "/dashboard/api/ack", {"alert_id": sales[0]["alert_id"]}, dana_auth)[0] == 403
    assert post_json(base + "/dashboard/api/ack", {"alert_id": warning["alert_id"], "acked_by": "Lee Chen"}, dana_auth)[0] == 403

    # Lee, through a ?token= link: sales only, and sees the sales transcript.
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{base}/?token={lee}")
        page.wait_for_selector("#connection[data-state=live]", timeout=15_000)
        assert page.url == base + "/"
        page.wait_for_selector('tr[data-call-id="call-s"]', timeout=10_000)
        assert page.locator('tr[data-call-id="call-b"]').count() == 0
        page.locator('tr[data-call-id="call-s"]').click()
        expect(page.locator("#transcript li.line .text")).to_have_text(["sales secret line"], timeout=5_000)
        assert page.locator("#supervisor").input_value() == "Lee Chen"
        screenshot(page, "supervisor-lee")
    finally:
        context.close()
    assert len(acks.wait_for(lambda v: len(v) >= 1, timeout_s=1)) == 1, "the refused requests produced no ack"

    # A new token for Dana voids the old one, also for a stream that is already open: it ends, and
    # reconnecting with the old token is refused.
    import urllib.request

    stream = urllib.request.urlopen(urllib.request.Request(base + "/dashboard/events", headers=dana_auth), timeout=30)
    assert stream.readline().startswith(b"retry:")
    add_supervisor(tokens_file, "Dana Park", ["billing"])
    ended_after = 0
    while stream.readline():  # snapshot, then pings every 5 s until the server ends the stream
        ended_after += 1
        assert ended_after < 200, "the revoked stream went on"
    stream.close()
    assert http_get(base + "/dashboard/api/state", headers=dana_auth)[0] == 401

    # Tokens never reach the log, whichever way they came (form, header, ?token= link).
    log_text = worker.log_path.read_text(errors="replace")
    assert "acknowledged by Dana Park" in log_text, "the log was captured"
    assert dana not in log_text and lee not in log_text


RISK_RULES = FAST_HOLD_RULES + """
detection:
  phrases:
    - {id: manager-request, kind: escalation, category: manager_request, speaker: customer, severity: warning, phrases: [speak to your manager]}
    - {id: repeat-contact, kind: escalation, category: repeat_contact, speaker: customer, severity: info, phrases: [third time]}
  risk:
    - id: call-at-risk
      severity: warning
      threshold: 60
      weights: {hold: 30, sentiment: 20, escalation: 15, abuse: 15, repeat_contact: 15, dead_air: 10, missed_window: 5}
"""


def test_live_calls_sort_by_live_risk_score_with_its_factors(worker_factory, producer, page):
    """Below the call_at_risk threshold no alert exists: the page learns the score from calls.risk."""
    worker = worker_factory(RISK_RULES)
    events, transcripts = worker.topic("events"), worker.topic("transcripts")
    open_dashboard(page, worker)
    for call_id in ("calm", "risky"):  # "calm" started first: without a score it would sort first
        send(producer, events, call_id, event(call_id, "call_started", agent_id="agent-1", queue="support"))
    expect(page.locator("#calls-body tr.call")).to_have_count(2, timeout=10_000)
    send(producer, transcripts, "risky", segment("risky", "customer", 0, 0, True,
                                                  "this is the third time i've rung let me speak to your manager"))
    risky = page.locator('tr[data-call-id="risky"]')
    expect(risky.locator(".risk-badge")).to_have_text(re.compile(r"risk 30"), timeout=15_000)
    factors = risky.locator(".risk-factors").inner_text()
    assert "escalation 15" in factors and "repeat contact 15" in factors, factors
    assert "risk-high" not in risky.locator(".risk-badge").get_attribute("class"), "30 is below the threshold (60)"
    assert page.locator("#calls-body tr.call").first.get_attribute("data-call-id") == "risky"
    assert page.locator('tr[data-call-id="calm"] .risk-badge').count() == 0
    expect(page.locator("#alerts li.alert .kind").filter(has_text="escalation")).to_have_count(2)  # manager, repeat contact
    assert page.locator("#alerts li.alert .kind").filter(has_text="call at risk").count() == 0
    screenshot(page, "risk")
    assert page.problems == []


def test_clicking_a_finished_call_shows_its_summary(worker_factory, producer, reader, page):
    """A scripted call ends; its post-call summary (calls.summaries) shows when the call is clicked."""
    from streamproc.rules import packaged_rules_text
    from tests.integration.test_summaries import scenario_records, send_all

    worker = worker_factory(
        packaged_rules_text("default_rules.yaml"), audio_enabled="false", summary_quiet_s="2", ended_call_retention_s="600",
    )
    summaries = reader(worker.topic("summaries"))
    open_dashboard(page, worker)
    import time as _time

    send_all(producer, worker, "done-1", scenario_records("long_hold", "done-1", _time.time() - 60))
    emitted = summaries.wait_for(lambda v: any(s["call_id"] == "done-1" for s in v), timeout_s=60)
    summary = next(s for s in emitted if s["call_id"] == "done-1")
    row = page.locator('tr[data-call-id="done-1"]')
    row.locator(".summary-tag").wait_for(timeout=10_000)  # the ended call's row says its summary is ready
    assert page.locator("#summary").is_hidden()
    row.click()
    page.wait_for_selector("#summary:not([hidden])", timeout=5_000)
    figures = page.locator("#summary-figures")
    assert figures.locator('[data-field="hold"]').inner_text() == "0:20 in 1 hold, longest 0:20"
    total = int(summary["durations"]["total_s"])
    assert figures.locator('[data-field="handle-time"]').inner_text() == f"0:{total:02d}"
    assert figures.locator('[data-field="transferred"]').inner_text() == "no"
    assert page.locator("#summary-checklist").inner_text() == "no said/not-said rules"  # shipped switched off
    screenshot(page, "call-summary")
    assert page.problems == []
