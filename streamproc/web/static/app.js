// The live leaderboard page: asks /api/leaderboard every second and redraws the table.
// Plain browser JavaScript on purpose: the worker serves these files as they are, no build step.
"use strict";

const REFRESH_MS = 1000;
const SPARK_MINUTES = 30;
const ARROW_REFRESHES = 5;  // a rank movement stays visible this many refreshes
const state = { metric: "gmv", window: "5m", province: "", county: "" };
const last = new Map();  // streamer id -> {rank, arrow, ttl} of the board currently shown
let boardKey = "";
let timer = null;

const $ = (sel) => document.querySelector(sel);

function groupDigits(intText) {
  return intText.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

// Amounts arrive as exact yuan strings ("1234.50"); they are formatted as text, never as floats.
function formatYuan(yuanText) {
  const neg = yuanText.startsWith("-");
  const [whole, frac] = (neg ? yuanText.slice(1) : yuanText).split(".");
  return (neg ? "-" : "") + "¥" + groupDigits(whole) + "." + (frac || "00");
}

function formatValue(row, metric) {
  if (metric === "gmv") return formatYuan(row.gmv_yuan);
  // null below the minimum audience: no percentage worth ranking (and none shown)
  if (metric === "conversion") return row.conversion === null ? "—" : (row.conversion * 100).toFixed(1) + "%";
  return groupDigits(String(row[metric]));
}

const METRIC_LABEL = {
  gmv: "成交额 GMV", orders: "订单 orders", views: "进房 views", unique_viewers: "访客 unique", buyers: "买家 buyers",
  likes: "点赞 likes", concurrent_viewers: "在线 live", conversion: "转化率 conversion",
};

function sparkline(values) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 160 28");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? 160 / (values.length - 1) : 0;
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(26 - (Math.max(v, 0) / max) * 24).toFixed(1)}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.appendChild(line);
  svg.dataset.values = values.join(",");
  return svg;
}

function arrowFor(row) {
  const before = last.get(row.streamer_id);
  let arrow = "";
  let ttl = 0;
  if (before === undefined) {
    arrow = boardKey && last.size ? "new" : "";
    ttl = ARROW_REFRESHES;
  } else if (row.rank < before.rank) {
    arrow = "up"; ttl = ARROW_REFRESHES;
  } else if (row.rank > before.rank) {
    arrow = "down"; ttl = ARROW_REFRESHES;
  } else if (before.ttl > 1) {
    arrow = before.arrow; ttl = before.ttl - 1;
  }
  return { arrow, ttl, moved: before ? before.rank - row.rank : 0 };
}

function cell(tr, cls, text) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  if (text !== undefined) td.textContent = text;
  tr.appendChild(td);
  return td;
}

function render(board) {
  const key = [state.metric, state.window, state.province, state.county].join("|");
  if (key !== boardKey) { last.clear(); }
  const table = $("#board");
  const body = table.querySelector("tbody");
  const rows = [];
  const seen = new Map();
  for (const row of board.rows) {
    const mv = arrowFor(row);
    seen.set(row.streamer_id, { rank: row.rank, arrow: mv.arrow, ttl: mv.ttl });
    const tr = document.createElement("tr");
    tr.dataset.streamerId = row.streamer_id;
    tr.dataset.rank = row.rank;
    tr.dataset.score = String(row.score);
    cell(tr, "rank", String(row.rank));
    const move = cell(tr, "move");
    if (mv.arrow) {
      const span = document.createElement("span");
      span.className = mv.arrow;
      span.textContent = mv.arrow === "up" ? "▲" + (mv.moved || "") : mv.arrow === "down" ? "▼" + (-mv.moved || "") : mv.arrow === "new" ? "新" : "";
      move.appendChild(span);
      move.dataset.arrow = mv.arrow;
    }
    const who = cell(tr, "name");
    const name = document.createElement("span");
    name.className = "streamer-name";
    name.textContent = row.name || row.streamer_id;
    const sid = document.createElement("span");
    sid.className = "sid";
    sid.textContent = row.streamer_id;
    who.append(name, sid);
    cell(tr, "region", [row.province, row.county, row.village].filter(Boolean).join(" · "));
    cell(tr, "category", row.category || "");
    cell(tr, "value", formatValue(row, state.metric));
    const sp = cell(tr, "spark");
    sp.appendChild(sparkline(row.spark || []));
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  last.clear();
  for (const [k, v] of seen) last.set(k, v);
  boardKey = key;
  table.dataset.asOf = String(board.as_of);
  table.dataset.metric = board.metric;
  table.dataset.window = board.window;
  $("#value-head").textContent = METRIC_LABEL[state.metric];
  $("#as-of").textContent = board.as_of ? shanghaiTime(board.as_of) : "—";
  $("#empty").hidden = board.rows.length > 0;
}

function shanghaiTime(ms) {
  return new Date(ms).toLocaleString("zh-CN", { timeZone: "Asia/Shanghai", hour12: false });
}

function query() {
  const p = new URLSearchParams({ metric: state.metric, window: state.window, limit: "10", spark: String(SPARK_MINUTES) });
  if (state.province) p.set("province", state.province);
  if (state.county) p.set("county", state.county);
  return p;
}

async function refresh() {
  clearTimeout(timer);
  try {
    const res = await fetch("/api/leaderboard?" + query(), { cache: "no-store" });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || res.statusText);
    render(body);
    $("#error").hidden = true;
  } catch (err) {
    $("#error").textContent = "刷新失败 refresh failed: " + err.message;
    $("#error").hidden = false;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

async function freshness() {
  try {
    const f = await (await fetch("/api/freshness", { cache: "no-store" })).json();
    // Boards run on event time (a replayed day shows its own clock), so freshness is the last write.
    $("#freshness").textContent = f.flush_age_s === null ? "" : `更新于 ${Math.max(0, f.flush_age_s).toFixed(0)} 秒前 updated ${Math.max(0, f.flush_age_s).toFixed(0)} s ago`;
    // late payments are counted in their own (past) window: say that past numbers moved
    const n = f.late_corrections_total || 0;
    $("#corrections").textContent = n ? `过去窗口已更正 ${n} 次 · ${n} late orders corrected past windows` : "";
    $("#corrections").hidden = !n;
  } catch (err) { /* the board itself reports errors */ }
  setTimeout(freshness, 5000);
}

async function fillPlaces(select, level, filter) {
  const p = new URLSearchParams({ level, window: "today", metric: "gmv", limit: "100", ...filter });
  const keep = select.value;
  try {
    const body = await (await fetch("/api/regions?" + p, { cache: "no-store" })).json();
    const names = [...new Set((body.rows || []).map((r) => r[level]).filter(Boolean))].sort((a, b) => a.localeCompare(b, "zh-CN"));
    select.replaceChildren(new Option("全部 all", ""), ...names.map((n) => new Option(n, n)));
    select.value = names.includes(keep) ? keep : "";
  } catch (err) { /* keep what is there */ }
}

function wire() {
  for (const b of document.querySelectorAll("#metrics button")) {
    b.addEventListener("click", () => {
      state.metric = b.dataset.metric;
      document.querySelectorAll("#metrics button").forEach((x) => x.classList.toggle("on", x === b));
      refresh();
    });
  }
  for (const b of document.querySelectorAll("#windows button")) {
    b.addEventListener("click", () => {
      state.window = b.dataset.window;
      document.querySelectorAll("#windows button").forEach((x) => x.classList.toggle("on", x === b));
      refresh();
    });
  }
  $("#province").addEventListener("change", (e) => {
    state.province = e.target.value;
    state.county = "";
    fillPlaces($("#county"), "county", state.province ? { province: state.province } : {});
    refresh();
  });
  $("#county").addEventListener("change", (e) => { state.county = e.target.value; refresh(); });
  $("#province").addEventListener("focus", () => fillPlaces($("#province"), "province", {}));
}

wire();
fillPlaces($("#province"), "province", {});
fillPlaces($("#county"), "county", {});
refresh();
freshness();
