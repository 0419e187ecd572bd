"""Scoring throughput of a causal LM: our jitted per-example loss vs transformers (PyTorch), one run.

Model: Qwen3-style decoder (4 layers, width 512, 8 heads / 4 kv heads of 64, MLP 1536, vocab
32k, tied embeddings), random init through `transformers` (config -> model -> save_pretrained
into a temporary folder), loaded into `lsb_jax.models.lm.Decoder` with `load_pretrained`.
Same batch (B x 512 tokens, every token a target) for both:
  (a) ours: `jax.jit(make_loss_fn(graphdef, chunk_size=128))` -> per-example mean loss [B]
      (compile time reported apart);
  (b) PyTorch: `torch.no_grad()` forward (eager and sdpa attention, the faster counts; fp32) +
      per-example cross-entropy.
Reported: tokens/s of each (median of `--repeats` interleaved rounds; transformers at 1 thread and
at all cores, the ratio against its faster setting), the max |loss
difference| between the two, and the compiled peak temporary memory (XLA memory analysis,
no weights needed) of the loss of the same model with a 151,936 vocabulary: chunked
(`chunk_size` 128) vs naive (full [B, T, V] fp32 logits, then log-softmax).

    .venv/bin/python benchmarks/lm_scoring.py --quick    # tiny model: seconds (smoke test)
    .venv/bin/python benchmarks/lm_scoring.py            # full size: minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import compare, environment, interleaved, peer_threads, print_table, torch_at_threads  # noqa: E402

from lsb_jax import io  # noqa: E402

FULL = dict(layers=4, width=512, heads=8, kv_heads=4, head_dim=64, mlp=1536, vocab=32000, seq=512, batch=4)
QUICK = dict(layers=2, width=64, heads=4, kv_heads=2, head_dim=16, mlp=128, vocab=1000, seq=64, batch=2)
BIG_VOCAB = 151936


def hf_config(size: dict, vocab: int):
    from transformers import AutoConfig
    return AutoConfig.for_model(
        "qwen3", vocab_size=vocab, hidden_size=size["width"], num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"], num_key_value_heads=size["kv_heads"], head_dim=size["head_dim"],
        intermediate_size=size["mlp"], max_position_embeddings=4096, tie_word_embeddings=True)


def torch_scorer(hf, tokens_BxT: np.ndarray):
    """(score() -> per-example mean loss [B], its first output)."""
    import torch
    ids = torch.tensor(tokens_BxT)
    mask = torch.ones_like(ids)

    def score():
        with torch.no_grad():
            logits = hf(ids, attention_mask=mask).logits
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:],
                                                    reduction="none")
            return nll.mean(1).numpy()

    return score, score()


def our_scorer(folder: Path, tokens_BxT: np.ndarray):
    """(score() -> per-example mean loss [B], compile seconds, its first output)."""
    import jax
    from flax import nnx

    from lsb_jax.models.lm import load_pretrained, make_loss_fn
    graphdef, params = nnx.split(load_pretrained(folder))
    batch = {"tokens": jax.numpy.asarray(tokens_BxT), "loss_mask": jax.numpy.ones(tokens_BxT.shape)}
    t0 = time.perf_counter()
    loss = jax.jit(make_loss_fn(graphdef, chunk_size=128)).lower(params, batch).compile()
    compile_s = time.perf_counter() - t0
    score = lambda: jax.block_until_ready(loss(params, batch))  # noqa: E731
    return score, compile_s, np.asarray(score())


def loss_memory(size: dict, vocab: int) -> dict[str, int]:
    """Compiled peak temporary bytes of the per-example loss: chunked vs full logits."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from lsb_jax.models.lm import Decoder, DecoderConfig, sequence_loss
    cfg = DecoderConfig.from_hf(hf_config(size, vocab))
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))))
    B, T = size["batch"], size["seq"]
    batch = {"tokens": jax.ShapeDtypeStruct((B, T), jnp.int32),
             "loss_mask": jax.ShapeDtypeStruct((B, T), jnp.float32)}

    def chunked(params, batch):
        return sequence_loss(nnx.merge(graphdef, params), batch, chunk_size=128)[0]

    def naive(params, batch):
        logits_BxTxV = nnx.merge(graphdef, params)(batch["tokens"]).astype(jnp.float32)
        logp = jax.nn.log_softmax(logits_BxTxV[:, :-1], axis=-1)
        nll = -jnp.take_along_axis(logp, batch["tokens"][:, 1:, None], axis=-1)[..., 0]
        return (nll * batch["loss_mask"][:, 1:]).sum(1) / batch["loss_mask"][:, 1:].sum(1)

    return {name: jax.jit(fn).lower(abstract, batch).compile().memory_analysis().temp_size_in_bytes
            for name, fn in (("chunked", chunked), ("naive", naive))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model (smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to time (default: 1 and all cores); the ratio is against the best")
    parser.add_argument("--out", default=None, help="JSON of the results (the table row under 'rows')")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(hf_config(size, size["vocab"]), attn_implementation="eager").eval()
    tokens_BxT = np.random.RandomState(0).randint(0, size["vocab"], (size["batch"], size["seq"]))
    n_tokens = tokens_BxT.size
    n_params = sum(p.numel() for p in hf.parameters())
    print(f"model: qwen3 {size} ({n_params / 1e6:.1f}M params)")
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours, compile_s, ours_B = our_scorer(Path(tmp), tokens_BxT)
    score_torch, torch_B = torch_scorer(hf, tokens_BxT)
    hf_sdpa = AutoModelForCausalLM.from_config(hf_config(size, size["vocab"]), attn_implementation="sdpa").eval()
    hf_sdpa.load_state_dict(hf.state_dict())          # the same weights under torch's fused attention
    score_sdpa, _ = torch_scorer(hf_sdpa, tokens_BxT)
    peers = {"transformers": (score_torch, None), "transformers@sdpa": (score_sdpa, None)}   # eager, sdpa
    times = interleaved({"ours": (ours, None), **torch_at_threads(peers, tuple(args.threads or peer_threads()))},
                        rounds=args.repeats)
    row = compare(f"LM scoring qwen3 {n_params / 1e6:.1f}M B{size['batch']} T{size['seq']}", times, "ours",
                  "transformers", work=n_tokens, unit="tokens",
                  shape=f"{size} ({n_params / 1e6:.1f}M params), fp32, transformers' eager and sdpa attention")
    print(f"(a) ours (jax.jit loss)      {row['ours_rate']:10.0f} tokens/s  ({times['ours'] * 1e3:.0f} ms/batch, "
          f"compile {compile_s:.1f} s)")
    print(f"(b) transformers (PyTorch)   {row['peer_best_rate']:10.0f} tokens/s at its best, {row['peer_best']} "
          f"({row['peer_best_s'] * 1e3:.0f} ms/batch)")
    print(f"ratio a/b tokens/s: {row['ratio_vs_best']:.2f}")
    print(f"max |loss_a - loss_b|: {np.abs(ours_B - torch_B).max():.2e}")
    mem = loss_memory(size, 4096 if args.quick else BIG_VOCAB)
    vocab = 4096 if args.quick else BIG_VOCAB
    full_logits = size["batch"] * size["seq"] * vocab * 4
    print(f"loss peak temp memory, vocab {vocab}: chunked {mem['chunked'] / 2**20:.1f} MiB, "
          f"naive {mem['naive'] / 2**20:.1f} MiB (fp32 logits alone {full_logits / 2**20:.1f} MiB); "
          f"ratio naive/chunked {mem['naive'] / max(mem['chunked'], 1):.1f}")
    print_table([row])
    if args.out:
        io.write_json(args.out, {"rows": [row], "loss_memory_bytes": mem, "env": environment(),
                                 "max_abs_loss_diff": float(np.abs(ours_B - torch_B).max())})


if __name__ == "__main__":
    main()
