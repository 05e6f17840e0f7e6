// `npm run lint`: web-ext lint (Mozilla's addons-linter) on exactly the packaged files.
//
// One adjustment, and only one: the linter knows Firefox, where `experiment_apis` is a privileged
// manifest key (an error for any add-on Mozilla did not sign as privileged). Thunderbird lets every
// add-on declare Experiment APIs; ours (experiments/openpgp) is how the add-on reaches Thunderbird's
// OpenPGP key store. So the staged copy's manifest drops that one key; the experiment's files are
// still staged and linted like every other file.

import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PACKAGED } from "./packaged.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const stage = mkdtempSync(join(tmpdir(), "autocrypt-sma-lint-"));
try {
  for (const entry of PACKAGED) cpSync(join(ROOT, entry), join(stage, entry), { recursive: true });
  const manifest = JSON.parse(readFileSync(join(stage, "manifest.json"), "utf8"));
  delete manifest.experiment_apis;
  writeFileSync(join(stage, "manifest.json"), JSON.stringify(manifest, null, 2));
  const webExt = join(ROOT, "node_modules", ".bin", "web-ext");
  const run = spawnSync(webExt, ["lint", "--no-config-discovery", "--source-dir", stage, ...process.argv.slice(2)], {
    stdio: "inherit",
  });
  process.exitCode = run.status ?? 1;
} finally {
  rmSync(stage, { recursive: true, force: true });
}
