"""Learning-rate schedules: values against torch.optim.lr_scheduler and closed forms, configs,
pickling, composition and bad input."""

from __future__ import annotations

import json
import math
import pickle

import pytest

from fastnn import schedules as S

BASE = 0.1
STEPS = 40

# name -> (fastnn schedule, torch scheduler factory(optimizer) or None)
CASES = {
    "constant": (S.constant(BASE), lambda t, o: t.optim.lr_scheduler.ConstantLR(o, factor=1.0)),
    "step_decay": (
        S.step_decay(BASE, step_size=7, gamma=0.5),
        lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
    ),
    "multi_step": (
        S.multi_step(BASE, milestones=[3, 10, 25], gamma=0.3),
        lambda t, o: t.optim.lr_scheduler.MultiStepLR(o, milestones=[3, 10, 25], gamma=0.3),
    ),
    "exponential": (S.exponential(BASE, gamma=0.93), lambda t, o: t.optim.lr_scheduler.ExponentialLR(o, gamma=0.93)),
    "cosine_annealing": (
        S.cosine_annealing(BASE, T_max=STEPS - 1, eta_min=0.01),
        lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS - 1, eta_min=0.01),
    ),
    "cosine_restarts": (
        S.cosine_annealing(BASE, T_max=5, eta_min=0.001, restarts=True, T_mult=2),
        lambda t, o: t.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=0.001),
    ),
    "cosine_restarts_1": (
        S.cosine_annealing(BASE, T_max=6, restarts=True),
        lambda t, o: t.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=6),
    ),
    "linear_warmup": (
        S.linear_warmup(8, then=S.exponential(BASE, gamma=0.9), start_factor=0.1),
        lambda t, o: t.optim.lr_scheduler.SequentialLR(
            o,
            [
                t.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=8),
                t.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
            ],
            milestones=[8],
        ),
    ),
    "one_cycle": (
        S.one_cycle(1.0, total_steps=STEPS),
        lambda t, o: t.optim.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=STEPS, cycle_momentum=False),
    ),
    "one_cycle_3": (
        S.one_cycle(
            1.0,
            total_steps=STEPS,
            pct_start=0.25,
            anneal="linear",
            three_phase=True,
            div_factor=10.0,
            final_div_factor=100.0,
        ),
        lambda t, o: t.optim.lr_scheduler.OneCycleLR(
            o,
            max_lr=1.0,
            total_steps=STEPS,
            pct_start=0.25,
            anneal_strategy="linear",
            three_phase=True,
            div_factor=10.0,
            final_div_factor=100.0,
            cycle_momentum=False,
        ),
    ),
}


def _torch_lrs(torch, factory):
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=BASE)
    sched = factory(torch, opt)
    lrs = []
    for _ in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch(case):
    torch = pytest.importorskip("torch")
    schedule, factory = CASES[case]
    expected = _torch_lrs(torch, factory)
    got = [schedule(step) for step in range(STEPS)]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_closed_forms():
    assert S.step_decay(1.0, step_size=3, gamma=0.5)(7) == 0.25
    assert S.multi_step(1.0, milestones=[2, 4], gamma=0.1)(4) == pytest.approx(0.01)
    assert S.exponential(2.0, gamma=0.5)(3) == 0.25
    cos = S.cosine_annealing(1.0, T_max=10, eta_min=0.2)
    assert cos(0) == 1.0 and cos(5) == pytest.approx(0.6) and cos(10) == pytest.approx(0.2)
    assert cos(25) == pytest.approx(0.2)  # stays at eta_min after T_max (no rise again)
    restart = S.cosine_annealing(1.0, T_max=4, restarts=True, T_mult=2)
    assert [restart(s) for s in (0, 4, 12, 28)] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert restart(8) == pytest.approx(0.5)  # middle of the second period (4..12)
    warm = S.linear_warmup(4, then=0.8)
    assert [warm(s) for s in range(6)] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 0.8])
    wc = S.warmup_cosine(1.0, warmup_steps=10, total_steps=110, eta_min=0.0)
    assert wc(5) == pytest.approx(0.5) and wc(10) == 1.0 and wc(60) == pytest.approx(0.5)
    assert wc(110) == pytest.approx(0.0, abs=1e-15) and wc(500) == pytest.approx(0.0, abs=1e-15)
    one = S.one_cycle(1.0, total_steps=100)
    assert one(0) == pytest.approx(1.0 / 25) and one(29) == pytest.approx(1.0)
    assert one(99) == pytest.approx(1.0 / 25 / 1e4) and one(1000) == pytest.approx(1.0 / 25 / 1e4)


def test_a_warmup_hands_over_exactly_at_its_last_step():
    """From step ``warmup_steps`` on the rate is ``then``'s own (torch's SequentialLR switches
    there), not the ramp's ``start_factor + (1 - start_factor) * 1``, which may round below 1."""
    then = S.cosine_annealing(0.3, T_max=7)
    warm = S.linear_warmup(5, then=then, start_factor=0.005)
    assert [warm(5 + s) for s in range(8)] == [then(s) for s in range(8)]


@pytest.mark.parametrize("case", list(CASES))
def test_config_and_pickle_round_trip(case):
    schedule = CASES[case][0]
    config = json.loads(json.dumps(schedule.get_config()))
    rebuilt = S.schedule_from_config(config)
    copy = pickle.loads(pickle.dumps(schedule))
    for step in (0, 1, 7, 19, 39):
        assert rebuilt(step) == schedule(step) == copy(step)
    assert rebuilt.get_config() == schedule.get_config()
    assert type(schedule).__name__ in repr(schedule)


def test_get():
    assert isinstance(S.get("exponential", 0.1, gamma=0.9), S.Exponential)
    assert isinstance(S.get("warmup_cosine", 0.1, warmup_steps=2, total_steps=10), S.LinearWarmup)
    sched = S.constant(0.1)
    assert S.get(sched) is sched
    with pytest.raises(ValueError, match="Did you mean 'cosine_annealing'"):
        S.get("cosine_anealing", 0.1, T_max=3)


BAD = [
    (lambda: S.constant(-0.1), "lr"),
    (lambda: S.constant(math.nan), "lr"),
    (lambda: S.step_decay(0.1, step_size=0), "step_size"),
    (lambda: S.step_decay(0.1, step_size=3, gamma=0.0), "gamma"),
    (lambda: S.multi_step(0.1, milestones=[5, 3]), "milestones"),
    (lambda: S.multi_step(0.1, milestones=3), "milestones"),
    (lambda: S.exponential(0.1, gamma=-1.0), "gamma"),
    (lambda: S.cosine_annealing(0.1, T_max=0), "T_max"),
    (lambda: S.cosine_annealing(0.1, T_max=5, T_mult=2), "T_mult"),
    (lambda: S.cosine_annealing(0.1, T_max=5, eta_min=-1.0), "eta_min"),
    (lambda: S.linear_warmup(0, then=0.1), "warmup_steps"),
    (lambda: S.linear_warmup(3, then=0.1, start_factor=2.0), "start_factor"),
    (lambda: S.linear_warmup(3, then=-0.1), "then"),
    (lambda: S.warmup_cosine(0.1, warmup_steps=10, total_steps=10), "total_steps"),
    (lambda: S.one_cycle(1.0, total_steps=100, pct_start=1.0), "pct_start"),
    (lambda: S.one_cycle(1.0, total_steps=100, anneal="cosine"), "anneal"),
    (lambda: S.one_cycle(1.0, total_steps=3, pct_start=0.2), "pct_start"),
]


@pytest.mark.parametrize("make,argument", BAD)
def test_bad_arguments_name_the_argument(make, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        make()


def test_bad_step():
    sched = S.constant(0.1)
    with pytest.raises(ValueError, match="step"):
        sched(-1)
    with pytest.raises(TypeError, match="step"):
        sched(1.5)


@pytest.mark.parametrize(
    "config,first",
    [
        ({"name": "step_decay", "step_size": 2}, "'lr'"),
        ({"name": "one_cycle", "total_steps": 10}, "'max_lr'"),
        ({"name": "linear_warmup", "then": 0.1}, "'warmup_steps'"),
    ],
)
def test_a_config_without_its_first_argument_names_it(config, first):
    """schedule_from_config raised a bare KeyError for a config lacking lr / max_lr / warmup_steps."""
    with pytest.raises(ValueError, match=first):
        S.schedule_from_config(config)
