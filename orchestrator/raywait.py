"""``python -m orchestrator.raywait N``: block until N Ray nodes are alive at ``$RAY_ADDRESS``.

The barrier of ``examples/slurm.sbatch`` between starting a Ray cluster across a job's nodes and
launching the sweep on it: the head and the workers come up at their own pace, so a fixed sleep
(as in Ray's own Slurm example) is either too short on a busy cluster or wasted time on an idle one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence


def wait_for_nodes(want: int, timeout: float, poll_s: float = 2.0) -> int:
    """The number of alive nodes once it reaches ``want``; TimeoutError with the count after ``timeout``."""
    import ray

    from jobs.raysetup import ensure_ray

    deadline = time.monotonic() + timeout
    alive, last = 0, None
    while True:
        try:
            ensure_ray()  # joins RAY_ADDRESS; raises while the head is not up yet
            alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        except Exception as e:  # Ray raises several types while it starts
            last = e
            ray.shutdown()
        if alive >= want:
            return alive
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{alive} of {want} Ray nodes alive at {os.environ.get('RAY_ADDRESS', 'a local Ray')} after "
                f"{timeout:.0f} s (last error: {last}); the job's output shows why a `ray start` failed"
            )
        time.sleep(poll_s)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.raywait", description=__doc__.split("\n")[0])
    ap.add_argument("nodes", type=int, help="nodes that must be alive (head included)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up (default: 300)")
    args = ap.parse_args(argv)
    try:
        n = wait_for_nodes(args.nodes, args.timeout)
    except TimeoutError as e:
        print(f"raywait: error: {e}", file=sys.stderr)
        return 1
    print(f"Ray cluster ready: {n} nodes at {os.environ.get('RAY_ADDRESS', 'a local Ray')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
