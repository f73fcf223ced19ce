// The install step's program (see resolver.py): copies package.json and bun.lock from the
// step's directory into the environment being built and runs `bun install` there, so that
// node_modules lands in the environment. Run as `bun install_env.ts TARGET OPTION...`.
import { copyFileSync } from "node:fs";

const [target, ...options] = process.argv.slice(2);
for (const name of ["package.json", "bun.lock"]) copyFileSync(name, `${target}/${name}`);
const done = Bun.spawnSync([process.execPath, "install", ...options], {
  cwd: target,
  stdin: "ignore",
  stdout: "inherit",
  stderr: "inherit",
});
process.exit(done.exitCode ?? 1);
