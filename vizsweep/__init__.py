"""vizsweep's Python API: launch sweeps, list them, read their results, load their models.

The public facade over ``orchestrator`` / ``jobs`` / ``shared`` (only this package is documented
as API). Importing it is cheap: Ray, MLflow, torch and pandas load inside the calls that need them.

A store is the ``store`` argument, else ``$VIZSWEEP_STORE``, else ``./vizsweep-store``, as for the CLI.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["launch", "load_model", "results", "status"]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from orchestrator.cli import package_version

        return package_version()
    raise AttributeError(f"module 'vizsweep' has no attribute {name!r}; the API is {', '.join(__all__)}")


def launch(spec: Any, *, max_concurrent: int | None = None, quiet: bool = False) -> Any:
    """Run (or finish) a sweep and return its ``SweepResult`` (``.sweep_id``, counts, failures).

    ``spec``: a YAML path or URI, a dict in the YAML's shape, or a loaded ``SweepSpec``. It is
    validated first, against this machine too, so bad input fails before Ray starts.
    """
    from orchestrator.commands import require_file
    from orchestrator.spec import SweepSpec, load_spec, validate_spec
    from orchestrator.sweep import launch as run_sweep

    if isinstance(spec, SweepSpec):
        validate_spec(spec)
    else:
        if isinstance(spec, str | os.PathLike):
            require_file(spec)
        spec = load_spec(spec, check_environment=True)
    return run_sweep(spec, quiet=quiet, max_concurrent=max_concurrent)


def status(store: str | None = None) -> list[dict[str, Any]]:
    """The store's sweeps, newest first: one dict per sweep (``sweep_id``, ``state``, ``trials``, ...)."""
    from orchestrator.commands import list_sweeps, resolve_store

    return list_sweeps(resolve_store(store, "store=")[0])


def results(sweep_id: str, store: str | None = None) -> Any:
    """The sweep's finished trial runs as a ``pandas.DataFrame``, like Tune's ``ResultGrid.get_dataframe()``.

    One row per run and split when the runs carry per-split figures (``{layer}.{split}.{metric}``),
    else one per run; columns: ``run_id``, ``run_name``, ``split``, the params (numbers as
    numbers) and the final metrics. Table 3.1's metrics of a split row are that split's layer means.
    """
    from vizsweep._results import frame

    uri = _tracking_uri(sweep_id, store)
    from orchestrator.tracking import find_child_runs

    return frame(find_child_runs(uri, sweep_id, status="FINISHED"))


def load_model(sweep_id: str, run: str, store: str | None = None) -> tuple[Any, dict[str, Any]]:
    """A trial's attacked model as ``(torch module in eval mode, meta)``; ``run``: run name or run id.

    Follows the run's ``model.json`` artifact to the checkpoint in the store.
    """
    from orchestrator.tracking import find_child_runs, read_json_artifact
    from shared.models.zoo import build_model

    uri = _tracking_uri(sweep_id, store)
    runs = find_child_runs(uri, sweep_id)
    found = [r for r in runs if run in (r.info.run_id, r.info.run_name)]
    if not found:
        names = ", ".join(sorted({r.info.run_name for r in runs})) or "none"
        raise ValueError(f"no run {run!r} in sweep {sweep_id}; its runs: {names} (a run name or run id)")
    chosen = next((r for r in found if r.info.status == "FINISHED"), found[0])
    pointer = read_json_artifact(uri, chosen.info.run_id, "model.json")
    module, meta = build_model(pointer["model"], weights=pointer["model_uri"])
    module.eval()
    return module, {**meta, "run_id": chosen.info.run_id, "run_name": chosen.info.run_name, **pointer}


def _tracking_uri(sweep_id: str, store: str | None) -> str:
    from orchestrator.commands import find_sweep, resolve_store
    from shared import store as st

    sdir = find_sweep(resolve_store(store, "store=")[0], sweep_id)
    state = st.read_json(st.join(sdir, "status.json"))
    if "tracking_uri" not in state:
        raise ValueError(
            f"sweep {sweep_id} has no MLflow runs yet (state: {state.get('state', '?')}); "
            f"wait for its attacks to start (vizsweep status {sweep_id})"
        )
    return state["tracking_uri"]
