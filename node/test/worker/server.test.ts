import { test } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import { parseServeArguments, UsageError } from "../../src/command.js";
import { DEFAULT_MAX_CONNECTIONS, SUBPROTOCOL } from "../../src/worker/server.js";
import { Worker } from "../../src/worker/worker.js";

/** Opens a WebSocket; resolves with it once open, or with the HTTP status that refused it. */
function open(url: string): Promise<WebSocket | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, SUBPROTOCOL);
    ws.once("open", () => resolve(ws));
    ws.once("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once("error", reject);
  });
}

function closed(ws: WebSocket): Promise<void> {
  return new Promise((resolve) => {
    if (ws.readyState === ws.CLOSED) resolve();
    else ws.once("close", () => resolve());
  });
}

test("one connection beyond maxConnections is refused with HTTP 503, and served once a place frees (§14.2.11)", async () => {
  const server = await new Worker({ id: "bounded" }).serve({ maxConnections: 2 });
  try {
    const first = await open(server.url);
    const second = await open(server.url);
    assert.ok(first instanceof WebSocket && second instanceof WebSocket);
    assert.equal(await open(server.url), 503);
    first.close();
    await closed(first);
    // the server sees the close a moment after the client does
    let third: WebSocket | number = 0;
    for (let attempt = 0; attempt < 50 && !(third instanceof WebSocket); attempt++) {
      third = await open(server.url);
      if (!(third instanceof WebSocket)) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(third instanceof WebSocket, `a freed place was still refused (${String(third)})`);
    third.close();
    second.close();
  } finally {
    await server.close(100);
  }
});

test("maxConnections 0 means no bound, and a bad bound is refused", async () => {
  const worker = new Worker({ id: "unbounded" });
  const server = await worker.serve({ maxConnections: 0 });
  try {
    const sockets = await Promise.all(Array.from({ length: 5 }, () => open(server.url)));
    assert.ok(sockets.every((ws) => ws instanceof WebSocket));
    for (const ws of sockets) (ws as WebSocket).close();
  } finally {
    await server.close(100);
  }
  assert.throws(() => worker.serve({ maxConnections: -1 }), RangeError);
});

test("--max-connections: default, explicit, and a bad value in one line", () => {
  assert.equal(parseServeArguments([]).maxConnections, DEFAULT_MAX_CONNECTIONS);
  assert.equal(parseServeArguments(["--max-connections", "0"]).maxConnections, 0);
  assert.equal(parseServeArguments(["--max-connections", "7"]).maxConnections, 7);
  for (const bad of ["-1", "x", "1.5", ""]) {
    assert.throws(() => parseServeArguments([`--max-connections=${bad}`]), (err: Error) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, /^--max-connections must be an integer >= 0/);
      assert.equal(err.message.split("\n").length, 1);
      return true;
    });
  }
});
