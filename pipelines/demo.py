"""DVC stage demo@actor: models/<actor>/model.pt -> reports/<actor>/{demo.mp4, walk.gif, samples.png, demo.json}.

- demo.mp4: params `demo.drivers.<actor>` (another person's video) drives the actor, side by side,
  in driving mode `transfer.mode`.
- walk.gif: a latent walk between two of the actor's own expressions far apart in latent space
  (picked from data/hdf5/<actor>.h5), there and back.
- samples.png: faces decoded from prior samples.
- demo.json: frame counts of the demo video (with a face, held, blank) and how many of its faces fall
  below the plausibility bar (facevae.evaluation.plausibility: blotchy or ghostly faces).

The model comes from the train stage's output, not from the registry, so the stage graph is
honest: a new model.pt re-renders the demo.
"""

from pathlib import Path

from _common import stage_main

from facevae.apps.reconstruct import reconstruct_video
from facevae.apps.walk import render_samples, render_walk, walk_endpoints
from facevae.core.atomic import write_json
from facevae.core.errors import FaceVAEError
from facevae.evaluation.plausibility import PLAUSIBLE, PlausibilityReference
from facevae.transfer.actor import ActorModel
from facevae.transfer.drive import default_mode


def run(params, actor):
    cfg = params.demo
    if actor not in cfg.drivers:
        raise FaceVAEError(f"no demo driver for actor {actor!r}: add demo.drivers.{actor} (a video) to params.yaml")
    model = ActorModel.from_file(Path("models") / actor / "model.pt", params.extract)
    out = Path("reports") / actor
    data = Path("data/hdf5") / f"{actor}.h5"
    summary = reconstruct_video(model, cfg.drivers[actor], out / "demo.mp4", params.extract, upscale=cfg.upscale,
                                mode=default_mode(model, params.transfer), transfer_cfg=params.transfer,
                                plausibility=PlausibilityReference.from_dataset(data))
    print(summary.describe())
    below = int((summary.plausibility < PLAUSIBLE).sum())
    if below:
        print(f"demo.mp4 check: {below} faces below the plausibility bar {PLAUSIBLE} (blotchy or ghostly; issue 24)")
    face_a, face_b = walk_endpoints(model, data)
    render_walk(
        model, face_a, face_b, out / "walk.gif", steps=cfg.walk_steps, mode=cfg.walk_mode,
        upscale=cfg.upscale, fps=cfg.walk_fps, bounce=True,
    )  # fmt: skip
    render_samples(model, cfg.samples, out / "samples.png", seed=cfg.seed, upscale=2)
    write_json(
        out / "demo.json",
        {
            "driver": str(cfg.drivers[actor]),
            "frames": summary.frames,
            "frames_with_face": summary.with_face,
            "frames_held": summary.held,
            "frames_blank": summary.blank,
            "fps": summary.fps,
            "faces_below_plausibility_bar": below,
            "plausible": float((summary.plausibility >= PLAUSIBLE).mean()),
        },
    )
    print(f"{out}: demo.mp4, walk.gif, samples.png, demo.json")


if __name__ == "__main__":
    stage_main(__doc__, run)
