"""Sweeps: the search space (sweep.space) and the parameters one trial trains with."""

from __future__ import annotations

import json
from typing import Any

from optuna.trial import Trial

from facevae.core.config import (
    DERIVED_TUNABLES,
    Params,
    Tunable,
    flatten,
    validate_params,
)
from facevae.core.errors import FaceVAEError
from facevae.model.vae import check_config

WIDTH = "model.width_multiplier"
WIDTH_TARGETS = ("model.enc_channels", "model.dec_channels", "model.dec_hidden")


# ---- the search space ---------------------------------------------------------------------------


def choice_label(value: Any) -> Any:
    """Optuna's categorical choices must be scalars: lists (e.g. kernel sizes) travel as JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def choice_value(label: Any, tunable: Tunable) -> Any:
    for choice in tunable.choices or []:
        if choice_label(choice) == label:
            return choice
    return label


def suggest(trial: Trial, space: dict[str, Tunable]) -> dict[str, Any]:
    """One value per tunable (a retried trial gets its original values back)."""
    values = {}
    for key, tunable in space.items():
        if tunable.kind == "categorical":
            label = trial.suggest_categorical(key, [choice_label(c) for c in tunable.choices])
            values[key] = choice_value(label, tunable)
        elif tunable.kind == "int":
            values[key] = trial.suggest_int(key, int(tunable.low), int(tunable.high), log=tunable.log)
        else:
            values[key] = trial.suggest_float(key, float(tunable.low), float(tunable.high), log=tunable.log)
    return values


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *sections, name = key.split(".")
    node = raw
    for section in sections:
        node = node.setdefault(section, {})
    node[name] = value


def scale_widths(model: dict[str, Any], multiplier: float) -> None:
    """model.width_multiplier: every channel count and the decoder's hidden size, at least 1."""
    model["enc_channels"] = [max(1, round(c * multiplier)) for c in model["enc_channels"]]
    model["dec_channels"] = [max(1, round(c * multiplier)) for c in model["dec_channels"]]
    model["dec_hidden"] = max(1, round(model["dec_hidden"] * multiplier))


def resolved_params(base: Params, values: dict[str, Any]) -> Params:
    """`base` with the tuned `values` applied (derived tunables expanded), validated."""
    raw = base.model_dump(mode="json")
    for key, value in values.items():
        if key not in DERIVED_TUNABLES:
            set_dotted(raw, key, value)
    if WIDTH in values:
        scale_widths(raw["model"], float(values[WIDTH]))
    return validate_params(raw, source="sweep.space")


def trial_params(base: Params, values: dict[str, Any], epochs: int, threads: int) -> Params:
    """What one trial trains: the tuned values, sweep.epochs epochs, face grids only at the end.
    Trials compare VAEs, so they skip the decoder phase (train.decoder_epochs), which leaves the
    latent space alone and would blur the pruner's epoch budget."""
    params = resolved_params(base, values)
    params.train.epochs = epochs
    params.train.decoder_epochs = 0
    params.train.log_images_every = epochs
    if threads and not params.train.num_threads:
        params.train.num_threads = threads
    return params


def tuned_keys(space: dict[str, Tunable]) -> list[str]:
    """The parameters a sweep sets: the space's keys, derived tunables replaced by what they change."""
    keys: list[str] = []
    for key in space:
        keys.extend(WIDTH_TARGETS if key == WIDTH else [key])
    return list(dict.fromkeys(keys))


def tuned_values(params: Params, space: dict[str, Tunable]) -> dict[str, Any]:
    flat = flatten(params)
    return {key: flat[key] for key in tuned_keys(space)}


def check_space(base: Params) -> None:
    """Every bound and choice of the space must give a valid model, before any trial runs."""

    for key, tunable in base.sweep.space.items():
        candidates = tunable.choices if tunable.kind == "categorical" else [tunable.low, tunable.high]
        for value in candidates:
            try:
                check_config(resolved_params(base, {key: value}).model)
            except FaceVAEError as exc:
                raise FaceVAEError(f"sweep.space {key} = {value!r} gives no valid model: {exc}") from None


def baseline_values(base: Params, space: dict[str, Tunable]) -> dict[str, Any]:
    """The current config as Optuna parameters (keys whose value the space cannot express are left out)."""
    flat = flatten(base)
    values = {}
    for key, tunable in space.items():
        value = 1.0 if key == WIDTH else flat[key]
        if tunable.kind == "categorical":
            if choice_label(value) in [choice_label(c) for c in tunable.choices]:
                values[key] = choice_label(value)
        elif tunable.low <= value <= tunable.high:
            values[key] = value
    return values
