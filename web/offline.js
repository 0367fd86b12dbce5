// The page side of the site's service worker (web/sw.js): register it, report what it does
// to the page's onStatus, and switch to a new version only when no page runs the old one.
// connect() in web/client.js uses this; docs/browser.md ("Offline" and "Updates") explains
// the rules, docs/protocol.md lists the status messages.
//
// Status messages (passed to connect()'s onStatus):
//   {type: "offline", state: "installing"}   the site's files are being cached
//   {type: "offline", state: "ready"}        every file is cached: the next load needs no network
//   {type: "offline", state: "unavailable", message}   no service worker: the site works online only
//   {type: "update", state: "installing"}    a new version was found; it downloads in the background
//   {type: "update", state: "ready", applyUpdate}   it is cached and waits: applyUpdate() (also the
//                                            client's) switches now; so does the next load when
//                                            this is the only tab of the site
//   {type: "update", state: "failed", message}   it could not be cached (the running version stays)
//   {type: "update", state: "activating"}    the new version takes over; this page reloads

// How long a page waits for the service worker to say how many tabs are open before it
// boots the version it has.
const TABS_TIMEOUT_MS = 1000;
// How long to wait for a new version to take over before reloading anyway.
const ACTIVATE_TIMEOUT_MS = 10_000;

/**
 * Watch (and, once the page is ready, register) the site's service worker.
 *
 * @param {object} options
 * @param {URL|string} options.url the service worker script (sw.js at the site's root)
 * @param {(msg: object) => void} options.status receives the status messages above
 * @param {() => Promise<void>} options.close stops this page's durably worker (before a reload)
 * @returns {{atLoad: () => Promise<boolean>, register: (boot: Promise<unknown>) => Promise<void>,
 *   applyUpdate: () => Promise<boolean>, checkForUpdate: () => Promise<boolean>}}
 */
export function watchServiceWorker({ url, status, close }) {
  const container = typeof navigator !== "undefined" ? navigator.serviceWorker : undefined;
  const scriptURL = new URL(url, location.href).href;
  if (!container) {
    const reason = self.isSecureContext
      ? "this browser offers no service workers here (some private windows turn them off)"
      : "service workers need a secure context (https://, or http://localhost)";
    const report = () => status({ type: "offline", state: "unavailable", message: `the site works online only: ${reason}` });
    return {
      atLoad: async () => false,
      register: (boot) => boot.then(report, report),
      applyUpdate: async () => false,
      checkForUpdate: async () => false,
    };
  }

  let controller = container.controller;
  let switching = false; // this page is already on its way to the new version
  let registration = null;

  // A new version took over this page (another tab applied it): the page runs the old
  // version's code, so it closes its worker (the run in flight hands its lease back) and
  // reloads. The first version claiming a page that had none is the same code: no reload.
  container.addEventListener("controllerchange", async () => {
    const before = controller;
    controller = container.controller;
    if (!before || switching) return;
    switching = true;
    status({ type: "update", state: "activating" });
    try {
      await close();
    } finally {
      location.reload();
    }
  });

  container.addEventListener("message", ({ data }) => {
    if (data?.type === "durably:install-failed") {
      status(controller ? { type: "update", state: "failed", message: data.message } : { type: "offline", state: "unavailable", message: data.message });
    }
  });

  // The number of tabs of the site, as the service worker counts them; null if it does not say.
  function countTabs(active) {
    const channel = new MessageChannel();
    const answer = new Promise((resolve) => {
      channel.port1.onmessage = ({ data }) => resolve(data?.tabs ?? null);
      setTimeout(() => resolve(null), TABS_TIMEOUT_MS);
    });
    active.postMessage({ type: "durably:tabs" }, [channel.port2]);
    return answer;
  }

  // Let the waiting version take over, then reload this page into it.
  async function takeOver(waiting) {
    switching = true;
    status({ type: "update", state: "activating" });
    const taken = new Promise((resolve) => container.addEventListener("controllerchange", resolve, { once: true }));
    waiting.postMessage({ type: "durably:skip-waiting" });
    await Promise.race([taken, new Promise((resolve) => setTimeout(resolve, ACTIVATE_TIMEOUT_MS))]);
    location.reload();
  }

  // The message carries applyUpdate, so a page can offer the switch before its client is
  // ready (while it waits for another tab, or boots).
  function updateReady() {
    status({ type: "update", state: "ready", applyUpdate: api.applyUpdate });
  }

  function follow(reg) {
    if (reg.active) status({ type: "offline", state: "ready" });
    const tracked = new WeakSet();
    const track = (worker) => {
      if (!worker || tracked.has(worker)) return;
      tracked.add(worker);
      const first = !reg.active;
      status(first ? { type: "offline", state: "installing" } : { type: "update", state: "installing" });
      worker.addEventListener("statechange", () => {
        if (worker.state === "installed" && !first) updateReady();
        else if (worker.state === "activated" && first) status({ type: "offline", state: "ready" });
      });
    };
    reg.addEventListener("updatefound", () => track(reg.installing));
    if (reg.installing) track(reg.installing);
    else if (reg.waiting) updateReady();
  }

  const api = {
    /**
     * Before the durably worker starts: when a new version waits and this is the only tab of
     * the site, switch to it now (the page reloads; resolves true). Otherwise resolve false
     * and boot the version this page has.
     */
    async atLoad() {
      let reg;
      try {
        reg = await container.getRegistration(scriptURL);
      } catch {
        return false;
      }
      if (!reg?.waiting || !reg.active || !container.controller) return false;
      if ((await countTabs(reg.active)) !== 1) return false;
      await takeOver(reg.waiting);
      return true;
    },

    /**
     * Register the service worker: at once when one already serves this page (that costs
     * nothing), else once `boot` settles, so a first visit's downloads never compete with it.
     */
    register(boot) {
      if (container.controller) return registerNow();
      return boot.then(registerNow, registerNow);
    },

    /**
     * Switch to the new version now: stop this page's worker, let the new version take over,
     * and reload every tab of the site. Resolves false when no new version waits.
     */
    async applyUpdate() {
      const reg = registration ?? (await container.getRegistration(scriptURL));
      const waiting = reg?.waiting;
      if (!waiting || switching) return false;
      switching = true;
      await close();
      await takeOver(waiting);
      return true;
    },

    /**
     * Ask the server for a new version now (the browser also checks at each load). Resolves
     * true when one is downloading or waiting; its progress arrives as status messages.
     */
    async checkForUpdate() {
      const reg = registration ?? (await container.getRegistration(scriptURL));
      if (!reg) return false;
      try {
        await reg.update();
      } catch (err) {
        // Offline, or the server is down: the running version stays; nothing to report.
        console.warn("[durably] checking for a new version:", err?.message ?? err);
      }
      return Boolean(reg.installing || reg.waiting);
    },
  };
  return api;

  async function registerNow() {
    try {
      registration = await container.register(scriptURL);
    } catch (err) {
      status({
        type: "offline",
        state: "unavailable",
        message: `the site works online only: its service worker could not be registered (${err?.message ?? err})`,
      });
      return;
    }
    follow(registration);
  }
}
