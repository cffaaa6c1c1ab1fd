// The live dashboard: totals, trends, the streamer board, products and the funnel of one view.
// Plain browser JavaScript on purpose: the worker serves these files as they are, no build step.
//
// One polling loop (tick) asks the API for the current view. Every tick asks the board, the totals and
// the freshness; the slower panels (charts, products, funnel, a streamer's detail) take turns, one per
// tick; a change of view (metric, window, filter, streamer) asks for everything at once on the next
// tick. A tick never overlaps another, so clicking fast cannot multiply the polling. Each answer is
// drawn only if it belongs to the current view and is newer than what a panel shows (the stale-response
// guards: `view` and `seq`). What the view is lives in the URL, so a view can be shared and reloaded.
"use strict";

const REFRESH_MS = 1000;
const STALE_AFTER_S = 10;      // no flush for this long: the numbers no longer move, and the page says so
const SPARK_MINUTES = 30;
const MAX_IN_FLIGHT = 3;       // below the API's concurrent answers (4), so one page never meets a 429
const ARROW_REFRESHES = 5;     // a rank movement stays visible this many refreshes
const MINUTE_MS = 60000;
const METRICS = ["gmv", "orders", "views", "unique_viewers", "buyers", "likes", "concurrent_viewers", "conversion"];
const WINDOWS = ["1m", "5m", "1h", "today", "session"];
const FILTERS = ["platform", "category", "province", "county"];
const PRODUCT_METRICS = ["gmv", "orders", "buyers"];
const FAST = ["board", "summary", "freshness"];

const METRIC_LABEL = {
  gmv: "成交额 GMV", orders: "订单 orders", views: "进房 views", unique_viewers: "访客 unique", buyers: "买家 buyers",
  likes: "点赞 likes", concurrent_viewers: "在线 live", conversion: "转化率 conversion",
};
const WINDOW_LABEL = { "1m": "近1分钟", "5m": "近5分钟", "1h": "近1小时", today: "今日 today", session: "本场 session" };
const PLATFORM_LABEL = { taobao: "淘宝直播 Taobao", douyin: "抖音 Douyin", kuaishou: "快手 Kuaishou" };
const CATEGORY_LABEL = {
  fruit: "水果 fruit", vegetables: "蔬菜 vegetables", grain: "粮油 grain", tea: "茶叶 tea", flowers: "花卉 flowers",
  meat_eggs: "肉禽蛋 meat & eggs", aquatic: "水产 aquatic", specialties: "特产 specialties", daily_goods: "日用 daily goods",
};
const STAGE_LABEL = { entered: ["进房", "entered", "人", "次"], paid: ["支付", "paid", "人", "单"], repeat: ["复购", "repeat", "人", "单"] };

const state = { metric: "gmv", window: "5m", platform: "", category: "", province: "", county: "", streamer: "" };
const last = new Map();  // streamer id -> {rank, arrow, ttl} of the board currently shown
let boardKey = "";
let view = 0;            // bumped by every change of view: answers for an older view are dropped
const seq = {};          // panel -> number of its latest request; shown[panel]: of the answer drawn
const shown = {};
let fullFor = -1;        // the view whose every panel was last asked for
let turn = 0;            // which slow panel this tick asks
let timer = null;
let running = false;
let again = false;
let flushWall = null;    // wall-clock ms of the last flush the server reported (its age keeps counting)
let unreachable = false; // the last tick could not reach the server
let lastBoard = null;
const charts = {};

const $ = (sel) => document.querySelector(sel);

// -- formatting: money arrives as integers of fen or exact yuan strings, never formatted from floats

function groupDigits(intText) {
  return intText.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

function formatYuan(yuanText) {
  const neg = yuanText.startsWith("-");
  const [whole, frac] = (neg ? yuanText.slice(1) : yuanText).split(".");
  return (neg ? "-" : "") + "¥" + groupDigits(whole) + "." + (frac || "00");
}

function formatFen(fen) {
  const neg = fen < 0;
  const abs = Math.abs(fen);
  return formatYuan((neg ? "-" : "") + String(Math.floor(abs / 100)) + "." + String(abs % 100).padStart(2, "0"));
}

function formatCount(n) { return groupDigits(String(n)); }
function formatRate(r) { return r === null || r === undefined ? "—" : (r * 100).toFixed(1) + "%"; }

function formatMetric(metric, v) {
  if (v === null || v === undefined) return "—";
  if (metric === "gmv") return formatFen(v);
  if (metric === "conversion") return formatRate(v);
  return formatCount(v);
}

function formatValue(row, metric) {
  if (metric === "gmv") return formatYuan(row.gmv_yuan);
  // null below the minimum audience: no percentage worth ranking (and none shown)
  if (metric === "conversion") return row.conversion === null ? "—" : (row.conversion * 100).toFixed(1) + "%";
  return groupDigits(String(row[metric]));
}

function shanghaiTime(ms, withDate = true) {
  const opts = { timeZone: "Asia/Shanghai", hour12: false };
  if (!withDate) Object.assign(opts, { hour: "2-digit", minute: "2-digit" });
  return new Date(ms).toLocaleString("zh-CN", opts);
}

function placeLabel(key, value) {
  if (!value) return "";
  if (key === "platform") return PLATFORM_LABEL[value] || value;
  if (key === "category") return CATEGORY_LABEL[value] || value;
  return value;
}

// -- the view and the URL

function readURL() {
  const q = new URLSearchParams(location.search);
  state.metric = METRICS.includes(q.get("metric")) ? q.get("metric") : "gmv";
  state.window = WINDOWS.includes(q.get("window")) ? q.get("window") : "5m";
  for (const k of FILTERS) state[k] = q.get(k) || "";
  state.streamer = q.get("streamer") || "";
}

function writeURL(push) {
  const q = new URLSearchParams();
  if (state.metric !== "gmv") q.set("metric", state.metric);
  if (state.window !== "5m") q.set("window", state.window);
  for (const k of FILTERS) if (state[k]) q.set(k, state[k]);
  if (state.streamer) q.set("streamer", state.streamer);
  const url = location.pathname + (q.toString() ? "?" + q : "");
  if (url !== location.pathname + location.search) history[push ? "pushState" : "replaceState"](null, "", url);
}

// session is a board of its own (each streamer's broadcast): totals, products and funnel then cover today
function rangeWindow() { return state.window === "session" ? "today" : state.window; }
// a per-minute trend of one minute says nothing: the charts show the last hour, or today
function trendWindow() { return state.window === "today" ? "today" : "1h"; }
function productMetric() { return PRODUCT_METRICS.includes(state.metric) ? state.metric : "gmv"; }

// the filters of the view as one attribute value, stamped on each panel with the answer drawn there
function filterStamp() { return FILTERS.map((k) => state[k]).join("|"); }

function withFilters(params) {
  const p = new URLSearchParams(params);
  for (const k of FILTERS) if (state[k]) p.set(k, state[k]);
  return p;
}

function scopeText(win) {
  const where = FILTERS.map((k) => placeLabel(k, state[k])).filter(Boolean).join(" · ") || "全部 all";
  return `${WINDOW_LABEL[win]} · ${where}`;
}

// panel -> the request of the current view and what draws its answer
function panels() {
  const win = rangeWindow();
  const out = {
    board: { url: "/api/leaderboard?" + withFilters({ metric: state.metric, window: state.window, limit: "10", spark: String(SPARK_MINUTES) }), draw: renderBoard },
    summary: { url: "/api/summary?" + withFilters({ window: win }), draw: renderSummary },
    freshness: { url: "/api/freshness", draw: renderFreshness },
    trend: { url: "/api/series?" + withFilters({ metric: state.metric, window: trendWindow() }), draw: (b) => drawChart("trend", b, state.metric) },
    online: { url: "/api/series?" + withFilters({ metric: "concurrent_viewers", window: trendWindow() }), draw: (b) => drawChart("online", b, "concurrent_viewers") },
    products: { url: "/api/products?" + withFilters({ metric: productMetric(), window: win, limit: "10" }), draw: (b) => renderProducts($("#products"), b) },
    funnel: { url: "/api/funnel?" + withFilters({ window: win }), draw: (b) => renderFunnel($("#funnel"), b) },
  };
  if (state.streamer) {
    const id = encodeURIComponent(state.streamer);
    const one = { streamer_id: state.streamer };
    Object.assign(out, {
      detail: { url: `/api/streamer/${id}?` + new URLSearchParams({ window: win }), draw: renderDetail, missing: detailMissing },
      detailTrend: { url: "/api/series?" + new URLSearchParams({ ...one, metric: state.metric, window: trendWindow() }), draw: (b) => drawChart("detail-trend", b, state.metric) },
      detailFunnel: { url: "/api/funnel?" + new URLSearchParams({ ...one, window: win }), draw: (b) => renderFunnel($("#detail-funnel"), b) },
      detailProducts: { url: "/api/products?" + new URLSearchParams({ ...one, metric: productMetric(), window: win, limit: "10" }), draw: (b) => renderProducts($("#detail-products"), b) },
    });
  }
  return out;
}

// -- the one polling loop

function changed(push = false) {
  view += 1;
  writeURL(push);
  syncControls();
  kick();
}

function kick() {
  if (running) { again = true; return; }  // the running tick is followed at once by one for the new view
  clearTimeout(timer);
  timer = setTimeout(tick, 0);
}

// Every request of the page, the loop's and the filter options', goes through one limiter: the API
// computes 4 answers at once and answers 429 to a request that waits past a second for one.
let inFlight = 0;
const waiting = [];
async function limited(fn) {
  if (inFlight >= MAX_IN_FLIGHT) await new Promise((resolve) => waiting.push(resolve));
  inFlight += 1;
  try { return await fn(); } finally {
    inFlight -= 1;
    const next = waiting.shift();
    if (next) next();
  }
}

async function pool(jobs, limit) {
  const results = [];
  let next = 0;
  async function worker() {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]();
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
  return results;
}

async function ask(name, panel, forView) {
  const mine = (seq[name] = (seq[name] || 0) + 1);
  let res;
  let body;
  try {
    [res, body] = await limited(async () => {
      const r = await fetch(panel.url, { cache: "no-store" });
      return [r, await r.json()];
    });
  } catch (err) {
    return { name, reached: false, error: err };
  }
  if (forView !== view || mine < (shown[name] || 0)) return { name, reached: true, dropped: true };  // a stale answer
  shown[name] = mine;
  if (res.status === 404 && panel.missing) { panel.missing(body); return { name, reached: true }; }
  if (!res.ok) return { name, reached: true, error: new Error(body.error || res.statusText) };
  panel.draw(body);
  return { name, reached: true };
}

async function tick() {
  timer = null;
  running = true;
  const started = performance.now();
  const forView = view;
  const all = panels();
  const slow = Object.keys(all).filter((n) => !FAST.includes(n));
  let names = FAST.slice();
  if (unreachable) {
    names = ["freshness"];  // a probe while the server is away; every panel once it answers again
  } else if (fullFor !== forView) {
    names = names.concat(slow);
    fullFor = forView;
  } else if (slow.length) {
    names.push(slow[turn++ % slow.length]);
  }
  let results = [];
  try {
    results = await pool(names.map((n) => () => ask(n, all[n], forView)), MAX_IN_FLIGHT);
  } finally {
    unreachable = results.length > 0 && results.some((r) => !r.reached);
    const failed = results.find((r) => r.error);
    $("#error").hidden = !failed || !failed.reached;
    if (failed && failed.reached) $("#error").textContent = "刷新失败 refresh failed: " + failed.error.message;
    if (unreachable) fullFor = -1;  // once the server is back, every panel is asked again
    renderAge();
    running = false;
    if (again) {
      again = false;
      timer = setTimeout(tick, 0);
    } else {
      timer = setTimeout(tick, Math.max(0, REFRESH_MS - (performance.now() - started)));
    }
  }
}

// -- freshness: the age of the last flush keeps counting between answers and when none arrive

function renderFreshness(f) {
  flushWall = f.flush_age_s === null ? null : Date.now() - f.flush_age_s * 1000;
  // late payments are counted in their own (past) window: say that past numbers moved
  const n = f.late_corrections_total || 0;
  $("#corrections").textContent = n ? `过去窗口已更正 ${n} 次 · ${n} late orders corrected past windows` : "";
  $("#corrections").hidden = !n;
  renderAge();
}

function renderAge() {
  const age = flushWall === null ? null : Math.max(0, (Date.now() - flushWall) / 1000);
  const s = age === null ? "" : age.toFixed(0);
  const fresh = $("#freshness");
  fresh.textContent = age === null ? "暂无写入 nothing flushed yet" : `更新于 ${s} 秒前 updated ${s} s ago`;
  fresh.dataset.age = age === null ? "" : age.toFixed(1);
  const stale = unreachable || (age !== null && age > STALE_AFTER_S);
  const why = unreachable ? `连接中断，数据停在 ${s} 秒前 · server unreachable, data as of ${s} s ago`
    : `数据已 ${s} 秒未更新 · no new data for ${s} s`;
  document.body.classList.toggle("stale", stale);
  $("#board").dataset.stale = String(stale);
  for (const tr of document.querySelectorAll("#board tbody tr")) tr.classList.toggle("stale", stale);
  $("#stale-badge").hidden = !stale;
  $("#stale-badge").textContent = stale ? "已过期 stale" : "";
  $("#stale-banner").hidden = !stale;
  $("#stale-banner").textContent = stale ? why : "";
}

// -- the board

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

const SVG = "http://www.w3.org/2000/svg";

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

// A row's sparkline: the board's metric per minute, oldest first, ending with the minute that holds the
// board's end. That minute is still running unless the end is on a minute: it is drawn dashed with a hollow
// dot instead of as a dip. Each minute has a tooltip; the svg's own says the span and the top value.
function sparkline(values, metric, end) {
  const W = 120, H = 28;
  const svg = svgEl("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  svg.dataset.values = values.map((v) => (v === null ? "" : String(v))).join(",");
  const partial = end % MINUTE_MS !== 0;
  svg.dataset.partial = String(partial);
  const lastMinute = Math.ceil(end / MINUTE_MS) * MINUTE_MS - MINUTE_MS;
  const minuteOf = (i) => lastMinute - (values.length - 1 - i) * MINUTE_MS;
  const nums = values.filter((v) => v !== null);
  const max = Math.max(0, ...nums) || 1;
  const step = values.length > 1 ? W / (values.length - 1) : 0;
  const xy = (i) => [(i * step).toFixed(1), (H - 2 - (Math.max(values[i], 0) / max) * (H - 4)).toFixed(1)];
  const full = partial ? values.length - 1 : values.length;
  let run = [];
  const flush = () => {
    if (run.length) svg.appendChild(svgEl("polyline", { points: run.join(" ") }));
    run = [];
  };
  for (let i = 0; i < full; i++) {
    if (values[i] === null) { flush(); continue; }
    run.push(xy(i).join(","));
  }
  flush();
  const n = values.length;
  if (partial && n && values[n - 1] !== null) {
    const [x, y] = xy(n - 1);
    if (n > 1 && values[n - 2] !== null) svg.appendChild(svgEl("polyline", { class: "partial", points: `${xy(n - 2).join(",")} ${x},${y}` }));
    svg.appendChild(svgEl("circle", { class: "partial", cx: x, cy: y, r: 2 }));
  }
  const title = svgEl("title");
  const best = nums.length ? formatMetric(metric, Math.max(...nums)) : "—";
  title.textContent = `近${n}分钟 last ${n} min · ${METRIC_LABEL[metric]} · 最高 max ${best}` +
    (partial ? " · 最后一点为进行中的分钟 last point: minute in progress" : "");
  svg.prepend(title);
  for (let i = 0; i < n; i++) {  // hover slices: one tooltip per minute
    const hit = svgEl("rect", { class: "hit", x: Math.max(0, i * step - step / 2).toFixed(1), y: 0, width: Math.max(step, 2).toFixed(1), height: H });
    const t = svgEl("title");
    t.textContent = `${shanghaiTime(minuteOf(i), false)} ${formatMetric(metric, values[i])}` + (partial && i === n - 1 ? " (进行中 in progress)" : "");
    hit.appendChild(t);
    svg.appendChild(hit);
  }
  return svg;
}

function renderBoard(board) {
  const key = [board.metric, board.window, ...FILTERS.map((k) => state[k])].join("|");
  if (key !== boardKey) last.clear();
  lastBoard = board;
  const table = $("#board");
  const rows = [];
  const seen = new Map();
  for (const row of board.rows) {
    const mv = arrowFor(row);
    seen.set(row.streamer_id, { rank: row.rank, arrow: mv.arrow, ttl: mv.ttl });
    const tr = document.createElement("tr");
    tr.dataset.streamerId = row.streamer_id;
    tr.dataset.rank = row.rank;
    tr.dataset.score = String(row.score);
    if (row.streamer_id === state.streamer) tr.classList.add("selected");
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
    const link = document.createElement("a");
    link.href = "?" + new URLSearchParams({ ...Object.fromEntries(new URLSearchParams(location.search)), streamer: row.streamer_id });
    link.className = "streamer-name";
    link.textContent = row.name || row.streamer_id;
    const sid = document.createElement("span");
    sid.className = "sid";
    sid.textContent = row.streamer_id;
    who.append(link, sid);
    cell(tr, "region", [row.province, row.county, row.village].filter(Boolean).join(" · "));
    cell(tr, "category", placeLabel("category", row.category));
    cell(tr, "value", formatValue(row, board.metric));
    cell(tr, "spark").appendChild(sparkline(row.spark || [], board.metric, board.end));
    rows.push(tr);
  }
  table.querySelector("tbody").replaceChildren(...rows);
  last.clear();
  for (const [k, v] of seen) last.set(k, v);
  boardKey = key;
  table.dataset.asOf = String(board.as_of);
  table.dataset.metric = board.metric;
  table.dataset.window = board.window;
  table.dataset.filters = filterStamp();
  $("#value-head").textContent = METRIC_LABEL[board.metric];
  $("#spark-head").textContent = `近${SPARK_MINUTES}分钟 ${METRIC_LABEL[board.metric].split(" ")[0]} / 分`;
  $("#as-of").textContent = board.as_of ? shanghaiTime(board.as_of) : "—";
  $("#empty").hidden = board.rows.length > 0;
  renderAge();
}

// -- totals, products, funnel

function setKpi(name, value, text, sub) {
  const el = document.querySelector(`.kpi[data-kpi="${name}"]`);
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.querySelector(".v").textContent = text;
  el.querySelector(".sub").textContent = sub || "";
}

function renderSummary(s) {
  const o = $("#overview");
  o.dataset.window = s.window;
  o.dataset.asOf = String(s.as_of);
  o.dataset.filters = filterStamp();
  setKpi("gmv", s.gmv_fen, formatYuan(s.gmv_yuan), `支付 paid ${formatYuan(s.paid_yuan)}`);
  setKpi("orders", s.orders, formatCount(s.orders), `${formatCount(s.streamers)} 位主播 streamers`);
  setKpi("buyers", s.buyers, formatCount(s.buyers), `转化 conversion ${formatRate(s.conversion)}`);
  setKpi("aov", s.aov_fen, s.aov_yuan === null ? "—" : formatYuan(s.aov_yuan), "支付额 ÷ 订单 paid ÷ orders");
  setKpi("online", s.concurrent_viewers, formatCount(s.concurrent_viewers), `访客 unique ${formatCount(s.unique_viewers)}`);
  setKpi("refunds", s.refunds, formatCount(s.refunds), formatYuan(s.refund_yuan));
  $("#kpi-scope").textContent = scopeText(s.window) + (state.window === "session" ? " · 本场榜的汇总按今日 (a session is per streamer)" : "");
}

function renderProducts(table, p) {
  const body = table.querySelector("tbody");
  table.dataset.metric = p.metric;
  table.dataset.window = p.window;
  table.dataset.asOf = String(p.as_of);
  table.dataset.filters = filterStamp();
  const rows = p.rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.productId = r.product_id;
    cell(tr, "rank", String(r.rank));
    const name = cell(tr, "product");
    name.title = r.product_id;
    const pid = document.createElement("span");
    pid.className = "pid";
    pid.textContent = r.product_id;
    const cat = document.createElement("small");
    cat.className = "cat";
    cat.textContent = placeLabel("category", r.category);
    name.append(pid, cat);
    cell(tr, "num orders", formatCount(r.orders));
    cell(tr, "num gmv", formatYuan(r.gmv_yuan));
    cell(tr, "num buyers", formatCount(r.buyers));
    return tr;
  });
  body.replaceChildren(...rows);
  for (const th of table.querySelectorAll("th[data-col]")) th.classList.toggle("sorted", th.dataset.col === p.metric);
  const empty = table.parentElement.querySelector(".empty");
  if (empty) empty.hidden = p.rows.length > 0;
  if (table.id === "products") $("#products-scope").textContent = scopeText(p.window) + ` · 按 ${METRIC_LABEL[p.metric]}`;
}

function renderFunnel(list, f) {
  list.dataset.window = f.window;
  list.dataset.asOf = String(f.as_of);
  list.dataset.filters = filterStamp();
  const top = Math.max(1, ...f.stages.map((s) => s.people));
  list.replaceChildren(...f.stages.map((s) => {
    const [zh, en, personUnit, countUnit] = STAGE_LABEL[s.stage] || [s.stage, s.stage, "", ""];
    const li = document.createElement("li");
    li.dataset.stage = s.stage;
    li.dataset.people = String(s.people);
    li.dataset.count = String(s.count);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(2, (100 * s.people) / top).toFixed(1)}%`;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = `${zh} ${en}`;
    const people = document.createElement("b");
    people.className = "people";
    people.textContent = `${formatCount(s.people)} ${personUnit}`;
    const rest = document.createElement("small");
    rest.className = "count";
    rest.textContent = `${formatCount(s.count)} ${countUnit}` + (s.rate === null ? "" : ` · ${formatRate(s.rate)}`);
    li.append(bar, label, people, rest);
    return li;
  }));
  if (list.id === "funnel") $("#funnel-scope").textContent = scopeText(f.window);
}

// -- charts (uPlot, served from static/): the API's per-minute points; the newest minute, still running
// unless the series ends on a minute, is its own dashed series with a hollow point rather than a dip

const CHART_FONT = '12px "WenQuanYi Micro Hei", "Noto Sans CJK SC", "PingFang SC", sans-serif';

function chartValue(metric, v) {
  if (v === null || v === undefined) return null;
  if (metric === "gmv") return v / 100;         // yuan, for the axis only: the points themselves stay exact
  if (metric === "conversion") return v * 100;  // percent
  return v;
}

function axisText(metric, v) {
  if (v === null || v === undefined) return "—";
  if (metric === "gmv") return "¥" + groupDigits(String(Math.round(v)));
  if (metric === "conversion") return v.toFixed(1) + "%";
  return groupDigits(String(Math.round(v)));
}

function makeChart(id, metric) {
  const box = document.getElementById(id).querySelector(".chart");
  const color = metric === "concurrent_viewers" ? "#1a73e8" : "#e4393c";
  const fmt = (u, v) => axisText(metric, v);
  const opts = {
    width: Math.max(200, box.clientWidth), height: 170,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Asia/Shanghai"),
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(hi, metric === "conversion" ? 1 : 1) * 1.1] } },
    series: [
      { value: (u, ts) => (ts === null ? "—" : shanghaiTime(ts * 1000, false)) },
      { label: METRIC_LABEL[metric], stroke: color, width: 2, fill: color + "1a", value: fmt, points: { show: false } },
      { label: "进行中 this minute", stroke: color, width: 2, dash: [4, 4], value: fmt,
        points: { show: true, size: 7, fill: "#fff", stroke: color } },
    ],
    axes: [
      { font: CHART_FONT, stroke: "#7a6a5a", grid: { stroke: "#f3e9dc" }, ticks: { stroke: "#eadccc" },
        values: (u, splits) => splits.map((ts) => shanghaiTime(ts * 1000, false)) },  // 24 h, Asia/Shanghai
      { font: CHART_FONT, stroke: "#7a6a5a", grid: { stroke: "#f3e9dc" }, ticks: { stroke: "#eadccc" },
        size: 64, values: (u, vals) => vals.map((v) => axisText(metric, v)) },
    ],
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
  };
  return { metric, plot: new uPlot(opts, [[], [], []], box), box };
}

function drawChart(id, s, metric) {
  const fig = document.getElementById(id);
  if (!charts[id] || charts[id].metric !== metric) {
    if (charts[id]) charts[id].plot.destroy();
    charts[id] = makeChart(id, metric);
  }
  const points = s.points || [];
  const partial = s.end % MINUTE_MS !== 0 && points.length > 0;
  const xs = points.map((p) => p[0] / 1000);
  const ys = points.map((p) => chartValue(metric, p[1]));
  const done = partial ? ys.map((v, i) => (i === ys.length - 1 ? null : v)) : ys;
  const open = ys.map((v, i) => (partial && i >= ys.length - 2 ? v : null));
  const c = charts[id];
  c.plot.setSize({ width: Math.max(200, c.box.clientWidth), height: 170 });
  c.plot.setData([xs, done, open]);
  fig.dataset.metric = metric;
  fig.dataset.window = state.window;
  fig.dataset.start = String(s.start);
  fig.dataset.end = String(s.end);
  fig.dataset.asOf = String(s.end);
  fig.dataset.partial = String(partial);
  fig.dataset.filters = filterStamp();
  fig.dataset.points = JSON.stringify(points);  // the API's points, exact, as drawn
  fig.dataset.drawn = String(c.plot.data[0].length);  // what the chart holds, read back from it
  const span = trendWindow() === "today" ? "今日 today" : "近1小时 last hour";
  const who = id === "detail-trend" ? "" : " · " + scopeText(rangeWindow()).split(" · ").slice(1).join(" · ");
  fig.querySelector("figcaption").textContent = (metric === "concurrent_viewers" && id === "online"
    ? "在线人数 online viewers" : "趋势 trend · " + METRIC_LABEL[metric]) + ` / 分钟 per minute · ${span}${who}`;
}

window.addEventListener("resize", () => {
  for (const c of Object.values(charts)) c.plot.setSize({ width: Math.max(200, c.box.clientWidth), height: 170 });
});

// -- one streamer

function renderDetail(d) {
  const panel = $("#detail");
  panel.dataset.streamerId = d.streamer_id;
  panel.dataset.window = d.window.window;
  panel.dataset.asOf = String(d.window.end);
  $("#detail-name").textContent = d.name || d.streamer_id;
  $("#detail-who").textContent = [placeLabel("platform", d.platform), [d.province, d.county, d.village].filter(Boolean).join(" · "),
    placeLabel("category", d.category), d.streamer_id].filter(Boolean).join(" ｜ ");
  $("#detail-scope").textContent = WINDOW_LABEL[d.window.window] || d.window.window;
  const t = d.window.totals;
  const items = [["gmv", "成交额 GMV", formatYuan(t.gmv_yuan)], ["orders", "订单 orders", formatCount(t.orders)],
    ["buyers", "买家 buyers", formatCount(t.buyers)], ["unique_viewers", "访客 unique", formatCount(t.unique_viewers)],
    ["views", "进房 views", formatCount(t.views)], ["likes", "点赞 likes", formatCount(t.likes)],
    ["concurrent_viewers", "在线 live", formatCount(t.concurrent_viewers)], ["conversion", "转化率 conversion", formatRate(t.conversion)]];
  $("#detail-totals").replaceChildren(...items.flatMap(([k, label, text]) => {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.dataset.key = k;
    dd.textContent = text;
    return [dt, dd];
  }));
  const s = d.session;
  $("#detail-session").textContent = s
    ? `本场 live since ${shanghaiTime(s.start, false)}${s.session_id ? " · " + s.session_id : ""} · ${formatYuan(s.totals.gmv_yuan)} · ${formatCount(s.totals.orders)} 单 · 在线 ${formatCount(s.totals.concurrent_viewers)}`
    : "未在直播 not live now";
  panel.classList.remove("missing");
}

function detailMissing() {
  $("#detail").classList.add("missing");
  $("#detail-name").textContent = state.streamer;
  $("#detail-who").textContent = "未知主播 unknown streamer";
  $("#detail-totals").replaceChildren();
  $("#detail-session").textContent = "";
}

function openDetail(id) {
  if (state.streamer === id) return;
  state.streamer = id;
  changed(true);
}

function closeDetail() {
  if (!state.streamer) return;
  state.streamer = "";
  changed(true);
}

// -- controls

function syncControls() {
  document.querySelectorAll("#metrics button").forEach((b) => b.classList.toggle("on", b.dataset.metric === state.metric));
  document.querySelectorAll("#windows button").forEach((b) => b.classList.toggle("on", b.dataset.window === state.window));
  for (const k of FILTERS) {
    const sel = document.getElementById(k);
    if (state[k] && ![...sel.options].some((o) => o.value === state[k])) sel.add(new Option(placeLabel(k, state[k]), state[k]));
    sel.value = state[k];
  }
  const panel = $("#detail");
  const open = Boolean(state.streamer);
  if (panel.hidden === open) {
    panel.hidden = !open;
    document.body.classList.toggle("detail-open", open);
    window.dispatchEvent(new Event("resize"));  // the charts take the width left to them
    if (open) {
      panel.dataset.streamerId = "";
      $("#detail-name").textContent = state.streamer;
      for (const id of ["#detail-who", "#detail-scope", "#detail-session"]) $(id).textContent = "";
      $("#detail-totals").replaceChildren();
      $("#detail-funnel").replaceChildren();
      $("#detail-products tbody").replaceChildren();
    }
  }
  for (const tr of document.querySelectorAll("#board tbody tr")) tr.classList.toggle("selected", tr.dataset.streamerId === state.streamer);
}

const optionSeq = {};  // select -> number of its latest options request: an older list never lands last

async function fillOptions(select, level, filter) {
  const p = new URLSearchParams({ level, window: "today", metric: "gmv", limit: "100", ...filter });
  const mine = (optionSeq[select.id] = (optionSeq[select.id] || 0) + 1);
  try {
    const [res, body] = await limited(async () => {
      const r = await fetch("/api/regions?" + p, { cache: "no-store" });
      return [r, await r.json()];
    });
    if (!res.ok || mine !== optionSeq[select.id]) return;
    const found = (body.rows || []).map((r) => r[level]).filter(Boolean);
    const known = level === "platform" ? Object.keys(PLATFORM_LABEL) : [];
    const names = [...new Set([...known, ...found])].sort((a, b) => a.localeCompare(b, "zh-CN"));
    const keep = state[select.id];
    if (keep && !names.includes(keep)) names.push(keep);
    select.replaceChildren(new Option("全部 all", ""), ...names.map((n) => new Option(placeLabel(level, n), n)));
    select.value = keep;
  } catch (err) { /* keep what is there; the board reports errors */ }
}

function wire() {
  for (const b of document.querySelectorAll("#metrics button")) {
    b.addEventListener("click", () => { if (state.metric !== b.dataset.metric) { state.metric = b.dataset.metric; changed(); } });
  }
  for (const b of document.querySelectorAll("#windows button")) {
    b.addEventListener("click", () => { if (state.window !== b.dataset.window) { state.window = b.dataset.window; changed(); } });
  }
  for (const k of FILTERS) {
    document.getElementById(k).addEventListener("change", (e) => {
      state[k] = e.target.value;
      if (k === "province") {
        state.county = "";
        fillOptions($("#county"), "county", state.province ? { province: state.province } : {});
      }
      changed();
    });
  }
  $("#board tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr");
    if (!tr || !tr.dataset.streamerId) return;
    e.preventDefault();
    openDetail(tr.dataset.streamerId);
  });
  $("#detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDetail(); });
  window.addEventListener("popstate", () => { readURL(); view += 1; syncControls(); kick(); });
}

readURL();
wire();
syncControls();
writeURL(false);
tick();  // the view first: the filter options queue behind its requests
fillOptions($("#platform"), "platform", {});
fillOptions($("#category"), "category", {});
fillOptions($("#province"), "province", {});
fillOptions($("#county"), "county", state.province ? { province: state.province } : {});
setInterval(renderAge, 1000);  // the clock only: no request (the age keeps counting when answers stop)
