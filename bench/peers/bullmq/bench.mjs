#!/usr/bin/env node
// BullMQ load driver for the queue benchmark (peer: Redis + BullMQ).
//
//   node bench/peers/bullmq/bench.mjs --port P --phase enqueue|drain|drain-fetch-next --jobs N
//        [--concurrency C] [--payload-bytes 200] [--max-seconds 60]
//        [--queue NAME] [--connections K]
//
// Talks to a redis-server that the caller already runs on 127.0.0.1:P (the
// Rust harness starts it with --appendonly yes --appendfsync always|everysec).
//
// Workload (mirrors the Rust side):
//   enqueue: C async loops add N jobs in total to queue NAME, one
//            `queue.add('bench', {data: 'xxx…'})` per job (no addBulk), each
//            loop awaiting its add before the next. Latency = the add.
//   drain:   C async loops each take one job (`worker.getNextJob(token,
//            {block: false})`, i.e. move wait -> active with a lock owned by
//            the loop's token) and complete it (`job.moveToCompleted('ok',
//            token, false)`, fetchNext=false so completing does not also lease
//            the next job). Latency = getNextJob call to moveToCompleted
//            resolved. This is BullMQ's documented manual-processing pattern
//            and the closest match to our lease + complete.
//   drain-fetch-next: as BullMQ's own Worker runs: each loop takes its first
//            job with getNextJob, then completes each job with
//            `job.moveToCompleted('ok', token, true)`, which in the same Lua
//            call moves the next waiting job to active under the same token
//            and returns it (the Worker's handleCompleted does exactly this;
//            the loop rebuilds the Job with `Job.fromJSON(worker, data, id)`
//            as the Worker's createJob and BullMQ's "manually processing
//            jobs" pattern do). One round trip per job once running, like
//            our settle-and-lease. A loop asks for the next job only when it
//            has claimed one more operation, so no job is left active at
//            the end. Latency = from the end of the previous job's
//            moveToCompleted (or the loop's getNextJob) to the end of this
//            job's.
// Every loop claims one operation at a time from a shared counter and stops
// once N are claimed, the --max-seconds deadline has passed, or another loop
// failed.
//
// Concurrency vs connections: the C loops share a pool of K = min(C, 8)
// BullMQ objects (override with --connections K), loop i using object
// i % K. In enqueue each object is a `Queue` (one ioredis connection each);
// in drain each is a manual `Worker` (one command connection plus the
// dedicated blocking connection every Worker opens, unused here since we
// never block). ioredis pipelines the concurrent commands of the loops that
// share a connection, so C=64 means up to 8 commands in flight per
// connection. Calling getNextJob concurrently on one Worker is safe with
// `block: false`: that path is a plain moveToActive Lua call; the Worker's
// only per-instance guard (`waiting`) is for the blocking path, and no
// processor, stalled checker or lock renewer runs for a processor-less
// Worker (jobs finish far inside the 30 s lock).
//
// Output: exactly one JSON line on stdout at the end,
//   {"jobs": done, "seconds": wall, "p50_us": int, "p99_us": int}
// with nearest-rank percentiles over the per-job latencies in microseconds
// and `seconds` from the start signal (all connections ready) to the last
// loop's finish. Logs go to stderr. Any error: a message on stderr, no JSON,
// exit status 1 (2 for bad arguments, 3 if the whole run hangs past
// max-seconds + 30 s).

import { parseArgs } from 'node:util';
import { randomUUID } from 'node:crypto';
import { Job, Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const HOST = '127.0.0.1';
const JOB_NAME = 'bench';
const DEFAULT_POOL_CAP = 8;
const PHASES = ['enqueue', 'drain', 'drain-fetch-next'];

// Set once the JSON line is written: an event loop that runs dry before that
// (a promise nothing will ever settle) must not look like a success.
let finished = false;
process.on('exit', (code) => {
  if (!finished && code === 0) {
    process.stderr.write('bullmq-bench: error: exited before finishing the run\n');
    process.exitCode = 1;
  }
});

function log(...parts) {
  process.stderr.write(`bullmq-bench: ${parts.join(' ')}\n`);
}

function usageError(message) {
  log(`error: ${message}`);
  log(
    'usage: node bench.mjs --port P --phase enqueue|drain|drain-fetch-next --jobs N [--concurrency C] ' +
      '[--payload-bytes 200] [--max-seconds 60] [--queue NAME] [--connections K]',
  );
  process.exit(2);
}

function positiveInt(name, text, { allowZero = false } = {}) {
  if (text === undefined) usageError(`--${name} is required`);
  if (!/^\d+$/.test(text)) usageError(`--${name} must be a whole number, got '${text}'`);
  const value = Number(text);
  if (!Number.isSafeInteger(value) || (!allowZero && value === 0)) {
    usageError(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got '${text}'`);
  }
  return value;
}

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: 'string' },
        phase: { type: 'string' },
        jobs: { type: 'string' },
        concurrency: { type: 'string', default: '1' },
        'payload-bytes': { type: 'string', default: '200' },
        'max-seconds': { type: 'string', default: '60' },
        queue: { type: 'string', default: 'bench' },
        connections: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    usageError(err.message);
  }
  const port = positiveInt('port', values.port);
  if (port > 65535) usageError(`--port out of range: ${port}`);
  const phase = values.phase;
  if (!PHASES.includes(phase)) {
    usageError(`--phase must be one of ${PHASES.join(', ')}, got '${phase ?? ''}'`);
  }
  const jobs = positiveInt('jobs', values.jobs, { allowZero: true });
  const concurrency = positiveInt('concurrency', values.concurrency);
  const payloadBytes = positiveInt('payload-bytes', values['payload-bytes'], { allowZero: true });
  const maxSecondsText = values['max-seconds'];
  const maxSeconds = Number(maxSecondsText);
  if (!/^\d+(\.\d+)?$/.test(maxSecondsText) || !(maxSeconds > 0)) {
    usageError(`--max-seconds must be a positive number, got '${maxSecondsText}'`);
  }
  const queue = values.queue;
  if (!queue || queue.includes(':')) usageError(`--queue must be non-empty and contain no ':', got '${queue}'`);
  const pool =
    values.connections === undefined
      ? Math.min(concurrency, DEFAULT_POOL_CAP)
      : Math.min(concurrency, positiveInt('connections', values.connections));
  return { port, phase, jobs, concurrency, payloadBytes, maxSeconds, queue, pool };
}

/// The job data: `{"data":"xxx…"}` whose JSON is exactly `size` bytes, like
/// the Rust side's `json_payload_with_key("data", size)`; `{}` when that
/// does not fit (the Rust side pads `{}` with spaces, which an object
/// cannot carry once parsed).
function jobData(size) {
  const overhead = '{"data":""}'.length;
  return size >= overhead ? { data: 'x'.repeat(size - overhead) } : {};
}

/// Nearest-rank percentile of ascending `sorted` (same rule as
/// bench/src/stats.rs): the sample of rank ceil(p/100 * n), clamped to 1..n.
function percentile(sorted, p) {
  const n = sorted.length;
  if (n === 0) return 0;
  const rank = Math.ceil((p / 100) * n);
  return sorted[Math.min(Math.max(rank, 1), n) - 1];
}

/// Fails fast (no endless ioredis reconnects) when nothing listens on the port.
async function probeRedis(port) {
  const probe = new IORedis({
    host: HOST,
    port,
    lazyConnect: true,
    connectTimeout: 5000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  let cause = null;
  probe.on('error', (err) => {
    cause = err;
  });
  try {
    await probe.connect();
    await probe.ping();
  } catch (err) {
    const why = cause && cause !== err ? `${cause.message} (${err.message})` : err.message;
    throw new Error(`cannot reach redis-server on ${HOST}:${port}: ${why}`);
  } finally {
    probe.disconnect();
  }
}

async function main() {
  const opts = parseOptions();
  const { port, phase, jobs, concurrency, payloadBytes, maxSeconds, queue: queueName, pool } = opts;

  // Whole-run watchdog: an operation that never resolves (e.g. redis gone)
  // must not hang the harness. Unref'd so it never keeps the process alive.
  const watchdog = setTimeout(() => {
    log(`error: run still going ${maxSeconds + 30} s after start (a redis call hung?); exiting`);
    process.exit(3);
  }, (maxSeconds + 30) * 1000);
  watchdog.unref();

  await probeRedis(port);

  const connection = { host: HOST, port };
  const clients = [];
  let firstError = null;
  const fail = (err) => {
    if (firstError) return;
    firstError = err instanceof Error ? err : new Error(String(err));
    // Any error fails the run: drop the connections now so that commands
    // ioredis holds while it reconnects reject instead of hanging the loops.
    for (const c of clients) {
      Promise.resolve()
        .then(() => c.disconnect())
        .catch(() => {});
    }
  };
  const closeAll = async () => {
    const results = await Promise.allSettled(clients.map((c) => c.close()));
    for (const r of results) {
      if (r.status === 'rejected') log(`warning: close failed: ${r.reason?.message ?? r.reason}`);
    }
  };

  try {
    for (let i = 0; i < pool; i++) {
      const client =
        phase === 'enqueue'
          ? new Queue(queueName, { connection })
          : new Worker(queueName, null, { connection, autorun: false });
      client.on('error', (err) => {
        log(`error from ${phase === 'enqueue' ? 'Queue' : 'Worker'} #${i}: ${err.message}`);
        fail(err);
      });
      clients.push(client);
    }
    await Promise.all(clients.map((c) => c.waitUntilReady()));

    const data = jobData(payloadBytes);
    if (phase !== 'enqueue') {
      const counter = new Queue(queueName, { connection });
      counter.on('error', () => {});
      try {
        const waiting = await counter.getWaitingCount();
        log(`drain: ${waiting} jobs waiting in '${queueName}', taking ${jobs} with C=${concurrency}, ${pool} Worker(s)`);
        if (waiting < jobs) log(`warning: only ${waiting} of ${jobs} jobs are waiting; the run will end short`);
      } finally {
        await counter.close();
      }
    } else {
      log(
        `enqueue: ${jobs} jobs of ${JSON.stringify(data).length} bytes into '${queueName}' ` +
          `with C=${concurrency}, ${pool} Queue(s)`,
      );
    }

    // Shared state of the loops (single-threaded: plain variables suffice).
    let claimed = 0;
    let stop = false;
    let timedOut = false;
    let emptied = false;
    const latenciesNs = [];

    const start = process.hrtime.bigint();
    const deadline = start + BigInt(Math.round(maxSeconds * 1e9));
    const claim = () => {
      if (stop || firstError) return false;
      if (process.hrtime.bigint() >= deadline) {
        timedOut = true;
        return false;
      }
      if (claimed >= jobs) return false;
      claimed += 1;
      return true;
    };

    const enqueueLoop = async (i) => {
      const queue = clients[i % pool];
      while (claim()) {
        const t = process.hrtime.bigint();
        await queue.add(JOB_NAME, data);
        latenciesNs.push(process.hrtime.bigint() - t);
      }
    };

    const drainLoop = async (i) => {
      const worker = clients[i % pool];
      const token = randomUUID();
      while (claim()) {
        const t = process.hrtime.bigint();
        const job = await worker.getNextJob(token, { block: false });
        if (!job) {
          // Nothing is adding during a drain, so an empty wait list stays
          // empty: give the claim back and stop this loop.
          claimed -= 1;
          emptied = true;
          return;
        }
        await job.moveToCompleted('ok', token, false);
        latenciesNs.push(process.hrtime.bigint() - t);
      }
    };

    const drainFetchNextLoop = async (i) => {
      const worker = clients[i % pool];
      const token = randomUUID();
      if (!claim()) return;
      let t = process.hrtime.bigint();
      let job = await worker.getNextJob(token, { block: false });
      for (;;) {
        if (!job) {
          claimed -= 1;
          emptied = true;
          return;
        }
        const more = claim();
        const next = await job.moveToCompleted('ok', token, more);
        const now = process.hrtime.bigint();
        latenciesNs.push(now - t);
        t = now;
        if (!more) return;
        // [jobData, jobId, rateLimitDelay, delayUntil], or nothing waiting.
        job = Array.isArray(next) && next[0] ? Job.fromJSON(worker, next[0], next[1]) : null;
      }
    };

    const loop = { enqueue: enqueueLoop, drain: drainLoop, 'drain-fetch-next': drainFetchNextLoop }[phase];
    await Promise.all(
      Array.from({ length: concurrency }, (_, i) =>
        loop(i).catch((err) => {
          stop = true;
          fail(err);
        }),
      ),
    );
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;

    if (firstError) throw firstError;
    if (timedOut) log(`time limit: ${latenciesNs.length} of ${jobs} jobs done in ${maxSeconds} s`);
    if (emptied) log(`queue '${queueName}' ran empty after ${latenciesNs.length} of ${jobs} jobs`);

    const sortedUs = latenciesNs.map((ns) => Number(ns / 1000n)).sort((a, b) => a - b);
    const result = {
      jobs: latenciesNs.length,
      seconds: Number(seconds.toFixed(6)),
      p50_us: percentile(sortedUs, 50),
      p99_us: percentile(sortedUs, 99),
    };
    await closeAll();
    clients.length = 0;
    process.stdout.write(`${JSON.stringify(result)}\n`);
    finished = true;
  } finally {
    await closeAll();
  }
}

main().then(
  () => {
    // Everything is closed, so the process exits on its own; if some handle
    // still lingers, do not hang the harness over it.
    setTimeout(() => {
      log('warning: handles still open after close; exiting');
      process.exit(process.exitCode ?? 0);
    }, 5000).unref();
  },
  (err) => {
    log(`error: ${err?.stack ?? err}`);
    process.exit(1);
  },
);
