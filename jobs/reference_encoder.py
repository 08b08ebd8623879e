"""Train the offline reference encoder ``e(x)`` of SCIENCE.md §3 (when no CLIP weights can be had).

It is an ordinary pretraining run (jobs.pretrain) of ``resnet_mini``: another
architecture and seed than the attacked ``alexnet_mini``, so the encoder does not
share the victim's features. The run is stored under ``{store}/models/{key}/``
like any pretrained model and reused by its content key; embed with
``shared.embedders.get_embedder(f"reference:{model_uri}")``.
"""

from __future__ import annotations

import dataclasses

from jobs.pretrain import PretrainSpec, run_pretrain
from shared.progress import Progress, no_progress

REFERENCE_MODEL = "resnet_mini"
ATTACKED_MODEL = "alexnet_mini"  # what the encoder must not be built like

# On the 16-class synthetic set (4800 train images of 64 px) this reaches ~90 % val accuracy in
# about a minute of CPU time; separable embeddings, not the last point of accuracy, are the goal.
REFERENCE_TRAINING = {"model": REFERENCE_MODEL, "epochs": 6, "batch_size": 64, "lr": 3e-3}


def reference_spec(dataset: str, seed: int = 1, **overrides: object) -> PretrainSpec:
    """The PretrainSpec of the reference encoder; ``overrides`` are other PretrainSpec fields.

    ``seed`` defaults to 1 because the attacked model's pretraining uses PretrainSpec's default, 0.
    """
    fields = {f.name for f in dataclasses.fields(PretrainSpec)} - {"dataset", "seed"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown PretrainSpec field(s) {unknown}; valid: {', '.join(sorted(fields))}")
    spec = PretrainSpec(dataset=dataset, seed=seed, **{**REFERENCE_TRAINING, **overrides})  # type: ignore[arg-type]
    if spec.model == ATTACKED_MODEL:
        raise ValueError(
            f"the reference encoder must not be built like the attacked model {ATTACKED_MODEL!r}; "
            f"leave model unset (default {REFERENCE_MODEL!r}) or pick another registered model"
        )
    return spec


def train_reference_encoder(
    dataset: str,
    store_uri: str,
    seed: int = 1,
    progress: Progress = no_progress,
    **overrides: object,
) -> str:
    """Train (or reuse) the reference encoder on ``dataset``; returns its checkpoint URI.

    For the val accuracy and timing, call ``run_pretrain(reference_spec(...), store_uri)``:
    the same run, returned as a PretrainResult (the manifest has the per-epoch history).
    """
    return run_pretrain(reference_spec(dataset, seed, **overrides), store_uri, progress).model_uri
