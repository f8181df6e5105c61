"""DVC stage evaluate@actor: models/<actor>/ on its dataset and driver clips -> reports/<actor>/."""

from pathlib import Path

from _common import stage_main

from facevae.core.errors import FaceVAEError
from facevae.evaluation.stage import run_evaluation


def run(params, actor):
    drivers = params.evaluate.drivers.get(actor)
    if not drivers:
        raise FaceVAEError(f"no driver clips for actor {actor!r}: add evaluate.drivers.{actor} to params.yaml")
    headline = run_evaluation(Path("models") / actor, Path("data/hdf5") / f"{actor}.h5", drivers, params,
                              Path("reports") / actor / "eval")
    print(f"{actor}: " + ", ".join(f"{k}={v:.3f}" for k, v in headline.items() if isinstance(v, float)))


if __name__ == "__main__":
    stage_main(__doc__, run)
