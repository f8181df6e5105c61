"""Merge actor datasets into one (decision 050's pretraining set): every clean frame, splits kept.

    python docs/decisions/scripts/merge_datasets.py OUT.h5 A.h5 B.h5 ...
"""

import sys

import h5py
import numpy as np

from facevae.data.dataset import SPLITS, read_split, write_dataset


def main() -> None:
    out, *inputs = sys.argv[1:]
    images, landmarks, splits = [], [], []
    for path in inputs:
        for name in ("train", "val"):
            part = read_split(path, name, clean_only=True)
            images.append(part)
            landmarks.append(read_split(path, name, clean_only=True, field="landmarks"))
            splits.append(np.full(len(part), SPLITS[name], np.uint8))
    images = np.concatenate(images)
    with h5py.File(inputs[0]) as first:  # the crop geometry (all inputs were extracted alike)
        attrs = {k: v for k, v in first.attrs.items() if k in ("coverage", "extract_params")}
    write_dataset(out, images, np.concatenate(landmarks), ["merged"] * len(images), np.arange(len(images)),
                  np.concatenate(splits), attrs=attrs)
    print(f"{out}: {len(images)} frames from {len(inputs)} datasets")


if __name__ == "__main__":
    main()
