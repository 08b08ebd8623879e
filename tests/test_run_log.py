"""A trial's MLflow run through the sweep's run log actor (orchestrator.run_log): what a trial's
``RemoteRun`` does lands in MLflow as ``TrialRun``'s own calls would, with a retry's skip of logged
steps, files at the artifact root, and no credential."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.run_log import RemoteRun, run_log, start_run_log
from orchestrator.spec import default_tracking_uri
from orchestrator.tracking import SweepTracker

SECRET = "wJalrXUtnFEMI/K7MDENG-runlogsecret"


@pytest.fixture
def swept(ray_local, tmp_path):
    uri = default_tracking_uri(str(tmp_path / "store"))
    t = SweepTracker(uri, "exp")
    sid = f"rl-{tmp_path.name}"  # one actor per test: a killed actor's name may linger a moment
    handle = start_run_log(sid, uri)
    yield sid, uri, t.experiment_id, t.parent(sid, {}, {}), handle
    ray_local.kill(handle)


def test_a_trial_run_through_the_run_log(swept, tmp_path):
    import ray

    sid, uri, exp, parent, handle = swept
    log = run_log(sid)  # what a trial finds by the sweep's id
    params = {"lr": 1e-4, "store": f"s3://AKIA:{SECRET}@127.0.0.1:8333/b", "s3": {"secret_key": SECRET}}
    run = RemoteRun.open(
        log, exp, parent, "trial-a", "alexnet/conv5/push-down", params, {"vizsweep.sweep_id": sid}
    )
    for step in range(3):  # sent without waiting; the next call that waits follows them
        run.log_step({"acc_drop": step / 10, "alpha": 0.5, "note": "text is not a metric"}, step)
    assert len(run.pending) == 3
    picture = b"\x89PNG the picture's bytes"
    run.log_bytes("topk_before_after.png", picture)
    run.set_tags({"vizsweep.attempts": 1})
    assert run.tags()["vizsweep.attempts"] == "1"
    run.finish("FAILED")  # the attempt died after step 2; the actor forgets the run
    assert not ray.get(log.finished.remote(exp, parent, "trial-a"))

    again = RemoteRun.open(log, exp, parent, "trial-a", "alexnet/conv5/push-down", params, {})
    assert again.run_id == run.run_id
    again.log_step({"acc_drop": 9.0}, 2)  # restarted from a checkpoint at step 2: skipped (history below)
    again.log_step({"acc_drop": 0.3}, 3)
    again.log_final({"clip_delta": 0.25, "missing": None})
    again.finish()
    assert ray.get(log.finished.remote(exp, parent, "trial-a"))

    c = MlflowClient(uri)
    got = c.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.metrics["clip_delta"] == 0.25
    history = {m.step: m.value for m in c.get_metric_history(run.run_id, "acc_drop")}
    assert history == pytest.approx({0: 0.0, 1: 0.1, 2: 0.2, 3: 0.3})
    assert "note" not in got.data.metrics and got.data.params["lr"] == "0.0001"
    assert [a.path for a in c.list_artifacts(run.run_id)] == ["topk_before_after.png"]
    local = c.download_artifacts(run.run_id, "topk_before_after.png", str(tmp_path / "down"))
    assert open(local, "rb").read() == picture
    values = [*got.data.params.values(), *got.data.tags.values(), *got.data.params, *got.data.tags]
    assert not [v for v in values if SECRET in v or "AKIA" in v]


def test_a_failed_trial_is_marked_through_the_run_log(swept):
    import ray

    _, uri, exp, parent, handle = swept
    run = RemoteRun.open(handle, exp, parent, "trial-b", "b", {}, {})
    ray.get(handle.fail.remote(exp, parent, "trial-b", "ValueError: layer 'conv9' is not in alexnet_mini"))
    got = MlflowClient(uri).get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["vizsweep.status"] == "failed: ValueError: layer 'conv9' is not in alexnet_mini"


def test_a_step_log_that_failed_is_raised_by_the_next_call_that_waits(swept):
    import ray

    _, _, _, _, handle = swept
    lost = RemoteRun(handle, "no-such-run-id")
    lost.log_step({"acc_drop": 0.1}, 1)  # returns at once
    with pytest.raises(ray.exceptions.RayTaskError, match="no-such-run-id"):
        lost.flush()
    assert lost.pending == []
