"""Tiny random Hugging Face causal LMs for the lm_* tests (built offline, saved to a folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import TEST_XLA_FLAGS

VOCAB, T = 96, 12
BASE = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=128)
LLAMA3_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=16)

# name -> (model_type, config overrides, legacy top-level keys written into config.json)
CASES = {
    "neox_parallel": ("gpt_neox", dict(rotary_pct=0.25, use_parallel_residual=True), None),
    # rotary_pct * head_dim = 0.25 * 12 = 3 rotary dims: transformers rotates the rounded-up 4
    "neox_odd_rotary": ("gpt_neox", dict(hidden_size=48, rotary_pct=0.25, use_parallel_residual=True), None),
    "neox_sequential_legacy": ("gpt_neox", dict(use_parallel_residual=False),
                               dict(rotary_pct=0.5, rotary_emb_base=1000.0)),
    "phi2_qk_layernorm_gqa": ("phi", dict(hidden_size=40, num_attention_heads=2, num_key_value_heads=1,
                                          partial_rotary_factor=0.4, qk_layernorm=True), None),
    "llama3_gqa_scaled": ("llama", dict(num_key_value_heads=2,
                                        rope_parameters=dict(rope_theta=500000.0, **LLAMA3_ROPE)), None),
    "llama_legacy_tied_headdim_bias": (
        "llama", dict(num_key_value_heads=1, head_dim=16, tie_word_embeddings=True, attention_bias=True,
                      mlp_bias=True),
        dict(rope_theta=500000.0, rope_scaling=LLAMA3_ROPE)),
    # long-context rope kinds: yarn (ramped frequencies, cos/sin scaled by its attention factor) and
    # dynamic NTK (the base grows past max_position_embeddings = 8 < T; the batch reaches 12)
    "qwen3_yarn": ("qwen3", dict(num_key_value_heads=2, head_dim=16, rope_parameters=dict(
        rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=4)), None),
    "llama_dynamic_ntk": ("llama", dict(max_position_embeddings=8, rope_parameters=dict(
        rope_type="dynamic", rope_theta=10000.0, factor=2.0)), None),
    "qwen3_tied_gqa_sliding": (
        "qwen3", dict(num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, use_sliding_window=True,
                      sliding_window=4, max_window_layers=1), None),
    "gemma3_softcap": (
        "gemma3_text", dict(num_key_value_heads=2, head_dim=16, sliding_window=4,
                            layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=12,
                            final_logit_softcapping=3.0, attn_logit_softcapping=5.0), None),
    "gemma3_legacy_linear": (
        "gemma3_text", dict(num_key_value_heads=1, head_dim=8, sliding_window=3, tie_word_embeddings=False,
                            layer_types=["sliding_attention", "full_attention"]),
        dict(rope_theta=50000.0, rope_local_base_freq=100.0,
             rope_scaling=dict(rope_type="linear", factor=4.0))),
}


def build(name: str, folder: Path, *, seed: int = 0, dtype=None, **save_kw):
    """Save case `name` (weights perturbed so that every quirk shows) and return the HF model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, overrides, legacy = CASES[name]
    cfg = AutoConfig.for_model(model_type, **{**BASE, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder, **save_kw)
    if legacy:
        path = folder / "config.json"
        config = json.loads(path.read_text())
        config.pop("rope_parameters")
        path.write_text(json.dumps({**config, **legacy}, indent=2))
        model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return model


def tokens(batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, VOCAB, (batch, T))

# Tests need correct numbers, not fast kernels: compile tiny programs quickly, at the suite's level
# (conftest; for jits given to library calls, whose own compiler options these replace).
FAST_COMPILE = {"xla_backend_optimization_level": 0} if TEST_XLA_FLAGS else {}
