"""Wall time of ``vizsweep status SWEEP`` (a fresh process, imports included) on stores of 6 and 1,000
trials written by tests/sweep_store.py (state files only: status reads no MLflow). Last line: JSON.

    python benchmarks/status.py [--trials 6,1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.sweep_store import SWEEP, write_status_store  # noqa: E402


def time_status(store_dir: Path) -> float:
    cmd = [sys.executable, "-m", "orchestrator.cli", "status", SWEEP, "--store", str(store_dir)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ROOT})
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", default="6,1000", help="comma-separated sweep sizes")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size (the best is reported)")
    args = ap.parse_args()
    out = {}
    for n in (int(x) for x in args.trials.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            write_status_store(Path(tmp), n)
            best = min(time_status(Path(tmp)) for _ in range(args.repeat))
        print(f"vizsweep status, {n} trials: {best:.2f} s")
        out[f"status_{n}_s"] = round(best, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
