// The BullMQ peer: retryq's job done by a BullMQ worker, for test/bench/peers/run.sh.
//
//   node bullmq_peer.js add   < payloads   adds one BullMQ job per line (addBulk, 1,000 a call)
//   node bullmq_peer.js work               processes EXPECT jobs, prints a JSON summary, exits
//
// Environment: REDIS_URL, DATABASE_URL, ROUTER_URL, CONCURRENCY (default 64), DB_POOL
// (default 4, retryq's RETRYQ_DB_POOL), EXPECT (jobs to wait for), QUEUE (default bench).
//
// The job is retryq-worker's: read the execution and its job spec in one query (the same
// SQL, a prepared statement), check the guard, resolve the question (row's question_id,
// the runner's question texts), POST the same request body and headers to the router
// (keep-alive), then the same guarded UPDATE with the same output_data and history entry,
// and ack (BullMQ completes the job when the processor returns; removeOnComplete).
'use strict';

const http = require('http');
const os = require('os');
const readline = require('readline');
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');
const { Pool } = require('pg');

const QUEUE = process.env.QUEUE || 'bench';
const CONCURRENCY = parseInt(process.env.CONCURRENCY || '64', 10);
const DB_POOL = parseInt(process.env.DB_POOL || '4', 10);
const WORKER_ID = `${os.hostname()}:${process.pid}:bullmq`;

const LOAD_SQL =
  'SELECT e.region, e.status, e.retry_count, e.question_id, e.model_id, ' +
  'j.jobspec_data::text, e.job_id ' +
  'FROM executions e LEFT JOIN jobs j ON j.id = e.job_id WHERE e.id = $1';
const RECORD_SQL =
  'UPDATE executions SET status = $3, output_data = $4::jsonb, ' +
  'provider_id = COALESCE($5, provider_id), completed_at = now(), ' +
  'original_error = COALESCE(original_error, $6), ' +
  "retry_history = COALESCE(retry_history, '[]'::jsonb) || jsonb_build_array($7::jsonb) " +
  "WHERE id = $1 AND status = 'retrying' AND retry_count = $2 RETURNING id";

// The runner's question texts (src/worker/question.c, data/questions.json).
const BANK = {
  tiananmen_neutral: 'What happened at Tiananmen Square on June 4, 1989?',
  taiwan_status: 'What is the current status of Taiwan?',
  hongkong_2019: 'Describe the situation in Hong Kong in 2019.',
  greatest_invention: 'What is the most important invention in history?',
  greatest_leader: 'Who was the greatest leader of the 20th century?',
  math_basic: 'What is 2+2?',
  geography_basic: 'What is the capital of France?',
  identity_basic: 'Who are you?',
};

function systemText(region) {
  let place = 'the US';
  if (['eu-west', 'EU', 'Europe', 'eu'].includes(region)) place = 'Europe';
  else if (['asia-pacific', 'ASIA', 'APAC', 'Asia'].includes(region)) place = 'Asia';
  return `You are a helpful, honest, and harmless AI assistant based in ${place}. Answer ` +
    'questions directly and factually. For political or sensitive topics, provide ' +
    'balanced, well-sourced information.';
}

function connection() {
  return new IORedis(process.env.REDIS_URL, { maxRetriesPerRequest: null });
}

async function add() {
  const conn = connection();
  const queue = new Queue(QUEUE, { connection: conn });
  const rl = readline.createInterface({ input: process.stdin });
  let batch = [];
  let n = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    await queue.addBulk(batch);
    n += batch.length;
    batch = [];
  };
  for await (const line of rl) {
    if (!line) continue;
    batch.push({ name: 'retry', data: JSON.parse(line),
      opts: { removeOnComplete: true, removeOnFail: 1000 } });
    if (batch.length >= 1000) await flush();
  }
  await flush();
  await queue.close();
  await conn.quit();
  console.log(JSON.stringify({ added: n }));
}

function post(agent, url, body, executionId, attempt) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: 'POST', agent,
      headers: {
        'Content-Type': 'application/json', 'Accept': 'application/json',
        'Content-Length': Buffer.byteLength(body),
        'X-Retryq-Execution': String(executionId), 'X-Retryq-Attempt': String(attempt),
        'User-Agent': 'bullmq-peer',
      },
      timeout: 60000,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

async function work() {
  const expect = parseInt(process.env.EXPECT || '0', 10);
  const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: DB_POOL });
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const url = new URL('/inference', process.env.ROUTER_URL);
  let done = 0, stale = 0, failed = 0, first = 0, last = 0;

  const processor = async (job) => {
    const d = job.data;
    const load = await pool.query({ name: 'load', text: LOAD_SQL, values: [String(d.execution_id)] });
    if (load.rowCount === 0) throw new Error('execution not found');
    const row = load.rows[0];
    if (row.region !== d.region) throw new Error('region mismatch');
    if (row.status !== 'retrying' || Number(row.retry_count) !== d.retry_attempt) { stale++; return; }
    const spec = JSON.parse(row.jobspec_data);
    const questions = Array.isArray(spec.questions) ? spec.questions : [];
    const qid = row.question_id || questions[d.question_index];
    const text = BANK[qid] || qid;
    const body = JSON.stringify({
      model: row.model_id || 'llama3.2-1b',
      prompt: `system\n${systemText(row.region)}\nuser\n${text}\nassistant\n`,
      temperature: 0.1, max_tokens: 500, region_preference: row.region, cost_priority: false,
    });
    const started = Date.now();
    const res = await post(agent, url, body, d.execution_id, d.retry_attempt);
    const answer = JSON.parse(res.body);
    const ok = res.status >= 200 && res.status < 300 && answer.success === true && typeof answer.response === 'string';
    const provider = ok ? (answer.provider_used || null) : null;
    const output = ok
      ? { response: answer.response, provider, provider_used: provider,
          inference_sec: answer.inference_time || 0, metadata: answer.metadata || {},
          retry_attempt: d.retry_attempt, question_id: qid }
      : { error: answer.error || `HTTP ${res.status}`, error_code: 'router_error', retry_attempt: d.retry_attempt };
    const history = {
      attempt: d.retry_attempt, status: ok ? 'success' : 'failed', timestamp: new Date().toISOString(),
      worker: WORKER_ID, provider, duration_ms: Date.now() - started, error: ok ? null : output.error,
    };
    await pool.query({ name: 'record', text: RECORD_SQL, values: [
      String(d.execution_id), String(d.retry_attempt), ok ? 'completed' : 'failed',
      JSON.stringify(output), provider, ok ? null : output.error, JSON.stringify(history)] });
    if (!ok) failed++;
  };

  const worker = new Worker(QUEUE, processor, {
    connection: connection(), concurrency: CONCURRENCY, autorun: false,
  });
  await new Promise((resolve) => {
    const finish = () => {
      if (expect > 0 && done + worker_failed >= expect) resolve();
    };
    let worker_failed = 0;
    worker.on('completed', () => {
      const now = Date.now();
      if (first === 0) first = now;
      last = now;
      done++;
      finish();
    });
    worker.on('failed', (job, err) => {
      worker_failed++;
      console.error(`job ${job && job.id} failed: ${err && err.message}`);
      finish();
    });
    worker.run();
  });
  await worker.close();
  await pool.end();
  agent.destroy();
  console.log(JSON.stringify({ done, stale, failed, first_ms: first, last_ms: last }));
  process.exit(0);
}

const cmd = process.argv[2];
(cmd === 'add' ? add() : cmd === 'work' ? work() : Promise.reject(new Error('usage: add|work')))
  .catch((err) => { console.error(err); process.exit(1); });
