"""The shape ARCHITECTURE.md asks for: one-way layers, no import circles, plugins found by registry."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.attacks import attack_names, families

ROOT = Path(__file__).resolve().parents[1]
CIRCLES = ROOT.parent / "shared" / "tools" / "import_circles.py"


def _sources(*folders: str) -> list[Path]:
    return [p for f in folders for p in (ROOT / f).rglob("*.py")]


@pytest.mark.parametrize("name", attack_names())
def test_no_attack_name_is_a_literal_in_the_orchestrator_or_jobs(name):
    pattern = re.compile(rf"""["']{re.escape(name)}["']""")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in _sources("orchestrator", "jobs")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]  # fmt: skip
    assert not hits, f"attack {name!r} named in {hits}: declare it on its family record instead"


def test_every_attack_belongs_to_one_family():
    owned = [a for fam in families() for a in fam.attacks]
    assert sorted(owned) == attack_names() and len(owned) == len(set(owned))


@pytest.mark.skipif(not CIRCLES.exists(), reason="the handbook's import_circles tool is beside the repo")
def test_no_import_circles_function_local_imports_included():
    out = subprocess.run([sys.executable, str(CIRCLES), "."], cwd=ROOT, capture_output=True, text=True)
    assert "circle:" not in out.stdout, out.stdout


def test_layer_contracts_hold():
    """import-linter: orchestrator > jobs > shared; Ray Tune and MLflow only under orchestrator."""
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in out.stdout, out.stdout[-2000:]


def test_a_field_added_to_one_family_changes_no_key_of_another(monkeypatch):
    """Content keys per family (issue 9): a trial's key covers its family, its config and the loop."""
    from pydantic import Field, create_model

    from jobs.runners import TrialJob, runner_for
    from shared.attacks import family_of

    def key(entry: dict) -> str:
        fam = family_of(entry["name"])
        e = fam.config.model_validate(entry)
        job = TrialJob(attack=e.name, config=fam.job_config(e), dataset="/d", model="vgg_mini", weights="/w.pt",
                       variant_key="v", layers=fam.scopes(e, ("conv4",))[0], units="all", seed=0,
                       train_split="train", val_split="val", training={"lr": 1e-4}, alpha={}, evaluation={})  # fmt: skip
        return runner_for(e.name).attack_key(job, "dataset-id")

    thesis, heo = {"name": "push-down"}, {"name": "fool-topk", "lambda": 1.0}
    before = key(thesis), key(heo)
    saliency = family_of("fool-topk")
    grown = create_model("Grown", __base__=saliency.config, new_setting=(int, Field(3)))
    monkeypatch.setattr(saliency, "config", grown)
    assert key(thesis) == before[0]  # the thesis family's keys do not move
    assert key(heo) != before[1]  # the grown family's do


def test_a_trials_process_does_not_load_mlflow():
    """The trials' runs are logged by the sweep's run log actor (orchestrator.run_log): a trial's
    worker process must not pay MLflow's import and sqlite store (~3 s of every fresh worker)."""
    code = (
        "import sys, orchestrator.trial, orchestrator.run_log\n"
        "print(sorted(m for m in sys.modules if m == 'mlflow' or m.startswith(('mlflow.', 'sqlalchemy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout[:2000]
