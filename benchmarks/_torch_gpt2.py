"""The PyTorch twin of `lsb_jax.models.gpt2` for benchmarks/gpt2_step.py (same math, same weights).

Written as a PyTorch user would (nanoGPT style): `nn.Linear` with a fused QKV, `nn.LayerNorm`,
`F.scaled_dot_product_attention(is_causal=True)`, tanh GELU. `load_jax_params` copies our
parameters in, so both start from the same initialization.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, D: int, N: int, F_: int, eps: float):
        super().__init__()
        self.N = N
        self.ln1 = nn.LayerNorm(D, eps=eps)
        self.qkv = nn.Linear(D, 3 * D)
        self.out = nn.Linear(D, D)
        self.ln2 = nn.LayerNorm(D, eps=eps)
        self.fc = nn.Linear(D, F_)
        self.proj = nn.Linear(F_, D)

    def forward(self, h):
        B, T, D = h.shape
        qkv = self.qkv(self.ln1(h)).view(B, T, 3, self.N, D // self.N).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)  # [B, N, T, H]
        h = h + self.out(a.transpose(1, 2).reshape(B, T, D))
        return h + self.proj(F.gelu(self.fc(self.ln2(h)), approximate="tanh"))


class TorchGPT2(nn.Module):
    """Float-input GPT-2 with linear read-in/read-out (the ICL model)."""

    def __init__(self, num_layers: int, num_heads: int, width: int, max_len: int, input_dim: int,
                 output_dim: int, mlp_ratio: int = 4, eps: float = 1e-5):
        super().__init__()
        self.read_in = nn.Linear(input_dim, width)
        self.wpe = nn.Parameter(torch.zeros(max_len, width))
        self.blocks = nn.ModuleList([Block(width, num_heads, mlp_ratio * width, eps) for _ in range(num_layers)])
        self.lnf = nn.LayerNorm(width, eps=eps)
        self.read_out = nn.Linear(width, output_dim)

    def forward(self, x):
        h = self.read_in(x) + self.wpe[: x.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.read_out(self.lnf(h))


def load_jax_params(model: TorchGPT2, params) -> TorchGPT2:
    """Copy `lsb_jax.models.gpt2` parameters (`nnx.to_pure_dict` of a float-input model) into `model`."""
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))
    D = model.wpe.shape[1]
    with torch.no_grad():
        model.read_in.weight.copy_(t(params["read_in_kernel"]).T)
        model.read_in.bias.copy_(t(params["read_in_bias"]))
        model.wpe.copy_(t(params["wpe"]))
        for i, b in enumerate(model.blocks):
            p = params["blocks"][i]
            b.ln1.weight.copy_(t(p["ln1_scale"]))
            b.ln1.bias.copy_(t(p["ln1_bias"]))
            b.qkv.weight.copy_(t(p["qkv_kernel"]).reshape(D, 3 * D).T)
            b.qkv.bias.copy_(t(p["qkv_bias"]).reshape(-1))
            b.out.weight.copy_(t(p["out_kernel"]).reshape(D, D).T)
            b.out.bias.copy_(t(p["out_bias"]))
            b.ln2.weight.copy_(t(p["ln2_scale"]))
            b.ln2.bias.copy_(t(p["ln2_bias"]))
            b.fc.weight.copy_(t(p["fc_kernel"]).T)
            b.fc.bias.copy_(t(p["fc_bias"]))
            b.proj.weight.copy_(t(p["proj_kernel"]).T)
            b.proj.bias.copy_(t(p["proj_bias"]))
        model.lnf.weight.copy_(t(params["lnf_scale"]))
        model.lnf.bias.copy_(t(params["lnf_bias"]))
        model.read_out.weight.copy_(t(params["read_out_kernel"]).T)
        model.read_out.bias.copy_(t(params["read_out_bias"]))
    return model
