// The Commands tab: send a command, bind or unbind a config artefact, and watch each command's
// lifecycle as the device answers (`command` events; no reload, no polling).
import { allItems, api, app, badge, el, nextSeq, shortHash, timeEl } from "./common.js";

const deviceId = app.dataset.deviceId;
const base = `/api/v1/devices/${encodeURIComponent(deviceId)}/commands`;
const FINAL = ["SUCCESS", "FAILED", "TIMEOUT", "CANCELLED"];
const LABELS = {
  REBOOT: "Reboot", UPDATE_CONFIG: "Update config", UPDATE_FIRMWARE: "Update firmware",
  BIND_CONFIG: "Bind config", UNBIND_CONFIG: "Unbind config",
};
const form = document.getElementById("send");
const typeSelect = document.getElementById("command-type");
const firmwareSelect = document.getElementById("firmware");
const artefactSelect = document.getElementById("artefact");
const componentSelect = document.getElementById("component");
const unbindSelect = document.getElementById("unbind");
const result = document.getElementById("send-result");
const tbody = document.querySelector("#command-list tbody");
const olderButton = document.getElementById("commands-more");
const rows = new Map(); // command id -> {tr, seq}
const artefacts = new Map(); // artefact id -> artefact
const firmware = new Map(); // file id -> file
let device = null;
let cursor = null;
let desiredChanged = () => {};

export function onDesiredChange(callback) {
  desiredChanged = callback;
}

function describe(command) {
  const p = command.params || {};
  const parts = [];
  if (p.artefact_id) {
    const a = artefacts.get(p.artefact_id);
    parts.push(a ? `${a.name} v${a.version}` : `artefact ${p.artefact_id}`);
  }
  if (p.component) parts.push(`component ${p.component}`);
  if (p.file_id) parts.push(`firmware ${p.version || firmware.get(p.file_id)?.version || p.file_id}`);
  if (command.desired_version != null) parts.push(`desired v${command.desired_version}`);
  if (command.origin && command.origin !== "operator") parts.push("from a binding change");
  return parts.join(" · ");
}

function lifecycle(command) {
  const steps = [["PENDING", command.created_at], ["SENT", command.sent_at],
    ["ACKNOWLEDGED", command.acknowledged_at]].filter(([, at]) => at);
  if (FINAL.includes(command.status)) steps.push([command.status, command.finished_at]);
  const items = steps.map(([status, at]) => el("li", { dataset: { step: status } },
    `${status} `, timeEl(at)));
  if (!FINAL.includes(command.status)) {
    items.push(el("li", { class: "muted" }, "deadline ", timeEl(command.timeout_at)));
  }
  return el("ol", { class: "lifecycle" }, items);
}

function row(command) {
  const cancellable = command.status === "PENDING" || command.status === "SENT";
  return el("tr", { dataset: { id: command.id, type: command.type, status: command.status } },
    el("td", {}, el("strong", {}, LABELS[command.type] || command.type),
      el("span", { class: "sub" }, describe(command)),
      el("span", { class: "sub mono" }, command.id)),
    el("td", { class: "status" }, badge(command.status)),
    el("td", {}, lifecycle(command)),
    el("td", { class: "message" }, command.message || ""),
    el("td", {}, cancellable
      ? el("button", { type: "button", class: "small", onclick: () => cancel(command.id) }, "Cancel")
      : null));
}

// Shows a command as the request numbered `seq` saw it, unless a later request's answer is
// shown already. Rows stay newest first: ids sort by creation time.
function put(command, seq) {
  const known = rows.get(command.id);
  if (known && known.seq > seq) return;
  const tr = row(command);
  if (known) {
    known.tr.replaceWith(tr);
  } else {
    const after = [...tbody.children].find((other) => other.dataset.id < command.id);
    tbody.insertBefore(tr, after || null);
  }
  rows.set(command.id, { tr, seq });
  document.getElementById("commands-empty").hidden = true;
}

async function loadList() {
  const seq = nextSeq();
  const listed = await api(`${base}?limit=50`);
  // Rows this list does not have are older pages, or were shown by a later request: only the
  // former go, so a command sent while the list was on its way stays.
  const listedIds = new Set(listed.items.map((c) => c.id));
  for (const [id, shown] of rows) {
    if (!listedIds.has(id) && shown.seq < seq) {
      shown.tr.remove();
      rows.delete(id);
    }
  }
  listed.items.forEach((c) => put(c, seq));
  cursor = listed.next_cursor;
  olderButton.hidden = !cursor;
  document.getElementById("commands-empty").hidden = rows.size > 0;
}

async function loadOlder() {
  const seq = nextSeq();
  const listed = await api(`${base}?limit=50&cursor=${encodeURIComponent(cursor)}`);
  listed.items.forEach((c) => put(c, seq));
  cursor = listed.next_cursor;
  olderButton.hidden = !cursor;
}

// A `command` event names the command and its new status; its timestamps come with a GET.
export async function changed(event) {
  const seq = nextSeq();
  put(await api(`${base}/${encodeURIComponent(event.id)}`), seq);
}

async function cancel(commandId) {
  try {
    const seq = nextSeq();
    put(await api(`${base}/${encodeURIComponent(commandId)}/cancel`, { method: "POST" }), seq);
  } catch (error) {
    say(error.message, false);
  }
}

function option(value, text, attrs = {}) {
  return el("option", { value, ...attrs }, text);
}

function semverDesc(a, b) {
  const parts = (v) => v.split(/[.+-]/).map((n) => Number.parseInt(n, 10) || 0);
  const [x, y] = [parts(a.version), parts(b.version)];
  for (let n = 0; n < Math.max(x.length, y.length); n += 1) {
    if ((x[n] || 0) !== (y[n] || 0)) return (y[n] || 0) - (x[n] || 0);
  }
  return 0;
}

async function loadPickers() {
  const profile = encodeURIComponent(device.profile_id);
  const [files, listed] = await Promise.all([
    allItems(`/api/v1/files?profile_id=${profile}&file_type=firmware`),
    allItems("/api/v1/config-artefacts"),
  ]);
  firmware.clear();
  files.sort(semverDesc).forEach((f) => firmware.set(f.id, f));
  firmwareSelect.replaceChildren(...(files.length
    ? files.map((f) => option(f.id, `${f.name} ${f.version}${f.version === device.firmware_version ? " (installed)" : ""}`))
    : [option("", "No firmware files for this profile", { disabled: true })]));
  // The artefacts that fit: of the device's profile, or of a sensor profile of its components.
  const fits = new Set([device.profile_id, ...device.components.map((c) => c.sensor_profile_id)]);
  artefacts.clear();
  listed.forEach((a) => artefacts.set(a.id, a));
  const usable = listed.filter((a) => fits.has(a.profile_id))
    .sort((a, b) => a.name.localeCompare(b.name) || b.version - a.version);
  const groups = new Map();
  for (const a of usable) {
    if (!groups.has(a.name)) groups.set(a.name, el("optgroup", { label: a.name }));
    groups.get(a.name).append(option(a.id, `${a.name} v${a.version} · ${shortHash(a.hash)}`));
  }
  artefactSelect.replaceChildren(...(usable.length ? groups.values()
    : [option("", "No artefacts fit this device", { disabled: true })]));
  pickComponent();
}

// A sensor-profile artefact may go to one component or to every component of that kind.
function pickComponent() {
  const chosen = artefacts.get(artefactSelect.value);
  const sensor = chosen && chosen.profile_kind === "sensor";
  const label = componentSelect.closest("label");
  label.dataset.sensor = sensor ? "yes" : "no";
  label.hidden = typeSelect.value !== "BIND_CONFIG" || !sensor;
  const matching = sensor ? device.components.filter((c) => c.sensor_profile_id === chosen.profile_id) : [];
  componentSelect.replaceChildren(option("", "every matching component"),
    ...matching.map((c) => option(c.name, c.name)));
}

// The device's own bindings (device or component level) are what an UNBIND_CONFIG can remove.
export function showBindings(resolution) {
  const own = [];
  for (const slot of resolution.slots) {
    for (const c of slot.candidates) {
      const onDevice = c.target_type === "device" && c.target_id === deviceId;
      const onComponent = c.target_type === "component" && c.target_id.startsWith(`${deviceId}/`);
      if (onDevice || onComponent) {
        const component = onComponent ? c.target_id.slice(deviceId.length + 1) : null;
        const params = component ? { component, artefact_id: c.artefact_id } : { artefact_id: c.artefact_id };
        const where = component ? `component ${component}` : slot.slot;
        own.push(option(JSON.stringify(params), `${c.artefact_name} v${c.artefact_version} (${where})`));
      }
    }
  }
  unbindSelect.replaceChildren(...(own.length ? own
    : [option("", "Nothing is bound to this device itself", { disabled: true })]));
}

function showFields() {
  for (const label of form.querySelectorAll("label[data-for]")) {
    label.hidden = label.dataset.for !== typeSelect.value;
  }
  pickComponent();
}

function say(text, ok) {
  result.textContent = text;
  result.classList.toggle("ok", ok);
}

function body() {
  const type = typeSelect.value;
  const out = { type, timeout_s: Number(document.getElementById("timeout").value) || 300 };
  if (type === "UPDATE_FIRMWARE") out.params = { file_id: firmwareSelect.value };
  if (type === "BIND_CONFIG") {
    out.params = { artefact_id: artefactSelect.value };
    if (componentSelect.value) out.params.component = componentSelect.value;
  }
  if (type === "UNBIND_CONFIG") out.params = unbindSelect.value ? JSON.parse(unbindSelect.value) : {};
  return out;
}

async function send(event) {
  event.preventDefault();
  const button = document.getElementById("send-button");
  button.disabled = true;
  try {
    const seq = nextSeq();
    const command = await api(base, { method: "POST", body: body() });
    put(command, seq);
    say(`${LABELS[command.type]} sent: ${command.status}`, true);
    if (command.type === "BIND_CONFIG" || command.type === "UNBIND_CONFIG") desiredChanged();
  } catch (error) {
    const details = (error.details || []).map((d) => `${d.path}: ${d.message}`).join("; ");
    say(details ? `${error.message} (${details})` : error.message, false);
  } finally {
    button.disabled = false;
  }
}

export async function load(current) {
  device = current;
  await loadPickers();
  await loadList();
}

typeSelect.addEventListener("change", showFields);
artefactSelect.addEventListener("change", pickComponent);
form.addEventListener("submit", send);
olderButton.addEventListener("click", () => loadOlder().catch((e) => say(e.message, false)));
showFields();
