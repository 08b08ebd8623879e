"""A clean run prints no line from MLflow's or Ray's loggers (each checked in a fresh interpreter,
whose stdout and stderr are captured whole: pytest's own logging setup would hide what a user sees)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# MLflow's format ("2026/11/29 08:50:20 INFO mlflow.store.db.utils: ...") and Ray's C++ one
# ("[2026-11-29 08:50:20,128 I 1906 1906] logging.cc:303: ...", also W/E lines).
LOGGER_LINE = re.compile(r"(INFO|WARNING) mlflow\.|alembic|\[\S+ \S+ [IWE] \d+ \d+\]|logging\.cc")


def _run(code: str, tmp_path: Path, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def test_new_sqlite_store_prints_nothing(tmp_path):
    code = (
        "from orchestrator.tracking import SweepTracker, client\n"
        f"t = SweepTracker('sqlite:///{tmp_path}/store/mlflow.db', 'quick')\n"
        "print('experiment', t.experiment_id, t.client.get_experiment(t.experiment_id).tags)\n"
    )
    out = _run(code, tmp_path, timeout=120)
    assert (tmp_path / "store" / "mlflow.db").exists()  # the store was created in this run
    assert [line for line in out.splitlines() if LOGGER_LINE.search(line)] == [], out
    assert out.splitlines() == ["experiment 1 {'mlflow.experimentKind': 'custom_model_development'}"], out


@pytest.mark.slow  # starts a Ray cluster (about 15 s)
def test_ensure_ray_prints_nothing(tmp_path):
    code = (
        "import ray\n"
        "from jobs.raysetup import ensure_ray\n"
        "ensure_ray(num_cpus=1)\n"  # a new local cluster even when another one runs on this machine
        "print('sum', ray.get(ray.remote(lambda: 1 + 1).remote()))\n"
        "ray.shutdown()\n"
    )
    out = _run(code, tmp_path, timeout=240)
    assert out.splitlines() == ["sum 2"], out
