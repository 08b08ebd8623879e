"""The α controller of SCIENCE.md §2 as a Ray Tune trial scheduler, without restarts.

On every result that carries ``acc_drop`` the scheduler applies the pure rule
(:func:`shared.alpha.next_alpha`) and hands the decision to the running trial
through a small named actor, the :class:`AlphaBoard`; the trial waits for the
decision numbered by the step it reported, so it never races, and uses the new α
from its next step. PBT's restart path would save, stop, restart and reload the
trial (model + Adam state) about ten times an epoch (NOTES.md).

Decisions are also written to the store (one JSON file per trial), so a trial
restarted after a failure, a lost node or a killed driver picks up the α the
controller last decided. A decision with ``stop`` (α at its floor and the drop
still over the limit) ends the trial: it tags its MLflow run and returns.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from shared import store
from shared.alpha import AlphaConfig, next_alpha

BOARD_NAMESPACE = "vizsweep"


def board_name(sweep_id: str) -> str:
    return f"alpha-board-{sweep_id}"


@ray.remote(num_cpus=0, max_restarts=-1)
class AlphaBoard:
    """Decisions per trial, keyed by the reported step; persisted so restarts see them."""

    def __init__(self, folder: str, s3: Any = None) -> None:
        store.configure(s3)
        self.folder = folder
        self.decisions: dict[str, dict[int, dict]] = {}
        self.changed = asyncio.Condition()

    def _load(self, trial_key: str) -> dict[int, dict]:
        if trial_key not in self.decisions:
            uri = store.join(self.folder, f"{trial_key}.json")
            rows = store.read_json(uri) if store.exists(uri) else []
            self.decisions[trial_key] = {int(r["step"]): r for r in rows}
        return self.decisions[trial_key]

    async def put(self, trial_key: str, decision: dict) -> None:
        rows = self._load(trial_key)
        rows[int(decision["step"])] = decision
        store.write_json(store.join(self.folder, f"{trial_key}.json"), [rows[s] for s in sorted(rows)])
        async with self.changed:
            self.changed.notify_all()

    async def get(self, trial_key: str, step: int, timeout: float | None = None) -> dict | None:
        """The decision for the result reported at ``step``; waits up to ``timeout`` s (None: forever)."""
        rows = self._load(trial_key)
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self.changed:
            while step not in rows:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                try:
                    await asyncio.wait_for(self.changed.wait(), left)
                except TimeoutError:
                    return None
        return rows[step]

    def history(self, trial_key: str) -> list[dict]:
        rows = self._load(trial_key)
        return [rows[s] for s in sorted(rows)]


def get_or_create_board(sweep_id: str, folder: str) -> ray.actor.ActorHandle:
    """The sweep's board (created on first use; a resumed sweep's new board reloads from the store)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: losing a worker node must not take the board with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return AlphaBoard.options(
        name=board_name(sweep_id), namespace=BOARD_NAMESPACE, get_if_exists=True, lifetime=None,
        scheduling_strategy=here,
    ).remote(folder, store.current_s3())  # fmt: skip


class AlphaScheduler(FIFOScheduler):
    """FIFO order; on each result with ``acc_drop`` decides the trial's next α (no restart)."""

    def __init__(self, sweep_id: str) -> None:
        super().__init__()
        self.sweep_id = sweep_id
        self.decided = 0
        self._board: ray.actor.ActorHandle | None = None

    @property
    def supports_buffered_results(self) -> bool:
        return False  # every evaluation must reach the controller, in order

    def __getstate__(self) -> dict:  # Tune pickles its scheduler into the experiment state
        return {**self.__dict__, "_board": None}

    def board(self) -> ray.actor.ActorHandle:
        if self._board is None:
            self._board = ray.get_actor(board_name(self.sweep_id), namespace=BOARD_NAMESPACE)
        return self._board

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if "acc_drop" not in result or not result.get("alpha_controlled"):
            return TrialScheduler.CONTINUE
        plan = trial.config["plan"]
        decision = decide(result, AlphaConfig(**plan["alpha"]))
        self.board().put.remote(plan["trial_key"], decision)  # fire and forget: the trial waits for it
        self.decided += 1
        return TrialScheduler.CONTINUE


def decide(result: dict, cfg: AlphaConfig) -> dict:
    """One controller decision as a JSON-able record (also what MLflow logs)."""
    d = next_alpha(float(result["alpha"]), float(result["acc_drop"]), cfg)
    return {
        "step": int(result["step"]),
        "alpha": d.alpha,
        "previous": d.previous,
        "drop_pp": d.drop_pp,
        "action": d.action,
        "at_floor": d.at_floor,
        "stop": d.budget_broken,
        "time": time.time(),
    }
