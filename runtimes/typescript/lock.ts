// The resolve step's program (see resolver.py): `bun install --lockfile-only` on the
// package.json beside it, its messages on stderr, then the lockfile on stdout.
// Run as `bun lock.ts OPTION...`: the options go to `bun install`.
import { readFileSync, writeSync } from "node:fs";

const done = Bun.spawnSync(
  [process.execPath, "install", "--lockfile-only", ...process.argv.slice(2)],
  { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
);
writeSync(2, done.stdout);
writeSync(2, done.stderr);
if (done.exitCode !== 0) process.exit(done.exitCode ?? 1);
const lockfile = Buffer.from(readFileSync("bun.lock"));
let offset = 0;
while (offset < lockfile.length) offset += writeSync(1, lockfile, offset);
