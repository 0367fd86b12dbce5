// @ts-check
// Facts of the wire protocol (docs/protocol.md) that the JS needs. Their one source is
// Python's durably.browser: scripts/build.mjs reads them there and esbuild builds them in
// (its `define`), so the page, the worker and the Python host of one build always agree.

/** The protocol version this build speaks (durably.browser.PROTOCOL_VERSION). */
export const PROTOCOL_VERSION = __DURABLY_PROTOCOL_VERSION__;
