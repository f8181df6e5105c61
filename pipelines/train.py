"""DVC stage train@actor: data/hdf5/<actor>.h5 -> models/<actor>/ (+ an MLflow run and registry version)."""

from pathlib import Path

from _common import stage_main

from facevae.training.run import train


def run(params, actor):
    train(Path("data/hdf5") / f"{actor}.h5", actor, params, Path("models") / actor)


if __name__ == "__main__":
    stage_main(__doc__, run)
