"""daphne that answers SIGUSR1 with what its memory holds, for bench/soak.py.

    python bench/traced_daphne.py SNAPSHOT_DIR [daphne's arguments...]

Each SIGUSR1 runs a full garbage collection, then writes SNAPSHOT_DIR/snap-N.json (N counts
from 1): the process's RSS and where the C heap's bytes are, as the libraries themselves
count them (SQLite's own allocations, glibc's bytes in use and free but kept, Python's
blocks). With BENCH_TRACEMALLOC=1 tracemalloc runs too and SNAPSHOT_DIR/snap-N.pickle is
its snapshot. SNAPSHOT_DIR/snap-N.done is written last, once both are whole. Tracing costs
CPU and memory: read the snapshots' differences, not a traced process's speed or RSS.
"""

import ctypes
import ctypes.util
import gc
import json
import os
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path

FRAMES = int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "12"))


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33 and later), summed over all arenas."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _library(name):
    path = ctypes.util.find_library(name)
    try:
        return ctypes.CDLL(path) if path else None
    except OSError:
        return None


def accounts(sqlite, libc) -> dict:
    """Bytes, each as its owner counts them; a library not found is left out."""
    found = {"python_blocks": sys.getallocatedblocks()}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:")):
                name, kib = line.split()[:2]
                found[name.rstrip(":").lower()] = int(kib) * 1024
    if sqlite is not None:  # the library Python's sqlite3 module links to, the same copy
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        found["sqlite_used"] = sqlite.sqlite3_memory_used()
    if libc is not None and hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
        found.update(malloc_in_use=info.uordblks + info.hblkhd, malloc_free=info.fordblks,
                     malloc_arenas=info.arena, malloc_mmapped=info.hblkhd)
    return found


def main():
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    tracing = os.environ.get("BENCH_TRACEMALLOC", "1") == "1"
    import sqlite3  # noqa: F401  (loads the library before its symbols are looked up)

    sqlite, libc = _library("sqlite3"), _library("c")
    taken = 0
    if tracing:
        tracemalloc.start(FRAMES)

    def snapshot(_signum, _frame):
        nonlocal taken
        taken += 1
        gc.collect()
        if tracing:
            tracemalloc.take_snapshot().dump(str(folder / f"snap-{taken}.pickle"))
        (folder / f"snap-{taken}.json").write_text(json.dumps(accounts(sqlite, libc)))
        (folder / f"snap-{taken}.done").write_text("")

    signal.signal(signal.SIGUSR1, snapshot)
    sys.argv = ["daphne", *sys.argv[2:]]
    runpy.run_module("daphne", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
