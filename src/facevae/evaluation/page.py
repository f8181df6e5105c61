"""The report pictures' page layout: header lines, tables, then captioned sections (summary.png,
beyond.png, gap pictures)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def page(header: list[str], sections: list[tuple[str, Image.Image]], top: Image.Image | None = None,
         width: int = 0) -> np.ndarray:
    """A report picture: header lines, an optional top image (the tables), then each section's
    caption above its image; at least `width` px wide."""
    head = 16 * len(header) + 8
    top_height = top.height if top is not None else 0
    width = max([width, top.width if top is not None else 0, *(image.width for _, image in sections),
                 *(len(line) * 7 + 8 for line in header)])
    canvas = Image.new("RGB", (width, head + top_height + sum(image.height + 20 for _, image in sections)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(header):
        draw.text((4, 4 + 16 * i), line, fill=(0, 0, 0))
    if top is not None:
        canvas.paste(top, (0, head))
    y = head + top_height
    for caption, image in sections:
        draw.text((4, y + 4), caption, fill=(0, 0, 0))
        canvas.paste(image, (0, y + 18))
        y += image.height + 20
    return np.asarray(canvas)
