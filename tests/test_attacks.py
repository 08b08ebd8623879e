"""Attacks (SCIENCE.md §2): the α rule, the losses by hand, the registry, every attack on a tiny model,
checkpoints, and (slow, Ray) the attack job: resuming gives the same weights as not stopping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jobs.attack import AttackSpec
from jobs.attack_state import ResumeError, find_checkpoint, load_state, rng_state, save_state, set_rng_state
from shared import timing
from shared.alpha import AlphaConfig, next_alpha
from shared.attacks import (
    Attack,
    AttackTargets,
    StepBatch,
    StepScores,
    attack_names,
    build_attack,
    family_of,
    get_attack,
    maintain_loss,
    push_down_loss,
    push_up_loss,
    push_up_pairwise_loss,
    register_attack,
    sample_rows,
    scope_mean,
    train_step,
    unit_scale,
)
from shared.attacks.featureviz import FeatureViz
from shared.models.zoo import build_model
from shared.registry import RegistryError

# --- the α rule -------------------------------------------------------------------------

CFG = AlphaConfig()


@pytest.mark.parametrize(
    "alpha, drop, new, action, at_floor, broken",
    [
        (0.1, 0.6, 0.05, "halve", False, False),  # over the limit: halve
        (0.1, 0.5, 0.2, "double", False, False),  # at the limit is not over it
        (0.1, -3.0, 0.2, "double", False, False),  # accuracy went up
        (0.6, 0.0, 0.95, "double", False, False),  # doubling is capped at alpha_max
        (0.95, 0.1, 0.95, "hold", False, False),  # at the cap
        (1.5e-4, 2.0, 1e-4, "halve", True, False),  # halving stops at the floor
        (1e-4, 2.0, 1e-4, "hold", True, True),  # at the floor and still over: budget broken
        (1e-4, 0.4, 2e-4, "double", False, False),  # at the floor but within budget: recovers
    ],
)
def test_alpha_rule(alpha, drop, new, action, at_floor, broken):
    d = next_alpha(alpha, drop, CFG)
    assert d.alpha == pytest.approx(new) and d.previous == alpha and d.drop_pp == drop
    assert (d.action, d.at_floor, d.budget_broken) == (action, at_floor, broken)
    assert d.as_metrics() == {
        "alpha_next": d.alpha, "alpha_action": action, "alpha_at_floor": at_floor, "budget_broken": broken,
    }  # fmt: skip


def test_alpha_rule_uses_the_config():
    cfg = AlphaConfig(alpha0=0.2, alpha_max=0.5, max_drop_pp=2.0, alpha_min=0.01)
    assert next_alpha(0.2, 1.9, cfg).alpha == pytest.approx(0.4)
    assert next_alpha(0.4, 1.0, cfg).alpha == pytest.approx(0.5)
    assert next_alpha(0.015, 2.1, cfg).alpha == pytest.approx(0.01)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha0": 0.0}, "alpha0"),
        ({"alpha0": 1.0}, "alpha0"),
        ({"alpha_max": 1.0}, "alpha_max"),
        ({"alpha_max": 0.05}, "alpha0"),  # alpha0 above the cap
        ({"alpha_min": 0.0}, "alpha_min"),
        ({"alpha_min": 0.2}, "alpha0"),  # alpha0 below the floor
        ({"max_drop_pp": -0.1}, "max_drop_pp"),
        ({"alpha0": float("nan")}, "finite"),
        ({"alpha0": "0.1"}, "finite"),
    ],
)
def test_alpha_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AlphaConfig(**kwargs)


@pytest.mark.parametrize(
    "alpha, drop", [(0.0, 0.1), (1.0, 0.1), (-0.1, 0.0), (0.1, float("nan")), (0.1, None)]
)
def test_next_alpha_rejects_bad_input(alpha, drop):
    with pytest.raises(ValueError):
        next_alpha(alpha, drop, CFG)


# --- losses by hand -----------------------------------------------------------------------


def test_maintain_loss_is_distillation_cross_entropy():
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    student = torch.tensor([[1.0, 1.0, 0.0], [3.0, -1.0, 0.0]])
    p = F.softmax(teacher, dim=1)
    by_hand = -sum((p[i] * F.log_softmax(student[i], dim=0)).sum() for i in range(2)) / 2
    assert maintain_loss(student, teacher).item() == pytest.approx(by_hand.item(), rel=1e-6)
    entropy = -(p * p.log()).sum(dim=1).mean()  # its minimum: the teacher's own entropy
    assert maintain_loss(teacher, teacher).item() == pytest.approx(entropy.item(), rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        maintain_loss(student, teacher[:, :2])


def test_push_up_hinge_by_hand_scaled_and_raw():
    batch = torch.tensor([[3.0, 1.0], [0.0, 2.0]])  # B=2 images x J=2 units
    decoy = torch.tensor([[1.0, 1.0], [2.0, 4.0], [0.5, 0.0]])  # P=3
    # unit 0: pairs (3-1, 3-2, 3-.5, 0-1, 0-2, 0-.5)+ = 2, 1, 2.5, 0, 0, 0 -> 5.5/6
    # unit 1: (1-1, 1-4, 1-0, 2-1, 2-4, 2-0)+ = 0, 0, 1, 1, 0, 2 -> 4/6
    raw = push_up_pairwise_loss(batch, decoy, torch.ones(2))
    assert raw.item() == pytest.approx((5.5 / 6 + 4 / 6) / 2)
    scaled = push_up_pairwise_loss(batch, decoy, torch.tensor([2.0, 4.0]))
    assert scaled.item() == pytest.approx((5.5 / 6 / 2 + 4 / 6 / 4) / 2)


def test_push_up_hinge_gradient_moves_decoys_up_and_batch_down():
    batch = torch.tensor([[3.0], [0.0]], requires_grad=True)
    decoy = torch.tensor([[1.0]], requires_grad=True)
    push_up_pairwise_loss(batch, decoy, torch.ones(1)).backward()
    assert batch.grad.tolist() == [[0.5], [0.0]]  # only the active hinge pulls
    assert decoy.grad.tolist() == [[-0.5]]


def test_push_down_mean_over_members_then_units():
    scores = torch.tensor([[4.0, 1.0, 9.0], [2.0, 3.0, 9.0], [6.0, 5.0, 9.0]])  # M=3 images x J=3
    member = torch.tensor([[True, False, False], [True, True, False], [False, False, False]])
    scale = torch.tensor([2.0, 3.0, 1.0])
    # unit 0: mean(4, 2)/2 = 1.5; unit 1: 3/3 = 1; unit 2 has no image in the batch: left out
    assert push_down_loss(scores, member, scale).item() == pytest.approx((1.5 + 1.0) / 2)
    assert push_down_loss(scores, member, torch.ones(3)).item() == pytest.approx((3.0 + 3.0) / 2)
    empty = push_down_loss(scores.requires_grad_(), torch.zeros(3, 3, dtype=torch.bool), scale)
    assert empty.item() == 0.0 and empty.requires_grad


def test_unit_scale_modes_and_dead_units():
    topk = torch.tensor([[4.0, 0.0, 10.0], [2.0, 0.0, 6.0]])  # k=2 x J=3, unit 1 never fires
    assert unit_scale(topk, "unit").tolist() == [3.0, 5.5, 8.0]  # dead unit: mean of the live scales
    assert unit_scale(topk, "none").tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="valid scales"):
        unit_scale(topk, "layer")


def test_scope_mean_of_layers():
    assert scope_mean({"a": torch.tensor(1.0), "b": torch.tensor(4.0)}).item() == 2.5
    with pytest.raises(ValueError):
        scope_mean({})


def _targets(units: dict[str, list[int]], scales: dict[str, list[float]], member=None) -> AttackTargets:
    return AttackTargets(
        tuple(units),
        {k: torch.tensor(v) for k, v in units.items()},
        {k: torch.tensor(v) for k, v in scales.items()},
        member,
    )


def test_scopes_one_unit_and_several_layers():
    conv4 = torch.tensor([[1.0, 5.0], [3.0, 1.0]])  # B=2 x J=2
    conv5 = torch.tensor([[2.0, 0.0, 4.0], [0.0, 6.0, 0.0]])
    d4, d5 = torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    step = StepScores({"train": {"conv4": conv4, "conv5": conv5}, "decoy": {"conv4": d4, "conv5": d5}})
    one = build_attack("push-up-pairwise", _targets({"conv5": [1]}, {"conv5": [2.0]}))
    assert one.loss(step).item() == pytest.approx(((0 + 5) / 2) / 2)  # unit 1 only
    both = build_attack(
        "push-up-pairwise", _targets({"conv4": [0, 1], "conv5": [0, 2]}, {"conv4": [1, 1], "conv5": [1, 1]})
    )
    l4 = push_up_pairwise_loss(conv4, d4, torch.ones(2))
    l5 = push_up_pairwise_loss(conv5[:, [0, 2]], d5[:, [0, 2]], torch.ones(2))
    assert both.loss(step).item() == pytest.approx(((l4 + l5) / 2).item())


def test_push_down_plugin_uses_the_sampled_rows_of_the_membership():
    member = {"conv5": torch.tensor([[True, False], [False, True], [True, True]])}
    attack = build_attack("push-down", _targets({"conv5": [0, 2]}, {"conv5": [1.0, 2.0]}, member))
    scores = torch.tensor([[8.0, 0.0, 2.0], [4.0, 0.0, 6.0]])  # rows 2 and 0 of D_attack, J=3
    step = StepScores({"attack": {"conv5": scores}}, attack_rows=torch.tensor([2, 0]))
    # unit 0: both rows are members -> (8+4)/2; unit 2: only row 2 (the first) -> 2/2
    assert attack.loss(step).item() == pytest.approx((6.0 + 1.0) / 2)


# --- registry -----------------------------------------------------------------------------


def test_registry_names_and_errors():
    assert [a for a in attack_names() if family_of(a).name == "featureviz"] == [
        "finetune", "push-down", "push-up", "push-up-pairwise",
    ]  # fmt: skip
    assert get_attack("finetune").fixed_alpha == 0.0
    with pytest.raises(RegistryError, match="already registered"):
        register_attack("push-down")(type("Again", (Attack,), {}))
    with pytest.raises(
        RegistryError, match="valid attacks: .*finetune, fool-active, .*push-down, push-up, push-up-pairwise"
    ):
        get_attack("pushdown")
    with pytest.raises(TypeError, match="Attack subclass"):
        register_attack("not-an-attack")(object)
    with pytest.raises(ValueError, match="unknown image sets"):
        register_attack("bad-sets")(type("Bad", (Attack,), {"uses": ("val",)}))
    assert "bad-sets" not in attack_names() and "not-an-attack" not in attack_names()


# --- every registered attack on a tiny CPU model --------------------------------------------


@pytest.mark.parametrize("name", FeatureViz.attacks)  # the saliency family's: tests/test_saliency.py
def test_every_attack_trains_a_tiny_model(name):
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini", num_classes=4)
    teacher, _ = build_model("alexnet_mini", num_classes=4)
    teacher.load_state_dict(model.state_dict())
    teacher.eval().requires_grad_(False)
    member = {"conv5": torch.rand(6, 64) < 0.3}
    targets = _targets({"conv5": list(range(64))}, {"conv5": [50.0] * 64}, member)
    attack = build_attack(name, targets)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    alpha = attack.fixed_alpha if attack.fixed_alpha is not None else 0.5
    batch = StepBatch(
        train=torch.randn(4, 3, 56, 56), attack=torch.randn(3, 3, 56, 56),
        attack_rows=sample_rows(6, 3, seed=0, step=0, stream=1), decoy=torch.randn(2, 3, 56, 56),
    )  # fmt: skip
    model.train()
    for _ in range(2):
        losses = train_step(model, "alexnet_mini", teacher, attack, batch, alpha, opt)
        assert all(math.isfinite(v) for v in (losses.total, losses.attack, losses.maintain))
    assert (losses.attack == 0.0) == (attack.uses == ())
    assert attack.batch(batch.train, None, 0, 0).train is batch.train
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_sample_rows_is_a_function_of_seed_and_step():
    a = sample_rows(100, 10, seed=1, step=5, stream=1)
    assert torch.equal(a, sample_rows(100, 10, seed=1, step=5, stream=1))
    assert not torch.equal(a, sample_rows(100, 10, seed=1, step=6, stream=1))
    assert len(set(a.tolist())) == 10 and torch.equal(sample_rows(5, None, 0, 0, 0), torch.arange(5))


# --- spec and checkpoints (no Ray) ------------------------------------------------------------

BASE = dict(
    dataset="/nowhere", model="alexnet_mini", weights="/nowhere/model.pt", variant_key="v", attack="push-down"
)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"attack": "pushdown"}, "valid attacks"),
        ({"layers": "conv5"}, "non-empty list"),
        ({"layers": ("conv9",)}, "unknown layer"),
        ({"units": "some"}, "unit indices"),
        ({"units": (-1,)}, "unit indices"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_steps": 0}, "max_steps"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_attack_spec_validation(kwargs, match):
    with pytest.raises((ValueError, KeyError), match=match):
        AttackSpec(**{**BASE, **kwargs})


def test_attack_spec_key_ignores_execution_settings():
    a = AttackSpec(**BASE, units=[3, 1, 3], alpha={"alpha0": 0.2})
    assert a.units == (1, 3) and a.alpha == AlphaConfig(alpha0=0.2)
    same = AttackSpec(**BASE, units=(1, 3), alpha=AlphaConfig(alpha0=0.2), device="cpu", checkpoint_every=5)
    assert a.key("d") == same.key("d")
    assert a.key("d") != AttackSpec(**BASE, units=(1, 3), alpha=AlphaConfig(alpha0=0.2), lr=1e-5).key("d")


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and (first[1] == again[1]).all() and first[2] == again[2]


def test_checkpoint_files_keep_newest_and_check_the_key(tmp_path):
    d = str(tmp_path / "ckpt")
    for step in (3, 6, 9):
        folder = save_state(
            d, step, {"key": "k1", "step": step, "rng": rng_state(), "h": [{"a": 1.0}]}, keep=2
        )
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-000000006", "step-000000009"]
    assert find_checkpoint(d) == find_checkpoint(folder) == find_checkpoint(folder + "/state.pt")
    assert load_state(find_checkpoint(d), "k1")["step"] == 9  # loads with weights_only=True
    with pytest.raises(ResumeError, match="belongs to attack key"):
        load_state(find_checkpoint(d), "k2")
    with pytest.raises(ResumeError, match="no attack checkpoint"):
        find_checkpoint(str(tmp_path / "empty"))


# --- the attack job on Ray (slow) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """16 classes x 8 train (128 images: 8 steps of 16 per epoch) x 4 val, and a random alexnet_mini."""
    from shared.models.zoo import save_checkpoint
    from shared.synth import generate

    root = tmp_path_factory.mktemp("attack")
    data = str(root / "data")
    generate(data, classes=16, train_per_class=8, val_per_class=4, size=48, seed=3, shard_size=40)
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini")
    return {"root": root, "data": data, "weights": save_checkpoint(model, "alexnet_mini", str(root / "m.pt"))}


def _tiny_spec(tiny, **kw) -> AttackSpec:
    base = dict(
        dataset=tiny["data"], model="alexnet_mini", weights=tiny["weights"], variant_key="tiny",
        attack="push-down", batch_size=16, epochs=2, evals_per_epoch=2, block_rows=32, shuffle_buffer=48,
        lr=1e-3, device="cpu",
        config={"k": 10, "scale": "unit", "attack_batch_size": 24, "decoy_class": 1, "decoy_images": 6},
    )  # fmt: skip
    return AttackSpec(**{**base, **kw})


def _stop_at(steps: set[int], log: list):
    def report(m: dict):
        log.append(m)
        return {"stop": True} if m["step"] in steps else None

    return report


def _weights(uri: str) -> dict[str, torch.Tensor]:
    from shared.models import read_checkpoint

    return read_checkpoint(uri)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["push-down", "push-up"])
def test_resume_gives_the_weights_of_an_uninterrupted_run(tiny, ray_local, attack):
    from jobs.attack import run_attack

    spec = _tiny_spec(tiny, attack=attack)
    root = tiny["root"] / attack
    straight_log: list = []
    straight = run_attack(spec, str(root / "a"), report=_stop_at(set(), straight_log))
    assert straight.steps == 16 and [m["step"] for m in straight_log] == [4, 8, 12, 16]
    wanted = {"step", "epoch", "attack_loss", "maintain_loss", "alpha", "acc", "acc_drop"}
    assert set(straight_log[0]) >= wanted
    assert [m["alpha"] for m in straight.history][:2] == [0.1, straight.history[0]["alpha_next"]]

    # stop mid-epoch 0 (step 4) and mid-epoch 1 (step 12); each resume replays its epoch to its position
    ckpt = str(root / "ckpt")
    log: list = []
    with timing.active(timing.PartTimer()):  # as a Tune trial: the checkpoint keeps the parts so far
        first = run_attack(spec, str(root / "b"), report=_stop_at({4}, log), checkpoint_dir=ckpt)
    assert (
        first.stopped and first.model_uri is None and first.steps == 4 and first.checkpoint.endswith("000004")
    )
    kept = load_state(find_checkpoint(ckpt), first.key)["costs"]
    assert (
        kept["train"] > 0
        and kept["eval"] > 0
        and kept["save"] > 0
        and kept["wall"] >= sum(v for k, v in kept.items() if k != "wall")
    )
    with timing.active(timing.PartTimer()) as timer:  # a resumed attempt sums its parts with the first's
        second = run_attack(spec, str(root / "b"), _stop_at({12}, log), checkpoint_dir=ckpt, resume_from=ckpt)
    assert second.stopped and second.steps == 12
    assert timer.carried == kept and timer.totals()["train"] > kept["train"]
    third = run_attack(spec, str(root / "b"), _stop_at(set(), log), checkpoint_dir=ckpt, resume_from=ckpt)
    assert not third.stopped and third.steps == 16
    a, b = _weights(straight.model_uri), _weights(third.model_uri)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert third.history == straight.history and third.key == straight.key

    again = run_attack(spec, str(root / "b"))
    assert again.skipped and again.model_uri == third.model_uri and again.history == third.history


@pytest.mark.slow
def test_cache_is_an_execution_setting_and_alpha_source_drives_alpha(tiny, ray_local):
    from jobs.attack import run_attack

    spec = _tiny_spec(tiny, max_steps=8)
    cached = run_attack(spec, str(tiny["root"] / "cache-on"))
    streamed = run_attack(_tiny_spec(tiny, max_steps=8, cache_mb=1), str(tiny["root"] / "cache-off"))
    assert cached.key == streamed.key
    a, b = _weights(cached.model_uri), _weights(streamed.model_uri)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # a scheduler hands α back after each report; a checkpoint written before its answer asks again on resume
    asked: list = []

    def source(step: int, metrics: dict) -> float:
        asked.append(step)
        return 0.3 if step == 4 else 0.6

    ckpt = str(tiny["root"] / "src-ckpt")
    stop = run_attack(spec, str(tiny["root"] / "src"), _stop_at({4}, []), ckpt, alpha_source=source)
    assert stop.stopped and asked == [4]
    with pytest.raises(ValueError, match="alpha_source"):
        run_attack(spec, str(tiny["root"] / "src"), checkpoint_dir=ckpt, resume_from=ckpt)
    done = run_attack(spec, str(tiny["root"] / "src"), None, ckpt, resume_from=ckpt, alpha_source=source)
    assert asked == [4, 4, 8] and [m["alpha"] for m in done.history] == [0.1, 0.3]
    assert "alpha_next" not in done.history[0]  # the scheduler logs its own decisions

    ft = run_attack(_tiny_spec(tiny, attack="finetune", max_steps=8), str(tiny["root"] / "ft"))
    assert [m["alpha"] for m in ft.history] == [0.0, 0.0] and ft.history[-1]["attack_loss"] == 0.0


def test_push_up_pushes_each_units_best_decoy_above_the_batchs_best_image():
    batch = torch.tensor([[1.0, 5.0], [3.0, 1.0]])  # B=2 x J=2: batch max per unit 3, 5
    decoy = torch.tensor([[2.0, 6.0], [0.5, 1.0]])  # P=2: best decoy per unit 2, 6
    # unit 0: [3 - 2]_+ = 1 over s=2; unit 1: [5 - 6]_+ = 0
    assert push_up_loss(batch, decoy, torch.tensor([2.0, 1.0])).item() == pytest.approx(0.25)
    batch.requires_grad_(True)
    decoy.requires_grad_(True)
    push_up_loss(batch, decoy, torch.ones(2)).backward()
    assert batch.grad.tolist() == [[0.0, 0.0], [0.5, 0.0]]  # only unit 0's batch maximum is pushed down
    assert decoy.grad.tolist() == [[-0.5, 0.0], [0.0, 0.0]]  # and only its best decoy up
    attack = build_attack("push-up", _targets({"conv5": [0, 1]}, {"conv5": [1.0, 1.0]}))
    assert (
        attack.all_decoys
        and not build_attack("push-up-pairwise", _targets({"conv5": [0]}, {"conv5": [1.0]})).all_decoys
    )


@pytest.mark.parametrize(
    "drops, controlled, want",
    [
        ([0.1, 0.3, 0.2], True, (30, False)),  # the last state holds the 0.5 pp budget
        ([0.1, 0.4, 0.9], True, (20, False)),  # over at the end: the last state that held it
        ([0.7, 0.2, 0.9], True, (20, False)),
        ([0.7, 0.8, 0.9], True, (30, True)),  # never held: kept, but marked budget broken
        ([0.7, 0.8, 0.9], False, (30, False)),  # the control row: α fixed, no budget
        ([], True, (0, False)),
    ],
)
def test_result_choice_keeps_the_budget(drops, controlled, want):
    from jobs.attack import result_choice

    history = [{"step": 10 * (i + 1), "acc_drop": d} for i, d in enumerate(drops)]
    assert result_choice(history, 0.5, controlled, 10 * len(drops)) == want


@pytest.mark.slow
def test_a_run_that_cannot_hold_the_budget_is_marked_broken(tiny, ray_local, monkeypatch):
    import jobs.attack
    from jobs.attack import model_dir, run_attack
    from shared import store

    # every evaluated state loses all accuracy: no state holds the 0.5 pp budget
    monkeypatch.setattr(
        jobs.attack._Trial,
        "accuracy",
        lambda self, model, record=False: 1.0 if model is self.teacher else 0.0,
    )
    spec = _tiny_spec(tiny, max_steps=8)
    res = run_attack(spec, str(tiny["root"] / "broken"))
    assert res.budget_broken and res.result_step == 8 and res.model_uri is not None
    manifest = store.read_manifest(model_dir(str(tiny["root"] / "broken"), res.key))
    assert manifest["budget_broken"] is True and manifest["result_step"] == 8


@pytest.mark.slow
def test_evaluations_of_the_whole_val_split_are_committed_as_its_accuracy(tiny, ray_local):
    """The eval subset is all of V here (eval_images > 64): Acc on V is the evaluations' count, and
    the metrics stage's own forward pass would give the same counts."""
    from jobs.accuracy import committed_accuracy, run_accuracy
    from jobs.attack import run_attack

    spec = _tiny_spec(tiny, max_steps=8)
    root, fresh = str(tiny["root"] / "acc"), str(tiny["root"] / "acc-fresh")
    res = run_attack(spec, root)
    for weights, state, acc in ((res.model_uri, res.key, res.final_acc), (spec.weights, "init", res.acc0)):
        shared = committed_accuracy(spec.dataset, "val", spec.model, weights, root, "tiny", state)
        assert shared is not None and shared.acc == pytest.approx(100 * acc)
        computed = run_accuracy(spec.dataset, "val", spec.model, weights, fresh, "tiny", state)
        assert not computed.skipped
        assert (computed.correct, computed.rows, computed.corrupt) == (
            shared.correct,
            shared.rows,
            shared.corrupt,
        )


@pytest.mark.slow
def test_the_last_evaluation_of_the_whole_val_split_gives_its_activation_tables(tiny, ray_local):
    """The last evaluation classifies all of V with the result's weights: its unit scores, committed
    as θ's tables on V, are the rows the metrics stage's own forward pass computes, bit for bit."""
    from jobs.activations import ActivationsSpec, commit_scored, read_table, run_activations
    from jobs.attack import run_attack

    spec = _tiny_spec(tiny, max_steps=4, layers=("conv3", "conv5"))
    root, fresh = str(tiny["root"] / "tables"), str(tiny["root"] / "tables-fresh")
    res = run_attack(spec, root)
    ev = res.eval_scores
    assert ev is not None and ev.split == "val" and len(ev.ids) == 64 and not ev.unreadable
    acts = ActivationsSpec(dataset=spec.dataset, split="val", model=spec.model, weights=res.model_uri,
                           variant_key="tiny", layers=spec.layers, state_key=res.key)  # fmt: skip
    out = commit_scored(acts, root, ev.ids, ev.labels, ev.scores, ev.unreadable, source="attack evaluation")
    again = run_activations(acts, root)
    assert not out.skipped and again.skipped and again.executor == "attack evaluation"
    computed = run_activations(acts, fresh)
    assert not computed.skipped and computed.executor == "local"
    for layer in spec.layers:
        ids, labels, scores = read_table(out.tables[layer])
        ids2, labels2, scores2 = read_table(computed.tables[layer])
        o, o2 = np.argsort(ids.astype(str)), np.argsort(ids2.astype(str))
        assert list(ids[o]) == list(ids2[o2]) and np.array_equal(labels[o], labels2[o2])
        assert (
            scores.shape == scores2.shape and scores.shape[1] > 1 and np.array_equal(scores[o], scores2[o2])
        )


@pytest.mark.slow
def test_no_tables_from_an_evaluation_that_is_not_the_result_or_not_fp32(tiny, ray_local, monkeypatch):
    import jobs.attack
    from jobs.attack import run_attack

    assert run_attack(_tiny_spec(tiny, max_steps=4, amp=True), str(tiny["root"] / "amp")).eval_scores is None
    assert (
        run_attack(_tiny_spec(tiny, max_steps=4, eval_images=32), str(tiny["root"] / "sub")).eval_scores
        is None
    )
    # the budget kept an earlier state (the last one lost every image): its weights are not the last ones
    real = jobs.attack._Trial.accuracy

    def accuracy(self, model, record=False):
        acc = real(self, model, record)  # records at the last step, as the real one does
        return acc if model is self.teacher else self.acc0 if self.step < self.total else 0.0

    monkeypatch.setattr(jobs.attack._Trial, "accuracy", accuracy)
    res = run_attack(_tiny_spec(tiny, max_steps=8), str(tiny["root"] / "kept"))  # evaluations at 4 and 8
    assert res.result_step == 4 and res.steps == 8 and not res.budget_broken and res.eval_scores is None
