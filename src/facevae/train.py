"""`torchrun --nproc-per-node N -m facevae.train --data D --actor A [options]`: `facevae train` in
each of N data-parallel processes (see `facevae train --help`; `--nproc N` launches the same)."""

from __future__ import annotations

import sys

from facevae.cli import app


def main() -> None:
    app(["train", *sys.argv[1:]], prog_name="facevae.train")


if __name__ == "__main__":  # pragma: no cover
    main()
