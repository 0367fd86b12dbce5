// window.bench for durably's own site: injected by bench/browser.py into the site's test page
// (test.html?jobs=bench_jobs&debug=1, durably defaults) once window.durably is ready. Timed
// here in the page, where a user's code waits, through the page API (client.js) only; the
// per-slice clock of workload 1 is taken inside the worker by bench_jobs.py. Each measurement
// starts on an emptied database (the site has one database file per origin).
(() => {
  const d = window.durably;
  const now = () => performance.now();
  const TABLES = ["durably_steps", "durably_logs", "durably_run_labels", "durably_runs"];

  async function reset() {
    for (const t of TABLES) await d.call("sql", { sql: `DELETE FROM ${t}` });
    await d.call("sql", { sql: "VACUUM" });
  }

  async function steps(n, slices) {
    await reset();
    const t0 = now();
    const run = await d.trigger("bench-steps", { n, slices });
    const done = await d.waitForRun(run.id, { timeout: 3600 });
    const seconds = (now() - t0) / 1e3;
    if (done.status !== "completed") throw new Error(`bench run ended ${done.status}`);
    const marks = await d.evalPython(`import bench_jobs\nbench_jobs.SLICES.pop(${JSON.stringify(run.id)})`);
    const size = Math.max(1, Math.floor(n / Math.max(1, Math.min(slices, n))));
    const us = [], ends = [];
    for (let j = 0; j < marks.length - 1; j++) {
      const first = j * size, last = j === marks.length - 2 ? n : (j + 1) * size;
      us.push(((marks[j + 1] - marks[j]) * 1e6) / (last - first));
      ends.push(last);
    }
    return { n, seconds, steps_per_s: n / seconds, slice_us_per_step: us, slice_end: ends };
  }

  async function runs(k) {
    await reset();
    const t0 = now();
    const rs = await Promise.all(Array.from({ length: k }, (_, i) => d.trigger("bench-one", { i })));
    for (const r of rs) {
      const done = await d.waitForRun(r.id, { timeout: 600 });
      if (done.status !== "completed") throw new Error(`bench run ended ${done.status}`);
    }
    const seconds = (now() - t0) / 1e3;
    return { k, seconds, runs_per_s: k / seconds };
  }

  async function trigger_latency(k) {
    await reset();
    const leased = new Map();
    const off = d.on("run:leased", (e) => leased.set(e.run_id, now()));
    try {
      await d.ping(); // the subscription is in place before the first trigger
      const trig = [], start = [];
      for (let i = 0; i < k; i++) {
        const t0 = now();
        const r = await d.trigger("bench-one", { i });
        const t1 = now();
        await d.waitForRun(r.id, { timeout: 60 });
        trig.push(t1 - t0);
        start.push(leased.get(r.id) - t0);
      }
      return { k, trigger_ms: trig, start_ms: start };
    } finally {
      off();
    }
  }

  // Workload 5 (see bench/browser.py, resume): bench_jobs.py's bench-slow notes the start of
  // each step body in the worker; the worker resumes a reclaimed run by itself at boot.
  async function resume_begin(steps, ms) {
    await reset();
    return d.trigger("bench-slow", { steps, ms });
  }
  const resume_attach = () => window.__readyWall; // set by the bench's init script at ready
  async function starts_after(t) {
    const got = await d.evalPython(`import bench_jobs\n[s for s in bench_jobs.STARTS if s[2] >= ${Number(t)}][:1]`);
    return got.length ? got[0] : null;
  }
  async function resume_end() {
    for (const r of await d.getRuns({ status: ["pending", "leased"] })) await d.cancel(r.id);
  }

  window.bench = {
    steps, runs, trigger_latency, reset, resume_begin, resume_attach, starts_after, resume_end, ready: true,
  };
})();
