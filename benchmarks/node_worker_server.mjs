// The Node worker under test, in its own process: `node benchmarks/node_worker_server.mjs [--port P]`.
//
// The Node counterpart of benchmarks/worker_server.py, built from node/dist (`make node-build`): a plain
// Worker with limits large enough for the biggest benchmark tensor (the default chunk size is kept), and
// an `echo` method that returns its one bytes argument. Prints `READY <port>` once it listens and stops
// on SIGTERM or SIGINT.
import { parseArgs } from "node:util";
import { Worker } from "../node/dist/worker/index.js";

const MIB = 1024 * 1024;
const { values } = parseArgs({ options: { host: { type: "string", default: "127.0.0.1" }, port: { type: "string", default: "0" } } });

const worker = new Worker({ id: "bench-node", limits: { maxObjectBytes: 8 * 1024 * MIB, maxFrameBytes: 64 * MIB } });
worker.method("echo", ({ data }) => data, {
  description: "Return the argument.",
  params: [{ name: "data", type: "bytes" }],
  returns: "bytes",
});

const server = await worker.serve({ host: values.host, port: Number(values.port) });
process.stdout.write(`READY ${server.port}\n`);

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  // A bounded graceful stop: the harness kills the process if it takes longer.
  const deadline = setTimeout(() => process.exit(0), 2000);
  server.close(1000).finally(() => {
    clearTimeout(deadline);
    process.exit(0);
  });
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
