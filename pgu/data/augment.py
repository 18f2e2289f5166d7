"""Batch augmentation on tensors: random crop with zero padding and random horizontal flip.

Everything is done for a whole ``(N, C, H, W)`` batch at once with gathers (no Python loop over
images), on whatever device the batch lives on. Random numbers come from the ``generator``
given (a CPU generator; the draws are moved to the batch's device), so a pass is reproducible
from its seed; :class:`pgu.data.TensorLoader` passes one seeded from ``(seed, pass number)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["RandomCropFlip"]


class RandomCropFlip:
    """``aug(x, generator=None) -> x``: pad by ``padding`` with ``fill``, crop back to ``H x W`` at a
    random offset per image, then flip each image left-right with probability ``flip_p``.

    Image ``n`` of the output equals the window ``padded[n, :, dy:dy+H, dx:dx+W]`` of the padded
    input (with ``dy, dx`` drawn uniformly from ``0..2*padding``), reversed along the width when
    flipped. ``padding=0`` gives flips only; ``flip=False`` gives crops only.
    """

    def __init__(self, padding: int = 4, flip: bool = True, *, fill: float = 0.0, flip_p: float = 0.5):
        if int(padding) != padding or padding < 0:
            raise ValueError(f"padding must be an integer >= 0, got {padding}")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        self.padding, self.flip, self.fill, self.flip_p = int(padding), bool(flip), float(fill), float(flip_p)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip}, fill={self.fill}, flip_p={self.flip_p})"

    def draw(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The random choices for ``n`` images: row offsets, column offsets (each in ``0..2p``), flips."""
        gdev = generator.device if generator is not None else torch.device("cpu")
        p = self.padding
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=gdev)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=gdev)
        if self.flip:
            flips = torch.rand(n, generator=generator, device=gdev) < self.flip_p
        else:
            flips = torch.zeros(n, dtype=torch.bool, device=gdev)
        return dy, dx, flips

    def apply(self, x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Crop at the given offsets (into the padded image) and flip where ``flips`` is true."""
        if x.dim() != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        p = self.padding
        dev = x.device
        dy, dx, flips = dy.to(dev), dx.to(dev), flips.to(dev)
        rows = torch.arange(h, device=dev).unsqueeze(0) + dy.unsqueeze(1)          # (N, H) rows of the padded image
        cols = torch.arange(w, device=dev).unsqueeze(0).expand(n, w)                # (N, W)
        cols = torch.where(flips.unsqueeze(1), (w - 1) - cols, cols) + dx.unsqueeze(1)
        padded = F.pad(x, (p, p, p, p), value=self.fill) if p else x
        out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * p))
        return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[0] == 0:
            return x
        return self.apply(x, *self.draw(x.shape[0], generator))
