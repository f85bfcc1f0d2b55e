"""Start trio_chat under tracemalloc; SIGUSR1 writes where its memory went.

    BENCH_TRACEMALLOC_OUT=/tmp/m.txt python tracemalloc_launch.py serve --port 0 ...

The first SIGUSR1 takes the baseline snapshot (write ``baseline`` to the
file); each later one compares a new snapshot with it and writes the
allocation sites that grew, as tab-separated lines ``bytes  blocks  site``
(by file, then by line).  The arguments are trio_chat's command line.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import tracemalloc


def main() -> None:
    out = os.environ["BENCH_TRACEMALLOC_OUT"]
    tracemalloc.start(1)
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    baseline: list[tracemalloc.Snapshot] = []

    def snapshot(_signum: int, _frame: object) -> None:
        snap = tracemalloc.take_snapshot().filter_traces(ignore)
        if not baseline:
            baseline.append(snap)
            text = "baseline\n"
        else:
            lines = []
            for key in ("filename", "lineno"):
                lines.append(f"# by {key}")
                for stat in snap.compare_to(baseline[0], key)[:40]:
                    frame = stat.traceback[0]
                    site = (
                        frame.filename if key == "filename" else f"{frame.filename}:{frame.lineno}"
                    )
                    lines.append(f"{stat.size_diff}\t{stat.count_diff}\t{site}")
            text = "\n".join(lines) + "\n"
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, out)

    signal.signal(signal.SIGUSR1, snapshot)
    sys.argv = ["trio_chat", *sys.argv[1:]]
    runpy.run_module("trio_chat", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
