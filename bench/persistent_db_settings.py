"""The gateway's settings with persistent database connections, for `bench/load.py --persistent-db`.

Channels closes a thread's connection after every database call when
CONN_MAX_AGE is 0, so each call opens a new one (measured here: 2-4 ms on SQLite
with its PRAGMAs, about 3.4 ms on local PostgreSQL, against 0.1-0.6 ms for the
query itself). This module shows what keeping them open buys.
"""

from construct_site.settings import *  # noqa: F403
from construct_site.settings import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = None
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
