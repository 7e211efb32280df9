// A device's page: the header, the tabs, and the live events that keep every tab current.
import { api, app, live, newestOnly, setBadge, showError } from "./common.js";
import * as commands from "./commands.js";
import * as configuration from "./configuration.js";
import * as overview from "./overview.js";

const TABS = ["overview", "commands", "configuration"];
const deviceId = app.dataset.deviceId;
const base = `/api/v1/devices/${encodeURIComponent(deviceId)}`;

function showTab(name) {
  for (const tab of TABS) {
    const selected = tab === name;
    document.getElementById(`tab-${tab}`).setAttribute("aria-selected", String(selected));
    document.getElementById(tab).hidden = !selected;
  }
  history.replaceState(null, "", `#${name}`);
}

for (const button of document.querySelectorAll("[role=tab]")) {
  button.addEventListener("click", () => showTab(button.dataset.tab));
}
function tabFromUrl() {
  const wanted = location.hash.slice(1);
  showTab(TABS.includes(wanted) ? wanted : "overview");
}
window.addEventListener("hashchange", tabFromUrl);
tabFromUrl();

const fetchDevice = newestOnly(() => api(base));
const fetchDesired = newestOnly(() => api(`${base}/desired-state?explain=true`));

let shown; // the newest answer about the device shown so far

// Resolves to the newest device shown (a stale answer is not shown).
async function refreshDevice() {
  const device = await fetchDevice();
  if (device === undefined) return shown;
  shown = device;
  document.getElementById("device-name").textContent = device.name;
  const presence = document.getElementById("presence");
  setBadge(presence, device.online ? "online" : "offline");
  presence.classList.add("dot");
  setBadge(document.getElementById("config-status"), device.config_status);
  overview.showDevice(device);
  return device;
}

// The desired state and its explanation feed two tabs: Commands (what may be unbound) and
// Configuration.
async function refreshDesired(device) {
  const resolution = await fetchDesired();
  if (resolution === undefined) return;
  commands.showBindings(resolution);
  await configuration.show(device, resolution);
}

async function refreshAll() {
  const device = await refreshDevice();
  await Promise.all([
    overview.load(device),
    commands.load(device),
    refreshDesired(device),
  ]);
}

// After a bind or unbind (ours or anyone's) the desired state changed: re-read it.
async function desiredChanged() {
  await refreshDesired(await refreshDevice());
}

commands.onDesiredChange(() => desiredChanged().catch(showError));

function mine(handler) {
  return (event) => {
    if (event.device_id === deviceId) handler(event);
  };
}

live({
  presence: mine(() => refreshDevice().catch(showError)),
  report: mine(() => desiredChanged().catch(showError)),
  command: mine((event) => {
    commands.changed(event).catch(showError);
    if (event.type === "BIND_CONFIG" || event.type === "UNBIND_CONFIG") {
      desiredChanged().catch(showError);
    }
  }),
  telemetry: mine((event) => overview.telemetry(event).catch(showError)),
}, () => refreshAll().catch(showError));

refreshAll().catch(showError);
