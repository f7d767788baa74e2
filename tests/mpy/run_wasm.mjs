// Protocol tests on the official MicroPython WebAssembly port, run by Node:
//   node tests/mpy/run_wasm.mjs [module ...]
// Copies the protocol package, the vectors and the shared tests into the VM's in-memory
// filesystem under /repo (same layout as the repository) and runs tests/mpy/suite.py.
// Exits 1 on any failure, Python error or zero tests run.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const copies = [
  ["protocol/vigil_protocol", /\.py$/],
  ["protocol", /^vectors\.json$/],
  ["tests/protocol", /\.py$/],
  ["tests/mpy", /^suite\.py$/],
];

let output = "";
const mp = await loadMicroPython({
  heapsize: 4 * 1024 * 1024,
  stdout: (line) => { output += line + "\n"; process.stdout.write(line + "\n"); },
  stderr: (line) => { output += line + "\n"; process.stderr.write(line + "\n"); },
});

function mkdirs(dir) {
  let cur = "";
  for (const part of dir.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { mp.FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

for (const [dir, pattern] of copies) {
  mkdirs("/repo/" + dir);
  for (const name of fs.readdirSync(path.join(root, dir))) {
    if (pattern.test(name)) {
      mp.FS.writeFile(`/repo/${dir}/${name}`, fs.readFileSync(path.join(root, dir, name)));
    }
  }
}

const modules = process.argv.slice(2);
const args = modules.length ? "(" + modules.map((m) => JSON.stringify(m)).join(",") + ",)" : "";
let code = 1;
try {
  await mp.runPythonAsync(`
import sys
for sub in ("/repo/protocol", "/repo/tests/protocol", "/repo/tests/mpy"):
    sys.path.append(sub)
import suite
ran, failures = suite.run(${args})
`);
  const ran = mp.globals.get("ran");
  const failures = mp.globals.get("failures");
  code = failures === 0 && ran > 0 ? 0 : 1;
} catch (e) {
  // A Python exception outside the tests: print its message, not the whole JS object.
  process.stderr.write(`Python error: ${String(e.message || e).slice(0, 2000)}\n`);
  code = 1;
}
process.exit(code);
