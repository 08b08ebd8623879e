"""The attack job's spec: what determines an attacked model, and its content key.

The settings of the shared fine-tuning loop are fields here; a family's own settings (the
thesis's k, scale, decoy class; Heo's interpreter and λ) arrive as ``config``, the dict the
family record's ``job_config`` made. The key covers the family, the attack, that config and
the loop's settings, so adding a field to one family's config changes no other family's keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shared import store
from shared.alpha import AlphaConfig
from shared.attacks import family_of, get_attack
from shared.models.zoo import model_info

CODE_VERSION = "attack-v3"  # v2: keys per family, push-up is the max form; v3: our train stream order
EXECUTION_ONLY = ("device", "checkpoint_every", "keep_checkpoints", "eval_batch_size", "cache_mb")


@dataclass(frozen=True)
class AttackSpec:
    """Everything that determines an attacked model (all but EXECUTION_ONLY goes into its key)."""

    dataset: str  # dataset root URI (any layout shared.datasets reads)
    model: str  # registered model name, e.g. "alexnet_mini"
    weights: str  # base checkpoint URI (the variant being attacked)
    variant_key: str  # content key of that variant: its initial tables live under model={variant_key}
    attack: str  # a registered attack (`vizsweep list attacks`)
    config: Mapping[str, Any] = field(default_factory=dict)  # the family's job settings (job_config)
    layers: tuple[str, ...] = ("conv5",)  # scope: one layer (default) or several (mean of per-layer L_A)
    units: str | tuple[int, ...] = "all"  # "all" units of each layer, or unit indices (one unit: (j,))
    alpha: AlphaConfig = AlphaConfig()  # α rule settings (α0 0.1, cap 0.95, halve above 0.5 pp drop)
    # Thesis: Adam 1e-5 for 5 ImageNet epochs (25k steps of 256). alexnet_mini on 4,800 synthetic
    # images gets ~150 steps in a 5-minute CPU budget: 1e-4 moves conv5's top-k there while the
    # α rule holds the accuracy drop (benchmarks/attack_goals.py).
    lr: float = 1e-4  # Adam learning rate
    batch_size: int = 64  # training images per step
    epochs: int = 2  # passes over the train split
    max_steps: int | None = None  # stop after this many steps (None: epochs x steps per epoch)
    evals_per_epoch: int = 10  # evaluation intervals per epoch (α update, report, checkpoint)
    eval_split: str = "val"  # split the fixed evaluation subset is drawn from (held out from training)
    eval_images: int = 2000  # size of that subset (seeded; the whole split when smaller)
    shuffle_buffer: int = 1024  # rows per shuffle window: consecutive blocks whose rows are permuted
    block_rows: int = 256  # rows per block that the seeded stream order permutes (jobs.train_stream)
    train_split: str = "train"  # the split D that is trained on and whose top-k is attacked
    seed: int = 0  # data order, subsets, dropout
    amp: bool = False  # bf16 autocast (changes the numerics, hence in the key)
    # Execution settings: they do not change the result, so they stay out of the key.
    device: str = field(default="auto", compare=False)  # "auto": CUDA when present, else CPU
    checkpoint_every: int = field(default=1, compare=False)  # in evaluation intervals
    keep_checkpoints: int = field(default=2, compare=False)  # newest step-* folders kept
    eval_batch_size: int = field(default=256, compare=False)  # images per forward when evaluating
    cache_mb: int = field(default=2048, compare=False)  # keep the decoded train split in memory if it fits

    def __post_init__(self) -> None:
        get_attack(self.attack)  # unknown names fail here, listing the valid ones
        info = model_info(self.model)
        if isinstance(self.layers, str) or not self.layers:
            raise ValueError(f"AttackSpec.layers={self.layers!r}: give a non-empty list, e.g. ['conv5']")
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "config", dict(self.config))
        for layer in self.layers:
            info.resolve_layer(layer)
        if self.units != "all":
            if (
                isinstance(self.units, str)
                or not self.units
                or not all(_is_int(u) and u >= 0 for u in self.units)
            ):
                raise ValueError(
                    f"AttackSpec.units={self.units!r}: 'all' or a non-empty list of unit indices >= 0"
                )
            object.__setattr__(self, "units", tuple(sorted({int(u) for u in self.units})))
        if isinstance(self.alpha, dict):
            object.__setattr__(self, "alpha", AlphaConfig(**self.alpha))
        positive = ("batch_size", "epochs", "evals_per_epoch", "eval_images", "shuffle_buffer", "block_rows")
        positive += ("checkpoint_every", "keep_checkpoints", "eval_batch_size", "cache_mb")
        for name in (*positive, "max_steps"):
            value = getattr(self, name)
            if (value is not None or name in positive) and not (_is_int(value) and value >= 1):
                raise ValueError(f"AttackSpec.{name}={value!r}: must be an integer >= 1")
        if not self.lr > 0:
            raise ValueError(f"AttackSpec.lr={self.lr!r}: must be > 0")

    @property
    def family(self) -> str:
        return family_of(self.attack).name

    def identity(self) -> dict[str, Any]:
        """The keyed fields, with the family named: its config is keyed as the family's own."""
        d = {k: v for k, v in asdict(self).items() if k not in EXECUTION_ONLY}
        return {**d, "family": self.family}

    def key(self, dataset_id: str) -> str:
        return store.content_key(self.identity(), dataset_id, CODE_VERSION)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (tuples as lists); ``AttackSpec(**d)`` reads it back."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)
