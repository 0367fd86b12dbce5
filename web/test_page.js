// The browser tests' page: test.html?jobs=demo_jobs&debug=1&options={...}[&offline=1]
// Shows the boot and the tab's role (#status data-role) as text (never HTML), keeps every
// onStatus message in window.bootMessages and exposes the client as window.durably.
// It takes its options and debug flag from the URL, so a crafted link could purge runs:
// only test builds have it (node scripts/build.mjs --test-page), never a production site.
// Its service worker is off unless offline=1, so most tests see the network as it is.

import { connect } from "./client.js";

const query = new URLSearchParams(location.search);
const statusLine = document.getElementById("status");
const phaseList = document.getElementById("phases");
const errorBox = document.getElementById("error");
window.bootMessages = [];

function show(state, text, detail) {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
  if (detail) {
    errorBox.hidden = false;
    errorBox.textContent = detail;
  }
}

function onStatus(msg) {
  window.bootMessages.push(msg);
  if (msg.type === "boot") {
    let li = phaseList.querySelector(`[data-phase="${msg.phase}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.phase = msg.phase;
      phaseList.append(li);
    }
    li.dataset.state = msg.state;
    if (msg.state === "done") li.textContent = `${msg.phase}: ${msg.ms} ms`;
    else if (msg.state === "fallback") li.textContent = `${msg.phase}: not used (${msg.ms} ms): ${msg.detail}`;
    else li.textContent = `${msg.phase}: ${msg.state === "waiting" ? "waiting" : "..."}`;
    show(msg.state === "waiting" ? "waiting" : "booting", msg.detail || `Starting: ${msg.phase}`);
  } else if (msg.type === "boot-error") {
    show("error", `Could not start (${msg.phase}): ${msg.message}`, msg.detail);
  } else if (msg.type === "crashed") {
    show("crashed", msg.message);
  } else if (msg.type === "role") {
    statusLine.dataset.role = msg.role;
    if (statusLine.dataset.state === "ready") statusLine.textContent = `Ready (${msg.role}).`;
  }
}

const jobs = (query.get("jobs") || "").split(",").filter(Boolean);
const options = JSON.parse(query.get("options") || "{}");
connect({ jobs, options, debug: query.get("debug") === "1", offline: query.get("offline") === "1", onStatus }).then(
  (durably) => {
    window.durably = durably;
    addEventListener("pagehide", () => durably.close());
    statusLine.dataset.role = durably.role;
    show("ready", `Ready (${durably.role}).`);
  },
  (err) => {
    window.connectError = { name: err.name, message: err.message, phase: err.phase, detail: err.detail };
    if (statusLine.dataset.state !== "error") show("error", `Could not start (${err.phase}): ${err.message}`, err.detail);
  },
);
