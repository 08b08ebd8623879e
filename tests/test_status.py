"""``vizsweep status SWEEP`` from the trials' state files: right counts for 1,000 trials, no MLflow."""

from __future__ import annotations

import sys

import pytest

from orchestrator.cli import main
from orchestrator.status import read_trial_states, sweep_dir, write_trial_state
from tests.sweep_store import SWEEP, write_status_store


def test_status_of_1000_trials_counts_each_state(tmp_path, capsys):
    counts = write_status_store(tmp_path, 1000)
    assert counts == {"done": 600, "stopped": 50, "failed": 30, "started": 30, "pending": 290}
    capsys.readouterr()
    assert main(["status", SWEEP, "--store", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        f"sweep {SWEEP}: attacks  (600 done, 50 stopped, 30 failed, 30 started, 290 pending of 1000)"
    )
    rows = [line.split() for line in lines[2:] if line.startswith("  ")]
    assert len(rows) == 1000 and rows[0] == ["done", "trial-00000"] and rows[-1] == ["pending", "trial-00999"]
    assert lines[-1] == f"the driver is gone: continue with  vizsweep resume {SWEEP}"


def test_status_reads_no_mlflow_torch_or_ray(tmp_path):
    import subprocess

    write_status_store(tmp_path, 6)
    code = (
        "import sys\nfrom orchestrator.cli import main\n"
        f"main(['status', '{SWEEP}', '--store', {str(tmp_path)!r}])\n"
        "print(sorted(m for m in ('mlflow', 'torch', 'ray', 'jobs.runners') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]", out


def test_trial_state_is_checked_and_the_last_write_wins(tmp_path):
    sdir = sweep_dir(str(tmp_path), SWEEP)
    with pytest.raises(ValueError, match="unknown trial state 'finished'; valid: done, running"):
        write_trial_state(sdir, "k1", "trial-1", "finished")
    write_trial_state(sdir, "k1", "trial-1", "running")
    write_trial_state(sdir, "k1", "trial-1", "done")
    assert {k: v["state"] for k, v in read_trial_states(sdir).items()} == {"k1": "done"}
