"""The Redis key schema: every key crawlq reads or writes is built here, arq's included (as prefixes that the Lua
scripts get as arguments). Two exceptions: the queue's name is the setting `queue_name` (arq's sorted set), and
`workers/lua/gate.lua` derives a host from its key by the length of `crawlq:host:`.

Per batch (all expire `result_ttl_s` after the last write of a submit or the completion):
  crawlq:b:{batch}:meta      hash  counters (field names: crawlq/stats.py): total, done, succeeded, failed, latency_n,
                                   latency_sum_ms, bytes, attempts, completions, discovered, s:<status>,
                                   e:<error class>, h:<histogram bucket>, d:<depth> (URLs found at that depth),
                                   created_at, finished_at (epoch ms), lost (why keys went missing, set by `wait`)
  crawlq:b:{batch}:urls      hash  url id -> canonical URL (the manifest)
  crawlq:b:{batch}:results   hash  url id -> msgpack result record (first write wins)
  crawlq:b:{batch}:jobs      hash  arq job id -> comma-separated url ids owned by that job (until its last commit)
  crawlq:b:{batch}:submitters zset producer token -> lease expiry (ms); a batch cannot complete while one is live
  crawlq:b:{batch}:options   string the batch's fetch options (JSON, `crawlq.options.BatchOptions`), set once
  crawlq:b:{batch}:queue     zset  arq job id -> run time ms: the batch's jobs not yet claimed (claim.lua picks here)
  (meta also holds priority, paused_at and cancelled_at: the batch's scheduling state)
  crawlq:b:{batch}:found     hash  url id -> "depth,parent url id" of each URL added by link following
  crawlq:b:{batch}:parents   set   url ids of the pages whose links were added (a page refetched adds none)
  crawlq:body:{sha256}       string a gzip body (CRAWLQ_STORE_BODIES=redis), with its own TTL
  crawlq:enqueued:{job id}   string the reply of one enqueue.lua call (added,duplicates,jobs), named by its first
                                   job id and kept `job_expires_s`: the call sent again answers the same
Global:
  crawlq:batches             zset  batch -> created_at ms (recent batches, for `status`)
  crawlq:active              set   batches not yet complete (the reconciler's work list)
  crawlq:stats:all           hash  the same counters as meta, over every batch
  crawlq:sched               zset  batch -> priority: batches with jobs to claim (claim.lua, highest first)
  crawlq:sched:turn          string round-robin counter between batches of equal priority
  crawlq:paused              set   paused batches (claim.lua skips their jobs)
  crawlq:claimed             zset  arq job id -> lease expiry ms: claimed jobs (a lapsed one goes back to its queue)
  crawlq:host:{host}         hash  next_at, cooldown_until, penalty_ms (politeness state)
  crawlq:host:{host}:leases  zset  lease id -> expiry ms (requests in flight on that host)
  crawlq:host:{host}:waiters set   wake channels of workers waiting for a slot of the full host
  crawlq:robots:{origin}     string msgpack robots.txt verdict, with a TTL
  crawlq:worker:{id}         string heartbeat (msgpack), with a TTL
  crawlq:reconcile:lock      string the reconciler's lock
  crawlq:events:{batch}      pubsub channel: "complete" when the batch completes
  crawlq:wake:{queue}        pubsub channel: new jobs were enqueued (wakes idle workers)
  crawlq:gate:{worker}       pubsub channel: a host this worker waits for released a slot (message: host)
  crawlq:gate:cooldown       pubsub channel: a host went into cooldown after a 429/503 (message: host)
  crawlq:control             pubsub channel: a batch was paused, resumed or cancelled (message: batch), or the
                                   run-time host rules changed (message: "host-rules")
  crawlq:hostrules           hash  pattern -> JSON {concurrency, delay_s}: host rules set at run time
"""

from __future__ import annotations

__all__ = [
    "ACTIVE",
    "ARQ_IN_PROGRESS_PREFIX",
    "ARQ_JOB_PREFIX",
    "ARQ_RESULT_PREFIX",
    "ARQ_RETRY_PREFIX",
    "CLAIMED",
    "CONTROL",
    "PAUSED",
    "SCHED",
    "SCHED_TURN",
    "batch_queue",
    "GATE_COOLDOWN",
    "HOST_RULES",
    "BATCHES",
    "RECONCILE_LOCK",
    "STATS_ALL",
    "WORKER_PREFIX",
    "arq_in_progress",
    "arq_job",
    "arq_result",
    "arq_retry",
    "batch_events",
    "batch_found",
    "batch_parents",
    "batch_options",
    "body",
    "enqueue_reply",
    "batch_jobs",
    "batch_meta",
    "batch_results",
    "batch_submitters",
    "gate_wake",
    "host_waiters",
    "host_of_key",
    "HOST_KEYS",
    "batch_urls",
    "host_leases",
    "host_state",
    "robots",
    "robots_lock",
    "wake",
    "worker",
]

PREFIX = "crawlq:"
BATCHES = "crawlq:batches"
ACTIVE = "crawlq:active"
STATS_ALL = "crawlq:stats:all"
RECONCILE_LOCK = "crawlq:reconcile:lock"
WORKER_PREFIX = "crawlq:worker:"
BATCH_PREFIX = "crawlq:b:"  #: every per-batch key starts so (Lua scripts that find a batch's keys take it as ARGV)
ORPHANS_BATCH = "~orphans"  #: the ready queue of arq jobs that belong to no known batch (`lua/rehome.lua`)
SCHED = "crawlq:sched"
SCHED_TURN = "crawlq:sched:turn"
PAUSED = "crawlq:paused"
CLAIMED = "crawlq:claimed"
CONTROL = "crawlq:control"  #: pub/sub channel: a batch was paused, resumed or cancelled; host rules changed
HOST_RULES = "crawlq:hostrules"  #: hash pattern -> JSON: host rules set at run time (crawlq.hostrules)


def batch_meta(batch: str) -> str:
    return f"{BATCH_PREFIX}{batch}:meta"


def batch_urls(batch: str) -> str:
    return f"crawlq:b:{batch}:urls"


def batch_results(batch: str) -> str:
    return f"crawlq:b:{batch}:results"


def batch_jobs(batch: str) -> str:
    return f"crawlq:b:{batch}:jobs"


def batch_submitters(batch: str) -> str:
    return f"crawlq:b:{batch}:submitters"


def batch_queue(batch: str) -> str:
    """The batch's jobs not yet claimed (claim.lua builds the same name from a job id)."""
    return f"crawlq:b:{batch}:queue"


def batch_options(batch: str) -> str:
    return f"crawlq:b:{batch}:options"


def batch_found(batch: str) -> str:
    return f"crawlq:b:{batch}:found"


def batch_parents(batch: str) -> str:
    return f"crawlq:b:{batch}:parents"


def body(sha256: str) -> str:
    return f"crawlq:body:{sha256}"


def enqueue_reply(call: str) -> str:
    """The reply of one enqueue.lua call, named by the call's first job id (a replayed call reads it)."""
    return f"crawlq:enqueued:{call}"


def batch_events(batch: str) -> str:
    return f"crawlq:events:{batch}"


def host_state(host: str) -> str:
    return f"crawlq:host:{host}"


def host_leases(host: str) -> str:
    return f"crawlq:host:{host}:leases"


def host_waiters(host: str) -> str:
    return f"crawlq:host:{host}:waiters"


HOST_KEYS = host_state("*")  #: SCAN pattern of every per-host key (state, leases, waiters)
_HOST_PREFIX = host_state("").encode()
_HOST_SUFFIXES = (
    host_leases("").encode().removeprefix(_HOST_PREFIX),
    host_waiters("").encode().removeprefix(_HOST_PREFIX),
)


def host_of_key(key: bytes) -> tuple[str, bool]:
    """(host, is_state) for a key `HOST_KEYS` matched: the host it belongs to, and whether it is the host's
    state hash (`host_state`) rather than its leases or waiters. A host holds ':' (its port), so the kind is
    told by the known suffixes, not by splitting."""
    for suffix in _HOST_SUFFIXES:
        if key.endswith(suffix):
            return key[len(_HOST_PREFIX) : -len(suffix)].decode(), False
    return key[len(_HOST_PREFIX) :].decode(), True


def gate_wake(worker_id: str) -> str:
    """Pub/sub channel: a host the worker waits for has a free slot again."""
    return f"crawlq:gate:{worker_id}"


GATE_COOLDOWN = "crawlq:gate:cooldown"  #: pub/sub channel: a host went into cooldown


def robots(origin: str) -> str:
    return f"crawlq:robots:{origin}"


def robots_lock(origin: str) -> str:
    return f"crawlq:robots:{origin}:lock"


def wake(queue_name: str) -> str:
    """Pub/sub channel: a submit tells idle workers to poll now."""
    return f"crawlq:wake:{queue_name}"


def worker(worker_id: str) -> str:
    return f"{WORKER_PREFIX}{worker_id}"


# arq's own keys (arq.constants; tests/test_arq_door.py pins them). The Lua scripts get the prefixes as
# arguments (claim.lua: in-progress and retry; enqueue.lua and commit.lua: job).
ARQ_JOB_PREFIX = "arq:job:"  #: string, the job payload (arq's format, `crawlq.arq_door.job_payload`)
ARQ_IN_PROGRESS_PREFIX = "arq:in-progress:"  #: string, a running job's lease (`lease_s`)
ARQ_RESULT_PREFIX = "arq:result:"  #: string, arq's stored result of an ended job
ARQ_RETRY_PREFIX = "arq:retry:"  #: string, how often arq picked the job up


def arq_job(job_id: str) -> str:
    return ARQ_JOB_PREFIX + job_id


def arq_in_progress(job_id: str) -> str:
    return ARQ_IN_PROGRESS_PREFIX + job_id


def arq_result(job_id: str) -> str:
    return ARQ_RESULT_PREFIX + job_id


def arq_retry(job_id: str) -> str:
    return ARQ_RETRY_PREFIX + job_id
