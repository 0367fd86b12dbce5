// The demo page's script. Phase 1: boot the worker and show its progress with timings.
// Everything shown is set with textContent: worker messages are data, never HTML.

import { connect } from "./client.js";

const PHASES = ["lock", "sqlite", "pool", "open", "pyodide", "micropip", "install", "import"];
const statusLine = document.getElementById("status");
const phaseList = document.getElementById("phases");
const errorBox = document.getElementById("error");
const started = performance.now();

function row(phase) {
  let li = phaseList.querySelector(`[data-phase="${phase}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.phase = phase;
    phaseList.append(li);
  }
  return li;
}

function onBoot(msg) {
  if (msg.type === "boot") {
    const li = row(msg.phase);
    li.dataset.state = msg.state;
    if (msg.state === "start") li.textContent = `${msg.phase}: ...`;
    else if (msg.state === "done") li.textContent = `${msg.phase}: ${msg.ms} ms`;
    else if (msg.state === "waiting") li.textContent = `${msg.phase}: waiting`;
    statusLine.dataset.state = msg.state === "waiting" ? "waiting" : "booting";
    statusLine.textContent = msg.detail || `Starting: ${msg.phase} (${PHASES.indexOf(msg.phase) + 1}/${PHASES.length})`;
  } else if (msg.type === "ready") {
    const total = Math.round(performance.now() - started);
    statusLine.dataset.state = "ready";
    statusLine.textContent = `Ready in ${total} ms.`;
  } else if (msg.type === "boot-error") {
    statusLine.dataset.state = "error";
    statusLine.textContent = `Could not start (${msg.phase}): ${msg.message}`;
  }
}

function onError(err) {
  statusLine.dataset.state = "error";
  if (!statusLine.textContent.startsWith("Could not start")) statusLine.textContent = err.message;
  if (err.detail) {
    errorBox.hidden = false;
    errorBox.textContent = err.detail;
  }
}

const client = connect({ onBoot, onError });
addEventListener("pagehide", () => client.close());

// The browser tests (and curious visitors in the console) use the same client as the page.
window.durably = { client, ready: client.ready, call: client.call };
