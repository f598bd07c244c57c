"""Run a module as ``python -m MODULE ARGS`` does, and at exit write this process's own peak RSS to a file.

    python bench/own_peak.py OUT_FILE MODULE [ARGS ...]

Why not ``ru_maxrss`` from ``os.wait4`` on the child: Linux carries the parent's high-water mark into the child.
``exec`` folds the replaced address space's high-water mark into the process's ``signal->maxrss``
(``exec_mmap`` -> ``setmax_mm_hiwater_rss`` in https://github.com/torvalds/linux/blob/master/fs/exec.c), and after
``fork``/``vfork`` that address space is (a copy of) the parent's. So a child's ``ru_maxrss`` is at least the
spawning process's RSS at spawn time; see also https://github.com/golang/go/issues/32054. A bench that has just
PUT 100,000 objects would be reported as the flow's peak.

``VmHWM`` in ``/proc/self/status`` is the high-water mark of this process's own address space only (proc(5):
https://man7.org/linux/man-pages/man5/proc.5.html). It is read by the first ``atexit`` callback registered, which
runs last (https://docs.python.org/3/library/atexit.html): after Prefect's and the clients' exit handlers. Only
the interpreter's own teardown after that (freeing) is not covered. ``OUT_FILE`` gets one line, the kB figure.
A process that ends with ``os._exit`` runs no ``atexit`` callback and writes nothing.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def own_hwm_kb() -> int:
    """``VmHWM`` of this process in kB (proc(5)); 0 if the field is absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    out, module, *args = sys.argv[1:]
    atexit.register(lambda: Path(out).write_text(f"{own_hwm_kb()}\n"))
    # As ``python -m``: the working directory first on sys.path, argv[0] the module's file (runpy sets it).
    sys.path[0] = str(Path.cwd())
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
