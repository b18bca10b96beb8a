// etcd-monitor status page: polls the collector's own REST API and renders it. No build step,
// no dependencies; every value on the page comes from /api/v1/*.
"use strict";

const REFRESH_MS = 5000;
const COLORS = ["#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e"];
const $ = (sel) => document.querySelector(sel);
let cluster = new URLSearchParams(location.search).get("cluster") || "";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

async function api(path) {
  const sep = path.includes("?") ? "&" : "?";
  const url = cluster ? `${path}${sep}cluster=${encodeURIComponent(cluster)}` : path;
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function optional(path) {
  try { return await api(path); } catch (_) { return null; }
}

const ms = (v) => (v == null ? "–" : v < 10 ? `${v.toFixed(2)} ms` : `${v.toFixed(1)} ms`);
const bytes = (v) => {
  if (v == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
};
const ago = (t) => {
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  return s < 90 ? `${s}s ago` : s < 5400 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
};

async function loadClusters() {
  const { clusters } = await api("/api/v1/clusters");
  const select = $("#cluster");
  select.replaceChildren(...clusters.map((c) => el("option", { value: c }, c)));
  if (!cluster || !clusters.includes(cluster)) cluster = clusters[0] || "";
  select.value = cluster;
  select.onchange = () => { cluster = select.value; refresh(); };
}

function renderSummary(s) {
  const health = $("#cluster-health");
  health.textContent = s.healthy ? "healthy" : "unhealthy";
  health.className = "v " + (s.healthy ? "ok" : "bad");
  const leader = $("#leader");
  leader.textContent = s.leader ? `${s.leader.name || s.leader.id} (term ${s.leader.term})` : "none";
  leader.className = "v " + (s.leader ? "" : "bad");
  const up = $("#members-up");
  up.textContent = `${s.available_members} / ${s.member_count}`;
  up.className = "v " + (s.available_members === s.member_count ? "ok" : s.quorum_ok ? "warn" : "bad");
  const q = $("#quorum");
  q.textContent = s.quorum_ok ? `ok (needs ${s.quorum_size})` : `lost (needs ${s.quorum_size})`;
  q.className = "v " + (s.quorum_ok ? "ok" : "bad");
  $("#leader-changes").textContent = s.leader_changes_total;
  $("#rate").textContent = s.revision_rate_per_second == null ? "–" : s.revision_rate_per_second.toFixed(1);
  const problems = [];
  for (const a of s.alarms || []) problems.push(`Alarm ${a.alarm || a.kind || JSON.stringify(a)} on ${a.member || a.member_id || "a member"}`);
  if (s.split_brain && s.split_brain.detected) problems.push(`Split brain: ${s.split_brain.reasons.join("; ")}`);
  if (s.possible_partition) problems.push(`Possible partition: cannot reach ${s.unreachable_members.join(", ")}`);
  const box = $("#problems");
  box.hidden = problems.length === 0;
  box.replaceChildren(...problems.map((p) => el("div", { class: "bad" }, p)));
}

function renderMembers(members, diagnosis) {
  const verdicts = new Map();
  for (const d of (diagnosis && diagnosis.members) || []) verdicts.set(d.member, d);
  const rows = members.map((m) => {
    const label = m.name || m.id;
    const mode = m.agent_mode || "none";
    const kernel = m.kernel && m.kernel.wal_fsync ? m.kernel.wal_fsync.p99_ms : null;
    const server = m.server ? m.server.wal_fsync_p95_ms : null;
    const lat = m.latency || {};
    const verdict = verdicts.get(label);
    return el("tr", { "data-member": label },
      el("td", { class: "member-name" }, label),
      el("td", { class: "role" }, m.is_leader ? el("span", { class: "badge ok" }, "leader") : "follower"),
      el("td", { class: m.reachable ? "ok" : "bad" }, m.reachable ? "yes" : `no${m.error ? ": " + m.error : ""}`),
      el("td", { class: "agent-mode " + (mode === "ebpf" ? "ok" : mode === "none" ? "muted" : "warn") }, mode),
      el("td", { class: "num raft-index" }, m.status ? String(m.status.raft_index) : "–"),
      el("td", { class: "num" }, bytes(m.status ? m.status.db_size_bytes : null)),
      el("td", { class: "num server-fsync" }, ms(server)),
      el("td", { class: "num kernel-fsync" }, ms(kernel)),
      el("td", { class: "num" }, ms(lat.read ? lat.read.p99_ms : null)),
      el("td", { class: "num" }, ms(lat.write ? lat.write.p99_ms : null)),
      diagnosisCell(verdict),
    );
  });
  $("#member-table tbody").replaceChildren(...rows);
}

// The diagnosis engine's verdict: the cause (with the neighbour, reason or peer), the numbers
// behind it on hover.
function diagnosisCell(d) {
  if (!d) return el("td", { class: "diagnosis muted" }, "–");
  let text = d.cause;
  if (d.reason) text += ` (${d.reason})`;
  if (d.neighbor) text += ` (pid ${d.neighbor.pid} ${d.neighbor.comm})`;
  if (d.peer) text += d.peer_cause ? ` (peer ${d.peer}: ${d.peer_cause})` : ` (peer ${d.peer})`;
  if (d.cgroup) text += ` (cgroup ${d.cgroup})`;
  const cls = d.cause === "healthy" ? "ok" : d.cause === "inconclusive" ? "muted" : "bad";
  return el("td", { class: `diagnosis ${cls}`, title: d.summary || "" }, text);
}

// The last leader changes, newest first, each with why (the previous leader's verdict then).
function renderLeaderChanges(data) {
  const history = ((data && data.history) || []).slice(-5).reverse();
  const rows = history.map((c) => {
    const x = c.explanation;
    const from = (x && x.previous_leader_name) || c.old_leader || "–";
    const cause = x && x.previous_leader ? x.previous_leader.cause : null;
    return el("tr", { class: "leader-change" },
      el("td", {}, ago(c.at_ms)),
      el("td", {}, `${from} → ${c.new_leader_name || c.new_leader}`),
      el("td", {}, String(c.term)),
      el("td", { class: cause == null ? "muted" : cause === "healthy" ? "ok" : "bad" }, cause || "not diagnosed"),
      el("td", { class: "why" }, x ? x.summary : "from before the collector's diagnosis"),
    );
  });
  $("#leader-history tbody").replaceChildren(...rows);
  $("#leader-history").hidden = rows.length === 0;
  $("#no-leader-changes").hidden = rows.length !== 0;
}

function renderAlerts(data) {
  const list = (data && data.alerts) || [];
  const rows = list.map((a) => {
    const labels = a.labels || {};
    const ann = a.annotations || {};
    const sev = a.severity || labels.severity || "";
    const since = a.active_since_ms || a.started_at_ms || a.since_ms || a.ts_ms;
    return el("tr", { class: "alert" },
      el("td", { class: sev === "critical" ? "bad" : "warn" }, sev),
      el("td", { class: "alert-name" }, a.name || a.rule || labels.alertname || ""),
      el("td", {}, a.silenced_by ? `${a.state} (silenced)` : a.state || ""),
      el("td", {}, a.member || labels.member || ""),
      el("td", {}, since ? ago(since) : ""),
      el("td", {}, ann.summary || a.summary || a.message || ""),
    );
  });
  $("#alerts tbody").replaceChildren(...rows);
  $("#alerts").hidden = rows.length === 0;
  $("#no-alerts").hidden = rows.length !== 0;
}

function renderChart(points) {
  const byMember = new Map();
  for (const p of points) {
    if (!byMember.has(p.member)) byMember.set(p.member, []);
    byMember.get(p.member).push(p);
  }
  const values = points.flatMap((p) => [p.wal_fsync_window_p99_ms, p.kernel_wal_fsync_window_p99_ms]).filter((v) => v != null);
  const W = 1000, H = 240, L = 50, B = 22, T = 10;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + T}`);
  svg.setAttribute("preserveAspectRatio", "none");
  // The x axis spans the data (at least 5 minutes, at most 30), so a fresh collector's first
  // minutes fill the chart instead of a sliver at its right edge.
  const now = Date.now();
  const first = points.length ? Math.min(...points.map((p) => p.ts_ms)) : now;
  const t0 = Math.max(now - 30 * 60 * 1000, Math.min(first, now - 5 * 60 * 1000));
  const max = Math.max(1, ...values) * 1.1;
  const x = (t) => L + ((t - t0) / (now - t0)) * (W - L - 10);
  const y = (v) => T + (H - B) * (1 - v / max);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    svg.append(e);
    return e;
  };
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    add("line", { x1: L, x2: W - 10, y1: y(v), y2: y(v), stroke: "#eaeef2" });
    // The y axis is the p99 in milliseconds: the top tick says so.
    add("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#656d76", class: "axis-value" }, `${v.toFixed(v < 10 ? 1 : 0)}${i === 4 ? " ms" : ""}`);
  }
  // The x axis is wall-clock time: minutes before now, a tick every 5 minutes (every minute
  // when the span is short), with "now" at the right edge.
  const spanMin = (now - t0) / 60000;
  const step = spanMin > 10 ? 5 : 1;
  const axis = { y: H + T - 4, "font-size": 11, fill: "#656d76", class: "axis-time" };
  for (let m = step; m < spanMin - step / 2; m += step) {
    add("line", { x1: x(now - m * 60000), x2: x(now - m * 60000), y1: T, y2: H - B + T, stroke: "#f3f4f6" });
    add("text", { ...axis, x: x(now - m * 60000), "text-anchor": "middle" }, `−${m} min`);
  }
  add("text", { ...axis, x: L, "text-anchor": "start" }, `−${Math.round(spanMin)} min`);
  add("text", { ...axis, x: W - 10, "text-anchor": "end" }, "now");
  const legend = [];
  let i = 0;
  for (const [member, series] of byMember) {
    const color = COLORS[i++ % COLORS.length];
    for (const [field, dash, kind] of [["kernel_wal_fsync_window_p99_ms", "", "kernel"], ["wal_fsync_window_p99_ms", "5 4", "etcd"]]) {
      const xy = series.filter((p) => p[field] != null && p.ts_ms >= t0).map((p) => [x(p.ts_ms), y(p[field])]);
      if (xy.length === 0) continue;
      add("polyline", { points: xy.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" "), fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": dash, "data-member": member, "data-kind": kind, class: "series" });
      // Dots too, so a series of one point (a young collector) is visible.
      for (const [a, b] of xy) {
        add("circle", { cx: a.toFixed(1), cy: b.toFixed(1), r: kind === "kernel" ? 2.5 : 2, fill: kind === "kernel" ? color : "#fff", stroke: color, class: "point" });
      }
    }
    legend.push(el("span", {}, el("i", { style: `background:${color}` }), member));
  }
  if (values.length === 0) {
    add("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#656d76" }, "No samples yet: values appear after two metrics intervals.");
  }
  $("#fsync-chart").replaceChildren(svg);
  $("#fsync-legend").replaceChildren(...legend);
}

// Which collector leads (--ha-election): only the leader sends notifications.
function renderHa(ha) {
  const section = $("#ha");
  section.hidden = !(ha && ha.enabled);
  if (section.hidden) return;
  const role = ha.is_leader ? `leader (term ${ha.term})` : "follower";
  $("#ha-text").replaceChildren(
    "This collector: ", el("strong", {}, ha.id), ` — ${role}. Leader: `,
    el("strong", { class: ha.leader ? "" : "bad" }, ha.leader || "none"),
    ` · lease TTL ${ha.ttl_seconds}s · terms won ${ha.acquired}, lost ${ha.lost}.`,
  );
}

async function refresh() {
  try {
    if (!cluster) await loadClusters();
    const [status, members, history, alerts, diagnosis, leader] = await Promise.all([
      api("/api/v1/cluster/status"),
      api("/api/v1/cluster/members"),
      api("/api/v1/metrics/history?since=30m&limit=5000"),
      optional("/api/v1/alerts"),
      optional("/api/v1/diagnosis"),
      optional("/api/v1/cluster/leader"),
    ]);
    renderSummary(status);
    renderMembers(members.members, diagnosis);
    renderLeaderChanges(leader);
    renderChart(history.points || []);
    renderAlerts(alerts);
    renderHa(await optional("/api/v1/ha"));
    const u = $("#updated");
    u.textContent = `updated ${new Date().toLocaleTimeString()}`;
    u.dataset.updatedAt = String(Date.now());
  } catch (e) {
    $("#updated").textContent = `error: ${e.message}`;
  }
}

loadClusters().then(refresh, (e) => { $("#updated").textContent = `error: ${e.message}`; });
setInterval(refresh, REFRESH_MS);
