// The profile page at /u/{id}: fetches the profile and renders it into the
// page's sections. Plain DOM code, no framework: every value is set with
// textContent (never parsed as HTML).
//
// Two ways to get the data, chosen by the URL:
//   /u/{id}                     ONE request to /api/user/stats-optimized,
//                               started with the HTML: the page's answer
//                               carries a preload hint for exactly the URL
//                               fetched here, which takes its answer. The
//                               browser keeps the answer (ETag, no-cache), so
//                               a reload or refresh sends If-None-Match and a
//                               304 re-renders the kept body (data-status
//                               304, read from Resource Timing).
//   /u/{id}?compose=components  the four per-component routes (the "before").
// Links to other profiles carry ?from={this id}: the API learns which
// profiles are opened after which, and preloads the likely next ones.
//
// What a test or a measurement reads, on <html> once the data is shown (or
// the error is): data-state (ready | error), data-status (the HTTP status
// the data came with: 200, 304, 404…), data-requests (data requests made),
// data-mode (aggregate | components), data-rendered (performance.now() in
// ms, i.e. time since navigation start, once the data is in the DOM),
// data-painted (the same, once the frame showing it has been drawn),
// data-started (when this script began: the answer may be waiting for it),
// data-answered (when the last data response had arrived: Resource Timing's
// responseEnd) and data-fetches (data requests the browser made, a used
// preload included: 1 when the script took the preloaded answer).
"use strict";

(() => {
  const started = performance.now();
  const root = document.documentElement;
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const params = new URLSearchParams(location.search);
  const mode = params.get("compose") === "components" ? "components" : "aggregate";
  // The server checked `from` (a canonical id) before sending the page, and
  // preloaded this very URL.
  const from = params.get("from");
  const aggregateUrl = `/api/user/stats-optimized?userId=${encodeURIComponent(id)}${from ? `&from=${encodeURIComponent(from)}` : ""}`;
  const $ = (selector) => document.querySelector(selector);
  let requests = 0;

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // GET url as JSON; a 304 comes back without a body; a 4xx/5xx throws with
  // the API's own message. `init` null: a plain GET, which takes the answer
  // the page's preload hint asked for.
  async function getJson(url, init) {
    requests += 1;
    const resp = await (init ? fetch(url, init) : fetch(url));
    if (resp.status === 304) return { status: 304, resp };
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) throw new HttpError(resp.status, body && body.message ? body.message : `HTTP ${resp.status}`);
    return { status: resp.status, resp, body };
  }

  // True if the browser revalidated `url`'s answer (If-None-Match → 304)
  // instead of fetching it whole: Resource Timing then counts only the
  // 304's headers as transferred, less than the (cached) body.
  function revalidated(url) {
    const entries = performance.getEntriesByName(new URL(url, location.href).href, "resource");
    const e = entries[entries.length - 1];
    return Boolean(e) && e.transferSize > 0 && e.transferSize < e.encodedBodySize;
  }

  // The answer is `private, no-cache` with an ETag: the browser keeps it and
  // revalidates it (If-None-Match → 304) on a reload or a refresh, the
  // preload included, so one request serves both.
  async function loadAggregate() {
    const r = await getJson(aggregateUrl, null);
    return { status: revalidated(aggregateUrl) ? 304 : r.status, data: r.body };
  }

  async function loadComponents() {
    const base = `/api/users/${encodeURIComponent(id)}`;
    const [stats, posts, history, social] = await Promise.all(
      ["stats", "posts", "star-history", "social"].map((part) =>
        getJson(`${base}/${part}`, { headers: { Accept: "application/json" }, cache: "no-store" }),
      ),
    );
    const data = {
      profile: stats.body.profile,
      stats: stats.body.stats,
      recentPosts: posts.body,
      starHistory: history.body,
      social: social.body,
    };
    return { status: 200, data };
  }

  const day = (unixSeconds) => new Date(unixSeconds * 1000).toISOString().slice(0, 10);

  function renderProfile(p) {
    document.title = `${p.displayName} (@${p.username}) · GistFans`;
    $("#name").textContent = p.displayName;
    $("#username").textContent = `@${p.username}`;
    $("#bio").textContent = p.bio;
    $("#joined").textContent = day(p.createdAt);
    $("#joined").setAttribute("datetime", day(p.createdAt));
  }

  function renderStats(stats) {
    for (const dd of document.querySelectorAll("[data-stat]")) dd.textContent = String(stats[dd.dataset.stat]);
  }

  function renderPosts(posts) {
    const list = $("#posts");
    list.replaceChildren(
      ...posts.map((post) => {
        const li = el("li");
        li.append(el("span", { class: "title", "data-field": "title" }, post.title));
        const meta = el("span", { class: "meta" });
        meta.append(el("span", { class: "lang" }, post.language), " · ");
        meta.append(el("span", { "data-field": "stars" }, String(post.stars)), post.stars === 1 ? " star" : " stars");
        meta.append(" · ", el("time", { datetime: day(post.createdAt) }, day(post.createdAt)));
        li.append(meta);
        return li;
      }),
    );
    $("#posts-empty").hidden = posts.length > 0;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // One bar per day, drawn as inline SVG; the table below is its text alternative.
  function renderHistory(days) {
    const total = days.reduce((sum, d) => sum + d.stars, 0);
    const most = days.reduce((best, d) => (d.stars > best.stars ? d : best), { stars: 0, date: "" });
    const max = Math.max(1, most.stars);
    const [w, h, pad] = [600, 170, 20];
    const step = w / Math.max(1, days.length);
    const chart = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-labelledby": "history-svg-title history-svg-desc" });
    chart.append(svg("title", { id: "history-svg-title" }, "Stars received per day, last 30 days"));
    const summary = most.stars > 0 ? `${total} stars in total; most on ${most.date} (${most.stars}).` : "No stars in these 30 days.";
    chart.append(svg("desc", { id: "history-svg-desc" }, `Bar chart, one bar per day, oldest first. ${summary}`));
    chart.append(svg("line", { x1: 0, y1: h - pad, x2: w, y2: h - pad, class: "axis" }));
    // The figure is one image to assistive technology (its title and
    // description above); each day's figure is in the table below.
    days.forEach((d, i) => {
      const bh = ((h - 2 * pad) * d.stars) / max;
      chart.append(svg("rect", { x: i * step + 2, y: h - pad - bh, width: step - 4, height: bh, class: "bar" }));
    });
    if (days.length > 0) {
      chart.append(svg("text", { x: 0, y: h - 4, class: "label" }, days[0].date));
      chart.append(svg("text", { x: w, y: h - 4, class: "label", "text-anchor": "end" }, days[days.length - 1].date));
      chart.append(svg("text", { x: 0, y: 12, class: "label" }, `max ${max}`));
    }
    $("#history-chart").replaceChildren(chart);
    $("#history-caption").textContent = summary;
    $("[data-field=history-total]").textContent = String(total);
    $("#history-table tbody").replaceChildren(
      ...days.map((d) => {
        const tr = el("tr");
        tr.append(el("th", { scope: "row" }, d.date), el("td", {}, String(d.stars)));
        return tr;
      }),
    );
  }

  // Links keep the mode and say where they were followed from.
  const linkQuery = `?${mode === "components" ? "compose=components&" : ""}from=${encodeURIComponent(id)}`;
  function people(selector, sample) {
    $(selector).replaceChildren(
      ...sample.map((u) => {
        const li = el("li");
        li.append(el("a", { href: `/u/${u.id}${linkQuery}` }, `@${u.username}`));
        return li;
      }),
    );
  }

  function renderSocial(s) {
    $("[data-field=followers]").textContent = String(s.followers);
    $("[data-field=following]").textContent = String(s.following);
    $("[data-field=mutual]").textContent = String(s.mutualCount);
    people("#followers-sample", s.followerSample);
    people("#following-sample", s.followingSample);
    people("#mutual-sample", s.mutualSample);
  }

  function render(data) {
    renderProfile(data.profile);
    renderStats(data.stats);
    renderPosts(data.recentPosts);
    renderHistory(data.starHistory);
    renderSocial(data.social);
    $("#error").hidden = true;
    $("#profile").hidden = false;
    $("#status").textContent = "";
  }

  function showError(e) {
    const status = e instanceof HttpError ? e.status : 0;
    $("#error-title").textContent =
      status === 404 ? "No such user" : status === 400 ? "Not a valid user id" : "The profile could not be loaded";
    $("#error-message").textContent = e.message || String(e);
    $("#profile").hidden = true;
    $("#error").hidden = false;
    $("#status").textContent = "";
    document.title = "Profile not found · GistFans";
  }

  // When the data answers had arrived, and how many the browser fetched.
  function answered() {
    const data = performance.getEntriesByType("resource").filter((e) => new URL(e.name).pathname.startsWith("/api/"));
    const end = data.reduce((last, e) => Math.max(last, e.responseEnd), 0);
    return { end, count: data.length };
  }

  function finish(state, status) {
    root.dataset.mode = mode;
    root.dataset.requests = String(requests);
    root.dataset.status = String(status);
    const rendered = performance.now();
    const a = answered();
    root.dataset.answered = a.end.toFixed(1);
    root.dataset.started = started.toFixed(1);
    root.dataset.fetches = String(a.count);
    root.dataset.state = state;
    root.dataset.rendered = rendered.toFixed(1);
    // The frame that shows the data: a task queued from its animation
    // frame runs once it has been drawn.
    delete root.dataset.painted;
    requestAnimationFrame(() => setTimeout(() => (root.dataset.painted = performance.now().toFixed(1))));
    const how = mode === "components" ? "four per-component requests" : "one request";
    $("#source").textContent = `Loaded with ${how} (${requests} made, HTTP ${status}).`;
  }

  async function load() {
    requests = 0;
    root.dataset.state = "loading";
    try {
      const { status, data } = mode === "components" ? await loadComponents() : await loadAggregate();
      render(data);
      finish("ready", status);
    } catch (e) {
      showError(e);
      finish("error", e instanceof HttpError ? e.status : 0);
    }
  }

  $("#mode").textContent = mode === "components" ? "Composed from four requests" : "One request";
  const other = mode === "components" ? location.pathname : `${location.pathname}?compose=components`;
  $("#switch").href = other;
  $("#switch").textContent = mode === "components" ? "Load with one request" : "Load with four requests";
  $("#refresh").addEventListener("click", load);
  load();
})();
