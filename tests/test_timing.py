"""A trial's cost split into parts (shared.timing): parts never sum past the wall time, nesting,
earlier attempts carried over, and no timer, no cost."""

from __future__ import annotations

import pytest

from shared import timing
from shared.timing import PartTimer, share_outside

PART_KEYS = {"train_s", "eval_s", "tables_s", "metrics_s", "other_s", "wall_s"}


def _spin(n: int = 20_000) -> int:
    return sum(i * i for i in range(n))  # some work, no sleep: the test asserts no durations


def test_nested_parts_charge_the_innermost_and_sum_to_at_most_the_wall():
    t = PartTimer()
    with timing.active(t):
        _spin()
        with timing.part("train"):
            _spin()
            with timing.part("eval"):  # an evaluation inside the training loop is not training
                _spin()
            _spin()
        with timing.part("save"):
            _spin()
    c = t.costs()
    assert set(c) >= PART_KEYS | {"save_s"} and c["tables_s"] == c["metrics_s"] == 0.0
    named = sum(v for k, v in c.items() if k != "wall_s")
    assert named <= c["wall_s"] + 1e-9 and abs(named - c["wall_s"]) <= 1e-6  # other_s is the rest
    assert all(v >= 0 for v in c.values()) and c["train_s"] > 0 and c["eval_s"] > 0
    assert 0.0 <= share_outside(c) <= 1.0


def test_a_resumed_attempt_carries_the_earlier_parts():
    first = PartTimer()
    with first.part("train"):
        _spin()
    kept = first.totals()  # what a checkpoint stores
    second = PartTimer(carried=kept)
    with second.part("train"):
        _spin()
    c = second.costs()
    assert c["train_s"] > kept["train"] and c["wall_s"] > kept["wall"]
    assert sum(v for k, v in c.items() if k not in ("wall_s", "other_s")) <= c["wall_s"]
    second.carry({"bogus": "x", "flag": True, "neg": -1.0})  # not seconds: ignored
    assert "bogus_s" not in second.costs() and "neg_s" not in second.costs()


def test_without_an_active_timer_parts_do_nothing_and_names_are_checked():
    assert timing.current() is None
    with timing.part("train"):  # no timer: a no-op, not an error
        pass
    t = PartTimer()
    for bad in ("", "wall", "other"):
        with pytest.raises(ValueError, match="part name"):
            with t.part(bad):
                pass
    with timing.active(t):
        assert timing.current() is t
    assert timing.current() is None
