// A small line chart of one numeric telemetry key, drawn as inline SVG (no chart library).

const NS = "http://www.w3.org/2000/svg";
const H = 220;
const PAD = { left: 52, right: 14, top: 12, bottom: 28 };

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function label(value) {
  const abs = Math.abs(value);
  if (abs >= 1000 || value === Math.round(value)) return String(Math.round(value * 100) / 100);
  return value.toPrecision(3);
}

function timeLabel(ms, span) {
  const date = new Date(ms);
  if (span > 2 * 86400000) return date.toLocaleDateString([], { month: "short", day: "numeric" });
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

// points: [{t: milliseconds, v: number}] in time order; the x axis spans [from, to].
export function draw(container, points, from, to, key) {
  // Drawn at the container's width, so text is never stretched (760 while the tab is hidden).
  const W = container.clientWidth > 0 ? Math.max(container.clientWidth, 320) : 760;
  if (points.length === 0) {
    const note = document.createElement("p");
    note.className = "empty";
    note.textContent = key ? `No numeric values of “${key}” in this range.` : "No numeric telemetry yet.";
    container.replaceChildren(note);
    return;
  }
  let lo = Math.min(...points.map((p) => p.v));
  let hi = Math.max(...points.map((p) => p.v));
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const x = (t) => PAD.left + ((t - from) / (to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${key} over time`,
  });
  root.append(svg("title", {}, `${key}: ${points.length} values`));
  for (let n = 0; n <= 4; n += 1) {
    const v = lo + ((hi - lo) * n) / 4;
    root.append(svg("line", { class: "gridline", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    root.append(svg("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, label(v)));
  }
  for (let n = 0; n <= 4; n += 1) {
    const t = from + ((to - from) * n) / 4;
    const anchor = n === 0 ? "start" : n === 4 ? "end" : "middle";
    root.append(svg("text", { x: x(t), y: H - 8, "text-anchor": anchor }, timeLabel(t, to - from)));
  }
  root.append(svg("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }));
  const coords = points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
  const bottom = H - PAD.bottom;
  const first = x(points[0].t).toFixed(1);
  const last = x(points[points.length - 1].t).toFixed(1);
  root.append(svg("polygon", { class: "area", points: `${first},${bottom} ${coords.join(" ")} ${last},${bottom}` }));
  root.append(svg("polyline", { class: "series", points: coords.join(" ") }));
  if (points.length <= 60) {
    for (const p of points) root.append(svg("circle", { class: "point", cx: x(p.t), cy: y(p.v), r: 2.5 }));
  }
  container.replaceChildren(root);
}
