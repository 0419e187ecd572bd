"""Fine-tuning throughput: our jitted train step vs transformers (PyTorch) on the same CPU, one run.

Model: Qwen3-style decoder (4 layers, width 256, 4 heads / 2 kv heads of 64, MLP 768, vocab 32k,
tied embeddings), random init through `transformers` (config -> model -> save_pretrained into
a temporary folder), loaded into `lsb_jax.models.lm.Decoder` with `load_pretrained`.
Same batch (B x 256 tokens, every token a target) and the same update, full fine-tuning with
AdamW (lr 1e-4, weight decay 0.01), fp32:
  (a) ours: `lsb_jax.llm.finetune.make_finetune_step` jitted with the state donated (the step
      `fit` runs): per-example losses (chunked cross-entropy), gradient, optax AdamW update;
  (b) PyTorch: forward (eager or sdpa attention, the faster) + per-example cross-entropy + backward +
      `torch.optim.AdamW.step()`.
Reported: tokens/s of each (median of `--repeats` interleaved rounds after one warm-up step; compile
time apart; transformers at 1 thread and at all cores), the ratio a/b against transformers' faster
setting, and the loss difference of the first step (same weights, same batch: a correctness check
of the comparison).

    .venv/bin/python benchmarks/llm_finetune.py --quick    # tiny model: seconds (smoke test)
    .venv/bin/python benchmarks/llm_finetune.py            # full size: ~2-4 minutes on 2 CPU cores
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

FULL = dict(layers=4, width=256, heads=4, kv_heads=2, head_dim=64, mlp=768, vocab=32000, seq=256, batch=4)
QUICK = dict(layers=2, width=64, heads=4, kv_heads=2, head_dim=16, mlp=128, vocab=1000, seq=64, batch=2)
LR, WD = 1e-4, 0.01


def hf_config(size: dict):
    from transformers import AutoConfig
    return AutoConfig.for_model(
        "qwen3", vocab_size=size["vocab"], hidden_size=size["width"], num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"], num_key_value_heads=size["kv_heads"], head_dim=size["head_dim"],
        intermediate_size=size["mlp"], max_position_embeddings=4096, tie_word_embeddings=True)


def torch_stepper(hf, tokens_BxT: np.ndarray):
    """(step() -> loss, the loss of the first step at the initial weights)."""
    import torch
    ids = torch.tensor(tokens_BxT)
    mask = torch.ones_like(ids)
    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=LR, weight_decay=WD)

    def step():
        logits = hf(ids, attention_mask=mask).logits
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        loss = nll.mean(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step, step()


def our_stepper(folder: Path, tokens_BxT: np.ndarray):
    """(step() -> loss array, compile seconds, the loss of the first step at the initial weights)."""
    import jax
    import jax.numpy as jnp

    from lsb_jax.llm.finetune import FinetuneConfig, init_finetune_state, make_finetune_step, prepare
    from lsb_jax.models.lm import load_pretrained
    from lsb_jax.optim import OptimConfig
    cfg = FinetuneConfig(optim=OptimConfig(name="adamw", lr=LR, weight_decay=WD), warmup_ratio=0.0, loss_chunk=128)
    split, params = prepare(load_pretrained(folder), cfg)
    optimizer = cfg.optimizer(1000)
    state = init_finetune_state(params, optimizer, 0)
    batch = {"tokens": jnp.asarray(tokens_BxT, jnp.int32), "loss_mask": jnp.ones(tokens_BxT.shape, jnp.int32),
             "attention_mask": jnp.ones(tokens_BxT.shape, jnp.int32)}
    t0 = time.perf_counter()
    step = jax.jit(make_finetune_step(split.graphdef, cfg, optimizer), donate_argnums=0).lower(
        state, batch, split.frozen).compile()
    compile_s = time.perf_counter() - t0
    box = [state]

    def one():
        box[0], metrics = step(box[0], batch, split.frozen)
        return jax.block_until_ready(metrics["loss"])

    return one, compile_s, float(one())


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
    hf = AutoModelForCausalLM.from_config(hf_config(size), attn_implementation="eager")
    tokens_BxT = np.random.RandomState(0).randint(0, size["vocab"], (size["batch"], size["seq"]))
    n_tokens = tokens_BxT.size
    n_params = sum(p.numel() for p in hf.parameters())
    print(f"model: qwen3 {size} ({n_params / 1e6:.1f}M params), AdamW fp32")
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours, compile_s, ours_loss = our_stepper(Path(tmp), tokens_BxT)
    hf_sdpa = AutoModelForCausalLM.from_config(hf_config(size), attn_implementation="sdpa")
    hf_sdpa.load_state_dict(hf.state_dict())          # the same weights under torch's fused attention
    step_torch, torch_loss = torch_stepper(hf, tokens_BxT)
    step_sdpa, _ = torch_stepper(hf_sdpa, tokens_BxT)
    peers = {"transformers": (step_torch, None), "transformers@sdpa": (step_sdpa, None)}   # eager, sdpa
    times = interleaved({"ours": (ours, None), **torch_at_threads(peers, tuple(args.threads or peer_threads()))},
                        rounds=args.repeats)
    row = compare(f"LLM fine-tune step qwen3 {n_params / 1e6:.1f}M B{size['batch']} T{size['seq']}", times, "ours",
                  "transformers", work=n_tokens, unit="tokens",
                  shape=f"{size} ({n_params / 1e6:.1f}M params), AdamW fp32, full fine-tuning")
    print(f"(a) ours (jitted finetune step)  {row['ours_rate']:10.0f} tokens/s  ({times['ours'] * 1e3:.0f} ms/step, "
          f"compile {compile_s:.1f} s)")
    print(f"(b) transformers (PyTorch)       {row['peer_best_rate']:10.0f} tokens/s at its best, {row['peer_best']} "
          f"({row['peer_best_s'] * 1e3:.0f} ms/step)")
    print(f"ratio a/b tokens/s: {row['ratio_vs_best']:.2f}")
    print(f"first-step loss: ours {ours_loss:.6f}, torch {torch_loss:.6f}, |diff| {abs(ours_loss - torch_loss):.2e}")
    print_table([row])
    if args.out:
        io.write_json(args.out, {"rows": [row], "env": environment(),
                                 "first_step_loss": {"ours": ours_loss, "transformers": torch_loss}})


if __name__ == "__main__":
    main()
