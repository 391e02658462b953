"""Models for tests and benchmarks that need an untrained model to behave like a trained one.

A randomly initialised ``_test`` model predicts almost the same logit everywhere, so every instance runs to
the click limit and its masks hardly follow the clicks. :class:`Sharpened` wraps one so that its masks are
partial and move with the clicks (IoUs vary, some instances reach the target early), which is what
exactness tests of the interactive loop and precision benchmarks need to exercise.
"""

from __future__ import annotations

import torch

from .registry import create_model

__all__ = ["Sharpened"]


class Sharpened(torch.nn.Module):
    """A random ``name`` model (seeded) whose logits are centred and scaled.

    The map is elementwise (``gain * (logits - shift)``), so per-sample exactness (batched vs one at a time)
    is the inner model's. ``gain`` is divided by the logits' std on a fixed random input; ``shift`` is their
    median there. RITM-style click stems start at ``|scale| = 0.05``; they are set to 5 so that clicks matter.
    """

    def __init__(self, name: str, gain: float = 300.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inner = create_model(name).eval()
        for attr in ("with_prev_mask", "default_protocol", "click_padding_exact"):
            setattr(self, attr, getattr(self.inner, attr))
        with torch.no_grad():
            for n, p in self.inner.named_parameters():
                if n.startswith("maps_transform.") and n.endswith(".scale"):
                    p.fill_(5.0)
            image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
            prev = torch.zeros(1, 1, 64, 64) if self.with_prev_mask else None
            out = self.inner(image, torch.tensor([[[32.0, 32.0, 1.0]]]), prev)
        self.gain, self.shift = gain / float(out.std() + 1e-6), float(out.median())

    def forward(self, image, clicks, prev_mask=None):
        return self.gain * (self.inner(image, clicks, prev_mask) - self.shift)
