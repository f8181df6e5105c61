"""DVC stage extract@actor: videos in data/raw/<actor>/ -> aligned, filtered crops in data/faces/<actor>/."""

from pathlib import Path

from _common import stage_main

from facevae.core.atomic import write_json
from facevae.extract.extractor import extract_actor, find_videos, summary_json


def run(params, actor):
    raw_dir = params.samples.raw_dir / actor
    summary = extract_actor(find_videos([raw_dir]), Path("data/faces") / actor, params.extract)
    write_json(Path("reports") / actor / "extract.json", summary_json(summary))


if __name__ == "__main__":
    stage_main(__doc__, run)
