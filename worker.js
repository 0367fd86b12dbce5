// The durably Web Worker (a module worker: Pyodide 314 refuses classic workers).
//
//   web/protocol.js  the page's messages in, replies, events and boot progress out
//   web/tabs.js      leader or follower: the Web Locks, the channel between tabs, hand-over
//   web/leader.js    answers calls through durably.browser.BrowserHost (Python)
//   web/boot.js      the boot phases: sqlite-wasm on OPFS, Pyodide, durably
//   web/bridge.js    the one SQL call Python makes into sqlite-wasm
// docs/protocol.md is the contract between the page and this worker.

import { PageProtocol } from "./web/protocol.js";

const protocol = new PageProtocol((msg, transfer) => self.postMessage(msg, transfer ?? []));
self.onmessage = (event) => protocol.onMessage(event.data);
