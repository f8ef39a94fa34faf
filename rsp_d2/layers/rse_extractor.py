"""The RSE module (Sec. III-A, Fig. 3a): the learnt projections around the relation of Eq. 1-3.

Pure PyTorch: nothing here imports detectron2.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .rse import run_rse
from .rse_checks import InvalidArgument, RSEWindow
from .rse_reference import relative_position_map, run_relation_weights
from .row_bands import BAND_ROWS, band_upsampler, row_bands

__all__ = ["RelationalSemanticsExtractor"]


class RelationalSemanticsExtractor(nn.Module):
    """RSE (Sec. III-A, Fig. 3a): each pixel of x gathers context from the k x k region of z
    centred on it, weighted by its relation to each position of that region (Eq. 1-3).

    f_q, f_k are 1x1 convs C -> C/d; f_v is a 1x1 conv C -> C; f_p is a linear C -> C/d on the
    normalized relative-position map p (:func:`relative_position_map`). The arguments are
    checked here, once (:class:`~rsp_d2.layers.rse_checks.InvalidArgument`); forward checks
    only the maps it is given.
    """

    def __init__(self, channels: int, kernel_size: int = 7, dilation: int = 1,
                 reduction: int = 2, num_heads: int = 1, pos_embedding: bool = True,
                 impl: str = "auto"):
        super().__init__()
        self.window = RSEWindow(kernel_size, dilation)
        if not (isinstance(reduction, int) and reduction >= 1 and channels % reduction == 0):
            raise InvalidArgument("reduction", reduction, "a divisor of channels",
                                  {"channels": channels})
        mid = channels // reduction
        if not (isinstance(num_heads, int) and num_heads >= 1 and mid % num_heads == 0
                and channels % num_heads == 0):
            raise InvalidArgument("num_heads", num_heads, "a divisor of both channels and "
                                  "channels / reduction", {"channels": channels,
                                                           "reduction": reduction})
        self.num_heads, self.impl = num_heads, impl
        self.query = nn.Conv2d(channels, mid, 1)
        self.key = nn.Conv2d(channels, mid, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.pos = nn.Linear(channels, mid) if pos_embedding else None
        self.register_buffer("pos_map", relative_position_map(kernel_size, channels), persistent=False)

    @property
    def kernel_size(self) -> int:
        return self.window.kernel_size

    @property
    def dilation(self) -> int:
        return self.window.dilation

    def _key_value(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C/d + C, H, W): f_k(z) and f_v(z) stacked, as one 1x1 conv: z is read once, by
        one larger matrix product (the modules keep their own parameters, so checkpoints are
        unchanged)."""
        return F.conv2d(z, torch.cat([self.key.weight, self.value.weight]),
                        torch.cat([self.key.bias, self.value.bias]))

    def _split_key_value(self, kv: torch.Tensor):
        """(N, C/d + C, H, W) -> key (N, C/d, H, W), value (N, C, H, W), views."""
        return kv.split([self.key.out_channels, self.value.out_channels], dim=1)

    def _pos_embedding(self, dtype: torch.dtype):
        """f_p(p) (k*k, C/d) of Eq. 3 in `dtype`, or None without the position embedding."""
        return self.pos(self.pos_map.to(dtype)) if self.pos is not None else None

    def embeddings(self, x: torch.Tensor, z: torch.Tensor):
        """query (N, C/d, H, W), key (N, C/d, H, W), value (N, C, H, W), pos (k*k, C/d) or None."""
        key, value = self._split_key_value(self._key_value(z))
        return self.query(x), key, value, self._pos_embedding(x.dtype)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) low-level map; z: (N, C, H, W) high-level map upsampled to x.
        Returns z-hat: (N, C, H, W)."""
        q, k, v, pos = self.embeddings(x, z)
        return run_rse(q, k, v, pos, self.window, self.num_heads, self.impl)

    @torch.no_grad()
    def add_to_(self, x: torch.Tensor, a: torch.Tensor, rows: int = BAND_ROWS) -> torch.Tensor:
        """``x + forward(x, up(a))`` written into x, without autograd: the RSP of Eq. 4 at
        inference, where ``up`` resizes bilinearly to x's size (align_corners=False, as the
        head does), with the relation's maps held one band of rows at a time.

        f_k and f_v are 1x1 convs and bilinear upsampling is linear with weights summing to 1,
        so f(up(a)) = up(f(a)): key and value are computed at a's size and upsampled a band at
        a time when x's height is a's times a power of two (an FPN's levels on an input padded
        to the coarsest stride), else once, whole (:func:`band_upsampler`); z = up(a) itself is
        never made. Each band's query and relation also cover the window's reach above and
        below it, whose output is dropped: f_q is 1x1, so the rows a band keeps read only
        their own query, computed before anything is written. The same values as the plain
        call up to float rounding (the products and the interpolation swap places); fewer
        multiply-adds in f_k, f_v, more in the relation (the reach), than the paper's form that
        the FLOP counts trace.

        Args:
            x: (N, C, H, W) the low-level map, overwritten with the result.
            a: (N, C, h, w) the high-level map at its own size.
            rows: output rows per band.

        Returns:
            x.
        """
        height, width = x.shape[-2:]
        key_value = band_upsampler(self._key_value(a), (height, width))
        pos = self._pos_embedding(x.dtype)
        reach = self.dilation * (self.kernel_size // 2)
        for r0, r1, lo, hi in row_bands(height, rows, reach):
            query = self.query(x[..., lo:hi, :])
            key, value = self._split_key_value(key_value(lo, hi).to(query.dtype))
            out = run_rse(query, key, value, pos, self.window, self.num_heads, self.impl)
            x[..., r0:r1, :] += out[..., r0 - lo:r1 - lo, :]
            del query, key, value, out
        return x

    @torch.no_grad()
    def relation_weights(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(N, num_heads, k*k, H, W): what each pixel of x attends to in z (Fig. 1b)."""
        q, k, _, pos = self.embeddings(x, z)
        return run_relation_weights(q, k, pos, self.window, self.num_heads)
