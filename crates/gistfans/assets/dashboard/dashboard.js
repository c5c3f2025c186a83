// The pool dashboard: reads GET /api/admin/stream (Server-Sent Events) with
// fetch(), because EventSource cannot send an Authorization header and the
// token must not travel in the URL. The token lives in sessionStorage (this
// tab only). Figures are the newest sample; charts keep five minutes.
"use strict";
(() => {
  const STREAM = "/api/admin/stream";
  const MONITOR = "/api/admin/connection-pool-monitor";
  const KEY = "gistfans.adminToken";
  const HISTORY = 300; // samples: five minutes at one a second
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(KEY);
  let history = []; // samples, oldest first, unique seq
  let abort = null;
  let charts = [];

  // ---- connection state ------------------------------------------------
  function setConnection(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = text;
  }

  function showOnly(which) {
    $("disabled").hidden = which !== "disabled";
    $("token-form").hidden = which !== "token";
    $("dashboard").hidden = which !== "dashboard";
  }

  function askForToken(message) {
    if (abort) abort.abort();
    token = null;
    sessionStorage.removeItem(KEY);
    const err = $("token-error");
    err.hidden = !message;
    err.textContent = message || "";
    showOnly("token");
    setConnection("unauthorized", message ? "Not connected: " + message : "Not connected");
    $("token").focus();
  }

  function disabled(message) {
    if (message) $("disabled-message").textContent = message;
    showOnly("disabled");
    setConnection("disabled", "The dashboard is disabled on this server");
  }

  async function errorMessage(resp) {
    try {
      const body = await resp.json();
      return body.message || resp.statusText;
    } catch (_) {
      return resp.status + " " + resp.statusText;
    }
  }

  // ---- the stream --------------------------------------------------------
  // One SSE block ("field: value" lines) to {event, data}.
  function parseBlock(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    return { event, data: data.join("\n") };
  }

  async function connect() {
    if (abort) abort.abort();
    const ctrl = new AbortController();
    abort = ctrl;
    setConnection("connecting", "Connecting…");
    let resp;
    try {
      resp = await fetch(STREAM, {
        headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" },
        cache: "no-store",
        signal: ctrl.signal,
      });
    } catch (e) {
      if (!ctrl.signal.aborted) retry(ctrl, 2000, "Cannot reach the server; retrying…");
      return;
    }
    if (resp.status === 401) return askForToken(await errorMessage(resp));
    if (resp.status === 403) return disabled(await errorMessage(resp));
    if (!resp.ok) {
      const wait = 1000 * (Number(resp.headers.get("Retry-After")) || 2);
      return retry(ctrl, wait, (await errorMessage(resp)) + "; retrying…");
    }
    showOnly("dashboard");
    setConnection("live", "Live");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const { event, data } = parseBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event === "status" && data) receive(JSON.parse(data));
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    // The server ends every stream after its lifetime, or on shutdown.
    retry(ctrl, 1000, "Reconnecting…");
  }

  function retry(ctrl, ms, text) {
    if (abort !== ctrl) return;
    setConnection("reconnecting", text);
    setTimeout(() => { if (abort === ctrl) connect(); }, ms);
  }

  // ---- figures -------------------------------------------------------------
  const fmt = (v, digits) =>
    v == null || Number.isNaN(v) ? "–" : Number(v).toLocaleString(undefined, { maximumFractionDigits: digits ?? 0 });

  function put(id, value, text) {
    const el = $(id);
    el.dataset.value = String(value);
    el.textContent = text ?? fmt(value);
  }

  function receive(sample) {
    const last = history[history.length - 1];
    if (last && sample.seq <= last.seq) {
      if (sample.seq < history[0].seq) history = []; // a new server: start over
      else return; // already seen (backlog after a reconnect)
    }
    history.push(sample);
    if (history.length > HISTORY) history.splice(0, history.length - HISTORY);
    render(sample);
  }

  // Queries/s between two samples.
  function rate(a, b, field) {
    if (!a) return null;
    const dt = (b.atMs - a.atMs) / 1000;
    const dq = b.status[field] - a.status[field];
    return dt > 0 && dq >= 0 ? dq / dt : null;
  }

  // The shared level's card, shown only when the server has one.
  function shared(r) {
    $("shared-card").hidden = !r;
    if (!r) return;
    const lookups = r.hits + r.misses;
    const rate = lookups ? (100 * r.hits) / lookups : null;
    put("shared-hit-rate", rate, rate == null ? "–" : fmt(rate, 1) + " %");
    put("shared-hits", r.hits);
    put("shared-bus", r.busCurrent, r.busCurrent ? "Current" : "Not confirmed");
    put("shared-lag-p50", r.deliveryLagMs.p50, fmt(r.deliveryLagMs.p50, 2) + " ms");
    put("shared-lag-p99", r.deliveryLagMs.p99, fmt(r.deliveryLagMs.p99, 2) + " ms");
    put("shared-received", r.received);
    put("shared-replayed", r.replayed);
    put("shared-reconnects", r.reconnects);
    put("shared-flushes", r.flushes);
    put("shared-pending", r.pending);
  }

  // Writes made around the server: PostgreSQL's change stream (its slot's
  // lag and counters) or SQLite's data-version watch (checks, other
  // processes' commits); each kind's figures shown only in its modes.
  const CHANGE_MODES = {
    off: "Off",
    starting: "Starting",
    standby: "Standby (another instance consumes)",
    leader: "Consuming (leader)",
    dataVersion: "SQLite watch",
    unavailable: "Unavailable",
  };
  function changes(c) {
    put("changes-mode", c.mode, CHANGE_MODES[c.mode] || c.mode);
    const detail = c.detail || (c.mode === "off" ? "no watch: writes made around this server stay cached until their TTL." : "");
    $("changes-detail").textContent = detail.charAt(0).toUpperCase() + detail.slice(1);
    const kind = c.mode === "dataVersion" ? "sqlite" : "stream";
    for (const el of $("changes-card").querySelectorAll("[data-kind]")) el.hidden = el.dataset.kind !== kind;
    put("changes-lag-bytes", c.lagBytes, c.lagBytes == null ? "–" : fmt(c.lagBytes / 1024, 1) + " KiB");
    put("changes-lag-seconds", c.lagSeconds, c.lagSeconds == null ? "–" : fmt(c.lagSeconds, 2) + " s");
    put("changes-transactions", c.transactions);
    put("changes-own-skipped", c.ownSkipped);
    put("changes-tags-invalidated", c.tagsInvalidated);
    put("changes-slots-recreated", c.slotsRecreated);
    put("changes-mapping-failures", c.mappingFailures);
    put("changes-polls", c.polls);
    put("changes-foreign-commits", c.foreignCommits);
    put("changes-epochs", c.epochs);
  }

  // What the tuning loops do:  // What the tuning loops do: the pool's automatic limit (when on) and the
  // last changes any loop made, newest first.
  function tuning(t) {
    const p = t.pool;
    put("tuning-limit", p ? p.limit : null, p ? `${p.limit} of ${p.min}–${p.max}` : "Fixed (DB_POOL_AUTO off)");
    put("tuning-baseline", p && p.baselineMs, p && p.baselineMs != null ? fmt(p.baselineMs, 2) + " ms" : "–");
    put("tuning-service", p && p.serviceMs, p && p.serviceMs != null ? fmt(p.serviceMs, 2) + " ms" : "–");
    put("tuning-changes", t.changes);
    const recent = t.events.slice(-8).reverse();
    $("tuning-events").replaceChildren(...(recent.length ? recent : [null]).map((e) => {
      const li = document.createElement("li");
      if (!e) { li.textContent = "None."; return li; }
      const at = new Date(e.atUnixMs).toLocaleTimeString();
      li.textContent = `${at} ${e.knob}: ${e.from} → ${e.to} (${e.reason})`;
      return li;
    }));
  }

  // The consistency monitor: per delay, the nines (a lower bound while no
  // entry was found stale) with what they rest on.
  // Reads on replicas: why reads stayed on the primary, and per replica its
  // state, lag (bytes and time), reads routed there, waits and failures.
  function replicas(r) {
    if (!r) {
      $("replicas-detail").textContent = "Every read goes to the primary (DB_REPLICA_URLS is not set).";
      for (const id of ["replicas-behind", "replicas-unavailable", "replicas-unanswered", "replicas-retried", "replicas-strict"]) put(id, "", "–");
      return;
    }
    $("replicas-detail").textContent = r.sharedFloors
      ? "Floors travel with the shared level's generations: a read sees every write acknowledged on any instance."
      : "Floors are this instance's own writes (no shared level).";
    put("replicas-behind", r.fallbacksBehind);
    put("replicas-unavailable", r.fallbacksUnavailable);
    put("replicas-unanswered", r.fallbacksUnanswered);
    put("replicas-retried", r.retriedOnPrimary);
    put("replicas-strict", r.strictReads);
    const rows = r.replicas.map((x) => {
      const tr = document.createElement("tr");
      const state = x.circuit !== "closed" ? "Unreachable" : x.inRotation ? "In rotation" : "Out (lagging)";
      const lag = fmt(x.lagBytes / 1024, 1) + " KiB, " + fmt(x.lagMs / 1000, 2) + " s";
      for (const text of [x.name, state, lag, fmt(x.routed), fmt(x.waited), fmt(x.failed)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    });
    $("replicas-rows").replaceChildren(...rows);
  }

  function consistency(c) {
    put("consistency-sampled", c.sampled, c.enabled ? fmt(c.sampled) : "Off (DB_CONSISTENCY_SAMPLE=0)");
    put("consistency-dropped", c.dropped);
    put("consistency-last-stale", c.lastStale || "", c.lastStale || "None");
    $("consistency-within").replaceChildren(...c.within.map((w) => {
      const row = document.createElement("div");
      const dt = document.createElement("dt");
      dt.textContent = "Nines within " + w.within;
      const dd = document.createElement("dd");
      dd.id = "consistency-nines-" + w.within;
      dd.dataset.value = String(w.nines);
      const nines = w.nines == null ? "–" : (w.ninesAtLeast ? "≥ " : "") + fmt(w.nines, 2);
      dd.textContent = `${nines} (${fmt(w.checked)} checked, ${fmt(w.stale)} stale, ${fmt(w.skipped)} skipped)`;
      row.append(dt, dd);
      return row;
    }));
  }

  function render(sample) {
    const s = sample.status;
    const prev = history.length > 1 ? history[history.length - 2] : null;
    put("active-connections", s.activeConnections);
    put("idle-connections", s.idleConnections);
    put("pending-requests", s.pendingRequests);
    put("max-connections", s.maxConnections);
    const qps = rate(prev, sample, "totalQueries");
    put("qps", qps, fmt(qps, 1));
    put("latency-p50", s.latencyMs.p50, fmt(s.latencyMs.p50, 2) + " ms");
    put("latency-p95", s.latencyMs.p95, fmt(s.latencyMs.p95, 2) + " ms");
    put("latency-p99", s.latencyMs.p99, fmt(s.latencyMs.p99, 2) + " ms");
    put("total-queries", s.totalQueries);
    put("errors", s.errors);
    put("cache-hit-rate", s.cacheHitRate, fmt(s.cacheHitRate, 1) + " %");
    put("cache-entries", s.cache.entries);
    put("single-flight-joins", s.singleFlightJoins);
    put("batch-saved", Math.max(0, s.batchedKeys - s.batches));
    put("database-queries", s.databaseQueries);
    put("refresh-ahead", s.refresh.ahead);
    put("refresh-revalidations", s.refresh.revalidations);
    put("refresh-served", s.refresh.servedWhileRefreshing);
    put("refresh-skipped", s.refresh.skipped);
    put("refresh-wasted", s.refresh.wasted);
    put("circuit", s.circuit, { closed: "Closed", open: "Open", halfOpen: "Half-open" }[s.circuit] || s.circuit);
    put("circuit-opens", s.circuitOpens);
    put("leaks-detected", s.leaksDetected);
    put("suspected-leaks", s.suspectedLeaks.length,
      s.suspectedLeaks.length ? s.suspectedLeaks.map((l) => l.key + " (" + l.heldMs + " ms)").join(", ") : "None");
    shared(s.shared);
    changes(s.changes);
    tuning(s.tuning);
    consistency(s.consistency);
    replicas(s.replicas);
    advice("alerts", sample.alerts);
    advice("recommendations", sample.recommendations);
    const size = $("pool-size");
    if (document.activeElement !== size && !size.value) size.value = s.maxConnections;
    waitHistogram(sample);
    drawCharts();
    const dash = $("dashboard");
    dash.dataset.seq = String(sample.seq);
    dash.dataset.updated = String(sample.atMs);
  }

  function advice(id, items) {
    const ul = $(id);
    ul.replaceChildren(...(items.length ? items : [null]).map((a) => {
      const li = document.createElement("li");
      if (!a) { li.textContent = "None."; return li; }
      li.dataset.severity = a.severity;
      li.dataset.kind = a.kind;
      li.textContent = a.message;
      return li;
    }));
  }

  // The acquire-wait histogram over the history kept (cumulative buckets,
  // differenced against the oldest sample, then per bucket).
  function waitHistogram(sample) {
    const now = sample.status.acquireWaitHistogram;
    const first = history[0].status.acquireWaitHistogram;
    const base = first.length === now.length && history[0] !== sample ? first : null;
    const cumulative = now.map((b, i) => b.count - (base && base[i].count <= b.count ? base[i].count : 0));
    const counts = cumulative.map((c, i) => c - (i ? cumulative[i - 1] : 0));
    const max = Math.max(1, ...counts);
    const secs = Math.round((sample.atMs - history[0].atMs) / 1000);
    $("wait-window").textContent = base ? "Waits for a connection in the last " + secs + " s, by bucket." : "Waits for a connection since the metrics were reset, by bucket.";
    $("wait-histogram").tBodies[0].replaceChildren(...now.map((b, i) => {
      const tr = document.createElement("tr");
      const le = b.leMs === "+Inf" ? "more" : "≤ " + fmt(b.leMs, 3) + " ms";
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = (100 * counts[i] / max).toFixed(1) + "%";
      const cells = [le, fmt(counts[i]), bar].map((c, j) => {
        const td = document.createElement(j === 0 ? "th" : "td");
        if (j === 0) td.scope = "row";
        td.append(c);
        return td;
      });
      tr.append(...cells);
      return tr;
    }));
  }

  // ---- charts --------------------------------------------------------------
  const SERIES = [
    { id: "chart-qps", series: [["queries/s", "#2563eb", (a, b) => rate(a, b, "totalQueries")], ["database/s", "#dc2626", (a, b) => rate(a, b, "databaseQueries")]] },
    { id: "chart-latency", series: [["p50", "#16a34a", (_, b) => b.status.latencyMs.p50], ["p95", "#d97706", (_, b) => b.status.latencyMs.p95], ["p99", "#dc2626", (_, b) => b.status.latencyMs.p99]] },
    { id: "chart-connections", series: [["active", "#2563eb", (_, b) => b.status.activeConnections], ["idle", "#16a34a", (_, b) => b.status.idleConnections], ["pending", "#dc2626", (_, b) => b.status.pendingRequests]] },
    { id: "chart-hit-rate", series: [["hit rate %", "#7c3aed", (_, b) => b.status.cacheHitRate]] },
  ];

  function chartWidth(el) {
    return Math.max(240, el.clientWidth || 300);
  }

  function makeCharts() {
    if (typeof uPlot !== "function") return; // charts are optional: figures still work
    charts = SERIES.map((c) => {
      const el = $(c.id);
      const opts = {
        width: chartWidth(el),
        height: 180,
        series: [{}].concat(c.series.map(([label, stroke]) => ({ label, stroke, width: 2, spanGaps: false }))),
        axes: [{}, { size: 56 }],
        legend: { live: false },
      };
      const plot = new uPlot(opts, [[]].concat(c.series.map(() => [])), el);
      return { plot, el, series: c.series };
    });
    new ResizeObserver(() => charts.forEach((c) => c.plot.setSize({ width: chartWidth(c.el), height: 180 }))).observe($("dashboard"));
  }

  function drawCharts() {
    if (!charts.length) makeCharts();
    for (const c of charts) {
      const xs = [];
      const ys = c.series.map(() => []);
      history.forEach((b, i) => {
        const a = i ? history[i - 1] : null;
        xs.push(b.atMs / 1000);
        c.series.forEach(([, , f], k) => ys[k].push(f(a, b)));
      });
      c.plot.setData([xs].concat(ys));
    }
  }

  // ---- actions ---------------------------------------------------------
  const CONFIRM = {
    clearCache: "Clear the whole cache? Every next request goes to the database.",
    healthCheck: "Run a health check now (pings idle connections, replaces broken ones)?",
    resetMetrics: "Reset every counter and histogram to zero?",
  };

  async function act(body, question) {
    if (!window.confirm(question)) return;
    const out = $("action-result");
    out.dataset.action = body.action;
    out.dataset.ok = "";
    out.textContent = "Running " + body.action + "…";
    let resp;
    try {
      resp = await fetch(MONITOR, {
        method: "POST",
        headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (e) {
      out.dataset.ok = "false";
      out.textContent = body.action + " failed: the server cannot be reached.";
      return;
    }
    if (resp.status === 401) return askForToken(await errorMessage(resp));
    if (!resp.ok) {
      out.dataset.ok = "false";
      out.textContent = body.action + " failed: " + (await errorMessage(resp));
      return;
    }
    const result = await resp.json();
    const s = result.status;
    let detail = "cache entries " + fmt(s.cache.entries) + ", pool limit " + fmt(s.maxConnections);
    if (result.health) detail += ", health: " + JSON.stringify(result.health);
    out.dataset.ok = "true";
    out.textContent = result.action + " done at " + new Date().toLocaleTimeString() + ": " + detail + ".";
  }

  function wire() {
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      token = $("token").value.trim();
      if (!token) return;
      sessionStorage.setItem(KEY, token);
      $("token").value = "";
      $("token-error").hidden = true;
      connect();
    });
    for (const id of ["btn-clear-cache", "btn-health-check", "btn-reset-metrics"]) {
      const action = $(id).dataset.action;
      $(id).addEventListener("click", () => act({ action }, CONFIRM[action]));
    }
    $("resize-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const size = Number($("pool-size").value);
      if (!Number.isInteger(size) || size < 1) return;
      act({ action: "resizePool", size }, "Resize the pool to " + size + " connections?");
    });
    $("forget-token").addEventListener("click", () => askForToken(""));
  }

  // Without a token, one unauthenticated call tells a disabled dashboard
  // (403) from one waiting for its token (401).
  async function start() {
    wire();
    if (token) return connect();
    try {
      const resp = await fetch(MONITOR, { cache: "no-store" });
      if (resp.status === 403) return disabled(await errorMessage(resp));
    } catch (_) { /* the form still works */ }
    askForToken("");
  }

  start();
})();
