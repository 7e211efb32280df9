// The Configuration tab: the effective desired state per slot, why each binding won, and what
// the device reported for it (version, status, hash, message).
import { api, app, badge, el, shortHash, timeEl } from "./common.js";

const deviceId = app.dataset.deviceId;
const TARGETS = {
  component: "component binding", device: "device binding", device_group: "group binding",
  device_profile: "device-profile binding", sensor_profile: "sensor-profile binding",
};

function fact(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

function showConvergence(device, desiredDoc) {
  const reported = device.reported_version == null ? "nothing yet" : `v${device.reported_version}`;
  document.getElementById("convergence").replaceChildren(
    ...fact("Status", badge(device.config_status)),
    ...fact("Desired version", `v${desiredDoc.version} `, el("span", { class: "muted" }, "issued "),
      timeEl(desiredDoc.issued_at)),
    ...fact("Reported version", reported,
      device.reported_status ? ` (${device.reported_status})` : ""),
    ...fact("Reported at", device.reported_at ? timeEl(device.reported_at) : "—"),
    ...fact("Message", device.reported_message || "—"),
  );
}

// The device's report for each slot comes with the winning binding's per-device status.
async function slotReports(slots) {
  const reports = new Map();
  await Promise.all(slots.filter((s) => s.winner).map(async (slot) => {
    const binding = await api(`/api/v1/desired-state-bindings/${encodeURIComponent(slot.winner)}`);
    const mine = binding.devices.find((d) => d.device_id === deviceId && d.slot === slot.slot);
    if (mine) reports.set(slot.slot, mine);
  }));
  return reports;
}

const NAMED = { device_group: "device-groups", device_profile: "device-profiles", sensor_profile: "sensor-profiles" };
const names = new Map(); // group or profile id -> name

// Bindings name their group or profile by id: look the names up once.
async function loadNames(slots) {
  const wanted = new Map();
  for (const slot of slots) {
    for (const c of slot.candidates) {
      if (NAMED[c.target_type] && !names.has(c.target_id)) wanted.set(c.target_id, NAMED[c.target_type]);
    }
  }
  await Promise.all([...wanted].map(async ([id, collection]) => {
    names.set(id, (await api(`/api/v1/${collection}/${encodeURIComponent(id)}`)).name);
  }));
}

function target(candidate) {
  const kind = TARGETS[candidate.target_type] || candidate.target_type;
  if (candidate.target_type === "component") return `${kind} ${candidate.target_id.split("/")[1]}`;
  if (candidate.target_type === "device") return candidate.target_id === deviceId ? kind : `${kind} ${candidate.target_id}`;
  return `${kind} “${names.get(candidate.target_id) || candidate.target_id}”`;
}

function why(slot) {
  const winner = slot.candidates.find((c) => c.won);
  const others = slot.candidates.filter((c) => !c.won);
  return [
    el("strong", {}, target(winner)),
    el("span", { class: "sub" }, `priority ${winner.priority} · ${winner.reason}`),
    others.length ? el("ul", { class: "candidates" }, others.map((c) => el("li", {},
      `${c.artefact_name} v${c.artefact_version} by ${target(c)}: ${c.reason}`))) : null,
  ];
}

function desired(config) {
  const content = config.content === undefined ? null
    : el("details", {}, el("summary", {}, "content"),
      el("pre", { class: "mono" }, JSON.stringify(config.content, null, 2)));
  return [
    el("strong", {}, `${config.name} v${config.artefact_version}`),
    el("span", { class: "sub hash", title: config.hash }, shortHash(config.hash)),
    el("span", { class: "sub" }, `${config.size} bytes`),
    content,
  ];
}

function reportedCell(config, report) {
  if (!report || report.version == null) return [badge("PENDING"), el("span", { class: "sub" }, "no report for this slot")];
  const same = report.hash === config.hash;
  return [
    badge(report.status),
    el("span", { class: "sub" }, `v${report.version} · `, timeEl(report.reported_at)),
    el("span", { class: "sub hash", title: report.hash || "" }, shortHash(report.hash), " ",
      report.hash ? el("span", { class: same ? "match" : "mismatch" }, same ? "✓ matches" : "✗ differs") : ""),
    report.message ? el("span", { class: "sub" }, report.message) : null,
  ];
}

let showing = 0;

export async function show(device, resolution) {
  const mine = ++showing;
  const doc = resolution.document;
  const slots = resolution.slots.filter((s) => s.winner);
  const [reports] = await Promise.all([slotReports(slots), loadNames(slots)]);
  if (mine !== showing) return; // a newer resolution is being shown
  showConvergence(device, doc);
  const configs = new Map(doc.configs.map((c) => [c.slot, c]));
  const rows = slots.filter((s) => configs.has(s.slot)).map((slot) => {
    const config = configs.get(slot.slot);
    return el("tr", { dataset: { slot: slot.slot } },
      el("td", { class: "mono" }, slot.slot),
      el("td", {}, desired(config)),
      el("td", {}, why(slot)),
      el("td", { class: "reported" }, reportedCell(config, reports.get(slot.slot))));
  });
  document.querySelector("#slots tbody").replaceChildren(...rows);
  document.getElementById("slots-empty").hidden = rows.length > 0;
}
