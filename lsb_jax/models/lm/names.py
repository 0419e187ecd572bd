"""One name table per family: Hugging Face tensor names <-> `Decoder` parameter paths.

A rule is (hf_name, our_paths, kind) with `{i}` standing for the layer index. Kinds:
"copy" (same array), "linear" (HF [out, in] <-> our [in, *out]), "linear_nh" (HF [D, N*H] <->
our [N, H, D]), "bias" (flat <-> our shape),
"qkv" (GPT-NeoX fused [N*3*H, ...] <-> our q, k, v). Rules whose parameters the configured
model lacks (biases, q/k norms, untied heads) are dropped, so the tables hold no config logic.
"""

from __future__ import annotations

import math

import numpy as np

Rule = tuple[str, tuple[str, ...], str]


def _linear(hf: str, ours: str, bias: bool = True) -> list[Rule]:
    kind = "linear_nh" if ours.endswith("attn.o") else "linear"
    rules = [(f"{hf}.weight", (f"{ours}.kernel",), kind)]
    return rules + [(f"{hf}.bias", (f"{ours}.bias",), "bias")] if bias else rules


def _norm(hf: str, ours: str) -> list[Rule]:
    return [(f"{hf}.weight", (f"{ours}.scale",), "copy"), (f"{hf}.bias", (f"{ours}.bias",), "copy")]


def _llama_like() -> list[Rule]:
    p, a = "model.layers.{i}", "layers.{i}"
    return [
        ("model.embed_tokens.weight", ("embed",), "copy"),
        *_norm(f"{p}.input_layernorm", f"{a}.attn_norm"),
        *_norm(f"{p}.post_attention_layernorm", f"{a}.mlp_norm"),
        *[r for x in "qkv" for r in _linear(f"{p}.self_attn.{x}_proj", f"{a}.attn.{x}")],
        *_linear(f"{p}.self_attn.o_proj", f"{a}.attn.o"),
        *_norm(f"{p}.self_attn.q_norm", f"{a}.attn.q_norm"),
        *_norm(f"{p}.self_attn.k_norm", f"{a}.attn.k_norm"),
        *[r for x in ("gate", "up", "down") for r in _linear(f"{p}.mlp.{x}_proj", f"{a}.mlp.{x}")],
        *_norm("model.norm", "final_norm"),
        *_linear("lm_head", "lm_head"),
    ]


def _gemma3() -> list[Rule]:
    p, a = "model.layers.{i}", "layers.{i}"
    rules = [r for r in _llama_like() if "post_attention_layernorm" not in r[0]]
    return rules + [
        *_norm(f"{p}.post_attention_layernorm", f"{a}.post_attn_norm"),
        *_norm(f"{p}.pre_feedforward_layernorm", f"{a}.mlp_norm"),
        *_norm(f"{p}.post_feedforward_layernorm", f"{a}.post_mlp_norm"),
    ]


def _phi() -> list[Rule]:
    p, a = "model.layers.{i}", "layers.{i}"
    return [
        ("model.embed_tokens.weight", ("embed",), "copy"),
        *_norm(f"{p}.input_layernorm", f"{a}.attn_norm"),
        *[r for x in "qkv" for r in _linear(f"{p}.self_attn.{x}_proj", f"{a}.attn.{x}")],
        *_linear(f"{p}.self_attn.dense", f"{a}.attn.o"),
        *_norm(f"{p}.self_attn.q_layernorm", f"{a}.attn.q_norm"),
        *_norm(f"{p}.self_attn.k_layernorm", f"{a}.attn.k_norm"),
        *_linear(f"{p}.mlp.fc1", f"{a}.mlp.up"),
        *_linear(f"{p}.mlp.fc2", f"{a}.mlp.down"),
        *_norm("model.final_layernorm", "final_norm"),
        *_linear("lm_head", "lm_head"),
    ]


def _gpt_neox() -> list[Rule]:
    p, a = "gpt_neox.layers.{i}", "layers.{i}"
    qkv = tuple(f"{a}.attn.{x}" for x in "qkv")
    return [
        ("gpt_neox.embed_in.weight", ("embed",), "copy"),
        *_norm(f"{p}.input_layernorm", f"{a}.attn_norm"),
        *_norm(f"{p}.post_attention_layernorm", f"{a}.mlp_norm"),
        (f"{p}.attention.query_key_value.weight", tuple(f"{x}.kernel" for x in qkv), "qkv"),
        (f"{p}.attention.query_key_value.bias", tuple(f"{x}.bias" for x in qkv), "qkv"),
        *_linear(f"{p}.attention.dense", f"{a}.attn.o"),
        *_linear(f"{p}.mlp.dense_h_to_4h", f"{a}.mlp.up"),
        *_linear(f"{p}.mlp.dense_4h_to_h", f"{a}.mlp.down"),
        *_norm("gpt_neox.final_layer_norm", "final_norm"),
        *_linear("embed_out", "lm_head", bias=False),
    ]


TABLES: dict[str, list[Rule]] = {
    "llama": _llama_like(), "qwen3": _llama_like(), "gemma3_text": _gemma3(),
    "phi": _phi(), "gpt_neox": _gpt_neox(),
}
# Names some checkpoints use for the same tensor (read on load, never written).
ALIASES: dict[str, dict[str, str]] = {"gpt_neox": {"embed_out.weight": "lm_head.weight"}}
# Checkpoint tensors that are not parameters (old buffers) and are skipped on load.
IGNORED = (r".*\.rotary_emb\.inv_freq$", r".*\.attention\.(bias|masked_bias)$")


def runtime_module(family: str, module: str) -> str:
    """The name the installed transformers gives checkpoint module `module` at run time (what a
    `peft` adapter must target). GPT-NeoX's head is saved as `embed_out` but is the module `lm_head`
    since transformers 5 (which renames the tensor on load); older versions keep `embed_out`."""
    if family == "gpt_neox" and module == "embed_out":
        return "lm_head" if _neox_head_is_lm_head() else "embed_out"
    return module


def _neox_head_is_lm_head() -> bool:
    try:
        import inspect  # noqa: PLC0415

        from transformers.models.gpt_neox import modeling_gpt_neox  # noqa: PLC0415
        return "self.embed_out" not in inspect.getsource(modeling_gpt_neox.GPTNeoXForCausalLM.__init__)
    except (ImportError, OSError, TypeError):   # no transformers (or no source): the current name
        return True


def expand(family: str, num_layers: int, our_paths: set[str]) -> list[Rule]:
    """The family's rules with `{i}` filled in, restricted to parameters the model has."""
    out = []
    for hf, ours, kind in TABLES[family]:
        for i in range(num_layers) if "{i}" in hf else [None]:
            fill = (lambda s: s.format(i=i)) if i is not None else (lambda s: s)
            paths = tuple(fill(o) for o in ours)
            if all(o in our_paths for o in paths):
                out.append((fill(hf), paths, kind))
    return out


def _n_in(kind: str) -> int:
    return 2 if kind == "linear_nh" else 1


def hf_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the HF tensor that holds parameters (of which the first has `shape`)."""
    if kind == "copy":
        return shape
    if kind == "bias":
        return (math.prod(shape),)
    if kind in ("linear", "linear_nh"):
        n = _n_in(kind)
        return (math.prod(shape[n:]), math.prod(shape[:n]))
    if len(shape) == 3:  # qkv kernel, ours [D, N, H]
        return (3 * shape[1] * shape[2], shape[0])
    return (3 * math.prod(shape),)  # qkv bias, ours [N, H]


def to_ours(kind: str, w: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """One HF tensor -> our parameter(s) (host numpy)."""
    if kind == "copy":
        return [w]
    if kind == "bias":
        return [w.reshape(shape)]
    if kind in ("linear", "linear_nh"):
        return [np.ascontiguousarray(w.T).reshape(shape)]
    if len(shape) == 3:  # [N*3*H, D] -> 3 x [D, N, H]
        D, N, H = shape
        w_Nx3xHxD = w.reshape(N, 3, H, D)
        return [np.ascontiguousarray(w_Nx3xHxD[:, j].transpose(2, 0, 1)) for j in range(3)]
    N, H = shape
    return [np.ascontiguousarray(w.reshape(N, 3, H)[:, j]) for j in range(3)]


def to_hf(kind: str, ws: list[np.ndarray]) -> np.ndarray:
    """Our parameter(s) -> one HF tensor (inverse of `to_ours`)."""
    w = ws[0]
    if kind in ("copy", "bias"):
        return np.ascontiguousarray(w.reshape(hf_shape(kind, w.shape)))
    if kind in ("linear", "linear_nh"):
        n = _n_in(kind)
        return np.ascontiguousarray(w.reshape(math.prod(w.shape[:n]), -1).T)
    if w.ndim == 3:  # 3 x [D, N, H] -> [N*3*H, D]
        D, N, H = w.shape
        w_Nx3xHxD = np.stack([x.transpose(1, 2, 0) for x in ws], axis=1)
        return np.ascontiguousarray(w_Nx3xHxD.reshape(N * 3 * H, D))
    return np.ascontiguousarray(np.stack(ws, axis=1).reshape(-1))
