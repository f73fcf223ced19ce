// The resolve step's program (see resolver.py): `bun install --lockfile-only` on the
// package.json beside it, its messages on stderr, then the lockfile on stdout.
// Run as `bun lock.ts OPTION...`: the options go to `bun install`.
import { readFileSync, writeSync } from "node:fs";

const done = Bun.spawnSync(
  [process.execPath, "install", "--lockfile-only", ...process.argv.slice(2)],
  { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
);
if (done.exitCode !== 0) {
  // Bun's own words, without its progress lines: they are the job's DEPENDENCY_ERROR.
  writeSync(2, done.stderr.length ? done.stderr : done.stdout);
  process.exit(done.exitCode ?? 1);
}
writeSync(2, done.stdout);
writeSync(2, done.stderr);
const lockfile = Buffer.from(readFileSync("bun.lock"));
let offset = 0;
while (offset < lockfile.length) offset += writeSync(1, lockfile, offset);
