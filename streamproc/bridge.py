"""Telephony media-stream bridge: a WebSocket server speaking the Twilio Media Streams protocol.

One WebSocket connection carries one call: ``connected`` → ``start`` (call and stream ids,
media format, custom parameters) → ``media`` (base64 G.711 μ-law 8 kHz, 20 ms each, with
``sequenceNumber``) … ``mark`` … → ``stop``. The bridge turns it into:

- call events on ``calls.events`` (``call_started`` on start, ``call_ended`` with a reason
  when the stream ends for any reason), key = call id;
- audio frames on ``calls.audio``: the μ-law bytes re-chunked into ``chunk_ms`` frames per
  track (inbound = customer, outbound = agent by default) with AudioFrameMeta headers.

Authentication (docs/bridge.md): with ``twilio_auth_token`` set, the handshake must carry a valid
``X-Twilio-Signature`` (Twilio's HMAC-SHA1 of the URL it connected to, checked with the official
``twilio`` package's ``RequestValidator``); a wrong one is refused with HTTP 403 and counted in
``streamproc_bridge_rejected_total{reason}``. A connection without the header may still present
``token`` (``Authorization: Bearer`` or ``customParameters.token``) for media forks that cannot sign.

Protection: messages over ``max_message_bytes`` are refused by the WebSocket layer; anything
that is not the protocol (bad JSON, unknown event, media before start, bad base64, wrong
encoding), a sequence number other than the previous + 1, audio arriving much faster than
real time (flood), or a broker too slow to take frames within ``send_timeout_s``
(backpressure: while the per-connection queue is full the bridge stops reading, so TCP
pushes back on the client) closes the connection cleanly with a WebSocket close code and
ends the call with ``call_ended`` carrying the reason. docs/bridge.md tells how to point
Twilio, FreeSWITCH or Asterisk at it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import binascii
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Awaitable, Callable

from pydantic import BaseModel, ConfigDict, Field

from . import metrics
from .replay import Outgoing
from .schemas import AudioEncoding, AudioFrameMeta, AudioLayout, CallEnded, CallStarted, Speaker, utcnow

log = logging.getLogger("streamproc.bridge")

MULAW_SILENCE = b"\xff"
BYTES_PER_MS = 8  # μ-law, 8 kHz, mono
MIN_FRAME_MS = 20

# WebSocket close codes (RFC 6455)
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_UNSUPPORTED, CLOSE_POLICY, CLOSE_TRY_LATER = 1000, 1001, 1003, 1008, 1013


class BridgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: str | None = Field(None, description="Bearer token (header) or customParameters.token (forks that cannot sign).")
    twilio_auth_token: str | None = Field(None, description="Validate X-Twilio-Signature (HMAC-SHA1 of the URL) with it.")
    public_url: str | None = Field(
        None, description="wss://host[:port] Twilio connects to when a TLS proxy is in front; the request path is appended."
    )
    chunk_ms: int = Field(250, ge=MIN_FRAME_MS, le=1000)
    max_message_bytes: int = Field(64 * 1024, ge=1024)
    max_media_ms: int = Field(1000, ge=20, description="Largest audio payload in one media message.")
    queue_frames: int = Field(64, ge=1, description="Bounded per-connection queue of messages waiting for Kafka.")
    send_timeout_s: float = Field(5.0, gt=0, description="Longest wait for queue space before closing (backpressure).")
    flood_factor: float = Field(3.0, gt=0, description="Audio may arrive at most this many times faster than real time…")
    flood_burst_ms: int = Field(5000, ge=0, description="…plus this much audio ahead of the wall clock (jitter buffers).")
    max_messages_per_s: int = Field(500, ge=1, description="All messages, averaged over a second.")
    idle_timeout_s: float = Field(30.0, gt=0)
    max_connections: int = Field(500, ge=1)
    inbound_speaker: Speaker = Speaker.customer
    call_events: bool = Field(True, description="Emit call_started/call_ended (off when a CTI feed sends call events).")
    default_agent_id: str = "unassigned"
    default_queue: str = "telephony"
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Serve Prometheus /metrics on this port (same host).")
    insecure: bool = Field(False, description="Allow a non-loopback host without token or signature validation (logged).")

    def check_exposure(self) -> None:
        """Refuse a non-loopback bind without authentication (streamproc.exposure)."""
        from .exposure import check_bind

        check_bind("media bridge", self.host, authenticated=bool(self.token or self.twilio_auth_token),
                   insecure=self.insecure, how="STREAMPROC_TWILIO_AUTH_TOKEN (signature validation) or STREAMPROC_BRIDGE_TOKEN")


class CloseCall(Exception):
    """End this connection: WebSocket close ``code`` and the call_ended ``reason``."""

    def __init__(self, code: int, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.code, self.reason, self.detail = code, reason, detail


Sink = Callable[[Outgoing], Awaitable[None]]


@dataclass
class _Track:
    stream: str
    speaker: Speaker
    buffer: bytearray = field(default_factory=bytearray)
    seq: int = 0
    sent_ms: int = 0
    received_ms: float = 0.0


def _is_mulaw_8k_mono(media_format: dict) -> bool:
    encoding = str(media_format.get("encoding", "audio/x-mulaw")).lower()
    try:
        rate, channels = int(media_format.get("sampleRate", 8000)), int(media_format.get("channels", 1))
    except (TypeError, ValueError):
        return False
    return encoding in ("audio/x-mulaw", "audio/mulaw", "audio/pcmu") and rate == 8000 and channels == 1


class CallSession:
    """Protocol state of one connection; pure (no I/O): ``handle`` returns the messages to send."""

    def __init__(self, config: BridgeConfig, *, authorized: bool, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.authorized = authorized
        self.clock = clock
        self.call_id: str | None = None
        self.stream_sid: str | None = None
        self.expected_seq: int | None = None
        self.tracks: dict[str, _Track] = {}
        self.started_at: float | None = None
        self.ended = False
        self.window_start = clock()
        self.window_count = 0

    # ---------------------------------------------------------------- messages in

    def handle(self, raw: str | bytes) -> list[Outgoing]:
        self._rate_limit()
        if isinstance(raw, bytes):
            raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", "binary message; the protocol is JSON text")
        try:
            message = json.loads(raw)
        except ValueError:
            raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", "message is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", "message has no 'event'")
        kind = message["event"]
        if kind == "connected":
            return []
        self._check_sequence(message)
        if kind == "start":
            return self._start(message)
        if self.call_id is None:
            raise CloseCall(CLOSE_POLICY, "protocol_error", f"'{kind}' before 'start'")
        if kind == "media":
            return self._media(message)
        if kind in ("mark", "dtmf"):
            return []
        if kind == "stop":
            return self.finish("completed")
        raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", f"unknown event {kind!r}")

    def _rate_limit(self) -> None:
        now = self.clock()
        if now - self.window_start >= 1.0:
            self.window_start, self.window_count = now, 0
        self.window_count += 1
        if self.window_count > self.config.max_messages_per_s:
            raise CloseCall(CLOSE_POLICY, "flood", f"more than {self.config.max_messages_per_s} messages a second")

    def _check_sequence(self, message: dict) -> None:
        raw = message.get("sequenceNumber")
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise CloseCall(CLOSE_POLICY, "protocol_error", f"missing or bad sequenceNumber {raw!r}") from None
        if self.expected_seq is not None and number != self.expected_seq:
            raise CloseCall(CLOSE_POLICY, "bad_sequence", f"sequenceNumber {number}, expected {self.expected_seq}")
        self.expected_seq = number + 1

    def _start(self, message: dict) -> list[Outgoing]:
        if self.call_id is not None:
            raise CloseCall(CLOSE_POLICY, "protocol_error", "second 'start' on one stream")
        start = message.get("start")
        if not isinstance(start, dict):
            raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", "'start' without a start object")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", "customParameters must be an object")
        if not self.authorized:
            token = params.get("token")
            if not (isinstance(token, str) and self.config.token and hmac.compare_digest(token.encode(), self.config.token.encode())):
                raise CloseCall(CLOSE_POLICY, "unauthorized", "missing or wrong token")
            self.authorized = True
        media_format = start.get("mediaFormat") or {}
        if not isinstance(media_format, dict) or not _is_mulaw_8k_mono(media_format):
            raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", f"unsupported media format {str(media_format)[:60]}; μ-law 8 kHz mono only")
        call_id = str(params.get("call_id") or start.get("callSid") or message.get("streamSid") or "").strip()
        if not call_id or len(call_id) > 128:
            raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", "no usable call id (callSid or customParameters.call_id)")
        self.call_id = call_id
        self.stream_sid = str(start.get("streamSid") or message.get("streamSid") or "")
        self.started_at = self.clock()
        out_speaker = Speaker.agent if self.config.inbound_speaker is Speaker.customer else Speaker.customer
        self.tracks = {"inbound": _Track("inbound", self.config.inbound_speaker), "outbound": _Track("outbound", out_speaker)}
        if not self.config.call_events:
            return []
        event = CallStarted(
            call_id=call_id,
            ts=utcnow(),
            agent_id=str(params.get("agent_id") or self.config.default_agent_id)[:128],
            queue=str(params.get("queue") or self.config.default_queue)[:128],
            customer_id=str(params["customer_id"])[:128] if params.get("customer_id") else None,
            direction="outbound" if params.get("direction") == "outbound" else "inbound",
        )
        return [Outgoing("events", call_id.encode(), event.to_json_bytes())]

    def _media(self, message: dict) -> list[Outgoing]:
        media = message.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", "media without a payload")
        track = self.tracks.get(str(media.get("track", "inbound")))
        if track is None:
            raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", f"unknown track {media.get('track')!r}")
        if len(media["payload"]) > self.config.max_media_ms * BYTES_PER_MS * 4 // 3 + 4:
            raise CloseCall(CLOSE_POLICY, "protocol_error", f"media payload longer than {self.config.max_media_ms} ms")
        try:
            audio = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, ValueError):
            raise CloseCall(CLOSE_UNSUPPORTED, "protocol_error", "media payload is not base64") from None
        # Flood: a live call cannot deliver a track's audio much faster than it is spoken.
        track.received_ms += len(audio) / BYTES_PER_MS
        elapsed_ms = (self.clock() - self.started_at) * 1000
        if track.received_ms > elapsed_ms * self.config.flood_factor + self.config.flood_burst_ms:
            raise CloseCall(CLOSE_POLICY, "flood", f"{track.received_ms:.0f} ms of {track.stream} audio in {elapsed_ms:.0f} ms")
        track.buffer.extend(audio)
        return self._frames(track, final=False)

    def _frames(self, track: _Track, *, final: bool) -> list[Outgoing]:
        size = self.config.chunk_ms * BYTES_PER_MS
        out = []
        while len(track.buffer) >= size or (final and track.buffer):
            piece = bytes(track.buffer[:size])
            del track.buffer[:size]
            if len(piece) < MIN_FRAME_MS * BYTES_PER_MS:  # the stream's last scrap: pad to a valid frame
                piece += MULAW_SILENCE * (MIN_FRAME_MS * BYTES_PER_MS - len(piece))
            meta = AudioFrameMeta(
                encoding=AudioEncoding.mulaw, rate=8000, channels=1, layout=AudioLayout.mono, speaker=track.speaker,
                stream=track.stream, seq=track.seq, offset_ms=track.sent_ms, sent_at_ms=int(time.time() * 1000),
            )
            track.seq += 1
            track.sent_ms += len(piece) // BYTES_PER_MS
            out.append(Outgoing("audio", self.call_id.encode(), piece, meta.to_headers()))
        return out

    def finish(self, reason: str) -> list[Outgoing]:
        """Flush buffered audio and end the call (once). Empty before ``start``: there is no call."""
        if self.ended or self.call_id is None:
            self.ended = True
            return []
        self.ended = True
        out = [frame for track in self.tracks.values() for frame in self._frames(track, final=True)]
        if self.config.call_events:
            event = CallEnded(call_id=self.call_id, ts=utcnow(), reason=reason[:256])
            out.append(Outgoing("events", self.call_id.encode(), event.to_json_bytes()))
        return out


# --------------------------------------------------------------------------- server


class Bridge:
    """The WebSocket server. ``sink`` delivers messages to Kafka (see :func:`kafka_sink`)."""

    def __init__(self, config: BridgeConfig, sink: Sink):
        self.config = config
        self.sink = sink
        self.active = 0
        self.server = None
        self.shutting_down = False
        self.closed_reasons: collections.deque[str] = collections.deque(maxlen=1000)  # recent ends, for tests and debugging

    def signed_url(self, request) -> str:
        """The URL Twilio signed: its origin (``public_url`` behind a TLS proxy, else wss:// + the Host
        header) followed by the request path and query exactly as received."""
        origin = self.config.public_url or f"wss://{request.headers.get('Host', '')}"
        return origin.rstrip("/") + request.path

    def _signature(self, request) -> bool | None:
        """True/False when Twilio validation is on and the handshake is signed, None when unsigned or off."""
        if not self.config.twilio_auth_token:
            return None
        signature = request.headers.get("X-Twilio-Signature")
        if signature is None:
            return None
        from twilio.request_validator import RequestValidator

        # No body on a WebSocket upgrade: the signature covers the URL alone (query included).
        return RequestValidator(self.config.twilio_auth_token).validate(self.signed_url(request), {}, signature)

    def _authorized_by_header(self, request) -> bool | None:
        """True/False when an Authorization header is present, None when absent (token may come in 'start')."""
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and bool(self.config.token) and hmac.compare_digest(value.strip().encode(), self.config.token.encode())

    def _process_request(self, connection, request):
        if self.active >= self.config.max_connections:
            metrics.BRIDGE_CLOSES.labels(reason="too_many_connections").inc()
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        signed = self._signature(request)
        if signed is False:
            return self._reject(connection, HTTPStatus.FORBIDDEN, "bad_signature",
                                "X-Twilio-Signature does not match this URL and the auth token\n")
        if signed is None and self.config.twilio_auth_token and not self.config.token:
            return self._reject(connection, HTTPStatus.FORBIDDEN, "missing_signature",
                                "X-Twilio-Signature required (TWILIO auth token validation is on)\n")
        if signed is None and self.config.token and self._authorized_by_header(request) is False:
            return self._reject(connection, HTTPStatus.UNAUTHORIZED, "bad_token", "bad token\n")
        return None

    @staticmethod
    def _reject(connection, status: HTTPStatus, reason: str, body: str):
        metrics.BRIDGE_REJECTED.labels(reason=reason).inc()
        metrics.BRIDGE_CLOSES.labels(reason="unauthorized").inc()
        log.warning("bridge refused a connection from %s: %s", connection.remote_address[0] if connection.remote_address else "?", reason)
        return connection.respond(status, body)

    async def handler(self, websocket) -> None:
        request = websocket.request
        open_access = not self.config.token and not self.config.twilio_auth_token
        authorized = open_access or bool(self._signature(request)) or bool(self._authorized_by_header(request))
        session = CallSession(self.config, authorized=authorized)
        queue: asyncio.Queue[Outgoing | None] = asyncio.Queue(self.config.queue_frames)
        sender = asyncio.create_task(self._drain(queue))
        self.active += 1
        metrics.BRIDGE_CONNECTIONS.inc()
        code, reason, detail = CLOSE_NORMAL, "completed", ""
        try:
            while not session.ended:
                try:
                    raw = await asyncio.wait_for(websocket.recv(), self.config.idle_timeout_s)
                except asyncio.TimeoutError:
                    raise CloseCall(CLOSE_GOING_AWAY, "idle_timeout", f"no message for {self.config.idle_timeout_s:.0f}s") from None
                for outgoing in session.handle(raw):
                    await self._enqueue(queue, outgoing, sender)
        except CloseCall as exc:
            code, reason, detail = exc.code, exc.reason, exc.detail
            if reason == "unauthorized":
                metrics.BRIDGE_REJECTED.labels(reason="bad_token").inc()
        except Exception as exc:  # ConnectionClosed (abrupt disconnect), oversized message, …
            from websockets.exceptions import ConnectionClosed

            if isinstance(exc, ConnectionClosed):
                code, reason = CLOSE_NORMAL, "bridge_shutdown" if self.shutting_down else "disconnected"
                if exc.rcvd is not None and exc.rcvd.code == 1009 or exc.sent is not None and exc.sent.code == 1009:
                    reason, detail = "message_too_big", f"a message over {self.config.max_message_bytes} bytes"
            else:
                log.exception("bridge connection failed")
                code, reason, detail = 1011, "bridge_error", type(exc).__name__
        finally:
            self.active -= 1
            metrics.BRIDGE_CONNECTIONS.dec()
        # End the call: flush audio and call_ended, waiting for the broker (bounded), then close.
        final = session.finish(reason)
        try:
            if sender.done():
                raise asyncio.TimeoutError
            for outgoing in final:
                await asyncio.wait_for(queue.put(outgoing), self.config.send_timeout_s)
            await asyncio.wait_for(queue.put(None), self.config.send_timeout_s)
            await asyncio.wait_for(sender, self.config.send_timeout_s * 2)
        except asyncio.TimeoutError:
            sender.cancel()
            log.error("call %s: Kafka is not taking messages, could not deliver the end of the call", session.call_id)
        self.closed_reasons.append(reason)
        metrics.BRIDGE_CLOSES.labels(reason=reason).inc()
        if session.call_id:
            log.info("call %s ended: %s %s", session.call_id, reason, detail)
        # Keep reading (and dropping) while the close handshake runs: a client that is still
        # sending would otherwise sit behind our paused reader and never see our close frame.
        discard = asyncio.create_task(self._discard(websocket))
        try:
            await websocket.close(code, f"{reason}: {detail}"[:120] if detail else reason)
        finally:
            discard.cancel()

    @staticmethod
    async def _discard(websocket) -> None:
        try:
            async for _ in websocket:
                pass
        except Exception:
            pass

    async def _enqueue(self, queue: asyncio.Queue, outgoing: Outgoing, sender: asyncio.Task) -> None:
        if sender.done():  # delivery failed (logged by _drain): nothing would ever take from the queue
            raise CloseCall(1011, "bridge_error", "delivery to Kafka failed")
        try:
            await asyncio.wait_for(queue.put(outgoing), self.config.send_timeout_s)
        except asyncio.TimeoutError:
            raise CloseCall(CLOSE_TRY_LATER, "backpressure", f"broker did not take audio for {self.config.send_timeout_s:.0f}s") from None

    async def _drain(self, queue: asyncio.Queue) -> None:
        try:
            while (outgoing := await queue.get()) is not None:
                await self.sink(outgoing)
                if outgoing.topic_kind == "audio":
                    metrics.BRIDGE_FRAMES.inc()
        except Exception:
            log.exception("bridge: delivering to Kafka failed")
            raise

    async def start(self):
        from websockets.asyncio.server import serve

        self.config.check_exposure()
        self.server = await serve(
            self.handler, self.config.host, self.config.port,
            process_request=self._process_request, max_size=self.config.max_message_bytes,
            max_queue=4, compression=None,
        )
        self.config.port = self.server.sockets[0].getsockname()[1]
        return self.server

    async def serve_forever(self, stop: asyncio.Event | None = None) -> None:
        await self.start()
        try:
            await (stop.wait() if stop else asyncio.Future())
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        self.shutting_down = True
        self.server.close()  # closes connections: each handler still ends its call (reason bridge_shutdown)
        await self.server.wait_closed()


def kafka_sink(producer, settings) -> Sink:
    """Deliver with a kafka-python producer from the default executor (its send may block when its buffer is full)."""
    topics = {kind: settings.topic(kind) for kind in ("events", "audio")}

    async def send(outgoing: Outgoing) -> None:
        loop = asyncio.get_running_loop()
        future = await loop.run_in_executor(
            None, lambda: producer.send(topics[outgoing.topic_kind], key=outgoing.key, value=outgoing.value, headers=outgoing.headers)
        )
        if outgoing.topic_kind == "events":  # call events are few and matter: wait for the broker's ack
            await loop.run_in_executor(None, future.get, 30)

    return send


def run(config: BridgeConfig, settings, on_ready: Callable[[BridgeConfig], Any] | None = None) -> None:
    """Run the bridge until SIGINT/SIGTERM (``streamproc bridge``)."""
    import signal

    from kafka import KafkaProducer

    from .kafka_admin import client_security, ensure_topics

    config.check_exposure()  # before touching Kafka: a refused start has no side effects
    ensure_topics(settings)
    if config.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(config.metrics_port, addr=config.host)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5, **client_security(settings))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        bridge = Bridge(config, kafka_sink(producer, settings))
        await bridge.start()
        if on_ready:
            on_ready(config)
        try:
            await stop.wait()
        finally:
            await bridge.shutdown()

    try:
        asyncio.run(main())
    finally:
        producer.flush(10)
        producer.close(10)
