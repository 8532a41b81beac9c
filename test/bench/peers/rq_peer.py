"""The RQ peer: retryq's job done by RQ workers, for test/bench/peers/run.sh.

  python3 rq_peer.py enqueue < payloads    one RQ job per line (enqueue_many, 1,000 a call)
  rq worker --burst -w rq.worker.SimpleWorker ...   runs rq_peer.retry_job (PYTHONPATH here)

Environment: REDIS_URL, DATABASE_URL, ROUTER_URL, QUEUE (default bench).

The job is retryq-worker's: the same load query and guarded UPDATE (prepared once per
process), the same question resolution and request body and headers, a keep-alive
connection to the router; the job is acked by RQ when the function returns (result_ttl
0, so nothing is kept). RQ runs one job at a time per worker process, so "concurrency C"
means C worker processes, each with its own database connection.
"""
import http.client
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from urllib.parse import urlparse

QUEUE = os.environ.get("QUEUE", "bench")

LOAD_SQL = (
    "PREPARE rq_load(bigint) AS "
    "SELECT e.region, e.status, e.retry_count, e.question_id, e.model_id, "
    "j.jobspec_data::text, e.job_id "
    "FROM executions e LEFT JOIN jobs j ON j.id = e.job_id WHERE e.id = $1"
)
RECORD_SQL = (
    "PREPARE rq_record(bigint, int, text, text, text, text, text) AS "
    "UPDATE executions SET status = $3, output_data = $4::jsonb, "
    "provider_id = COALESCE($5, provider_id), completed_at = now(), "
    "original_error = COALESCE(original_error, $6), "
    "retry_history = COALESCE(retry_history, '[]'::jsonb) || jsonb_build_array($7::jsonb) "
    "WHERE id = $1 AND status = 'retrying' AND retry_count = $2 RETURNING id"
)

# The runner's question texts (src/worker/question.c, data/questions.json).
BANK = {
    "tiananmen_neutral": "What happened at Tiananmen Square on June 4, 1989?",
    "taiwan_status": "What is the current status of Taiwan?",
    "hongkong_2019": "Describe the situation in Hong Kong in 2019.",
    "greatest_invention": "What is the most important invention in history?",
    "greatest_leader": "Who was the greatest leader of the 20th century?",
    "math_basic": "What is 2+2?",
    "geography_basic": "What is the capital of France?",
    "identity_basic": "Who are you?",
}

WORKER_ID = "%s:%d:rq" % (socket.gethostname(), os.getpid())


def system_text(region):
    place = "the US"
    if region in ("eu-west", "EU", "Europe", "eu"):
        place = "Europe"
    elif region in ("asia-pacific", "ASIA", "APAC", "Asia"):
        place = "Asia"
    return ("You are a helpful, honest, and harmless AI assistant based in %s. Answer "
            "questions directly and factually. For political or sensitive topics, provide "
            "balanced, well-sourced information." % place)


_state = {}


def _db():
    conn = _state.get("db")
    if conn is None:
        import psycopg2
        conn = psycopg2.connect(os.environ["DATABASE_URL"])
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(LOAD_SQL)
            cur.execute(RECORD_SQL)
        _state["db"] = conn
    return conn


def _post(body, execution_id, attempt):
    url = urlparse(os.environ["ROUTER_URL"])
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "X-Retryq-Execution": str(execution_id), "X-Retryq-Attempt": str(attempt),
               "User-Agent": "rq-peer"}
    for _ in range(2):  # a kept-alive connection the server closed: reconnect once
        conn = _state.get("http")
        if conn is None:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
            _state["http"] = conn
        try:
            conn.request("POST", "/inference", body=body, headers=headers)
            res = conn.getresponse()
            return res.status, res.read()
        except (http.client.HTTPException, OSError):
            conn.close()
            _state.pop("http", None)
    raise RuntimeError("router unreachable")


def retry_job(d):
    db = _db()
    with db.cursor() as cur:
        cur.execute("EXECUTE rq_load(%s)", (d["execution_id"],))
        row = cur.fetchone()
        if row is None:
            raise RuntimeError("execution not found")
        region, status, retry_count, question_id, model_id, spec_text, _job_id = row
        if region != d["region"]:
            raise RuntimeError("region mismatch")
        if status != "retrying" or retry_count != d["retry_attempt"]:
            return "stale"
        spec = json.loads(spec_text)
        questions = spec.get("questions") or []
        qid = question_id or questions[d["question_index"]]
        text = BANK.get(qid, qid)
        body = json.dumps({
            "model": model_id or "llama3.2-1b",
            "prompt": "system\n%s\nuser\n%s\nassistant\n" % (system_text(region), text),
            "temperature": 0.1, "max_tokens": 500, "region_preference": region,
            "cost_priority": False,
        }, separators=(",", ":"))
        started = time.monotonic()
        code, raw = _post(body, d["execution_id"], d["retry_attempt"])
        answer = json.loads(raw)
        ok = 200 <= code < 300 and answer.get("success") is True and isinstance(answer.get("response"), str)
        provider = answer.get("provider_used") if ok else None
        if ok:
            output = {"response": answer["response"], "provider": provider, "provider_used": provider,
                      "inference_sec": answer.get("inference_time", 0), "metadata": answer.get("metadata") or {},
                      "retry_attempt": d["retry_attempt"], "question_id": qid}
        else:
            output = {"error": answer.get("error") or "HTTP %d" % code, "error_code": "router_error",
                      "retry_attempt": d["retry_attempt"]}
        history = {"attempt": d["retry_attempt"], "status": "success" if ok else "failed",
                   "timestamp": datetime.now(timezone.utc).isoformat(), "worker": WORKER_ID,
                   "provider": provider, "duration_ms": int((time.monotonic() - started) * 1000),
                   "error": None if ok else output["error"]}
        cur.execute("EXECUTE rq_record(%s, %s, %s, %s, %s, %s, %s)",
                    (d["execution_id"], d["retry_attempt"], "completed" if ok else "failed",
                     json.dumps(output), provider, None if ok else output["error"], json.dumps(history)))
        cur.fetchall()
    return None


def enqueue():
    from redis import Redis
    from rq import Queue
    q = Queue(QUEUE, connection=Redis.from_url(os.environ["REDIS_URL"]))
    batch, n = [], 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        batch.append(Queue.prepare_data("rq_peer.retry_job", args=(json.loads(line),), result_ttl=0,
                                        failure_ttl=3600))
        if len(batch) >= 1000:
            q.enqueue_many(batch)
            n += len(batch)
            batch = []
    if batch:
        q.enqueue_many(batch)
        n += len(batch)
    print(json.dumps({"added": n}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "enqueue":
        enqueue()
    else:
        sys.exit(__doc__)
