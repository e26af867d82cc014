// The wgsidecar console: one page over the collector's query API
// (GET /api/v1/flows and /api/v1/nodes). The read token lives in
// sessionStorage only (this tab); the view (range, filters, grouping) lives
// in the address, so a view can be shared without the token. One refresh
// makes three API calls: the chart, the top talkers and the map.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN = "wgsidecar.token";
  const COLLECTION = "wgsidecar.collection";
  const LIVE_EVERY_MS = 10000;
  const RANGES = { "5m": 300, "1h": 3600, "24h": 86400 };
  // The bucket of the time series for a range: at most a few hundred points.
  const bucketFor = (seconds) => (seconds <= 900 ? "1m" : seconds <= 6 * 3600 ? "5m" : "1h");
  const BUCKET_SECONDS = { "1m": 60, "5m": 300, "1h": 3600 };
  const FILTERS = ["node", "class", "addr", "port", "proto"];
  const VIEW = ["range", "start", "end", "split", "by", "top", "live"];

  let chart = null;
  let timer = null;
  let topRows = [];
  let sort = { key: "bytes", desc: true };
  let inflight = null;

  // ---- formatting

  function humanBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    let v = Number(n) || 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)) + " " + units[i];
  }
  const humanRate = (n) => humanBytes(n) + "/s";
  const humanCount = (n) => Number(n || 0).toLocaleString("en-US");

  // ---- the view in the address

  function viewFromURL() {
    const q = new URLSearchParams(location.search);
    const v = {};
    for (const k of [...FILTERS, ...VIEW, "collection"]) {
      if (q.has(k)) v[k] = q.get(k);
    }
    return v;
  }

  function setForm(v) {
    $("f-range").value = v.range in RANGES || v.range === "custom" ? v.range : "1h";
    $("f-start").value = v.start || "";
    $("f-end").value = v.end || "";
    $("f-live").checked = v.live !== "0";
    $("f-split").value = v.split === "node" ? "node" : "class";
    $("f-by").value = ["dst", "src", "node", "dstPort", "proto"].includes(v.by) ? v.by : "dst";
    $("f-top").value = v.top || "10";
    for (const k of FILTERS) $("f-" + k).value = v[k] || "";
    $("custom-range").hidden = $("f-range").value !== "custom";
  }

  function formView() {
    const v = { range: $("f-range").value, split: $("f-split").value, by: $("f-by").value, top: $("f-top").value };
    if (v.range === "custom") {
      v.start = $("f-start").value;
      v.end = $("f-end").value;
    }
    if (!$("f-live").checked) v.live = "0";
    for (const k of FILTERS) {
      const x = $("f-" + k).value.trim();
      if (x) v[k] = x;
    }
    return v;
  }

  function viewURL(v) {
    const q = new URLSearchParams();
    q.set("collection", collection());
    for (const [k, x] of Object.entries(v)) if (x !== undefined && x !== "") q.set(k, x);
    return "?" + q.toString();
  }

  function pushView(v, replace) {
    const url = viewURL(v);
    if (url !== location.search) history[replace ? "replaceState" : "pushState"](null, "", url);
  }

  // ---- the API

  const token = () => sessionStorage.getItem(TOKEN) || "";
  const collection = () => viewFromURL().collection || sessionStorage.getItem(COLLECTION) || "";

  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, params, signal) {
    const q = new URLSearchParams(params);
    q.set("collection", collection());
    const resp = await fetch(path + "?" + q.toString(), {
      headers: { Authorization: "Bearer " + token() },
      signal,
      cache: "no-store",
    });
    const text = await resp.text();
    if (!resp.ok) {
      let msg = text.trim();
      try {
        msg = JSON.parse(text).error || msg;
      } catch (e) {
        // plain-text error body
      }
      throw new APIError(resp.status, msg || resp.statusText);
    }
    return JSON.parse(text);
  }

  // The query parameters every view query shares: the range and filters.
  function scope(v) {
    const p = {};
    if (v.range === "custom") {
      if (!v.start || !v.end) throw new Error("a custom range needs both times");
      p.start = new Date(v.start).toISOString();
      p.end = new Date(v.end).toISOString();
    } else {
      p.since = v.range in RANGES ? v.range : "1h";
    }
    for (const k of FILTERS) if (v[k]) p[k] = v[k];
    return p;
  }

  function rangeSeconds(v) {
    if (v.range === "custom" && v.start && v.end) {
      return Math.max(60, (new Date(v.end) - new Date(v.start)) / 1000);
    }
    return RANGES[v.range] || 3600;
  }

  // ---- sign-in and the empty collector

  function show(which) {
    for (const id of ["signin", "empty", "app"]) $(id).hidden = id !== which;
    $("signout").hidden = which === "signin";
    $("who").textContent = which === "signin" ? "" : "collection " + collection();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN);
    stopLive();
    show("signin");
    $("signin-collection").value = collection();
    $("signin-error").textContent = message || "";
    $("signin-token").focus();
  }

  async function start() {
    if (!token() || !collection()) {
      signOut("");
      return;
    }
    let nodes;
    try {
      const body = await api("/api/v1/nodes", {});
      nodes = Array.isArray(body) ? body : body.nodes || [];
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        signOut("The collector refused this token.");
      } else {
        signOut("The collector answered: " + e.message);
      }
      return;
    }
    if (nodes.length === 0) {
      showEmpty();
      return;
    }
    $("node-list").replaceChildren(...nodes.map((n) => new Option(n.node)));
    show("app");
    setForm(viewFromURL());
    refresh();
  }

  function showEmpty() {
    show("empty");
    $("empty-config").textContent =
      "[LogStream]\n" +
      "URL = " + location.origin + "\n" +
      "Collection = " + collection() + "\n" +
      "PrivateID = $WGSIDECAR_LOG_ID   # 64 hex digits, e.g. from: openssl rand -hex 32\n";
  }

  // ---- refreshing the view

  async function refresh() {
    const v = formView();
    $("error").textContent = "";
    stopLive();
    if (inflight) inflight.abort();
    const ctl = new AbortController();
    inflight = ctl;
    let params;
    try {
      params = scope(v);
    } catch (e) {
      $("error").textContent = e.message;
      return;
    }
    const bucket = bucketFor(rangeSeconds(v));
    $("status").textContent = "loading…";
    try {
      const [series, top, map] = await Promise.all([
        api("/api/v1/flows", { ...params, group: v.split, bucket }, ctl.signal),
        api("/api/v1/flows", { ...params, group: v.by, top: v.top || "10" }, ctl.signal),
        api("/api/v1/flows", { ...params, group: "node,dstAddr", top: "24" }, ctl.signal),
      ]);
      drawChart(series.rows || [], v.split, bucket, rangeSeconds(v));
      fillTop(top.rows || [], v.by);
      drawMap(map.rows || []);
      $("status").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (e.name === "AbortError") return;
      if (e.status === 401 || e.status === 403) {
        signOut("The collector refused this token.");
        return;
      }
      $("error").textContent = e.message;
      $("status").textContent = "";
    } finally {
      if (inflight === ctl) inflight = null;
    }
    if (v.live !== "0" && v.range !== "custom") timer = setTimeout(refresh, LIVE_EVERY_MS);
  }

  function stopLive() {
    if (timer) clearTimeout(timer);
    timer = null;
  }

  // ---- the chart

  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

  function drawChart(rows, split, bucket, span) {
    const step = BUCKET_SECONDS[bucket];
    const keys = [...new Set(rows.map((r) => String(r[split] ?? "")))].sort();
    const now = Math.floor(Date.now() / 1000);
    const times = new Set(rows.map((r) => Math.floor(Date.parse(r.bucket) / 1000)));
    const xs = [...times].sort((a, b) => a - b);
    const index = new Map(xs.map((t, i) => [t, i]));
    const data = [xs];
    const series = [{ label: "time" }];
    keys.forEach((k, i) => {
      const tx = new Array(xs.length).fill(null);
      const rx = new Array(xs.length).fill(null);
      for (const r of rows) {
        if (String(r[split] ?? "") !== k) continue;
        const at = index.get(Math.floor(Date.parse(r.bucket) / 1000));
        tx[at] = (Number(r.txBytes) || 0) / step;
        rx[at] = (Number(r.rxBytes) || 0) / step;
      }
      const color = PALETTE[i % PALETTE.length];
      data.push(tx, rx);
      series.push(
        { label: (k || "-") + " tx", stroke: color, width: 2, value: (u, x) => (x == null ? "-" : humanRate(x)) },
        { label: (k || "-") + " rx", stroke: color, width: 2, dash: [6, 4], value: (u, x) => (x == null ? "-" : humanRate(x)) },
      );
    });
    if (chart) {
      chart.destroy();
      chart = null;
    }
    $("chart-empty").hidden = xs.length > 0;
    $("chart").dataset.points = String(xs.length);
    if (xs.length === 0) return;
    const width = Math.max(320, $("chart").clientWidth || 800);
    let top = 0;
    for (const ys of data.slice(1)) for (const y of ys) if (y > top) top = y;
    chart = new uPlot(
      {
        width,
        height: 260,
        series,
        scales: {
          x: { time: true, range: () => [Math.min(xs[0], now - span), Math.max(xs[xs.length - 1] + step, now)] },
          y: { range: () => [0, top > 0 ? top * 1.1 : 1] },
        },
        axes: [{}, { values: (u, ticks) => ticks.map(humanRate), size: 80 }],
        points: { show: xs.length < 3 },
      },
      data,
      $("chart"),
    );
  }

  // ---- top talkers

  // filterFor turns a row's key into the filters that select it.
  function filterFor(by, row) {
    const key = row[by];
    switch (by) {
      case "node":
        return { node: key };
      case "dstPort":
        return { port: String(key) };
      case "proto":
        return { proto: String(key) };
      default: {
        // dst and src are "ip:port" (or a bare address for anonymised rows).
        const s = String(key);
        const m = s.match(/^\[(.*)\]:(\d+)$/) || s.match(/^([^:]*):(\d+)$/);
        const f = { addr: m ? m[1] : s };
        if (m && by === "dst" && m[2] !== "0") f.port = m[2];
        return f;
      }
    }
  }

  function fillTop(rows, by) {
    topRows = rows.map((r) => ({
      row: r,
      key: String(r[by] ?? "-"),
      bytes: (Number(r.txBytes) || 0) + (Number(r.rxBytes) || 0),
      txBytes: Number(r.txBytes) || 0,
      rxBytes: Number(r.rxBytes) || 0,
      pkts: (Number(r.txPkts) || 0) + (Number(r.rxPkts) || 0),
      flows: Number(r.flows) || 0,
    }));
    renderTop(by);
  }

  function renderTop(by) {
    by = by || $("f-by").value;
    const k = sort.key;
    const sorted = [...topRows].sort((a, b) => {
      const c = k === "key" ? a.key.localeCompare(b.key, "en", { numeric: true }) : a[k] - b[k];
      return sort.desc ? -c : c;
    });
    for (const b of document.querySelectorAll("#top th button")) {
      if (b.dataset.sort === k) b.setAttribute("aria-sort", sort.desc ? "descending" : "ascending");
      else b.removeAttribute("aria-sort");
    }
    const body = document.querySelector("#top tbody");
    if (sorted.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 6;
      td.className = "muted";
      td.textContent = "No flows in this range.";
      tr.append(td);
      body.replaceChildren(tr);
      return;
    }
    body.replaceChildren(
      ...sorted.map((t) => {
        const tr = document.createElement("tr");
        tr.dataset.bytes = String(t.bytes);
        const a = document.createElement("a");
        const next = { ...formView(), ...filterFor(by, t.row) };
        a.href = viewURL(next);
        a.textContent = t.key;
        a.title = "filter the page by " + t.key;
        a.addEventListener("click", (ev) => {
          if (ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
          ev.preventDefault();
          pushView(next, false);
          setForm(next);
          refresh();
        });
        const cells = [
          a,
          humanBytes(t.bytes),
          humanBytes(t.txBytes),
          humanBytes(t.rxBytes),
          humanCount(t.pkts),
          humanCount(t.flows),
        ];
        cells.forEach((c, i) => {
          const td = document.createElement("td");
          if (i > 0) td.className = "num";
          td.append(c);
          tr.append(td);
        });
        return tr;
      }),
    );
  }

  // ---- the map

  const SVG = "http://www.w3.org/2000/svg";
  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function drawMap(rows) {
    const svg = $("map");
    const edges = rows
      .map((r) => ({ node: String(r.node ?? "-"), addr: String(r.dstAddr ?? "-"), bytes: (Number(r.txBytes) || 0) + (Number(r.rxBytes) || 0) }))
      .filter((e) => e.bytes > 0);
    const nodes = [...new Set(edges.map((e) => e.node))].sort();
    const addrs = [...new Set(edges.map((e) => e.addr))].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
    const row = 26;
    const height = Math.max(80, Math.max(nodes.length, addrs.length) * row + 30);
    const width = 560;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("height", String(height));
    const parts = [];
    if (edges.length === 0) {
      parts.push(el("text", { x: 10, y: 30, class: "muted" }, "No flows in this range."));
      svg.replaceChildren(...parts);
      return;
    }
    const y = (i, n) => 20 + ((i + 0.5) * (height - 30)) / n;
    const nodeY = new Map(nodes.map((n, i) => [n, y(i, nodes.length)]));
    const addrY = new Map(addrs.map((a, i) => [a, y(i, addrs.length)]));
    const max = Math.max(...edges.map((e) => e.bytes));
    const x1 = 150;
    const x2 = width - 170;
    for (const e of edges) {
      const w = 1 + (9 * e.bytes) / max;
      const line = el("path", {
        d: `M${x1},${nodeY.get(e.node)} C${(x1 + x2) / 2},${nodeY.get(e.node)} ${(x1 + x2) / 2},${addrY.get(e.addr)} ${x2},${addrY.get(e.addr)}`,
        class: "edge",
        "stroke-width": w.toFixed(1),
      });
      line.append(el("title", {}, `${e.node} → ${e.addr}: ${humanBytes(e.bytes)}`));
      parts.push(line);
    }
    for (const n of nodes) {
      parts.push(el("circle", { cx: x1, cy: nodeY.get(n), r: 6, class: "node" }));
      parts.push(el("text", { x: x1 - 10, y: nodeY.get(n) + 4, "text-anchor": "end" }, n));
    }
    for (const a of addrs) {
      parts.push(el("circle", { cx: x2, cy: addrY.get(a), r: 5, class: "addr" }));
      parts.push(el("text", { x: x2 + 10, y: addrY.get(a) + 4 }, a));
    }
    svg.replaceChildren(...parts);
  }

  // ---- wiring

  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const typed = $("signin-collection").value.trim();
    sessionStorage.setItem(TOKEN, $("signin-token").value);
    sessionStorage.setItem(COLLECTION, typed);
    $("signin-token").value = "";
    const q = new URLSearchParams(location.search);
    q.set("collection", typed);
    history.replaceState(null, "", "?" + q.toString());
    start();
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("empty-retry").addEventListener("click", () => start());
  $("filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    pushView(formView(), false);
    refresh();
  });
  $("f-clear").addEventListener("click", () => {
    for (const k of FILTERS) $("f-" + k).value = "";
    pushView(formView(), false);
    refresh();
  });
  for (const id of ["f-range", "f-live", "f-split", "f-by", "f-class"]) {
    $(id).addEventListener("change", () => {
      $("custom-range").hidden = $("f-range").value !== "custom";
      if ($("f-range").value === "custom" && (!$("f-start").value || !$("f-end").value)) return;
      pushView(formView(), false);
      refresh();
    });
  }
  for (const b of document.querySelectorAll("#top th button")) {
    b.addEventListener("click", () => {
      const k = b.dataset.sort;
      sort = { key: k, desc: sort.key === k ? !sort.desc : k !== "key" };
      renderTop();
    });
  }
  window.addEventListener("popstate", () => {
    setForm(viewFromURL());
    refresh();
  });
  window.addEventListener("resize", () => {
    if (chart) chart.setSize({ width: Math.max(320, $("chart").clientWidth), height: 260 });
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !$("app").hidden && !timer && !inflight) refresh();
  });

  start();
})();
