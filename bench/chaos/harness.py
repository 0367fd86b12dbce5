"""The CPython chaos run: worker processes on one database, signals at random moments.

The database is an SQLite file, or (``--db postgres``) a PostgreSQL server of the run's
own (``bench.pg_cluster``) that the harness also restarts mid-run: every connection is
cut, the steps in flight fail their commits, and the workers must live on and lose nothing.

The harness process only triggers and cancels (it registers no jobs), like any other
process sharing the database. It keeps its own timeline of what it did (kills, stops,
terms, cancels, restarts), the workers' stdout (one line per event) and the ledger the job
bodies write; ``checks.check`` compares the three with the database at the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import warnings

from durably import Durably
from durably.errors import ConflictError, NotFoundError, NoWorkerWarning, StorageError

from . import checks, ledger

ROOT = Path(__file__).resolve().parents[2]
FINISHED = ("completed", "failed", "cancelled")


@dataclass
class Options:
    kills: int = 300
    workers: int = 3
    runs: int = 400
    seed: int = 1
    stops: int | None = None  # default: about one per 60 kills, at least 1
    terms: int | None = None  # default: about one per 15 kills, at least 1
    cancels: int | None = None  # default: one run in 12
    lease_duration: float = 1.0
    lease_renew_interval: float = 0.2
    polling_interval: float = 0.05
    kill_gap: tuple[float, float] = (0.1, 0.6)  # seconds between two interruptions
    step_ms: tuple[int, int] = (20, 150)
    steps: tuple[int, int] = (2, 6)
    keyed_fraction: float = 0.3
    keys: int = 4
    # Runs of chaos-wait (a retried step, a durable sleep, a signal), and how long they sleep.
    wait_fraction: float = 0.25
    nap_ms: tuple[int, int] = (50, 300)
    # Of those, signalled before they wait (the signal is kept), and signalled twice.
    early_signal_fraction: float = 0.3
    repeat_signal_fraction: float = 0.25
    settle_timeout: float = 180.0
    workdir: str | None = None
    verbose: bool = False
    db: str = "sqlite"  # or "postgres": a server of the run's own, restarted mid-run
    restarts: int | None = None  # PostgreSQL restarts (default 2: one "fast", one "immediate")

    def resolved(self) -> "Options":
        if self.stops is None:
            self.stops = max(1, self.kills // 60)
        if self.terms is None:
            self.terms = max(1, self.kills // 15)
        if self.cancels is None:
            self.cancels = max(1, self.runs // 12)
        if self.restarts is None:
            self.restarts = 2 if self.db == "postgres" else 0
        if self.restarts and self.db != "postgres":
            raise ValueError("restarts are for --db postgres")
        return self


@dataclass
class Worker:
    proc: subprocess.Popen
    out: Path
    started: float
    name: str

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Chaos:
    opts: Options
    workdir: Path
    db: str = ""
    ledger_path: str = ""
    workers: list[Worker] = field(default_factory=list)
    retired: list[Worker] = field(default_factory=list)
    tl: checks.Timeline = field(default_factory=checks.Timeline)
    failures: list[str] = field(default_factory=list)
    spawned: int = 0
    # ledger tail: pid -> {(run, step): start} of bodies in flight
    _ledger_offset: int = 0
    inflight: dict[int, dict[tuple[str, str], float]] = field(default_factory=dict)
    signalled: set[str] = field(default_factory=set)  # runs of chaos-wait sent their signal
    _last_signal_look: float = 0.0

    def __post_init__(self) -> None:
        self.cluster = None
        self.opts.resolved()
        if self.opts.db == "postgres":
            from bench import pg_cluster

            # fsync off (only the server is restarted, never the machine), but every commit
            # written to the OS at once: an "immediate" stop must not lose committed steps.
            self.cluster = pg_cluster.PgCluster(settings={"synchronous_commit": "on", "max_connections": 200})
            self.db = self.cluster.create_database("chaos")
        else:
            self.db = str(self.workdir / "chaos.db")
        self.ledger_path = str(self.workdir / "ledger.tsv")
        self.rng = random.Random(self.opts.seed)
        # Trigger-only: no jobs registered. Its first triggers come before the workers it
        # just started have recorded themselves: no warning about that.
        warnings.simplefilter("ignore", NoWorkerWarning)
        self.app = Durably(self.db)
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), str(ROOT / "py"), os.environ.get("PYTHONPATH", "")]), "PYTHONUNBUFFERED": "1"}

    def log(self, msg: str) -> None:
        if self.opts.verbose:
            print(f"[chaos {time.time():.3f}] {msg}", file=sys.stderr, flush=True)

    # -- workers ----------------------------------------------------------------------------

    def spawn(self) -> Worker:
        o = self.opts
        self.spawned += 1
        out = self.workdir / f"worker-{self.spawned:04d}.out"
        with open(out, "wb") as fout, open(self.workdir / f"worker-{self.spawned:04d}.err", "wb") as ferr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "durably", "worker", "bench.chaos.jobs", "--db", self.db,
                 "--polling-interval", str(o.polling_interval), "--lease-duration", str(o.lease_duration),
                 "--lease-renew-interval", str(o.lease_renew_interval)],
                cwd=ROOT, env=self.env, stdout=fout, stderr=ferr, stdin=subprocess.DEVNULL,
            )
        w = Worker(proc, out, time.time(), f"worker-{self.spawned:04d}")
        self.workers.append(w)
        self.log(f"spawned {w.name} pid {w.pid}")
        return w

    def _retire(self, w: Worker) -> None:
        self.workers.remove(w)
        self.retired.append(w)
        self.inflight.pop(w.pid, None)

    def kill(self, w: Worker) -> None:
        t = time.time()
        w.proc.kill()
        w.proc.wait(timeout=30)
        self.tl.kills.append((w.pid, t))
        self.tl.exits[w.pid] = time.time()
        self.log(f"SIGKILL {w.name} pid {w.pid} in flight {list(self.inflight.get(w.pid, {}))}")
        self._retire(w)
        self.spawn()

    def term(self, w: Worker) -> None:
        t = time.time()
        w.proc.send_signal(signal.SIGTERM)
        self.tl.terms.append((w.pid, t))
        try:
            code = w.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.failures.append(f"pid {w.pid} did not exit within 30 s of SIGTERM")
            w.proc.kill()
            code = w.proc.wait(timeout=30)
        self.tl.exits[w.pid] = time.time()
        if code != 0:
            self.failures.append(f"pid {w.pid} exited {code} after SIGTERM")
        self.log(f"SIGTERM {w.name} pid {w.pid} exited {code}")
        self._retire(w)
        self.spawn()

    def stop_and_resume(self, w: Worker) -> None:
        """SIGSTOP a worker that is inside a step, keep it frozen until another worker has
        taken its run over (or, bounded, well past its lease), then SIGCONT it."""
        w.proc.send_signal(signal.SIGSTOP)
        _wait(lambda: _proc_state(w.pid) in ("T", "t"), 5)
        t_stop = time.time()
        # What it holds once frozen: a step it began may have ended meanwhile (a failed
        # attempt that made the run wait for its retry, say), and a run another worker went
        # on with is not this worker's to be taken over.
        self.read_ledger()
        held = {run for run, _ in self.inflight.get(w.pid, {})}
        self.log(f"SIGSTOP {w.name} pid {w.pid} holding {held}")
        deadline = t_stop + max(15.0, 10 * self.opts.lease_duration)
        while time.time() < deadline:
            self.read_ledger()
            taken = all(
                any(run == r and pid != w.pid for pid, steps in self.inflight.items() for r, _ in steps)
                or self._taken_since(r, w.pid, t_stop)
                for run in held for r in [run]
            )
            if taken and time.time() > t_stop + 1.5 * self.opts.lease_duration:
                break
            self._check_alive()
            time.sleep(0.02)
        else:
            self.failures.append(f"run(s) {held} of SIGSTOPped pid {w.pid} were not taken over in time")
        t_cont = time.time()
        w.proc.send_signal(signal.SIGCONT)
        self.tl.stops.append((w.pid, t_stop, t_cont))
        self.log(f"SIGCONT {w.name} pid {w.pid} after {t_cont - t_stop:.2f}s")

    def _taken_since(self, run_id: str, pid: int, t: float) -> bool:
        run = self._db(self.app.get_run, run_id, what="reading a run")
        if run is None or run.status in FINISHED or run.status == "waiting":
            return True  # over, or waiting: a waiting run holds no lease, nobody's to take over
        return any(e.run_id == run_id and e.pid != pid and e.start > t for e in self._recent)

    def _check_alive(self) -> None:
        for w in list(self.workers):
            code = w.proc.poll()
            if code is not None:
                self.failures.append(f"{w.name} (pid {w.pid}) exited by itself with code {code}: "
                                     f"{(self.workdir / (w.name + '.err')).read_text()[-500:]}")
                self.tl.exits[w.pid] = time.time()
                self._retire(w)
                self.spawn()

    # -- PostgreSQL restarts ------------------------------------------------------------------

    def restart(self, mode: str) -> None:
        """Restart the server under the workers. Only once every worker is past its start
        (a worker starting while the server is down exits, as any program that cannot
        reach its database at start; systemd's Restart= covers that, not durably)."""
        assert self.cluster is not None
        deadline = time.time() + 30
        while not all(self._ready(w) for w in self.workers) and time.time() < deadline:
            self._check_alive()
            time.sleep(0.02)
        t = time.time()
        self.cluster.restart(mode)
        self.tl.restarts.append((mode, t, time.time()))
        self.log(f"PostgreSQL restarted ({mode}) in {time.time() - t:.2f}s")

    def _ready(self, w: Worker) -> bool:
        try:
            return b" ready: " in (self.workdir / f"{w.name}.err").read_bytes()
        except OSError:
            return False

    def _db(self, call, *args, what: str = "a database call"):
        """``call(*args)``, tried again while the database is away (a restart): the harness
        is a client like any other, and must not stop because the server did."""
        deadline = time.time() + 60
        while True:
            try:
                return call(*args)
            except StorageError as exc:
                if not exc.transient or time.time() > deadline:
                    raise
                self.log(f"{what}: {exc}; trying again")
                time.sleep(0.1)

    # -- the ledger, read as it grows -------------------------------------------------------

    def read_ledger(self) -> None:
        self._recent: list[ledger.Execution] = getattr(self, "_recent", [])
        try:
            with open(self.ledger_path, "rb") as f:
                f.seek(self._ledger_offset)
                data = f.read()
        except FileNotFoundError:
            return
        cut = data.rfind(b"\n") + 1
        self._ledger_offset += cut
        for line in data[:cut].decode().splitlines():
            kind, run_id, step, pid_s, t_s = line.split("\t")
            pid = int(pid_s)
            if kind == "start":
                self.inflight.setdefault(pid, {})[(run_id, step)] = float(t_s)
                self._recent.append(ledger.Execution(run_id, step, pid, float(t_s)))
                del self._recent[:-200]
            else:
                self.inflight.get(pid, {}).pop((run_id, step), None)

    def busy(self) -> list[Worker]:
        return [w for w in self.workers if self.inflight.get(w.pid)]

    # -- runs -------------------------------------------------------------------------------

    def make_specs(self) -> deque:
        o, rng = self.opts, self.rng
        specs = deque()
        for i in range(o.runs):
            n = rng.randint(*o.steps)
            if rng.random() < o.wait_fraction:
                job = "chaos-wait"
                data = {"ms": [rng.randint(*o.step_ms) for _ in range(3)], "nap_ms": rng.randint(*o.nap_ms),
                        "ledger": self.ledger_path}
            else:
                job = rng.choice(["chaos-a", "chaos-b"])
                data = {"steps": n, "ms": [rng.randint(*o.step_ms) for _ in range(n)], "ledger": self.ledger_path}
            spec = {
                "job": job,
                "input": data,
                "key": f"k{rng.randrange(o.keys)}" if rng.random() < o.keyed_fraction else None,
                "labels": {"chaos": "1", "n": str(i)},
                # A trigger whose reply was lost (a restart) is sent again: the same run.
                "idempotency_key": f"chaos-{i}",
            }
            specs.append(spec)
        return specs

    def send_signal(self, run_id: str, via_cli: bool = False) -> None:
        """The signal chaos-wait waits for: ``go`` with ``{"run": id}``, always under the same
        signal id, so sending it again is harmless (and checked to be)."""
        payload = {"run": run_id}
        if via_cli:
            deadline = time.time() + 60
            while True:
                proc = subprocess.run(
                    [sys.executable, "-m", "durably", "signal", "--db", self.db, run_id, "go", json.dumps(payload),
                     "--signal-id", f"sig-{run_id}"],
                    cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
                # Exit 1: the database failed or could not be reached (a PostgreSQL restart);
                # the same signal id makes sending it again harmless.
                if proc.returncode != 1 or self.opts.db != "postgres" or time.time() > deadline:
                    break
                self.log(f"durably signal {run_id}: {proc.stderr.strip()}; trying again")
                time.sleep(0.1)
            if proc.returncode != 0 and "cancelled" not in proc.stderr:
                self.failures.append(f"durably signal {run_id} exited {proc.returncode}: {proc.stderr.strip()}")
        else:
            try:
                sent = self._db(lambda: self.app.signal(run_id, "go", payload, signal_id=f"sig-{run_id}"),
                                what="sending a signal")
            except (ConflictError, NotFoundError) as exc:
                if self.tl.expected.get(run_id) != "cancelled" and "cancelled" not in str(exc):
                    self.failures.append(f"signal to {run_id} refused: {exc}")
                return
            if run_id in self.signalled and sent.disposition != "duplicate":
                self.failures.append(f"signal sent again to {run_id} came back {sent.disposition}, not duplicate")
        self.signalled.add(run_id)

    def signal_waiting(self) -> None:
        """Signal the runs of chaos-wait that wait for their signal (every 0.1 s at most)."""
        if time.time() - self._last_signal_look < 0.1:
            return
        self._last_signal_look = time.time()
        rows, _ = self._db(self.app.driver.execute,
                           "SELECT id FROM durably_runs WHERE status = 'waiting' AND waiting_for = 'signal'",
                           what="reading runs that wait")
        for (run_id,) in rows:
            if run_id not in self.signalled:
                self.send_signal(run_id, via_cli=self.rng.random() < 0.1)
            elif self.rng.random() < self.opts.repeat_signal_fraction / 10:
                self.send_signal(run_id)

    def trigger_some(self, specs: deque, limit: int) -> None:
        tries = len(specs)
        while specs and limit > 0 and tries > 0:
            tries -= 1
            spec = specs.popleft()
            try:
                run = self._db(lambda: self.app.trigger(
                    spec["job"], spec["input"], concurrency_key=spec["key"], labels=spec["labels"],
                    idempotency_key=spec["idempotency_key"]), what="triggering")
            except ConflictError:
                specs.append(spec)  # a pending run of this job and key exists: later
                continue
            self.tl.expected[run.id] = "completed"
            limit -= 1
            if spec["job"] == "chaos-wait" and self.rng.random() < self.opts.early_signal_fraction:
                self.send_signal(run.id)  # before it waits: kept until it does

    def unfinished(self) -> list[str]:
        rows, _ = self._db(self.app.driver.execute,
                           "SELECT id FROM durably_runs WHERE status IN ('pending', 'leased', 'waiting')",
                           what="reading runs")
        return [r[0] for r in rows]

    def cancel_one(self, via_cli: bool) -> bool:
        rows, _ = self._db(self.app.driver.execute,
                           "SELECT id FROM durably_runs WHERE status = 'leased' AND EXISTS "
                           "(SELECT 1 FROM durably_steps s WHERE s.run_id = durably_runs.id)", what="reading runs")
        if not rows:
            return False
        run_id = self.rng.choice(rows)[0]
        if via_cli:
            proc = subprocess.run([sys.executable, "-m", "durably", "cancel", "--db", self.db, run_id],
                                  cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
            if proc.returncode == 0:
                self.tl.expected[run_id] = "cancelled"
            elif "already" not in proc.stderr:
                self.failures.append(f"durably cancel {run_id} exited {proc.returncode}: {proc.stderr.strip()}")
        else:
            try:
                self.app.cancel(run_id)
                self.tl.expected[run_id] = "cancelled"
            except ConflictError:
                pass  # it finished first: it stays expected to complete
            except StorageError as exc:
                if not exc.transient:
                    raise
                # The connection went away (a restart): the cancel may have committed or not.
                run = self._db(self.app.get_run, run_id, what="reading a cancelled run")
                if run is not None and run.status == "cancelled":
                    self.tl.expected[run_id] = "cancelled"
        self.log(f"cancel {run_id} ({'cli' if via_cli else 'api'}): {self.tl.expected[run_id]}")
        return self.tl.expected[run_id] == "cancelled"

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> checks.Report:
        try:
            return self._run()
        finally:
            if self.cluster is not None:
                self.cluster.destroy()  # the server process never outlives the run

    def _run(self) -> checks.Report:
        o = self.opts.resolved()
        self.app.migrate()
        for _ in range(o.workers):
            self.spawn()
        specs = self.make_specs()
        actions = ["kill"] * o.kills + ["stop"] * o.stops + ["term"] * o.terms
        self.rng.shuffle(actions)
        # Restarts spread evenly through the run, the first one "fast" (as systemd stops a
        # server), then "immediate" (a crash of the server process: no shutdown checkpoint).
        for i in range(o.restarts or 0):
            at = len(actions) * (i + 1) // ((o.restarts or 0) + 1)
            actions.insert(at, "restart-fast" if i % 2 == 0 else "restart-immediate")
        n_actions = len(actions)
        cancels_left = o.cancels
        backlog = max(2 * o.workers, 4)
        extra = 0  # more runs, when a stop or term waits for a step in flight and none is
        next_action = time.time() + self.rng.uniform(*o.kill_gap)
        t0 = time.time()
        try:
            while actions or specs:
                self.read_ledger()
                self._check_alive()
                self.signal_waiting()
                # Trigger in step with the interruptions, so there is work all along. Each
                # stop and term left needs a step in flight: keep one run untriggered for
                # each, or the runs can all finish before it (a slow machine makes the
                # interruptions slower than the workers) and it has nothing to interrupt.
                done_frac = 1 - len(actions) / n_actions if n_actions else 1
                reserve = sum(1 for kind in actions if kind in ("stop", "term"))
                want = min(o.runs - reserve, int(o.runs * done_frac) + backlog) + extra
                triggered = len(self.tl.expected)
                if want > triggered or not actions:
                    self.trigger_some(specs, max(want - triggered, 1) if actions else len(specs))
                # Cancels are spread over the run: at most in proportion to the runs triggered.
                cancel_budget = o.cancels * len(self.tl.expected) / o.runs
                if cancels_left and o.cancels - cancels_left < cancel_budget and self.rng.random() < 0.05:
                    if self.cancel_one(via_cli=cancels_left % 3 == 0):
                        cancels_left -= 1
                if actions and actions[-1].startswith("restart-"):
                    self.restart(actions.pop().split("-", 1)[1])
                    continue
                if actions and time.time() >= next_action:
                    kind = actions[-1]
                    busy = [w for w in self.busy() if time.time() - w.started > 0.2]
                    if kind == "kill":
                        candidates = [w for w in self.workers if time.time() - w.started > 0.2]
                    else:
                        candidates = busy  # stops and terms are about a step in flight
                    if candidates:
                        actions.pop()
                        w = self.rng.choice(candidates)
                        getattr(self, kind if kind != "stop" else "stop_and_resume")(w)
                        next_action = time.time() + self.rng.uniform(*o.kill_gap)
                    elif not self.unfinished():
                        if specs:
                            extra += 1
                        else:  # no work left to interrupt: this interruption cannot happen
                            actions.pop()
                            self.failures.append(f"no step in flight left for a {kind}; "
                                                 "use more --runs for this many interruptions")
                time.sleep(0.01)
            deadline = time.time() + o.settle_timeout
            while self.unfinished() and time.time() < deadline:
                self._check_alive()
                self.signal_waiting()
                if cancels_left and self.cancel_one(via_cli=False):
                    cancels_left -= 1
                time.sleep(0.05)
            left = self.unfinished()
            if left:
                self.failures.append(f"{len(left)} runs unfinished {o.settle_timeout:.0f} s after the last interruption")
        finally:
            for w in list(self.workers):
                if w.proc.poll() is None:
                    w.proc.send_signal(signal.SIGCONT)
                    w.proc.send_signal(signal.SIGTERM)
            for w in list(self.workers):
                try:
                    w.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()
                self.tl.exits.setdefault(w.pid, time.time())
                self._retire(w)
            self.app.close()
        elapsed = time.time() - t0
        return self.report(elapsed)

    def report(self, elapsed: float | None = None) -> checks.Report:
        events = []
        for w in self.retired:
            for line in w.out.read_text(errors="replace").splitlines():
                events.append((w.pid, line))
        rep = checks.check(ledger.read(self.ledger_path), checks.read_db(self.db), self.tl,
                           checks.parse_events(events), horizon=time.time())
        rep.db = self.opts.db
        rep.failures[:0] = self.failures
        rep.elapsed = elapsed  # type: ignore[attr-defined]
        return rep


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "?"


def _wait(pred, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return False
