#!/usr/bin/env node
// Compiles the contracts under src/ with the pinned solc-js and writes one artifact per
// contract to build/<Contract>.json: ABI, creation and runtime bytecode, the compiler version,
// the settings and the SHA-256 of the source, so that anyone can recompile and compare.
//
//   node compile.mjs           write build/*.json            (npm run build)
//   node compile.mjs --check   fail if build/*.json differs  (npm run check)
//   node compile.mjs --stdout  print the artifacts as one JSON object keyed by contract name
//
// Settings:
// - optimizer on, 200 runs: the usual trade-off between deployment size and call gas.
// - evmVersion "paris": the last fork before PUSH0 (shanghai) and MCOPY/transient storage
//   (cancun). The registry needs none of those opcodes, and paris bytecode runs unchanged on
//   every later fork, on anvil and on py-evm (eth-tester), and on the Ethereum-compatible
//   chains (L2s, consortium chains) that have not adopted shanghai. The cost is a few gas per
//   PUSH0 that a PUSH1 0 replaces.
// - the metadata hash stays in the bytecode (solc's default, IPFS), so that a block explorer
//   or Sourcify can match the deployed code to this source.

import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const SOURCES = ["src/AnchorRegistry.sol"];
const BUILD = join(HERE, "build");
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "paris",
};

function fail(message) {
  process.stderr.write(`compile.mjs: ${message}\n`);
  process.exit(1);
}

function loadSolc() {
  const require = createRequire(import.meta.url);
  const pinned = JSON.parse(readFileSync(join(HERE, "package.json"), "utf8")).devDependencies.solc;
  let solc;
  try {
    solc = require("solc");
  } catch (error) {
    fail(`cannot load solc (${error.code ?? error.message}): run \`npm ci --prefix contracts\``);
  }
  if (!solc.version().startsWith(`${pinned}+`)) {
    fail(`solc ${solc.version()} is installed, package.json pins ${pinned}: run \`npm ci --prefix contracts\``);
  }
  return solc;
}

function compile(solc) {
  const sources = {};
  for (const path of SOURCES) {
    sources[path] = { content: readFileSync(join(HERE, path), "utf8") };
  }
  const input = {
    language: "Solidity",
    sources,
    settings: {
      ...SETTINGS,
      outputSelection: {
        "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "evm.methodIdentifiers"] },
      },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  // Warnings fail the build too: the sources are kept warning-free.
  const problems = (output.errors ?? []).filter((e) => e.severity !== "info");
  if (problems.length > 0) {
    fail(`solc reported:\n${problems.map((e) => e.formattedMessage ?? e.message).join("\n")}`);
  }
  const artifacts = {};
  for (const path of SOURCES) {
    const sha256 = createHash("sha256").update(readFileSync(join(HERE, path))).digest("hex");
    for (const [name, contract] of Object.entries(output.contracts[path])) {
      artifacts[name] = {
        contractName: name,
        sourceName: path,
        sourceSha256: sha256,
        compiler: { name: "solc-js", version: solc.version() },
        settings: SETTINGS,
        abi: contract.abi,
        bytecode: `0x${contract.evm.bytecode.object}`,
        deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
        methodIdentifiers: contract.evm.methodIdentifiers,
      };
    }
  }
  return artifacts;
}

function serialize(artifact) {
  return `${JSON.stringify(artifact, null, 2)}\n`;
}

const mode = process.argv[2] ?? "--write";
if (!["--write", "--check", "--stdout"].includes(mode)) {
  fail(`unknown option ${mode}; expected --check or --stdout`);
}
const artifacts = compile(loadSolc());
if (mode === "--stdout") {
  process.stdout.write(serialize(artifacts));
} else if (mode === "--check") {
  const stale = [];
  for (const [name, artifact] of Object.entries(artifacts)) {
    let committed;
    try {
      committed = readFileSync(join(BUILD, `${name}.json`), "utf8");
    } catch {
      committed = null;
    }
    if (committed !== serialize(artifact)) stale.push(`build/${name}.json`);
  }
  if (stale.length > 0) fail(`${stale.join(", ")} differ from the sources: run \`npm run build --prefix contracts\``);
  process.stdout.write(`compile.mjs: ${Object.keys(artifacts).join(", ")} up to date\n`);
} else {
  mkdirSync(BUILD, { recursive: true });
  for (const [name, artifact] of Object.entries(artifacts)) {
    writeFileSync(join(BUILD, `${name}.json`), serialize(artifact));
    process.stdout.write(`compile.mjs: wrote build/${name}.json\n`);
  }
}
