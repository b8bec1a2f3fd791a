// The operator's status page: reads /status.json every few seconds and draws it (engine/hub/status.py).
// Plain DOM and inline SVG, nothing loaded from elsewhere; text from the hub goes in as text, never as markup.
"use strict";

const REFRESH_MS = 3000;
const SVG = "http://www.w3.org/2000/svg";
let lastOk = null;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : String(c ?? ""));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

const fmtInt = new Intl.NumberFormat("en-US");
function num(n, digits) {
  if (n === null || n === undefined) return "–";
  return digits === undefined ? fmtInt.format(n) : n.toLocaleString("en-US", {maximumFractionDigits: digits, minimumFractionDigits: digits});
}
function ms(v) { return v === null || v === undefined ? "–" : (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)) + " ms"; }
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function clock(unix) {
  const d = new Date(unix * 1000);
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
}
function rows(tbody, list) { tbody.replaceChildren(...list); }

// ---------------------------------------------------------------- the charts

// A line chart of several series over the same times; a null value breaks its line.
function lineChart(box, points, series, unit) {
  const W = 600, H = 220, L = 46, R = 8, T = 10, B = 22;
  const xs = points.map(p => p.t);
  let top = 0;
  for (const s of series) for (const p of points) if (p[s.key] !== null && p[s.key] > top) top = p[s.key];
  top = niceTop(top);
  const x = t => L + (W - L - R) * (xs.length > 1 ? (t - xs[0]) / (xs[xs.length - 1] - xs[0]) : 0);
  const y = v => T + (H - T - B) * (1 - v / top);
  const parts = [];
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4, yy = y(v);
    parts.push(svg("line", {class: "axis", x1: L, x2: W - R, y1: yy, y2: yy}));
    const label = svg("text", {class: "tick", x: L - 4, y: yy + 3, "text-anchor": "end"});
    label.textContent = String(+v.toFixed(2)) + (i === 4 && unit ? " " + unit : "");
    parts.push(label);
  }
  for (let i = 0; i < xs.length; i += Math.max(1, Math.floor(xs.length / 6))) {
    const label = svg("text", {class: "tick", x: x(xs[i]), y: H - 6, "text-anchor": "middle"});
    label.textContent = clock(xs[i]);
    parts.push(label);
  }
  let drawn = 0;
  for (const s of series) {
    let run = [];
    const flush = () => {
      // A lone value (its neighbours empty) is a dot; two or more make a line.
      if (run.length === 1) {
        const [cx, cy] = run[0].split(",");
        parts.push(svg("circle", {class: "s-" + s.key.split("_")[0], "data-series": s.name, cx: cx, cy: cy, r: 2.5}));
      } else if (run.length) {
        parts.push(svg("polyline", {class: "s-" + s.key.split("_")[0], "data-series": s.name, points: run.join(" ")}));
      }
      drawn += run.length;
      run = [];
    };
    for (const p of points) {
      if (p[s.key] === null || p[s.key] === undefined) { flush(); continue; }
      run.push(x(p.t).toFixed(1) + "," + y(p[s.key]).toFixed(1));
    }
    flush();
  }
  if (!drawn) {
    const t = svg("text", {class: "nodata", x: W / 2, y: H / 2, "text-anchor": "middle"});
    t.textContent = "no replies yet";
    parts.push(t);
  }
  box.replaceChildren(...parts);
}

function niceTop(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 6, 8, 10]) if (v <= m * p) return m * p;  // quarters of these are round
  return 10 * p;
}

// ---------------------------------------------------------------- the sections

function drawHeader(d) {
  const state = $("state");
  state.textContent = d.hub.state;
  state.className = "badge " + d.hub.state;
  $("since").textContent = "since " + d.hub.started_at + (d.hub.auth_disabled ? " · auth OFF (--no-auth)" : " · " + d.hub.credentials + " credentials");
  $("updated").textContent = "updated " + d.now;
  const banner = $("banner");
  if (d.hub.state === "fail-stop") { banner.hidden = false; banner.textContent = "Fail-stop: the hub answers nothing more; restart it (" + d.hub.failed + ")"; }
  else if (d.hub.state === "draining") { banner.hidden = false; banner.textContent = "Draining: the hub is stopping and refuses new requests."; }
  else banner.hidden = true;
}

function drawTiles(d) {
  const r = d.traffic.recent;
  $("t-settlements").textContent = num(r.settlements_per_s, 1);
  $("t-replies").textContent = num(r.replies_per_s, 1);
  $("t-p50").textContent = ms(r.p50_ms);
  $("t-p99").textContent = ms(r.p99_ms);
  const errs = Object.values(r.errors).reduce((a, b) => a + b, 0);
  $("t-errors").textContent = num(errs);
  $("t-errors").parentElement.classList.toggle("alert", errs > 0);
  const w = d.prepay.present ? d.prepay.warnings : null;
  $("t-prepay").textContent = w === null ? "–" : num(w);
  $("t-prepay").parentElement.classList.toggle("alert", w > 0);
  $("t-prepay-sub").textContent = d.prepay.present ? "insured provinces at or over " + d.prepay.threshold_pct + " %" : "no journal";
}

function drawCharts(d) {
  const pts = d.traffic.points;
  lineChart($("chart-rate"), pts, [
    {key: "replies_per_s", name: "replies"}, {key: "settlements_per_s", name: "settlements"}, {key: "errors_per_s", name: "errors"},
  ], "/s");
  lineChart($("chart-latency"), pts, [{key: "p50_ms", name: "p50"}, {key: "p99_ms", name: "p99"}], "ms");
}

function drawErrors(d) {
  rows($("errors").tBodies[0], d.errors.map(e => el("tr", {"data-code": e.code},
    el("td", {}, el("code", {}, e.code)), el("td", {class: "wrap meaning"}, e.message),
    el("td", {class: "num"}, num(e.last_minute)), el("td", {class: "num"}, num(e.last_15_minutes)),
    el("td", {class: "num"}, num(e.since_start)))));
  $("errors-empty").hidden = d.errors.length > 0;
}

function facts(dl, pairs) {
  const out = [];
  for (const [k, v] of pairs) out.push(el("dt", {}, k), el("dd", {}, v));
  dl.replaceChildren(...out);
}

function drawStore(d) {
  const s = d.store;
  const pairs = [
    ["journal rows", num(s.journal_rows)],
    ["since start", num(s.batches) + " batches, " + num(s.settlements) + " settlements, " + num(s.reversals) + " reversals"],
    ["fold", num(s.unfolded_rows) + " rows not folded yet · " + num(s.fold_s, 1) + " s folding since start"],
    ["WAL", bytes(s.wal_bytes) + " journal · " + bytes(s.keys_wal_bytes) + " keyed tables"],
    ["files", bytes(s.db_bytes) + " journal · " + bytes(s.keys_db_bytes) + " keyed tables"],
    ["disk free", s.disk_free_bytes === undefined ? "–" : bytes(s.disk_free_bytes) + " of " + bytes(s.disk_total_bytes)],
    ["queue", num(d.hub.queue_depth) + " of " + num(d.hub.queue_max) + " · " + num(d.hub.connections) + " TCP connections"],
    ["last closed period", s.last_closed ? s.last_closed.period + " (closed " + s.last_closed.closed_at + ")" : "none"],
    ["data folder", s.data_dir || "none (in memory)"],
  ];
  if (s.error) pairs.push(["store read", s.error]);
  facts($("store"), pairs);
}

function drawPrepay(d) {
  const p = d.prepay;
  const body = $("prepay").tBodies[0];
  const note = $("prepay-note");
  if (!p.present) { rows(body, []); note.hidden = false; note.textContent = p.note; $("prepay-threshold").textContent = ""; return; }
  $("prepay-threshold").textContent = "warning at " + p.threshold_pct + " %";
  rows(body, p.rows.map(r => {
    const pct = r.usage_pct;
    const bar = el("span", {class: "bar"}, el("span", {style: "width:" + Math.min(100, pct || 0) + "%"}));
    return el("tr", {class: r.warning ? "warning" : "", "data-prov": r.prov},
      el("td", {}, r.prov + " " + r.name + " " + r.name_en),
      el("td", {class: "num"}, r.deposit), el("td", {class: "num"}, r.used),
      el("td", {class: "flag"}, bar, pct === null ? "no deposit" : pct.toFixed(1) + " %"),
      el("td", {class: "flag"}, r.warning ? "⚠ warning" : ""));
  }));
  note.hidden = p.rows.length > 0;
  note.textContent = "No deposit and no cross-province settlement yet.";
}

function drawSignins(d) {
  const s = d.signins;
  $("signin-total").textContent = num(s.sign_ins) + " at " + num(s.institutions) + " institutions" +
    (s.rows.length < s.institutions ? " (the " + s.rows.length + " with most shown)" : "");
  rows($("signins").tBodies[0], s.rows.map(r => el("tr", {"data-code": r.fixmedins_code},
    el("td", {}, el("code", {}, r.fixmedins_code)), el("td", {class: "wrap"}, r.name), el("td", {}, r.admdvs),
    el("td", {class: "num"}, num(r.sign_ins)), el("td", {}, r.latest.startsWith(d.now.slice(0, 10)) ? r.latest.slice(11) : r.latest), el("td", {}, r.credentials.join(", ")))));
  $("signins-empty").hidden = s.rows.length > 0;
}

function windowLine(w, cls) {
  return el("div", {class: "window " + cls}, el("b", {}, w.admdvs), " ", w.begin + " → " + w.end, " ",
            el("span", {class: "muted"}, w.reason));
}

function drawMaintenance(d) {
  const m = d.maintenance, box = $("maintenance");
  if (!m.present) { box.replaceChildren(el("p", {class: "empty"}, m.note)); return; }
  const out = [el("h3", {}, "in force (" + m.in_force.length + ")")];
  out.push(...(m.in_force.length ? m.in_force.map(w => windowLine(w, "now")) : [el("p", {class: "empty"}, "none")]));
  out.push(el("h3", {}, "next (" + m.next.length + ")"));
  out.push(...(m.next.length ? m.next.map(w => windowLine(w, "next")) : [el("p", {class: "empty"}, "none announced")]));
  box.replaceChildren(...out);
}

function drawWorld(d) {
  const w = d.world;
  if (!w.present) { facts($("world"), [["world", w.note]]); return; }
  const changes = Array.isArray(w.changes) ? w.changes.join("; ") : w.changes;
  const pairs = [["version", w.version ?? "–"], ["loaded at", w.loaded_at ?? "–"], ["what changed", changes || "–"]];
  if (w.folder) pairs.push(["folder", w.folder]);
  for (const e of w.earlier || []) pairs.push(["earlier, " + e.loaded_at, e.changes]);
  facts($("world"), pairs);
}

// ---------------------------------------------------------------- the loop

async function refresh() {
  try {
    const r = await fetch("/status.json", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const d = await r.json();
    lastOk = d.now;
    for (const draw of [drawHeader, drawTiles, drawCharts, drawErrors, drawStore, drawPrepay, drawSignins, drawMaintenance, drawWorld]) {
      try { draw(d); } catch (e) { console.error(draw.name, e); }
    }
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  } catch (e) {
    const state = $("state");
    state.textContent = "unreachable";
    state.className = "badge unreachable";
    const banner = $("banner");
    banner.hidden = false;
    banner.textContent = "The hub does not answer (" + e.message + ")" + (lastOk ? "; last answer at " + lastOk : "") + ". Retrying.";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
