// Names scripts/build.mjs defines when it bundles the JS (esbuild's `define`).
declare const __DURABLY_PROTOCOL_VERSION__: number;
