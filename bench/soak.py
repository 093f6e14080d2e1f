"""Soak: does the gateway's memory stay flat under a steady load, and what does a socket cost?

    python bench/soak.py --users 20 --minutes 10            # RSS per minute, turns per minute
    python bench/soak.py --users 20 --minutes 3 --tracemalloc
    python bench/soak.py --idle 1000 --minutes 0 --tracemalloc   # what one idle socket holds

The gateway runs as load.py runs it (daphne, pairing on, the in-process layer, or
REDIS_URL with --redis-url), on a fresh SQLite database, against `manage.py mock_llm`.

Soak: `--users` sockets, each on its own session, send a message, wait for `done`,
and send the next (`--pause` seconds between), each answered in `--chunks` chunks.
Every session's history grows all along, as a person's does; with `--session-turns N`
each user starts a new session after N turns instead (its socket closed, a new one opened). Each minute prints the
server's RSS, the turns of that minute and the growth since the first minute (the
warm-up: first imports, caches, the database's pages). At the end, the growth per
turn after the warm-up.

Idle: after the soak (or alone, --minutes 0), `--idle` more sockets open, each on a
session of its own, and stay open: RSS growth per socket.

--tracemalloc runs the server under bench/traced_daphne.py: snapshots after the
warm-up minute, at the end of the soak, and after the idle sockets opened; the ten
largest differences by line are printed (per turn and per socket). Tracing slows
the server and adds to its RSS: read RSS figures from a run without it.

--accounts runs the server under bench/traced_daphne.py without tracing, and each minute
adds where its heap's growth since minute 1 is, as the libraries count it: SQLite's own
allocations (its page caches), glibc's bytes in use and its bytes free but kept, the
arenas Python's own allocator maps (outside glibc's count) and the bytes of them in use.
RSS that grows while all of these stay flat is not held by any of them. With --collect
the server runs a full garbage collection before each minute's accounts: growth that a
collection takes back was garbage waiting for one, not memory kept.
"""

import argparse
import asyncio
import json
import os
import pickle  # noqa: F401  (tracemalloc snapshots are pickles)
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import PY, REPO, Lab, Process, free_port, load_average, log, raise_fd_limit  # noqa: E402

MiB = 1024 * 1024


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20, help="sockets sending messages (default 20)")
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    parser.add_argument("--chunks", type=int, default=20, help="chunks per answer (default 20)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between a done and the next message")
    parser.add_argument("--session-turns", type=int, default=0,
                        help="after this many turns a user closes its session's socket and opens a new "
                             "session, as people start new chats (default 0: one session each all along)")
    parser.add_argument("--idle", type=int, default=0, help="idle sockets to open at the end (default 0)")
    parser.add_argument("--tracemalloc", action="store_true", help="snapshots and their top-10 differences")
    parser.add_argument("--accounts", action="store_true",
                        help="each minute, the heap's growth by owner (SQLite, glibc, Python), no tracing")
    parser.add_argument("--collect", nargs="?", const="1", choices=("1", "garbage"),
                        help="with --accounts: a full garbage collection in the server before each "
                             "minute's accounts (does the growth wait for one?); --collect garbage "
                             "also prints what it freed, by type, per turn")
    parser.add_argument("--redis-url", default=None, help="run the gateway with REDIS_URL")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    return parser.parse_args(argv)


class Gateway:
    def __init__(self, lab: Lab, args, workdir: Path):
        self.snapshots = workdir / "snapshots"
        env = lab.gateway_env(redis=bool(args.redis_url))
        from servers import manage

        manage(env, "migrate", "--noinput")
        port = free_port()
        daphne = ["-b", "127.0.0.1", "-p", str(port), "construct_site.asgi:application"]
        if args.tracemalloc:  # traced, a connect may take longer than daphne's default 5 s
            daphne[:0] = ["--websocket_connect_timeout", "60"]
        env["BENCH_TRACEMALLOC"] = "1" if args.tracemalloc else "0"
        env["BENCH_SNAPSHOT_GC"] = args.collect or "0"
        command = ([PY, str(REPO / "bench" / "traced_daphne.py"), str(self.snapshots), *daphne]
                   if args.tracemalloc or args.accounts else [PY, "-m", "daphne", *daphne])
        self.proc = Process("gateway", command, env, workdir)
        self.proc.wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
        self.token = lab.pair(env, f"http://127.0.0.1:{port}")
        self.ws = f"ws://127.0.0.1:{port}/ws/chat"
        self.taken = 0

    async def taken_now(self) -> Path:
        """Ask bench/traced_daphne.py for a snapshot; the path of its files without a suffix."""
        self.taken += 1
        done = self.snapshots / f"snap-{self.taken}.done"
        os.kill(self.proc.pid, signal.SIGUSR1)
        while not done.exists():
            await asyncio.sleep(0.2)
        return self.snapshots / f"snap-{self.taken}"

    async def snapshot(self) -> tracemalloc.Snapshot:
        return tracemalloc.Snapshot.load(str((await self.taken_now()).with_suffix(".pickle")))

    async def accounts(self) -> dict:
        return json.loads((await self.taken_now()).with_suffix(".json").read_text())

    async def open(self, session_id: str):
        ws = await connect(f"{self.ws}?session_id={session_id}", max_size=None, open_timeout=60,
                           additional_headers={"Authorization": f"Bearer {self.token}"})
        start = json.loads(await asyncio.wait_for(ws.recv(), 60))
        assert start["type"] == "session_start", start
        return ws


async def user(ws, index: int, args, stop_at: float, turns: list[int], gateway=None):
    n = 0
    try:
        while time.monotonic() < stop_at:
            if args.session_turns and n and n % args.session_turns == 0:
                await ws.close()
                ws = await gateway.open(f"soak-{os.getpid()}-{index}-{n}")
            n += 1
            await ws.send(json.dumps({"type": "message", "client_id": f"c{index}-{n}",
                                      "content": f"message {n} [[chunks={args.chunks}]]"}))
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if frame.get("type") in ("done", "error", "stopped"):
                    break
            if frame["type"] != "done":
                log(f"user {index}: turn ended with {frame}")
            turns[0] += 1
            await asyncio.sleep(args.pause)
    finally:
        await ws.close()


def messages_per_session(turns: int, args) -> float:
    """About how many messages each user's current session holds (two a turn)."""
    per_user = turns / args.users
    return 2 * (per_user % args.session_turns if args.session_turns else per_user)


# --accounts: bench/traced_daphne.py's keys and their columns (growth since minute 1).
ACCOUNT_COLUMNS = {
    "sqlite_used": "SQLite's own",
    "malloc_in_use": "malloc in use",
    "malloc_free": "malloc free, kept",
    "pymalloc_arenas": "Python's arenas",
    "pymalloc_used": "of them in use",
}


def rss_anon(pid) -> int:
    """The anonymous part of RSS (the heap), without the files mapped (libraries, SQLite's)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def top(before, after, label, per, unit):
    stats = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in stats)
    print(f"\n#### tracemalloc, {label}: {total / 1024:+,.0f} KiB traced in all"
          + (f", {total / per:+,.0f} bytes per {unit}" if per else ""))
    print("\n| size diff, KiB | per " + unit + ", bytes | count diff | where |\n| ---: | ---: | ---: | --- |")
    for stat in stats[:10]:
        frame = stat.traceback[0]
        where = f"{os.path.relpath(frame.filename, REPO) if frame.filename.startswith(str(REPO)) else frame.filename}:{frame.lineno}"
        print(f"| {stat.size_diff / 1024:+,.1f} | {stat.size_diff / per if per else 0:+,.0f} "
              f"| {stat.count_diff:+,} | `{where}` |")


async def run(args):
    raise_fd_limit(args.idle + args.users + 200)
    workdir = Path(tempfile.mkdtemp(prefix="construct-soak-"))
    args.server_env = args.server_env
    args.database_url = args.database_url or f"sqlite:///{workdir / 'soak.sqlite3'}"
    lab = Lab(args, workdir)
    lab.start_mock()
    gateway = Gateway(lab, args, workdir)
    print(f"Command: `bench/soak.py {' '.join(sys.argv[1:])}` (started {time.strftime('%H:%M:%S')}, "
          f"load average {load_average()})")
    rss0 = gateway.proc.rss()
    print(f"server RSS at start: {rss0 / MiB:.1f} MiB")
    snaps = {}
    turns_done = 0
    if args.minutes > 0:
        turns = [0]
        sockets = [await gateway.open(f"soak-{os.getpid()}-{i}") for i in range(args.users)]
        start = time.monotonic()
        stop_at = start + args.minutes * 60
        users = [asyncio.create_task(user(ws, i, args, stop_at, turns, gateway)) for i, ws in enumerate(sockets)]
        owners = ACCOUNT_COLUMNS if args.accounts else {}
        print("\n| minute | server RSS, MiB | growth since minute 1, MiB | of it anonymous, MiB "
              + "".join(f"| {title}, MiB " for title in owners.values())
              + "| turns in the minute | messages per session | server CPU per turn, ms "
              "| mock CPU per turn, ms | load average |")
        print("| ---: " * (9 + len(owners)) + "|")
        minute, last_turns, rss1, anon1, turns1, accounts1 = 0, 0, None, 0, 0, {}
        garbage_seen = []  # (turns in the minute, {type: objects the collection freed})
        # CPU per turn each minute: whether a turn costs the server more as histories grow
        # (the mock's beside it: it parses each request, whose history grows too).
        cpu_last, mock_last = gateway.proc.cpu_seconds(), lab.mock.cpu_seconds()
        while time.monotonic() < stop_at - 1:
            await asyncio.sleep(min(60.0, stop_at - time.monotonic()))
            minute += 1
            rss, anon = gateway.proc.rss(), rss_anon(gateway.proc.pid)
            accounts = await gateway.accounts() if args.accounts else {}
            if rss1 is None:
                rss1, anon1, turns1, accounts1 = rss, anon, turns[0], accounts
                if args.tracemalloc:
                    snaps["warm"] = await gateway.snapshot()
            cpu, mock_cpu = gateway.proc.cpu_seconds(), lab.mock.cpu_seconds()
            in_minute = max(turns[0] - last_turns, 1)
            if accounts.get("garbage") and minute > 1:
                garbage_seen.append((in_minute, accounts["garbage"]))
            print(f"| {minute} | {rss / MiB:.1f} | {(rss - rss1) / MiB:+.1f} | {(anon - anon1) / MiB:+.1f} "
                  + "".join(f"| {(accounts.get(key, 0) - accounts1.get(key, 0)) / MiB:+.2f} " for key in owners)
                  + f"| {turns[0] - last_turns} | {messages_per_session(turns[0], args):.0f} "
                  f"| {(cpu - cpu_last) * 1000 / in_minute:.2f} | {(mock_cpu - mock_last) * 1000 / in_minute:.2f} "
                  f"| {load_average()} |", flush=True)
            last_turns, cpu_last, mock_last = turns[0], cpu, mock_cpu
        await asyncio.gather(*users)
        rss_end = gateway.proc.rss()
        turns_done = turns[0] - turns1
        if rss1 is not None and turns_done:
            print(f"\nAfter minute 1: {turns_done} turns, RSS {(rss_end - rss1) / MiB:+.2f} MiB, "
                  f"{(rss_end - rss1) / turns_done:+.0f} bytes per turn")
        if args.accounts and accounts1:
            end = await gateway.accounts()
            print("\nHeap by owner, minute 1 -> end: " + "; ".join(
                f"{title} {accounts1.get(key, 0) / MiB:.2f} -> {end.get(key, 0) / MiB:.2f} MiB"
                for key, title in ACCOUNT_COLUMNS.items())
                + f"; threads {accounts1.get('threads')} -> {end.get('threads')}"
                + f"; collections by generation {accounts1.get('collections')} -> {end.get('collections')}")
        if garbage_seen:
            turns_seen = sum(n for n, _ in garbage_seen)
            totals = {}
            for _n, found in garbage_seen:
                for name, count in found.items():
                    totals[name] = totals.get(name, 0) + count
            print("\nWhat each minute's collection freed, per turn (objects in reference cycles): "
                  + ", ".join(f"{name} {count / turns_seen:.1f}"
                              for name, count in sorted(totals.items(), key=lambda kv: -kv[1])[:12]))
        if args.tracemalloc and "warm" in snaps:
            snaps["end"] = await gateway.snapshot()
            top(snaps["warm"], snaps["end"], "after the warm-up minute to the end of the soak",
                turns_done, "turn")
    if args.idle:
        # Warm-up, as load.py's: the first connects import and cache what every later one uses.
        for i in range(20):
            await (await gateway.open(f"warm-{os.getpid()}-{i}")).close()
        await asyncio.sleep(1)
        if args.tracemalloc:
            before = await gateway.snapshot()
        rss_before = gateway.proc.rss()
        sockets = []
        # Traced, a connect is slow enough to meet daphne's 5 s connect timeout at 100 at a time.
        step = 10 if args.tracemalloc else 100
        for offset in range(0, args.idle, step):
            sockets += await asyncio.gather(*(gateway.open(f"idle-{os.getpid()}-{i}")
                                              for i in range(offset, min(offset + step, args.idle))))
        await asyncio.sleep(2)
        rss_after = gateway.proc.rss()
        print(f"\n{len(sockets)} idle sockets: server RSS {(rss_after - rss_before) / len(sockets) / 1024:.1f} "
              "KiB per socket")
        if args.tracemalloc:
            top(before, await gateway.snapshot(), f"{len(sockets)} idle sockets", len(sockets), "socket")
        await asyncio.gather(*(ws.close() for ws in sockets))
    gateway.proc.stop()
    lab.mock.stop()


def main(argv=None):
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
