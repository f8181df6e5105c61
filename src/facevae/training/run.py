"""`facevae train`: the training loop (facevae.training.loop) inside an MLflow run when tracking is on.

Under torchrun every process calls train(); rank 0 alone tracks the run, writes the files and
registers the model, and the others return once it has (facevae.training.distributed)."""

from __future__ import annotations

from pathlib import Path

from facevae.core.config import Params
from facevae.core.errors import FaceVAEError
from facevae.tracking.records import EpochCallback, EpochReport, TrainResult
from facevae.tracking.runs import RunOptions, tracked_run, write_run_file
from facevae.training.distributed import barrier, is_main_process, process_group
from facevae.training.loop import resolve_device, run_training

# ---- public entry point -------------------------------------------------------------------------


def train(
    data: Path,
    actor: str,
    params: Params,
    out_dir: Path,
    resume: bool = False,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    run_options: "RunOptions | None" = None,
) -> TrainResult:
    """Train (or with `resume`, continue) a VAE on `data`; write model.pt & co. to `out_dir`.

    With `params.mlflow.enabled` the run is tracked in MLflow and the model registered
    (`run_options` nests it under a parent run or skips the model, as sweep trials do).
    `on_epoch` sees every epoch after MLflow has logged it; what it raises stops training.
    """
    data, out_dir = Path(data), Path(out_dir)
    device = resolve_device(params.train.device)  # a wrong device or missing data fails before an MLflow run exists
    if not data.is_file():
        raise FaceVAEError("dataset not found; run `facevae build` (or `dvc repro`) first", data)
    with process_group(device):
        if is_main_process():
            result = train_and_track(data, actor, params, out_dir, resume, progress, on_epoch, run_options)
        else:
            result = run_training(data, actor, params, out_dir, resume=resume, progress=False)
        barrier()  # the other ranks return once rank 0 has logged and registered the model
    return result


def train_and_track(
    data: Path, actor: str, params: Params, out_dir: Path, resume: bool, progress: bool,
    on_epoch: EpochCallback | None, run_options: "RunOptions | None",
) -> TrainResult:
    if not params.mlflow.enabled:
        result = run_training(data, actor, params, out_dir, resume=resume, progress=progress, on_epoch=on_epoch)
        write_run_file(out_dir, {"tracking_uri": None, "run_id": None})  # so evaluate logs to no older run
        return result

    options = run_options or RunOptions()
    with tracked_run(data, actor, params, out_dir, resume=resume, options=options) as tracker:
        log_epoch = chain_callbacks(tracker.log_epoch, on_epoch)
        result = run_training(data, actor, params, out_dir, resume, progress, on_epoch=log_epoch)
        result.run_id = tracker.run_id
        if options.log_model:
            tracker.log_final_model(result)
    return result


def chain_callbacks(*callbacks: EpochCallback | None) -> EpochCallback:
    def each(report: EpochReport) -> None:
        for callback in callbacks:
            if callback is not None:
                callback(report)

    return each
