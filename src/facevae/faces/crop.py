"""How faces are cut out for a model: crop size and coverage."""

from __future__ import annotations

from dataclasses import dataclass

from facevae.core.config import ExtractConfig


@dataclass(frozen=True)
class CropGeometry:
    """How faces are cut out for a model: `size` px square, `coverage` template units wide."""

    size: int
    coverage: float

    def describe(self) -> str:
        return f"{self.size} px crops at coverage {self.coverage:g}"

    def extract_config(self, cfg: ExtractConfig) -> ExtractConfig:
        """`cfg` (detector, tracking) with this geometry: what aligning a driver for the model uses."""
        return cfg.model_copy(update={"crop_size": self.size, "coverage": self.coverage})
