// The device list: presence, firmware and config convergence, searchable, updated live.
import {
  ago, api, badge, debounce, deviceUrl, el, live, newestOnly, nextSeq, presenceBadge, showError,
  throttle,
} from "./common.js";

const STATUSES = ["ACCEPTED", "IN_PROGRESS", "REJECTED", "FAILED", "PENDING"];
const PAGE = 100;
const tbody = document.querySelector("#devices tbody");
const input = document.getElementById("q");
const more = document.getElementById("more");
const empty = document.getElementById("empty");
const rows = new Map(); // device id -> {tr, seq}
let cursor = null;
let generation = 0; // answers to an older search are dropped

function query(extra = {}) {
  const q = input.value.trim();
  return new URLSearchParams({ ...(q ? { q } : {}), ...extra });
}

function row(device) {
  const firmware = device.firmware_version || "—";
  const reported = device.reported_version == null ? "—" : `v${device.reported_version}`;
  return el("tr", { dataset: { id: device.id } },
    el("td", {},
      el("a", { href: deviceUrl(device.id), class: "device-name" }, device.name),
      el("span", { class: "sub mono" }, device.id)),
    el("td", { class: "presence" },
      presenceBadge(device.online),
      el("span", { class: "sub" }, device.online ? "" : `seen ${ago(device.last_seen)}`)),
    el("td", {}, firmware),
    el("td", { class: "config" }, badge(device.config_status),
      device.reported_message ? el("span", { class: "sub" }, device.reported_message) : null),
    el("td", {}, `v${device.desired_version ?? "—"} / ${reported}`),
    el("td", {}, device.serial || "—"));
}

// Shows a device as a request numbered `seq` saw it, unless a later request's answer is shown.
function put(device, seq) {
  const old = rows.get(device.id);
  if (old && old.seq > seq) return;
  const tr = row(device);
  if (old) old.tr.replaceWith(tr);
  else tbody.append(tr);
  rows.set(device.id, { tr, seq });
}

function renderSummary(summary) {
  document.getElementById("total").textContent = summary.total;
  document.getElementById("online").textContent = summary.online;
  const counts = STATUSES.map((status) => {
    const item = badge(status);
    item.textContent = `${status} ${summary.config_status[status]}`;
    return item;
  });
  document.getElementById("counts").replaceChildren(...counts);
}

const fetchSummary = newestOnly(() => api(`/api/v1/device-summary?${query()}`));

async function refreshSummary() {
  const summary = await fetchSummary();
  if (summary !== undefined) renderSummary(summary);
}

async function load() {
  const mine = ++generation;
  const seq = nextSeq();
  const [listed] = await Promise.all([
    api(`/api/v1/devices?${query({ limit: PAGE })}`),
    refreshSummary(),
  ]);
  if (mine !== generation) return;
  const listedIds = new Set(listed.items.map((d) => d.id));
  for (const [id, shown] of rows) {
    if (!listedIds.has(id)) {
      shown.tr.remove();
      rows.delete(id);
    }
  }
  for (const device of listed.items) {
    put(device, seq);
    tbody.append(rows.get(device.id).tr); // moves it: the rows follow the list's order
  }
  cursor = listed.next_cursor;
  more.hidden = !cursor;
  empty.hidden = rows.size > 0;
}

async function loadMore() {
  const mine = generation;
  const seq = nextSeq();
  const listed = await api(`/api/v1/devices?${query({ limit: PAGE, cursor })}`);
  if (mine !== generation) return;
  listed.items.forEach((device) => put(device, seq));
  cursor = listed.next_cursor;
  more.hidden = !cursor;
}

async function refreshDevice(id) {
  if (!rows.has(id)) return; // not shown (another page of the list, or filtered out)
  const seq = nextSeq();
  const device = await api(`/api/v1/devices/${encodeURIComponent(id)}`);
  if (rows.has(id)) put(device, seq);
}

// Counting goes over the whole fleet: during a storm of events, once a second is enough.
const summaryLater = throttle(() => refreshSummary().catch(showError), 1000);

function searched() {
  const url = new URL(location.href);
  const q = input.value.trim();
  if (q) url.searchParams.set("q", q);
  else url.searchParams.delete("q");
  history.replaceState(null, "", url);
  load().catch(showError);
}

document.getElementById("search").addEventListener("submit", (event) => {
  event.preventDefault();
  searched();
});
input.addEventListener("input", debounce(searched, 250));
more.addEventListener("click", () => loadMore().catch(showError));

live({
  presence: (event) => {
    refreshDevice(event.device_id).catch(showError);
    summaryLater();
  },
  report: (event) => {
    refreshDevice(event.device_id).catch(showError);
    summaryLater();
  },
  command: (event) => {
    // A bind or unbind changed the desired version: the device is PENDING until it reports.
    if (event.type === "BIND_CONFIG" || event.type === "UNBIND_CONFIG") {
      refreshDevice(event.device_id).catch(showError);
      summaryLater();
    }
  },
}, () => load().catch(showError));

load().catch(showError);
