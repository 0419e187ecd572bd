"""Peak host memory of loading a checkpoint: `models.lm.load_pretrained` vs transformers.

A random Llama-style checkpoint (~100M parameters by default, fp32 safetensors, written with
transformers' `save_pretrained`) is loaded by each loader in a fresh process, several times in
alternation. Measured: the process's peak resident set (`ru_maxrss`) during the load, minus its
resident set just before it, after every import the loader makes (ours parses config.json with
transformers' config classes, which import torch; and starts the JAX backend), so that the
libraries' import footprint does not count; the absolute peaks (imports included) are printed
beside it. transformers loads onto the CPU in fp32 (its
default); ours into fp32 JAX arrays on the default device. The weights themselves take
4 x parameters bytes in both; the ratio says how much the loader holds on top of them.

    .venv/bin/python benchmarks/lm_load_memory.py               # ~100M Llama-style
    .venv/bin/python benchmarks/lm_load_memory.py --tiny        # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SIZES = {"full": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                      intermediate_size=2048, vocab_size=32000, tie_word_embeddings=False),
         "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=1000, tie_word_embeddings=False)}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def measure(loader: str, folder: str) -> dict:
    """In this (fresh) process: load once, return {before, peak, delta} in MiB."""
    if loader == "ours":
        import jax
        from transformers import AutoConfig  # noqa: F401  (our config parsing imports it, and it imports torch)

        from lsb_jax.models.lm import load_pretrained
        jax.devices()
        before = rss_mib()
        model = load_pretrained(folder)
        jax.block_until_ready(jax.tree.leaves(model))
    else:
        import torch
        from transformers import AutoModelForCausalLM
        before = rss_mib()
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    peak = peak_mib()
    del model
    return {"before": before, "peak": peak, "delta": peak - before}


def make_checkpoint(folder: Path, size: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.for_model("llama", max_position_embeddings=512, **SIZES[size])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="runs/benchmarks/lm_load_memory.json")
    ap.add_argument("--measure", nargs=2, metavar=("LOADER", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0
    from _peers import environment

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        n_params = make_checkpoint(folder, "tiny" if args.tiny else "full")
        runs = {"ours": [], "transformers": []}
        for _ in range(args.repeats):          # alternating fresh processes
            for loader in runs:
                proc = subprocess.run([sys.executable, __file__, "--measure", loader, str(folder)],
                                      capture_output=True, text=True, check=True,
                                      env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                          [str(HERE.parent), os.environ.get("PYTHONPATH", "")])})
                runs[loader].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    delta = {k: statistics.median(r["delta"] for r in v) for k, v in runs.items()}
    weights_mib = 4 * n_params / 2**20
    row = {"benchmark": "lm_load_peak_memory", "shape": f"llama {n_params / 1e6:.0f}M params fp32",
           "ours_s": delta["ours"], "peer": "transformers", "peer_best": "transformers", "peer_best_s":
           delta["transformers"], "peer_s_by_threads": {"default": delta["transformers"]},
           "ratio_vs_best": delta["transformers"] / delta["ours"], "unit": "MiB", "measure": "memory",
           "timing": "load peak RSS above the pre-load RSS, median of fresh processes"}
    print(f"{n_params / 1e6:.1f}M parameters ({weights_mib:.0f} MiB of fp32 weights); peak RSS above the pre-load "
          f"RSS, median of {args.repeats} fresh processes each:")
    for k, v in runs.items():
        print(f"  {k:12s} {delta[k]:7.0f} MiB ({delta[k] / weights_mib:.2f}x the weights; runs "
              f"{', '.join(format(r['delta'], '.0f') for r in v)}); process peak with its imports "
              f"{statistics.median(r['peak'] for r in v):.0f} MiB")
    print(f"ours / transformers = {delta['ours'] / delta['transformers']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from lsb_jax import io
    io.write_json(args.out, {"rows": [row], "runs": runs, "params": n_params, "env": environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
