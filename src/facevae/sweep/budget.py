"""Sweeps: counting a study's trials against the budget (retried and given-back trials left out)."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

# ---- counting trials against the budget ---------------------------------------------------------


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Trials that were failed for a silent worker (or an interrupt) and run again under a new number."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def is_placeholder(trial: FrozenTrial) -> bool:
    """A trial a worker asked for but gave back (the budget was full): queued, with nothing fixed."""
    return trial.state == TrialState.WAITING and not trial.params and "fixed_params" not in trial.system_attrs


@dataclass
class Census:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    retried: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    def describe(self) -> str:
        extra = "".join(
            f", {n} {what}" for n, what in ((self.running, "running"), (self.waiting, "queued"),
                                           (self.retried, "retried after their worker stopped")) if n
        )
        return f"{self.finished} trials: {self.complete} complete, {self.pruned} pruned, {self.failed} failed{extra}"


def census(trials: list[FrozenTrial]) -> Census:
    retried = retried_numbers(trials)
    counts = Census(retried=len(retried))
    for t in trials:
        if t.number in retried or is_placeholder(t):
            continue
        if t.state == TrialState.COMPLETE:
            counts.complete += 1
        elif t.state == TrialState.PRUNED:
            counts.pruned += 1
        elif t.state == TrialState.FAIL:
            counts.failed += 1
        elif t.state == TrialState.RUNNING:
            counts.running += 1
        else:
            counts.waiting += 1
    return counts


def place_in_budget(trials: list[FrozenTrial], number: int) -> int:
    """How many running or finished trials (retried ones not counted) come before trial `number`."""
    retried = retried_numbers(trials)
    return sum(
        1 for t in trials
        if t.number < number and t.number not in retried and (t.state.is_finished() or t.state == TrialState.RUNNING)
    )


def all_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False)
