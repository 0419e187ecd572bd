"""`DecoderConfig`: every supported causal-LM family as switches of one decoder.

Built from a Hugging Face config (`transformers.AutoConfig`, which normalizes legacy keys such as
`rope_theta`, `rope_scaling`, `rotary_pct`, `rope_local_base_freq` into `rope_parameters`).
Axis letters used across `lsb_jax.models.lm`: B batch, T query length, S key length, D hidden,
N query heads, K key/value heads, G = N // K, H head dim, R rotary dims, F MLP width, V vocab.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from typing import Any, Literal

from lsb_jax.errors import UsageError

FAMILIES = ("gpt_neox", "phi", "llama", "qwen3", "gemma3_text")
FULL, SLIDING = "full_attention", "sliding_attention"
ACTIVATIONS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "silu", "swish", "relu")


class ConfigError(UsageError, ValueError):
    """A Hugging Face config that this decoder cannot represent; the message names the key."""


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding of one layer type: `rotary_dim` leading dims of each head are rotated.

    An odd `rotary_dim` (GPT-NeoX with rotary_pct * head_dim odd) is what transformers does with it:
    ceil(rotary_dim / 2) frequencies theta^(-2i / rotary_dim), rotating rotary_dim + 1 dims."""

    theta: float
    rotary_dim: int
    kind: Literal["default", "linear", "llama3", "yarn", "dynamic"] = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    # yarn: the ramp between extrapolated and interpolated frequencies, and the factor cos/sin are
    # multiplied by (transformers' `attention_factor`)
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    truncate: bool = True
    attention_factor: float = 1.0
    # dynamic (NTK): the base grows with the sequence length beyond this many positions
    max_position_embeddings: int = 0


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Architecture of a decoder-only LM; hashable, so it can be a static jit argument.

    `block`: "sequential" (x + attn, then + mlp), "parallel" (x + attn(norm1 x) + mlp(norm2 x),
    GPT-NeoX) or "parallel_shared" (one norm feeds both, Phi). `sandwich_norms` adds Gemma's
    post-attention and post-MLP norms. `hf_config_json` keeps the source config for export.
    """

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    norm: Literal["layernorm", "rmsnorm"]
    norm_eps: float
    activation: str
    gated_mlp: bool
    rope: tuple[tuple[str, RopeConfig], ...]
    layer_types: tuple[str, ...]
    norm_unit_offset: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    qk_norm_dim: int = 0
    block: Literal["sequential", "parallel", "parallel_shared"] = "sequential"
    sandwich_norms: bool = False
    sliding_window: int | None = None
    attn_scale: float = 0.0
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    embed_scale: float | None = None
    tie_embeddings: bool = False
    lm_head_bias: bool = False
    hf_config_json: str = dataclasses.field(default="", compare=False, repr=False)

    def rope_for(self, layer_type: str) -> RopeConfig:
        """The rotary configuration of layers of `layer_type`."""
        return dict(self.rope)[layer_type]

    @property
    def hf_config(self) -> dict[str, Any]:
        """The Hugging Face config dict this was built from (empty if built by hand)."""
        return json.loads(self.hf_config_json) if self.hf_config_json else {}

    @classmethod
    def from_hf(cls, hf_config: Any) -> DecoderConfig:
        """From a `transformers.PretrainedConfig`; raises `ConfigError` naming the bad key."""
        return _from_hf(hf_config)


def _get(hf: Any, key: str, default: Any = ...) -> Any:
    value = getattr(hf, key, None)
    if value is None:
        if default is ...:
            raise ConfigError(f"config field {key!r} is missing (model_type {hf.model_type!r})")
        return default
    return value


def _yarn(params: dict, base: dict, max_positions: int | None, key: str) -> RopeConfig:
    """YaRN as transformers computes it (`_compute_yarn_parameters`)."""
    try:
        original = int(params["original_max_position_embeddings"])
    except KeyError:
        raise ConfigError(f"config field {key!r} (yarn rope) lacks 'original_max_position_embeddings'") from None
    factor = params.get("factor")
    if factor is None:
        if not max_positions:
            raise ConfigError(f"config field {key!r} (yarn rope) has no 'factor' and no max_position_embeddings")
        factor = max_positions / original
    factor = float(factor)

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = params.get("attention_factor")
    if attention is None:
        m, m_all = params.get("mscale"), params.get("mscale_all_dim")
        attention = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
    return RopeConfig(**base, factor=factor, original_max_position_embeddings=original,
                      beta_fast=float(params.get("beta_fast") or 32), beta_slow=float(params.get("beta_slow") or 1),
                      truncate=bool(params.get("truncate", True)), attention_factor=float(attention))


def _rope(params: dict | None, head_dim: int, key: str, max_positions: int | None = None) -> RopeConfig:
    if not params or "rope_theta" not in params:
        raise ConfigError(f"config field {key!r} has no 'rope_theta': {params!r}")
    kind = params.get("rope_type", params.get("type", "default"))
    rotary_dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    if rotary_dim <= 0 or rotary_dim + rotary_dim % 2 > head_dim:   # odd: one more dim rotated (`RopeConfig`)
        raise ConfigError(f"config field {key}.partial_rotary_factor gives {rotary_dim} rotary dims "
                          f"of head_dim {head_dim}; transformers cannot rotate them either")
    base = dict(theta=float(params["rope_theta"]), rotary_dim=rotary_dim, kind=kind)
    if kind == "default":
        return RopeConfig(**base)
    if kind == "linear":
        return RopeConfig(**base, factor=float(params["factor"]))
    if kind == "llama3":
        try:
            return RopeConfig(
                **base, factor=float(params["factor"]),
                low_freq_factor=float(params["low_freq_factor"]),
                high_freq_factor=float(params["high_freq_factor"]),
                original_max_position_embeddings=int(params["original_max_position_embeddings"]))
        except KeyError as e:
            raise ConfigError(f"config field {key!r} (llama3 rope) lacks {e.args[0]!r}") from None
    if kind == "yarn":
        if rotary_dim % 2:
            raise ConfigError(f"config field {key!r} (yarn rope) needs an even number of rotary dims, not {rotary_dim}")
        return _yarn(params, base, max_positions, key)
    if kind == "dynamic":
        if "factor" not in params or not max_positions:
            raise ConfigError(f"config field {key!r} (dynamic rope) needs 'factor' and max_position_embeddings")
        if rotary_dim <= 2:
            raise ConfigError(f"config field {key!r} (dynamic rope) needs more than 2 rotary dims")
        return RopeConfig(**base, factor=float(params["factor"]), max_position_embeddings=int(max_positions))
    raise ConfigError(f"config field {key}.rope_type={kind!r} is not supported "
                      "(supported: default, linear, llama3, yarn, dynamic)")


def _from_hf(hf: Any) -> DecoderConfig:
    family = getattr(hf, "model_type", None)
    if family not in FAMILIES:
        raise ConfigError(f"config field 'model_type'={family!r} is not supported "
                          f"(supported: {', '.join(FAMILIES)})")
    D, N = int(_get(hf, "hidden_size")), int(_get(hf, "num_attention_heads"))
    L = int(_get(hf, "num_hidden_layers"))
    K = int(_get(hf, "num_key_value_heads", N))
    H = int(getattr(hf, "head_dim", None) or 0) if family != "gpt_neox" else 0
    if not H:
        if D % N:
            raise ConfigError(f"config field 'hidden_size'={D} is not divisible by "
                              f"'num_attention_heads'={N} and there is no 'head_dim'")
        H = D // N
    if N % K:
        raise ConfigError(f"config field 'num_attention_heads'={N} is not a multiple of "
                          f"'num_key_value_heads'={K}")
    act_key = "hidden_activation" if family == "gemma3_text" else "hidden_act"
    act = _get(hf, act_key)
    if act not in ACTIVATIONS:
        raise ConfigError(f"config field {act_key!r}={act!r} is not supported "
                          f"({', '.join(ACTIVATIONS)})")
    layer_types = tuple(getattr(hf, "layer_types", None) or (FULL,) * L)
    if len(layer_types) != L or not set(layer_types) <= {FULL, SLIDING}:
        raise ConfigError(f"config field 'layer_types'={list(layer_types)} does not give "
                          f"{L} layers of {FULL!r}/{SLIDING!r}")
    window = getattr(hf, "sliding_window", None) if SLIDING in layer_types else None
    if SLIDING in layer_types and not window:
        raise ConfigError("config field 'sliding_window' is missing but 'layer_types' has sliding layers")
    rope_params = _get(hf, "rope_parameters")
    per_type = family == "gemma3_text"  # one rope_parameters entry per layer type
    max_positions = getattr(hf, "max_position_embeddings", None)
    rope = tuple((t, _rope(rope_params.get(t) if per_type else rope_params, H,
                           f"rope_parameters.{t}" if per_type else "rope_parameters", max_positions))
                 for t in sorted(set(layer_types)))
    common = dict(
        family=family, vocab_size=int(_get(hf, "vocab_size")), hidden_size=D, num_layers=L,
        num_heads=N, num_kv_heads=K, head_dim=H, intermediate_size=int(_get(hf, "intermediate_size")),
        activation=act, rope=rope, layer_types=layer_types, sliding_window=window,
        attn_scale=H ** -0.5, tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
        hf_config_json=json.dumps(hf.to_dict(), sort_keys=True, default=str),
    )
    if family == "gpt_neox":
        return DecoderConfig(
            **common, norm="layernorm", norm_eps=float(_get(hf, "layer_norm_eps")), gated_mlp=False,
            attention_bias=bool(_get(hf, "attention_bias", True)), mlp_bias=True,
            block="parallel" if _get(hf, "use_parallel_residual", True) else "sequential")
    if family == "phi":
        if common["tie_embeddings"]:
            raise ConfigError("config field 'tie_word_embeddings'=True is not supported for phi "
                              "(its lm_head has a bias)")
        return DecoderConfig(
            **common, norm="layernorm", norm_eps=float(_get(hf, "layer_norm_eps")), gated_mlp=False,
            attention_bias=True, mlp_bias=True, block="parallel_shared", lm_head_bias=True,
            qk_norm=bool(getattr(hf, "qk_layernorm", False)), qk_norm_dim=D // N)
    rms = dict(norm="rmsnorm", norm_eps=float(_get(hf, "rms_norm_eps")), gated_mlp=True,
               attention_bias=bool(getattr(hf, "attention_bias", False)))
    if family == "llama":
        return DecoderConfig(**common, **rms, mlp_bias=bool(getattr(hf, "mlp_bias", False)))
    if family == "qwen3":
        return DecoderConfig(**common, **rms, qk_norm=True, qk_norm_dim=H)
    if getattr(hf, "use_bidirectional_attention", False):
        raise ConfigError("config field 'use_bidirectional_attention'=True is not supported")
    # transformers' Gemma 3 ignores attn_logit_softcapping (only final_logit_softcapping is applied):
    # say so, so that nobody expects an effect from it here either
    if getattr(hf, "attn_logit_softcapping", None):
        warnings.warn(f"config field 'attn_logit_softcapping'={hf.attn_logit_softcapping} has no effect: "
                      "transformers' Gemma 3 ignores it too, and so does this loader (logits stay equal)",
                      stacklevel=3)
    common.update(attn_scale=float(_get(hf, "query_pre_attn_scalar")) ** -0.5, embed_scale=D ** 0.5)
    return DecoderConfig(
        **common, **rms, qk_norm=True, qk_norm_dim=H, norm_unit_offset=True, sandwich_norms=True,
        final_logit_softcap=getattr(hf, "final_logit_softcapping", None))
