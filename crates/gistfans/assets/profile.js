// The profile page at /u/{id}: renders the profile into the page's
// sections. Plain DOM code, no framework: every value is set with
// textContent (never parsed as HTML). The server writes this script into the
// page, at the end of the body (allowed by its hash in the CSP), so it runs
// as soon as the elements above it are parsed.
//
// Two ways to get the data, chosen by the URL:
//   /u/{id}                     the data comes WITH the page: the server
//                               writes the aggregate's JSON into the data
//                               block #profile-data, and the script renders
//                               it synchronously, during the page's parse:
//                               one request in all, no task between the data
//                               and the DOM. A reload revalidates the page
//                               (its ETag covers the data; a 304 keeps both).
//   /u/{id}?compose=components  the four per-component routes (the "before").
// The Refresh button fetches /api/user/stats-optimized (the browser keeps the
// answer, ETag and no-cache, so a second refresh sends If-None-Match and a 304
// re-renders the kept body). Links to other profiles carry ?from={this id}:
// the server learns which profiles are opened after which, and preloads the
// likely next ones.
//
// What a test or a measurement reads, on <html> once the data is shown (or
// the error is): data-state (ready | error), data-requests (requests that
// brought data: 1 when it came with the page), data-mode (aggregate |
// components), data-rendered (performance.now() in ms, i.e. time since
// navigation start, once the data is in the DOM), data-started (when this
// script began), data-fetched and data-parsed (when the script had the last
// fetched response's head, then its body parsed; 0 when nothing was
// fetched). Once the frame showing the data has been drawn, data-painted (the
// same clock), and with it the figures only final by then: data-status (the
// HTTP status the data came with: 200, 304, 404…), data-answered (when the
// last data answer had arrived: Resource Timing's responseEnd, the page's own
// when the data came with it) and data-fetches (requests to /api/ the
// browser made).
"use strict";

(() => {
  const started = performance.now();
  const root = document.documentElement;
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const params = new URLSearchParams(location.search);
  const mode = params.get("compose") === "components" ? "components" : "aggregate";
  // The server checked `from` (a canonical id) before sending the page.
  const from = params.get("from");
  const aggregateUrl = `/api/user/stats-optimized?userId=${encodeURIComponent(id)}${from ? `&from=${encodeURIComponent(from)}` : ""}`;
  const $ = (selector) => document.querySelector(selector);
  let requests = 0;
  // When the last fetch() resolved and the last body was parsed (ms).
  let fetched = 0;
  let parsed = 0;

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
  // the API's own message. `init` null: a plain GET, which the browser may
  // answer from its kept copy after revalidating it.
  async function getJson(url, init) {
    requests += 1;
    const resp = await (init ? fetch(url, init) : fetch(url));
    fetched = Math.max(fetched, performance.now());
    if (resp.status === 304) return { status: 304, resp };
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    parsed = Math.max(parsed, performance.now());
    if (!resp.ok) throw new HttpError(resp.status, body && body.message ? body.message : `HTTP ${resp.status}`);
    return { status: resp.status, resp, body };
  }

  // True if the browser revalidated the last of these Resource (or
  // Navigation) Timing entries (If-None-Match → 304) instead of fetching it
  // whole: only the 304's headers count as transferred, less than the
  // (cached) body.
  function revalidated(entries) {
    const e = entries[entries.length - 1];
    return Boolean(e) && e.transferSize > 0 && e.transferSize < e.encodedBodySize;
  }

  // The answer is `private, no-cache` with an ETag: the browser keeps it and
  // revalidates it (If-None-Match → 304) on the next refresh.
  async function loadAggregate() {
    const r = await getJson(aggregateUrl, null);
    const entries = performance.getEntriesByName(new URL(aggregateUrl, location.href).href, "resource");
    return { status: revalidated(entries) ? 304 : r.status, data: r.body };
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

  // When the data answers had arrived (the page's own answer when the data
  // came with it), and how many requests to /api/ the browser made.
  function answered(withPage) {
    const data = performance.getEntriesByType("resource").filter((e) => new URL(e.name).pathname.startsWith("/api/"));
    const from = withPage ? performance.getEntriesByType("navigation") : data;
    const end = from.reduce((last, e) => Math.max(last, e.responseEnd), 0);
    return { end, count: data.length };
  }

  // Marks the page done. `status` is a function: a status read from the
  // timing entries is final only once the response has ended, which the
  // frame after this one is sure to see.
  function finish(state, status, withPage = false) {
    root.dataset.mode = mode;
    root.dataset.requests = String(requests);
    root.dataset.started = started.toFixed(1);
    root.dataset.fetched = fetched.toFixed(1);
    root.dataset.parsed = parsed.toFixed(1);
    root.dataset.state = state;
    root.dataset.rendered = performance.now().toFixed(1);
    const how = mode === "components" ? "four per-component requests" : "one request";
    // The frame that shows the data: a task queued from its animation
    // frame runs once it has been drawn.
    delete root.dataset.painted;
    requestAnimationFrame(() =>
      setTimeout(() => {
        const a = answered(withPage);
        root.dataset.answered = a.end.toFixed(1);
        root.dataset.fetches = String(a.count);
        root.dataset.status = String(status());
        $("#source").textContent = `Loaded with ${how} (${requests} made, HTTP ${root.dataset.status}).`;
        root.dataset.painted = performance.now().toFixed(1);
      }),
    );
  }

  function fetchData() {
    requests = 0;
    fetched = 0;
    parsed = 0;
    return mode === "components" ? loadComponents() : loadAggregate();
  }

  // Renders what `pending` (a fetchData() started earlier) brings.
  async function show(pending) {
    root.dataset.state = "loading";
    try {
      const { status, data } = await pending;
      render(data);
      finish("ready", () => status);
    } catch (e) {
      showError(e);
      finish("error", () => (e instanceof HttpError ? e.status : 0));
    }
  }

  // The data the page came with (null in the four-request mode).
  function carriedData() {
    const block = document.getElementById("profile-data");
    return block ? JSON.parse(block.textContent) : null;
  }

  $("#mode").textContent = mode === "components" ? "Composed from four requests" : "One request";
  const other = mode === "components" ? location.pathname : `${location.pathname}?compose=components`;
  $("#switch").href = other;
  $("#switch").textContent = mode === "components" ? "Load with one request" : "Load with four requests";
  $("#refresh").addEventListener("click", () => show(fetchData()));
  const carried = mode === "aggregate" ? carriedData() : null;
  if (carried) {
    requests = 1;
    render(carried);
    // A reload whose page was revalidated (304) shows the kept page's data.
    finish("ready", () => (revalidated(performance.getEntriesByType("navigation")) ? 304 : 200), true);
  } else {
    show(fetchData());
  }
})();
