"""Load benchmark: the real gateway against two plain relays, on one machine, over loopback.

Starts the mock LLM (`manage.py mock_llm`), the servers under test and a client,
all on 127.0.0.1. The servers:

  relay    bench/baseline_relay.py: websockets + httpx + json, Python
  node     bench/node_relay/relay.js: ws + the built-in fetch, Node.js (18 or later;
           `npm ci` installs ws from its package-lock.json on first use; without
           node or npm this server is skipped with one line saying why)
  inproc   the gateway as deployed (daphne, pairing on, a paired token), in-process layer
  redis    the same gateway with REDIS_URL set

and the measurements, each run on every selected server:

  burst    K sessions at once, each sending one message answered in N stamped
           deltas ([[chunks=N]] [[stamp]]) as fast as the mock writes them;
           R rounds, the servers' rounds interleaved.
  paced    K sessions, each answered in N deltas D ms apart ([[delay_ms=D]]), the
           messages spread over S ms: a load the machine can carry.
  twoproc  the paced load on two gateway processes sharing Redis and the database: each
           session's message sent on process A, a second socket of it watching on B.
  capacity the paced load at 100, 200, 400, 800, 1,600 sessions (100 deltas 20 ms
           apart, each delta its own write and read): the largest step one
           process serves with p99 added latency <= 50 ms and nothing lost.
           Steps are interleaved across the servers; a server stops at its first
           failed step.
  idle     10,000 idle sockets on a fresh process: server RSS growth / sockets.
  connect  1,000 sockets connecting at once to a fresh process: the time until
           all got `session_start` (the relays greet with one too).
  resume   connect-to-session_start of a session with a long history (gateway only).

How deltas are counted. Every delta the mock writes is "<t:SECONDS> " with the
time of the write. A `chunk` frame may carry several deltas joined (clients
append `content`), so the client counts the stamps in the text that arrives,
not frames; it checks that the text is whole (nothing but complete stamps, and
`done.full_response` equal to what was appended), in order (stamps never go
back; the gateway's per-turn `seq` has no gap) and complete (N stamps, then
`done`). A turn that fails any check counts as losing deltas. The added latency
of a delta is the client's receive time minus its stamp; the first delta's is
the first chunk delay (the server's first chunk against the mock's first write).

Figures per server: deltas/s (first send to last `done`), added latency p50/p99,
first chunk delay p50/max, send-to-first-delta p50/max (includes the turn's set-up),
chunk frames per delta, and server CPU per delta: user+system time of the server
process from /proc/PID/stat (all its threads), read around each round. The mock's
and the client's CPU per delta are printed beside it, to show who was busy. Each
gateway figure is printed beside the two relays' of the same run, as ratios
(gateway / relay), and each phase with the 1-minute load average at its start and end.

The client is one asyncio process with a lean WebSocket protocol (bench/wsclient.py)
that takes each read's arrival time in `data_received` and needs no task per socket.
On two cores, more client processes would only take cycles from the server and the
mock (the server is one process, so one core at most): one client process, its CPU per
delta and its own loop lag (how late a 5 ms timer fires) printed beside every round,
so a round where the client, not the server, was late shows as such. The garbage
collector is off during a round. The client raises its own RLIMIT_NOFILE soft limit,
and the servers inherit the raised limit (they are started after it).

    python bench/load.py --quick                   # every phase, small, a couple of minutes
    python bench/load.py                           # the full run (see bench/RESULTS.md)
    python bench/load.py --phases relay,node,inproc,burst,paced
    python bench/load.py --phases capacity         # capacity steps on all four servers
    python bench/load.py --phases relay,node,twoproc  # two gateway processes, beside the relays
    python bench/load.py --phases inproc,idle,connect --idle 10000
    python bench/load.py --database-url postgres://... --redis-url redis://.../7

--phases takes server names and measurement names. No server named: all four.
No measurement named: burst and paced. `stream` stands for burst,paced.
"""

import argparse
import asyncio
import gc
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from report import RELAYS, TWO_PROCESSES, percentile, raw_figures, report
from servers import Lab, Process, Target, load_average, log, raise_fd_limit, seed_history, stop_all
from wsclient import open_socket

TERMINAL = frozenset(("done", "error", "stopped"))
CONNECT_CONCURRENCY = 100
SERVERS = ("relay", "node", "inproc", "redis")
MEASUREMENTS = ("burst", "paced", "twoproc", "capacity", "idle", "connect", "resume")

# "<t:1796018069.243428> ", and any beginning of one (a delta cut between two frames).
STAMP = re.compile(r"<t:(\d+\.\d+)> ")
# What the mock answers the gateway's title call (a side call after a session's first
# answer, chat/turns/titles.py): a few words, as a model names a chat (--title-reply).
TITLE_REPLY = "Streaming load benchmark chat"
# Whether each message carries a client id, as the chat page's do (--client-ids): the gateway
# then records it (a resend is known) and answers `ack` first; the relays ignore it.
CLIENT_IDS = False
STAMP_PREFIX = re.compile(r"<(?:t(?::[\d.]*(?:>)?)?)?\Z")


# --- One turn, as the client sees it ----------------------------------------------------


class Turn:
    """The frames of one answer: deltas counted by their stamps, checked whole and in order."""

    __slots__ = ("expected", "deltas", "frames", "latencies", "last_stamp", "pending", "parts",
                 "out_of_order", "corrupt", "resets", "seq", "seq_gaps", "outcome", "sent_at",
                 "first_latency", "first_after_send", "finished_at", "_on_finish")

    def __init__(self, expected, on_finish):
        self.expected = expected
        self.deltas = 0
        self.frames = 0
        self.latencies = []
        self.last_stamp = 0.0
        self.pending = ""
        self.parts = []
        self.out_of_order = 0
        self.corrupt = 0
        self.resets = 0
        self.seq = None
        self.seq_gaps = 0
        self.outcome = None
        self.sent_at = None
        self.first_latency = None
        self.first_after_send = None
        self.finished_at = None
        self._on_finish = on_finish

    def on_text(self, text, now):
        frame = json.loads(text)
        kind = frame.get("type")
        seq = frame.get("seq")
        if seq is not None:
            if self.seq is not None and seq != self.seq + 1:
                self.seq_gaps += 1
            self.seq = seq
        if kind == "chunk":
            self.frames += 1
            content = frame.get("content") or ""
            self.parts.append(content)
            text = self.pending + content if self.pending else content
            position = 0
            latencies = self.latencies
            while match := STAMP.match(text, position):
                stamp = float(match.group(1))
                if stamp < self.last_stamp:
                    self.out_of_order += 1
                self.last_stamp = stamp
                latencies.append(now - stamp)
                position = match.end()
            if self.first_latency is None and latencies:
                self.first_latency = latencies[0]
                self.first_after_send = now - self.sent_at if self.sent_at else None
            self.pending = text[position:]
            if self.pending and not STAMP_PREFIX.match(self.pending):
                self.corrupt += 1
                self.pending = ""
        elif kind == "chunk_reset":
            # The reference protocol sends one before `done`; a chunk after it would be a second stream.
            self.resets += 1
        elif kind in TERMINAL:
            if kind == "done":
                full = frame.get("full_response")
                if self.pending or (full is not None and full != "".join(self.parts)):
                    self.corrupt += 1
            elif self.outcome is None:
                log(f"turn failed: {text[:300]}")
            self.finish(kind, now)

    def finish(self, outcome, now=None):
        if self.outcome is None:
            self.outcome = outcome
            self.finished_at = now or time.time()
            self.deltas = len(self.latencies)
            self._on_finish()

    @property
    def whole(self) -> bool:
        """Done, with every delta, nothing else, in order."""
        self.deltas = len(self.latencies)
        return (self.outcome == "done" and self.deltas == self.expected and not self.corrupt
                and not self.out_of_order and not self.seq_gaps)


# --- Rounds -----------------------------------------------------------------------------


@dataclass
class Round:
    kind: str
    sessions: int
    expected_per_turn: int
    turns: list = field(default_factory=list)
    connect_failures: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    mock_cpu: float = 0.0
    client_cpu: float = 0.0
    load_start: float = 0.0
    load_end: float = 0.0
    timed_out: bool = False
    client_lag: list = field(default_factory=list)  # how late the client's loop ran a 5 ms timer, s
    # With a watching process (stream_round's `watcher`): the round as its sockets saw it, and,
    # per delta whole on both sockets of its session, how much later it arrived there, s.
    watched: "Round | None" = None
    cross: list = field(default_factory=list)

    @property
    def expected(self):
        return self.sessions * self.expected_per_turn

    @property
    def deltas(self):
        return sum(len(t.latencies) for t in self.turns)

    @property
    def frames(self):
        return sum(t.frames for t in self.turns)

    @property
    def latencies(self):
        return [v for t in self.turns for v in t.latencies]

    @property
    def first_latencies(self):
        return [t.first_latency for t in self.turns if t.first_latency is not None]

    @property
    def first_after_send(self):
        return [t.first_after_send for t in self.turns if t.first_after_send is not None]

    @property
    def broken_turns(self):
        return self.connect_failures + sum(not t.whole for t in self.turns)

    @property
    def nothing_lost(self):
        return not self.timed_out and self.broken_turns == 0 and self.deltas == self.expected

    @property
    def rate(self):
        return self.deltas / self.seconds if self.seconds else 0.0

    def per_delta_us(self, seconds):
        return seconds / self.deltas * 1e6 if self.deltas else float("nan")

    def problems(self) -> str:
        """What went wrong, in a few words; empty when nothing did."""
        words = []
        if self.connect_failures:
            words.append(f"{self.connect_failures} sockets did not open")
        outcomes = {}
        for turn in self.turns:
            outcomes[turn.outcome] = outcomes.get(turn.outcome, 0) + 1
        for outcome, count in outcomes.items():
            if outcome != "done":
                words.append(f"{count} turns {outcome or 'unfinished'}")
        for name in ("corrupt", "out_of_order", "seq_gaps"):
            total = sum(getattr(t, name) for t in self.turns)
            if total:
                words.append(f"{name.replace('_', ' ')} {total}")
        if self.timed_out:
            words.append("timed out")
        return ", ".join(words)


async def open_many(urls, headers, limit=CONNECT_CONCURRENCY, opened_at=None, aligned=False):
    """Open sockets, `limit` handshakes at a time: (the open ones, how many failed, one error).

    `opened_at`, a list, receives the time.monotonic() of each greeting as it comes.
    `aligned`: the sockets one per url, in their order, None for each that failed.
    `headers`: one dict for all, or a list with one per url (Target.headers_for).
    """
    semaphore = asyncio.Semaphore(limit)
    if isinstance(headers, dict):
        headers = [headers] * len(urls)

    async def one(url, url_headers):
        async with semaphore:
            ws = await open_socket(url, url_headers)
            if opened_at is not None:
                opened_at.append(time.monotonic())
            return ws

    results = await asyncio.gather(*(one(url, h) for url, h in zip(urls, headers)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if aligned:
        sockets = [None if isinstance(r, BaseException) else r for r in results]
    else:
        sockets = [r for r in results if not isinstance(r, BaseException)]
    return sockets, len(errors), (repr(errors[0]) if errors else "")


async def close_all(sockets, wait=5.0):
    for ws in sockets:
        ws.close()
    if sockets:
        await asyncio.wait([ws.closed for ws in sockets], timeout=wait)


async def stream_round(target: Target, prefix, sessions, deltas, mock: Process, delay_ms=0,
                       stagger=0.0, timeout=None, watcher: Target | None = None) -> Round:
    """K sockets connected first, then each sends one message (spread over `stagger` s); until all are done.

    `watcher`: a second gateway process behind the same Redis and database. Each
    session then has a second socket there, joined by the same session id, that
    sends nothing and is counted and checked like the first: `result.watched` is the
    round as those sockets saw it (with that process's CPU), `result.cross` how much
    later each delta reached them.
    """
    sockets, failed, error = await open_many([target.url(prefix, i) for i in range(sessions)],
                                             target.headers_for(sessions), aligned=True)
    if failed:
        log(f"{target.label}: {failed} of {sessions} sockets did not open: {error}")
    result = Round(target.kind, sessions, deltas, connect_failures=failed)
    watching = [None] * sessions
    if watcher is not None:
        watching, failed, error = await open_many([watcher.url(prefix, i) for i in range(sessions)],
                                                  watcher.headers_for(sessions), aligned=True)
        if failed:
            log(f"{watcher.label}: {failed} of {sessions} sockets did not open: {error}")
        result.watched = Round(watcher.kind, sessions, deltas, connect_failures=failed)
        for index, (ws, other) in enumerate(zip(sockets, watching)):
            if ws is None and other is not None:  # nobody sends in this session: nothing to watch
                other.close()
                watching[index] = None
                result.watched.connect_failures += 1
    pace = f" [[delay_ms={delay_ms}]]" if delay_ms else ""
    title = f" [[title_reply={TITLE_REPLY}]]" if TITLE_REPLY else ""
    message = {"type": "message", "content": f"[[chunks={deltas}]] [[stamp]]{pace}{title}"}
    message_text = json.dumps(message)
    round_id = secrets.token_hex(4)
    all_done = asyncio.Event()
    remaining = 0

    def finished():
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            all_done.set()

    def counted(ws, into: Round):
        nonlocal remaining
        turn = Turn(deltas, finished)
        ws.on_text = turn.on_text
        ws.closed.add_done_callback(lambda _future, turn=turn: turn.finish("closed"))
        into.turns.append(turn)
        remaining += 1
        return turn

    # (sender's socket, its turn, the watching socket's turn or None), one per session.
    senders = []
    for ws, other in zip(sockets, watching):
        if ws is not None:
            watched = counted(other, result.watched) if other is not None else None
            senders.append((ws, counted(ws, result), watched))
    opened = [ws for ws in sockets + watching if ws is not None]

    def send(ws, turn, watched, index):
        turn.sent_at = time.time()
        if watched is not None:
            watched.sent_at = turn.sent_at
        ws.send_text(json.dumps({**message, "client_id": f"{round_id}-{index}"}) if CLIENT_IDS
                     else message_text)

    if timeout is None:
        timeout = 30 + stagger + 3 * deltas * delay_ms / 1000
    loop = asyncio.get_running_loop()
    servers = [target.server] + ([watcher.server] if watcher is not None else [])
    # A collection pausing the client would show as the server's latency: none during the round.
    gc.collect()
    gc.disable()
    probe = asyncio.ensure_future(loop_lag(result.client_lag))
    result.load_start = load_average()
    cpu0, mock0, client0 = [s.cpu_seconds() for s in servers], mock.cpu_seconds(), time.process_time()
    try:
        for index, (ws, turn, watched) in enumerate(senders):
            loop.call_later(stagger * index / max(1, len(senders)), send, ws, turn, watched, index)
        if senders:
            try:
                await asyncio.wait_for(all_done.wait(), timeout)
            except TimeoutError:
                result.timed_out = True
        result.server_cpu, *watcher_cpu = [s.cpu_seconds() - c for s, c in zip(servers, cpu0)]
        result.mock_cpu = mock.cpu_seconds() - mock0
        result.client_cpu = time.process_time() - client0
        result.load_end = load_average()
    finally:
        probe.cancel()
        gc.enable()
    for one in (result, result.watched):
        if one is None:
            continue
        sent = [t.sent_at for t in one.turns if t.sent_at]
        ends = [t.finished_at for t in one.turns if t.finished_at]
        if sent and ends:
            one.seconds = max(ends) - min(sent)
    if result.watched is not None:
        watched = result.watched
        watched.server_cpu = watcher_cpu[0]
        # The client and the mock served both processes' sockets: their time is the round's.
        for name in ("mock_cpu", "client_cpu", "load_start", "load_end", "timed_out", "client_lag"):
            setattr(watched, name, getattr(result, name))
        for _ws, turn, other in senders:
            if other is not None and turn.whole and other.whole:
                # latency = arrival - stamp, so their difference is B's arrival - A's, per delta.
                result.cross.extend(b - a for a, b in zip(turn.latencies, other.latencies))
    await close_all(opened)
    return result


async def loop_lag(samples: list, every=0.005):
    """How late the client's own loop wakes up: when this is large, so are the latencies it measures."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        samples.append(loop.time() - due)


def describe(result: Round, label) -> str:
    lat = result.latencies
    text = (f"{label}: {result.deltas}/{result.expected} deltas in {result.frames} frames, "
            f"{result.seconds:.2f} s = {result.rate:.0f}/s, added p50 {percentile(lat, 50) * 1000:.1f} / "
            f"p99 {percentile(lat, 99) * 1000:.1f} ms, first chunk p50 "
            f"{percentile(result.first_latencies, 50) * 1000:.1f} ms, server CPU "
            f"{result.per_delta_us(result.server_cpu):.1f} us/delta, mock {result.mock_cpu:.2f} s, "
            f"client {result.client_cpu:.2f} s (loop lag p99 {percentile(result.client_lag, 99) * 1000:.1f} ms), "
            f"load {result.load_start}->{result.load_end}")
    problems = result.problems()
    return text + (f"; LOST: {problems}" if problems else "")


# --- Idle sockets, a connect burst, a long history --------------------------------------


async def idle_memory(target: Target, count, settle=3.0) -> dict:
    """Server RSS growth per idle socket over `count` sockets opened 100 at a time."""
    warm, _, _ = await open_many([target.url("idle-warm", i) for i in range(20)], target.headers)
    await close_all(warm)
    await asyncio.sleep(settle)
    before = target.server.rss()
    load_start = load_average()
    cpu0, client0 = target.server.cpu_seconds(), time.process_time()
    started = time.monotonic()
    opened_at = []
    sockets, failed, error = await open_many([target.url("idle", i) for i in range(count)], target.headers,
                                             opened_at=opened_at)
    opened = time.monotonic() - started
    cpu, client_cpu = target.server.cpu_seconds() - cpu0, time.process_time() - client0
    await asyncio.sleep(settle)
    after = target.server.rss()
    still_open = sum(not ws.closed.done() for ws in sockets)
    load_end = load_average()
    await close_all(sockets, wait=10)
    if failed:
        log(f"{target.label}: {failed} of {count} idle sockets did not open: {error}")
    return {"sockets": count, "open": still_open, "failed": failed, "open_seconds": round(opened, 2),
            "rss_before": before, "rss_after": after,
            "bytes_per_socket": (after - before) / max(1, len(sockets)),
            "server_cpu": cpu, "client_cpu": client_cpu, **opening_rates(started, opened_at),
            "load_start": load_start, "load_end": load_end}


def opening_rates(started, opened_at) -> dict:
    """Sockets opened per second over the first tenth and the last tenth: a slowdown shows here."""
    tenth = len(opened_at) // 10
    if tenth < 2:
        return {"first_tenth_per_s": None, "last_tenth_per_s": None}
    times = [started] + sorted(opened_at)
    first = tenth / (times[tenth] - times[0])
    last = tenth / (times[-1] - times[-1 - tenth])
    return {"first_tenth_per_s": first, "last_tenth_per_s": last}


async def connect_burst(target: Target, count, timeout=60.0) -> dict:
    """`count` sockets connecting at once: seconds from the start until each got its greeting."""
    warm, _, _ = await open_many([target.url("burst-warm", i) for i in range(20)], target.headers)
    await close_all(warm)
    await asyncio.sleep(1.0)
    load_start = load_average()
    cpu0, client0 = target.server.cpu_seconds(), time.process_time()
    started = time.monotonic()

    async def one(index):
        ws = await open_socket(target.url("burst", index), target.headers, timeout=timeout)
        return time.monotonic() - started, ws

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    cpu, client_cpu = target.server.cpu_seconds() - cpu0, time.process_time() - client0
    load_end = load_average()
    opened = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    await close_all([ws for _, ws in opened], wait=10)
    if errors:
        log(f"{target.label}: {len(errors)} of {count} sockets got no greeting: {errors[0]!r}")
    times = [t for t, _ in opened]
    return {"sockets": count, "greeted": len(opened), "failed": len(errors),
            "all_seconds": max(times) if times and not errors else None,
            "p50": percentile(times, 50), "p99": percentile(times, 99), "max": max(times, default=float("nan")),
            "server_cpu": cpu, "client_cpu": client_cpu, "load_start": load_start, "load_end": load_end}


async def resume_times(url, headers, count) -> list[float]:
    """Seconds from starting the connection to receiving session_start, one socket at a time."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        ws = await open_socket(url, headers)
        times.append(time.perf_counter() - started)
        await close_all([ws])
    return times


# --- Phases -------------------------------------------------------------------------------


def phase_mark(figures, name, start=True):
    mark = figures.setdefault("load", {}).setdefault(name, {})
    mark["start" if start else "end"] = load_average()
    mark["at_start" if start else "at_end"] = time.strftime("%H:%M:%S")


async def run_stream(targets, args, mock, figures):
    """Warm each server up, then the burst rounds and the paced rounds, servers interleaved."""
    for target in targets:
        log(f"{target.label}: warm-up")
        await stream_round(target, "warm", min(10, args.sessions), 20, mock)
    if "burst" in args.measure:
        phase_mark(figures, "burst")
        rounds = {t.kind: [] for t in targets}
        for index in range(args.rounds):
            for target in targets:
                result = await stream_round(target, f"burst{index}", args.sessions, args.chunks, mock)
                log(describe(result, f"{target.label}: burst round {index + 1}"))
                rounds[target.kind].append(result)
        phase_mark(figures, "burst", start=False)
        figures["burst"] = rounds
    if "paced" in args.measure:
        phase_mark(figures, "paced")
        rounds = {t.kind: [] for t in targets}
        for index in range(args.paced_rounds):
            for target in targets:
                result = await paced_round(target, f"paced{index}", args, mock)
                log(describe(result, f"{target.label}: paced round {index + 1}"))
                rounds[target.kind].append(result)
        phase_mark(figures, "paced", start=False)
        figures["paced"] = rounds


def paced_round(target, prefix, args, mock, watcher=None):
    """One round of the paced load (--paced-*) on `target` (and `watcher`'s second sockets)."""
    return stream_round(target, prefix, args.sessions, args.paced_chunks, mock, delay_ms=args.paced_delay_ms,
                        stagger=args.paced_stagger_ms / 1000, watcher=watcher)


async def run_twoproc(lab, relays, args, mock, figures):
    """The paced load on two gateway processes with one Redis and one database: each session's
    message sent on A, a second socket of it on B; the relays' paced rounds interleaved."""
    pair = []
    try:
        for kind in TWO_PROCESSES:
            target = lab.start(kind)
            if target is None:
                return
            pair.append(target)
        sender, watcher = pair
        for target in relays:
            log(f"{target.label}: warm-up")
            await stream_round(target, "twarm", min(10, args.sessions), 20, mock)
        log("two processes: warm-up")
        await stream_round(sender, "twarm", min(10, args.sessions), 20, mock, watcher=watcher)
        phase_mark(figures, "twoproc")
        rounds = {t.kind: [] for t in relays + pair}
        for index in range(args.paced_rounds):
            for target in relays:
                result = await paced_round(target, f"twoproc{index}", args, mock)
                log(describe(result, f"{target.label}: paced round {index + 1} (two processes' phase)"))
                rounds[target.kind].append(result)
            result = await paced_round(sender, f"twoproc{index}", args, mock, watcher=watcher)
            log(describe(result, f"{sender.label}: two processes round {index + 1}"))
            log(describe(result.watched, f"{watcher.label}: two processes round {index + 1}")
                + f"; B after A p50 {percentile(result.cross, 50) * 1000:.1f} / "
                  f"p99 {percentile(result.cross, 99) * 1000:.1f} ms")
            rounds[sender.kind].append(result)
            rounds[watcher.kind].append(result.watched)
        phase_mark(figures, "twoproc", start=False)
        figures["twoproc"] = rounds
    finally:
        for target in pair:
            target.server.stop()


async def run_capacity(targets, args, mock, figures):
    """The paced load, step by step, servers interleaved; a server stops at its first failed step."""
    phase_mark(figures, "capacity")
    steps = {t.kind: [] for t in targets}
    going = list(targets)
    for sessions in args.capacity_steps:
        for target in list(going):
            result = await stream_round(target, f"cap{sessions}", sessions, args.capacity_deltas, mock,
                                        delay_ms=args.capacity_delay_ms,
                                        stagger=args.capacity_stagger_ms / 1000)
            p99 = percentile(result.latencies, 99) * 1000
            passed = result.nothing_lost and p99 <= args.capacity_p99_ms
            log(describe(result, f"{target.label}: capacity {sessions} sessions")
                + ("" if passed else " -> FAILED the step"))
            steps[target.kind].append((sessions, result, passed))
            if not passed:
                going.remove(target)
        if not going:
            break
    phase_mark(figures, "capacity", start=False)
    figures["capacity"] = steps


async def run_fresh(lab, kinds, name, measure, figures):
    """A fresh process of each server for each measurement: what earlier phases left is not its cost."""
    phase_mark(figures, name)
    results = {}
    for kind in kinds:
        target = lab.start(kind)
        if target is None:
            continue
        try:
            results[kind] = await measure(target)
        finally:
            target.server.stop()
        log(f"{target.label}: {name}: {json.dumps(results[kind], default=str)}")
    phase_mark(figures, name, start=False)
    figures[name] = results


async def main(args) -> dict:
    global TITLE_REPLY, CLIENT_IDS
    TITLE_REPLY = args.title_reply
    CLIENT_IDS = args.client_ids
    wanted_fds = max(4096, args.idle + 1024, args.connect + 1024, max(args.capacity_steps, default=0) + 1024)
    fd_limit = raise_fd_limit(wanted_fds)
    if fd_limit < wanted_fds:
        log(f"open files limited to {fd_limit} (hard limit); fewer sockets will open")
    workdir = Path(tempfile.mkdtemp(prefix="construct-bench-"))
    figures: dict = {"config": {
        "command": "bench/load.py " + shlex.join(sys.argv[1:]),
        "servers": args.servers, "measurements": args.measure,
        "sessions": args.sessions, "users": args.users, "chunks": args.chunks, "rounds": args.rounds,
        "paced_chunks": args.paced_chunks, "paced_delay_ms": args.paced_delay_ms,
        "paced_stagger_ms": args.paced_stagger_ms, "paced_rounds": args.paced_rounds,
        "capacity_steps": args.capacity_steps, "capacity_deltas": args.capacity_deltas,
        "title_reply": args.title_reply, "client_ids": args.client_ids,
        "capacity_delay_ms": args.capacity_delay_ms, "capacity_stagger_ms": args.capacity_stagger_ms,
        "capacity_p99_ms": args.capacity_p99_ms,
        "idle_sockets": args.idle, "connect_sockets": args.connect, "history": args.history,
        "cpus": os.cpu_count(), "open_files_limit": fd_limit, "server_env": args.server_env,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }}
    lab = Lab(args, workdir)
    figures["config"]["database"] = lab.database_url.split(":", 1)[0]
    started = time.monotonic()
    try:
        lab.start_mock()
        long_lived = [m for m in ("burst", "paced", "capacity", "resume") if m in args.measure]
        targets = []
        if long_lived or "twoproc" in args.measure:
            # The two processes' measurement starts its own gateways; it compares them with the relays.
            kinds = list(args.servers) if long_lived else [k for k in args.servers if k in RELAYS]
            if "resume" in args.measure and "inproc" not in kinds:
                kinds.append("inproc")
            for kind in kinds:
                target = lab.start(kind)
                if target is not None:
                    targets.append(target)
        streamed = [t for t in targets if t.kind in args.servers]
        if streamed and ("burst" in args.measure or "paced" in args.measure):
            await run_stream(streamed, args, lab.mock, figures)
        if "twoproc" in args.measure:
            await run_twoproc(lab, [t for t in streamed if t.kind in RELAYS], args, lab.mock, figures)
        if streamed and "capacity" in args.measure:
            await run_capacity(streamed, args, lab.mock, figures)
        gateway = next((t for t in targets if t.kind == "inproc"), None)
        if gateway is not None and "resume" in args.measure:
            phase_mark(figures, "resume")
            log(f"resume: seeding {args.history} messages")
            seed_history(lab.gateway_env(redis=False), "bench-history", args.history)
            url = f"{gateway.ws_base}?session_id=bench-history"
            await resume_times(url, gateway.headers, 3)  # warm
            figures["resume_long"] = await resume_times(url, gateway.headers, args.resume_samples)
            figures["resume_empty"] = await resume_times(
                f"{gateway.ws_base}?session_id=bench-empty", gateway.headers, args.resume_samples)
            phase_mark(figures, "resume", start=False)
        for target in targets:
            target.server.stop()

        if "idle" in args.measure:
            await run_fresh(lab, args.servers, "idle", lambda t: idle_memory(t, args.idle), figures)
        if "connect" in args.measure:
            await run_fresh(lab, args.servers, "connect", lambda t: connect_burst(t, args.connect), figures)
    finally:
        stop_all()
        if args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    figures["skipped"] = lab.skipped
    figures["config"]["seconds"] = round(time.monotonic() - started)
    return figures


# --- Command line ------------------------------------------------------------------------


QUICK = {"sessions": 20, "chunks": 400, "rounds": 1, "paced_stagger_ms": 500, "capacity_steps": "20,50",
         "capacity_stagger_ms": 500, "idle": 500, "connect": 200, "history": 1000, "resume_samples": 5}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--quick", action="store_true",
                        help="every selected phase, small: " + ", ".join(f"{k}={v}" for k, v in QUICK.items())
                        + " (options given explicitly win)")
    parser.add_argument("--phases",
                        default="relay,node,inproc,redis,burst,paced,twoproc,capacity,idle,connect,resume",
                        help="servers (relay,node,inproc,redis) and measurements "
                             "(burst,paced,twoproc,capacity,idle,connect,resume; stream = burst,paced)")
    parser.add_argument("--sessions", type=int, default=100,
                        help="concurrent sessions, burst, paced and twoproc (K)")
    parser.add_argument("--chunks", type=int, default=400, help="deltas per answer, burst (N)")
    parser.add_argument("--rounds", type=int, default=3, help="burst rounds per server")
    parser.add_argument("--paced-chunks", type=int, default=100, help="deltas per answer, paced and twoproc")
    parser.add_argument("--paced-delay-ms", type=int, default=20, help="ms between deltas, paced and twoproc")
    parser.add_argument("--paced-stagger-ms", type=int, default=2000,
                        help="the paced messages are sent spread over this long (0: all at once)")
    parser.add_argument("--paced-rounds", type=int, default=1, help="rounds per server, paced and twoproc")
    parser.add_argument("--capacity-steps", default="100,200,400,800,1600", help="sessions per step")
    parser.add_argument("--capacity-deltas", type=int, default=100)
    parser.add_argument("--capacity-delay-ms", type=int, default=20)
    parser.add_argument("--capacity-stagger-ms", type=int, default=2000)
    parser.add_argument("--capacity-p99-ms", type=float, default=50.0, help="a step's added-latency bound")
    parser.add_argument("--idle", type=int, default=10_000, help="idle sockets for the memory figure")
    parser.add_argument("--connect", type=int, default=1000, help="sockets connecting at once")
    parser.add_argument("--history", type=int, default=10_000, help="messages in the resumed session")
    parser.add_argument("--resume-samples", type=int, default=30)
    parser.add_argument("--users", type=int, default=1,
                        help="the sessions of burst, paced, twoproc and capacity belong to this many users "
                             "in turn (1: all one user's, so every turn's agent_start and agent_end go "
                             "to every socket)")
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    parser.add_argument("--redis-url", default=None, help="default: $REDIS_URL or redis://127.0.0.1:6379/0")
    parser.add_argument("--persistent-db", action="store_true",
                        help="run the gateway with bench/persistent_db_settings.py (CONN_MAX_AGE=None)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the gateway (repeatable), for experiments")
    parser.add_argument("--title-reply", default=TITLE_REPLY,
                        help="what the mock answers the gateway's title call, a word per delta at the "
                             "round's pace ('' : answered like the question, 100 deltas of which the "
                             "gateway reads up to 400 characters, as before 2026-12)")
    parser.add_argument("--client-ids", action="store_true",
                        help="each message carries a client id, as the chat page's do (the gateway "
                             "records it and answers `ack` first)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv or sys.argv[1:]) if a.startswith("--")}
        for name, value in QUICK.items():
            if name not in given:
                setattr(args, name, value)
    words = [w.strip() for w in args.phases.split(",") if w.strip()]
    unknown = [w for w in words if w not in SERVERS + MEASUREMENTS + ("stream",)]
    if unknown:
        parser.error(f"unknown phase {', '.join(unknown)}; known: {', '.join(SERVERS + MEASUREMENTS)}, stream")
    args.servers = [s for s in SERVERS if s in words] or list(SERVERS)
    measure = [m for m in MEASUREMENTS if m in words or (m in ("burst", "paced") and "stream" in words)]
    args.measure = measure or ["burst", "paced"]
    args.capacity_steps = [int(s) for s in str(args.capacity_steps).split(",") if s.strip()]
    if args.persistent_db:
        args.server_env.append("DJANGO_SETTINGS_MODULE=bench.persistent_db_settings")
    return args


def run(args) -> dict:
    """asyncio.run(main), with SIGTERM and SIGHUP ending it as Ctrl-C does (servers stopped)."""
    async def guarded():
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, task.cancel)
        return await main(args)

    return asyncio.run(guarded())


if __name__ == "__main__":
    arguments = parse_args()
    try:
        results = run(arguments)
    except (KeyboardInterrupt, asyncio.CancelledError):
        stop_all()
        log("interrupted; every server stopped")
        sys.exit(130)
    print(report(results))
    if arguments.json:
        print(json.dumps(raw_figures(results), indent=2, default=str))
