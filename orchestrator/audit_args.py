"""The ``vizsweep audit`` arguments (argparse only: building the parser imports no job)."""

from __future__ import annotations

import argparse

from orchestrator.cli_args import NON_NEGATIVE, POSITIVE


def add_audit_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "audit",
        help="is this model's interpretation manipulated? per-unit flags against fine-tuning baselines",
    )
    a.add_argument(
        "--suspect", required=True, help="checkpoint of the model under audit (path, file:// or s3://)"
    )
    a.add_argument("--reference", required=True,
                   help="checkpoint of the trusted model of the same architecture (path, file:// or s3://)")  # fmt: skip
    a.add_argument("--data", required=True, help="dataset root URI whose --split images both models see")
    a.add_argument("--model", default=None,
                   help="registered model name (default: the one the checkpoints record)")  # fmt: skip
    a.add_argument("--layers", nargs="+", default=["conv5"], help="layer aliases to audit")
    a.add_argument("--interpreters", nargs="*", default=None,
                   help="interpreters whose heatmaps are compared, e.g. gradcam lrp simplegrad (default: none)")  # fmt: skip
    a.add_argument("--sweep", default=None,
                   help="calibrate on this finished sweep's fine-tuning control trials (default: fine-tune the "
                        "reference briefly and calibrate on that)")  # fmt: skip
    a.add_argument("--store", default=None,
                   help="store that holds the sweep and gets the audit (default: $VIZSWEEP_STORE, else ./vizsweep-store)")  # fmt: skip
    a.add_argument("--split", default="val", help="split whose images the models are compared on")
    a.add_argument("--embedder", default=None,
                   help="e(x) of CLIP-δ (default: the sweep's, else open_clip:ViT-B-32:openai)")  # fmt: skip
    a.add_argument(
        "--map-images", type=POSITIVE, default=64, help="validation images whose heatmaps are compared"
    )
    a.add_argument("--baseline-steps", type=POSITIVE, default=20,
                   help="steps of the brief fine-tuning baseline (without --sweep)")  # fmt: skip
    a.add_argument(
        "--seed", type=NON_NEGATIVE, default=0, help="seed of D_τ, the map images and the baseline"
    )
