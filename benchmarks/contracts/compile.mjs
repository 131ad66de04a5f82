// Compiles benchmarks/contracts/*.sol with the pinned npm `solc` (the settings medtrail's own
// contracts use: optimizer 200 runs, EVM prague) and prints {name: {abi, bytecode}} as JSON.
//
//   node benchmarks/contracts/compile.mjs
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");
const here = dirname(fileURLToPath(import.meta.url));

const sources = {};
for (const name of readdirSync(here).filter((n) => n.endsWith(".sol")).sort()) {
  sources[name] = { content: readFileSync(join(here, name), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "prague",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

const result = {};
for (const contracts of Object.values(output.contracts)) {
  for (const [name, compiled] of Object.entries(contracts)) {
    result[name] = { abi: compiled.abi, bytecode: "0x" + compiled.evm.bytecode.object, compiler: solc.version() };
  }
}
process.stdout.write(JSON.stringify(result));
