"""The Ray Data executor of the input family's job: the per-image attack in an actor pool.

The driver's input batches (``jobs.input_parts.input_batches``, one block each) -> ``map_batches``
with :class:`_Attacker` actors (each loads the victim once) -> the per-image tables, read back by
the driver, which writes ``images.parquet`` and the pictures. Sized by :func:`pool` from what is
free *now*: inside a Tune trial the trial's own CPUs and GPU are taken, so a pool sized on the
cluster's totals would wait forever (``jobs.raysetup.free_gpus`` / ``cpu_actor_pool``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from jobs import input_parts as parts
from shared import store


@dataclass(frozen=True)
class Pool:
    """How the attack's actor pool is sized: ``actors`` actors with ``cpus`` CPUs and ``gpus`` GPUs each."""

    actors: int
    cpus: float
    gpus: int
    threads: int  # torch intra-op threads per actor

    def describe(self) -> str:
        return f"{self.actors} actor(s) x {self.cpus:g} CPU, {self.gpus} GPU"


def pool(batches: int) -> Pool:
    """One GPU actor per free GPU (at most one per batch), else CPU actors of one free core each.

    A GPU actor takes at most one CPU, less when the caller holds the CPUs (a trial): it only feeds its GPU.
    """
    import ray

    from jobs.raysetup import cpu_actor_pool, free_gpus

    gpus = free_gpus()
    if gpus >= 1:
        n = max(1, min(int(gpus), batches))
        cpus = float(ray.available_resources().get("CPU", 0))
        return Pool(n, round(min(1.0, max(0.01, cpus / n)), 4), 1, 2)
    n, each = cpu_actor_pool(reserve=0.0, per_actor=1.0)  # no read tasks: the input is in the object store
    return Pool(max(1, min(n, batches)), each, 0, max(1, int(each)))


class _Attacker:
    """Actor: holds the victim and the perturbation, attacks one input batch per call."""

    def __init__(self, spec, device: str, threads: int, shape: tuple[int, ...], s3) -> None:
        import torch

        from shared.device import pick_device
        from shared.perturb import get_perturbation

        store.configure(s3)  # the weights may live on the driver's S3
        torch.set_num_threads(max(1, threads))
        self.device = pick_device(device)
        self.victim = parts.load_victim(spec.model, spec.weights, spec.interpreter, spec.layer, self.device)
        self.perturbation = get_perturbation(spec.attack)(**spec.params)
        self.shape, self.pictures = shape, spec.picture_images

    def __call__(self, batch: pa.Table) -> pa.Table:
        return parts.attack_batch(
            self.victim, self.perturbation, batch, self.device, self.shape, self.pictures
        )


def run_ray_data(spec, batches: list[pa.Table], shape: tuple[int, ...]) -> tuple[list[pa.Table], Pool]:
    """Attack ``batches`` in an actor pool sized by :func:`pool`; the per-image tables, in any order."""
    import ray

    size = pool(len(batches))
    ds = ray.data.from_arrow(batches)  # one block per batch: the batches the local executor attacks
    ds = ds.map_batches(
        _Attacker,
        fn_constructor_kwargs={"spec": spec, "device": "auto" if size.gpus else "cpu",
                               "threads": size.threads, "shape": shape, "s3": store.current_s3()},
        compute=ray.data.ActorPoolStrategy(size=size.actors),
        batch_size=spec.batch_size,
        batch_format="pyarrow",
        num_cpus=size.cpus,
        num_gpus=size.gpus,
    )  # fmt: skip
    return list(ds.iter_batches(batch_size=None, batch_format="pyarrow")), size
