// The site's service worker: every file of the site is cached when it installs and served
// from that cache first, so the page boots with no network after the first visit.
//
// scripts/build.mjs bundles this file (esbuild) and then fills in `self.__WB_MANIFEST` with
// workbox-build's injectManifest: one entry per file of the built site, with a revision (a
// hash of its content) and its SRI hash, so the browser checks every byte it caches.
//
// Updates (docs/browser.md, "Updates"): a new deploy's service worker installs in the
// background (only changed files are downloaded) and then WAITS. It never takes over by
// itself, because taking over serves the new files to pages still running the old version.
// The page decides when (web/offline.js): at its next load when it is the only tab of the
// site, or when the user applies the update (every tab then reloads). Taking over deletes
// the old version's files from the cache (Workbox's precache clean-up), so it must only
// happen when no page runs them any more.

import { PrecacheController, PrecacheRoute } from "workbox-precaching";
import { Router } from "workbox-routing";

/** @type {ServiceWorkerGlobalScope} */
const sw = /** @type {any} */ (self);

let lastFailure = null; // the URL and error of the last download that failed, for the report

const plugins = [
  {
    // Workbox downloads a file with a new revision with `cache: "reload"`, skipping the HTTP
    // cache. "no-cache" instead asks the server whether the copy the browser already holds is
    // current: on a first visit the page has just downloaded every file, so the install
    // costs a 304 per file instead of a second download of the site. The SRI check applies
    // either way.
    requestWillFetch: async ({ request }) => (request.cache === "reload" ? new Request(request, { cache: "no-cache" }) : request),
    fetchDidFail: async ({ originalRequest, error }) => {
      lastFailure = { url: originalRequest.url, error: String(error?.message ?? error) };
    },
  },
];

const precache = new PrecacheController({ plugins });
precache.addToCacheList(self.__WB_MANIFEST);

const router = new Router();
// Query strings do not pick a file (the pages read none), and "./" is index.html.
router.registerRoute(new PrecacheRoute(precache, { ignoreURLParametersMatching: [/.*/], directoryIndex: "index.html", cleanURLs: false }));

sw.addEventListener("install", (event) => {
  lastFailure = null;
  const installed = precache.install(event);
  // A file that cannot be fetched or does not match its hash (a deploy still uploading, a
  // changed file) fails the install: this version is dropped, the running one stays, and the
  // browser tries again at its next update check. Say which file, so the page can show it.
  event.waitUntil(
    installed.catch(async (err) => {
      const where = lastFailure ? `${new URL(lastFailure.url).pathname}: ${lastFailure.error}` : String(err?.message ?? err);
      await tell({ type: "durably:install-failed", message: `this version of the site could not be cached (${where})` });
      throw err;
    }),
  );
});

sw.addEventListener("activate", (event) => {
  // Deletes the previous version's files from the cache, then takes the pages of the site
  // that no service worker controls yet (the first visit), so they are served from here too.
  event.waitUntil(precache.activate(event).then(() => sw.clients.claim()));
});

sw.addEventListener("fetch", (event) => {
  const response = router.handleRequest({ event, request: event.request });
  if (response) event.respondWith(response);
});

sw.addEventListener("message", (event) => {
  const msg = event.data;
  if (msg?.type === "durably:skip-waiting") {
    // Sent by a page (web/offline.js) to the waiting version only: see the top of this file.
    sw.skipWaiting();
  } else if (msg?.type === "durably:tabs") {
    // How many tabs of the site are open (controlled or not): a page switches to a waiting
    // version at load only when it is the only one.
    event.waitUntil(
      sw.clients.matchAll({ type: "window", includeUncontrolled: true }).then((tabs) => event.ports[0]?.postMessage({ tabs: tabs.length })),
    );
  }
});

async function tell(msg) {
  for (const client of await sw.clients.matchAll({ type: "window", includeUncontrolled: true })) client.postMessage(msg);
}
