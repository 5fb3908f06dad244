// The operator's live view: polls /stats once a second, turns the byte counters into
// bitrates, and draws them on plain canvas (no charting library to ship or audit).

const POLL_MS = 1000;
const HISTORY = 120; // points kept per series: two minutes
const token = new URLSearchParams(location.search).get("token");
const statsUrl = "/stats" + (token ? `?token=${encodeURIComponent(token)}` : "");

const series = { in: [], out: [], rooms: [], people: [], streams: [] };
const perStream = new Map(); // key -> { bytes, at, history: [bps] }
let previousTotals = null;

const state = { ticks: 0, streams: [], error: null };
window.dashboard = state;

function push(list, value) {
  list.push(value);
  if (list.length > HISTORY) list.shift();
}

function rate(key, bytes, now) {
  const entry = perStream.get(key) || { bytes, at: now, history: [], bps: 0 };
  const dt = (now - entry.at) / 1000;
  if (dt > 0 && bytes >= entry.bytes) entry.bps = ((bytes - entry.bytes) * 8) / dt;
  entry.bytes = bytes;
  entry.at = now;
  entry.seen = now;
  push(entry.history, entry.bps);
  perStream.set(key, entry);
  return entry;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function formatBps(bps) {
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(0)} kbit/s`;
  return `${bps.toFixed(0)} bit/s`;
}

function formatLoss(fraction) {
  if (fraction === undefined || fraction === null) return "—";
  return `${(fraction * 100).toFixed(1)} %`;
}

function layerOf(stats, extra) {
  for (const source of [stats, extra || {}]) {
    for (const key of ["layer", "spatialLayer", "rid"]) {
      if (source[key] !== undefined && source[key] !== null) return String(source[key]);
    }
  }
  return "—";
}

// Lines on a canvas: each series [values, color], scaled to the largest value shown; the
// x axis spans at least MIN_SPAN points so the first seconds do not look like a dot.
const MIN_SPAN = 30;

function drawLines(canvas, lines, formatMax, grid = true) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  // Headroom above the largest value, so a flat line at the top stays in view.
  const max = Math.max(1, ...lines.flatMap(([values]) => values)) * 1.2;
  const span = Math.max(MIN_SPAN, ...lines.map(([values]) => values.length)) - 1;
  ctx.strokeStyle = "#e2e5ec";
  ctx.lineWidth = 1;
  for (let i = 0; grid && i <= 4; i++) {
    const y = Math.round((height - 14) * (i / 4)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(0, y);
    ctx.lineTo(width, y);
    ctx.stroke();
  }
  if (formatMax) {
    ctx.fillStyle = "#6b7385";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(formatMax(max), 4, 12);
  }
  for (const [values, color] of lines) {
    if (values.length < 2) continue;
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = (i / span) * width;
      const y = grid ? 2 + (height - 16) * (1 - v / max) : 2 + (height - 4) * (1 - v / max);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderRooms(stats, streams) {
  const container = document.getElementById("rooms");
  container.replaceChildren();
  const rooms = Object.entries(stats.signal.rooms);
  if (!rooms.length) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = "No rooms open.";
    container.append(empty);
  }
  for (const [rid, room] of rooms) {
    const section = document.createElement("article");
    section.className = "room";
    section.dataset.rid = rid;
    const title = document.createElement("h2");
    title.textContent = `${rid} · ${plural(room.members.length, "participant")}`;
    const members = document.createElement("div");
    members.className = "members";
    members.textContent = room.members.join(", ") || "(empty)";
    const table = document.createElement("table");
    table.innerHTML =
      "<thead><tr><th>stream</th><th>direction</th><th>peer</th><th>kind</th><th>codec</th>" +
      "<th>bitrate</th><th>loss</th><th>layer</th><th>last 2 min</th></tr></thead>";
    const body = document.createElement("tbody");
    for (const s of streams.filter((s) => s.rid === rid)) {
      const tr = document.createElement("tr");
      tr.dataset.stream = s.key;
      tr.append(
        cell(s.mid),
        cell(s.direction),
        cell(s.uid),
        cell(s.kind),
        cell(s.codec || ""),
        cell(formatBps(s.bps), "bitrate"),
        cell(formatLoss(s.loss), s.loss > 0.02 ? "lossy" : ""),
        cell(s.layer),
      );
      const spark = document.createElement("canvas");
      spark.width = 160;
      spark.height = 34;
      const td = document.createElement("td");
      td.append(spark);
      tr.append(td);
      body.append(tr);
      drawLines(spark, [[s.history, s.direction === "in" ? "#3b6cf6" : "#1f9d63"]], null, false);
    }
    table.append(body);
    section.append(title, members, table);
    container.append(section);
  }
}

function collect(stats, now) {
  const streams = [];
  const codecs = {}; // mid -> kind -> codec: a consumer forwards its producer's codec
  for (const [mid, pub] of Object.entries(stats.sfu.publications)) {
    codecs[mid] = Object.fromEntries(pub.producers.map((p) => [p.kind, p.codec]));
  }
  for (const [mid, pub] of Object.entries(stats.sfu.publications)) {
    const loss = pub.uplink ? pub.uplink.fractionLost ?? pub.uplink.lossFraction : undefined;
    pub.producers.forEach((p, i) => {
      const key = `in:${mid}:${i}`;
      const entry = rate(key, p.bytesIn, now);
      streams.push({
        key, mid, rid: pub.rid, uid: pub.uid, direction: "in", kind: p.kind, codec: p.codec,
        bps: entry.bps, history: entry.history, loss, layer: layerOf(p),
      });
    });
  }
  for (const [sid, sub] of Object.entries(stats.sfu.subscriptions)) {
    const down = sub.downstream || undefined;
    const loss = down ? down.fractionLost : undefined;
    sub.consumers.forEach((c, i) => {
      const key = `out:${sid}:${i}`;
      const entry = rate(key, c.bytesOut, now);
      streams.push({
        key, mid: sub.mid, rid: sub.rid, uid: sub.uid, direction: "out", kind: c.kind,
        codec: c.codec || (codecs[sub.mid] || {})[c.kind], bps: entry.bps, history: entry.history, loss, layer: layerOf(c, down),
      });
    });
  }
  for (const [key, entry] of perStream) if (entry.seen !== now) perStream.delete(key);
  return streams;
}

async function tick() {
  let stats;
  try {
    const response = await fetch(statsUrl, { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
    stats = await response.json();
  } catch (error) {
    state.error = String(error);
    document.getElementById("summary").textContent = `cannot read /stats: ${error}`;
    return;
  }
  const now = performance.now();
  const streams = collect(stats, now);
  const totalIn = streams.filter((s) => s.direction === "in").reduce((a, s) => a + s.bps, 0);
  const totalOut = streams.filter((s) => s.direction === "out").reduce((a, s) => a + s.bps, 0);
  const rooms = Object.values(stats.signal.rooms);
  const people = rooms.reduce((a, r) => a + r.members.length, 0);
  const published = rooms.reduce((a, r) => a + r.publications.length, 0);
  if (previousTotals !== null) {
    push(series.in, totalIn);
    push(series.out, totalOut);
  }
  previousTotals = { totalIn, totalOut };
  push(series.rooms, rooms.length);
  push(series.people, people);
  push(series.streams, published);
  drawLines(document.getElementById("chart-bitrate"), [
    [series.in, "#3b6cf6"],
    [series.out, "#1f9d63"],
  ], formatBps);
  drawLines(document.getElementById("chart-counts"), [
    [series.rooms, "#8a5cf6"],
    [series.people, "#3b6cf6"],
    [series.streams, "#1f9d63"],
  ], (max) => String(max));
  document.getElementById("summary").textContent =
    `${plural(rooms.length, "room")} · ${plural(people, "participant")} · ` +
    `${plural(published, "publication")} · ` +
    `in ${formatBps(totalIn)} · out ${formatBps(totalOut)}`;
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  renderRooms(stats, streams);
  state.ticks += 1;
  state.streams = streams.map(({ history, ...rest }) => rest);
  state.error = null;
}

tick();
setInterval(tick, POLL_MS);
