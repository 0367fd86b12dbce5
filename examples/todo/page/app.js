// The to-do example's page: the page API (client.js, which the site build puts next to this
// file) with this site's own jobs (todo_jobs). connect() imports every job module of the
// site and uses the options of [tool.durably.site]. Data is shown with textContent only.

import { connect } from "./client.js";

const $ = (id) => document.getElementById(id);
const status = $("status");

function show(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

async function refresh(durably) {
  const runs = await durably.getRuns({ jobName: "plan" });
  const items = runs.map((run) => {
    const li = document.createElement("li");
    li.dataset.status = run.status;
    li.dataset.run = run.id;
    const out = run.output;
    li.textContent = out ? `${out.title}: ${out.tasks} done in ${out.took}` : `${run.input.title}: ${run.status}`;
    return li;
  });
  $("lists").replaceChildren(...items);
  const left = runs.filter((r) => r.status !== "completed").length;
  const say = await durably.trigger("summary", { left });
  const finished = await durably.waitForRun(say.id, { timeout: 30 });
  $("summary").textContent = finished.output;
}

try {
  const durably = await connect({
    onStatus: (msg) => msg.type === "boot" && show("booting", `Starting: ${msg.phase}`),
  });
  window.durably = durably;
  show("ready", "Ready: your lists are kept in this browser, offline.");
  const button = document.querySelector("#add button");
  button.disabled = false;
  $("add").addEventListener("submit", async (event) => {
    event.preventDefault();
    const tasks = $("tasks").value.split(",").map((t) => t.trim()).filter(Boolean);
    await durably.trigger("plan", { title: $("title").value, tasks });
    $("title").value = "";
    $("tasks").value = "";
  });
  const onPlan = (event) => event.job_name === "plan" && refresh(durably).catch(console.error);
  durably.on("run:complete", onPlan);
  durably.on("run:fail", onPlan);
  await refresh(durably);
} catch (err) {
  show("error", `Could not start: ${err.message}`);
}
