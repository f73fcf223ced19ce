// The install's offline step (see resolver.py): loads each package the environment was
// installed for, once, so that Bun's transpiler cache inside the environment holds their
// transpiled files; jobs then read that cache (read-only) instead of transpiling large
// packages on every run. It runs without network and without the shared download cache.
//
// Each package is loaded in a child process of its own with a time limit, so that one that
// fails, hangs or exits while loading costs only its own warm-up, never the install.
// Run as `bun prewarm.ts ENVIRONMENT`, with BUN_RUNTIME_TRANSPILER_CACHE_PATH set.
import { readFileSync } from "node:fs";

const LIMIT_MS = 10_000;
const environment = process.argv[2];
const manifest = JSON.parse(readFileSync(`${environment}/package.json`, "utf8"));
for (const name of Object.keys(manifest.dependencies ?? {})) {
  const load = `await import(${JSON.stringify(name)}); process.exit(0);`;
  const done = Bun.spawnSync([process.execPath, "--no-install", "-e", load], {
    cwd: environment,
    stdin: "ignore",
    stdout: "ignore",
    stderr: "ignore",
    timeout: LIMIT_MS,
  });
  const how = done.exitCode === 0 ? "warmed" : `not warmed (exit ${done.exitCode ?? "killed"})`;
  console.error(`transpiler cache: ${name} ${how}`);
}
process.exit(0);
