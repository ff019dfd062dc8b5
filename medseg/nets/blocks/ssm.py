"""A selective state-space (Mamba-2 style) token mixer in pure PyTorch: chunked SSD scan, no CUDA extension.

Cost per sequence of length L: O(L * chunk * heads) for the intra-chunk part plus O(L / chunk) state passes, so
it runs on CPU. Reference: Dao & Gu 2024 ("Transformers are SSMs"), the minimal discrete SSD algorithm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def segment_sum(cumulative: torch.Tensor) -> torch.Tensor:
    """Cumulative sums ``c (..., T)`` of ``x`` -> ``(..., T, T)``: ``out[i, j] = x[j+1] + ... + x[i] = c[i] - c[j]``
    for ``i >= j``, ``-inf`` above the diagonal (as the SSD kernels do; within a chunk the difference is exact
    enough in float32)."""
    t = cumulative.shape[-1]
    lower = torch.tril(torch.ones(t, t, dtype=torch.bool, device=cumulative.device))
    return (cumulative[..., :, None] - cumulative[..., None, :]).masked_fill(~lower, float("-inf"))


def ssd_scan(x: torch.Tensor, log_decay: torch.Tensor, b: torch.Tensor, c: torch.Tensor, chunk: int) -> torch.Tensor:
    """Causal scan ``h_t = exp(a_t) h_{t-1} + B_t x_t``, ``y_t = C_t h_t`` in chunks.

    ``x (Bt, L, H, P)``, ``log_decay = a (Bt, L, H)``, ``b, c (Bt, L, H, N)``; ``L`` a multiple of ``chunk``.
    Returns ``y (Bt, L, H, P)``.
    """
    bt, length, h, p = x.shape
    n_chunks = length // chunk
    x = x.reshape(bt, n_chunks, chunk, h, p)
    b = b.reshape(bt, n_chunks, chunk, h, -1)
    c = c.reshape(bt, n_chunks, chunk, h, -1)
    a = log_decay.reshape(bt, n_chunks, chunk, h).permute(0, 3, 1, 2)  # (Bt, H, chunks, chunk)
    a_cum = torch.cumsum(a, dim=-1)
    within = torch.exp(segment_sum(a_cum))  # (Bt, H, chunks, chunk, chunk)
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", c, b, within, x)
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", b, decay_to_end, x)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    across = torch.exp(segment_sum(torch.cumsum(F.pad(a_cum[..., -1], (1, 0)), dim=-1)))  # (Bt, H, n+1, n+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", across, states)[:, :-1]
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", c, states, torch.exp(a_cum))
    return (y_diag + y_off).reshape(bt, length, h, p)


class SSMMixer(nn.Module):
    """Mamba-2 style mixer on tokens ``(B, L, dim) -> (B, L, dim)``: input projection, causal depthwise conv,
    selective scan with a learned per-head decay and input-dependent step, gated RMS norm, output projection."""

    def __init__(self, dim: int, *, d_state: int = 16, expand: int = 2, head_dim: int = 16, conv_kernel: int = 4,
                 chunk: int = 64):
        super().__init__()
        inner = expand * dim
        self.inner, self.d_state, self.chunk = inner, d_state, chunk
        self.heads = max(inner // head_dim, 1)
        self.head_dim = inner // self.heads
        conv_channels = inner + 2 * d_state
        self.in_proj = nn.Linear(dim, 2 * inner + 2 * d_state + self.heads, bias=False)
        self.conv = nn.Conv1d(conv_channels, conv_channels, conv_kernel, groups=conv_channels,
                              padding=conv_kernel - 1)
        self.dt_bias = nn.Parameter(torch.log(torch.expm1(torch.linspace(1e-3, 1e-1, self.heads))))
        self.a_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, self.heads)))
        self.skip = nn.Parameter(torch.ones(self.heads))
        self.norm = nn.RMSNorm(inner, eps=1e-5)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, _ = tokens.shape
        z, xbc, dt = torch.split(self.in_proj(tokens), [self.inner, self.inner + 2 * self.d_state, self.heads], -1)
        xbc = F.silu(self.conv(xbc.transpose(1, 2))[..., :length].transpose(1, 2))  # causal conv
        x, b, c = torch.split(xbc, [self.inner, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(dt + self.dt_bias)  # (B, L, H)
        pad = (-length) % self.chunk
        x = x.reshape(batch, length, self.heads, self.head_dim)
        xs, dts, bs, cs = (F.pad(t, (0, 0) * (t.ndim - 2) + (0, pad)) for t in (x, dt, b, c))
        bs = bs[:, :, None].expand(-1, -1, self.heads, -1)
        cs = cs[:, :, None].expand(-1, -1, self.heads, -1)
        y = ssd_scan(xs * dts[..., None], -torch.exp(self.a_log) * dts, bs, cs, self.chunk)[:, :length]
        y = y + x * self.skip[:, None]
        y = self.norm(y.reshape(batch, length, self.inner) * F.silu(z))
        return self.out_proj(y)


class SSMLayer(nn.Module):
    """Feature map ``(B, C, *S)`` -> ``(B, C, *S)``: flatten to ``prod(S)`` tokens (raster order), pre-norm SSM
    mixer with a residual connection, reshape back (U-Mamba's Mamba layer)."""

    def __init__(self, channels: int, **mixer):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mixer = SSMMixer(channels, **mixer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.mixer(self.norm(tokens))
        return tokens.transpose(1, 2).reshape(x.shape)
