"""A photo's restoration plan: its passes in order, each with a prompt, a tile, a guide and views, and a precision.

A :class:`Planner` holds what a batch was asked for (tile, overlap, haze guide, views, precision) and makes one
:class:`RestorePlan` per photo, from its size and the prompts chosen for it, before any pixel is touched;
:func:`dfpir_cli.restore.pipeline.run_plan` then runs it. A plan is a value: it prints (``str(plan)``),
compares and can be tested without running the network, and the CLI, eval and the API run the same plans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..detect import Detection
from ..errors import InputError
from ..weights.checkpoint import Checkpoint
from ..weights.prompts import family_of
from .ensemble import views_for
from .tiling import GUIDED_FAMILIES, count_tiles

# Families whose restoration sets the tone of the whole photo (brightness, airlight): tiles decide it each for
# itself, so by default their passes run in the largest tile memory allows, not the faster CPU cap, and a photo
# larger than that tile takes its tone from a thumbnail as large as the tile (Planner.guide_for). Measured
# with the stage-5 default model, fp32, one view: LOL eval15 (600 x 400) 19.27 dB whole vs 18.59 in 512 px
# tiles; the two SOTS pairs (550 x 413) 24.46 vs 24.05; LOL in 256 px tiles 18.37, guided by a 256 px
# thumbnail 19.10.
TONE_FAMILIES = ("haze", "lowlight")
# Haze passes take their tone (airlight, transmission) from the restoration of a thumbnail this many pixels
# on its longer side (tiling.scale_guided), detail from the full-size one: the default model learnt haze on
# 64-128 px patches, and on a whole photo it dehazes less. Measured with the stage-5 default model, fp32, one
# view: `dfpir eval --dataset SOTS ... --haze-guide 256`: 24.46 dB whole vs 27.09 guided. A sweep by script
# (no centre crop): SOTS 24.17 whole, thumbnails of 128 / 192 / 256 / 384 px 22.71 / 24.69 / 26.97 / 25.77;
# ten photos of the synthetic benchmark hazed at full size (400-741 px) 19.48 whole, 21.17 at 256 (128 px:
# 22.02). Low light gains nothing from a small thumbnail (LOL eval15 19.29 whole, 19.12 at 256), so it runs
# whole when it fits the tile.
# The guide suits how this model learnt haze, so it is the checkpoint's to ask for: the default model's
# metadata says "haze_guide": 256; a checkpoint without it (the paper's weights, trained on full-size RESIDE
# photos) restores as the paper did unless --haze-guide says otherwise.
HAZE_GUIDE_SIDE = 256
TONE_TILE_STEP = 256  # the wide tile is rounded down to a multiple of this


def haze_guide_for(checkpoint: Checkpoint, asked: int | None = None) -> int:
    """The haze guide's thumbnail side: ``asked`` (--haze-guide), else the checkpoint's own, else 0 (off)."""
    if asked is not None:
        if asked < 0:
            raise InputError(f"--haze-guide {asked}: use a thumbnail side in pixels, or 0 to turn it off")
        return asked
    guide = checkpoint.metadata.get("haze_guide", 0)
    if isinstance(guide, bool) or not isinstance(guide, int) or guide < 0:
        raise InputError(f"the checkpoint's metadata asks for haze_guide {guide!r}, not a thumbnail side in pixels: "
                         "pass --haze-guide N (0: off) to override it")
    return guide


@dataclass(frozen=True)
class Pass:
    """One restoration pass over the whole photo: the network with one prompt code, in tiles and views."""

    name: str | None  # the prompt's name (None: a free-text prompt, or a code without a name)
    code: torch.Tensor = field(repr=False, compare=False)  # (1, text_dim) float32
    tile: int | None  # tile side in pixels (None: the photo whole)
    overlap: int  # pixels neighbouring tiles share
    guide: int  # side of the thumbnail the pass takes its tone from (0: none; tiling.scale_guided)
    views: int  # self-ensemble views (ensemble.views_for: rain passes in at most 4)
    tiles: int  # forward passes per view at the photo's size (tiling.count_tiles)
    # the prompt's own tensors, in place of the shared ones for this pass (Checkpoint.prompt_weights); None: shared
    weights: Mapping[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def forward_passes(self) -> int:
        return self.tiles * self.views

    def __str__(self) -> str:
        tiles = "whole" if self.tile is None else f"{self.tiles} tile(s) of {self.tile} px, overlap {self.overlap}"
        guide = f", tone from a {self.guide} px thumbnail" if self.guide else ""
        own = ", its own weights" if self.weights else ""
        return f"{self.name or 'free-text prompt'}{own}: {tiles}{guide}, {self.views} view(s)"


@dataclass(frozen=True)
class RestorePlan:
    """Everything one photo's restoration will do, in order; ``passes`` () means clean: copied unchanged."""

    height: int
    width: int
    passes: tuple[Pass, ...]  # each reads the previous one's output
    precision: str  # fp32, bf16 or fp16
    batch_size: int  # tiles per forward pass
    detection: Detection | None = field(default=None, compare=False)  # what the detector saw (auto mode)

    @property
    def names(self) -> tuple[str | None, ...]:
        return tuple(step.name for step in self.passes)

    @property
    def forward_passes(self) -> int:
        """Forward passes of the network in all (thumbnails of guided passes not counted): for progress."""
        return sum(step.forward_passes for step in self.passes)

    def __str__(self) -> str:
        head = f"{self.width}x{self.height}, {self.precision}, {self.batch_size} tile(s) per forward pass"
        if not self.passes:
            return f"{head}: clean, copied unchanged"
        return "\n".join([f"{head}:"] + [f"  {number}. {step}" for number, step in enumerate(self.passes, 1)])


@dataclass(frozen=True)
class Planner:
    """What a batch was asked for, from which each photo's :class:`RestorePlan` follows."""

    tile: int | None  # tile side of most passes (None: whole)
    tone_tile: int | None  # tile side of haze and low-light passes (TONE_FAMILIES)
    overlap: int  # pixels neighbouring tiles share
    haze_guide: int  # thumbnail side haze passes take their tone from (0: off; haze_guide_for)
    views: int  # self-ensemble views asked for
    precision: str  # fp32, bf16 or fp16
    batch_size: int  # tiles per forward pass
    multiple_of: int = 8  # the network's size rule (DFPIR.multiple_of)

    def tile_for(self, name: str | None) -> int | None:
        """The tile side of a pass with this prompt name (None: whole): wider for haze and low light."""
        return self.tone_tile if family_of(name) in TONE_FAMILIES else self.tile

    def guide_for(self, name: str | None) -> int:
        """The thumbnail side a pass with this prompt takes its tone from (0: none; tiling.scale_guided).

        Haze: ``haze_guide`` (HAZE_GUIDE_SIDE). Haze and low light, in a photo larger than their tile: a
        thumbnail as large as the tile, so the tone is set once for the photo rather than once per tile (only
        ``--tile 0`` runs them unguided whatever the size). The smaller of the two when both apply.
        """
        family = family_of(name)
        if family not in TONE_FAMILIES:
            return 0
        sides = [side for side in (self.haze_guide if family in GUIDED_FAMILIES else 0, self.tone_tile or 0) if side]
        return min(sides, default=0)  # never a thumbnail larger than the tile: it would be tiled itself

    def plan(self, height: int, width: int, prompts: Sequence[tuple[str | None, torch.Tensor]],
             detection: Detection | None = None,
             weights_of: Callable[[str | None], Mapping[str, torch.Tensor] | None] | None = None) -> RestorePlan:
        """The plan of a ``height`` x ``width`` photo restored with ``prompts`` ((name, code) pairs) in order;
        ``weights_of(name)``: a prompt's own weights (:meth:`Checkpoint.weights_of`), if it has any."""
        passes = []
        for name, code in prompts:
            tile = self.tile_for(name)
            passes.append(Pass(name, code, tile, self.overlap, self.guide_for(name), views_for(name, self.views),
                               count_tiles(height, width, tile, self.overlap, self.multiple_of),
                               weights_of(name) if weights_of else None))
        return RestorePlan(height, width, tuple(passes), self.precision, self.batch_size, detection)
