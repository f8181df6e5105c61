"""Kill -9 soaks (issue 27): the real CLI killed at random points, then rerun; counts what survives.

    python bench/soak.py [--kills 20] [--kinds train,sweep,extract,build,evaluate] [--seed 0] [--keep DIR]

Every kind runs `python -m facevae.cli ...` as subprocesses on small real data in a temp dir
(astronaut crops and clips from scikit-image, as the tests use). For each kind an uninterrupted run
is timed first; each kill then draws its moment from a seeded RNG (--seed) uniformly over that
duration, sends SIGKILL to the whole process group, looks at what the files say about where it
landed, reruns (or resumes), and checks:

- train: `facevae train` (tiny model, a few VAE epochs then a decoder phase with the PatchGAN
  discriminator, MLflow on a SQLite store) killed, then `--resume`: every checkpoint.pt left loads,
  the final model.pt's state_dict is bit-identical to the uninterrupted run's, and the MLflow run
  is the same one (continued) and FINISHED, or a new one when the kill came before the first
  checkpoint (the killed attempt's run must then end KILLED, tagged facevae.restarted_as), and no
  run has two registered versions. A quarter of the kills wait for a
  checkpoint's temp file to appear and kill then (mid-checkpoint write), as a random moment
  almost never lands in that window of a few ms.
- sweep: a throwaway PostgreSQL cluster (tests/servers.py), two `facevae sweep` processes on one
  study; worker B is killed at a random moment, then restarted, while A keeps going. At the end:
  the study has exactly its total of finished trials by facevae's census (retried ones not
  counted), nothing RUNNING or queued, every trial seen COMPLETE is still COMPLETE and has its
  model.pt, and every trial B was running when killed is FAIL (failed by the heartbeat) and was
  queued again (in a later trial's `retry_history`).
- extract / build: `facevae extract` of a clip, `facevae build` of that output, killed mid-run
  (half the time over an older complete output): the output is absent or byte-identical to the
  uninterrupted run's, never partial; the rerun is byte-identical.
- evaluate: per round a registered model with a champion and two new versions; two processes run
  facevae.tracking.registry.log_evaluation (what `facevae evaluate` ends with) for the two versions
  at the same instant. The `champion` alias must end on the better one.

It prints one table: kills (races for evaluate), where they landed, completed work lost, corrupt
reads (a load error, a partial file, a non-identical result), other failed checks (an MLflow run
left RUNNING, a run registered twice), and per kind its extra checks. Exit code 1 when any is not
0. On a shared 2-core CPU, --kills 20 of every kind takes about 15 minutes
(docs/decisions/042-kill-soaks.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.facedata import write_face_dataset  # noqa: E402  (the tests' real small data)
from tests.media import astronaut_frames, write_clip  # noqa: E402

TINY_MODEL = {"enc_channels": [8, 16, 16, 16], "dec_channels": [16, 8, 8], "dec_hidden": 32, "latent_dim": 6,
              "decoder": "deconv"}
TRAIN = {"epochs": 4, "decoder_epochs": 4, "adversarial_weight": 0.3, "adversarial_warmup": 1, "batch_size": 8,
         "num_threads": 1, "log_images_every": 2}
SWEEP_SPACE = {"model.latent_dim": {"low": 2, "high": 6}, "train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
               "train.augment.hflip": {"choices": [True, False]}}


@dataclass
class Tally:
    kind: str
    kills: int = 0
    landed: Counter = field(default_factory=Counter)
    lost: int = 0
    corrupt: int = 0
    other: int = 0  # a failed check that is neither (e.g. an MLflow run left RUNNING)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)

    def problem(self, what: str, message: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        self.notes.append(message)
        print(f"  !! {self.kind}: {message}", flush=True)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "facevae.cli", "-q", *args]


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({"OMP_NUM_THREADS": "1", "GIT_PYTHON_REFRESH": "quiet", **(extra or {})})
    return env


def run(command: list[str], cwd: Path, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=900)
    if check and done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return time.monotonic() - started, done


def start(command: list[str], cwd: Path, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "a") if log else subprocess.DEVNULL
    return subprocess.Popen(command, cwd=cwd, env=environment(), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill(process: subprocess.Popen) -> bool:
    """SIGKILL the process group; True when it was still running."""
    alive = process.poll() is None
    if alive:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return alive


def kill_after(command: list[str], cwd: Path, delay: float) -> bool:
    process = start(command, cwd)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    return kill(process)


def kill_when(command: list[str], cwd: Path, appears, timeout: float) -> bool:
    """Kill as soon as appears() is true (polled every 0.5 ms); False when the run ended first."""
    process = start(command, cwd)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if appears():
            break
        time.sleep(0.0005)
    return kill(process)


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder (temp names skipped: nothing reads them)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        if not (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape):
            return False
        return torch.equal(a, b) or bool(((a == b) | (a.isnan() & b.isnan())).all()) if a.is_floating_point() else torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # NaN
    return a == b

# ---- train -----------------------------------------------------------------------------------------


def soak_train(tmp: Path, kills: int, rng: random.Random) -> Tally:
    tally = Tally("train")
    data = write_face_dataset(tmp / "astro.h5", n_train=40, n_val=8)
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump({
        "model": TINY_MODEL, "train": TRAIN,
        "mlflow": {"enabled": True, "tracking_uri": f"sqlite:///{tmp}/mlflow.db", "artifact_location": str(tmp / "artifacts")},
    }))

    def command(out: Path, resume: bool = False) -> list[str]:
        return cli("train", "--data", str(data), "--actor", "soak", "--params", str(params), "--out", str(out),
                   "--no-progress", *(["--resume"] if resume else []))

    duration, _ = run(command(tmp / "straight"), tmp)
    reference = torch.load(tmp / "straight" / "model.pt", weights_only=True)
    print(f"train: uninterrupted run {duration:.1f} s ({TRAIN['epochs']} VAE + {TRAIN['decoder_epochs']} decoder epochs)", flush=True)
    identical = same_payload = tries = 0
    for i in range(2 * kills):
        if tally.kills >= kills:
            break
        tries += 1
        out = tmp / f"killed-{i:02d}"
        targeted = i % 4 == 3
        if targeted:
            epoch = rng.randrange(1, TRAIN["epochs"] + TRAIN["decoder_epochs"] + 1)
            seen: set[str] = set()
            def writing(out=out, epoch=epoch, seen=seen) -> bool:
                # each checkpoint is written to a new temp name: the epoch-th one seen is epoch's
                names = {p.name for p in out.glob(".checkpoint.pt.*.tmp")} if out.exists() else set()
                seen |= names
                return bool(names) and len(seen) >= epoch
            killed = kill_when(command(out), tmp, writing, timeout=duration * 2)
        else:
            killed = kill_after(command(out), tmp, rng.uniform(0, duration))
        tally.kills += killed
        where, state = train_landing(out, killed, tally)
        tally.landed[where] += 1
        before = json.loads((out / "mlflow.json").read_text()).get("run_id") if (out / "mlflow.json").is_file() else None
        _, done = run(command(out, resume=True), tmp, check=False)
        if done.returncode:
            tally.problem("corrupt", f"kill {i} ({where}): --resume failed: {done.stderr.strip()[-300:]}")
            continue
        resumed = torch.load(out / "model.pt", weights_only=True)
        if same_tensors(resumed["state_dict"], reference["state_dict"]):
            identical += 1
        else:
            tally.problem("corrupt", f"kill {i} ({where}): resumed weights differ from the uninterrupted run")
        same_payload += same_tensors({k: v for k, v in resumed.items()}, reference)
        after = json.loads((out / "mlflow.json").read_text())
        run_status(tmp, after["run_id"], before, state, where, tally)
        print(f"  train kill {i:2d}: {where}; resumed identical weights: {same_tensors(resumed['state_dict'], reference['state_dict'])}", flush=True)
    tally.extra["state_dict bit-identical"] = f"{identical}/{tries}"
    tally.extra["whole model.pt payload identical"] = f"{same_payload}/{tries}"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("facevae-soak").experiment_id], max_results=1000)
    statuses = Counter(r.info.status for r in runs)
    tally.extra["MLflow runs (1 + one per kill)"] = f"{len(runs)}: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    versions = Counter(v.run_id for v in client.search_model_versions("name='facevae-soak'", max_results=1000))
    twice = sorted(run for run, n in versions.items() if n > 1)
    tally.extra["registered versions, runs with more than one"] = f"{sum(versions.values())}, {len(twice)}"
    if twice:
        tally.problem("other", f"runs registered more than once: {', '.join(twice)}")
    return tally


def checkpoint_epoch(out: Path, quiet: bool = False) -> int | None:
    path = out / "checkpoint.pt"
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["epoch"]
    except Exception:
        if quiet:
            return -1
        raise


def train_landing(out: Path, killed: bool, tally: Tally) -> tuple[str, int | None]:
    """Where the kill landed, from the files; a checkpoint that does not load is a corrupt read."""
    if not killed:
        return "after the end (not killed)", None
    writing = any(out.glob(".checkpoint.pt.*.tmp"))
    try:
        done = checkpoint_epoch(out)
    except Exception as exc:
        tally.problem("corrupt", f"checkpoint.pt left by a kill does not load: {exc!r}")
        return "corrupt checkpoint", None
    total = TRAIN["epochs"] + TRAIN["decoder_epochs"]
    if done is None and writing:
        where = "mid-checkpoint write (epoch 1)"
    elif done is None:
        where = "epoch 1 (MLflow run open)" if (out / "mlflow.json").is_file() else "startup (imports, MLflow setup)"
    elif writing:
        where = "mid-checkpoint write"
    elif done < TRAIN["epochs"]:
        where = "VAE phase, mid-epoch"
    elif done < total:
        where = "decoder phase, mid-epoch"
    elif not (out / "model.pt").is_file():
        where = "after the last epoch (writing model.pt)"
    else:
        where = "after model.pt (MLflow logging/registration)"
    return where, done


def run_status(tmp: Path, run_id: str, before: str | None, done: int | None, where: str, tally: Tally) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    status = client.get_run(run_id).info.status
    key = "MLflow run continued" if before == run_id else "MLflow run new"
    tally.extra[key] = str(int(tally.extra.get(key, "0")) + 1)
    if status != "FINISHED":
        tally.problem("lost", f"{where}: resumed run {run_id} ends {status}")
    if done is not None and before is not None and before != run_id:
        tally.problem("lost", f"{where}: a checkpoint existed but --resume opened a new MLflow run")
    if before is not None and before != run_id:
        old = client.get_run(before)
        key = f"killed attempt's run ends {old.info.status}"
        tally.extra[key] = str(int(tally.extra.get(key, "0")) + 1)
        if old.info.status == "RUNNING" or old.data.tags.get("facevae.restarted_as") != run_id:
            tally.problem("other", f"{where}: the killed attempt's run {before} is {old.info.status}, "
                          f"restarted_as {old.data.tags.get('facevae.restarted_as')}")

# ---- extract and build ---------------------------------------------------------------------------


def soak_files(kind: str, tmp: Path, kills: int, rng: random.Random) -> Tally:
    """Kill `facevae extract` or `facevae build` mid-run; its output must be absent or complete."""
    tally = Tally(kind)
    clip = tmp / "clips" / "astronaut.mp4"
    if not clip.is_file():
        clip.parent.mkdir(parents=True, exist_ok=True)
        write_clip(clip, astronaut_frames(24))
    if kind == "extract":
        def command(out: Path) -> list[str]:
            return cli("extract", str(clip.parent), "--out", str(out), "--no-progress")
        name = "faces"
    else:
        faces = tmp / "faces-for-build"
        if not faces.exists():
            run(cli("extract", str(clip.parent), "--out", str(faces), "--no-progress"), tmp)
        def command(out: Path) -> list[str]:
            return cli("build", str(faces), str(out), "--set", "build.val_fraction=0.25")
        name = "astro.h5"
    first, _ = run(command(tmp / f"{kind}-ref-1" / name), tmp)
    run(command(tmp / f"{kind}-ref-2" / name), tmp)
    digest = lambda p: tree_digest(p) if p.is_dir() else {p.name: hashlib.sha256(p.read_bytes()).hexdigest()}  # noqa: E731
    reference = digest(tmp / f"{kind}-ref-1" / name)
    if digest(tmp / f"{kind}-ref-2" / name) != reference:
        tally.notes.append("two uninterrupted runs differ byte-wise: only completeness is checked")
        print(f"  {kind}: two uninterrupted runs are not byte-identical", flush=True)
    print(f"{kind}: uninterrupted run {first:.1f} s, {len(reference)} files", flush=True)
    rerun_identical = tries = 0
    for i in range(2 * kills):
        if tally.kills >= kills:
            break
        tries += 1
        folder = tmp / f"{kind}-killed-{i:02d}"
        out = folder / name
        over_old = i % 2 == 1
        if over_old:  # a rerun replacing an older complete output
            run(command(out), tmp)
        if i % 4 == 2:  # wait for the final write: a random moment rarely lands in it
            def writing(folder=folder) -> bool:
                temps = list(folder.glob(f".{name}.*")) if folder.exists() else []
                return any((t / "frames.csv").exists() or (t / "crops.h5").exists() if t.is_dir() else t.stat().st_size > 0
                           for t in temps)
            try:
                killed = kill_when(command(out), tmp, writing, timeout=first * 3)
            except FileNotFoundError:  # renamed while looked at
                killed = False
        else:
            killed = kill_after(command(out), tmp, rng.uniform(0, first))
        tally.kills += killed
        temps = [p for p in folder.iterdir() if p.name.startswith(f".{name}.")] if folder.exists() else []
        if not killed:
            where = "after the end (not killed)"
        elif not temps:
            where = ("before writing (startup)" if not out.exists() or over_old else "after the output appeared")
        elif kind == "extract":
            outputs = any((t / f).exists() for t in temps if t.is_dir() for f in ("frames.csv", "crops.h5"))
            where = "mid-write of the outputs" if outputs else "mid-extraction (part files)"
        else:
            where = "mid-write of the HDF5 file"
        if killed and over_old:
            where += ", over an older output"
        tally.landed[where] += 1
        if out.exists():
            try:
                seen = digest(out)
            except OSError as exc:
                tally.problem("corrupt", f"kill {i}: output unreadable: {exc!r}")
                seen = None
            if seen is not None and seen != reference:
                tally.problem("corrupt", f"kill {i} ({where}): {out.name} present but not the complete output "
                              f"({len(seen)} files vs {len(reference)})")
        run(command(out), tmp)
        if digest(out) == reference:
            rerun_identical += 1
        else:
            tally.problem("corrupt", f"kill {i} ({where}): the rerun's output is not byte-identical")
        print(f"  {kind} kill {i:2d}: {where}", flush=True)
    tally.extra["rerun byte-identical"] = f"{rerun_identical}/{tries}"
    return tally

# ---- sweep -----------------------------------------------------------------------------------------


def soak_sweep(tmp: Path, kills: int, rng: random.Random) -> Tally:
    import optuna
    from optuna.trial import TrialState

    from facevae.sweep.budget import census, retried_numbers
    from tests.servers import postgres_cluster

    tally = Tally("sweep")
    data = write_face_dataset(tmp / "astro.h5", n_train=40, n_val=8)
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump({
        "model": {**TINY_MODEL, "enc_channels": [4, 8, 8, 8], "dec_channels": [8, 8, 4], "dec_hidden": 16},
        "train": {"batch_size": 16, "decoder_epochs": 0, "num_threads": 1},
        "mlflow": {"enabled": False},
        "sweep": {"epochs": 3, "space": SWEEP_SPACE, "sampler_startup_trials": 2, "pruner": "none",
                  "heartbeat_s": 1, "grace_s": 3, "max_retry": 100, "keep_models": "all"},
    }))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with postgres_cluster() as pg:
        storage = pg.create_database("optuna")

        def command(worker: str, study: str, trials: int) -> list[str]:
            return cli("sweep", "--actor", "soak", "--trials", str(trials), "--study", study, "--storage", storage,
                       "--data", str(data), "--params", str(params), "--set", f"sweep.trials_dir={tmp / worker}",
                       "--out", str(tmp / worker / "reports"))

        # timing: one worker alone on a small study
        timing_trials = 4
        alone, _ = run(command("timing", "timing", timing_trials), tmp)
        startup, _ = run(command("timing", "timing", timing_trials), tmp)  # a rerun: nothing left to do
        per_trial = max(0.3, (alone - startup) / timing_trials)
        cycle = startup + per_trial
        total = int(2.5 * kills * (cycle + per_trial) / per_trial) + kills + 6  # A must not finish first
        print(f"sweep: startup {startup:.1f} s, {per_trial:.1f} s per trial; study total {total} trials", flush=True)
        study_name = "soak"
        a = start(command("a", study_name, total), tmp, tmp / "a.log")
        complete_seen: set[int] = set()
        snapshots: list[tuple[bool, set[int]]] = []  # per kill: killed?, trials RUNNING right after it
        storage_obj = optuna.storages.RDBStorage(storage)
        for i in range(2 * kills):
            if tally.kills >= kills or a.poll() is not None:
                break
            b = start(command("b", study_name, total), tmp, tmp / "b.log")
            try:
                b.wait(timeout=rng.uniform(startup, startup + 3 * per_trial))
            except subprocess.TimeoutExpired:
                pass
            killed = kill(b)
            tally.kills += killed
            trials = optuna.load_study(study_name=study_name, storage=storage_obj).get_trials(deepcopy=False)
            snapshots.append((killed, {t.number for t in trials if t.state == TrialState.RUNNING}))
            complete_seen |= {t.number for t in trials if t.state == TrialState.COMPLETE}
        b = start(command("b", study_name, total), tmp, tmp / "b.log")  # B again, to the end
        for process in (a, b):
            try:
                process.wait(timeout=1800)
            except subprocess.TimeoutExpired:
                kill(process)
                tally.notes.append("a worker did not finish in 30 min")
        trials = optuna.load_study(study_name=study_name, storage=storage_obj).get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        counts = census(trials)
        retried = retried_numbers(trials)
        failed = {t.number for t in trials if t.state == TrialState.FAIL}
        killed_trials: list[int] = []
        for i, (killed, running) in enumerate(snapshots):
            mine = sorted(n for n in running if n in failed)  # A is never killed: a trial that failed was B's
            where = "after B's end (study done)" if not killed else "mid-trial" if mine else "startup or between trials"
            tally.landed[where] += 1
            killed_trials += mine
            print(f"  sweep kill {i:2d}: {where} {mine or ''}", flush=True)
        if counts.finished != total or counts.running or counts.waiting:
            tally.problem("lost", f"study: {counts.describe()}, expected {total} finished")
        gone = [n for n in complete_seen if by_number[n].state != TrialState.COMPLETE]
        if gone:
            tally.problem("lost", f"completed trials no longer COMPLETE: {gone}")
        complete = {n for n, t in by_number.items() if t.state == TrialState.COMPLETE}
        models = {int(d.name.removeprefix("trial-")) for w in ("a", "b") for d in (tmp / w / study_name).glob("trial-*")
                  if (d / "model.pt").is_file()}
        if complete - models:
            tally.problem("lost", f"completed trials without their model.pt: {sorted(complete - models)}")
        for n in killed_trials:
            if n not in retried:
                tally.problem("lost", f"killed trial {n} was not queued again")
        other_failures = failed - set(killed_trials)
        if other_failures:
            tally.notes.append(f"failed trials not seen running at a kill: {sorted(other_failures)}: "
                               + "; ".join(str(by_number[n].user_attrs.get("outcome")) for n in sorted(other_failures)))
        tally.extra["study (facevae's census)"] = f"{counts.describe()}; total asked {total}"
        tally.extra["killed mid-trial: FAIL by heartbeat and queued again"] = \
            f"{sum(n in retried for n in killed_trials)} of {len(killed_trials)}"
        tally.extra["completed trials seen during the kills, still COMPLETE"] = f"{len(complete_seen) - len(gone)} of {len(complete_seen)}"
        tally.extra["trials completed by B (restarted each kill)"] = str(len(complete & {
            int(d.name.removeprefix("trial-")) for d in (tmp / "b" / study_name).glob("trial-*")}))
        tally.extra["exit codes A, B(last)"] = f"{a.returncode}, {b.returncode}"
    return tally

# ---- evaluate --------------------------------------------------------------------------------------

EVAL_WORKER = r"""
import json, sys, time
from facevae.tracking.registry import log_evaluation
job = json.loads(open(sys.argv[1]).read())
ranking = [("target_score", False), ("expression_r", False)]
lags = []
for r in job["rounds"]:
    while time.time() < r["at"]:
        pass
    lags.append(time.time() - r["at"])
    log_evaluation(r["record"], r["headline"], ranking, r["benchmark"])
print(json.dumps(lags))
"""


def soak_evaluate(tmp: Path, races: int, rng: random.Random) -> Tally:
    from mlflow.tracking import MlflowClient

    tally = Tally("evaluate")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("soak", artifact_location=(tmp / "artifacts").as_uri())
    benchmark = {"facevae.eval_drivers": "a.mp4,b.mp4", "facevae.eval_target": "soak"}
    jobs: list[list[dict]] = [[], []]
    expected = {}
    period = 1.5
    for r in range(races):
        name = f"facevae-soak{r:02d}"
        client.create_registered_model(name)
        versions = []
        for _ in range(3):
            run = client.create_run(experiment)
            client.set_terminated(run.info.run_id)
            versions.append((run.info.run_id, client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id).version))
        champion_run, champion = versions[0]
        client.log_metric(champion_run, "eval_target_score", 0.1)
        for tag, value in benchmark.items():
            client.set_tag(champion_run, tag, value)
        client.set_registered_model_alias(name, "champion", champion)
        scores = rng.sample([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], 2)
        expected[name] = versions[1 + scores.index(max(scores))][1]
        for k, ((run_id, version), score) in enumerate(zip(versions[1:], scores)):
            record = {"run_id": run_id, "tracking_uri": uri, "registered_model": name, "version": str(version)}
            jobs[k].append({"record": record, "headline": {"target_score": score, "expression_r": 0.5},
                            "benchmark": benchmark, "round": r})
    worker = tmp / "eval_worker.py"
    worker.write_text(EVAL_WORKER)
    at = time.time() + 25  # both workers imported mlflow by then
    processes = []
    for k, rounds in enumerate(jobs):
        for r, job in enumerate(rounds):
            job["at"] = at + r * period
        (tmp / f"eval-{k}.json").write_text(json.dumps({"rounds": rounds}))
        processes.append(subprocess.Popen([sys.executable, str(worker), str(tmp / f"eval-{k}.json")], cwd=tmp,
                                          env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    lags = []
    for process, output in zip(processes, outputs):
        if process.returncode:
            tally.problem("corrupt", f"an evaluation process failed: {output[-1500:]}")
        else:
            lags.append(json.loads(output.strip().splitlines()[-1]))
    # how far apart the two decisions of a round started
    apart = [abs(a - b) * 1000 for a, b in zip(*lags)] if len(lags) == 2 else []
    for name, version in expected.items():
        tally.kills += 1
        try:
            got = str(client.get_model_version_by_alias(name, "champion").version)
        except Exception as exc:  # noqa: BLE001
            tally.problem("corrupt", f"{name}: no champion alias ({exc!r})")
            continue
        tally.landed["alias on the better version" if got == str(version) else "alias on the worse version"] += 1
        if got != str(version):
            tally.problem("lost", f"{name}: champion is version {got}, the better is {version}")
    if apart:
        tally.extra["races: the two calls started this far apart (ms)"] = \
            f"median {sorted(apart)[len(apart) // 2]:.2f}, max {max(apart):.2f} (rounds {period} s apart)"
    return tally

# ---- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills (races for evaluate) per kind")
    parser.add_argument("--kinds", default="train,sweep,extract,build,evaluate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp dir, deleted)")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(kinds) - {"train", "sweep", "extract", "build", "evaluate"}
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    tallies, seconds = [], {}
    with tempfile.TemporaryDirectory(prefix="facevae-soak-") as scratch:
        base = args.keep or Path(scratch)
        for kind in kinds:
            rng = random.Random(f"{args.seed}-{kind}")
            folder = base / kind
            folder.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            if kind == "train":
                tallies.append(soak_train(folder, args.kills, rng))
            elif kind == "sweep":
                tallies.append(soak_sweep(folder, args.kills, rng))
            elif kind == "evaluate":
                tallies.append(soak_evaluate(folder, args.kills, rng))
            else:
                shared = base / "media"
                shared.mkdir(exist_ok=True)
                tallies.append(soak_files(kind, shared, args.kills, rng))
            seconds[kind] = time.monotonic() - started
    print()
    print(f"kill -9 soak, seed {args.seed}")
    print(f"{'kind':<9} {'kills':>5} {'lost':>5} {'corrupt':>7} {'other':>5} {'s':>5}  where the kills landed")
    for t in tallies:
        landed = "; ".join(f"{w} {n}" for w, n in t.landed.most_common())
        print(f"{t.kind:<9} {t.kills:>5} {t.lost:>5} {t.corrupt:>7} {t.other:>5} {seconds[t.kind]:>5.0f}  {landed}")
    for t in tallies:
        for key, value in t.extra.items():
            print(f"  {t.kind}: {key}: {value}")
        for note in t.notes:
            print(f"  {t.kind}: {note}")
    sys.exit(1 if any(t.lost or t.corrupt or t.other for t in tallies) else 0)


if __name__ == "__main__":
    main()
