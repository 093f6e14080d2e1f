"""daphne with tracemalloc on: SIGUSR1 writes a snapshot, for bench/soak.py.

    python bench/traced_daphne.py SNAPSHOT_DIR [daphne's arguments...]

Each SIGUSR1 runs a full garbage collection, then writes SNAPSHOT_DIR/snap-N.pickle
(N counts from 1) and the file SNAPSHOT_DIR/snap-N.done once it is whole. Tracing
costs CPU and memory: read the snapshots' differences, not this process's speed or RSS.
"""

import gc
import os
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path

FRAMES = int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "12"))


def main():
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    taken = 0
    tracemalloc.start(FRAMES)

    def snapshot(_signum, _frame):
        nonlocal taken
        taken += 1
        gc.collect()
        path = folder / f"snap-{taken}.pickle"
        tracemalloc.take_snapshot().dump(str(path))
        (folder / f"snap-{taken}.done").write_text(str(path))

    signal.signal(signal.SIGUSR1, snapshot)
    sys.argv = ["daphne", *sys.argv[2:]]
    runpy.run_module("daphne", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
