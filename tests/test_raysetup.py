"""Ray workers start with the environment our jobs need (jobs.raysetup.worker_env)."""

from __future__ import annotations

import pytest

from jobs.raysetup import worker_env


def test_worker_env_keeps_what_the_user_exported(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert worker_env() == {"MALLOC_ARENA_MAX": "1"}
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert worker_env() == {"MALLOC_ARENA_MAX": "4"}


@pytest.mark.usefixtures("ray_local")
def test_a_worker_process_starts_with_one_malloc_arena():
    """glibc reads MALLOC_ARENA_MAX once, when the process starts: it must be in the environment the
    worker was started with (/proc/self/environ), not only set in os.environ afterwards."""
    import ray

    @ray.remote(num_cpus=1)
    def start_env() -> list[str]:
        with open("/proc/self/environ", "rb") as f:
            return [e.decode() for e in f.read().split(b"\0") if e.startswith(b"MALLOC_")]

    assert ray.get(start_env.remote()) == ["MALLOC_ARENA_MAX=1"]
