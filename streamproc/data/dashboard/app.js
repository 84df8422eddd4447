// streamproc supervisor dashboard. Plain JS, no build step.
// Data arrives over Server-Sent Events from /dashboard/events: a "snapshot", then "changes"
// batches and a "ping" every few seconds. Every piece of text from the wire is put on the page
// with textContent, never innerHTML: transcript and alert text cannot become markup.
"use strict";

(function () {
  const PING_S = 5;
  const STALE_AFTER_MS = 3 * PING_S * 1000 + 1000; // three missed pings: the stream is dead
  const MAX_ALERTS_SHOWN = 200;
  const FRESH_S = 5; // a new alert is outlined this long
  const SEVERITY_RANK = { info: 0, warning: 1, critical: 2 };
  const KIND_LABEL = {
    hold_breach: "hold breach", cumulative_hold: "cumulative hold", repeated_hold: "repeated hold",
    rude_phrase: "rude phrase", customer_abuse: "customer abuse", escalation: "escalation",
    negative_sentiment: "negative sentiment", raised_voice: "raised voice", dead_air: "dead air", crosstalk: "crosstalk",
    missed_phrase: "not said in time", window_phrase: "said too early", call_at_risk: "call at risk",
  };

  const state = {
    calls: new Map(),
    alerts: new Map(),
    transcript: new Map(),
    summary: null, // post-call summary of the selected call (calls.summaries), once the call is over
    selected: null,
    skew: 0, // server clock minus browser clock, seconds
    lastMessageAt: 0,
    live: false,
    caughtUp: false,
    pendingAcks: new Set(),
    freshAlerts: new Set(),
    identity: null, // {name, team, queues} when the server knows who this supervisor is (tokens file)
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };
  const serverNow = () => Date.now() / 1000 + state.skew;

  // ------------------------------------------------------------------ formatting

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }
  function clock(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour12: false });
  }
  function holdSeverity(call, held) {
    let worst = null;
    for (const t of call.hold_thresholds || []) {
      if (held >= t.after_s && (worst === null || SEVERITY_RANK[t.severity] > SEVERITY_RANK[worst])) worst = t.severity;
    }
    return worst;
  }
  function nextThreshold(call, held) {
    return (call.hold_thresholds || []).find((t) => held < t.after_s) || null;
  }

  // ------------------------------------------------------------------ filters

  const filters = { queue: "", agent: "", severity: "" };
  function callVisible(call) {
    return (!filters.queue || call.queue === filters.queue) && (!filters.agent || call.agent_id === filters.agent);
  }
  function alertVisible(alert) {
    if (filters.queue && alert.queue !== filters.queue) return false;
    if (filters.agent && alert.agent_id !== filters.agent) return false;
    if (filters.severity && SEVERITY_RANK[alert.severity] < SEVERITY_RANK[filters.severity]) return false;
    return true;
  }
  function refreshOptions(select, values) {
    const current = select.value;
    const wanted = ["", ...[...values].filter(Boolean).sort()];
    const have = [...select.options].map((o) => o.value);
    if (wanted.length === have.length && wanted.every((v, i) => v === have[i])) return;
    select.replaceChildren(...wanted.map((v) => {
      const option = el("option", null, v || "all");
      option.value = v;
      return option;
    }));
    if (current && !wanted.includes(current)) {
      const option = el("option", null, current);
      option.value = current;
      select.append(option);
    }
    select.value = current;
  }
  function refreshFilterOptions() {
    const queues = new Set(), agents = new Set();
    for (const c of state.calls.values()) { queues.add(c.queue); agents.add(c.agent_id); }
    for (const a of state.alerts.values()) { queues.add(a.queue); agents.add(a.agent_id); }
    refreshOptions($("filter-queue"), queues);
    refreshOptions($("filter-agent"), agents);
  }

  // ------------------------------------------------------------------ rendering

  function renderCalls() {
    const calls = [...state.calls.values()].filter(callVisible);
    calls.sort((a, b) => {
      const rank = (c) => (c.status === "on_hold" ? 0 : c.status === "active" ? 1 : 2);
      const ended = (c) => (c.status === "ended" ? 1 : 0);
      // riskiest live calls first (live call risk score from calls.risk), then on hold, then by time
      return ended(a) - ended(b) || (b.risk || 0) - (a.risk || 0) || rank(a) - rank(b) ||
        (a.hold_started_at || a.started_at) - (b.hold_started_at || b.started_at);
    });
    const rows = calls.map((call) => {
      const row = el("tr", `call status-${call.status}`);
      row.dataset.callId = call.call_id;
      if (call.call_id === state.selected) row.classList.add("selected");
      row.tabIndex = 0;
      row.append(el("td", "call-id", call.call_id), el("td", "agent", call.agent_id), el("td", "queue", call.queue));
      const label = call.status === "on_hold" ? `on hold #${call.hold_count}` : call.status === "ended" ? "ended" : "talking";
      const stateCell = el("td", "state", label);
      if (call.risk != null && call.risk > 0) {
        const high = call.risk_threshold != null && call.risk >= call.risk_threshold;
        const badge = el("span", high ? "risk-badge risk-high" : "risk-badge", ` risk ${Math.round(call.risk)}`);
        // the factors behind the score, largest first: what the supervisor would be walking into
        const factors = Object.entries(call.risk_factors || {}).sort((x, y) => y[1] - x[1]);
        badge.title = `call risk score (0-100)${call.risk_threshold != null ? `, alert at ${call.risk_threshold}` : ""}`;
        stateCell.append(badge);
        if (factors.length) {
          stateCell.append(el("span", "risk-factors muted", ` ${factors.map(([k, v]) => `${k.replace("_", " ")} ${Math.round(v)}`).join(" · ")}`));
        }
      }
      if (call.has_summary) {
        const tag = el("span", "summary-tag", " summary");
        tag.title = "the post-call summary is ready: click the call";
        stateCell.append(tag);
      }
      row.append(stateCell);
      const dur = el("td", "duration");
      dur.dataset.field = "duration";
      row.append(dur);
      const hold = el("td", "hold");
      const timer = el("span", "hold-timer");
      hold.append(timer);
      const next = el("span", "hold-next muted");
      hold.append(next);
      row.append(hold);
      row.addEventListener("click", () => select(call.call_id));
      row.addEventListener("keydown", (e) => { if (e.key === "Enter") select(call.call_id); });
      return row;
    });
    $("calls-body").replaceChildren(...rows);
    $("calls-count").textContent = String(calls.filter((c) => c.status !== "ended").length);
    $("calls-empty").hidden = rows.length > 0;
    tick();
  }

  // Runs 4 times a second: the duration and on-hold timers count up between server messages.
  function tick() {
    const now = serverNow();
    for (const row of $("calls-body").children) {
      const call = state.calls.get(row.dataset.callId);
      if (!call) continue;
      const end = call.status === "ended" && call.ended_at ? call.ended_at : now;
      row.querySelector("[data-field=duration]").textContent = duration(end - call.started_at);
      const timer = row.querySelector(".hold-timer");
      const next = row.querySelector(".hold-next");
      if (call.status === "on_hold" && call.hold_started_at) {
        const held = now - call.hold_started_at;
        const severity = holdSeverity(call, held);
        timer.textContent = duration(held);
        timer.className = "hold-timer on" + (severity ? ` sev-${severity}` : "");
        timer.dataset.severity = severity || "ok";
        timer.dataset.seconds = String(Math.floor(held));
        const upcoming = nextThreshold(call, held);
        next.textContent = upcoming ? ` ${upcoming.severity} at ${duration(upcoming.after_s)}` : "";
      } else {
        timer.textContent = call.completed_hold_s > 0 ? `${duration(call.completed_hold_s)} total` : "—";
        timer.className = "hold-timer";
        timer.dataset.severity = "none";
        delete timer.dataset.seconds;
        next.textContent = "";
      }
    }
  }

  function renderAlerts() {
    const all = [...state.alerts.values()].filter(alertVisible);
    all.sort((a, b) => (a.detected_at < b.detected_at ? 1 : a.detected_at > b.detected_at ? -1 : 0));
    const shown = all.slice(0, MAX_ALERTS_SHOWN);
    const items = shown.map(renderAlert);
    if (all.length > shown.length) items.push(el("li", "more muted", `showing the newest ${shown.length} of ${all.length}`));
    $("alerts").replaceChildren(...items);
    $("alerts-count").textContent = String(all.filter((a) => !a.ack).length);
    $("alerts-empty").hidden = all.length > 0;
  }

  function renderAlert(alert) {
    const item = el("li", `alert sev-${alert.severity}${alert.ack ? " acked" : ""}`);
    item.dataset.alertId = alert.alert_id;
    item.dataset.severity = alert.severity;
    if (state.freshAlerts.has(alert.alert_id)) item.classList.add("fresh");
    const head = el("div", "alert-head");
    head.append(
      el("span", `badge sev-${alert.severity}`, alert.severity),
      el("span", "kind", KIND_LABEL[alert.kind] || alert.kind),
      el("time", "time", clock(alert.detected_at)),
    );
    item.append(head, el("div", "title", alert.title));
    const meta = el("div", "meta");
    meta.append(
      el("span", null, "agent "), el("b", "agent", alert.agent_id || "?"),
      el("span", null, " · queue "), el("b", "queue", alert.queue || "?"),
      el("span", null, " · call "),
    );
    const callLink = el("a", "call-link", alert.call_id);
    callLink.href = "#";
    callLink.addEventListener("click", (e) => { e.preventDefault(); select(alert.call_id); });
    meta.append(callLink);
    item.append(meta);
    const evidence = alert.evidence || {};
    if (evidence.text) {
      const quote = el("blockquote", "evidence", evidence.text);
      if (evidence.speaker) quote.dataset.speaker = evidence.speaker;
      item.append(quote);
    } else if (evidence.value !== undefined && evidence.value !== null) {
      const unit = evidence.unit ? ` ${evidence.unit}` : "";
      const limit = evidence.threshold !== undefined && evidence.threshold !== null ? ` (threshold ${evidence.threshold}${unit})` : "";
      item.append(el("div", "evidence-value", `${evidence.value}${unit}${limit}`));
    }
    const footer = el("div", "ack");
    if (alert.ack) {
      footer.append(el("span", "acked-by", `acknowledged by ${alert.ack.acked_by} at ${clock(alert.ack.acked_at)}`));
    } else {
      const button = el("button", "ack-button", state.pendingAcks.has(alert.alert_id) ? "sending…" : "Acknowledge");
      button.type = "button";
      button.disabled = state.pendingAcks.has(alert.alert_id);
      button.addEventListener("click", () => acknowledge(alert.alert_id));
      footer.append(button);
    }
    item.append(footer);
    return item;
  }

  function renderTranscript() {
    const lines = [...state.transcript.values()];
    $("transcript-call").textContent = state.selected ? state.selected : "select a call";
    $("transcript-call").className = state.selected ? "" : "muted";
    const items = lines.map((line) => {
      const item = el("li", `line speaker-${line.speaker}${line.is_final ? "" : " partial"}`);
      item.append(el("span", "speaker", line.speaker), el("span", "text", line.text));
      // Text injected without speech recognition (demo, replay --text) is marked as such.
      if (line.source === "script") {
        const tag = el("span", "source-tag", "script");
        tag.title = "scripted text, not recognised from audio";
        item.append(tag);
      }
      return item;
    });
    $("transcript").replaceChildren(...items);
    $("transcript-empty").hidden = items.length > 0;
    $("transcript-empty").textContent = state.selected ? "No transcript lines yet." : "Click a call to see its live transcript.";
    const box = $("transcript");
    box.scrollTop = box.scrollHeight;
  }

  function pct(ratio) {
    return ratio == null ? "–" : `${Math.round(ratio * 100)} %`;
  }

  function signed(value) {
    return value == null ? "–" : (value >= 0 ? "+" : "") + value.toFixed(2);
  }

  function renderSummary() {
    const box = $("summary");
    const s = state.summary;
    box.hidden = !(s && s.call_id === state.selected);
    if (box.hidden) return;
    const d = s.durations, c = s.conversation;
    const speaker = (name) => c.speakers[name] || { talk_s: 0, talk_ratio: 0, interruptions: 0 };
    const trend = (name) => {
      const t = s.sentiment[name];
      return t && t.start != null ? `${signed(t.start)} → ${signed(t.middle)} → ${signed(t.end)}` : "–";
    };
    const figures = [
      ["Handle time", d.total_s != null ? duration(d.total_s) : "–", "handle-time"],
      ["Talk", duration(d.talk_s), "talk"],
      ["Hold", `${duration(d.hold_total_s)} in ${d.hold_count} hold${d.hold_count === 1 ? "" : "s"}, longest ${duration(d.longest_hold_s)}`, "hold"],
      ["Dead air", duration(d.dead_air_s), "dead-air"],
      ["Talk ratio", `agent ${pct(speaker("agent").talk_ratio)}, customer ${pct(speaker("customer").talk_ratio)}, both ${pct(c.crosstalk_ratio)}`, "talk-ratio"],
      ["Interruptions", `agent ${speaker("agent").interruptions}, customer ${speaker("customer").interruptions}`, "interruptions"],
      ["Customer sentiment", trend("customer"), "sentiment"],
      ["Transferred", s.escalation.transferred ? `yes${s.escalation.to_queue ? " → " + s.escalation.to_queue : ""}` : "no", "transferred"],
      ["Peak risk", s.peak_risk_score != null ? String(Math.round(s.peak_risk_score)) : "–", "risk"],
    ];
    $("summary-figures").replaceChildren(...figures.flatMap(([label, value, field]) => {
      const dd = el("dd", "", value);
      dd.dataset.field = field;
      return [el("dt", "", label), dd];
    }));
    const rules = Object.entries(s.alerts);
    $("summary-alerts").replaceChildren(...(rules.length ? rules.map(([rule, group]) => {
      const item = el("li", "", `${rule} (${KIND_LABEL[group.kind] || group.kind}) × ${group.count}`);
      item.dataset.rule = rule;
      return item;
    }) : [el("li", "muted", "no alerts")]));
    $("summary-checklist").replaceChildren(...(s.checklist.length ? s.checklist.map((item) => {
      const row = el("li", `check-${item.result}`, `${item.rule_id}: ${item.result.replace("_", " ")}`);
      row.dataset.rule = item.rule_id;
      return row;
    }) : [el("li", "muted", "no said/not-said rules")]));
    $("summary-note").textContent = s.transcription_complete ? "" : "(transcription incomplete)";
  }

  function renderAll() {
    refreshFilterOptions();
    renderCalls();
    renderAlerts();
    renderTranscript();
    renderSummary();
  }

  // ------------------------------------------------------------------ connection

  let source = null;
  let retryTimer = null;
  let retryDelay = 1000;

  function setConnection(mode, text) {
    const box = $("connection");
    box.className = `connection ${mode}`;
    box.dataset.state = mode;
    $("connection-text").textContent = text;
    document.body.classList.toggle("offline", mode !== "live");
    const banner = $("banner");
    if (mode === "disconnected") {
      banner.hidden = false;
      banner.className = "banner error";
      banner.textContent = "Disconnected from the worker: reconnecting… What you see may be out of date.";
    } else if (banner.classList.contains("error") && mode === "live") {
      banner.hidden = true;
    }
  }

  function showBanner(text, kind) {
    const banner = $("banner");
    banner.hidden = false;
    banner.className = `banner ${kind}`;
    banner.textContent = text;
  }

  function received(serverTime) {
    state.lastMessageAt = Date.now();
    if (typeof serverTime === "number") state.skew = serverTime - Date.now() / 1000;
  }

  function connect() {
    clearTimeout(retryTimer);
    if (source) source.close();
    const url = "/dashboard/events" + (state.selected ? `?call=${encodeURIComponent(state.selected)}` : "");
    source = new EventSource(url);
    const mine = source;
    if (!state.live) setConnection("connecting", "connecting…");
    source.addEventListener("snapshot", (event) => {
      if (mine !== source) return;
      const snap = JSON.parse(event.data);
      received(snap.server_time);
      state.calls = new Map(snap.calls.map((c) => [c.call_id, c]));
      state.alerts = new Map(snap.alerts.map((a) => [a.alert_id, a]));
      state.transcript = new Map(((snap.transcript && snap.transcript.lines) || []).map((l) => [l.key, l]));
      state.summary = snap.summary || null;
      state.caughtUp = snap.feed ? snap.feed.caught_up : true;
      showIdentity(snap.viewer);
      state.live = true;
      retryDelay = 1000;
      setConnection("live", "live");
      updateFeedStatus();
      renderAll();
    });
    source.addEventListener("changes", (event) => {
      if (mine !== source) return;
      const batch = JSON.parse(event.data);
      received(batch.server_time);
      state.caughtUp = batch.caught_up;
      applyChanges(batch.changes);
      updateFeedStatus();
    });
    source.addEventListener("ping", (event) => {
      if (mine !== source) return;
      const ping = JSON.parse(event.data);
      received(ping.server_time);
      state.caughtUp = ping.caught_up;
      updateFeedStatus();
    });
    source.onerror = () => {
      if (mine !== source) return;
      state.live = false;
      setConnection("disconnected", "disconnected");
      // The browser retries by itself after a dropped connection; after an HTTP error it gives up.
      if (source.readyState === EventSource.CLOSED) scheduleReconnect();
    };
  }

  async function scheduleReconnect() {
    clearTimeout(retryTimer);
    try {
      const probe = await fetch("/dashboard/api/state", { credentials: "same-origin", cache: "no-store" });
      if (probe.status === 401) { window.location.href = "/"; return; }
    } catch (err) { /* worker down: keep trying */ }
    retryTimer = setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  }

  function applyChanges(changes) {
    let calls = false, alerts = false, transcript = false, summary = false;
    for (const change of changes) {
      switch (change.type) {
        case "call":
          state.calls.set(change.call.call_id, change.call);
          calls = true;
          break;
        case "call_removed":
          state.calls.delete(change.call_id);
          calls = true;
          break;
        case "alert": {
          const known = state.alerts.has(change.alert.alert_id);
          state.alerts.set(change.alert.alert_id, change.alert);
          // Highlight news only: not alerts replayed from history after a (re)start.
          if (!known && state.caughtUp && serverNow() - Date.parse(change.alert.detected_at) / 1000 < FRESH_S) {
            flash(change.alert.alert_id);
          }
          alerts = true;
          break;
        }
        case "alert_removed":
          state.alerts.delete(change.alert_id);
          alerts = true;
          break;
        case "ack": {
          const alert = state.alerts.get(change.ack.alert_id);
          if (alert) alert.ack = change.ack;
          state.pendingAcks.delete(change.ack.alert_id);
          alerts = true;
          break;
        }
        case "summary":
          if (change.call_id === state.selected) {
            state.summary = change.summary;
            summary = true;
          }
          break;
        case "transcript":
          if (change.call_id === state.selected) {
            state.transcript.set(change.line.key, change.line);
            transcript = true;
          }
          break;
      }
    }
    if (calls || alerts) refreshFilterOptions();
    if (calls) renderCalls();
    if (alerts) renderAlerts();
    if (transcript) renderTranscript();
    if (summary) renderSummary();
  }

  function flash(alertId) {
    state.freshAlerts.add(alertId);
    setTimeout(() => {
      state.freshAlerts.delete(alertId);
      const item = document.querySelector(`li.alert[data-alert-id="${CSS.escape(alertId)}"]`);
      if (item) item.classList.remove("fresh");
    }, FRESH_S * 1000);
  }

  function updateFeedStatus() {
    $("feed-status").textContent = state.caughtUp ? "" : "loading recent history…";
  }

  function select(callId) {
    if (state.selected === callId) return;
    state.selected = callId;
    state.transcript = new Map();
    state.summary = null;
    for (const row of $("calls-body").children) row.classList.toggle("selected", row.dataset.callId === callId);
    renderTranscript();
    renderSummary();
    connect(); // a new stream carries this call's transcript lines
  }

  // Signed in with a personal token: the name is the server's, shown but not editable, and never
  // sent (the server takes it from the token and refuses a request naming someone else).
  function showIdentity(viewer) {
    const supervisor = $("supervisor");
    if (!viewer || !viewer.identified) {
      state.identity = null;
      supervisor.readOnly = false;
      return;
    }
    state.identity = viewer;
    supervisor.value = viewer.name;
    supervisor.readOnly = true;
    supervisor.title = viewer.queues ? `queues: ${viewer.queues.join(", ")}` : "all queues";
    supervisor.dataset.identified = "true";
  }

  async function acknowledge(alertId) {
    const who = state.identity ? state.identity.name : $("supervisor").value.trim();
    if (!who) {
      showBanner('Type your name in "Supervisor" first: acknowledgements record who acknowledged.', "warn");
      $("supervisor").focus();
      return;
    }
    state.pendingAcks.add(alertId);
    renderAlerts();
    try {
      const response = await fetch("/dashboard/api/ack", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(state.identity ? { alert_id: alertId } : { alert_id: alertId, acked_by: who }),
      });
      if (response.status === 401) { window.location.href = "/"; return; }
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.error || response.statusText);
      }
      // The alert turns "acknowledged" when the ack comes back from the acks topic.
    } catch (err) {
      state.pendingAcks.delete(alertId);
      renderAlerts();
      showBanner(`Acknowledge failed: ${err.message}`, "error");
    }
  }

  // ------------------------------------------------------------------ start

  function start() {
    const supervisor = $("supervisor");
    supervisor.value = localStorage.getItem("streamproc.supervisor") || "";
    supervisor.addEventListener("change", () => {
      if (state.identity) return;
      localStorage.setItem("streamproc.supervisor", supervisor.value.trim());
      if (supervisor.value.trim() && $("banner").classList.contains("warn")) $("banner").hidden = true;
    });
    for (const name of ["queue", "agent", "severity"]) {
      $(`filter-${name}`).addEventListener("change", (e) => {
        filters[name] = e.target.value;
        renderCalls();
        renderAlerts();
      });
    }
    setInterval(tick, 250);
    setInterval(() => {
      // A stream can die silently (a proxy, a sleeping laptop): no ping for a while means reconnect.
      if (state.live && Date.now() - state.lastMessageAt > STALE_AFTER_MS) {
        state.live = false;
        setConnection("disconnected", "disconnected");
        scheduleReconnect();
      }
    }, 1000);
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
