"""The job queue shared through Redis by several bot instances and GPU workers.

Keys, all under one prefix (`janus` by default):

    job:<id>        hash: the Generate message, its user, limits, the bot instance it belongs to, its state
    q:<user>        list: the user's waiting job ids, oldest first
    ring            sorted set: users with waiting jobs, least recently served first (score: last service)
    waiting         the number of waiting jobs (the queue cap counts it)
    server_waiting  hash: "platform:server" -> its waiting jobs (each server's share of the cap counts them)
    running         hash: user -> jobs handed to workers and not yet ended
    bucket:<key>    hash: a user's token bucket (tokens, at), on Redis's clock
    bans            set: "platform:server:user"
    paused          present while a bot admin has paused the bot: workers start nothing new
    jobs            stream + group "workers": jobs handed to a worker; an entry is acknowledged once its result
                    is stored, and entries a dead worker held are claimed by others after a visibility timeout
    out:<instance>  stream + group "bot": one bot instance's events (started, progress, final)
    queued, cancel  pub/sub channels: a job was queued (idle workers wake up); a running job was cancelled
    result:<id>     a finished job's Done message (PNG bytes and token grids), kept for `result_ttl_s`; with a
                    shared result directory the message is the file <dir>/<id>.json instead
    worker:<name>   hash: a worker's health and counters, expiring unless the worker refreshes it

Every decision that must hold across instances (admission against limits, bans and the cap; the fair pick of
the next job; finishing a job once) is one Lua script, so it is atomic in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, AuthorizationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.config import ConfigError, LimitSettings
from bot.jobqueue import Backend
from bot.jobs import Job, Refused, is_job_id
from bot.ratelimit import queue_full, rate_limited, server_cap, server_full, too_many_waiting
from generator import protocol as wire

log = logging.getLogger(__name__)

WORKERS = "workers"  # the consumer group of the job stream
BOT = "bot"  # the consumer group of each instance's event stream
OUT_MAXLEN = 100_000  # events kept per instance stream while its bot is away (approximate trim)
RETRY_S = 1.0
LOOK_EVERY_S = 5.0  # how often a bot looks at the pool's workers and pause flag
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
REFUSED_LOGIN = (AuthenticationError, AuthorizationError)  # subclasses of ConnectionError: caught first


class RedisLoginRefused(ConfigError):
    """Redis refused the password (or the user); the message is one line for the operator."""

T = TypeVar("T")
Arg = str | int | float  # a script argument

# Where a user who enters the ring goes: after every user served less recently (never: first, by arrival).
_ENQUEUE = """
local function enqueue(p, id, user, msg, instance, count, limit, ttl, server)
  redis.call('HSET', p .. 'job:' .. id, 'msg', msg, 'user', user, 'instance', instance, 'count', count,
             'limit', limit, 'ttl', ttl, 'state', 'waiting', 'server', server)
  redis.call('HINCRBY', p .. 'server_waiting', server, 1)
  redis.call('RPUSH', p .. 'q:' .. user, id)
  if not redis.call('ZSCORE', p .. 'ring', user) then
    local served = redis.call('HGET', p .. 'served', user)
    local score = served and tonumber(served) or (redis.call('INCR', p .. 'arrivals') - 1e15)
    redis.call('ZADD', p .. 'ring', score, user)
  end
  redis.call('INCR', p .. 'waiting')
  redis.call('PUBLISH', p .. 'queued', id)  -- wakes idle workers
end

-- A job leaves the waiting jobs of its server (jobs queued before servers were counted have none).
local function unwait(p, job)
  local server = redis.call('HGET', job, 'server')
  if server and tonumber(redis.call('HINCRBY', p .. 'server_waiting', server, -1)) <= 0 then
    redis.call('HDEL', p .. 'server_waiting', server)
  end
end

-- 1-based place of job `id` in the fair order: depth by depth through the ring.
local function position(p, id, user)
  local depth = redis.call('LPOS', p .. 'q:' .. user, id)
  if not depth then return 0 end
  local ahead, before = depth, true
  for _, other in ipairs(redis.call('ZRANGE', p .. 'ring', 0, -1)) do
    if other == user then
      before = false
    else
      local n = redis.call('LLEN', p .. 'q:' .. other)
      ahead = ahead + math.min(n, depth)
      if before and n > depth then ahead = ahead + 1 end
    end
  end
  return ahead + 1
end
"""

# ARGV: prefix, id, user, msg, instance, count, limit (max running, 0 = none), max_queued (0 = none),
# queue_cap, bucket key, bucket capacity (0 = none), bucket period, ban key, result ttl, server, server cap.
ADMIT = _ENQUEUE + """
local p, id, user = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', p .. 'job:' .. id) == 1 then return {'ok', position(p, id, user)} end
if redis.call('SISMEMBER', p .. 'bans', ARGV[13]) == 1 then return {'banned', 0} end
local queued = redis.call('LLEN', p .. 'q:' .. user)
local max_queued = tonumber(ARGV[8])
if max_queued > 0 and queued >= max_queued then return {'queued', queued} end
local waiting = tonumber(redis.call('GET', p .. 'waiting') or '0')
if waiting >= tonumber(ARGV[9]) then return {'full', waiting} end
local server_waiting = tonumber(redis.call('HGET', p .. 'server_waiting', ARGV[15]) or '0')
if server_waiting >= tonumber(ARGV[16]) then return {'server', server_waiting} end
local capacity, period = tonumber(ARGV[11]), tonumber(ARGV[12])
if capacity > 0 then
  local key = p .. 'bucket:' .. ARGV[10]
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - at) * capacity / period)
  if tokens < 1 - 1e-9 then return {'rate', tostring((1 - tokens) * period / capacity)} end
  redis.call('HSET', key, 'tokens', tostring(tokens - 1), 'at', tostring(now))
  redis.call('EXPIRE', key, math.ceil(period) + 60)
end
enqueue(p, id, user, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[14], ARGV[15])
return {'ok', position(p, id, user)}
"""

# A bot re-sends the jobs its last run left unfinished: keep what Redis has, re-publish a stored result,
# queue the job again (past every limit: it was accepted already) only when Redis has lost it.
# ARGV: prefix, id, user, msg, instance, count, limit, stream length, result ttl, server.
RESUBMIT = _ENQUEUE + """
local p, id = ARGV[1], ARGV[2]
local job = p .. 'job:' .. id
local state = redis.call('HGET', job, 'state')
if state == 'waiting' or state == 'running' then return 'kept' end
if state == 'done' and redis.call('HGET', job, 'stored') == 'file' then
  redis.call('XADD', p .. 'out:' .. ARGV[5], 'MAXLEN', '~', ARGV[8], '*', 'file', id)
  return 'file'
end
if state == 'done' and redis.call('EXISTS', p .. 'result:' .. id) == 1 then
  redis.call('XADD', p .. 'out:' .. ARGV[5], 'MAXLEN', '~', ARGV[8], '*', 'result', id)
  return 'result'
end
if state == 'done' and redis.call('HGET', job, 'final') then
  redis.call('XADD', p .. 'out:' .. ARGV[5], 'MAXLEN', '~', ARGV[8], '*', 'msg', redis.call('HGET', job, 'final'))
  return 'final'
end
redis.call('DEL', job)
enqueue(p, id, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[9], ARGV[10])
return 'queued'
"""

# The fair pick (the order bot/scheduler.py defines): users least recently served first; a user at their running
# limit is passed over; the next fair job waits for room rather than letting smaller ones overtake it. Picked
# jobs go into the job stream and are read by this worker in the same step, so nothing sits unread in the stream.
# ARGV: prefix, consumer, free image slots, idle (1 when the worker runs nothing).
TAKE = _ENQUEUE + """
local p, consumer = ARGV[1], ARGV[2]
if redis.call('EXISTS', p .. 'paused') == 1 then return {} end
local free, idle = tonumber(ARGV[3]), ARGV[4] == '1'
local taken = 0
local progress = true
while progress and free > 0 do
  progress = false
  for _, user in ipairs(redis.call('ZRANGE', p .. 'ring', 0, -1)) do
    local q = p .. 'q:' .. user
    local id = redis.call('LINDEX', q, 0)
    local job = p .. 'job:' .. id
    local count, limit = unpack(redis.call('HMGET', job, 'count', 'limit'))
    count, limit = tonumber(count), tonumber(limit)
    local running = tonumber(redis.call('HGET', p .. 'running', user) or '0')
    if limit == 0 or running < limit then
      if count > free and not (idle and taken == 0) then
        free = 0
        break
      end
      redis.call('LPOP', q)
      redis.call('DECR', p .. 'waiting')
      unwait(p, job)
      redis.call('HINCRBY', p .. 'running', user, 1)
      local seq = redis.call('INCR', p .. 'seq')
      redis.call('HSET', p .. 'served', user, seq)
      if redis.call('LLEN', q) > 0 then
        redis.call('ZADD', p .. 'ring', seq, user)
      else
        redis.call('ZREM', p .. 'ring', user)
      end
      redis.call('HSET', job, 'state', 'running')
      redis.call('XADD', p .. 'jobs', '*', 'job', id)
      free = free - count
      taken = taken + 1
      progress = true
      break  -- the ring changed: start again from its front
    end
  end
end
if taken == 0 then return {} end
local read = redis.call('XREADGROUP', 'GROUP', 'workers', consumer, 'COUNT', taken, 'STREAMS', p .. 'jobs', '>')
local out = {}
for _, entry in ipairs(read[1][2]) do
  local id = entry[2][2]
  local job = redis.call('HMGET', p .. 'job:' .. id, 'msg', 'instance', 'cancel')
  table.insert(out, {entry[1], id, job[1], job[2], job[3] or ''})
end
return out
"""

# A job ended on a worker: store its result, tell its bot, acknowledge the entry; a second finish (a worker
# thought dead that was only slow) only acknowledges. ARGV: prefix, id, entry, final message or '', Done
# message or '', result ttl, stream length, '1' when the Done message was written to the shared directory.
FINISH = """
local p, id, entry = ARGV[1], ARGV[2], ARGV[3]
local job = p .. 'job:' .. id
local state, user, instance, ttl = unpack(redis.call('HMGET', job, 'state', 'user', 'instance', 'ttl'))
redis.call('XACK', p .. 'jobs', 'workers', entry)
redis.call('XDEL', p .. 'jobs', entry)
if state ~= 'running' then return 0 end
ttl = tonumber(ttl or ARGV[6])  -- the bot's [queue] result_ttl_s; the worker's default for older jobs
if ARGV[8] == '1' then
  redis.call('HSET', job, 'stored', 'file')
  redis.call('XADD', p .. 'out:' .. instance, 'MAXLEN', '~', ARGV[7], '*', 'file', id)
elseif ARGV[5] ~= '' then
  redis.call('SET', p .. 'result:' .. id, ARGV[5], 'EX', ttl)
  redis.call('XADD', p .. 'out:' .. instance, 'MAXLEN', '~', ARGV[7], '*', 'result', id)
else
  redis.call('HSET', job, 'final', ARGV[4])
  redis.call('XADD', p .. 'out:' .. instance, 'MAXLEN', '~', ARGV[7], '*', 'msg', ARGV[4])
end
redis.call('HSET', job, 'state', 'done')
redis.call('EXPIRE', job, ttl)
if tonumber(redis.call('HINCRBY', p .. 'running', user, -1)) <= 0 then redis.call('HDEL', p .. 'running', user) end
return 1
"""

# ARGV: prefix, id, Cancelled message, ttl. 'removed' (it was waiting), 'running' (its worker is told), or ''.
CANCEL = _ENQUEUE + """
local p, id = ARGV[1], ARGV[2]
local job = p .. 'job:' .. id
local state, user, instance = unpack(redis.call('HMGET', job, 'state', 'user', 'instance'))
if state == 'waiting' then
  local q = p .. 'q:' .. user
  redis.call('LREM', q, 1, id)
  redis.call('DECR', p .. 'waiting')
  unwait(p, job)
  if redis.call('LLEN', q) == 0 then redis.call('ZREM', p .. 'ring', user) end
  redis.call('HSET', job, 'state', 'done', 'final', ARGV[3])
  redis.call('EXPIRE', job, tonumber(ARGV[4]))
  redis.call('XADD', p .. 'out:' .. instance, 'MAXLEN', '~', ARGV[5], '*', 'msg', ARGV[3])
  return 'removed'
end
if state == 'running' then
  redis.call('HSET', job, 'cancel', '1')
  redis.call('PUBLISH', p .. 'cancel', id)
  return 'running'
end
return ''
"""

# A finished job whose result is gone (its file was deleted): queue it again as it was. ARGV: prefix, id.
REDO = _ENQUEUE + """
local p, id = ARGV[1], ARGV[2]
local job = redis.call('HMGET', p .. 'job:' .. id, 'msg', 'user', 'instance', 'count', 'limit', 'ttl', 'state',
                      'server')
if not job[1] or job[7] ~= 'done' then return 0 end
redis.call('DEL', p .. 'job:' .. id)
enqueue(p, id, job[2], job[1], job[3], job[4], job[5], job[6] or '86400', job[8] or '')
return 1
"""

# Every waiting job id in the fair order of bot/scheduler.py (depth by depth through the ring). ARGV: prefix.
ORDER = """
local p = ARGV[1]
local lists = {}
for _, user in ipairs(redis.call('ZRANGE', p .. 'ring', 0, -1)) do
  table.insert(lists, redis.call('LRANGE', p .. 'q:' .. user, 0, -1))
end
local out, depth, more = {}, 1, true
while more do
  more = false
  for _, ids in ipairs(lists) do
    if ids[depth] then
      table.insert(out, ids[depth])
      more = true
    end
  end
  depth = depth + 1
end
return out
"""


def connect(url: str) -> aioredis.Redis:
    """A client for `url` (redis://host:port/db) that reconnects by itself after Redis restarts."""
    return aioredis.Redis.from_url(url, health_check_interval=10, socket_connect_timeout=5)


async def ensure_group(client: aioredis.Redis, stream: str, group: str) -> None:
    """Create a consumer group (and its stream) unless it exists."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def login_refused(error: Exception) -> RedisLoginRefused:
    return RedisLoginRefused(f"Redis refused this bot's login ({error}); give the password of its requirepass in "
                             f"the URL, as JANUS_BOT_REDIS_URL=redis://:PASSWORD@host:6379/0")


async def check_login(client: aioredis.Redis) -> None:
    """RedisLoginRefused at once if Redis refuses the password; nothing if it answers or cannot be reached yet."""
    try:
        await client.ping()
    except REFUSED_LOGIN as error:
        raise login_refused(error) from None
    except REDIS_DOWN:
        pass


async def retrying(what: str, call: Callable[[], Awaitable[T]], stop: asyncio.Event | None = None) -> T:
    """`call()` again every second while Redis is unreachable (it restarts, the network drops); logged once.

    Once `stop` is set, the error of the last try is raised instead of waiting on (at once if it is set
    during the pause).
    """
    warned = False
    while True:
        try:
            result = await call()
        except REFUSED_LOGIN as error:  # no use retrying a wrong password: the operator must fix it
            raise login_refused(error) from None
        except REDIS_DOWN as error:
            if not warned:
                log.warning("Redis is unreachable while %s (%s); retrying every %gs", what, error, RETRY_S)
                warned = True
            if stop is None:
                await asyncio.sleep(RETRY_S)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_S)
                if stop.is_set():
                    raise
            continue
        if warned:
            log.info("Redis is back; %s", what)
        return result


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class WorkerHealth:
    """One worker as it last reported itself."""

    name: str
    fields: dict[str, str]

    @property
    def age_s(self) -> float:
        """Seconds since the worker last reported."""
        return max(0.0, time.time() - float(self.fields.get("seen_at", 0)))


async def pool_health(client: aioredis.Redis, prefix: str = "janus") -> list[WorkerHealth]:
    """Every worker that reported within its health key's lifetime, by name."""
    found = []
    async for key in client.scan_iter(match=f"{prefix}:worker:*"):
        fields = {_str(k): _str(v) for k, v in (await client.hgetall(key)).items()}
        if fields:
            found.append(WorkerHealth(_str(key).removeprefix(f"{prefix}:worker:"), fields))
    return sorted(found, key=lambda w: w.name)


async def pool_metrics(client: aioredis.Redis, prefix: str = "janus") -> str:
    """The whole pool in Prometheus' text format: queue depth, and each worker's gauges and counters."""
    waiting = int(await client.get(f"{prefix}:waiting") or 0)
    lines = ["# TYPE janus_pool_waiting_jobs gauge", f"janus_pool_waiting_jobs {waiting}"]
    workers = await pool_health(client, prefix)
    lines += ["# TYPE janus_pool_workers gauge", f"janus_pool_workers {len(workers)}"]
    for name in ("slots", "images_in_flight", "jobs_running", "jobs_done", "images_done", "jobs_failed",
                 "jobs_claimed", "seen_age_s"):
        kind = "counter" if name in ("jobs_done", "images_done", "jobs_failed", "jobs_claimed") else "gauge"
        lines.append(f"# TYPE janus_worker_{name} {kind}")
        for worker in workers:
            value = f"{worker.age_s:.1f}" if name == "seen_age_s" else worker.fields.get(name, "0")
            lines.append(f'janus_worker_{name}{{worker="{worker.name}"}} {value}')
    return "\n".join(lines) + "\n"


async def describe_pool(url: str, prefix: str = "janus") -> str:
    """`janus-bot pool`: waiting jobs, then one line per worker."""
    async with opened(url) as client:
        waiting = int(await client.get(f"{prefix}:waiting") or 0)
        workers = await pool_health(client, prefix)
    lines = [f"{waiting} job(s) waiting, {len(workers)} worker(s)"]
    for w in workers:
        f = w.fields
        lines.append(
            f"  {w.name}: {f.get('model', '?')} on {f.get('device', '?')} ({f.get('host', '?')}), "
            f"{f.get('images_in_flight', 0)}/{f.get('slots', 0)} slots busy, {f.get('jobs_running', 0)} running, "
            f"{f.get('jobs_done', 0)} done, {f.get('jobs_failed', 0)} failed, {f.get('jobs_claimed', 0)} claimed; "
            f"seen {w.age_s:.0f}s ago"
        )
    return "\n".join(lines)


class RedisQueue:
    """bot.jobqueue.JobQueue over Redis: this bot instance's side of the queue it shares with others.

    `admit` checks the limits, bans and the cap and queues the job in one atomic step; workers anywhere pick
    jobs fairly across every instance's users. `events()` yields this instance's events only (its stream
    `out:<instance>`), including ones that arrived while it was down, plus Waiting when a job's place changes.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        instance: str = "bot",
        prefix: str = "janus",
        max_batch_images: int = 16,
        result_ttl: float = 86400.0,
        poll_s: float = 0.5,
        result_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.instance = instance
        self.result_dir = result_dir
        self.max_batch_images = max_batch_images
        self.result_ttl = int(result_ttl)
        self.poll_s = poll_s
        self._p = f"{prefix}:"
        self._prefix = prefix
        self._out = f"{prefix}:out:{instance}"
        self._admit = client.register_script(ADMIT)
        self._resubmit = client.register_script(RESUBMIT)
        self._cancel = client.register_script(CANCEL)
        self._order = client.register_script(ORDER)
        self._redo = client.register_script(REDO)
        self._waiting: dict[str, int] = {}  # this instance's jobs not yet started -> last position told
        self._closed = asyncio.Event()
        self._up = False  # Redis answered the last time it was asked
        self._paused = False
        self._workers: list[WorkerHealth] = []
        self._next_look = 0.0  # when to look at the pool's workers and pause flag again

    async def start(self) -> None:
        """Check Redis and create the streams' groups; workers may come and go later."""
        await retrying("starting", self._create_groups)
        await self._look()

    async def _create_groups(self) -> None:
        await ensure_group(self.client, f"{self._p}jobs", WORKERS)
        await ensure_group(self.client, self._out, BOT)

    @property
    def backend(self) -> Backend:
        models = sorted({w.fields.get("model", "?") for w in self._workers})
        devices = sorted({w.fields.get("device", "?") for w in self._workers})
        address = self.client.connection_pool.connection_kwargs
        workers = f"{len(self._workers)} worker{'s' * (len(self._workers) != 1)}"
        where = (f"the Redis pool at {address.get('host', '?')}:{address.get('port', '?')} as instance "
                 f"{self.instance!r} ({workers}), jobs of up to {self.max_batch_images} images")
        return Backend(where, self._up, ", ".join(models) or None, ", ".join(devices) or None, self.max_batch_images)

    @property
    def paused(self) -> bool:
        return self._paused

    async def _look(self) -> None:
        """The pool's workers and pause flag, for the health check and the admins' settings view."""
        self._workers = await pool_health(self.client, self._prefix)
        self._paused = bool(await self.client.exists(f"{self._p}paused"))
        self._up = True

    # -- admission --

    async def admit(self, job: Job, msg: wire.Work, limits: LimitSettings, *, exempt: bool) -> int:
        """Queue `msg` for `job` if the limits, bans and cap allow it, atomically across instances; its position."""
        r = job.requester
        user = r.user_key
        args: list[Arg] = [
            self._p, job.id, user, wire.dumps(msg), self.instance, job.slots,
            0 if exempt else limits.max_running_per_user,
            0 if exempt else limits.max_queued_per_user,
            limits.queue_cap,
            f"{r.platform}:{r.server}:{r.user}",
            0 if exempt else limits.jobs_per_period,
            limits.period_s,
            ban_key(r.platform, r.server, r.user),
            self.result_ttl,
            server_key(r.platform, r.server),
            server_cap(limits),
        ]  # fmt: skip
        try:
            verdict, value = await self._admit(args=args)
        except REDIS_DOWN:
            log.exception("Redis is unreachable; refusing a job")
            self._up = False
            raise Refused("The bot cannot reach its job queue right now; try again in a minute.", 60.0) from None
        verdict = _str(verdict)
        if verdict == "ok":
            self._waiting[job.id] = int(value)
            return int(value)
        if verdict == "banned":
            raise Refused("You are banned from making images here; ask a server admin if this is a mistake.")
        if verdict == "queued":
            raise too_many_waiting(int(value))
        if verdict == "full":
            raise queue_full(int(value))
        if verdict == "server":
            raise server_full(int(value))
        raise rate_limited(limits, float(_str(value)))

    async def resume(self, job: Job, msg: wire.Work, limits: LimitSettings, *, exempt: bool) -> None:
        """Keep a job Redis still has, re-send its stored result, or queue it again past the limits (it was
        accepted before); its place arrives as a Waiting message."""
        limit = 0 if exempt else limits.max_running_per_user
        args: list[Arg] = [self._p, msg.job_id, job.requester.user_key, wire.dumps(msg), self.instance, job.slots,
                           limit, OUT_MAXLEN, self.result_ttl, server_key(job.requester.platform, job.requester.server)]
        outcome = _str(await retrying("re-queueing a job", lambda: self._resubmit(args=args)))
        if outcome in ("kept", "queued"):
            self._waiting.setdefault(msg.job_id, 0)
        log.debug("job %s re-sent to the pool: %s", msg.job_id, outcome)

    async def cancel(self, job_id: str) -> bool:
        """Take a waiting job out of the queue, or tell the worker running it to stop."""
        args: list[Arg] = [self._p, job_id, wire.dumps(wire.JobCancelled(job_id)), self.result_ttl, OUT_MAXLEN]
        return _str(await retrying("cancelling a job", lambda: self._cancel(args=args))) == "removed"

    async def set_ban(self, platform: str, server: str, user: str, banned: bool) -> None:
        """Apply a ban (or lift it) in every instance."""
        key = ban_key(platform, server, user)
        bans = f"{self._p}bans"
        await retrying("saving a ban", lambda: self.client.sadd(bans, key) if banned else self.client.srem(bans, key))

    async def set_paused(self, paused: bool) -> None:
        """Stop every worker from starting jobs (running ones finish), or let them start again."""
        key = f"{self._p}paused"
        await retrying("pausing the pool", lambda: self.client.set(key, "1") if paused else self.client.delete(key))
        self._paused = paused
        if not paused:
            await retrying("waking the workers", lambda: self.client.publish(f"{self._p}queued", ""))

    def positions(self) -> dict[str, int]:
        """This instance's waiting jobs and their positions, as last reported."""
        return {job_id: place for job_id, place in self._waiting.items() if place > 0}

    async def position(self, job_id: str) -> int | None:
        """A waiting job's place in the whole pool's queue (1 is next); None once it has started."""
        order = [_str(j) for j in await self._order(args=[self._p])]
        return order.index(job_id) + 1 if job_id in order else None

    async def metrics(self) -> str:
        """The pool's metrics in Prometheus' text format."""
        return await pool_metrics(self.client, self._prefix)

    # -- events --

    async def close(self, grace: float) -> None:
        """End events() and drop the connections; the jobs go on in the pool, and what this instance is owed
        waits in Redis for its next start."""
        self._closed.set()

    async def events(self) -> AsyncIterator[wire.Message]:
        """This instance's events: first what it was sent and had not acknowledged, then new ones."""
        backlog = True
        next_positions = 0.0
        while not self._closed.is_set():
            try:
                if time.monotonic() >= self._next_look:
                    self._next_look = time.monotonic() + LOOK_EVERY_S
                    await self._look()
                if self._waiting and time.monotonic() >= next_positions:
                    next_positions = time.monotonic() + self.poll_s
                    for moved in await self._positions():
                        yield moved
                read: Any = await self.client.xreadgroup(
                    BOT, "main", {self._out: "0" if backlog else ">"}, count=64,
                    block=None if backlog else int(self.poll_s * 1000),
                )
                self._up = True
            except REDIS_DOWN as error:
                log.warning("Redis is unreachable (%s); reading events again in %gs", error, RETRY_S)
                self._up = False
                await asyncio.sleep(RETRY_S)
                continue
            except ResponseError as error:  # Redis lost the group (restarted without persistence)
                log.warning("reading events failed (%s); creating the stream again", error)
                await retrying("creating the streams", self._create_groups)
                await asyncio.sleep(RETRY_S)
                continue
            entries = read[0][1] if read else []
            if backlog and not entries:
                backlog = False
            for entry_id, fields in entries:
                message = await self._message({_str(k): v for k, v in fields.items()})
                if message is not None:
                    self._waiting.pop(getattr(message, "job_id", ""), None)
                    yield message
                await retrying("acknowledging an event", functools.partial(self.client.xack, self._out, BOT, entry_id))
        await self.client.aclose()

    async def _message(self, fields: dict[str, Any]) -> wire.Message | None:
        try:
            if "result" in fields:
                job_id = _str(fields["result"])
                stored = await retrying("reading a result", lambda: self.client.get(f"{self._p}result:{job_id}"))
                if stored is None:  # away longer than result_ttl_s: the restart re-queued the job (RESUBMIT)
                    log.warning("the result of job %s expired before this bot read it; it is made again", job_id)
                    return None
                return wire.loads(stored)
            if "file" in fields:
                return await self._read_result_file(_str(fields["file"]))
            return wire.loads(fields["msg"])
        except (KeyError, ValueError, TypeError) as error:
            log.warning("ignored an event that could not be read: %s", error)
            return None

    async def _read_result_file(self, job_id: str) -> wire.Message | None:
        if self.result_dir is None:
            log.error("job %s's result is in a shared directory, but [queue] result_dir is not set", job_id)
            return None
        try:
            return wire.loads(await asyncio.to_thread(result_path(self.result_dir, job_id).read_bytes))
        except FileNotFoundError:
            log.warning("the result file of job %s is gone; it is made again", job_id)
            await retrying("re-queueing a job", lambda: self._redo(args=[self._p, job_id]))
            return None

    async def _positions(self) -> list[wire.Waiting]:
        known = set(self._waiting)  # a job admitted while the order is read is missing from it, but not started
        order = [_str(job_id) for job_id in await self._order(args=[self._p])]
        moved = []
        place = {job_id: i for i, job_id in enumerate(order, 1)}
        for job_id, told in list(self._waiting.items()):
            if job_id not in known:
                continue
            now = place.get(job_id)
            if now is None:
                self._waiting[job_id] = 0  # handed to a worker; Started follows
            elif now != told:
                self._waiting[job_id] = now
                moved.append(wire.Waiting(job_id, now))
        return moved


def result_path(directory: Path, job_id: str) -> Path:
    """Where a worker writes a finished job's Done message in the shared result directory.

    Job ids come back from Redis, which anyone with its address may write: one that is not of the form the
    bot makes could name a file elsewhere ("../.."), so it is refused.
    """
    if not is_job_id(job_id):
        raise ValueError(f"{job_id!r} is not a job id")
    return directory / f"{job_id}.json"


def server_key(platform: str, server: str) -> str:
    """How a server is named in the count of waiting jobs per server."""
    return f"{platform}:{server}"


def ban_key(platform: str, server: str, user: str) -> str:
    """How a ban is named in the shared set."""
    return f"{platform}:{server}:{user}"


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[aioredis.Redis]:
    """A client for `url`, closed on the way out."""
    client = connect(url)
    try:
        yield client
    finally:
        await client.aclose()
