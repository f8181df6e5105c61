"""DVC stage extract@actor: videos in data/raw/<actor>/ -> aligned, filtered crops in data/faces/<actor>/."""

import json
from pathlib import Path

from _common import stage_main, write_json

from facevae.extract import extract_actor, find_videos


def run(params, actor):
    raw_dir = params.samples.raw_dir / actor
    out_dir = Path("data/faces") / actor
    extract_actor(find_videos([raw_dir]), out_dir, params.extract)
    summary = json.loads((out_dir / "summary.json").read_text())
    write_json(Path("reports") / actor / "extract.json", summary)


if __name__ == "__main__":
    stage_main(__doc__, run)
