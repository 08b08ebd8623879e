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


# --------------------------------------------------------------------------- vizsweep stop


def _running_sweep(tmp_path) -> str:
    """A store whose sweep's driver is this (live) process."""
    import os

    from orchestrator.status import write_status

    write_status_store(tmp_path, 6)
    sdir = sweep_dir(str(tmp_path), SWEEP)
    write_status(sdir, driver_pid=os.getpid())
    return sdir


def test_stop_writes_a_request_the_driver_sees_and_acknowledges(tmp_path, capsys):
    import pickle

    from orchestrator.status import acknowledge_stop, clear_stop, stop_requested, stop_uri
    from orchestrator.tune_callbacks import StopRequest
    from shared import store

    sdir = _running_sweep(tmp_path)
    stopper = StopRequest(sdir, poll_s=0.0)
    assert not stopper.stop_all() and not stop_requested(sdir)
    assert main(["stop", SWEEP, "--store", str(tmp_path)]) == 0
    assert f"continue later with: vizsweep resume {SWEEP}" in capsys.readouterr().out
    assert stop_requested(sdir)
    assert pickle.loads(pickle.dumps(stopper)).stop_all()  # Tune pickles stoppers into its experiment state
    assert (
        stopper.stop_all() and stopper(trial_id="t", result={}) is False
    )  # the whole experiment, not a trial
    acknowledge_stop(sdir)  # what the driver does once its trials have ended
    assert not stop_requested(sdir) and "acknowledged" in store.read_json(stop_uri(sdir))
    clear_stop(sdir)  # what the next launch or resume does
    assert not store.exists(stop_uri(sdir))


def test_stop_of_a_sweep_that_is_not_running_says_so(tmp_path, capsys):
    from orchestrator.status import stop_requested

    write_status_store(tmp_path, 6)  # its driver pid is not recorded: gone
    assert main(["stop", SWEEP, "--store", str(tmp_path)]) == 1
    assert "is not running (state: attacks, driver gone); nothing to stop" in capsys.readouterr().out
    assert not stop_requested(sweep_dir(str(tmp_path), SWEEP))
