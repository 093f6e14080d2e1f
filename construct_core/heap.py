"""What the process imported stays out of the garbage collector's full walks.

A full collection (Python's oldest generation) walks every object the
collector tracks. A gateway that has served its first turn tracks about
220,000 objects that live as long as the process: modules, classes, Django's
apps and URLs, the SDKs and their models. Each full collection walked them
all, 70 to 140 ms on the event loop's thread, once in every few seconds of
streaming, and every delta in flight waited that long: they were the paced
benchmark's p99 (bench/RESULTS.md). `gc.freeze()` moves what is tracked now
into a generation no collection walks; what the process makes later is
collected as before.

What is imported late is frozen late: the URL conf's views on the first HTTP
request, an SDK on its first call (the OpenAI SDK alone brings 500 modules).
So after start-up, and again whenever a turn ends and modules were imported
since the last time, the process collects once (so no garbage is frozen) and
freezes. Modules stop appearing after the first turns, so this happens a
few times in a process's life; the objects of the sockets open at that moment
are frozen with the rest and never walked again either, a bounded cost.

Only a serving process turns this on (construct_site.serving): a test run
imports modules all the time and keeps its collector as it is.
"""

import gc
import logging
import sys
import time

logger = logging.getLogger(__name__)

_enabled = False
_modules_seen = -1


def freeze_enable() -> int:
    """Freeze what the process holds now, and from now on whenever modules were imported
    since (`freeze_if_imported`). Returns the number of objects frozen in all."""
    global _enabled
    _enabled = True
    return _freeze()


def freeze_if_imported() -> bool:
    """Freeze again if enabled and modules were imported since the last freeze (cheap
    otherwise: one length compared). Returns whether it froze."""
    if not _enabled or len(sys.modules) == _modules_seen:
        return False
    _freeze()
    return True


def freeze_disable() -> None:
    """Stop freezing and give the frozen objects back to the collector (tests)."""
    global _enabled, _modules_seen
    _enabled = False
    _modules_seen = -1
    gc.unfreeze()


def _freeze() -> int:
    global _modules_seen
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    _modules_seen = len(sys.modules)
    count = gc.get_freeze_count()
    logger.debug("%d objects frozen, %d modules, in %.0f ms", count, _modules_seen,
                 (time.perf_counter() - started) * 1000)
    return count
