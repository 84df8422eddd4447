"""The supervisor dashboard on the worker's web server: page, push stream, acknowledgements.

Wiring only. What the page shows is decided by :class:`streamproc.dashboard.CallBoard`;
this module feeds it from Kafka and serves it over HTTP:

* ``GET /``: the page (static HTML/JS/CSS from ``streamproc/data/dashboard``), or the
  login form when a token is configured and the request carries none.
* ``GET /dashboard/events``: Server-Sent Events: a snapshot, then batched changes and a
  ping every few seconds (``?call=ID`` adds that call's transcript lines).
* ``GET /dashboard/api/state``: the same snapshot as JSON. ``POST /dashboard/api/ack``:
  acknowledge an alert, which produces an :class:`~streamproc.schemas.AlertAck` to the
  acks topic; the board (on every worker) shows it when it reads it back.

The feed is a group-less aiokafka consumer assigned *all* partitions of the events,
alerts, acks and transcripts topics, so every worker's page shows every call even though
each worker's agents own only some partitions (docs/dashboard.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from importlib import resources

from aiohttp import web as aioweb
from faust import web
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from streamproc import metrics
from streamproc.dashboard import SESSION_COOKIE, BoardTopics, CallBoard, authenticate, session_value
from streamproc.exposure import check_bind
from streamproc.schemas import AlertAck
from streamproc.supervisors import Directory, Supervisor, SupervisorsFileError

from .app import app, settings
from .shared import current_rules
from .topics import acks_topic

log = logging.getLogger("streamproc.dashboard")

PING_S = 5.0  # the page declares the stream dead after ~3 missed pings
#: Transcripts are the bulk of the reading and the page shows only the last lines of a call:
#: at start, read them from this far back at most (calls, alerts and acks: the full history).
TRANSCRIPT_HISTORY_S = 900.0
COALESCE_S = 0.05  # gather a burst of changes into one message
EXPIRE_EVERY_S = 5.0

_TOKEN = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
# Per-supervisor identities (streamproc/supervisors.py). A bad file stops the worker at start
# (streamproc worker checks it first); a bad edit later keeps the last good directory.
_DIRECTORY = Directory(
    settings.dashboard_tokens_file,
    settings.dashboard_session_secret.get_secret_value().encode() if settings.dashboard_session_secret else secrets.token_bytes(32),
)
if settings.dashboard_enabled and not settings.insecure:
    # `streamproc worker` checked this already with a readable message (and logs --insecure);
    # this also covers `faust -A agents.app worker`.
    check_bind("dashboard", settings.web_host, authenticated=_DIRECTORY.enabled or bool(_TOKEN), insecure=False,
               how="STREAMPROC_DASHBOARD_TOKENS_FILE or STREAMPROC_DASHBOARD_TOKEN")
if _DIRECTORY.enabled and _TOKEN:
    log.warning("STREAMPROC_DASHBOARD_TOKEN is ignored: the supervisors tokens file gives every supervisor their own token")
_ASSETS = resources.files("streamproc.data").joinpath("dashboard")
_STATIC = {
    "app.js": "application/javascript",
    "style.css": "text/css",
}
# The page runs only its own script and never evaluates data: transcript text stays text even if escaping failed.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _asset(name: str) -> bytes:
    return _ASSETS.joinpath(name).read_bytes()


# current_rules: the page colours hold timers with the rules in force, also after a hot reload.
board = CallBoard(current_rules, BoardTopics.from_settings(settings), history_s=settings.dashboard_history_s)


class DashboardFeed:
    """Reads the five topics from ``history_s`` ago into the board and wakes the streams on change."""

    def __init__(self, board: CallBoard):
        self.board = board
        self.caught_up = False
        self._positions: dict = {}  # partition -> next offset to read, to resume after a reconnect
        self.closing = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    def ensure_started(self) -> None:
        if self._task is None and settings.dashboard_enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dashboard-feed")

    async def stop(self) -> None:
        self.closing.set()
        self._changed.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def wait_for_change(self, timeout: float) -> None:
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _notify(self) -> None:
        # Wake every waiting stream once; later waiters get a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _run(self) -> None:
        while not self.closing.is_set():
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dashboard feed failed; restarting in 2 s")
                await asyncio.sleep(2)

    async def _consume(self) -> None:
        import aiokafka

        consumer = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=None,  # no group: every worker reads every partition
            enable_auto_commit=False,
            client_id=f"{settings.app_id}-dashboard",
            fetch_max_wait_ms=100,
            **credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context),
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            # After a broker hiccup, go on where this reader stopped: reading the history again
            # would fold old events into calls that already moved on.
            await self._seek_to_history(consumer, [tp for tp in partitions if tp not in self._positions])
            for tp in partitions:
                if tp in self._positions:
                    consumer.seek(tp, self._positions[tp])
            targets = await consumer.end_offsets(partitions)
            topics = self.board.topics
            counters = {
                name: metrics.DASHBOARD_RECORDS.labels(kind)
                for name, kind in zip(topics.all(), ("events", "alerts", "acks", "transcripts", "risk", "summaries"))
            }
            last_expire = time.monotonic()
            while not self.closing.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                changed = False
                for tp, records in batches.items():
                    counters[tp.topic].inc(len(records))
                    if records:
                        self._positions[tp] = records[-1].offset + 1
                    for record in records:
                        changed |= self.board.apply(
                            record.topic, record.key, record.value, timestamp_ms=record.timestamp, partition=record.partition
                        )
                if time.monotonic() - last_expire > EXPIRE_EVERY_S:
                    changed |= self.board.expire() > 0
                    last_expire = time.monotonic()
                if not self.caught_up and all([await consumer.position(tp) >= end for tp, end in targets.items()]):
                    self.caught_up = True
                    changed = True
                    log.info("dashboard caught up: %s", self.board.stats())
                if changed:
                    self._notify()
        finally:
            await consumer.stop()

    async def _partitions(self, consumer) -> list:
        """All partitions of the five topics. Asks for all topics, never by name: a metadata
        request naming a missing topic would auto-create it with the broker's default partitions."""
        import aiokafka

        names = self.board.topics.all()
        while True:
            existing = await consumer.topics()
            if all(name in existing for name in names):
                break
            log.info("dashboard waiting for topics %s", [n for n in names if n not in existing])
            await asyncio.sleep(1)
        # They exist, so naming them is safe now. Without this the client tracks no topics and its
        # metadata requests name none: Tansu answers those with every topic, Apache Kafka with none
        # (partitions_for_topic() was empty and the board read nothing on Kafka).
        consumer._client.set_topics(names)
        await consumer._client.force_metadata_update()
        return [
            aiokafka.TopicPartition(name, partition)
            for name in names
            for partition in sorted(consumer.partitions_for_topic(name) or ())
        ]

    async def _seek_to_history(self, consumer, partitions) -> None:
        if not partitions:
            return
        now = time.time()

        def since_ms(tp) -> int:
            window = self.board.history_s
            if tp.topic == self.board.topics.transcripts:
                window = min(window, TRANSCRIPT_HISTORY_S)
            return int((now - window) * 1000)

        found = await consumer.offsets_for_times({tp: since_ms(tp) for tp in partitions})
        for tp in partitions:
            hit = found.get(tp)
            if hit is None:
                await consumer.seek_to_end(tp)  # nothing that recent in this partition
            else:
                consumer.seek(tp, hit.offset)


feed = DashboardFeed(board)


@app.task
async def start_dashboard_feed() -> None:
    feed.ensure_started()


@app.on_before_shutdown.connect
async def stop_dashboard_feed(sender, **kwargs) -> None:
    await feed.stop()


# --------------------------------------------------------------------------- HTTP


def _viewer(request: web.Request) -> Supervisor | None:
    """The authenticated supervisor (ANONYMOUS without identities), or None."""
    try:
        _DIRECTORY.refresh()
    except SupervisorsFileError as exc:
        log.error("supervisors tokens file not reloaded, keeping the previous one: %s", exc)
    return authenticate(
        _TOKEN,
        _DIRECTORY,
        authorization=request.headers.get("Authorization"),
        cookie=request.cookies.get(SESSION_COOKIE),
        query_token=request.query.get("token"),
    )


def _session_cookie(token: str) -> str:
    return _DIRECTORY.session_for(token) if _DIRECTORY.enabled else session_value(_TOKEN or "")


def _needs_login() -> bool:
    return _DIRECTORY.enabled or bool(_TOKEN)


def _unauthorized() -> aioweb.Response:
    return aioweb.json_response(
        {"error": "unauthorized", "detail": "send Authorization: Bearer <token>, or log in at /"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="streamproc"', **_SECURITY_HEADERS},
    )


def _not_enabled() -> aioweb.Response:
    return aioweb.json_response({"error": "the dashboard is disabled (STREAMPROC_DASHBOARD_ENABLED=false)"}, status=404)


def _with_session(response: aioweb.StreamResponse, request: web.Request, token: str) -> aioweb.StreamResponse:
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    response.set_cookie(
        SESSION_COOKIE, _session_cookie(token), httponly=True, samesite="Strict", path="/", secure=secure
    )
    return response


def _html(body: bytes, status: int = 200) -> aioweb.Response:
    return aioweb.Response(body=body, status=status, content_type="text/html", charset="utf-8", headers=_SECURITY_HEADERS)


def _see_other(location: str) -> aioweb.Response:
    return aioweb.Response(status=303, headers={"Location": location, **_SECURITY_HEADERS})


def _login_page(failed: bool = False, status: int = 401) -> aioweb.Response:
    page = _asset("login.html")
    if failed:
        page = page.replace(b"<!--status-->", b'<p class="login-error" role="alert">That token is not valid.</p>')
    return _html(page, status)


def _state(call_id: str | None, viewer: Supervisor) -> dict:
    return board.snapshot(call_id, viewer=viewer) | {
        "feed": {"caught_up": feed.caught_up, "worker": settings.app_id},
        "viewer": viewer.view() | {"identified": viewer.name is not None},
    }


@app.page("/")
async def dashboard_index(self: web.View, request: web.Request) -> web.Response:
    if not settings.dashboard_enabled:
        return _not_enabled()
    feed.ensure_started()
    if _viewer(request) is None:
        return _login_page()
    if _needs_login() and request.query.get("token"):
        # Trade the token in the URL for the session cookie and drop it from the address bar.
        return _with_session(_see_other("/"), request, request.query["token"])
    return _html(_asset("index.html"))


class DashboardLogin(web.View):
    async def get(self, request: web.Request) -> web.Response:
        return _login_page(status=200)

    async def post(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", ""))
        if not _needs_login() or authenticate(_TOKEN, _DIRECTORY, query_token=token) is not None:
            return _with_session(_see_other("/"), request, token)
        return _login_page(failed=True)


app.page("/dashboard/login")(DashboardLogin)


def _static_page(name: str, content_type: str):
    async def serve(self: web.View, request: web.Request) -> web.Response:
        # Public: the login page needs them, and they hold no data.
        return aioweb.Response(body=_asset(name), content_type=content_type, charset="utf-8", headers=_SECURITY_HEADERS)

    serve.__name__ = f"dashboard_static_{name.replace('.', '_')}"
    app.page(f"/dashboard/{name}")(serve)


for _name, _type in _STATIC.items():
    _static_page(_name, _type)


@app.page("/dashboard/api/state")
async def dashboard_state(self: web.View, request: web.Request) -> web.Response:
    if not settings.dashboard_enabled:
        return _not_enabled()
    viewer = _viewer(request)
    if viewer is None:
        return _unauthorized()
    feed.ensure_started()
    return aioweb.json_response(_state(request.query.get("call") or None, viewer), headers=_SECURITY_HEADERS)


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode("utf-8")


@app.page("/dashboard/events")
async def dashboard_events(self: web.View, request: web.Request) -> aioweb.StreamResponse:
    if not settings.dashboard_enabled:
        return _not_enabled()
    viewer = _viewer(request)
    if viewer is None:
        return _unauthorized()
    feed.ensure_started()
    call_id = request.query.get("call") or None
    response = aioweb.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no", **_SECURITY_HEADERS},
    )
    await response.prepare(request)
    metrics.DASHBOARD_CLIENTS.inc()
    try:
        await response.write(b"retry: 1000\n\n")
        state = _state(call_id, viewer)
        seq = state["seq"]
        await response.write(_sse("snapshot", state))
        last_write = last_check = time.monotonic()
        while not feed.closing.is_set():
            if board.seq == seq:  # changes made while we were writing are sent without waiting
                await feed.wait_for_change(PING_S)
            if feed.closing.is_set():
                break
            await asyncio.sleep(COALESCE_S)
            changes = board.changes_since(seq, call_id, viewer)
            if changes is None:  # fell behind the change ring: start over from a snapshot
                state = _state(call_id, viewer)
                seq = state["seq"]
                await response.write(_sse("snapshot", state))
                last_write = time.monotonic()
                continue
            seq = board.seq
            if not changes and time.monotonic() - last_write < PING_S:
                continue  # only other calls' transcript lines: nothing for this page yet
            if _DIRECTORY.enabled and time.monotonic() - last_check >= PING_S:
                last_check = time.monotonic()
                if _viewer(request) != viewer:
                    break  # token revoked or queues changed in the tokens file: the page reconnects with the new rights
            meta = {"seq": seq, "server_time": time.time(), "caught_up": feed.caught_up}
            await response.write(_sse("changes", meta | {"changes": changes}) if changes else _sse("ping", meta))
            last_write = time.monotonic()
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        metrics.DASHBOARD_CLIENTS.dec()
    return response


class DashboardAck(web.View):
    async def post(self, request: web.Request) -> web.Response:
        if not settings.dashboard_enabled:
            return _not_enabled()
        viewer = _viewer(request)
        if viewer is None:
            return _unauthorized()
        # JSON only: a cross-site form cannot send it without a CORS preflight, which this server never grants.
        if request.content_type != "application/json":
            return aioweb.json_response({"error": "send application/json"}, status=415)
        try:
            body = await request.json()
        except ValueError:
            return aioweb.json_response({"error": "body is not valid JSON"}, status=400)
        if not isinstance(body, dict):
            return aioweb.json_response({"error": "body must be a JSON object"}, status=400)
        alert = board.alert(str(body.get("alert_id", "")))
        if alert is None:
            return aioweb.json_response({"error": f"unknown alert {body.get('alert_id')!r}"}, status=404)
        if not viewer.may_see(board.alert_queue(alert["alert_id"])):
            log.warning("%s tried to acknowledge alert %s of a queue they may not see", viewer.name, alert["alert_id"])
            return aioweb.json_response({"error": "this alert is in a queue you may not see"}, status=403)
        acked_by = body.get("acked_by")
        if viewer.name is not None:
            # The name comes from the token: a request naming someone else is refused, not rewritten.
            if acked_by not in (None, "", viewer.name):
                log.warning("%s sent an acknowledgement naming %r: refused", viewer.name, acked_by)
                return aioweb.json_response(
                    {"error": f"acked_by is set from your token ({viewer.name}); leave it out"}, status=403
                )
            acked_by = viewer.name
        try:
            ack = AlertAck(alert_id=alert["alert_id"], call_id=alert["call_id"], acked_by=acked_by, note=body.get("note"))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
            return aioweb.json_response({"error": problems}, status=400)
        # Same partition as the alert, which shares the call's partition number.
        delivered = await acks_topic.send(
            key=ack.call_id.encode(), value=ack.to_json_bytes(), partition=board.alert_partition(ack.alert_id)
        )
        await delivered
        log.info("alert %s acknowledged by %s", ack.alert_id, ack.acked_by)
        return aioweb.json_response(ack.model_dump(mode="json"), status=202, headers=_SECURITY_HEADERS)


app.page("/dashboard/api/ack")(DashboardAck)
