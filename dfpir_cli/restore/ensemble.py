"""Self-ensemble: restore a photo in mirrored and rotated views, undo each view, and average the results.

The network is not exactly symmetric under flips and rotations, so its errors differ from one view of a
photo to another and partly cancel in the mean (the "+" results of EDSR and most restoration papers). It
costs one restoration per view. Views are taken in this order, so every count includes the ones below it:
the photo itself, its mirror image (left-right), the two upside down, then the four transposed.
Transposed, rain streaks lie sideways, which a network trained on falling rain leaves in (Rain100L with the
default model: 30.96 dB in one view, 31.21 in four, 28.96 in eight), so rain passes stop at four views.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..weights.prompts import family_of
from .tiling import ProgressCallback, Restore

VIEW_COUNTS = (1, 2, 4, 8)  # 1: the photo alone; 2: and its mirror; 4: and both upside down; 8: all eight
MOST_VIEWS = {"rain": 4}  # per degradation family: the views that keep its look (rain stays upright)


def view(image: torch.Tensor, index: int) -> torch.Tensor:
    """View ``index`` (0-7) of a (..., H, W) image: bit 1 mirrors it, bit 2 turns it upside down, bit 4
    transposes it."""
    if index & 1:
        image = image.flip(-1)
    if index & 2:
        image = image.flip(-2)
    if index & 4:
        image = image.transpose(-1, -2)
    return image


def unview(image: torch.Tensor, index: int) -> torch.Tensor:
    """The inverse of :func:`view`: each step undoes itself, so they run in the reverse order."""
    if index & 4:
        image = image.transpose(-1, -2)
    if index & 2:
        image = image.flip(-2)
    if index & 1:
        image = image.flip(-1)
    return image


def check_views(views: int, option: str = "--self-ensemble") -> int:
    """``views`` if it is one of :data:`VIEW_COUNTS`, else an error naming the option."""
    if views not in VIEW_COUNTS:
        raise InputError(f"{option} {views}: use 1 (off), 2 (and the mirror image), 4 (and upside down) "
                         "or 8 (and transposed)")
    return views


def views_for(prompt: str | None, views: int) -> int:
    """How many views a pass with this prompt name (or alias) uses: ``views``, capped by :data:`MOST_VIEWS`.

    A free-text prompt (no known name) gets every view asked for.
    """
    family = family_of(prompt)
    return min(views, MOST_VIEWS.get(family, views)) if family else views


def self_ensemble(restore: Restore, image: torch.Tensor, views: int = 1,
                  progress: ProgressCallback | None = None) -> torch.Tensor:
    """The mean of ``restore`` over the first ``views`` views of ``image`` (B, C, H, W), each view undone.

    ``restore(image, progress)`` restores one view and reports ``progress(done, total)`` as it goes; the
    reports of all views are joined into one count. With ``views`` 1 it is ``restore(image, progress)``.
    """
    check_views(views)
    if views == 1:
        return restore(image, progress)
    total = None
    for index in range(views):
        def report(done: int, count: int, index: int = index) -> None:
            if progress:
                progress(index * count + done, count * views)
        restored = unview(restore(view(image, index), report), index)
        total = restored if total is None else total + restored
    assert total is not None
    return total / views
