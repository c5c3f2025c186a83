// The profile page at /u/{id}: fetches the profile and renders it into the
// page's sections. Plain DOM code, no framework: every value is set with
// textContent (never parsed as HTML).
//
// Two ways to get the data, chosen by the URL:
//   /u/{id}                     ONE request to /api/user/stats-optimized;
//                               the ETag and body are kept in sessionStorage,
//                               so a refresh sends If-None-Match and a 304
//                               re-renders the kept body.
//   /u/{id}?compose=components  the four per-component routes (the "before").
//
// What a test or a measurement reads, on <html> once the data is shown (or
// the error is): data-state (ready | error), data-status (the HTTP status
// the data came with: 200, 304, 404…), data-requests (data requests made),
// data-mode (aggregate | components) and data-rendered (performance.now()
// in ms, i.e. time since navigation start).
"use strict";

(() => {
  const root = document.documentElement;
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const mode = new URLSearchParams(location.search).get("compose") === "components" ? "components" : "aggregate";
  const storeKey = `gistfans:profile:${id}`;
  const $ = (selector) => document.querySelector(selector);
  let requests = 0;
  let memory = null; // the kept ETag and body, when sessionStorage is unavailable

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
  // the API's own message.
  async function getJson(url, headers) {
    requests += 1;
    // no-store: the page does its own revalidation, and must see the 304.
    const resp = await fetch(url, { headers: { Accept: "application/json", ...headers }, cache: "no-store" });
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

  function kept() {
    try {
      return JSON.parse(sessionStorage.getItem(storeKey)) || memory;
    } catch (_) {
      return memory;
    }
  }

  function keep(etag, body) {
    memory = { etag, body };
    try {
      sessionStorage.setItem(storeKey, JSON.stringify(memory));
    } catch (_) {
      // storage full or disabled: the in-memory copy serves this page's refreshes
    }
  }

  // The profile this tab showed before, if another: the server learns which
  // profiles are opened after which and preloads the likely next ones. (Kept
  // in sessionStorage: pages send no Referer, their policy is no-referrer.)
  const LAST = "gistfans:lastProfile";
  function cameFrom() {
    let prev = null;
    try {
      prev = sessionStorage.getItem(LAST);
      sessionStorage.setItem(LAST, String(id));
    } catch (_) {
      return "";
    }
    const ok = prev && /^[1-9][0-9]{0,15}$/.test(prev) && Number(prev) <= Number.MAX_SAFE_INTEGER;
    return ok && prev !== String(id) ? `&from=${prev}` : "";
  }

  async function loadAggregate() {
    const old = kept();
    const url = `/api/user/stats-optimized?userId=${encodeURIComponent(id)}${cameFrom()}`;
    const r = await getJson(url, old ? { "If-None-Match": old.etag } : {});
    if (r.status === 304) return { status: 304, data: old.body };
    const etag = r.resp.headers.get("ETag");
    if (etag) keep(etag, r.body);
    return { status: r.status, data: r.body };
  }

  async function loadComponents() {
    const base = `/api/users/${encodeURIComponent(id)}`;
    const [stats, posts, history, social] = await Promise.all(
      ["stats", "posts", "star-history", "social"].map((part) => getJson(`${base}/${part}`, {})),
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
    days.forEach((d, i) => {
      const bh = ((h - 2 * pad) * d.stars) / max;
      const bar = svg("rect", { x: i * step + 2, y: h - pad - bh, width: step - 4, height: bh, class: "bar" });
      bar.append(svg("title", {}, `${d.date}: ${d.stars} stars`));
      chart.append(bar);
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

  function people(selector, sample) {
    $(selector).replaceChildren(
      ...sample.map((u) => {
        const li = el("li");
        li.append(el("a", { href: `/u/${u.id}${location.search}` }, `@${u.username}`));
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

  function finish(state, status) {
    root.dataset.mode = mode;
    root.dataset.requests = String(requests);
    root.dataset.status = String(status);
    root.dataset.state = state;
    root.dataset.rendered = performance.now().toFixed(1);
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
