// @ts-check
// The worker's end of the page protocol (docs/protocol.md is the contract): the page's
// init, call and close messages in, boot progress, ready, replies and events out. Whether
// this tab leads or follows (web/tabs.js) makes no difference to the page.
// A request from a broken page never kills the worker: it gets an error reply, or (when it
// has no id to reply to) a console warning. What a call means is for durably.browser's
// BrowserHost to check, once; here only the envelope is.

import { BootError } from "./errors.js";
import { Tab } from "./tabs.js";
import { PROTOCOL_VERSION } from "./wire.js";

const isId = (id) => (typeof id === "number" && Number.isFinite(id)) || (typeof id === "string" && id.length > 0 && id.length <= 200);

export class PageProtocol {
  /** @param {(msg: object, transfer?: Transferable[]) => void} post posts to the page */
  constructor(post) {
    this.post = post;
    this.init = null; // the page's init message, once received
    this.initReceived = new Promise((resolve, reject) => {
      this.resolveInit = resolve;
      this.rejectInit = reject;
    });
    this.initReceived.catch(() => {}); // the boot awaits it and reports the error
    this.tab = new Tab(post, this.initReceived); // leads or follows; posts ready or boot-error
  }

  onMessage(msg) {
    if (msg === null || typeof msg !== "object") {
      console.warn("[durably] ignoring a message that is not an object:", msg);
      return;
    }
    switch (msg.type) {
      case "init":
        this.onInit(msg);
        return;
      case "call":
        if (!isId(msg.id)) {
          console.warn("[durably] ignoring a call without a usable id (a number or a short string):", msg);
          return;
        }
        this.onCall(msg);
        return;
      case "close":
        this.tab.close().then(() => this.post({ type: "closed" }));
        return;
      default:
        // Something that carries an id expects an answer: say what is wrong with it.
        if (isId(msg.id)) {
          this.reply(msg.id, {
            error: {
              name: "ValidationError",
              message: `unknown message type ${JSON.stringify(msg.type)}; requests are {type: "call", id, method, params}`,
            },
          });
          return;
        }
        console.warn("[durably] ignoring a message of unknown type:", msg.type);
    }
  }

  // The protocol version is the worker's to check (it is the side that speaks it); the rest
  // of the init message is checked by durably.browser.parse_init during the import phase.
  onInit(msg) {
    if (this.init) {
      console.warn("[durably] ignoring a second init message");
      return;
    }
    this.init = msg;
    if (msg.protocol !== undefined && msg.protocol !== PROTOCOL_VERSION) {
      this.rejectInit(
        new BootError({ phase: "import", message: `the page speaks protocol ${msg.protocol}; this worker speaks ${PROTOCOL_VERSION}: reload the page` }),
      );
      return;
    }
    // No jobs: every job module of the site (durably.browser.parse_init reads the manifest's).
    this.resolveInit({ jobs: msg.jobs ?? null, options: msg.options ?? {}, debug: msg.debug === true });
  }

  onCall(msg) {
    this.tab.answer(msg.method, msg.params).then(
      ({ body, transfer }) => this.reply(msg.id, body, transfer),
      (err) => {
        // answer() resolves on every path; this is a last resort so an id is never left hanging.
        console.error("[durably] call failed:", err);
        this.reply(msg.id, { error: { name: "Error", message: String(err?.message ?? err) } });
      },
    );
  }

  reply(id, body, transfer = []) {
    this.post({ type: "reply", id, ...body }, transfer);
  }
}
