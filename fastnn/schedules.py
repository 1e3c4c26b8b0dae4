"""Learning-rate schedules: plain, picklable callables ``schedule(step) -> lr``.

``step`` is a count from 0 (of epochs or of batches: the caller chooses, e.g. the
LearningRateScheduler callback). Each schedule holds its base learning rate, so its value is
the learning rate itself, and has ``get_config()``; :func:`schedule_from_config` rebuilds it.
Schedules compose: ``linear_warmup(100, then=cosine_annealing(0.1, T_max=900))``.

Where torch.optim.lr_scheduler has an equivalent the values agree with it at every step:
StepLR (:class:`StepDecay`), MultiStepLR, ExponentialLR, CosineAnnealingLR (up to ``T_max``;
afterwards this one stays at ``eta_min`` instead of rising again), CosineAnnealingWarmRestarts
(``restarts=True``), LinearLR followed by another schedule (SequentialLR), and OneCycleLR.
ReduceLROnPlateau depends on a monitored metric, so it is a callback (fastnn.callbacks).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, ClassVar

from ._validation import check_choice, check_float, check_int


def _check_lr(value, argument: str = "lr") -> float:
    return check_float(value, argument, 0.0, None)


def _check_step(step) -> int:
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(f"step must be a non-negative integer, got {type(step).__name__} {step!r}")
    step = step.__index__()
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step


class Schedule:
    """Base class: ``schedule(step) -> lr`` (a float) and ``get_config()``; subclasses implement
    ``_lr(step)`` and set the class attribute ``name``.

    Examples
    --------
    >>> from fastnn.schedules import Schedule
    >>> class Halving(Schedule):
    ...     name = "halving"
    ...     def _lr(self, step):
    ...         return 0.5 ** step
    >>> Halving()(3)
    0.125
    """

    name: ClassVar[str] = ""

    def __call__(self, step: int) -> float:
        return float(self._lr(_check_step(step)))

    def _lr(self, step: int) -> float:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def get_config(self) -> dict[str, Any]:
        """The schedule's description; :func:`schedule_from_config` rebuilds it.

        Returns
        -------
        dict
            JSON-able: ``name`` and the constructor's arguments (nested schedules as dicts).

        Examples
        --------
        >>> from fastnn.schedules import StepDecay, schedule_from_config
        >>> config = StepDecay(0.1, step_size=2, gamma=0.5).get_config()
        >>> config
        {'name': 'step_decay', 'lr': 0.1, 'step_size': 2, 'gamma': 0.5}
        >>> schedule_from_config(config)(4)  # 0.1 halved twice
        0.025
        """
        config: dict[str, Any] = {"name": self.name}
        for key, value in self._params().items():
            config[key] = value.get_config() if isinstance(value, Schedule) else value
        return config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._params().items())})"


class Constant(Schedule):
    """The same learning rate at every step.

    Parameters
    ----------
    lr : float
        The learning rate, >= 0.

    Examples
    --------
    >>> from fastnn.schedules import Constant
    >>> Constant(0.1)(1000)
    0.1
    """

    name = "constant"

    def __init__(self, lr: float):
        self.lr = _check_lr(lr)

    def _lr(self, step):
        return self.lr


class StepDecay(Schedule):
    """``lr * gamma ** (step // step_size)``, as torch's StepLR.

    Parameters
    ----------
    lr : float
        The learning rate at step 0.
    step_size : int
        Steps between two decays.
    gamma : float, default 0.1
        The factor of each decay.

    Examples
    --------
    >>> from fastnn.schedules import StepDecay
    >>> s = StepDecay(1.0, step_size=10, gamma=0.5)
    >>> s(0), s(9), s(10), s(25)
    (1.0, 1.0, 0.5, 0.25)
    """

    name = "step_decay"

    def __init__(self, lr: float, *, step_size: int, gamma: float = 0.1):
        self.lr = _check_lr(lr)
        self.step_size = check_int(step_size, "step_size", 1)
        self.gamma = check_float(gamma, "gamma", 0.0, None, low_inclusive=False)

    def _lr(self, step):
        return self.lr * self.gamma ** (step // self.step_size)


class MultiStep(Schedule):
    """``lr * gamma ** (number of milestones <= step)``, as torch's MultiStepLR.

    Parameters
    ----------
    lr : float
        The learning rate at step 0.
    milestones : sequence of int
        Increasing steps at which the rate is multiplied by ``gamma``.
    gamma : float, default 0.1
        The factor at each milestone.

    Examples
    --------
    >>> from fastnn.schedules import MultiStep
    >>> s = MultiStep(1.0, milestones=[2, 5], gamma=0.1)
    >>> [round(s(t), 3) for t in range(7)]
    [1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01]
    """

    name = "multi_step"

    def __init__(self, lr: float, *, milestones, gamma: float = 0.1):
        self.lr = _check_lr(lr)
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"milestones must be a list of increasing step numbers, got {milestones!r}")
        self.milestones = [check_int(m, "milestones", 0) for m in milestones]
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {self.milestones}; sort them")
        self.gamma = check_float(gamma, "gamma", 0.0, None, low_inclusive=False)

    def _lr(self, step):
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, step)


class Exponential(Schedule):
    """``lr * gamma ** step``, as torch's ExponentialLR.

    Parameters
    ----------
    lr : float
        The learning rate at step 0.
    gamma : float
        The factor per step.

    Examples
    --------
    >>> from fastnn.schedules import Exponential
    >>> Exponential(1.0, gamma=0.5)(3)
    0.125
    """

    name = "exponential"

    def __init__(self, lr: float, *, gamma: float):
        self.lr = _check_lr(lr)
        self.gamma = check_float(gamma, "gamma", 0.0, None, low_inclusive=False)

    def _lr(self, step):
        return self.lr * self.gamma**step


def _cosine(start: float, end: float, pct: float) -> float:
    """From ``start`` (pct 0) to ``end`` (pct 1) along half a cosine."""
    return end + (start - end) * (1.0 + math.cos(math.pi * pct)) / 2.0


class CosineAnnealing(Schedule):
    """Half a cosine from lr to eta_min over T_max steps (torch CosineAnnealingLR), then eta_min.

    With ``restarts=True`` the cosine starts again after each period, the i-th period lasting
    ``T_max * T_mult ** i`` steps (SGDR; torch CosineAnnealingWarmRestarts with T_0 = T_max).

    Parameters
    ----------
    lr : float
        The learning rate at step 0.
    T_max : int
        The length of the (first) period in steps.
    eta_min : float, default 0.0
        The learning rate at the end of a period.
    restarts : bool, default False
        Start again after each period instead of staying at ``eta_min``.
    T_mult : int, default 1
        Growth factor of the periods (with ``restarts`` only).

    Raises
    ------
    ValueError
        For ``T_mult != 1`` without ``restarts``, or an argument out of range.

    Examples
    --------
    >>> from fastnn.schedules import CosineAnnealing
    >>> s = CosineAnnealing(1.0, T_max=4)
    >>> [round(s(t), 3) for t in range(6)]
    [1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    >>> round(CosineAnnealing(1.0, T_max=4, restarts=True)(5), 3)
    0.854
    """

    name = "cosine_annealing"

    def __init__(self, lr: float, *, T_max: int, eta_min: float = 0.0, restarts: bool = False, T_mult: int = 1):
        self.lr = _check_lr(lr)
        self.T_max = check_int(T_max, "T_max", 1)
        self.eta_min = check_float(eta_min, "eta_min", 0.0, None)
        if not isinstance(restarts, bool):
            raise TypeError(f"restarts must be True or False, got {restarts!r}")
        self.restarts = restarts
        self.T_mult = check_int(T_mult, "T_mult", 1)
        if T_mult != 1 and not restarts:
            raise ValueError(f"T_mult={T_mult} only applies with restarts=True; pass restarts=True or drop T_mult")

    def _lr(self, step):
        period = self.T_max
        if self.restarts:
            if self.T_mult == 1:
                step %= period
            else:
                while step >= period:
                    step -= period
                    period *= self.T_mult
        return _cosine(self.lr, self.eta_min, min(step, period) / period)


class LinearWarmup(Schedule):
    """Ramp linearly from ``start_factor * then(0)`` to ``then(0)`` over ``warmup_steps``, then ``then``.

    During warmup lr = then(0) * (start_factor + (1 - start_factor) * step / warmup_steps); from
    step ``warmup_steps`` on, lr = then(step - warmup_steps)  (torch SequentialLR of LinearLR and
    ``then``).

    Parameters
    ----------
    warmup_steps : int
        The length of the ramp.
    then : Schedule or float
        The schedule after the ramp (its step 0 comes right after it), or a constant rate.
    start_factor : float, default 0.0
        The fraction of ``then(0)`` at step 0, in [0, 1].

    Examples
    --------
    >>> from fastnn.schedules import LinearWarmup
    >>> s = LinearWarmup(4, then=0.1)
    >>> [round(s(t), 3) for t in range(6)]
    [0.0, 0.025, 0.05, 0.075, 0.1, 0.1]
    """

    name = "linear_warmup"

    def __init__(self, warmup_steps: int, *, then, start_factor: float = 0.0):
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", 1)
        self.then = then if isinstance(then, Schedule) else Constant(_check_lr(then, "then"))
        self.start_factor = check_float(start_factor, "start_factor", 0.0, 1.0)

    def _lr(self, step):
        if step >= self.warmup_steps:
            return self.then(step - self.warmup_steps)
        frac = self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        return self.then(0) * frac


class OneCycle(Schedule):
    """The 1cycle policy (Smith 2018; torch OneCycleLR's learning rate, without its momentum cycling).

    From ``max_lr / div_factor`` up to ``max_lr`` over the first ``pct_start`` of ``total_steps``,
    then down to ``max_lr / div_factor / final_div_factor`` (cosine or linear ``anneal``). With
    ``three_phase`` it returns to the initial lr first and anneals to the minimum in a third
    phase. Steps at or after ``total_steps - 1`` give the final lr.

    Parameters
    ----------
    max_lr : float
        The peak learning rate.
    total_steps : int
        The length of the cycle (at least 2).
    pct_start : float, default 0.3
        The fraction of the steps spent rising, in (0, 1).
    anneal : {"cos", "linear"}, default "cos"
        The shape of each phase.
    div_factor : float, default 25.0
        The initial rate is ``max_lr / div_factor``.
    final_div_factor : float, default 1e4
        The final rate is the initial one divided by this.
    three_phase : bool, default False
        Return to the initial rate before annealing to the final one.

    Raises
    ------
    ValueError
        When a phase would have no steps.

    Examples
    --------
    >>> from fastnn.schedules import OneCycle
    >>> s = OneCycle(1.0, total_steps=11, pct_start=0.5)
    >>> [round(s(t), 2) for t in range(11)]
    [0.04, 0.15, 0.44, 0.76, 0.97, 0.98, 0.83, 0.57, 0.29, 0.08, 0.0]
    """

    name = "one_cycle"

    def __init__(
        self,
        max_lr: float,
        *,
        total_steps: int,
        pct_start: float = 0.3,
        anneal: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
    ):
        self.max_lr = _check_lr(max_lr, "max_lr")
        self.total_steps = check_int(total_steps, "total_steps", 2)
        self.pct_start = check_float(pct_start, "pct_start", 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.anneal = check_choice(anneal, ("cos", "linear"), "anneal")
        self.div_factor = check_float(div_factor, "div_factor", 0.0, None, low_inclusive=False)
        self.final_div_factor = check_float(final_div_factor, "final_div_factor", 0.0, None, low_inclusive=False)
        if not isinstance(three_phase, bool):
            raise TypeError(f"three_phase must be True or False, got {three_phase!r}")
        self.three_phase = three_phase
        initial = self.max_lr / self.div_factor
        low = initial / self.final_div_factor
        up = self.pct_start * self.total_steps - 1
        if three_phase:
            self._phases = [
                (up, initial, self.max_lr),
                (2 * up, self.max_lr, initial),
                (self.total_steps - 1, initial, low),
            ]
        else:
            self._phases = [(up, initial, self.max_lr), (self.total_steps - 1, self.max_lr, low)]
        ends = [p[0] for p in self._phases]
        if any(b <= a for a, b in zip([0.0, *ends], ends)):
            raise ValueError(
                f"pct_start={pct_start} with total_steps={total_steps} leaves a phase with no "
                f"steps; raise total_steps or move pct_start away from 0 and 1"
            )

    def _lr(self, step):
        start_step = 0.0
        for i, (end_step, start_lr, end_lr) in enumerate(self._phases):
            if step <= end_step or i == len(self._phases) - 1:
                pct = min(1.0, (step - start_step) / (end_step - start_step))
                if self.anneal == "cos":
                    return _cosine(start_lr, end_lr, pct)
                return start_lr + (end_lr - start_lr) * pct
            start_step = end_step
        raise AssertionError("unreachable")


def warmup_cosine(
    lr: float, *, warmup_steps: int, total_steps: int, eta_min: float = 0.0, start_factor: float = 0.0
) -> LinearWarmup:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine down to ``eta_min`` at ``total_steps``.

    Parameters
    ----------
    lr : float
        The peak learning rate.
    warmup_steps : int
        The length of the ramp.
    total_steps : int
        Where the cosine reaches ``eta_min`` (more than ``warmup_steps``).
    eta_min : float, default 0.0
        The final learning rate.
    start_factor : float, default 0.0
        The fraction of ``lr`` at step 0.

    Returns
    -------
    LinearWarmup
        A :class:`LinearWarmup` followed by a :class:`CosineAnnealing`.

    Examples
    --------
    >>> from fastnn.schedules import warmup_cosine
    >>> s = warmup_cosine(1.0, warmup_steps=2, total_steps=6)
    >>> [round(s(t), 3) for t in range(7)]
    [0.0, 0.5, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    warmup_steps = check_int(warmup_steps, "warmup_steps", 1)
    total_steps = check_int(total_steps, "total_steps", warmup_steps + 1)
    return LinearWarmup(
        warmup_steps,
        then=CosineAnnealing(lr, T_max=total_steps - warmup_steps, eta_min=eta_min),
        start_factor=start_factor,
    )


# snake_case names, as used in configs and by get()
constant = Constant
step_decay = StepDecay
multi_step = MultiStep
exponential = Exponential
cosine_annealing = CosineAnnealing
linear_warmup = LinearWarmup
one_cycle = OneCycle

#: The one table of schedules: name -> class (drives get() and schedule_from_config()).
SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (Constant, StepDecay, MultiStep, Exponential, CosineAnnealing, LinearWarmup, OneCycle)
}


def get(name: str | Schedule, *args, **kwargs) -> Schedule:
    """A schedule from its name and arguments.

    Parameters
    ----------
    name : str or Schedule
        A name of :data:`SCHEDULES` or ``"warmup_cosine"``; a Schedule is returned as it is.
    *args, **kwargs
        The schedule's arguments.

    Returns
    -------
    Schedule
        The schedule.

    Raises
    ------
    ValueError
        For an unknown name.

    Examples
    --------
    >>> from fastnn import schedules
    >>> schedules.get("step_decay", 0.1, step_size=5)
    StepDecay(lr=0.1, step_size=5, gamma=0.1)
    """
    if isinstance(name, Schedule):
        return name
    choices = [*list(SCHEDULES), "warmup_cosine"]
    name = check_choice(name, choices, "schedule")
    if name == "warmup_cosine":
        return warmup_cosine(*args, **kwargs)
    return SCHEDULES[name](*args, **kwargs)


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.get_config` (nested schedules included).

    Parameters
    ----------
    config : dict
        A config with its ``name``.

    Returns
    -------
    Schedule
        A new, equal schedule.

    Raises
    ------
    ValueError
        When ``config`` is not a dict with a known ``name``, or lacks the schedule's first
        argument (``lr``, ``max_lr`` or ``warmup_steps``).

    Examples
    --------
    >>> from fastnn import schedules
    >>> s = schedules.LinearWarmup(10, then=schedules.CosineAnnealing(0.1, T_max=90))
    >>> schedules.schedule_from_config(s.get_config())(50) == s(50)
    True
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"a schedule config must be a dict with a 'name' key, got {config!r}")
    name = check_choice(config["name"], SCHEDULES, "schedule")
    kwargs = {k: schedule_from_config(v) if isinstance(v, dict) else v for k, v in config.items() if k != "name"}
    first = "max_lr" if name == "one_cycle" else "warmup_steps" if name == "linear_warmup" else "lr"
    if first not in kwargs:
        raise ValueError(f"the {name!r} schedule config lacks {first!r} (Schedule.get_config() has it), got {config!r}")
    schedule_class: Any = SCHEDULES[name]  # each subclass has its own constructor
    return schedule_class(kwargs.pop(first), **kwargs)


__all__ = [
    "SCHEDULES",
    "Constant",
    "CosineAnnealing",
    "Exponential",
    "LinearWarmup",
    "MultiStep",
    "OneCycle",
    "Schedule",
    "StepDecay",
    "constant",
    "cosine_annealing",
    "exponential",
    "get",
    "linear_warmup",
    "multi_step",
    "one_cycle",
    "schedule_from_config",
    "step_decay",
    "warmup_cosine",
]
