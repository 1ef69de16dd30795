// Check Flux scripts with InfluxData's Flux language server (WebAssembly build).
// stdin: a JSON array of Flux scripts; stdout: a JSON array of
// {valid, parse_errors}: `valid` is Flux.is_valid() — the parser plus the semantic check
// (types, builtin function signatures, imports) — and `parse_errors` the parser's messages.
// The package ships a bundler build (`import * as wasm from "*.wasm"`); Node cannot load that
// directly, so its glue module is loaded with the wasm import replaced and instantiated here.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "node_modules", "@influxdata", "flux-lsp-browser");
const glue = readFileSync(join(pkg, "flux-lsp-browser_bg.js"), "utf8");
const wasmImport = "import * as wasm from './flux-lsp-browser_bg.wasm';";
const tail = /\ncachedInt32Memory0 = new Int32Array\(wasm\.memory\.buffer\);\ncachedUint8Memory0 = new Uint8Array\(wasm\.memory\.buffer\);\s*$/;
if (!glue.includes(wasmImport) || !tail.test(glue)) {
  throw new Error("unexpected @influxdata/flux-lsp-browser glue code: was the version changed?");
}
const patched = glue.replace(wasmImport,
  "let wasm;\nexport function __init(w) { wasm = w; cachedInt32Memory0 = new Int32Array(wasm.memory.buffer); cachedUint8Memory0 = new Uint8Array(wasm.memory.buffer); }",
).replace(tail, "\n");
const dir = mkdtempSync(join(tmpdir(), "flux-check-"));
let bg;
try {
  writeFileSync(join(dir, "glue.mjs"), patched);
  bg = await import(pathToFileURL(join(dir, "glue.mjs")).href);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const { instance } = await WebAssembly.instantiate(
  readFileSync(join(pkg, "flux-lsp-browser_bg.wasm")),
  { "./flux-lsp-browser_bg.js": bg },
);
bg.__init(instance.exports);

function parseErrors(node, out) {
  if (Array.isArray(node)) {
    for (const n of node) parseErrors(n, out);
  } else if (node && typeof node === "object") {
    for (const e of node.errors ?? []) out.push(e.msg ?? String(e));
    for (const v of Object.values(node)) parseErrors(v, out);
  }
  return out;
}

const scripts = JSON.parse(readFileSync(0, "utf8"));
const results = scripts.map((script) => {
  const flux = new bg.Flux(script);
  let valid;
  try {
    valid = flux.is_valid();
  } finally {
    flux.free();
  }
  return { valid, parse_errors: parseErrors(bg.parse(script), []) };
});
process.stdout.write(JSON.stringify(results));
