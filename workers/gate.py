"""The per-host politeness gate: leases counted cluster-wide in Redis (`workers/lua/gate.lua`), kept and
handed out locally while this worker has URLs waiting for the host.

Guarantees: at most `limit` requests in flight per host across the cluster (every lease is a member of the
host's lease set in Redis, with an expiry, so a dead worker's leases lapse), request starts at least
`delay_s` apart per host (a host with a delay takes one lease per start from Redis), and a 429/503 puts the
host in a cooldown that every worker sees (it is published, and checked on every grant).

How a URL gets a slot without asking Redis each time:
- A lease freed on this worker goes at once to the next URL waiting here for the same host (no Redis
  call), for at most `HOLD_S` after Redis granted it; then it goes back, so other workers get their turn.
  A lease that no URL here wants goes back at once when this worker's room is full and URLs of other
  hosts wait for it (kept idle, it would stall them until `HOLD_S` passed).
- A URL that finds no free lease waits on a future. One request per host is coalesced with every other
  host's into one script call by the flusher; a host that is full cluster-wide registers this worker as
  a waiter in Redis and is then silent until a holder's release publishes a wake message (or, if a holder
  died, until its earliest lease expires). Cooldowns and delays wait on a timer. No waiting URL polls.
- A worker holds at most `concurrency` leases (in use, free or asked for), so it never takes slots of a
  host that it has no fetch slot to use.
- Sharing a host between workers: a worker that finds the host full while it holds less than its share
  (the limit divided among the workers holding leases of it, and at least one) tells the holders; each gives
  back one lease and asks again only `SHARE_YIELD_S` later, so the asker gets it. A worker at its share only
  waits, so two workers with a lease each of a limit-2 host keep reusing them instead of handing them back
  and forth through Redis with every request.
Priority between batches: a host's waiters are queued by their batch's priority (first come, first served
within one), hosts with waiters are asked for in the order of their best waiter's priority, and while the
worker's room is full a freed lease goes back (rather than to a local waiter of lower priority) when a URL of
a higher priority waits for another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from crawlq import keys
from crawlq.memory import is_out_of_memory
from crawlq.settings import HostRule, Settings

__all__ = ["HOLD_S", "GateOutcome", "Grant", "HostGate", "host_limits"]

logger = logging.getLogger("crawlq.gate")
DELAY_MARGIN = 0.1  #: next start after a delay: +10 %, so jitter in sending never makes a gap shorter
HOLD_S = 2.0  #: how long a lease granted by Redis may be reused (or kept idle) here before it goes back
RETRY_S = 0.2  #: after a failed gate call, ask again this soon
RECOVERY_RELEASES = 8  #: successes after a cooldown that are reported to Redis one by one
SWEEP_S = 0.5  #: how often waiters past their deadline are let go
STALLED_CACHE_S = 0.01  #: `stalled()` is recomputed at most this often
SHARE_YIELD_S = 0.05  #: a worker told to share a host asks for it again only this long after giving a lease back


class GateOutcome(StrEnum):
    """How the request made under a lease ended; sent to `gate.lua` with the lease's release."""

    OK = "ok"  #: a success: after a cooldown, it eases the host's penalty
    THROTTLE = "throttle"  #: a 429 or 503: starts or extends the host's cooldown
    OTHER = "other"  #: anything else, or a lease given back unused


@dataclass(slots=True, frozen=True)
class Grant:
    lease: str | None  #: None: not granted before the caller's deadline; the host's known wait is `wait_s`
    wait_s: float = 0.0


@dataclass(slots=True)
class _Waiter:
    future: asyncio.Future[Grant]
    deadline: float  #: monotonic; inf: wait as long as it takes
    priority: float = 0.0  #: its batch's priority: waiters of a higher one are served first


def _queue(waiters: deque[_Waiter], waiter: _Waiter) -> None:
    """Add `waiter` behind every waiter of its priority or a higher one (first come, first served within one)."""
    position = len(waiters)
    while position > 0 and waiters[position - 1].priority < waiter.priority:
        position -= 1
    waiters.insert(position, waiter)


@dataclass(slots=True)
class _Host:
    name: str
    limit: int
    delay_ms: int
    waiters: deque[_Waiter] = field(default_factory=deque)
    held: int = 0  #: leases held here: in use, on their way to a waiter, or idle
    idle: list[str] = field(default_factory=list)  #: leases kept unused for the next URL of the host
    contended: bool = False  #: another worker waits for the host: no local reuse until Redis grants again
    asking: int = 0  #: leases asked for in the call under way
    parked: bool = False  #: full cluster-wide: waits for a wake message (or `timer`)
    woken: bool = False  #: a wake message came while a call for this host was under way
    blocked_until: float = 0.0  #: cooldown or delay: ask again at this monotonic time
    wait_s: float = 0.0  #: the last known wait (for a caller whose deadline comes first)
    timer: asyncio.TimerHandle | None = None
    recovering: int = 0  #: after a cooldown, this many successes go to Redis one by one (they ease the penalty)
    live: int = 0  #: waiters whose future is not done (kept by `wait`, `resolve` and `left`)

    def live_waiters(self) -> int:
        """How many URLs wait here (for `stalled()`, `_asks`): a count kept as waiters come and go, not a
        scan of the queue (the claim loop asks after every finished URL, with hundreds of URLs waiting)."""
        return self.live

    def wait(self, waiter: _Waiter) -> None:
        """Queue `waiter` (see `_queue`)."""
        _queue(self.waiters, waiter)
        self.live += 1

    def resolve(self, waiter: _Waiter, grant: Grant) -> None:
        """Give a waiter whose future is not done its grant."""
        waiter.future.set_result(grant)
        self.live -= 1

    def left(self) -> None:
        """A waiter's future was cancelled (its URL's task was)."""
        self.live -= 1

    def has_waiters(self) -> bool:
        """Whether a URL waits here: the first live waiter is at the head once the done ones are dropped
        (cheap: called for every released lease, with up to a worker's backlog in the queue)."""
        while self.waiters and self.waiters[0].future.done():
            self.waiters.popleft()
        return bool(self.waiters)

    def top_priority(self) -> float:
        """The priority of the first live waiter (the queue is in priority order), or -inf if none waits."""
        return self.waiters[0].priority if self.has_waiters() else float("-inf")

    def hand(self, grant: Grant) -> bool:
        """Resolve the first live waiter with `grant`; False if none waits."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.future.done():
                self.resolve(waiter, grant)
                return True
        return False


def _forgettable(state: _Host, now: float) -> bool:
    busy = state.held or state.asking or state.parked or state.recovering or state.has_waiters()
    return not busy and state.blocked_until <= now


def host_limits(
    settings: Settings, host: str, crawl_delay_s: float | None = None, runtime_rules: Sequence[HostRule] = ()
) -> tuple[int, float]:
    """(concurrency, delay_s) for a host: the first matching rule (the run-time rules, then `host_rules`),
    else the defaults, with the delay raised to robots.txt's Crawl-delay (capped)."""
    concurrency, delay = settings.per_host_concurrency, settings.per_host_delay_s
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    for rule in [*runtime_rules, *settings.host_rules]:
        if fnmatch.fnmatch(host, rule.pattern) or fnmatch.fnmatch(bare, rule.pattern):
            concurrency = rule.concurrency or concurrency
            delay = rule.delay_s if rule.delay_s is not None else delay
            break
    if crawl_delay_s:
        delay = max(delay, min(crawl_delay_s, settings.robots_max_crawl_delay_s))
    return concurrency, delay


class HostGate:
    def __init__(self, redis: Redis, settings: Settings, worker_id: str) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.redis = redis
        self.capacity = settings.concurrency  #: leases this worker may hold at once, over all hosts
        self.channel = keys.gate_wake(worker_id)
        self._script = redis.register_script((files("workers") / "lua" / "gate.lua").read_text())
        self._hosts: dict[str, _Host] = {}
        self._hungry: dict[str, None] = {}  #: hosts with waiters that may ask Redis, in arrival order
        self._ranked = False  #: a waiter with a priority other than 0 came: order hosts by priority from now on
        self._urgent = float("-inf")  #: the best priority of a waiter of a hungry host (at least; when ranked)
        self._releases: list[tuple[str, str, GateOutcome, int]] = []
        self._reuse_until: dict[str, float] = {}  #: lease -> monotonic time until which it may be reused here
        self._held = 0  #: leases held or asked for, over all hosts
        self._wake = asyncio.Event()
        self._listening = asyncio.Event()
        self._sequence = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self.calls = 0  #: script calls made (for tests and benchmarks)
        self._out_of_memory = False  #: the last call was refused by a full Redis (logged once per episode)
        self._stalled = 0
        self._stalled_at = 0.0
        self.on_stall: Callable[[], None] | None = None  #: called when a host's waiters become stalled

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="crawlq-gate"),
            asyncio.create_task(self._listen(), name="crawlq-gate-wake"),
            asyncio.create_task(self._sweep(), name="crawlq-gate-sweep"),
        ]

    async def close(self) -> None:
        """Give back every lease held unused, and those already released."""
        self.abandon_waiters()
        for state in self._hosts.values():
            self._give_back_idle(state)
        if self._releases:
            with contextlib.suppress(Exception):  # Redis gone: the leases expire on their own
                await self._flush()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def abandon_waiters(self) -> None:
        """Let every waiting URL go without a lease (the worker drains)."""
        for host in self._hosts.values():
            while host.hand(Grant(None, 0.0)):
                pass

    def known_wait(self, host: str) -> float:
        """Seconds until `host` (in a cooldown or a delay known here) may be asked again; 0 if now."""
        state = self._hosts.get(host)
        return 0.0 if state is None else max(0.0, state.blocked_until - time.monotonic())

    def cooling(self) -> int:
        """Hosts known here to be in a cooldown after a 429/503 (not merely waiting out a delay)."""
        now = time.monotonic()
        return sum(1 for state in list(self._hosts.values()) if state.recovering and state.blocked_until > now)

    def stalled(self) -> int:
        """URLs waiting here that could not use a free fetch slot now: those of hosts in a cooldown, a
        delay or full cluster-wide, and those beyond a host's free leases. Recomputed at most every
        `STALLED_CACHE_S` (the claim loop asks after every finished URL)."""
        now = time.monotonic()
        if now - self._stalled_at < STALLED_CACHE_S:
            return self._stalled
        total = 0
        for state in self._hosts.values():
            waiting = state.live_waiters()
            if waiting:
                blocked = state.parked or state.blocked_until > now
                room = 0 if blocked else max(0, state.limit - state.held + len(state.idle))
                total += max(0, waiting - room)
        self._stalled, self._stalled_at = total, now
        return total

    async def acquire(
        self, host: str, limit: int, delay_s: float, deadline: float | None = None, priority: float = 0.0
    ) -> Grant:
        """A lease for one request to `host`, waiting (without Redis traffic) until one is free; a Grant
        without a lease if `deadline` (monotonic) comes first, or if the host's known wait ends after it.
        Waiters of a higher `priority` (their batch's) get the host's freed leases first."""
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host(host, limit, int(delay_s * 1000))
        state.limit, state.delay_ms = limit, int(delay_s * 1000)
        if state.idle and state.delay_ms:  # kept from a grant without a delay: Redis must time this start
            self._give_back_idle(state)
        if state.idle:
            return Grant(state.idle.pop())
        until = float("inf") if deadline is None else deadline
        now = time.monotonic()
        if state.blocked_until > until:
            return Grant(None, state.blocked_until - now)
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        self._ranked = self._ranked or priority != 0
        state.wait(_Waiter(future, until, priority))
        self._want(state)
        try:
            return await future
        except asyncio.CancelledError:
            if future.cancelled():
                state.left()
            elif future.done() and future.result().lease is not None:
                self.release(host, future.result().lease or "", GateOutcome.OTHER)
            raise

    def release(
        self, host: str, lease: str, outcome: GateOutcome = GateOutcome.OTHER, retry_after_s: float | None = None
    ) -> None:
        """Give a lease back; `outcome` THROTTLE (429/503) starts or extends the host's cooldown. The lease
        goes to a URL waiting here for the host if there is one and it may still be reused."""
        state = self._hosts[host]
        if outcome is GateOutcome.THROTTLE:
            after_s = min(retry_after_s or 0.0, self.settings.retry_after_max_s)
            self._cool(state)
            self._give_back(state, lease, outcome, int(after_s * 1000))
            return
        if state.recovering and outcome is GateOutcome.OK:
            state.recovering -= 1
            self._give_back(state, lease, outcome, 0)
            return
        # held above the limit: the limit was lowered (a run-time host rule), so the lease goes back
        reusable = not (state.recovering or state.contended) and state.delay_ms == 0 and state.held <= state.limit
        outranked = self._ranked and self._held >= self.capacity and self._urgent > state.top_priority()
        if reusable and not outranked and self._reuse_until.get(lease, 0.0) > time.monotonic():
            if state.hand(Grant(lease)):
                return
            if not (self._hungry and self._held >= self.capacity):
                state.idle.append(lease)  # kept for the next URL of the host, until HOLD_S or asked for
                return
            # no URL here wants it, and other hosts' URLs wait for this worker's room: it goes back now
        if state.contended and state.has_waiters():
            # told to share: this lease is for the worker that asked (one lease: if it still has none, it
            # says so again). Asking again in the same call would take it back at once, so this host's URLs
            # here wait a moment (they are not handed back)
            state.contended = False
            self._block(state, SHARE_YIELD_S, parked=False)
        # a success matters to Redis only while the host recovers from a cooldown (reported above: it eases
        # the penalty); otherwise gate.lua need not read the host's penalty for it
        self._give_back(state, lease, GateOutcome.OTHER if outcome is GateOutcome.OK else outcome, 0)

    def _give_back(self, state: _Host, lease: str, outcome: GateOutcome, after_ms: int) -> None:
        """Return a lease to Redis (in the next flush); its room goes to a host whose URLs wait."""
        self._reuse_until.pop(lease, None)
        state.held -= 1
        self._held -= 1
        self._releases.append((state.name, lease, outcome, after_ms))
        self._wake.set()
        if state.has_waiters():
            self._want(state)
        elif self._hungry:
            self._wake.set()

    def _cool(self, state: _Host) -> None:
        """A cooldown started: the next successes go to Redis one by one, so the penalty eases as before."""
        state.recovering = RECOVERY_RELEASES
        self._give_back_idle(state)

    def _give_back_idle(self, state: _Host) -> None:
        while state.idle:
            self._give_back(state, state.idle.pop(), GateOutcome.OTHER, 0)

    def _want(self, state: _Host) -> None:
        """Mark a host whose URLs wait as one to ask Redis for, unless it waits for a wake or a timer."""
        if state.asking or state.parked or state.blocked_until > time.monotonic():
            return
        self._hungry[state.name] = None
        if self._ranked:
            self._urgent = max(self._urgent, state.top_priority())
        self._wake.set()

    def _unblock(self, name: str) -> None:
        state = self._hosts.get(name)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        state.parked = False
        state.blocked_until = 0.0
        if state.has_waiters():
            self._want(state)

    def _block(self, state: _Host, wait_s: float, parked: bool) -> None:
        self._stalled_at = 0.0  # its waiters are stalled now: the claim loop may have room
        if self.on_stall is not None:
            asyncio.get_running_loop().call_soon(self.on_stall)
        state.parked = parked
        state.wait_s = wait_s
        state.blocked_until = 0.0 if parked else time.monotonic() + wait_s
        if state.timer is not None:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(wait_s, self._unblock, state.name)
        limit = time.monotonic() + wait_s
        for waiter in list(state.waiters):  # a caller whose deadline comes first gets the known wait now
            if not waiter.future.done() and waiter.deadline < limit:
                state.resolve(waiter, Grant(None, wait_s))

    async def _listen(self) -> None:
        """Wake messages (a host we wait for freed a slot) and cooldown announcements; reconnects."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel, keys.GATE_COOLDOWN)
                self._listening.set()
                for name in [host.name for host in self._hosts.values() if host.parked]:
                    self._unblock(name)  # a wake may have been missed while not subscribed
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._on_message(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                self._listening.clear()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_message(self, channel: bytes | str, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        channel_name = channel.decode() if isinstance(channel, bytes) else channel
        if channel_name == keys.GATE_COOLDOWN:
            kind, name = "c", text
        else:
            kind, _, name = text.partition(":")
        state = self._hosts.get(name)
        if state is None:
            return
        if kind == "c":
            self._cool(state)
        elif kind == "w":  # another worker waits for this host: share it
            state.contended = True
            self._give_back_idle(state)
        elif state.asking:
            state.woken = True  # the reply of the call under way may still say "full"
        elif state.parked:
            self._unblock(name)

    async def _sweep(self) -> None:
        """Let waiters past their deadline go (the engine hands their URLs back); give back idle leases
        past their reuse time; forget hosts with nothing going on."""
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for name in [name for name, state in self._hosts.items() if _forgettable(state, now)]:
                del self._hosts[name]  # nothing held, asked, waited for or remembered: bounded by live hosts
            for state in self._hosts.values():
                while state.idle and self._reuse_until.get(state.idle[0], 0.0) <= now:
                    self._give_back(state, state.idle.pop(0), GateOutcome.OTHER, 0)
                for waiter in state.waiters:
                    if waiter.deadline <= now and not waiter.future.done():
                        state.resolve(waiter, Grant(None, state.wait_s))

    async def _run(self) -> None:
        with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it may swallow a cancel at close
            async with asyncio.timeout(5.0):
                await self._listening.wait()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let the coroutines woken in this loop iteration queue their requests
            try:
                await self._flush()
                self._out_of_memory = False
            except Exception as exc:  # Redis trouble: ask again shortly
                if not is_out_of_memory(exc):
                    logger.warning("host gate call failed; retrying", exc_info=True)
                elif not self._out_of_memory:  # once per episode, no traceback: the committer names the figures
                    self._out_of_memory = True
                    logger.warning("host gate: Redis is out of memory; leases are asked for again until it has room")
                await asyncio.sleep(RETRY_S)
                self._wake.set()

    def _asks(self) -> list[tuple[_Host, int]]:
        """Hosts to ask leases for now, and how many: bounded by waiters, host limit and this worker's room."""
        asks: list[tuple[_Host, int]] = []
        if self._hungry and self._held >= self.capacity:  # make room: idle leases go back first
            for idle_host in self._hosts.values():
                self._give_back_idle(idle_host)
        for name in self._by_priority():
            room = self.capacity - self._held
            if room <= 0:
                break
            del self._hungry[name]
            state = self._hosts.get(name)
            if state is None:
                continue
            want = min(state.live_waiters(), state.limit - state.held, room)
            if want <= 0 or state.asking or state.parked:
                continue
            state.asking = want
            state.held += want
            self._held += want
            asks.append((state, want))
        if self._ranked:  # what still waits for room
            self._urgent = max(
                (self._hosts[n].top_priority() for n in self._hungry if n in self._hosts), default=float("-inf")
            )
        return asks

    def _by_priority(self) -> list[str]:
        """The hungry hosts, best waiter's priority first (arrival order within one). Until a waiter of a
        priority other than 0 came, simply in arrival order."""
        if not self._ranked:
            return list(self._hungry)
        ranked = {name: self._hosts[name].top_priority() if name in self._hosts else 0.0 for name in self._hungry}
        return sorted(ranked, key=lambda name: -ranked[name])

    async def _flush(self) -> None:
        asks = self._asks()
        releases, self._releases = self._releases, []
        if not asks and not releases:
            return
        hosts: dict[str, int] = {}
        script_keys: list[str] = []

        def index(host: str) -> int:
            if host not in hosts:
                hosts[host] = len(hosts) + 1
                script_keys.extend((keys.host_state(host), keys.host_leases(host), keys.host_waiters(host)))
            return hosts[host]

        lease_ttl_ms = int((self.settings.fetch_timeout_s + 5) * 1000)
        # ARGV 1 is a placeholder (gate.lua reads the server's clock); it keeps the other arguments in place
        args: list[Any] = [0, lease_ttl_ms, int(self.settings.cooldown_base_s * 1000)]
        args += [int(self.settings.cooldown_max_s * 1000), len(releases), len(asks)]
        args += [int(self.settings.retry_after_max_s * 1000), DELAY_MARGIN, self.channel, keys.GATE_COOLDOWN]
        args.append(keys.gate_wake(""))
        for host, lease, outcome, after_ms in releases:
            args += [index(host), lease, outcome.value, after_ms]
        prefixes: list[str] = []
        for state, want in asks:
            prefix = f"{self.worker_id}:{next(self._sequence)}"
            prefixes.append(prefix)
            args += [index(state.name), want, state.limit, state.delay_ms, prefix]
        try:
            self.calls += 1
            reply = await self._script(keys=script_keys, args=args)
        except BaseException:
            self._releases = releases + self._releases
            for state, want in asks:
                self._answer(state, want, [], RETRY_S, False)
            raise
        for position, (state, want) in enumerate(asks):
            granted, wait_ms, full = (int(value) for value in reply[3 * position : 3 * position + 3])
            leases = [f"{prefixes[position]}:{number}" for number in range(1, granted + 1)]
            self._answer(state, want, leases, wait_ms / 1000, bool(full))

    def _answer(self, state: _Host, want: int, leases: list[str], wait_s: float, full: bool) -> None:
        """Hand granted leases to waiters (extras go back), then park or time the host if URLs still wait."""
        state.asking = 0
        woken, state.woken = state.woken, False
        state.held -= want - len(leases)
        self._held -= want - len(leases)
        if leases:
            state.contended = False
        reuse_until = time.monotonic() + HOLD_S
        for lease in leases:
            self._reuse_until[lease] = reuse_until
            if not state.hand(Grant(lease)):
                self._give_back(state, lease, GateOutcome.OTHER, 0)
        if not state.has_waiters():
            return
        if (full and not woken) or wait_s > 0 and not full:
            self._block(state, wait_s, full)
        else:
            self._want(state)
