"""Sweeps: the study's name and storage, the sampler and pruner, opening the study."""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from facevae.core.config import OBJECTIVES, SweepConfig
from facevae.core.errors import FaceVAEError
from facevae.sweep.interrupt import guard_storage
from facevae.sweep.trial import SweepJob

# ---- names and storage --------------------------------------------------------------------------


def default_study_name(actor: str) -> str:
    return f"facevae-{actor}"


def directions(objectives: list[str]) -> list[str]:
    return [OBJECTIVES[name] for name in objectives]


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def masked_url(url: str) -> str:
    """The storage URL without its password, for logs and reports."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: say nothing about it
        return "<storage>"


def open_storage(url: str, cfg: SweepConfig) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats: a trial silent for the grace period is failed and retried."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several workers write to one file
    with optuna_warnings_off():
        try:
            return guard_storage(optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=cfg.heartbeat_s,
                grace_period=cfg.grace_s or 2 * cfg.heartbeat_s,
                heartbeat_stale_trial_callback=retry_callback(cfg),
            ))
        except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or an unreachable server
            raise FaceVAEError(f"cannot open the Optuna storage {masked_url(url)}: {exc.__class__.__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def retry_callback(cfg: SweepConfig) -> Callable[[optuna.Study, FrozenTrial], None]:
    with optuna_warnings_off():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=cfg.max_retry)


@contextmanager
def optuna_warnings_off() -> Iterator[None]:
    """Optuna flags heartbeats, retries and ask() under heartbeats as experimental: we know."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def build_sampler(cfg: SweepConfig, seed: int) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.sampler_startup_trials)


def trial_seed(cfg: SweepConfig, number: int) -> int:
    """Each trial samples with its own seed: reproducible, and two workers never draw alike."""
    return int(np.random.SeedSequence([cfg.seed % 2**32, number]).generate_state(1)[0])


def build_pruner(cfg: SweepConfig, multi: bool) -> optuna.pruners.BasePruner:
    if multi or cfg.pruner == "none":  # Optuna cannot prune multi-objective trials
        return optuna.pruners.NopPruner()
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, cfg.pruner_warmup_epochs), max_resource=cfg.epochs)
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.pruner_startup_trials, n_warmup_steps=cfg.pruner_warmup_epochs
    )


def open_study(job: "SweepJob", storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study, or load it (resume, another worker); its objectives must match."""
    cfg = job.params.sweep
    study = optuna.create_study(
        storage=storage,
        study_name=job.study_name,
        directions=directions(job.objectives),
        sampler=build_sampler(cfg, cfg.seed),
        pruner=build_pruner(cfg, job.multi),
        load_if_exists=True,
    )
    recorded = study.user_attrs.get("objectives")
    if recorded is None:
        study.set_user_attr("objectives", job.objectives)
        study.set_user_attr("actor", job.actor)
    elif recorded != job.objectives:
        raise FaceVAEError(
            f"study {job.study_name} optimises {', '.join(recorded)}, not {', '.join(job.objectives)}: "
            "pass another --study name (or drop/add --multi)"
        )
    return study
