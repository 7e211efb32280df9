// The Overview tab: facts about the device, its merged telemetry state, and a chart of one key.
import { draw } from "./chart.js";
import { ago, api, app, el, newestOnly, presenceBadge, timeEl } from "./common.js";

const deviceId = app.dataset.deviceId;
const base = `/api/v1/devices/${encodeURIComponent(deviceId)}`;
const keySelect = document.getElementById("chart-key");
const rangeSelect = document.getElementById("chart-range");
const chart = document.getElementById("chart");
const MAX_POINTS = 2000;
let profileName = null;
const groupNames = new Map(); // group id -> name
let series = { key: null, from: 0, points: [] };

function fact(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

export function showDevice(device) {
  const components = device.components.map((c) => `${c.name} (${c.sensor_profile_id})`);
  document.getElementById("facts").replaceChildren(
    ...fact("Presence", presenceBadge(device.online)),
    ...fact("Last seen", device.last_seen ? timeEl(device.last_seen) : "never",
      device.last_seen ? ` (${ago(device.last_seen)})` : ""),
    ...fact("Firmware", device.firmware_version || "—"),
    ...fact("Profile", profileName || device.profile_id),
    ...fact("Serial", device.serial || "—"),
    ...fact("Components", components.join(", ") || "—"),
    ...fact("Groups", device.groups.map((id) => groupNames.get(id) || id).join(", ") || "—"),
    ...fact("Created", timeEl(device.created_at)),
  );
}

const fetchState = newestOnly(() => api(`${base}/telemetry`));

async function refreshState() {
  const telemetry = await fetchState();
  if (telemetry !== undefined) showState(telemetry);
}

function showState(telemetry) {
  const entries = Object.entries(telemetry.state).sort(([a], [b]) => a.localeCompare(b));
  document.querySelector("#telemetry tbody").replaceChildren(...entries.map(([key, value]) =>
    el("tr", { dataset: { key } }, el("td", { class: "mono" }, key),
      el("td", {}, typeof value === "string" ? value : JSON.stringify(value)))));
  document.getElementById("telemetry-empty").hidden = entries.length > 0;
  document.getElementById("telemetry-updated").textContent =
    telemetry.updated_at ? `Updated ${ago(telemetry.updated_at)}` : "";
  const numeric = entries.filter(([, v]) => typeof v === "number").map(([k]) => k);
  const keep = keySelect.value;
  keySelect.replaceChildren(...numeric.map((k) => el("option", { value: k }, k)));
  if (numeric.includes(keep)) keySelect.value = keep;
  keySelect.disabled = numeric.length === 0;
}

async function loadHistory() {
  const key = keySelect.value || null;
  const to = Date.now();
  const from = to - Number(rangeSelect.value) * 1000;
  series = { key, from, points: [] };
  if (key) {
    let cursor = null;
    for (let page = 0; page < 10 && series.points.length < MAX_POINTS; page += 1) {
      const params = new URLSearchParams({ key, from: new Date(from).toISOString(), limit: "1000" });
      if (cursor) params.set("cursor", cursor);
      const found = await api(`${base}/telemetry?${params}`);
      if (series.key !== key || series.from !== from) return; // a newer choice took over
      for (const item of found.items) {
        if (typeof item.value === "number") {
          series.points.push({ t: Date.parse(item.timestamp), v: item.value });
        }
      }
      cursor = found.next_cursor;
      if (!cursor) break;
    }
  }
  redraw();
}

function redraw() {
  const to = Date.now();
  const span = Number(rangeSelect.value) * 1000;
  // Devices may send their own (older) timestamps: keep the series in time order.
  series.points = series.points.filter((p) => p.t >= to - span).sort((a, b) => a.t - b.t)
    .slice(-MAX_POINTS);
  draw(chart, series.points, to - span, to, series.key);
}

// Names of the profile and groups, which the device itself only gives as ids.
async function loadNames(device) {
  const missing = device.groups.filter((id) => !groupNames.has(id));
  const [profile, groups] = await Promise.all([
    profileName === null ? api(`/api/v1/device-profiles/${encodeURIComponent(device.profile_id)}`) : null,
    Promise.all(missing.map((id) => api(`/api/v1/device-groups/${encodeURIComponent(id)}`))),
  ]);
  if (profile) profileName = profile.name;
  groups.forEach((g) => groupNames.set(g.id, g.name));
  if (profile || groups.length) showDevice(device);
}

export async function load(device) {
  await loadNames(device);
  await refreshState();
  await loadHistory();
}

// A telemetry event: the state is re-read (an override may have dropped keys), the value of the
// charted key is added to the chart.
export async function telemetry(event) {
  await refreshState();
  if (series.key === null && keySelect.value) {
    await loadHistory();
    return;
  }
  const value = event.telemetries[series.key];
  if (typeof value === "number") {
    series.points.push({ t: Date.parse(event.timestamp), v: value });
    redraw();
  }
}

keySelect.addEventListener("change", () => loadHistory());
rangeSelect.addEventListener("change", () => loadHistory());
