"""DVC stage build@actor: kept faces of data/faces/<actor>, curated by data/curation/<actor>.yaml,
-> data/hdf5/<actor>.h5; their expression coverage (kept vs. dropped) -> reports/<actor>/coverage.*"""

from pathlib import Path

from _common import stage_main

from facevae.core.atomic import write_json
from facevae.data.coverage import read_frames, write_coverage
from facevae.data.curation import curation_path
from facevae.data.dataset import build_actor_dataset


def run(params, actor):
    faces, reports = Path("data/faces") / actor, Path("reports") / actor
    out, curation = Path("data/hdf5") / f"{actor}.h5", curation_path(actor)
    counts = build_actor_dataset(faces, out, params.build, curation=curation)
    write_json(reports / "build.json", counts)
    coverage = write_coverage(read_frames(faces, curation), reports, actor)
    print(f"{actor}: {counts}; expression range kept: {coverage['range_share']}")


if __name__ == "__main__":
    stage_main(__doc__, run)
