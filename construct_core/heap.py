"""What the process imported stays out of the garbage collector's full walks.

A full collection (Python's oldest generation) walks every object the
collector tracks. A gateway that has served its first turn tracks about
220,000 objects that live as long as the process: modules, classes, Django's
apps and URLs, the SDKs and their models. Each full collection walked them
all, 63 to 145 ms on the event loop's thread, once in every few seconds of
streaming, and every delta in flight waited that long: they were the paced
benchmark's p99 (bench/RESULTS.md). `gc.freeze()` moves what is tracked now
into a generation no collection walks; what the process makes later is
collected as before.

What is imported late is frozen late: the URL conf's views on the first HTTP
request, an SDK when its provider is first built (the OpenAI SDK brings some 700 modules).
So after start-up, and again whenever a turn ends and modules were imported
since the last time, the process freezes. At start-up it collects everything
first, so no garbage is frozen; at a turn's end only the two younger
generations (a few ms: a full collection there would be the very pause this
avoids), so what waited in the oldest one for a full collection is frozen with
the rest. Modules stop appearing after the first turns, so this happens a few
times in a process's life; that garbage, and the objects of the sockets open at
that moment, are never walked or freed by the collector again: a bounded cost,
paid a few times.

Full collections are not left to the collector's own count. Python counts
new container objects net of those freed, and at 20,000 a young collection
(below), ten of those before a middle one and ten of those before a full one:
under steady streaming few objects outlive a turn, so a served process went
hours without one. Objects that die after growing old (a closed socket's are
in reference cycles: daphne's protocol, autobahn's, Twisted's) waited for it,
and RSS grew about 4 MiB in 15 minutes with sessions that end
(bench/soak.py --accounts: Python's own bytes in use grew all along, and
stayed flat with a full collection each minute). So a turn's end runs one
when FULL_EVERY seconds have passed since the last (`collect_if_due`): it walks
only what is not frozen, some milliseconds, once a minute at most.

The youngest generation is collected every 20,000 new container objects
instead of every 700: a streamed delta makes a few dozen, so the collector ran
about 18 times a second at 100 paced sessions (2 to 3 % of the loop's time, and
each run promotes the objects of deltas still in flight); now about once in
five seconds, 12 to 15 ms each, for a tenth of the time in all.

Only a serving process turns this on (construct_site.serving): a test run
imports modules all the time and keeps its collector as it is.
"""

import gc
import logging
import sys
import time

logger = logging.getLogger(__name__)

# New container objects between two collections of the youngest generation (Python's default 700).
YOUNG_THRESHOLD = 20_000
# Seconds between two full collections at a turn's end (collect_if_due).
FULL_EVERY = 60.0

_enabled = False
_modules_seen = -1
_thresholds_before: tuple[int, ...] | None = None
_last_full = 0.0  # time.monotonic() of the last full collection run here


def freeze_enable() -> int:
    """Freeze what the process holds now, and from now on whenever modules were imported
    since (`freeze_if_imported`); collect the youngest generation less often
    (YOUNG_THRESHOLD). Returns the number of objects frozen in all."""
    global _enabled, _thresholds_before
    if not _enabled:
        _thresholds_before = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, *_thresholds_before[1:])
    _enabled = True
    return _freeze(gc.collect)


def freeze_if_imported() -> bool:
    """Freeze again if enabled and modules were imported since the last freeze (cheap
    otherwise: one length compared). Returns whether it froze."""
    if not _enabled or len(sys.modules) == _modules_seen:
        return False
    _freeze(lambda: gc.collect(1))
    return True


def collect_if_due(now: float | None = None) -> bool:
    """If enabled and FULL_EVERY seconds have passed since the last full collection run here,
    run one (it walks only what is not frozen). Returns whether it ran."""
    global _last_full
    now = time.monotonic() if now is None else now
    if not _enabled or now - _last_full < FULL_EVERY:
        return False
    started = time.perf_counter()
    freed = gc.collect()
    _last_full = now
    logger.debug("full collection: %d objects freed in %.1f ms", freed,
                 (time.perf_counter() - started) * 1000)
    return True


def freeze_disable() -> None:
    """Stop freezing, give the frozen objects back to the collector and its thresholds
    back to what they were (tests)."""
    global _enabled, _modules_seen, _thresholds_before, _last_full
    _last_full = 0.0
    if _thresholds_before is not None:
        gc.set_threshold(*_thresholds_before)
        _thresholds_before = None
    _enabled = False
    _modules_seen = -1
    gc.unfreeze()


def _freeze(collect) -> int:
    global _modules_seen, _last_full
    started = time.perf_counter()
    collect()
    gc.freeze()
    # A full collection of nothing (all is frozen, so it walks nothing): it resets the
    # collector's count of long-lived objects, which the collection above left at what is
    # now frozen. Kept, that count would hold off the collector's own full collections
    # until a quarter as many objects again had grown old.
    gc.collect()
    _last_full = time.monotonic()
    _modules_seen = len(sys.modules)
    count = gc.get_freeze_count()
    logger.debug("%d objects frozen, %d modules, in %.0f ms", count, _modules_seen,
                 (time.perf_counter() - started) * 1000)
    return count
