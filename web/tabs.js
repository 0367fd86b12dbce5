// @ts-check
// Roles: every tab of the site is live. The tab whose worker holds the Web Lock "durably-db"
// is the leader: it owns the OPFS pool and runs the jobs (web/leader.js). Every other tab is
// a follower: its worker forwards its page's calls to the leader over a BroadcastChannel and
// passes the leader's events to its page. docs/protocol.md ("Tabs") is the contract.
//
// Hand-over. One follower, the standby (it holds the Web Lock "durably-standby"), keeps
// Python loaded with durably and the job modules imported (web/boot.js warmUp) and waits in
// the queue of the database's lock; the other followers wait for the standby's lock only and
// load nothing, so ten open tabs cost one Python. When the leader goes (closed, reloaded,
// crashed: the browser releases its locks), the standby gets the lock, opens the pool and
// starts the runtime (takeOver), which resumes the old leader's runs at once. The next
// follower in line becomes the standby.
//
// Calls in flight across a hand-over are answered exactly once: each forwarded call has a
// request id; one that reached a leader that went before replying is sent again to the new
// leader when that is safe (reads, waitForRun, and the calls that change runs, whose reply
// BrowserHost records with the change so a repeat returns it), or fails with HandoverError.

import { BootError } from "./errors.js";
import { bootLeader, checkBrowser, LOCK_NAME, takeOver, warmUp } from "./boot.js";
import { Leader } from "./leader.js";
import { PROTOCOL_VERSION } from "./wire.js";

const CHANNEL = "durably-tabs";
const STANDBY_LOCK = "durably-standby";
// Each tab holds a lock of its own for its lifetime; the leader asks for it to learn when
// that tab has gone (closed, or its worker killed) and drops its subscriptions.
const TAB_LOCK = "durably-tab:";
// A leader answers a follower's hello at once, even while it boots: silence this long means
// the tab holding the database speaks no tabs protocol (an older version of the site).
const SILENT_LEADER_MS = 2_000;
// Safe to send again to the next leader: they read, wait, or are recorded by request id.
const RETRY_SAFE = new Set([
  "ping",
  "jobs",
  "getRun",
  "getRuns",
  "getSteps",
  "getLogs",
  "waitForRun",
  "subscribe",
  "unsubscribe",
  "exportDatabase",
  "trigger",
  "triggerMany",
  "retrigger",
  "cancel",
  "deleteRun",
  "purgeRuns",
]);

const randomId = () => Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
const fail = (name, message) => ({ body: { error: { name, message } } });

export class Tab {
  /**
   * @param {(msg: object, transfer?: Transferable[]) => void} post posts to the page
   * @param {Promise<object>} initReceived the page's init message
   */
  constructor(post, initReceived) {
    this.post = post;
    this.initReceived = initReceived;
    this.id = randomId();
    this.role = null; // "leader" | "follower", once decided
    this.leader = null; // the Leader, while this tab leads (or takes over)
    this.leaderId = null; // the leading tab's id, as far as this tab knows
    /** @type {{jobs?: string[], worker_id?: string} | null} what this tab's boot as leader returned */
    this.leaderInfo = null;
    this.ready = false; // the page got its ready message
    this.closed = false;
    this.closing = null;
    this.pageTypes = new Set(); // the event types this tab's page subscribed to
    this.pending = new Map(); // request id -> forwarded call awaiting its reply
    this.seq = 0;
    this.watched = new Set(); // follower tabs whose lock this leader waits for
    this.followersListen = false; // some follower subscribed to events
    this.standby = false;
    this.warm = null; // the standby's warmUp(), once started
    this.releases = {}; // name -> release(), for the locks this tab holds
    this.aborter = new AbortController(); // the lock requests still queued
    this.started = performance.now();
    this.start();
  }

  // -- roles ---------------------------------------------------------------------------------

  start() {
    try {
      checkBrowser();
      if (typeof BroadcastChannel !== "function") {
        throw new BootError({ phase: "lock", message: "This browser has no BroadcastChannel; use a current browser." });
      }
    } catch (err) {
      this.bootFailed(err);
      return;
    }
    this.channel = new BroadcastChannel(CHANNEL);
    this.channel.onmessage = ({ data }) => this.onChannel(data);
    this.hold(TAB_LOCK + this.id);
    this.post({ type: "boot", phase: "lock", state: "start" });
    navigator.locks
      .request(LOCK_NAME, { ifAvailable: true }, (lock) => {
        if (!lock) {
          this.follow();
          return undefined;
        }
        return new Promise((release) => this.lead(release));
      })
      .catch((err) => this.bootFailed(new BootError({ phase: "lock", message: `cannot take the database's Web Lock: ${err?.message ?? err}` })));
  }

  // Wait for a Web Lock, call onHeld() once it is this tab's, and keep it until close() (or
  // this.releases[name]() gives it up earlier).
  hold(name, onHeld = () => {}) {
    return navigator.locks
      .request(name, { signal: this.aborter.signal }, () => {
        if (this.closed) return undefined;
        onHeld();
        return new Promise((release) => (this.releases[name] = release));
      })
      .catch(() => {}); // aborted by close()
  }

  lead(releaseLock) {
    const ms = Math.round(performance.now() - this.started);
    this.role = "leader";
    this.leaderId = this.id;
    this.post({ type: "boot", phase: "lock", state: "done", ms });
    this.announce("booting");
    this.leader = new Leader({
      post: this.post,
      releaseLock,
      boot: (res) =>
        bootLeader({ post: this.post, initReceived: this.initReceived, res, onEvent: (text) => this.onHostEvent(text), timings: { lock: ms } }),
    });
    this.leader.booted.then(
      (ready) => {
        if (this.closed) return;
        this.ready = true;
        this.leaderInfo = ready;
        this.post({ type: "ready", role: "leader", protocol: PROTOCOL_VERSION, ...ready });
        this.announce("ready");
      },
      (err) => this.bootFailed(err),
    );
  }

  follow() {
    this.role = "follower";
    this.post({ type: "boot", phase: "lock", state: "done", ms: Math.round(performance.now() - this.started) });
    this.post({ type: "boot", phase: "leader", state: "start", detail: "Another tab of this site runs the jobs: connecting to it..." });
    this.channel.postMessage({ kind: "hello", from: this.id, protocol: PROTOCOL_VERSION });
    this.silence = setTimeout(() => {
      if (this.leaderId || this.closed) return;
      this.post({
        type: "boot",
        phase: "leader",
        state: "waiting",
        detail:
          "The database is open in another tab of this site that does not answer (an older version of the site?). " +
          "Reload or close that tab; this one takes over when it closes.",
      });
    }, SILENT_LEADER_MS);
    // Line up to become the standby; the first follower in line gets it at once.
    this.hold(STANDBY_LOCK, () => this.becomeStandby());
  }

  becomeStandby() {
    this.warm = warmUp({ initReceived: this.initReceived });
    this.warm.then(
      (warm) => {
        if (this.role !== "follower" || this.closed) return;
        this.standby = true; // first in line, and warm
        this.post({ type: "role", role: "follower", standby: true, leader: this.leaderId, warmUp: warm.timings });
      },
      (err) => console.warn("[durably] the standby could not load Python; it will try again if it takes over:", err?.message ?? err),
    );
    // Wait for the database: granted when the leader goes.
    navigator.locks
      .request(LOCK_NAME, { signal: this.aborter.signal }, () => (this.closed ? undefined : new Promise((release) => this.takeOver(release))))
      .catch(() => {}); // aborted by close()
  }

  takeOver(releaseLock) {
    const t0 = performance.now();
    const old = this.leaderId;
    this.role = "leader";
    this.leaderId = this.id;
    this.announce("booting");
    this.leader = new Leader({
      post: this.post,
      releaseLock,
      boot: async (res) => {
        // A warm-up that failed (a network hiccup) gets one more try, now.
        const warm = await this.warm.catch(() => warmUp({ initReceived: this.initReceived }));
        const ready = await takeOver({ warm, res, onEvent: (text) => this.onHostEvent(text) });
        return { ...ready, timings: { ...ready.timings, takeover: Math.round(performance.now() - t0) } };
      },
    });
    // Calls from this tab's page go to this worker now: its subscriptions first, then the
    // calls the old leader never answered.
    if (this.pageTypes.size) this.leader.answer("subscribe", { types: [...this.pageTypes] });
    this.resend(old);
    this.leader.booted.then(
      (ready) => {
        if (this.closed) return;
        this.leaderInfo = ready;
        this.standby = false;
        this.releases[STANDBY_LOCK]?.(); // the next follower in line becomes the standby
        if (this.ready) {
          this.post({ type: "role", role: "leader", standby: false, leader: this.id, ...ready });
        } else {
          // The leader went before this tab ever heard it was ready.
          this.ready = true;
          this.post({ type: "ready", role: "leader", protocol: PROTOCOL_VERSION, ...ready });
        }
        this.announce("ready");
      },
      (err) => this.bootFailed(err),
    );
  }

  // Tell every tab who leads (on becoming leader, when ready, and in answer to a hello).
  announce(state) {
    const info = this.leaderInfo ?? {};
    this.channel.postMessage({
      kind: "leader",
      from: this.id,
      protocol: PROTOCOL_VERSION,
      state: this.leaderInfo ? "ready" : state,
      jobs: info.jobs ?? null,
      worker_id: info.worker_id ?? null,
    });
  }

  bootFailed(err) {
    const e = err instanceof BootError ? err : new BootError({ message: String(err?.message ?? err), detail: err?.stack });
    if (this.closed) return;
    // Before ready, connect() rejects with it; after (a standby that could not take over),
    // the client reports it as a crash.
    this.post({ type: "boot-error", phase: e.phase, name: e.name, message: e.message, detail: e.detail ?? null });
    this.close();
  }

  // -- calls ---------------------------------------------------------------------------------

  /** Answer a call of this tab's page; resolves with {body, transfer}, never rejects. */
  answer(method, params) {
    if (method === "subscribe" || method === "unsubscribe") this.track(method, params);
    if (this.closed) return Promise.resolve(fail("ClosedError", "the worker is closed; reload the page"));
    // A tab that took over answers after the calls it resent: all wait for its boot, in order.
    if (this.role === "leader") return this.leader.answer(method, params);
    return this.forward(method, params);
  }

  // The event types the page asked for (the worker filters events by them); a bad type is
  // refused by BrowserHost and never sent an event.
  track(method, params) {
    const t = params?.types;
    const types = typeof t === "string" ? [t] : Array.isArray(t) ? t.filter((x) => typeof x === "string") : [];
    for (const type of types) {
      if (method === "subscribe") this.pageTypes.add(type);
      else this.pageTypes.delete(type);
    }
  }

  forward(method, params) {
    const rid = `${this.id}:${++this.seq}`;
    return new Promise((resolve) => {
      const call = { rid, method, params, resolve, to: null, deadline: null };
      if (method === "waitForRun" && typeof params?.timeout === "number" && params.timeout >= 0) {
        call.deadline = performance.now() + params.timeout * 1000;
      }
      this.pending.set(rid, call);
      this.send(call);
    });
  }

  send(call) {
    let params = call.params;
    if (call.deadline !== null) params = { ...params, timeout: Math.max(0, call.deadline - performance.now()) / 1000 };
    if (this.role === "leader") {
      call.to = this.id;
      this.leader.answer(call.method, params, { request: call.rid }).then((result) => this.settle(call, this.id, result));
      return;
    }
    if (!this.leaderId || this.incompatible) return; // sent when a leader announces itself
    call.to = this.leaderId;
    this.channel.postMessage({ kind: "call", from: this.id, to: this.leaderId, rid: call.rid, method: call.method, params });
  }

  settle(call, from, result) {
    if (this.pending.get(call.rid) !== call || call.to !== from) return; // answered already, or asked again elsewhere
    this.pending.delete(call.rid);
    call.resolve(result);
  }

  // A new leader: send it every call the old one never answered, when that is safe.
  resend(oldLeader) {
    for (const call of [...this.pending.values()]) {
      if (call.to === null) this.send(call);
      else if (call.to === oldLeader || call.to !== this.leaderId) {
        // A move is not safe to repeat: the old leader may have marked the runs moved and
        // gone before its copy reached this page.
        if (RETRY_SAFE.has(call.method) && !(call.method === "exportDatabase" && call.params?.move)) this.send(call);
        else {
          this.pending.delete(call.rid);
          call.resolve(
            fail(
              "HandoverError",
              `${call.method}: the tab that runs the jobs closed before it answered, so this call may or may not have run; ` +
                "another tab has taken over: retry it if it should run",
            ),
          );
        }
      }
    }
  }

  // -- events --------------------------------------------------------------------------------

  wants(type) {
    return this.pageTypes.has("*") || this.pageTypes.has(type);
  }

  // An event from this worker's BrowserHost (which builds only the types some tab wants).
  onHostEvent(text) {
    const event = JSON.parse(text);
    if (this.wants(event.type)) this.post({ type: "event", event });
    if (this.followersListen) this.channel.postMessage({ kind: "event", from: this.id, event });
  }

  // -- the channel between tabs --------------------------------------------------------------

  onChannel(msg) {
    if (this.closed || msg === null || typeof msg !== "object" || msg.from === this.id) return;
    switch (msg.kind) {
      case "hello":
        if (this.role === "leader" && !this.leader.closed) this.announce("booting");
        return;
      case "leader":
        if (this.role === "follower") this.onLeader(msg);
        return;
      case "call":
        if (msg.to === this.id) this.onForwarded(msg);
        return;
      case "reply":
        if (msg.to === this.id) {
          const call = this.pending.get(msg.rid);
          if (call) this.settle(call, msg.from, { body: msg.body });
        }
        return;
      case "event":
        // Only a leader sends events, one at a time holds the lock, and each event happened:
        // pass on every one this page wants, also the last ones of a leader that has just
        // gone, which can arrive after this tab took over.
        if (this.wants(msg.event?.type)) this.post({ type: "event", event: msg.event });
        return;
      case "bye":
        if (this.role === "leader") this.leader.forgetTab(msg.from);
        return;
      case "outdated":
        if (msg.to === this.id) {
          this.post({
            type: "status",
            level: "warning",
            message: `A newer version of this site is open in another tab (protocol ${msg.protocol}; this tab speaks ${PROTOCOL_VERSION}): reload this tab to use it.`,
          });
        }
        return;
      default:
    }
  }

  onLeader(msg) {
    if (msg.protocol !== PROTOCOL_VERSION) {
      this.incompatible = true;
      if (msg.protocol > PROTOCOL_VERSION) {
        this.bootFailed(
          new BootError({
            phase: "leader",
            message: `This tab runs an older version of the site than another open tab (protocol ${PROTOCOL_VERSION}; the other speaks ${msg.protocol}): reload this tab.`,
          }),
        );
      } else {
        this.channel.postMessage({ kind: "outdated", from: this.id, to: msg.from, protocol: PROTOCOL_VERSION });
        this.post({
          type: "boot",
          phase: "leader",
          state: "waiting",
          detail:
            `Another tab of this site runs an older version of it (protocol ${msg.protocol}; this tab speaks ${PROTOCOL_VERSION}): ` +
            "reload or close that tab, and this one takes over.",
        });
      }
      return;
    }
    this.incompatible = false;
    clearTimeout(this.silence);
    if (msg.from !== this.leaderId) {
      const old = this.leaderId;
      this.leaderId = msg.from;
      // Its subscriptions first, so the events of the calls resent after them reach this page.
      if (this.pageTypes.size) this.forward("subscribe", { types: [...this.pageTypes] });
      this.resend(old);
      if (this.ready) this.post({ type: "role", role: "follower", standby: this.standby, leader: msg.from });
    }
    if (msg.state === "ready" && !this.ready) {
      this.ready = true;
      const ms = Math.round(performance.now() - this.started);
      this.post({ type: "boot", phase: "leader", state: "done", ms });
      this.post({
        type: "ready",
        role: "follower",
        standby: this.standby,
        leader: msg.from,
        protocol: PROTOCOL_VERSION,
        timings: { leader: ms },
        reclaimed: 0,
        jobs: msg.jobs ?? [],
        worker_id: msg.worker_id ?? null,
      });
    }
  }

  onForwarded(msg) {
    if (this.role !== "leader" || this.leader.closed) return; // the caller asks the next leader
    if (!this.watched.has(msg.from)) {
      this.watched.add(msg.from);
      // Granted once that tab has gone: its subscriptions go with it.
      navigator.locks
        .request(TAB_LOCK + msg.from, { signal: this.aborter.signal }, () => {
          this.watched.delete(msg.from);
          this.leader?.forgetTab(msg.from);
        })
        .catch(() => {});
    }
    if (msg.method === "subscribe") this.followersListen = true;
    this.leader.answer(msg.method, msg.params, { tab: msg.from, request: msg.rid }).then(({ body }) => {
      // A leader that is closing (or crashed) keeps quiet: the caller sends the call again
      // to the tab that takes over, which answers it from its record if it ran here.
      if (!this.leader.closed && !this.closed) this.channel.postMessage({ kind: "reply", from: this.id, to: msg.from, rid: msg.rid, body });
    });
  }

  // -- closing -------------------------------------------------------------------------------

  /** Close for good: leave the queues, hand the database to the next tab, release the locks. */
  close() {
    this.closing ??= (async () => {
      this.closed = true;
      clearTimeout(this.silence);
      this.aborter.abort();
      if (this.role === "follower") {
        try {
          this.channel.postMessage({ kind: "bye", from: this.id });
        } catch {
          // The channel is gone with the worker's global scope: nothing to tell.
        }
      }
      await this.leader?.close();
      for (const release of Object.values(this.releases)) release();
      this.channel?.close();
      for (const call of this.pending.values()) call.resolve(fail("ClosedError", "the worker is closed; reload the page"));
      this.pending.clear();
    })();
    return this.closing;
  }
}
