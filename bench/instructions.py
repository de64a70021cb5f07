"""`make bench`, the noise-free part: machine instructions per in-process P01 decide, for this checkout and for
the pinned copy of the code as it was before the performance work, counted by valgrind's callgrind.

Timings on this shared VM move by up to 2x between hours and by 30 % between two runs a minute apart, so a ratio
of two timings is only as good as the minute it was taken in. An instruction count is the same in any minute
(the same binary, inputs and environment give the same count), so its ratio says what the code changed and
nothing else. It is not a time: a C instruction of durable_rules or pydantic-core does more per cycle than an
instruction of the Python interpreter, so time falls somewhat faster than instructions when Python work goes.

Each version runs `bench/decide.py --loop` twice under callgrind, with 0 and with CALLS decides after the same
start-up and warm-up; the difference over CALLS is one decide's share (start-up, imports and loading the
content cancel out). Both versions run side by side, one per core.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support.paths import PROJECT_ROOT

CALLS = 100


def collected(code: Path, calls: int) -> int:
    """Instructions callgrind collected over one run of bench/decide.py --loop (this checkout's script, `code`'s
    package)."""
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                           str(PROJECT_ROOT / "bench" / "decide.py"), "--loop", str(calls)],
                          cwd=code, env=os.environ | {"PYTHONPATH": str(code), "PYTHONHASHSEED": "0"},
                          capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind gave no count: {done.stderr[-300:]}")
    return int(found.group(1))


def per_decide(code: Path, calls: int = CALLS) -> int:
    return (collected(code, calls) - collected(code, 0)) // calls


def figures(baseline: Path | None) -> dict[str, Any]:
    """Instructions per decide now and, with the pinned copy, today, and their ratio; empty without valgrind."""
    if shutil.which("valgrind") is None:
        print("  (valgrind is not installed: no instruction counts)", flush=True)
        return {}
    codes = [PROJECT_ROOT] + ([baseline] if baseline is not None else [])
    with ThreadPoolExecutor(len(codes)) as pool:
        counts = list(pool.map(per_decide, codes))
    out: dict[str, Any] = {"calls": CALLS, "now": counts[0]}
    if baseline is not None:
        out |= {"today": counts[1], "now_over_today": round(counts[0] / counts[1], 3)}
    return out
