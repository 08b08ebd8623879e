"""The ``vizsweep`` command line."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from collections.abc import Sequence

from orchestrator.audit_args import add_audit_parser
from orchestrator.cli_args import NON_NEGATIVE, POSITIVE, int_in

DEFAULT_STORE = os.environ.get("VIZSWEEP_STORE", "vizsweep-store")
DESCRIPTION = (
    "Sweeps of adversarial attacks on feature visualizations, with pruning defenses. "
    "Sweep commands find their store from --store, else $VIZSWEEP_STORE, else ./vizsweep-store."
)
STORE_HELP = "store URI (path, file:// or s3://)"
SWEEP_STORE_HELP = "store that holds the sweep (default: $VIZSWEEP_STORE, else ./vizsweep-store)"


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` where a default says something (not for None or an off flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if quiet or "%(default)" in text or "default:" in text:
            return text
        return super()._get_help_string(action) or text


class _Parser(argparse.ArgumentParser):
    """Every (sub)parser: defaults in help, and a suggestion for a mistyped choice."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            close = difflib.get_close_matches(m.group(1), re.findall(r"'([^']*)'", m.group(2)), n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        super().error(message)


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked (importlib.metadata is slow to import)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        print(f"{parser.prog} {package_version()}")
        parser.exit()


def package_version() -> str:
    """The installed distribution's version; a source checkout's pyproject.toml otherwise."""
    from importlib import metadata

    try:
        return metadata.version("vizsweep")
    except metadata.PackageNotFoundError:
        import tomllib

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
        with open(path, "rb") as f:
            return tomllib.load(f)["project"]["version"]


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets: make the synthetic one, index shards")
    dsub = data.add_subparsers(dest="data_cmd", required=True)
    s = dsub.add_parser(
        "synth", help="write the deterministic synthetic dataset in the three ImageNet layouts"
    )
    s.add_argument("--out", required=True, help="dataset root URI (path, file:// or s3://)")
    s.add_argument("--classes", type=POSITIVE, default=16, help="number of classes (>= 16 recommended)")
    s.add_argument("--train-per-class", type=POSITIVE, default=300, help="train images per class")
    s.add_argument("--val-per-class", type=POSITIVE, default=50, help="val images per class")
    s.add_argument("--size", type=int_in(16), default=64, help="image side in pixels")
    s.add_argument(
        "--seed", type=NON_NEGATIVE, default=0, help="random seed (the same seed writes the same bytes)"
    )
    i = dsub.add_parser("index", help="build the image_id -> shard/row index of a split")
    i.add_argument("dataset", help="dataset root URI (path, file:// or s3://)")
    i.add_argument("--split", default="val", help="split to index")
    im = dsub.add_parser(
        "import-imagenet", help="convert an ILSVRC-2012 tree (train/<wnid>/*.JPEG, val/) into Parquet shards"
    )
    im.add_argument("src", help="ILSVRC root holding train/ and val/ (path, file:// or s3://)")
    im.add_argument("dest", help="dataset root to write (path, file:// or s3://); a rerun resumes")
    im.add_argument("--split", choices=("train", "val", "both"), default="both", help="splits to convert")
    im.add_argument("--val-labels", default=None,
                    help="labels of a flat val/: 'filename wnid' lines, or the devkit's "
                         "ILSVRC2012_validation_ground_truth.txt (with --synsets)")  # fmt: skip
    im.add_argument("--synsets", default=None,
                    help="the devkit's data/meta.mat: maps ground-truth ILSVRC2012_IDs to wnids "
                         "(default: meta.mat beside --val-labels)")  # fmt: skip
    im.add_argument("--shard-size", type=POSITIVE, default=1000, help="images per Parquet shard")


def _add_jobs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="train a model on a dataset (reused when its key matches)")
    p.add_argument("--data", required=True, help="dataset root URI")
    p.add_argument("--model", default="alexnet_mini", help="registered model name (see README, Models)")
    p.add_argument("--epochs", type=POSITIVE, default=None, help="training epochs (default: the job's own)")
    p.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="random seed")

    a = sub.add_parser("activations", help="activation tables of layers for a split (Ray Data)")
    a.add_argument("--data", required=True, help="dataset root URI")
    a.add_argument("--model", default="alexnet_mini", help="registered model name")
    a.add_argument("--weights", required=True, help="checkpoint URI or torchvision weights name")
    a.add_argument("--variant-key", default=None, help="default: derived from the weights")
    a.add_argument("--layers", default="conv5", help="comma-separated layer aliases")
    a.add_argument("--split", default="val", help="split to run over")
    a.add_argument("--store", default=DEFAULT_STORE, help=STORE_HELP)
    a.add_argument("--batch-size", type=POSITIVE, default=256, help="images per forward pass")
    a.add_argument("--k", type=NON_NEGATIVE, default=10, help="also compute top-k sets (0: skip)")

    d = sub.add_parser(
        "demo", help="the quickstart sweep end to end (synthetic data, alexnet_mini, 3 attacks x 2 layers)"
    )
    d.add_argument("--spec", default=None, help="default: examples/quickstart.yaml")
    d.add_argument("--tables-only", action="store_true",
                   help="only data -> pretrained model -> activation tables -> top-k grid")  # fmt: skip
    d.add_argument("--store", default=DEFAULT_STORE, help=f"{STORE_HELP}; with --tables-only")
    d.add_argument(
        "--layers", default="conv3,conv5", help="comma-separated layer aliases; with --tables-only"
    )


def _add_sweeps(sub: argparse._SubParsersAction) -> None:
    la = sub.add_parser(
        "launch", help="run a sweep spec (validated first); a second launch reuses all it can"
    )
    la.add_argument("spec", help="sweep spec YAML: path, file:// or s3:// URI (its store: is where it runs)")
    la.add_argument(
        "--max-concurrent", type=POSITIVE, default=None, help="trials at once (default: by resources)"
    )
    st = sub.add_parser("status", help="sweeps in the store (newest first), or one sweep's trials")
    st.add_argument("sweep", nargs="?", help="sweep id (default: list every sweep in the store)")
    st.add_argument("--store", default=None, help=SWEEP_STORE_HELP)
    re_ = sub.add_parser("resume", help="finish the unfinished trials of a sweep (after a crash or kill)")
    re_.add_argument("sweep", nargs="?", help="sweep id, as 'vizsweep status' lists it")
    re_.add_argument("--store", default=None, help=SWEEP_STORE_HELP)
    re_.add_argument(
        "--max-concurrent", type=POSITIVE, default=None, help="trials at once (default: by resources)"
    )
    sp = sub.add_parser(
        "stop", help="end a running sweep cleanly: trials keep their checkpoints; 'vizsweep resume' continues"
    )
    sp.add_argument("sweep", nargs="?", help="sweep id, as 'vizsweep status' lists it")
    sp.add_argument("--store", default=None, help=SWEEP_STORE_HELP)
    rp = sub.add_parser("report", help="the thesis's Table 3.1 for a sweep, from MLflow")
    rp.add_argument("sweep", nargs="?", help="sweep id, as 'vizsweep status' lists it")
    rp.add_argument("--store", default=None, help=SWEEP_STORE_HELP)
    rp.add_argument("--format", choices=("md", "csv", "json"), default="md", help="output format")
    ui = sub.add_parser(
        "ui", help="MLflow UI on a sweep's runs: prints the runs-table and compare URLs once it answers"
    )
    ui.add_argument("sweep", nargs="?", help="sweep id, as 'vizsweep status' lists it")
    ui.add_argument("--store", default=None, help=SWEEP_STORE_HELP)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ui.add_argument(
        "--port", type=int_in(0, 65535), default=5000, help="port to listen on (0: any free port)"
    )


def _add_validate(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("validate", help="check a sweep spec without starting Ray; print its trial count")
    v.add_argument("spec", help="sweep spec YAML: path, file:// or s3:// URI")
    v.add_argument("--spec-only", action="store_true",
                   help="only the checks the file decides (for a cluster's spec checked on a laptop: "
                        "no dataset/weights lookups, no resource checks against this machine)")  # fmt: skip
    sub.add_parser("schema", help="print the JSON Schema of a sweep spec (editors: docs/sweep.schema.json)")


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="a sweep spec's stage graph, trial count, GPU-hours and storage (assumed rates; runs nothing)",
    )
    p.add_argument("spec", help="sweep spec YAML: path, file:// or s3:// URI")
    p.add_argument("--json", action="store_true", help="one JSON object (keys: orchestrator/estimate.py)")
    p.add_argument("--train-images", type=POSITIVE, default=None,
                   help="train split size (default: the dataset's manifest, the synth block, or ImageNet's 1,281,167)")  # fmt: skip
    p.add_argument("--val-images", type=POSITIVE, default=None,
                   help="val split size (default: the dataset's manifest, the synth block, or ImageNet's 50,000)")  # fmt: skip


def _add_list(sub: argparse._SubParsersAction) -> None:
    li = sub.add_parser(
        "list", help="registered plugins of one kind, one line each (attacks, pruners, metrics, models, ...)"
    )
    li.add_argument("kind", help="attacks | embedders | interpreters | metrics | models | pruners")


def _add_verify(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser(
        "verify",
        help="check committed files against their manifests (sizes, checksums); exit 1 when any is corrupt",
    )
    v.add_argument(
        "sweep", nargs="?", help="only the stages this sweep's plan uses (default: the whole store)"
    )
    v.add_argument("--store", default=None, help=SWEEP_STORE_HELP)
    v.add_argument("--quick", action="store_true", help="sizes only (no checksums: one listing per folder)")
    v.add_argument("--repair", action="store_true",
                   help="remove corrupt derived stages now, so the next launch or resume recomputes them")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="vizsweep", description=DESCRIPTION)
    ap.add_argument("--version", action=_Version, help="show the version and exit")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_data(sub)
    _add_jobs(sub)
    _add_validate(sub)
    _add_sweeps(sub)
    _add_plan(sub)
    _add_list(sub)
    _add_verify(sub)
    add_audit_parser(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "data":
            return _cmd_data(args)
        if args.cmd == "pretrain":
            return _cmd_pretrain(args)
        if args.cmd == "activations":
            return _cmd_activations(args)
        if args.cmd == "validate":
            return _cmd_validate(args)
        if args.cmd == "list":
            from orchestrator.plugin_list import cmd_list

            return cmd_list(args.kind)
        if args.cmd == "schema":
            from orchestrator.spec import json_schema

            print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
            return 0
        if args.cmd == "plan":
            from orchestrator.commands import require_file
            from orchestrator.estimate import cmd_plan

            require_file(args.spec)
            return cmd_plan(
                args.spec, as_json=args.json, train_images=args.train_images, val_images=args.val_images
            )
        if args.cmd == "demo":
            from orchestrator.demo import run_demo, run_sweep_demo

            if args.tables_only:
                return run_demo(args.store, [x.strip() for x in args.layers.split(",") if x.strip()])
            if args.spec:
                from orchestrator.commands import require_file

                require_file(args.spec)
            return run_sweep_demo(args.spec)
        if args.cmd in ("launch", "status", "resume", "stop", "report", "ui"):
            return _cmd_sweep(args)
        if args.cmd == "audit":
            from orchestrator.audit_cmd import cmd_audit

            return cmd_audit(args)
        if args.cmd == "verify":
            from orchestrator.commands import resolve_store
            from orchestrator.verify import cmd_verify

            return cmd_verify(resolve_store(args.store)[0], args.sweep, quick=args.quick, repair=args.repair)
    except UsageError as e:
        print(f"vizsweep: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Library errors carry the offending value and the valid choices already.
        print(f"vizsweep: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a damaged store file: named, with what to do (shared.integrity)
        from shared.store import StoreError

        if not isinstance(e, StoreError):
            raise
        print(f"vizsweep: error: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator import commands

    if args.cmd == "launch":
        return commands.cmd_launch(args.spec, args.max_concurrent)
    store_uri, source = commands.resolve_store(args.store)
    if args.sweep is None and args.cmd != "status":
        raise UsageError(
            f"{args.cmd} needs a sweep id; list the sweeps with: vizsweep status  "
            f"[{commands.store_line(store_uri, source)}]"
        )
    if args.cmd in ("status", "report"):  # said once; beside csv/json on stdout it would break a parser
        human = args.cmd == "status" or args.format == "md"
        print(commands.store_line(store_uri, source), file=sys.stdout if human else sys.stderr)
    if args.cmd == "status":
        return commands.cmd_status(store_uri, args.sweep)
    if args.cmd == "stop":
        return commands.cmd_stop(store_uri, args.sweep)
    if args.cmd == "resume":
        return commands.cmd_resume(store_uri, args.sweep, args.max_concurrent)
    if args.cmd == "report":
        return commands.cmd_report(store_uri, args.sweep, args.format)
    return commands.cmd_ui(store_uri, args.sweep, args.port, args.host)


def _cmd_data(args: argparse.Namespace) -> int:
    from orchestrator.progress import Bar

    if args.data_cmd == "synth":
        from shared.synth import generate

        with Bar("synth") as bar:
            m = generate(
                args.out, classes=args.classes, train_per_class=args.train_per_class,
                val_per_class=args.val_per_class, size=args.size, seed=args.seed, progress=bar,
            )  # fmt: skip
        print(json.dumps({k: m[k] for k in m if k in ("counts", "classes", "layouts", "size")}, default=str))
    elif args.data_cmd == "index":
        from shared.image_index import build_index

        print(build_index(args.dataset, args.split))
    elif args.data_cmd == "import-imagenet":
        from shared.imagenet_import import import_imagenet

        with Bar("import-imagenet") as bar:
            res = import_imagenet(
                args.src, args.dest, split=args.split, val_labels=args.val_labels, synsets=args.synsets,
                shard_size=args.shard_size, progress=bar,
            )  # fmt: skip
        print(json.dumps(res.summary()))
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from jobs.pretrain import PretrainSpec, run_pretrain
    from orchestrator.progress import Bar

    spec = PretrainSpec(dataset=args.data, model=args.model, seed=args.seed)
    if args.epochs is not None:
        spec = replace(spec, epochs=args.epochs)
    with Bar("pretrain", unit="epoch") as bar:
        res = run_pretrain(spec, args.store, progress=bar)
    print(
        json.dumps({"model_uri": res.model_uri, "key": res.key, "val_acc": res.val_acc, "reused": res.reused})
    )
    return 0


def _cmd_activations(args: argparse.Namespace) -> int:
    from jobs.activations import ActivationsSpec, check_spec, run_activations
    from jobs.raysetup import ensure_ray
    from jobs.topk import run_topk
    from orchestrator.progress import Bar
    from shared import store

    layers = tuple(x.strip() for x in args.layers.split(",") if x.strip())
    variant = args.variant_key or store.content_key(args.model, args.weights)
    spec = ActivationsSpec(
        dataset=args.data, split=args.split, model=args.model, weights=args.weights,
        variant_key=variant, layers=layers, batch_size=args.batch_size,
    )  # fmt: skip
    check_spec(spec)  # before Ray starts
    ensure_ray()
    with Bar("activations") as bar:
        res = run_activations(spec, args.store, progress=bar)
        out = {"tables": res.tables, "rows": res.rows, "corrupt": res.corrupt, "skipped": res.skipped}
        if args.k:
            out["topk"] = {
                layer: run_topk(uri, args.k, progress=bar).uri for layer, uri in res.tables.items()
            }
    print(json.dumps(out))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    # A bad spec raises SpecError (a ValueError): main prints its problem list and returns 2.
    # Neither pyarrow nor torch is imported before the YAML is read (a syntax error is answered fast).
    from orchestrator.spec import load_spec
    from shared.uris import local_path

    try:
        local = local_path(args.spec)
    except ValueError:
        local = None  # an unsupported scheme: load_spec says which ones work
    if local is not None and not os.path.exists(local):
        raise FileNotFoundError(f"no such file: {args.spec}")
    spec = load_spec(args.spec, check_environment=not args.spec_only)
    scope = " (file checks only)" if args.spec_only else ""
    print(f"ok{scope}: {spec.name}: {spec.trial_count()} trials ({spec.trial_formula()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
