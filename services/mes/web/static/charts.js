// Small hand-written SVG charts: bars per part, points over time, horizontal bars.

const NS = "http://www.w3.org/2000/svg";
const W = 640;
const H = 260;
const M = { l: 56, r: 12, t: 12, b: 34 };
export const PALETTE = ["#4ea1ff", "#2fb36d", "#c58af9", "#f0883e", "#d9a514", "#39c5cf"];

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (Number.isInteger(v) && Math.abs(v) < 1000) return String(v);
  if (Math.abs(v) >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k`;
  if (Math.abs(v) >= 10 || v === 0) return v.toFixed(0);
  return v.toFixed(1);
}

function frame(id, label, yMax, unit) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", id, role: "img", "aria-label": label });
  const ih = H - M.t - M.b;
  for (let i = 0; i <= 4; i += 1) {
    const y = M.t + ih - (ih * i) / 4;
    svg.append(el("line", { x1: M.l, x2: W - M.r, y1: y, y2: y, class: i ? "grid" : "axis" }));
    svg.append(el("text", { x: M.l - 6, y: y + 4, "text-anchor": "end" }, fmt((yMax * i) / 4)));
  }
  svg.append(el("text", { x: 4, y: M.t + 4, "text-anchor": "start" }, unit));
  return svg;
}

function empty(id, label, why) {
  const svg = el("svg", { viewBox: `0 0 ${W} 80`, class: "chart", id, role: "img", "aria-label": label });
  svg.append(el("text", { x: W / 2, y: 44, "text-anchor": "middle" }, why));
  return svg;
}

/**
 * One bar per item, in order. items: [{value, group, bad, title}]; groups get colours.
 * ideal: optional [{group, value}] drawn as dashed lines across their bars.
 */
export function barsChart(id, label, unit, items, { groups = [], ideal = [] } = {}) {
  const shown = items.filter((d) => d.value !== null && d.value !== undefined);
  if (!shown.length) return empty(id, label, "no values yet");
  const yMax = niceMax(Math.max(...shown.map((d) => d.value), ...ideal.map((d) => d.value)));
  const svg = frame(id, label, yMax, unit);
  const iw = W - M.l - M.r;
  const ih = H - M.t - M.b;
  const step = iw / items.length;
  const bw = Math.max(1, step * 0.8);
  const firstOf = {};
  const lastOf = {};
  items.forEach((d, i) => {
    if (!(d.group in firstOf)) firstOf[d.group] = i;
    lastOf[d.group] = i;
    if (d.value === null || d.value === undefined) return;
    const h = (ih * d.value) / yMax;
    const colour = PALETTE[Math.max(0, groups.indexOf(d.group)) % PALETTE.length];
    const rect = el("rect", {
      x: M.l + i * step + (step - bw) / 2,
      y: M.t + ih - h,
      width: bw,
      height: Math.max(0.5, h),
      fill: colour,
      class: d.bad ? "bar scrap" : "bar",
      "data-value": d.value,
    });
    rect.append(el("title", {}, d.title || `${d.value} ${unit}`));
    svg.append(rect);
  });
  for (const line of ideal) {
    if (!(line.group in firstOf)) continue;
    const y = M.t + ih - (ih * line.value) / yMax;
    const x1 = M.l + firstOf[line.group] * step;
    const x2 = M.l + (lastOf[line.group] + 1) * step;
    svg.append(el("path", { d: `M${x1},${y}H${x2}`, class: "ideal" }));
  }
  const ticks = Math.min(items.length, 8);
  for (let k = 0; k < ticks; k += 1) {
    const i = Math.round((k * (items.length - 1)) / Math.max(1, ticks - 1));
    svg.append(el("text", { x: M.l + i * step + step / 2, y: H - M.b + 16, "text-anchor": "middle" }, String(i + 1)));
  }
  svg.append(el("text", { x: W - M.r, y: H - 4, "text-anchor": "end" }, "part # (in completion order)"));
  return svg;
}

/** Points joined per series over time. series: [{name, points: [{t: ms, value}]}]. */
export function timeChart(id, label, unit, series) {
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) return empty(id, label, "no values yet");
  const t0 = Math.min(...pts.map((p) => p.t));
  const t1 = Math.max(...pts.map((p) => p.t), t0 + 1000);
  const yMax = niceMax(Math.max(...pts.map((p) => p.value)));
  const svg = frame(id, label, yMax, unit);
  const iw = W - M.l - M.r;
  const ih = H - M.t - M.b;
  const x = (t) => M.l + (iw * (t - t0)) / (t1 - t0);
  const y = (v) => M.t + ih - (ih * v) / yMax;
  series.forEach((s, k) => {
    const colour = PALETTE[k % PALETTE.length];
    const sorted = [...s.points].sort((a, b) => a.t - b.t);
    if (sorted.length > 1) {
      const d = sorted.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.value).toFixed(1)}`).join("");
      svg.append(el("path", { d, fill: "none", stroke: colour, "stroke-width": 1.5, "stroke-linejoin": "round" }));
    }
    for (const p of sorted) {
      const c = el("circle", { cx: x(p.t), cy: y(p.value), r: 2.5, fill: colour, class: "point" });
      c.append(el("title", {}, `${s.name}: ${fmt(p.value)} ${unit} at ${new Date(p.t).toLocaleTimeString()}`));
      svg.append(c);
    }
  });
  for (let k = 0; k <= 4; k += 1) {
    const t = t0 + ((t1 - t0) * k) / 4;
    const when = new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    svg.append(el("text", { x: x(t), y: H - M.b + 16, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle" }, when));
  }
  return svg;
}

/** Horizontal bars with labels: rows [{label, value}]. */
export function hbarChart(id, label, unit, rows) {
  if (!rows.length) return empty(id, label, "none recorded");
  const rowH = 28;
  const h = rows.length * rowH + 20;
  const max = niceMax(Math.max(...rows.map((r) => r.value)));
  const svg = el("svg", { viewBox: `0 0 ${W} ${h}`, class: "chart", id, role: "img", "aria-label": label });
  const left = 160;
  rows.forEach((r, i) => {
    const y = 10 + i * rowH;
    const w = ((W - left - 60) * r.value) / max;
    svg.append(el("text", { x: left - 8, y: y + 17, "text-anchor": "end" }, r.label));
    const rect = el("rect", { x: left, y: y + 4, width: Math.max(1, w), height: rowH - 10, fill: r.colour || "#e5484d", class: "bar" });
    rect.append(el("title", {}, `${r.label}: ${r.value} ${unit}`));
    svg.append(rect);
    svg.append(el("text", { x: left + w + 6, y: y + 17 }, `${fmt(r.value)} ${unit}`));
  });
  return svg;
}
