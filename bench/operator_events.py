"""Keeping operator events: the CPU of one batch, by how many users its events belong to.

`sessions_app.services.operator_events_record` stores a batch of operator events (the
events task of sessions_app/events.py gathers them) and trims each owner's to the last
OPERATOR_EVENTS_KEPT. A batch of a busy process's events belongs to as many users as
had a turn in it. This times batches of 1, 2, 3, 10 and 100 owners (one event each) on a
table that already holds 100 events of each of 100 users, in process, on a fresh database.

    python bench/operator_events.py                       # fresh SQLite file
    python bench/operator_events.py --database-url postgres://user@host:5432/db
        (a fresh database is created on that server, and dropped after)
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from resume_history import fresh_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    parser.add_argument("--repeat", type=int, default=30, help="batches timed per size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="construct-bench-") as folder, \
            fresh_database(args.database_url, Path(folder)) as url:
        os.environ["DATABASE_URL"] = url
        os.environ.pop("REDIS_URL", None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "construct_site.settings")
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connections

        from sessions_app import services

        call_command("migrate", verbosity=0)
        users = [get_user_model().objects.create_user(f"bench-{i}").pk for i in range(100)]

        def batch(owners):
            return [({"type": "agent_end", "session_id": f"s{u}"}, u, f"s{u}") for u in users[:owners]]

        for _ in range(services.OPERATOR_EVENTS_KEPT + 5):  # every user's events full
            services.operator_events_record(events=batch(100))
        print(f"database: {connections['default'].vendor}; {args.repeat} batches per size; "
              f"{services.OPERATOR_EVENTS_KEPT} events kept per user")
        print("| owners in the batch | CPU per batch, ms | wall per batch, ms |")
        print("| ---: | ---: | ---: |")
        for owners in (1, 2, 3, 10, 100):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.repeat):
                services.operator_events_record(events=batch(owners))
            cpu = (time.process_time() - cpu) / args.repeat * 1000
            wall = (time.perf_counter() - wall) / args.repeat * 1000
            print(f"| {owners} | {cpu:.2f} | {wall:.2f} |")
        connections.close_all()


if __name__ == "__main__":
    main()
