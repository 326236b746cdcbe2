"""The one module type prunelab adds to plain PyTorch: :class:`Offset`, a fixed shift.

Mean compensation read by a zero-padded convolution is position dependent: near the border
part of the kernel falls on the padding, so a removed channel held at its mean contributes
less there than in the interior. A per-channel bias cannot hold that; an :class:`Offset`
placed directly after the convolution (before its BatchNorm, if any) holds the per-position
remainder exactly. The op view folds it into the convolution's op (:class:`.kinds.Affine`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Offset(nn.Module):
    """``y = x + offset``: a fixed (non-trainable) shift of a Conv2d's output per position.

    ``offset: [C, H, W]`` is a buffer (saved in the ``state_dict`` and in checkpoints, moved by
    ``.to()``, not a parameter: training leaves it alone). The model then takes inputs of the
    one spatial size whose convolution output is ``[C, H, W]``; another size is an error.

    Parameters
    ----------
    shape : sequence of int
        ``(C, H, W)``: the output shape of the convolution it follows, per sample.
    device, dtype : optional
        Of the buffer, which starts at zero.

    Examples
    --------
    >>> shift = Offset((2, 3, 3))
    >>> shift(torch.ones(4, 2, 3, 3)).shape
    torch.Size([4, 2, 3, 3])
    """

    offset: Tensor

    def __init__(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(*shape, device=device, dtype=dtype))

    @property
    def shape(self) -> tuple[int, ...]:
        """``(C, H, W)``: the per-sample shape it shifts (its constructor argument)."""
        return tuple(self.offset.shape)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1:] != self.offset.shape:  # no silent broadcasting over a wrong size
            raise ValueError(
                f"Offset: holds a shift for feature maps of shape {list(self.shape)} (the size "
                f"the model was pruned at) but got {list(x.shape[1:])}; a model compensated "
                "exactly at the border takes inputs of that one size"
            )
        return x + self.offset

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}"
