"""Resuming a long session: 10,000 messages against 10, on a fresh database; and a session of
10,000 messages with 50 branches (edited questions, each answered) against a linear one.

What a long history could slow down, each timed for a long and a short session:

  history  sessions_app.selectors.history_for_provider, in process: the read of
           the history a turn sends to the model, at the default context window
           (CONSTRUCT_CONTEXT_TOKENS) and at a small one (8,000 tokens). Also for
           a session that just fills the default window, since that, not the
           session's length, is what the read should cost.
  connect  a real socket (daphne in a subprocess): connect to `session_start`.
  turn     the same socket: a message sent to its `done` (the loopback mock LLM
           answers), the whole turn: lock, save, history, model, save. Also
           against the window-sized session: past the window, length is free.

The branched session's figures are given as a ratio to the linear one of the same length:
the history follows the active branch only, and a tree should cost what a line costs.

Prints medians and p95s, and each long figure as a ratio to the short one.

    python bench/resume_history.py                        # fresh SQLite file
    python bench/resume_history.py --database-url postgres://user@host:5432/db
        (a fresh database is created on that server, and dropped after)
"""

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.support.ports import free_port  # noqa: E402 - below the ephemeral range


@contextlib.contextmanager
def fresh_database(base_url: str | None, folder: Path):
    """A DATABASE_URL nobody else uses: a new SQLite file, or a new PostgreSQL database."""
    if not base_url or not base_url.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{folder / 'resume.sqlite3'}"
        return
    import psycopg
    from psycopg import sql

    name = f"construct_bench_{secrets.token_hex(4)}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(base_url)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def exchange_rows(session, first_seq: int, count: int, tag: str = "") -> list:
    """`count` messages from `first_seq`: exchanges of a question, a tool call, its result and an answer."""
    from sessions_app.models import Message

    rows = []
    for seq in range(first_seq, first_seq + count):
        exchange, step = divmod(seq - first_seq, 4)
        if step == 0:
            role, content, data = "user", f"Question {tag}{exchange}: " + "what about this? " * 10, {}
        elif step == 1:
            call = {"id": f"call-{tag}{exchange}", "name": "file_read", "arguments": '{"path": "notes/a.txt"}'}
            role, content, data = "assistant", "", {"tool_calls": [call]}
        elif step == 2:
            role, content, data = ("tool", "file line\n" * 40,
                                   {"tool_call_id": f"call-{tag}{exchange}", "name": "file_read"})
        else:
            role, content, data = "assistant", f"Answer {tag}{exchange}: " + "here is what I found. " * 25, {}
        rows.append(Message(session=session, seq=seq, role=role, content=content, data=data))
    return rows


def chain(rows: list, parent=None) -> list:
    """Insert `rows` as one branch under `parent` (None: from the start); returns them, saved."""
    from sessions_app.models import Message

    depth = parent.depth if parent is not None else 0
    rows = Message.objects.bulk_create(rows, batch_size=1000)  # their ids come back
    for index, row in enumerate(rows):
        row.parent_id = rows[index - 1].pk if index else (parent.pk if parent is not None else None)
        row.depth = depth + index + 1
    Message.objects.bulk_update(rows, ["parent", "depth"], batch_size=500)
    return rows


def seed(session_id: str, count: int, branches: int = 0, per_branch: int = 40) -> None:
    """A session of `count` messages. With `branches`, that many of them are branches of
    `per_branch` messages each (edits of questions spread along the conversation, each
    answered), and the active branch is the original line, of the rest."""
    from sessions_app.models import ChatSession
    from sessions_app.services import default_owner

    # The default owner's: the bench's socket runs with pairing off, as that user.
    session = ChatSession.objects.create(pk=session_id, name=f"{count} messages, {branches} branches",
                                         user=default_owner())
    line_length = count - branches * per_branch
    line = chain(exchange_rows(session, 1, line_length))
    seq = line_length + 1
    for branch in range(branches):
        question = line[(line_length // branches) * branch // 4 * 4]  # a question of the line
        parent = line[line.index(question) - 1] if question.parent_id else None
        chain(exchange_rows(session, seq, per_branch, tag=f"b{branch}-"), parent)
        seq += per_branch
    ChatSession.objects.filter(pk=session_id).update(
        message_count=line_length, active_leaf=line[-1], last_seq=seq - 1)


def window_fill(tokens: int) -> int:
    """How many seeded messages the history budget of `tokens` holds (about)."""
    from sessions_app.selectors import CHARS_PER_TOKEN

    per_exchange = sum(len(text) // CHARS_PER_TOKEN + 4 for text in (
        "Question 0: " + "what about this? " * 10, '{"path": "notes/a.txt"}file_read',
        "file line\n" * 40, "Answer 0: " + "here is what I found. " * 25))
    return tokens // per_exchange * 4


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median_ms": statistics.median(ordered) * 1000,
            "p95_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000}


def time_history(session_id: str, budget: int, repeat: int) -> tuple[dict, int]:
    from django.db import connection

    from sessions_app.selectors import history_for_provider

    samples, sent = [], 0
    for _ in range(repeat + 2):
        connection.close()  # every read pays for its connection, as a turn's thread may
        started = time.perf_counter()
        history, _dropped = history_for_provider(session_id=session_id, token_budget=budget)
        samples.append(time.perf_counter() - started)
        sent = len(history)
    return summary(samples[2:]), sent  # the first two warm the caches


@contextlib.contextmanager
def mock_llm():
    from chat.devserver.mock_llm import bound_port, make_server

    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{bound_port(server)}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def daphne(env: dict):
    port = free_port()
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "construct_site.asgi:application"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError("daphne did not start:\n" + log.read().decode(errors="replace"))
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/ws/chat"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def socket_times(url: str, session_ids: list[str], repeat: int) -> dict[str, tuple[dict, dict]]:
    """Per session: (connect to session_start, message to done). Sessions take turns, sample by sample,
    so none is favoured by warm caches or a quieter moment."""
    from websockets.asyncio.client import connect

    samples = {session_id: ([], []) for session_id in session_ids}
    for _ in range(repeat + 2):
        for session_id in session_ids:
            connects, turns = samples[session_id]
            started = time.perf_counter()
            async with connect(f"{url}?session_id={session_id}", max_size=None) as ws:
                start = json.loads(await ws.recv())
                connects.append(time.perf_counter() - started)
                assert start["type"] == "session_start" and start["resumed"], start
                started = time.perf_counter()
                await ws.send(json.dumps({"type": "message", "content": "one more question"}))
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] in ("done", "error", "stopped"):
                        break
                turns.append(time.perf_counter() - started)
                assert frame["type"] == "done", frame
    return {session_id: (summary(connects[2:]), summary(turns[2:]))
            for session_id, (connects, turns) in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the long session")
    parser.add_argument("--short", type=int, default=10, help="messages in the short session")
    parser.add_argument("--branches", type=int, default=50,
                        help="branches (of 40 messages each) in the branched session of --messages")
    parser.add_argument("--repeat", type=int, default=30, help="timed samples per figure")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="a PostgreSQL server to create a fresh database on (default: a new SQLite file)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder, fresh_database(args.database_url, Path(folder)) as url, \
            mock_llm() as llm_url:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "construct_site.settings", "DATABASE_URL": url,
               "CONSTRUCT_REQUIRE_PAIRING": "false", "CONSTRUCT_PROVIDER": "openai",
               "CONSTRUCT_BASE_URL": llm_url, "CONSTRUCT_API_KEY": "bench-key", "CONSTRUCT_MODEL": "mock-model",
               "CONSTRUCT_MESSAGE_RATE": "off", "CONSTRUCT_SOCKET_RATE": "off",
               "CONSTRUCT_WORKSPACE": str(Path(folder) / "workspace"), "CONSTRUCT_LOG_LEVEL": "WARNING"}
        env.pop("REDIS_URL", None)
        os.environ.update(env)
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connection

        from chat.turns import setup as runtime

        call_command("migrate", verbosity=0)
        default_budget = runtime.history_budget()
        fill = window_fill(default_budget)
        started = time.perf_counter()
        seed("long", args.messages)
        seed("branched", args.messages, branches=args.branches)
        seed("short", args.short)
        seed("window", fill)
        seeded = time.perf_counter() - started
        if connection.vendor == "postgresql":
            # What autovacuum does soon after a bulk load: without statistics the
            # planner sorts the whole session instead of walking the (session, seq) index.
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        print(f"database: {engine}; seeded {args.messages} + {args.messages} ({args.branches} branches)"
              f" + {args.short} + {fill} messages in {seeded:.1f} s")

        rows = []
        small_budget = 8000 - (settings.CONSTRUCT_CONTEXT_TOKENS - default_budget)
        for label, budget in ((f"history_for_provider, {default_budget} tokens", default_budget),
                              ("history_for_provider, 8,000-token window", small_budget)):
            long_t, long_n = time_history("long", budget, args.repeat)
            short_t, short_n = time_history("short", budget, args.repeat)
            rows.append((label, long_t, short_t, f"sent {long_n} vs {short_n} messages"))
        window_t, window_n = time_history("window", default_budget, args.repeat)
        long_t, long_n = time_history("long", default_budget, args.repeat)
        rows.append((f"history_for_provider, long vs a window-sized session ({fill})", long_t, window_t,
                     f"sent {long_n} vs {window_n} messages"))
        branched_t, branched_n = time_history("branched", default_budget, args.repeat)
        long_t, long_n = time_history("long", default_budget, args.repeat)
        rows.append((f"history_for_provider, {args.branches} branches vs linear", branched_t, long_t,
                     f"sent {branched_n} vs {long_n} messages"))

        with daphne(env) as ws_url:
            times = asyncio.run(socket_times(ws_url, ["long", "short", "window", "branched"], args.repeat))
        rows.append(("connect to session_start (daphne)", times["long"][0], times["short"][0], ""))
        rows.append(("message to done (daphne, mock LLM)", times["long"][1], times["short"][1],
                     f"{default_budget}-token window"))
        rows.append((f"message to done, long vs a window-sized session ({fill})", times["long"][1],
                     times["window"][1], "what the window costs"))
        rows.append((f"connect, {args.branches} branches vs linear", times["branched"][0], times["long"][0],
                     "both of 10,000 messages" if args.messages == 10_000 else ""))
        rows.append((f"message to done, {args.branches} branches vs linear", times["branched"][1],
                     times["long"][1], "what a tree costs"))

    print(f"\n{args.messages}-message session against a {args.short}-message one, {args.repeat} samples each\n")
    print(f"{'what':58} {'long median':>12} {'short median':>13} {'ratio':>6} {'long p95':>9}  note")
    for label, long_t, short_t, note in rows:
        ratio = long_t["median_ms"] / short_t["median_ms"]
        print(f"{label:58} {long_t['median_ms']:9.2f} ms {short_t['median_ms']:10.2f} ms {ratio:6.2f}"
              f" {long_t['p95_ms']:6.2f} ms  {note}")


if __name__ == "__main__":
    main()
