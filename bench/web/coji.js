// @coji/durably 0.15 on sqlocal (SQLite WASM, the `opfs` VFS, in sqlocal's own worker), run
// in the page as its README shows. The bench driver calls window.bench.<workload>(...) and
// gets plain JSON back. Timing is taken here, in the page, where a user's code would wait.
//
// Options are the library's defaults (pollingIntervalMs 1000, one run at a time): the
// figures are what a user gets without tuning. Each measurement uses a fresh database file,
// deleted afterwards.
import { createDurably, defineJob } from "@coji/durably";
import { SQLocalKysely } from "sqlocal/kysely";
import { z } from "zod";

const now = () => performance.now();

function sliceClock(n, slices) {
  slices = Math.max(1, Math.min(slices, n));
  const size = Math.max(1, Math.floor(n / slices));
  const marks = [];
  return {
    tick(i) { if (i % size === 0 && marks.length < slices) marks.push(now()); },
    end() { marks.push(now()); },
    result() {
      const us = [], ends = [];
      for (let j = 0; j < marks.length - 1; j++) {
        const first = j * size, last = j === marks.length - 2 ? n : (j + 1) * size;
        us.push(((marks[j + 1] - marks[j]) * 1e3) / (last - first));
        ends.push(last);
      }
      return { slice_us_per_step: us, slice_end: ends };
    },
  };
}

async function open(jobs) {
  const name = `coji-${Date.now()}-${Math.random().toString(36).slice(2)}.sqlite3`;
  const sqlocal = new SQLocalKysely(name);
  const durably = createDurably({ dialect: sqlocal.dialect, jobs });
  await durably.migrate();
  return {
    durably,
    async close() {
      await durably.stop();
      await sqlocal.deleteDatabaseFile();
      await sqlocal.destroy();
    },
  };
}

const oneStep = defineJob({
  name: "bench-one",
  input: z.object({ i: z.number() }),
  run: async (step) => step.run("only", () => 0),
});

async function steps(n, slices) {
  const clock = sliceClock(n, slices);
  const job = defineJob({
    name: "bench-steps",
    input: z.object({}),
    run: async (step) => {
      for (let i = 0; i < n; i++) {
        clock.tick(i);
        await step.run(`s${i}`, () => i);
      }
      return n;
    },
  });
  const h = await open({ benchSteps: job });
  try {
    const t0 = now();
    await h.durably.jobs.benchSteps.trigger({});
    await h.durably.processUntilIdle();
    clock.end();
    const seconds = (now() - t0) / 1e3;
    return { n, seconds, steps_per_s: n / seconds, ...clock.result() };
  } finally {
    await h.close();
  }
}

async function runs(k) {
  const h = await open({ one: oneStep });
  try {
    h.durably.start();
    const t0 = now();
    const results = await Promise.all(Array.from({ length: k }, (_, i) => h.durably.jobs.one.trigger({ i })));
    for (const r of results) await h.durably.waitForRun(r.id, { timeout: 600000 });
    const seconds = (now() - t0) / 1e3;
    return { k, seconds, runs_per_s: k / seconds };
  } finally {
    await h.close();
  }
}

async function trigger_latency(k) {
  const h = await open({ one: oneStep });
  const leased = new Map();
  h.durably.on("run:leased", (e) => leased.set(e.runId, now()));
  try {
    h.durably.start();
    const trig = [], start = [];
    for (let i = 0; i < k; i++) {
      const t0 = now();
      const r = await h.durably.jobs.one.trigger({ i });
      const t1 = now();
      await h.durably.waitForRun(r.id, { timeout: 60000 });
      trig.push(t1 - t0);
      start.push(leased.get(r.id) - t0);
    }
    return { k, trigger_ms: trig, start_ms: start };
  } finally {
    await h.close();
  }
}

// Workload 5: a slow job on one named database that outlives the page; the reload is the
// bench's. Step bodies note their start (run id, step, Date.now()) in localStorage, which a
// reload keeps. Defaults as everywhere: a run whose page went away is picked up once its lease
// (30 s) has expired, at the next poll (1 s).
const RESUME_KEY = "bench-resume";
const slowJob = defineJob({
  name: "bench-slow",
  input: z.object({ steps: z.number(), ms: z.number() }),
  run: async (step, input) => {
    for (let i = 0; i < input.steps; i++) {
      await step.run(`s${i}`, async () => {
        const st = JSON.parse(localStorage.getItem(RESUME_KEY));
        st.starts.push([step.runId, `s${i}`, Date.now()]);
        localStorage.setItem(RESUME_KEY, JSON.stringify(st));
        await new Promise((r) => setTimeout(r, input.ms));
        return 0;
      });
    }
    return input.steps;
  },
});
let resumed = null;

async function resume_attach() {
  const st = JSON.parse(localStorage.getItem(RESUME_KEY) || "null");
  if (!st || resumed) return Date.now(); // nothing begun yet, or already attached
  const sqlocal = new SQLocalKysely(st.db);
  const durably = createDurably({ dialect: sqlocal.dialect, jobs: { slow: slowJob } });
  await durably.migrate();
  durably.start();
  resumed = { durably, sqlocal };
  return Date.now();
}

async function resume_begin(steps, ms) {
  await resume_end(); // a database an aborted measurement left behind
  localStorage.setItem(RESUME_KEY, JSON.stringify({ db: `coji-resume-${Date.now()}.sqlite3`, starts: [] }));
  await resume_attach();
  return resumed.durably.jobs.slow.trigger({ steps, ms });
}

function starts_after(t) {
  const st = JSON.parse(localStorage.getItem(RESUME_KEY) || "null");
  return st?.starts.find((s) => s[2] >= t) ?? null;
}

async function resume_end() {
  if (!resumed) return;
  // stop() waits for the run in flight, here a run of 10,000 slow steps: do not wait for it
  await Promise.race([resumed.durably.stop(), new Promise((r) => setTimeout(r, 2000))]);
  await resumed.sqlocal.deleteDatabaseFile();
  await resumed.sqlocal.destroy();
  localStorage.removeItem(RESUME_KEY);
  resumed = null;
}

window.bench = {
  steps, runs, trigger_latency, resume_begin, resume_attach, starts_after, resume_end,
  ready: true, crossOriginIsolated: self.crossOriginIsolated,
};
