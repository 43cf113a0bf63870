// The benchmarks' local SQS/SNS: fauxqs (bench/package.json; `npm ci --prefix bench`) started
// through its programmatic API, bound to 127.0.0.1 only (its startFauxqs() listens on every
// interface), with queue URLs built from the request's Host header, so a client using
// http://127.0.0.1:<port> gets http://127.0.0.1:<port>/000000000000/<name>.
//
//   node bench/fauxqs.mjs [port]     # port 0 (the default): any free port
//
// Prints one JSON line on stdout once listening: {"port": <port>, "pid": <pid>}. SIGTERM or
// SIGINT closes the server and exits.
import { buildApp } from "fauxqs";

const base = import.meta.resolve("fauxqs"); // .../fauxqs/dist/app.js
const { SqsStore } = await import(new URL("./sqs/sqsStore.js", base));
const { SnsStore } = await import(new URL("./sns/snsStore.js", base));
const { S3Store } = await import(new URL("./s3/s3Store.js", base));

const sqsStore = new SqsStore();
sqsStore.host = ""; // buildQueueUrl: "" → the request's own Host header
const snsStore = new SnsStore();
const app = buildApp({ logger: false, stores: { sqsStore, snsStore, s3Store: new S3Store() } });
await app.listen({ host: "127.0.0.1", port: Number(process.argv[2] ?? 0) });
const { port } = app.server.address();
process.stdout.write(JSON.stringify({ port, pid: process.pid }) + "\n");

let closing = false;
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, async () => {
    if (closing) return;
    closing = true;
    await app.close();
    process.exit(0);
  });
}
