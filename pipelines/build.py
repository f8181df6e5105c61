"""DVC stage build@actor: kept faces of data/faces/<actor>, curated by data/curation/<actor>.yaml,
-> data/hdf5/<actor>.h5."""

from pathlib import Path

from _common import stage_main, write_json

from facevae.curation import curation_path
from facevae.dataset import build_actor_dataset


def run(params, actor):
    counts = build_actor_dataset(
        Path("data/faces") / actor, Path("data/hdf5") / f"{actor}.h5", params.build, curation=curation_path(actor)
    )
    write_json(Path("reports") / actor / "build.json", counts)
    print(f"{actor}: {counts}")


if __name__ == "__main__":
    stage_main(__doc__, run)
