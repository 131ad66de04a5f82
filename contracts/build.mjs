// Compiles medtrail's contracts with the pinned npm `solc` through its standard-JSON interface
// and writes one artifact per contract: ABI, bytecode, deployed bytecode, compiler version,
// settings and a hash of every source that went into the build.
//
//   node contracts/build.mjs [--out DIR] [--test-out DIR]
//
// Production contracts (contracts/src) go to ledger/artifacts (package data, committed, so the
// service never needs Node); test-only contracts (contracts/test) go to tests/artifacts.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? resolve(args[i + 1]) : fallback;
};
const outDir = option("--out", join(root, "ledger", "artifacts"));
const testOutDir = option("--test-out", join(root, "tests", "artifacts"));

export const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "prague",
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "evm.deployedBytecode.immutableReferences"] },
  },
};

function solFiles(dir) {
  return readdirSync(dir)
    .flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? solFiles(path) : path.endsWith(".sol") ? [path] : [];
    })
    .sort();
}

const sources = {};
for (const file of [...solFiles(join(root, "contracts", "src")), ...solFiles(join(root, "contracts", "test"))]) {
  sources[relative(root, file)] = { content: readFileSync(file, "utf8") };
}

const imported = {};
function findImports(path) {
  if (path.startsWith("@openzeppelin/")) {
    const content = readFileSync(join(root, "node_modules", path), "utf8");
    imported[path] = content;
    return { contents: content };
  }
  return { error: `import not found: ${path}` };
}

const input = { language: "Solidity", sources, settings: SETTINGS };
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

// One hash over every source of the build (ours and OpenZeppelin's), path and content.
const allSources = { ...Object.fromEntries(Object.entries(sources).map(([p, s]) => [p, s.content])), ...imported };
const sourcesHash = createHash("sha256");
for (const path of Object.keys(allSources).sort()) {
  sourcesHash.update(path).update("\0").update(allSources[path]).update("\0");
}
const digest = "0x" + sourcesHash.digest("hex");
const ozVersion = JSON.parse(
  readFileSync(join(root, "node_modules", "@openzeppelin", "contracts", "package.json"), "utf8"),
).version;

let written = 0;
for (const [sourceName, contracts] of Object.entries(output.contracts)) {
  if (!sourceName.startsWith("contracts/")) continue;
  const target = sourceName.startsWith("contracts/test/") ? testOutDir : outDir;
  for (const [name, compiled] of Object.entries(contracts)) {
    const bytecode = compiled.evm.bytecode.object;
    if (bytecode.length === 0) continue; // interfaces
    const artifact = {
      contractName: name,
      sourceName,
      compiler: { name: "solc", version: solc.version(), settings: SETTINGS },
      openzeppelin: ozVersion,
      sourcesHash: digest,
      abi: compiled.abi,
      bytecode: "0x" + bytecode,
      deployedBytecode: "0x" + compiled.evm.deployedBytecode.object,
      // Byte ranges of `immutable` values in the deployed code, filled in at deployment:
      // masked when checking that an address holds this contract.
      immutableReferences: Object.values(compiled.evm.deployedBytecode.immutableReferences ?? {})
        .flat()
        .sort((a, b) => a.start - b.start),
    };
    mkdirSync(target, { recursive: true });
    writeFileSync(join(target, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
    written += 1;
    console.log(`${relative(root, join(target, name + ".json"))}  (${bytecode.length / 2} bytes)`);
  }
}
console.log(`compiled ${written} contracts with solc ${solc.version()}`);
