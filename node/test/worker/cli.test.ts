import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildWorker, parseServeArguments, readTokenFile, UsageError } from "../../src/command.js";

const CLI = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "src", "cli.js");

test("bad arguments are one line on stderr and exit status 2", () => {
  for (const args of [["serve", "--port", "x"], ["serve", "--bogus"], ["serve", "--dataset", "nokey"], ["nope"], [], ["serve", "--token-file", "/nonexistent/tokens"]]) {
    const run = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 20000 });
    assert.equal(run.status, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
    assert.match(run.stderr, /^fedproto-node: /);
  }
});

test("argument parsing and token files", () => {
  const args = parseServeArguments(["--port", "0", "--conformance", "--dataset", "a=b.npz"]);
  assert.deepEqual([args.port, args.host, args.conformance, args.datasets], [0, "127.0.0.1", true, [["a", "b.npz"]]]);
  assert.throws(() => parseServeArguments(["--port", "70000"]), UsageError);
  assert.equal(args.exposeErrors, false);
  assert.equal(buildWorker(parseServeArguments(["--conformance"])).exposeErrors, false);
  assert.equal(buildWorker(parseServeArguments(["--conformance", "--expose-errors"])).exposeErrors, true);
  const dir = mkdtempSync(join(tmpdir(), "fedproto-tokens-"));
  try {
    writeFileSync(join(dir, "ok"), "# comment\nalice tok-a\n\nalice tok-a2\nbob tok-b\n");
    assert.deepEqual(readTokenFile(join(dir, "ok")), { alice: ["tok-a", "tok-a2"], bob: ["tok-b"] });
    writeFileSync(join(dir, "bad"), "alice\n");
    assert.throws(() => readTokenFile(join(dir, "bad")), /bad:1: expected/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("serve prints the ready line and stops cleanly on SIGTERM", async () => {
  const child = spawn(process.execPath, [CLI, "serve", "--port", "0", "--conformance"], { stdio: ["ignore", "pipe", "pipe"] });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no ready line")), 20000);
      let out = "";
      child.stdout.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes("\n")) {
          clearTimeout(timer);
          resolve(out.split("\n")[0]!);
        }
      });
    });
    assert.match(line, /^listening on ws:\/\/127\.0\.0\.1:\d+$/);
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
});
