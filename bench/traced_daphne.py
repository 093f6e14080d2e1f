"""daphne that answers SIGUSR1 with what its memory holds, for bench/soak.py.

    python bench/traced_daphne.py SNAPSHOT_DIR [daphne's arguments...]

Each SIGUSR1 writes SNAPSHOT_DIR/snap-N.json (N counts from 1): the process's RSS, its
threads, and where its heap's bytes are as their owners count them: SQLite's own
allocations, glibc's bytes in use and free but kept, and the arenas Python's own
allocator maps itself (outside glibc's count) with the bytes of them in use.
With BENCH_TRACEMALLOC=1 tracemalloc runs too and SNAPSHOT_DIR/snap-N.pickle is its
snapshot. A full garbage collection runs first when tracing or with BENCH_SNAPSHOT_GC=1
(else the accounts are the process's as it runs); with BENCH_SNAPSHOT_GC=garbage the
objects it frees are counted by type first (the JSON's "garbage", the 15 most). SNAPSHOT_DIR/snap-N.done is written
last, once the rest is whole. Tracing costs CPU and memory: read the snapshots'
differences, not a traced process's speed or RSS.
"""

import ctypes
import ctypes.util
import gc
import json
import os
import re
import runpy
import signal
import sys
import tempfile
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


def pymalloc() -> dict:
    """Python's small-object allocator, from ``sys._debugmallocstats`` (it writes to fd 2)."""
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")

    def number(pattern):
        match = re.search(pattern, text, re.MULTILINE)
        return int(match.group(1).replace(",", "")) if match else 0

    return {
        "pymalloc_arenas": number(r"^\d+ arenas \* \d+ bytes/arena\s+=\s+([\d,]+)"),
        "pymalloc_used": number(r"^# bytes in allocated blocks\s+=\s+([\d,]+)"),
        "pymalloc_free": number(r"^# bytes in available blocks\s+=\s+([\d,]+)")
        + number(r"^\d+ unused pools \* \d+ bytes\s+=\s+([\d,]+)"),
    }


def accounts(sqlite, libc) -> dict:
    """Bytes, each as its owner counts them; a library not found is left out."""
    found = {"python_blocks": sys.getallocatedblocks()}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:")):
                name, kib = line.split()[:2]
                found[name.rstrip(":").lower()] = int(kib) * 1024
            elif line.startswith("Threads:"):
                found["threads"] = int(line.split()[1])
    found.update(pymalloc())
    found["collections"] = [generation["collections"] for generation in gc.get_stats()]
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
    collect = os.environ.get("BENCH_SNAPSHOT_GC", "1" if tracing else "0")
    collect = "garbage" if collect == "garbage" else collect == "1"
    import sqlite3  # noqa: F401  (loads the library before its symbols are looked up)

    sqlite, libc = _library("sqlite3"), _library("c")
    taken = 0
    if tracing:
        tracemalloc.start(FRAMES)

    def snapshot(_signum, _frame):
        nonlocal taken
        taken += 1
        garbage = {}
        if collect == "garbage":
            # What the cycle collector finds now, by type: kept aside, counted, then let go.
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            for thing in gc.garbage:
                name = type(thing).__qualname__
                garbage[name] = garbage.get(name, 0) + 1
            gc.garbage.clear()
            gc.set_debug(0)
            gc.collect()
        elif collect:
            gc.collect()
        if tracing:
            tracemalloc.take_snapshot().dump(str(folder / f"snap-{taken}.pickle"))
        found = accounts(sqlite, libc)
        if garbage:
            found["garbage"] = dict(sorted(garbage.items(), key=lambda kv: -kv[1])[:15])
        (folder / f"snap-{taken}.json").write_text(json.dumps(found))
        (folder / f"snap-{taken}.done").write_text("")

    signal.signal(signal.SIGUSR1, snapshot)
    sys.argv = ["daphne", *sys.argv[2:]]
    runpy.run_module("daphne", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
