// gristmill's TypeScript wrapper (Bun), per runtimes/PROTOCOL.md.
//
// Started by the sandbox before the job is known: reads the job message on fd 4, imports
// the user's /job/main.ts, calls its entry point with the arguments in the order of its
// parameters (their names come from the service, which read them with a real parser),
// awaits the value and writes the result or the error on fd 3. Then it exits at once:
// timers, open handles or promises the job left behind do not hold the outcome back.
//
// The job message (language.py writes it):
//   {"entry_point": "main", "source": "/job/main.ts", "args": {...},
//    "parameters": ["a", "b"] | null,      the entry point's parameters, in order
//    "bigint": ["n"], "date": ["when"],    parameters that get a BigInt / a Date
//    "versioned_imports": {"lodash@4": "lodash"}}
// Integers in `args` keep every digit: a parameter declared `bigint` gets a BigInt.

import { mkdirSync, readFileSync, symlinkSync, writeSync } from "node:fs";
import { dirname } from "node:path";

const RESULT_FD = 3;
const JOB_FD = 4;
const JOB_DIR = "/job/";

interface JobMessage {
  // Set for a job run as a plain script: its positional arguments (process.argv[2...]).
  script?: string[];
  entry_point: string;
  source: string;
  args: Record<string, unknown>;
  parameters: string[] | null;
  bigint: string[];
  date: string[];
  versioned_imports: Record<string, string>;
}

interface Frame {
  file: string;
  line: number;
  function: string;
  text: string;
}

type Message =
  | { result: unknown }
  | { error: { name: string; message: string; stack: Frame[] }; verdict: string };

class ResultNotSerializable extends Error {
  override name = "ResultNotSerializable";
}

let reported = false;

function writeAll(fd: number, text: string): void {
  writeAllBlocking(fd, Buffer.from(text, "utf8"));
}

// Integers beyond 2^53 travel as JSON text: they are read here as BigInt (by their source
// text), so that none loses a digit before the binding decides what each parameter gets.
// The job's context variables head the job message (`NAME=value`, each ended by a NUL
// byte, then a lone NUL): set in the environment before the job's code loads.
function takeContext(data: Buffer): string {
  let start = 0;
  for (let end = data.indexOf(0); end > start; end = data.indexOf(0, start)) {
    const variable = data.toString("utf8", start, end);
    const equals = variable.indexOf("=");
    process.env[variable.slice(0, equals)] = variable.slice(equals + 1);
    start = end + 1;
  }
  return data.toString("utf8", start + 1);
}

function parseJob(text: string): JobMessage {
  return JSON.parse(text, (_key, value, context?: { source?: string }) => {
    if (
      typeof value === "number" &&
      !Number.isSafeInteger(value) &&
      context?.source !== undefined &&
      /^-?\d+$/.test(context.source)
    ) {
      return BigInt(context.source);
    }
    return value;
  });
}

function asNumbers(value: unknown): unknown {
  if (typeof value === "bigint") return Number(value);
  if (Array.isArray(value)) return value.map(asNumbers);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, asNumbers(v)]));
  }
  return value;
}

function argument(job: JobMessage, name: string): unknown {
  if (!Object.hasOwn(job.args, name)) return undefined;
  const value = job.args[name];
  if (job.bigint.includes(name)) {
    return typeof value === "number" && Number.isInteger(value) ? BigInt(value) : value;
  }
  if (job.date.includes(name) && (typeof value === "string" || typeof value === "number")) {
    return new Date(value);
  }
  return asNumbers(value);
}

// JSON as the contract wants it: integers of any size exact (a BigInt is written by its
// digits), NaN and the infinities refused (JSON has no spelling for them), a Map as an
// object, a Set as an array; functions and symbols refused rather than silently dropped.
function serialise(value: unknown): string {
  const text = JSON.stringify(value, function (this: unknown, key: string, item: unknown) {
    const where = key === "" ? "the result" : `the result's ${JSON.stringify(key)}`;
    switch (typeof item) {
      case "bigint":
        return (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON(item.toString());
      case "number":
        if (!Number.isFinite(item)) {
          throw new ResultNotSerializable(`${where} is ${item}, which JSON cannot represent`);
        }
        return item;
      case "function":
      case "symbol":
        throw new ResultNotSerializable(`${where} is a ${typeof item}, which is not JSON`);
      default:
        break;
    }
    if (item instanceof Map) {
      return Object.fromEntries([...item].map(([k, v]) => [String(k), v]));
    }
    if (item instanceof Set) return [...item];
    return item;
  });
  return text === undefined ? "null" : text;
}

const sourceLines = new Map<string, string[]>();

function lineText(file: string, line: number): string {
  let lines = sourceLines.get(file);
  if (lines === undefined) {
    try {
      lines = readFileSync(file, "utf8").split("\n");
    } catch {
      lines = [];
    }
    sourceLines.set(file, lines);
  }
  return (lines[line - 1] ?? "").trim();
}

function frame(file: string, line: number, fn: string): Frame {
  return { file: file.slice(JOB_DIR.length), line, function: fn, text: lineText(file, line) };
}

// Bun's stack lines: "    at name (/job/main.ts:3:11)", "    at /job/main.ts:2:7",
// "    at async name (...)". Lines are the user's .ts lines (Bun maps them itself).
const STACK_LINE = /^\s*at (?:(?:async )?(.*?) \()?(\/[^()]*?):(\d+):(\d+)\)?\s*$/;

function frames(error: unknown): Frame[] {
  const stack = (error as { stack?: unknown } | null)?.stack;
  if (typeof stack !== "string") return [];
  const found: Frame[] = [];
  for (const line of stack.split("\n")) {
    const match = STACK_LINE.exec(line);
    if (match && match[2].startsWith(JOB_DIR)) {
      found.push(frame(match[2], Number(match[3]), match[1] ?? ""));
    }
  }
  return found.reverse();
}

interface BuildMessage {
  name: string;
  message: string;
  position?: { file?: string; line?: number; lineText?: string } | null;
}

function buildMessages(error: unknown): BuildMessage[] {
  const isBuild = (e: unknown) =>
    typeof e === "object" && e !== null && (e as BuildMessage).name === "BuildMessage";
  if (isBuild(error)) return [error as BuildMessage];
  if (error instanceof AggregateError && error.errors.length && error.errors.every(isBuild)) {
    return error.errors as BuildMessage[];
  }
  return [];
}

function errorMessage(error: unknown, verdict = "ERROR"): Message {
  const build = buildMessages(error);
  if (build.length) {
    // The code did not compile: Bun's parser says where, in the user's own lines.
    const stack = build
      .filter((m) => m.position?.file?.startsWith(JOB_DIR))
      .slice(0, 1)
      .map((m) => frame(m.position!.file!, m.position!.line ?? 0, ""));
    const message = build
      .map((m) => (m.position?.line ? `line ${m.position.line}: ${m.message}` : m.message))
      .join("\n");
    return { error: { name: "SyntaxError", message, stack }, verdict };
  }
  if (error instanceof Error) {
    let stack = frames(error);
    const position = (error as { position?: BuildMessage["position"] }).position;
    if (!stack.length && position?.file?.startsWith(JOB_DIR) && position.line) {
      stack = [frame(position.file, position.line, "")];
    }
    // `class Declined extends Error {}` keeps the name "Error": its class says more.
    const className = error.constructor?.name;
    const name =
      error.name === "Error" && className && className !== "Error" ? className : error.name;
    return { error: { name: name || "Error", message: error.message, stack }, verdict };
  }
  // A thrown value that is not an Error (`throw "declined"`): no stack to show.
  let message: string;
  try {
    message = typeof error === "string" ? error : (JSON.stringify(error) ?? String(error));
  } catch {
    message = String(error);
  }
  return { error: { name: "ThrownValue", message, stack: [] }, verdict };
}

function printError(error: unknown): void {
  const text =
    error instanceof Error && typeof error.stack === "string"
      ? error.stack
          .split("\n")
          .filter((line) => !line.includes("/gristmill/runtime/"))
          .join("\n")
      : `Uncaught ${String(error)}`;
  console.error(text);
}

const pause = new Int32Array(new SharedArrayBuffer(4));

function writeAllBlocking(fd: number, data: Uint8Array): void {
  let offset = 0;
  while (offset < data.length) {
    try {
      offset += writeSync(fd, data, offset, data.length - offset);
    } catch (error) {
      // The pipe is full and the descriptor non-blocking: wait a millisecond for the reader.
      if ((error as { code?: string }).code !== "EAGAIN") throw error;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

// Bun's process.stdout and process.stderr write asynchronously: what is still pending when
// the process exits is lost, unless the stream is ended first (which waits for it). They
// are made on first use, and making one costs tens of milliseconds, so the wrapper never
// touches them itself: Bun makes the descriptor non-blocking when it makes the stream,
// and only then is there anything to flush. (console.log writes at once.)
const O_NONBLOCK = 0o4000;

function streamWasMade(fd: number): boolean {
  try {
    const flags = /flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
    return flags === null || (Number.parseInt(flags[1], 8) & O_NONBLOCK) !== 0;
  } catch {
    return true;
  }
}

async function flushed(name: "stdout" | "stderr", fd: number): Promise<void> {
  if (!streamWasMade(fd)) return;
  const stream = process[name];
  await new Promise<void>((resolve) => {
    stream.once("error", () => resolve());
    stream.end(() => resolve());
  });
}

// `message` is the envelope, or its JSON text when it holds the result.
async function finish(message: Message | string, status: number): Promise<never> {
  if (!reported) {
    reported = true;
    writeAll(RESULT_FD, typeof message === "string" ? message : JSON.stringify(message));
  }
  await Promise.all([flushed("stdout", 1), flushed("stderr", 2)]);
  process.exit(status);
}

// `import _ from "lodash@4"`: the version was for the resolver. Bun looks the specifier
// up as a package of that very name, so /job/node_modules gets a link by that name to
// the installed package (other names go on up to /node_modules, the environment).
function linkVersionedImports(aliases: Record<string, string>): void {
  const environment = process.env.GRISTMILL_ENVIRONMENT;
  if (!environment) return;
  for (const [alias, name] of Object.entries(aliases)) {
    const link = `${JOB_DIR}node_modules/${alias}`;
    try {
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync(`${environment}/node_modules/${name}`, link);
    } catch {
      // Already there (the job's own files), or not writable: Bun reports what is missing.
    }
  }
}

async function run(job: JobMessage): Promise<Message | string> {
  linkVersionedImports(job.versioned_imports);
  if (job.script !== undefined) {
    process.argv.splice(1, process.argv.length - 1, job.source, ...job.script);
    await import(job.source);
    return '{"result":null}';
  }
  const module: Record<string, unknown> = await import(job.source);
  // `export default function (...)` stands for main when nothing is exported by that name.
  const entry =
    job.entry_point === "main" && typeof module.main !== "function"
      ? module.default
      : module[job.entry_point];
  if (typeof entry !== "function") {
    const exported = Object.keys(module).join(", ") || "nothing";
    return {
      error: {
        name: "EntryPointNotFound",
        message: `the code exports no function ${JSON.stringify(job.entry_point)} (it exports ${exported})`,
        stack: [],
      },
      verdict: "ERROR",
    };
  }
  const names = job.parameters;
  if (names === null && Object.keys(job.args).length) {
    return {
      error: {
        name: "InvalidArguments",
        message: `the parameters of ${job.entry_point} could not be read, so arguments cannot be passed by name`,
        stack: [],
      },
      verdict: "INVALID_ARGUMENTS",
    };
  }
  const values = (names ?? []).map((name) => argument(job, name));
  const badDate = (names ?? []).find(
    (name, index) => values[index] instanceof Date && Number.isNaN((values[index] as Date).getTime()),
  );
  if (badDate !== undefined) {
    return {
      error: {
        name: "InvalidArguments",
        message: `argument ${JSON.stringify(badDate)} must be a date, got ${JSON.stringify(job.args[badDate])}`,
        stack: [],
      },
      verdict: "INVALID_ARGUMENTS",
    };
  }
  const result = await entry(...values);
  try {
    return `{"result":${serialise(result)}}`;
  } catch (error) {
    if (error instanceof ResultNotSerializable) return errorMessage(error);
    const why = error instanceof Error ? error.message : String(error);
    return errorMessage(
      new ResultNotSerializable(`${job.entry_point} returned a value that is not JSON: ${why}`),
    );
  }
}

async function main(): Promise<void> {
  const failed = (error: unknown) => {
    printError(error);
    void finish(errorMessage(error), 1);
  };
  process.on("uncaughtException", failed);
  process.on("unhandledRejection", failed);
  const job = parseJob(takeContext(readFileSync(JOB_FD)));
  let message: Message | string;
  try {
    message = await run(job);
  } catch (error) {
    printError(error);
    return finish(errorMessage(error), 1);
  }
  return finish(message, 0);
}

await main();
