"""A rolling restart under load (bench/rolling_restart.py): three processes under
deploy/supervise.py behind a private nginx, PostgreSQL and Redis, 50 sessions streaming paced
answers through nginx; SIGHUP; every turn ends whole and in order, no client sees an error
frame, and every process is replaced."""

import shutil
import sys
from pathlib import Path

import pytest

from tests.support.daphne import fresh_database_url
from tests.support.services import missing, require_postgres, require_redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import rolling_restart  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.slow]


def test_a_rolling_restart_behind_nginx_loses_nothing(tmp_path):
    redis_url = require_redis()
    base_url = require_postgres()
    if not shutil.which("nginx") and not Path(rolling_restart.NGINX).exists():
        missing("nginx is not installed")
    with fresh_database_url(tmp_path, base_url=base_url) as database_url:
        result = rolling_restart.run(database_url, redis_url, sessions=50, chunks=40, delay_ms=100,
                                     log_dir=tmp_path)
    assert result.failures == [], result.failures[:10]
    assert result.replaced, (result.pids_before, result.pids_after)
    assert result.refusals == 0  # no client was shown an error frame
    assert result.close_codes.get("1012", 0) >= 1, result.close_codes
    assert result.reconnects >= 1  # sockets did move
    assert result.turns >= 100  # 50 sessions, at least two turns each
