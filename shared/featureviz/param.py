"""The image parameterisation of SCIENCE.md §5: decorrelated Fourier basis and colour decorrelation.

After lucid's ``fft_image`` and ``to_valid_rgb`` (Olah et al. 2017, "Feature
Visualization", §"Preconditioning and Parameterization"): the optimised variable is
a spectrum whose frequencies are scaled by ``1/f``, so every spatial frequency has
about the same energy in gradient steps (plain pixels favour high-frequency
noise); the three channels are mixed by the square root of ImageNet's colour
correlation, so the optimiser moves along decorrelated colour axes; a sigmoid maps
the result into ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# lucid's color_correlation_svd_sqrt: the square root of ImageNet's RGB covariance (its SVD's U·sqrt(S)).
COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
# lucid divides by the largest column norm so the mixing does not change the overall scale.
_MAX_NORM = float(torch.linalg.vector_norm(COLOR_CORRELATION_SVD_SQRT, dim=0).max())
COLOR_MIX = COLOR_CORRELATION_SVD_SQRT / _MAX_NORM


def rfft2d_freqs(h: int, w: int) -> torch.Tensor:
    """Spatial frequency magnitude of each ``rfft2`` coefficient, ``[h, w // 2 + 1]`` (lucid's rfft2d_freqs)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(nn.Module):
    """``n`` RGB images of ``h x w`` in ``[0, 1]`` from a 1/f-scaled spectrum and decorrelated colours.

    ``forward()`` returns ``[n, 3, h, w]``; the only parameter is ``spectrum``
    (real and imaginary parts, ``[n, 3, h, w // 2 + 1, 2]``), initialised with
    N(0, ``sd``²), image ``i`` from ``generators[i]`` (so a seed fixes each image's
    start whatever else is in the batch); None: torch's global generator.
    """

    def __init__(
        self,
        n: int,
        h: int,
        w: int,
        sd: float = 0.01,
        decay_power: float = 1.0,
        generators: Sequence[torch.Generator] | None = None,
    ) -> None:
        super().__init__()
        if n < 1 or h < 2 or w < 2:
            raise ValueError(f"FourierImage(n={n}, h={h}, w={w}): need n >= 1 and an image of at least 2 x 2")
        self.h, self.w = h, w
        freqs = rfft2d_freqs(h, w)
        # 1/f scaling (the DC term capped at 1/max(h, w)); sqrt(h*w) undoes irfft2's 1/(h*w).
        scale = (1.0 / freqs.clamp_min(1.0 / max(h, w))) ** decay_power * (h * w) ** 0.5
        self.register_buffer("scale", scale[None, None, :, :, None], persistent=False)
        self.register_buffer("color_mix", COLOR_MIX.clone(), persistent=False)
        shape = (3, *freqs.shape, 2)
        if generators is None:
            init = torch.randn((n, *shape))
        elif len(generators) != n:
            raise ValueError(f"FourierImage: {n} images but {len(generators)} generators; pass one per image")
        else:
            init = torch.stack([torch.randn(shape, generator=g) for g in generators])
        init = init * sd
        self.spectrum = nn.Parameter(init)

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        img = torch.fft.irfft2(spec, s=(self.h, self.w)) / 4.0  # lucid's /4: a gentler start for the sigmoid
        # Colour decorrelation: each pixel's 3 values are mixed by COLOR_MIX (lucid: t @ COLOR_MIX.T).
        img = torch.einsum("nchw,dc->ndhw", img, self.color_mix)
        return torch.sigmoid(img)
