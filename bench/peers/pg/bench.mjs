#!/usr/bin/env node
// PostgreSQL-backed peers for the queue benchmark (`bench pg`):
// graphile-worker, and BullMQ with its PostgreSQL backend.
//
//   node bench/peers/pg/bench.mjs --system graphile|bullmq --url URL
//        --phase enqueue|drain --jobs N [--concurrency C]
//        [--payload-bytes 200] [--max-seconds 60]
//
// URL names a database the caller has just created (empty); each system
// creates its own schema in it (graphile-worker: `graphile_worker`, BullMQ:
// its default schema) before the clock starts. The same PostgreSQL cluster
// serves our queue in the same run, with fsync and synchronous_commit on.
//
// Workload (mirrors `bench pg` on our side):
//   enqueue: C async loops add N jobs in total, one job per call, each loop
//            awaiting its add before the next. graphile-worker:
//            `workerUtils.addJob('bench', data)` (one `graphile_worker.add_job`
//            call: one round trip, one transaction) over a pool of C
//            connections. BullMQ: `queue.add('bench', data)` on one `Queue`
//            whose pool has C + 1 connections.
//   drain:   the system's own runner with concurrency C takes the N jobs and
//            finishes each, the task doing nothing. graphile-worker: `run()`
//            with its defaults (no local queue, no completion batching: one
//            `get_job` and one `complete_job` call per job). BullMQ: one
//            `Worker` with `concurrency: C` (each finished job is moved to
//            completed, which also fetches the next).
//            The clock runs from the runner's start until the N-th job is
//            reported complete by the system's own event.
// The drain also records each finished job's id: a job finished twice, or
// fewer than N distinct jobs, fails the run; after the drain the database is
// asked how many jobs are still waiting or running (must be none).
//
// Output: exactly one JSON line on stdout at the end,
//   {"jobs": done, "seconds": wall, "p50_us": int, "p99_us": int,
//    "distinct": ids, "duplicates": n, "left": n}
// (latencies are per add in the enqueue phase; in the drain they are zero:
// a runner does not expose the take-to-finish time of each job). Logs go to
// stderr. Any error: a message on stderr, no JSON, exit status 1 (2 for bad
// arguments, 3 if the whole run hangs past max-seconds + 60 s).

import { parseArgs } from 'node:util';

const JOB_NAME = 'bench';
const QUEUE_NAME = 'bench';

let finished = false;
process.on('exit', (code) => {
  if (!finished && code === 0) {
    process.stderr.write('pg-bench: error: exited before finishing the run\n');
    process.exitCode = 1;
  }
});

function log(...parts) {
  process.stderr.write(`pg-bench: ${parts.join(' ')}\n`);
}

function usageError(message) {
  log(`error: ${message}`);
  log(
    'usage: node bench.mjs --system graphile|bullmq --url URL --phase enqueue|drain --jobs N ' +
      '[--concurrency C] [--payload-bytes 200] [--max-seconds 60]',
  );
  process.exit(2);
}

function wholeNumber(name, text, { allowZero = false } = {}) {
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
        system: { type: 'string' },
        url: { type: 'string' },
        phase: { type: 'string' },
        jobs: { type: 'string' },
        concurrency: { type: 'string', default: '1' },
        'payload-bytes': { type: 'string', default: '200' },
        'max-seconds': { type: 'string', default: '60' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    usageError(err.message);
  }
  const system = values.system;
  if (system !== 'graphile' && system !== 'bullmq') {
    usageError(`--system must be 'graphile' or 'bullmq', got '${system ?? ''}'`);
  }
  const url = values.url;
  if (!url || !/^postgres(ql)?:\/\//.test(url)) usageError(`--url must be a postgres:// URL, got '${url ?? ''}'`);
  const phase = values.phase;
  if (phase !== 'enqueue' && phase !== 'drain') {
    usageError(`--phase must be 'enqueue' or 'drain', got '${phase ?? ''}'`);
  }
  const jobs = wholeNumber('jobs', values.jobs);
  const concurrency = wholeNumber('concurrency', values.concurrency);
  const payloadBytes = wholeNumber('payload-bytes', values['payload-bytes'], { allowZero: true });
  const maxSecondsText = values['max-seconds'];
  const maxSeconds = Number(maxSecondsText);
  if (!/^\d+(\.\d+)?$/.test(maxSecondsText) || !(maxSeconds > 0)) {
    usageError(`--max-seconds must be a positive number, got '${maxSecondsText}'`);
  }
  return { system, url, phase, jobs, concurrency, payloadBytes, maxSeconds };
}

/// `{"data":"xxx…"}` whose JSON is exactly `size` bytes (as the Rust side's
/// payload), `{}` when that does not fit.
function jobData(size) {
  const overhead = '{"data":""}'.length;
  return size >= overhead ? { data: 'x'.repeat(size - overhead) } : {};
}

/// Nearest-rank percentile of ascending `sorted` (bench/src/stats.rs's rule).
function percentile(sorted, p) {
  const n = sorted.length;
  if (n === 0) return 0;
  const rank = Math.ceil((p / 100) * n);
  return sorted[Math.min(Math.max(rank, 1), n) - 1];
}

/// C loops adding `jobs` jobs in total with `add()`; per-add latencies.
async function enqueueLoops({ jobs, concurrency, maxSeconds }, add) {
  let claimed = 0;
  let stop = false;
  let timedOut = false;
  const latenciesNs = [];
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(maxSeconds * 1e9));
  const claim = () => {
    if (stop) return false;
    if (process.hrtime.bigint() >= deadline) {
      timedOut = true;
      return false;
    }
    if (claimed >= jobs) return false;
    claimed += 1;
    return true;
  };
  let firstError = null;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      try {
        while (claim()) {
          const t = process.hrtime.bigint();
          await add();
          latenciesNs.push(process.hrtime.bigint() - t);
        }
      } catch (err) {
        stop = true;
        firstError ??= err;
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (firstError) throw firstError;
  if (timedOut) log(`time limit: ${latenciesNs.length} of ${jobs} jobs added in ${maxSeconds} s`);
  const sortedUs = latenciesNs.map((ns) => Number(ns / 1000n)).sort((a, b) => a - b);
  return {
    jobs: latenciesNs.length,
    seconds,
    p50_us: percentile(sortedUs, 50),
    p99_us: percentile(sortedUs, 99),
  };
}

/// Counts finished job ids: `finish(id)` per completion event; resolves
/// once `jobs` distinct ids are in, or at the deadline.
function completionCounter(jobs, maxSeconds) {
  const seen = new Set();
  let duplicates = 0;
  let resolveDone;
  const done = new Promise((resolve) => {
    resolveDone = resolve;
  });
  const timer = setTimeout(() => {
    log(`time limit: ${seen.size} of ${jobs} jobs finished in ${maxSeconds} s`);
    resolveDone(true);
  }, maxSeconds * 1000);
  return {
    finish(id) {
      const key = String(id);
      if (seen.has(key)) {
        duplicates += 1;
        log(`error: job ${key} finished twice`);
      } else {
        seen.add(key);
      }
      if (seen.size >= jobs) {
        clearTimeout(timer);
        resolveDone(false);
      }
    },
    done,
    get distinct() {
      return seen.size;
    },
    get duplicates() {
      return duplicates;
    },
    cancel() {
      clearTimeout(timer);
    },
  };
}

async function graphile(opts) {
  const { url, phase, jobs, concurrency, payloadBytes, maxSeconds } = opts;
  const { makeWorkerUtils, run } = await import('graphile-worker');
  const quiet = await quietLogger();
  if (phase === 'enqueue') {
    const utils = await makeWorkerUtils({ connectionString: url, maxPoolSize: concurrency, logger: quiet });
    try {
      await utils.migrate();
      const data = jobData(payloadBytes);
      log(`graphile-worker enqueue: ${jobs} jobs, C=${concurrency}`);
      return await enqueueLoops(opts, () => utils.addJob(JOB_NAME, data));
    } finally {
      await utils.release();
    }
  }
  const counter = completionCounter(jobs, maxSeconds);
  const { EventEmitter } = await import('node:events');
  const events = new EventEmitter();
  events.on('job:complete', ({ job, error }) => {
    if (!error) counter.finish(job.id);
  });
  let failure = null;
  events.on('job:failed', ({ job, error }) => {
    failure ??= new Error(`job ${job.id} failed: ${error}`);
  });
  log(`graphile-worker drain: ${jobs} jobs, concurrency ${concurrency}`);
  const start = process.hrtime.bigint();
  const runner = await run({
    connectionString: url,
    concurrency,
    // One connection per concurrent job plus the LISTEN connection.
    maxPoolSize: concurrency + 1,
    noHandleSignals: true,
    pollInterval: 1000,
    logger: quiet,
    events,
    taskList: { [JOB_NAME]: async () => {} },
  });
  const timedOut = await counter.done;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await runner.stop();
  if (failure) throw failure;
  const { Client } = (await import('pg')).default;
  const client = new Client({ connectionString: url });
  await client.connect();
  let left;
  try {
    const res = await client.query('select count(*)::int as n from graphile_worker._private_jobs');
    left = res.rows[0].n;
  } finally {
    await client.end();
  }
  if (timedOut) log('stopped by the time limit');
  return {
    jobs: counter.distinct,
    seconds,
    p50_us: 0,
    p99_us: 0,
    distinct: counter.distinct,
    duplicates: counter.duplicates,
    left,
  };
}

/// graphile-worker's logger without its per-job info lines.
async function quietLogger() {
  const { Logger } = await import('graphile-worker');
  return new Logger(() => (level, message) => {
    if (level === 'error' || level === 'warning') log(`graphile-worker ${level}: ${message}`);
  });
}

async function bullmq(opts) {
  const { url, phase, jobs, concurrency, payloadBytes, maxSeconds } = opts;
  const { Queue, Worker, createPostgresBackend } = await import('bullmq');
  // A config object (not a pg.Pool of ours): BullMQ then builds the pool
  // itself, pins its schema on each connection and, with `migrate`, makes
  // the schema when it connects (before the clock starts). Each BullMQ
  // object has its own pool of C + 1 connections.
  const connection = { connectionString: url, max: concurrency + 1, migrate: true };
  const closers = [];
  try {
    if (phase === 'enqueue') {
      const queue = new Queue(QUEUE_NAME, { connection }, createPostgresBackend);
      queue.on('error', (err) => log(`Queue error: ${err.message}`));
      closers.push(() => queue.close());
      await queue.waitUntilReady();
      const data = jobData(payloadBytes);
      log(`bullmq-pg enqueue: ${jobs} jobs, C=${concurrency}`);
      return await enqueueLoops(opts, () => queue.add(JOB_NAME, data));
    }
    const counter = completionCounter(jobs, maxSeconds);
    let failure = null;
    log(`bullmq-pg drain: ${jobs} jobs, concurrency ${concurrency}`);
    const start = process.hrtime.bigint();
    const worker = new Worker(QUEUE_NAME, async () => {}, { connection, concurrency, autorun: true }, createPostgresBackend);
    closers.push(() => worker.close());
    worker.on('completed', (job) => counter.finish(job.id));
    worker.on('failed', (job, err) => {
      failure ??= new Error(`job ${job?.id} failed: ${err?.message ?? err}`);
    });
    worker.on('error', (err) => {
      failure ??= err;
      log(`Worker error: ${err.message}`);
    });
    const timedOut = await counter.done;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    await worker.close();
    closers.pop();
    if (failure) throw failure;
    const queue = new Queue(QUEUE_NAME, { connection }, createPostgresBackend);
    closers.push(() => queue.close());
    const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'completed');
    const left = counts.wait + counts.active + counts.delayed + counts.prioritized;
    if (counts.completed !== counter.distinct) {
      throw new Error(`BullMQ counts ${counts.completed} completed jobs, the worker reported ${counter.distinct}`);
    }
    if (timedOut) log('stopped by the time limit');
    return {
      jobs: counter.distinct,
      seconds,
      p50_us: 0,
      p99_us: 0,
      distinct: counter.distinct,
      duplicates: counter.duplicates,
      left,
    };
  } finally {
    for (const close of closers.reverse()) {
      try {
        await close();
      } catch (err) {
        log(`warning: close failed: ${err.message}`);
      }
    }
  }
}

async function main() {
  const opts = parseOptions();
  const watchdog = setTimeout(() => {
    log(`error: run still going ${opts.maxSeconds + 60} s after start; exiting`);
    process.exit(3);
  }, (opts.maxSeconds + 60) * 1000);
  watchdog.unref();
  const result = opts.system === 'graphile' ? await graphile(opts) : await bullmq(opts);
  result.seconds = Number(result.seconds.toFixed(6));
  process.stdout.write(`${JSON.stringify(result)}\n`);
  finished = true;
}

main().then(
  () => {
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
