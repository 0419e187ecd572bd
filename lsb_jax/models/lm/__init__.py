"""Causal LMs (GPT-NeoX/Pythia, Phi, Llama 3, Qwen3, Gemma 3) as one Flax NNX decoder.

    model = load_pretrained("path/or/hub-id", dtype=jnp.bfloat16)
    logits_BxTxV = model(tokens_BxT, attention_mask_BxT=mask_BxT)
    loss_B, count_B = sequence_loss(model, {"tokens": ..., "loss_mask": ...})
    save_pretrained(model, "out/")            # loads back with transformers
    tokens_BxN, lengths_B = generate(model, prompt_BxP, mask_BxP, max_new_tokens=64)
    add_lora(model, LoRAConfig(rank=8)); save_pretrained(merge_lora(model), "out/")
    load_pretrained(path, shardings=param_shardings(load_config(path), make_mesh(2, 2, 2)))
"""

from lsb_jax.models.lm.checkpoint import (
    CheckpointError, ModelNotFound, check_checkpoint, check_source, load_config, load_pretrained, load_tokenizer,
    read_params, resolve_folder, save_pretrained,
)
from lsb_jax.models.lm.config import FAMILIES, ConfigError, DecoderConfig, RopeConfig
from lsb_jax.models.lm.generate import generate, generate_text, sample_logits, truncate_at_stop_strings
from lsb_jax.models.lm.layers import LOGICAL_AXES, MUON_IN_AXES, KVCache, init_cache
from lsb_jax.models.lm.lora import LoRAConfig, add_lora, lora_paths, merge_lora
from lsb_jax.models.lm.loss import chunked_cross_entropy, make_loss_fn, sequence_loss
from lsb_jax.models.lm.model import Decoder, positions_from_mask
from lsb_jax.models.lm.sharding import (
    DEFAULT_RULES, batch_sharding, logical_to_spec, make_mesh, param_shardings, shard_batch, shard_model,
)

__all__ = [
    "DEFAULT_RULES", "FAMILIES", "LOGICAL_AXES", "CheckpointError", "ConfigError", "Decoder", "DecoderConfig",
    "KVCache", "LoRAConfig", "MUON_IN_AXES", "ModelNotFound", "RopeConfig", "add_lora", "batch_sharding",
    "check_checkpoint", "check_source", "chunked_cross_entropy",
    "generate",
    "generate_text", "init_cache", "load_config", "load_pretrained", "load_tokenizer", "logical_to_spec",
    "lora_paths", "make_loss_fn", "make_mesh", "merge_lora", "param_shardings", "positions_from_mask",
    "read_params", "resolve_folder", "sample_logits", "save_pretrained", "sequence_loss", "shard_batch",
    "shard_model", "truncate_at_stop_strings",
]
