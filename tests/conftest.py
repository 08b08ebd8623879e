"""Shared fixtures: real services (S3) and a quiet local Ray."""

from __future__ import annotations

import os

import pytest

from tests.services import seaweedfs

# `make test` runs the modules on two workers (pytest-xdist, --dist loadfile): a module stays on one
# worker with its prepared store. The sweeps are one module, so they run one after the other: two
# sweeps at once on 2 cores (each sizing its Ray pools to the whole machine) take 5x longer, not 2x.
# (A one-trial sweep, tests/test_sweep_imported.py, is a module apart: the other worker runs it.)
# (xdist's loadgroup would say this with marks, but with pytest 9 its "@group" node ids are lost.)
# The longest modules are handed out first (with --no-loadscope-reorder: xdist would order them by
# their number of tests) so the workers end together.
LONGEST_FIRST = ("test_sweeps.py", "test_ui.py", "test_audit.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Longest modules first (stable: the rest keep their order). Goal measurements
    (``@pytest.mark.goals``: full-size pretraining, 512-step renders) run only with ``VIZSWEEP_GOALS=1``
    (``make goals``): minutes each, they would take most of ``make test``'s budget."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    if os.environ.get("VIZSWEEP_GOALS"):
        return
    skip = pytest.mark.skip(reason="a goal measurement at full size: make goals (VIZSWEEP_GOALS=1)")
    for item in items:
        if "goals" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 server for the session; its endpoint and keys are exported for the store."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        old = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        from shared import store

        store._s3.cache_clear()
        yield server
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        store._s3.cache_clear()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: a 2-thread intra-op pool waits far longer than it computes
    (150 ms vs 3 ms a step). Modules ask for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_local():
    """A small local Ray (2 CPUs), shared by the tests that need one."""
    import ray

    from jobs.raysetup import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_s3_server(s3_server, tmp_path_factory):
    """A real MLflow server whose artifacts go to the SeaweedFS bucket ``mlflow`` (prefix ``artifacts``)."""
    from tests.services import mlflow_server

    bucket = "mlflow"
    client = s3_server.client()
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)
    env = {**s3_server.env(), "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint}
    with mlflow_server(
        tmp_path_factory.mktemp("mlflow"), artifacts_destination=f"s3://{bucket}/artifacts", env=env
    ) as server:
        yield server
