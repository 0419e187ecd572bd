"""GPU check: lsb_jax against its peers on one lent GPU, in one table, in under 8 minutes (issue 19).

On the lent machine (its own image: jax with CUDA, torch, transformers, ...; no network, no `make`,
no pip install of the project), from the repository root:

    PYTHONPATH=. python3 benchmarks/gpu_check.py                          # every section, GPU sizes
    PYTHONPATH=. python3 benchmarks/gpu_check.py --only icl,mfu           # some sections
    PYTHONPATH=. python3 benchmarks/gpu_check.py --only estimate --experiments parity_zipf,icl_zipf
    .venv/bin/python benchmarks/gpu_check.py --tiny                       # CPU smoke run (the test's)

Without --tiny it refuses to run unless JAX's default backend is a GPU. Every section is one
function with its sizes in `SIZES`; a section (or one peer of it, e.g. torch.compile) that fails
prints its error in its row and the others go on. Each section prints its rows when it ends, and the
JSON (--out) is rewritten after every section ("complete": false until the last), so a run cut short
keeps what it measured. Timings are medians of interleaved rounds
(`benchmarks/_peers.py`: each contender in turn, so other load hits all alike), after warm-up and
compilation; jax is synchronized with `jax.block_until_ready`, torch on CUDA with
`torch.cuda.synchronize()`. On CPU (--tiny) the torch peers are timed at 1 thread and at all cores
and the best counts. "ratio" is always > 1 when lsb_jax is faster than the peer's best.

Sections:
  icl       the seed-004 in-context-regression GPT-2 train step (`models.gpt2`, 12 layers, width 256,
            8 heads, B 64, T 82): our jitted step vs the same model in PyTorch
            (`benchmarks/_torch_gpt2.py`, same weights, same batch) eager and torch.compile'd, on the
            same device; step-0 losses of both (full fp32 precision) must agree. Timed steps are fp32
            with TF32 matmuls allowed on both sides (JAX's GPU default; torch "high" precision).
  parity    64 parity seeds vmapped in one program vs PyTorch seed by seed, on CPU at each thread
            count and on the GPU (the same loop with CUDA tensors): `parity_vmap.rates`.
  lm        scoring and full fine-tuning (AdamW) tokens/s vs transformers on the same device: a
            Qwen3-style decoder (8 layers, width 1024, seq 1024), random init, saved with
            `save_pretrained` and loaded with `models.lm.load_pretrained`; bf16 on both sides (weights
            for scoring; fp32 master weights + bf16 compute (torch.autocast) for fine-tuning); the
            transformers peer is its best of eager and sdpa attention.
  mfu       model FLOPs utilization of a bf16 train step (fp32 master weights, bf16 compute, AdamW;
            `llm.finetune.make_finetune_step`) of a Qwen3-0.6B-shape decoder (28 layers, hidden 1024,
            16 heads / 8 kv heads of 128, MLP 3072, vocab 151936, tied embeddings), random init,
            seq 2048, batch 8 in micro-batches (the first of `micro_batches` whose compiled memory
            fits the device).
  kcenter   greedy k-center, 10k picks of 1M x 384 (`data.selection.kcenter_greedy`) vs the same
            algorithm in PyTorch on the same device (its first picks timed, extrapolated to k).
  estimate  the wall time of each experiment's `full` config from a few measured steps (see below).

MFU. Model FLOPs per token = 6 N + 12 L T d_attn (PaLM's count): N = non-embedding parameters + V D
(the LM-head matmul; the embedding lookup costs no FLOPs), L layers, T the sequence length,
d_attn = heads x head_dim (the width of q.k and p.v); every (query, key) pair is counted (causal
masking not subtracted). MFU = tokens per step x FLOPs per token / seconds per step / peak.
Peak: --peak-tflops, else by device kind: H100 SXM and H200 bf16 dense 989 TFLOP/s, H100 PCIe 756,
H100 NVL and H200 NVL 835, A100 312; other devices and CPU: MFU n/a.

Estimates. Each experiment's `run(cfg, ctx)` is called on its config (a temporary run directory)
with `lsb_jax.train.fit` replaced by a probe: every fit first runs its real (vmapped) step in
segments of 1, 1, 2, 4, ... steps of one compiled program until the segments after the first have
taken `--probe-s` seconds (a line through their durations gives seconds per step and per segment;
the first segment, less one step, the compile time); then the fit is replayed with a no-op step, so
that its hooks fire at their real steps (evaluations run for real twice, then their measured time
is counted for each remaining firing; trackers run for real), and the experiment goes on to its
next fit and its analysis. Estimate = sum over fits of (compile + seconds per step x steps +
hooks) + the time the run spends outside fit (measured), in a warm process; checkpoint writes are
not timed. Experiments without `fit` run in full (within --estimate-cap seconds, else "not
estimated"); those whose fit reads host batches, or whose `check` or data loading fails here (the
LLM ones need checkpoints from the network), are listed as "not estimated (why)".

JAX is told not to preallocate GPU memory (XLA_PYTHON_CLIENT_PREALLOCATE=false unless set), so
that torch can share the device; Hugging Face libraries are told to stay offline (HF_HUB_OFFLINE=1,
TRANSFORMERS_OFFLINE=1 unless set): nothing here needs the network.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):   # the lent machine has no network: fail fast
    os.environ.setdefault(_var, "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

import _peers  # noqa: E402

SECTIONS = ("icl", "parity", "lm", "kcenter", "mfu", "estimate")
# seconds a section needs (compiles included), by sizes; one is skipped, with an "n/a (budget)" row,
# when less than this is left of --budget (the estimate section budgets itself)
RESERVE_S = {"gpu": {"icl": 90.0, "parity": 30.0, "lm": 60.0, "kcenter": 45.0, "mfu": 120.0, "estimate": 0.0},
             "tiny": {"icl": 1.0, "parity": 1.0, "lm": 1.0, "kcenter": 1.0, "mfu": 1.0, "estimate": 0.0}}
LM_GPU = dict(layers=8, width=1024, heads=16, kv_heads=8, head_dim=64, mlp=3072, vocab=32000, seq=1024, batch=8)
LM_TINY = dict(layers=2, width=64, heads=4, kv_heads=2, head_dim=16, mlp=128, vocab=1000, seq=64, batch=2)
QWEN3_0P6B = dict(layers=28, width=1024, heads=16, kv_heads=8, head_dim=128, mlp=3072, vocab=151936)
SIZES = {
    "tiny": {
        "rounds": 1,
        "icl": dict(layers=2, width=32, heads=2, batch=4, pairs=8, dim=4, steps=2),
        "parity": dict(seeds=4, steps=20, repeats=1, torch_seeds=1, torch_steps=10),
        "lm": dict(LM_TINY, dtype="float32"),
        "mfu": dict(layers=2, width=64, heads=4, kv_heads=2, head_dim=16, mlp=128, vocab=1000, seq=64, batch=4,
                    micro_batches=(2,), label="2-layer width-64"),
        "kcenter": dict(n=2000, dim=16, k=20, torch_picks=20),
        "estimate": dict(config="quick", experiments=("toy_regression",), probe_s=0.2, cap_s=120.0),
    },
    "gpu": {
        "rounds": 3,
        "icl": dict(layers=12, width=256, heads=8, batch=64, pairs=41, dim=20, steps=10),
        "parity": dict(seeds=64, steps=2000, repeats=3, torch_seeds=2, torch_steps=300),
        "lm": dict(LM_GPU, dtype="bfloat16"),
        "mfu": dict(QWEN3_0P6B, seq=2048, batch=8, micro_batches=(2, 1), label="Qwen3-0.6B shape"),
        "kcenter": dict(n=1_000_000, dim=384, k=10_000, torch_picks=1000),
        "estimate": dict(config="full", experiments=None, probe_s=1.0, cap_s=120.0),
    },
}
# bf16 dense peak TFLOP/s by device kind (first match, case-insensitive substring)
PEAK_BF16_TFLOPS = (("NVL", 835.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))
LR, WD = 1e-4, 0.01
# estimate: experiments of these folders first (training through `fit`, then those that fail fast offline,
# then the theory runs, which have no `fit` loop and run whole)
FOLDER_ORDER = ("synthetic", "llm", "theory")


@dataclasses.dataclass
class Run:
    """What every section is given: sizes' name, device facts, flags and the clock."""

    size_name: str
    on_gpu: bool
    device_kind: str
    rounds: int
    torch_compile: bool
    peak_tflops: float | None
    budget_s: float
    t_start: float
    experiments: tuple[str, ...] | None = None
    estimate_config: str | None = None
    estimate_cap_s: float | None = None
    probe_s: float | None = None

    def remaining_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t_start)


# ----------------------------------------------------------------------------- rows and helpers


def row(section: str, key: str, what: str, ours: float | None = None, peer: float | None = None, *,
        unit: str = "", peer_name: str = "", higher_is_better: bool = False, notes: str = "",
        status: str = "ok") -> dict:
    """One table row. ratio = how many times faster ours is than the peer's best (> 1: lsb_jax faster)."""
    ratio = None
    if status == "ok" and _finite(ours) and _finite(peer) and ours > 0 and peer > 0:
        ratio = ours / peer if higher_is_better else peer / ours
    return {"section": section, "key": f"{section}.{key}", "what": what, "ours": ours, "peer": peer,
            "peer_name": peer_name, "unit": unit, "ratio": ratio, "notes": notes, "status": status}


def error_text(e: BaseException) -> str:
    lines = [s for s in str(e).strip().splitlines() if s.strip()]
    return f"{type(e).__name__}: {lines[0][:240] if lines else ''}"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def best_peer(times: dict[str, float], ours: str = "ours") -> tuple[str, float]:
    """(name, seconds) of the fastest contender other than ours."""
    return min(((k, v) for k, v in times.items() if k != ours), key=lambda kv: kv[1])


def torch_device(run: Run):
    """(torch device, sync) for the peers: CUDA (synchronized) when the run is on a GPU."""
    import torch
    if run.on_gpu and torch.cuda.is_available():
        return torch.device("cuda"), lambda _: torch.cuda.synchronize()
    return torch.device("cpu"), None


@contextlib.contextmanager
def tf32_allowed():
    """torch's float32 matmuls may use TF32, as JAX's default does on GPU (its setting restored after)."""
    import torch
    prec = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prec)


def peer_thunks(thunks: dict, device) -> dict:
    """On CPU each torch peer at 1 thread and at all cores; on CUDA as is."""
    return _peers.torch_at_threads(thunks) if device.type == "cpu" else thunks


def times_note(times: dict[str, float], scale: float = 1.0, unit: str = "s") -> str:
    return ", ".join(f"{k} {v * scale:.4g}{unit}" for k, v in times.items())


def free_torch_memory() -> None:
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ----------------------------------------------------------------------------- 1. ICL GPT-2 step


def section_icl(size: dict, run: Run) -> tuple[list[dict], dict]:
    """The seed-004 ICL GPT-2 step: ours (jitted, donated) vs PyTorch eager / torch.compile."""
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    import gpt2_step
    from _torch_gpt2 import TorchGPT2, load_jax_params
    from lsb_jax.models import gpt2

    L, W, H, B, P, d = (size[k] for k in ("layers", "width", "heads", "batch", "pairs", "dim"))
    cfg = gpt2.GPT2Config(num_layers=L, num_heads=H, width=W, max_len=2 * P, input_dim=d + 1, output_dim=1)
    _, tx, loss_fn, step_fn, init = gpt2_step.jax_parts(cfg, LR)
    x_np, y_np = gpt2_step.icl_batch(np.random.default_rng(0), B, P, d)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    params0 = jax.jit(init)(jax.random.key(0))
    highest = getattr(jax, "default_matmul_precision", None)
    with highest("highest") if highest is not None else contextlib.nullcontext():
        loss0_jax = float(jax.jit(loss_fn)(params0, x, y))

    step = jax.jit(step_fn, donate_argnums=(0, 1))
    state = [jax.tree.map(jnp.copy, params0), tx.init(params0)]

    def ours():
        state[0], state[1], loss = step(state[0], state[1], x, y)
        return loss

    t0 = time.perf_counter()
    jax.block_until_ready(ours())
    compile_s = time.perf_counter() - t0

    dev, sync = torch_device(run)
    pure0 = nnx.to_pure_dict(params0)
    new_torch = lambda: load_jax_params(TorchGPT2(L, H, W, 2 * P, d + 1, 1), pure0).to(dev)  # noqa: E731
    xt, yt = torch.from_numpy(x_np).to(dev), torch.from_numpy(y_np).to(dev)
    tloss = lambda m: ((m(xt)[:, ::2, 0] - yt) ** 2).mean()  # noqa: E731
    eager = new_torch()
    with torch.no_grad():
        loss0_torch = float(tloss(eager))

    def torch_step(model):
        opt = torch.optim.Adam(model.parameters(), lr=LR, fused=dev.type == "cuda")

        def one():
            opt.zero_grad(set_to_none=True)
            loss = tloss(model)
            loss.backward()
            opt.step()
            return loss
        return one

    shape = f"L{L} W{W} H{H}, B={B} T={2 * P}" + (", fp32 with TF32 matmuls on both" if dev.type == "cuda" else "")
    details = {"loss0": {"jax": loss0_jax, "torch": loss0_torch}, "jax_compile_s": compile_s, "shape": shape,
               "num_params": gpt2.num_params(params0), "torch_device": str(dev)}
    with tf32_allowed():
        peers = {"torch_eager": (torch_step(eager), sync)}
        compile_note, compile_status = "skipped at --tiny (its compile time; --torch-compile on to try)", "n/a"
        if run.torch_compile:
            try:
                compiled = new_torch()
                cstep = torch_step(torch.compile(compiled))
                t0 = time.perf_counter()
                cstep()
                cstep()
                if sync:
                    sync(None)
                details["torch_compile_s"] = time.perf_counter() - t0
                peers["torch_compile"] = (cstep, sync)
                compile_note, compile_status = f"torch.compile warm-up {details['torch_compile_s']:.1f}s", "ok"
            except Exception as e:  # noqa: BLE001 - torch.compile needs a toolchain: reported, not fatal
                traceback.print_exc()
                compile_note, compile_status = error_text(e), "error"
        times = _peers.interleaved({"ours": (ours, jax.block_until_ready), **peer_thunks(peers, dev)},
                                   rounds=run.rounds, calls=size["steps"])
    details["times_s"] = times
    ours_s = times["ours"]
    rows = []
    for name, what in (("torch_eager", "ICL GPT-2 step vs torch eager"),
                       ("torch_compile", "ICL GPT-2 step vs torch.compile")):
        cands = {k: v for k, v in times.items() if k == name or k.startswith(name + "@")}
        if cands:
            pname, ps = min(cands.items(), key=lambda kv: kv[1])
            note = f"{shape}; jax compile {compile_s:.1f}s; peer {times_note(cands)}"
            if name == "torch_compile":
                note += f"; {compile_note}"
            rows.append(row("icl", name, what, ours_s, ps, unit="s/step", peer_name=pname, notes=note))
        else:
            rows.append(row("icl", name, what, ours_s, None, unit="s/step", notes=compile_note,
                            status=compile_status))
    diff = abs(loss0_jax - loss0_torch)
    rows.append(row("icl", "loss0", "ICL step-0 loss (same weights, same batch)", loss0_jax, loss0_torch,
                    unit="loss", peer_name="torch", notes=f"|diff| {diff:.2e} (fp32, highest precision)"))
    rows[-1]["ratio"] = None
    return rows, details


# ----------------------------------------------------------------------------- 2. parity seeds


def section_parity(size: dict, run: Run) -> tuple[list[dict], dict]:
    """64 vmapped parity seeds (one program) vs PyTorch seed by seed (CPU at each thread count; and CUDA
    on a GPU): medians of interleaved rounds after a warm-up of every contender (`parity_vmap.rates`)."""
    import parity_vmap
    import torch

    dev, _ = torch_device(run)
    peers, cuda_error = {f"cpu@{t}t": parity_vmap.torch_cpu_peer(t) for t in _peers.peer_threads()}, None
    if dev.type == "cuda":
        def cuda_peer(seeds, steps):
            torch.cuda.synchronize()
            parity_vmap.torch_run(seeds, steps, dev)
            torch.cuda.synchronize()
        try:
            cuda_peer(1, 5)                    # a CUDA failure drops this peer, not the section
            peers["cuda"] = cuda_peer
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            cuda_error = error_text(e)
    ts, tk = size["torch_seeds"], size["torch_steps"]
    got, loss = parity_vmap.rates(size["seeds"], size["steps"], ts, tk, size["repeats"], peers)
    ours = got.pop("ours")
    shape = (f"{size['seeds']} seeds x {size['steps']} steps; torch {ts} seeds x {tk} steps; medians of "
             f"{size['repeats']} interleaved rounds")
    cpu = {k.split("@")[1]: v for k, v in got.items() if k.startswith("cpu@")}
    cname, crate = max(cpu.items(), key=lambda kv: kv[1])
    rows = [row("parity", "torch_cpu", f"parity {size['seeds']} vmapped seeds vs torch CPU", ours, crate,
                unit="seed-steps/s", peer_name=f"torch cpu@{cname}", higher_is_better=True,
                notes=f"{shape}; torch by threads: {times_note(cpu, unit='/s')}")]
    if "cuda" in got:
        rows.append(row("parity", "torch_cuda", f"parity {size['seeds']} vmapped seeds vs torch CUDA", ours,
                        got["cuda"], unit="seed-steps/s", peer_name="torch cuda", higher_is_better=True, notes=shape))
    elif cuda_error:
        rows.append(row("parity", "torch_cuda", "parity vs torch CUDA", ours, unit="seed-steps/s", notes=cuda_error,
                        status="error"))
    return rows, {"ours_rate": ours, "last_loss": loss, "torch_cpu_rate": cpu, "torch_cuda_rate": got.get("cuda")}


# ----------------------------------------------------------------------------- 3. LM scoring / fine-tuning


def section_lm(size: dict, run: Run) -> tuple[list[dict], dict]:
    """Scoring and fine-tuning tokens/s of a Qwen3-style decoder: ours vs transformers (best attention)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    import lm_scoring

    hf_logging.disable_progress_bar()
    dev, _ = torch_device(run)
    torch.manual_seed(0)
    tokens_BxT = np.random.RandomState(0).randint(0, size["vocab"], (size["batch"], size["seq"]))
    shape = (f"{size['layers']}L W{size['width']} seq {size['seq']} B {size['batch']} vocab {size['vocab']}, "
             f"{size['dtype']}, transformers on {dev}")
    rows, details = [], {"shape": shape}
    with tempfile.TemporaryDirectory() as tmp:
        hf = AutoModelForCausalLM.from_config(lm_scoring.hf_config(size, size["vocab"]))
        details["num_params"] = sum(p.numel() for p in hf.parameters())
        hf.save_pretrained(tmp)
        del hf
        for key, fn in (("score", _lm_score), ("finetune", _lm_finetune)):
            try:
                r, det = fn(Path(tmp), tokens_BxT, size, run, shape)
                rows.append(r)
                details[key] = det
            except Exception as e:  # noqa: BLE001 - one part failing leaves the other
                traceback.print_exc()
                rows.append(row("lm", key, f"LM {key} tokens/s vs transformers", unit="tokens/s",
                                notes=error_text(e), status="error"))
            free_torch_memory()
    return rows, details


def _hf_models(folder: Path, dev, dtype, train: bool) -> dict:
    """transformers models of the saved folder, one per attention implementation that loads here."""
    from transformers import AutoModelForCausalLM
    out, errors = {}, []
    for impl in ("sdpa", "eager"):
        try:
            m = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=impl).to(device=dev, dtype=dtype)
            out[f"hf_{impl}"] = m.train(train)
        except Exception as e:  # noqa: BLE001 - an implementation this install lacks
            errors.append(f"{impl}: {error_text(e)}")
    if not out:
        raise RuntimeError("transformers could not load the model: " + "; ".join(errors))
    return out


def _lm_score(folder: Path, tokens_BxT: np.ndarray, size: dict, run: Run, shape: str):
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from lsb_jax.models.lm import load_pretrained, make_loss_fn

    bf16 = size["dtype"] == "bfloat16"
    graphdef, params = nnx.split(load_pretrained(folder, dtype=jnp.bfloat16 if bf16 else jnp.float32))
    batch = {"tokens": jnp.asarray(tokens_BxT, jnp.int32), "loss_mask": jnp.ones(tokens_BxT.shape, jnp.float32)}
    loss = jax.jit(make_loss_fn(graphdef, chunk_size=128))
    t0 = time.perf_counter()
    ours_B = np.asarray(loss(params, batch), np.float64)
    compile_s = time.perf_counter() - t0

    dev, sync = torch_device(run)
    ids = torch.tensor(tokens_BxT, device=dev)
    mask = torch.ones_like(ids)
    models = _hf_models(folder, dev, torch.bfloat16 if bf16 else torch.float32, train=False)

    def score(m):
        with torch.no_grad():
            logits = m(ids, attention_mask=mask).logits
            return torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:],
                                                     reduction="none").mean(1)

    diff = {k: float(np.abs(ours_B - score(m).double().cpu().numpy()).max()) for k, m in models.items()}
    thunks = {k: (lambda m=m: score(m), sync) for k, m in models.items()}
    times = _peers.interleaved({"ours": (lambda: loss(params, batch), jax.block_until_ready),
                                **peer_thunks(thunks, dev)}, rounds=run.rounds)
    n = tokens_BxT.size
    pname, ps = best_peer(times)
    notes = (f"{shape}; jax compile {compile_s:.1f}s; max|loss diff| {times_note(diff, unit='')}; "
             f"s/batch {times_note(times)}")
    return (row("lm", "score", "LM scoring tokens/s vs transformers", n / times["ours"], n / ps, unit="tokens/s",
                peer_name=pname, higher_is_better=True, notes=notes),
            {"times_s": times, "max_loss_diff": diff, "compile_s": compile_s})


def _lm_finetune(folder: Path, tokens_BxT: np.ndarray, size: dict, run: Run, shape: str):
    import jax
    import jax.numpy as jnp
    import torch

    from lsb_jax.llm.finetune import FinetuneConfig, init_finetune_state, make_finetune_step, prepare
    from lsb_jax.models.lm import load_pretrained
    from lsb_jax.optim import OptimConfig

    bf16 = size["dtype"] == "bfloat16"
    cfg = FinetuneConfig(optim=OptimConfig(name="adamw", lr=LR, weight_decay=WD), warmup_ratio=0.0, loss_chunk=128,
                         param_dtype="float32", compute_dtype=size["dtype"])
    split, params = prepare(load_pretrained(folder), cfg)
    optimizer = cfg.optimizer(1000)
    state = [init_finetune_state(params, optimizer, 0)]
    batch = {"tokens": jnp.asarray(tokens_BxT, jnp.int32), "loss_mask": jnp.ones(tokens_BxT.shape, jnp.int32),
             "attention_mask": jnp.ones(tokens_BxT.shape, jnp.int32)}
    step = jax.jit(make_finetune_step(split.graphdef, cfg, optimizer), donate_argnums=0)

    def ours():
        state[0], metrics = step(state[0], batch, split.frozen)
        return metrics["loss"]

    t0 = time.perf_counter()
    first_ours = float(ours())
    compile_s = time.perf_counter() - t0

    dev, sync = torch_device(run)
    ids = torch.tensor(tokens_BxT, device=dev)
    mask = torch.ones_like(ids)
    models = _hf_models(folder, dev, torch.float32, train=True)

    def hf_step(m, opt):
        def one():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = m(ids, attention_mask=mask).logits
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:],
                                                    reduction="none")
            loss = nll.mean(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss
        return one

    thunks, first_torch = {}, {}
    for k, m in models.items():
        one = hf_step(m, torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=WD, fused=dev.type == "cuda"))
        first_torch[k] = float(one().detach())   # warm-up; the loss at the initial weights
        thunks[k] = (one, sync)
    times = _peers.interleaved({"ours": (ours, jax.block_until_ready), **peer_thunks(thunks, dev)},
                               rounds=run.rounds, warmup=0)
    n = tokens_BxT.size
    pname, ps = best_peer(times)
    diff = {k: abs(first_ours - v) for k, v in first_torch.items()}
    notes = (f"{shape}, AdamW; jax compile {compile_s:.1f}s; first-step loss ours {first_ours:.5f}, "
             f"|diff| {times_note(diff, unit='')}; s/step {times_note(times)}")
    return (row("lm", "finetune", "LM fine-tuning tokens/s vs transformers", n / times["ours"], n / ps,
                unit="tokens/s", peer_name=pname, higher_is_better=True, notes=notes),
            {"times_s": times, "first_loss": {"ours": first_ours, **first_torch}, "compile_s": compile_s})


# ----------------------------------------------------------------------------- 4. MFU


def default_peak(device_kind: str) -> float | None:
    kind = device_kind.lower()
    return next((v for k, v in PEAK_BF16_TFLOPS if k.lower() in kind), None)


def model_flops_per_token(n_params: int, num_layers: int, seq: int, attn_width: int) -> float:
    """6 N + 12 L T d_attn (N: non-embedding parameters + the LM-head matmul)."""
    return 6.0 * n_params + 12.0 * num_layers * seq * attn_width


def section_mfu(size: dict, run: Run) -> tuple[list[dict], dict]:
    """bf16 train-step MFU of a Qwen3-0.6B-shape decoder (random init, fp32 master weights, AdamW)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import lm_scoring
    from lsb_jax.llm.finetune import FinetuneConfig, init_finetune_state, make_finetune_step, prepare
    from lsb_jax.models.lm import Decoder, DecoderConfig
    from lsb_jax.optim import OptimConfig

    B, T = size["batch"], size["seq"]
    dcfg = DecoderConfig.from_hf(lm_scoring.hf_config(size, size["vocab"]))
    V, D = dcfg.vocab_size, dcfg.hidden_size
    base = FinetuneConfig(optim=OptimConfig(name="adamw", lr=LR, weight_decay=WD), warmup_ratio=0.0, loss_chunk=128,
                          param_dtype="float32", compute_dtype="bfloat16")
    split, params = prepare(Decoder(dcfg, rngs=nnx.Rngs(0)), base)
    n_total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    n_model = n_total - V * D + (V * D if dcfg.tie_embeddings else 0)   # embedding out, LM-head matmul in
    flops_tok = model_flops_per_token(n_model, dcfg.num_layers, T, dcfg.num_heads * dcfg.head_dim)
    optimizer = base.optimizer(1000)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, V, (B, T)), jnp.int32)
    batch = {"tokens": tokens, "loss_mask": jnp.ones((B, T), jnp.int32), "attention_mask": jnp.ones((B, T), jnp.int32)}
    stats = (jax.devices()[0].memory_stats() or {}) if run.on_gpu else {}
    # what the device can still give: its limit less what JAX holds now (the fp32 params above stay alive)
    limit = stats["bytes_limit"] - stats.get("bytes_in_use", 0) if "bytes_limit" in stats else None
    shape = (f"{dcfg.num_layers}L D{D} {dcfg.num_heads}/{dcfg.num_kv_heads}x{dcfg.head_dim} F{dcfg.intermediate_size} "
             f"V{V}, B {B} x T {T}")
    details = {"shape": shape, "params_total": n_total, "params_model": n_model, "flops_per_token": flops_tok,
               "formula": "6 N + 12 L T d_attn", "tried": []}
    compiled = state = None
    for mb in size["micro_batches"]:
        cfg = dataclasses.replace(base, accum_steps=B // mb)
        state = init_finetune_state(jax.tree.map(jnp.copy, params), optimizer, 0)   # the step donates it
        t0 = time.perf_counter()
        try:
            compiled = jax.jit(make_finetune_step(split.graphdef, cfg, optimizer), donate_argnums=0).lower(
                state, batch, split.frozen).compile()
            mem = compiled.memory_analysis()
            need = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                    - mem.alias_size_in_bytes) if mem is not None else 0
            tried = {"micro_batch": mb, "compile_s": time.perf_counter() - t0, "bytes": need}
            details["tried"].append(tried)
            if limit and need > 0.95 * limit:
                tried["skipped"] = f"needs {need / 2**30:.1f} GiB of the {limit / 2**30:.1f} free"
                compiled = None
                continue
            state, metrics = compiled(state, batch, split.frozen)   # warm-up
            jax.block_until_ready(metrics["loss"])
            details.update(micro_batch=mb, compile_s=tried["compile_s"], memory_gib=need / 2**30)
            break
        except Exception as e:  # noqa: BLE001 - out of memory: the next micro-batch size
            details["tried"].append({"micro_batch": mb, "error": error_text(e)})
            compiled = None
            gc.collect()
    if compiled is None:
        raise RuntimeError(f"no micro-batch size fits: {details['tried']}")
    carry = [state]

    def one():
        carry[0], metrics = compiled(carry[0], batch, split.frozen)
        return metrics["loss"]

    s = _peers.interleaved({"ours": (one, jax.block_until_ready)}, rounds=run.rounds, warmup=0)["ours"]
    tok_s = B * T / s
    achieved = flops_tok * tok_s
    details.update(step_s=s, tokens_per_s=tok_s, achieved_tflops=achieved / 1e12)
    notes = (f"{shape}; micro-batch {details['micro_batch']}; N {n_model / 1e6:.4g}M (of {n_total / 1e6:.4g}M); "
             f"{achieved / 1e12:.3g} TFLOP/s achieved at {flops_tok / 1e9:.3g} GFLOP/token = 6N + 12 L T d_attn; "
             f"{s:.4g} s/step; compile {details['compile_s']:.1f}s")
    rows = [row("mfu", "step", f"bf16 train step tokens/s ({size['label']})", tok_s, unit="tokens/s", notes=notes)]
    peak = run.peak_tflops
    if peak:
        mfu = achieved / (peak * 1e12)
        details.update(mfu=mfu, peak_tflops=peak)
        rows.append(row("mfu", "mfu", "bf16 train step MFU", mfu, unit="fraction",
                        notes=f"peak {peak:g} TFLOP/s ({run.device_kind}); 6N + 12 L T d_attn"))
    else:
        rows.append(row("mfu", "mfu", "bf16 train step MFU", unit="fraction", status="n/a",
                        notes=f"no bf16 peak known for '{run.device_kind}' (pass --peak-tflops)"))
    return rows, details


# ----------------------------------------------------------------------------- 5. k-center


def torch_kcenter(x_NxD, m: int):
    """The first m greedy farthest-point picks from row 0, as `kcenter_greedy` computes them (one
    matrix-vector product per pick, [N] state), in PyTorch on x's device; no host sync inside (the pick
    is a device tensor: indexing with it as `x[i]` would read it back to the host at every pick)."""
    import torch
    sq_N = (x_NxD * x_NxD).sum(1)
    index_M = torch.zeros(m, dtype=torch.long, device=x_NxD.device)
    c_D = x_NxD[0]
    dist_N = (sq_N - 2.0 * (x_NxD @ c_D) + c_D @ c_D).clamp_min(0.0)
    for j in range(1, m):
        i = torch.argmax(dist_N)
        index_M[j] = i
        c_D = x_NxD.index_select(0, i.view(1))[0]
        dist_N = torch.minimum(dist_N, (sq_N - 2.0 * (x_NxD @ c_D) + c_D @ c_D).clamp_min(0.0))
    return index_M


def section_kcenter(size: dict, run: Run) -> tuple[list[dict], dict]:
    """Greedy k-center picks: `kcenter_greedy` (one compiled loop) vs the same loop in PyTorch."""
    import jax
    import jax.numpy as jnp
    import torch

    from lsb_jax.data.selection import kcenter_greedy

    n, dim, k, m = size["n"], size["dim"], size["k"], min(size["torch_picks"], size["k"])
    x = jax.block_until_ready(jax.random.normal(jax.random.key(0), (n, dim), jnp.float32))
    t0 = time.perf_counter()
    index_K = np.asarray(kcenter_greedy(x, k).index_K)
    first_s = time.perf_counter() - t0
    ours = _peers.interleaved({"ours": (lambda: kcenter_greedy(x, k).index_K, jax.block_until_ready)},
                              rounds=max(1, min(run.rounds, 2)), warmup=0)["ours"]
    dev, sync = torch_device(run)
    try:
        xt = torch.from_dlpack(x)
        if xt.device != dev:
            xt = xt.to(dev)
    except Exception:  # noqa: BLE001 - no shared-memory route: copy through the host
        xt = torch.from_numpy(np.asarray(x)).to(dev)
    with tf32_allowed():
        picks_M = torch_kcenter(xt, m).cpu().numpy()
        times = _peers.interleaved(peer_thunks({"torch": (lambda: torch_kcenter(xt, m), sync)}, dev),
                                   rounds=max(1, min(run.rounds, 2)), warmup=0)
    agree = int((picks_M == index_K[:m]).sum())
    agreement = _peers.greedy_picks_agreement(x, index_K[:m], picks_M)   # reads only the rows it compares
    pname, ps = best_peer(times, ours="")
    per_pick = ps / max(1, m - 1)
    peer_k = per_pick * (k - 1)
    notes = (f"N={n} D={dim} k={k}, torch on {dev}: ours {ours / max(1, k - 1) * 1e3:.3g} ms/pick (first call "
             f"incl. compile {first_s:.1f}s); torch {per_pick * 1e3:.3g} ms/pick over its first {m} picks, x (k-1); "
             f"first {m} picks agree {agree}/{m}" + ("" if agreement["first_difference"] is None else
                                                     f" (first difference at pick {agreement['first_difference']}, "
                                                     f"relative distance gap {agreement['tie_gap']:.2g})"))
    return ([row("kcenter", "picks", f"k-center {k} picks of {n} x {dim}", ours, peer_k, unit="s", peer_name=pname,
                 notes=notes)],
            {"ours_s": ours, "torch_s_by": times, "torch_picks": m, "agree": agree,
             "first_difference": agreement["first_difference"], "tie_gap": agreement["tie_gap"],
             "first_call_s": first_s, "torch_device": str(dev)})


# ----------------------------------------------------------------------------- 6. wall-time estimates


class NotEstimable(Exception):
    """This fit cannot be probed (the reason is the message)."""


class _ProbeDone(Exception):
    pass


class _OverCap(BaseException):
    """The estimate's time cap (a BaseException: an experiment's own `except Exception` must not swallow it)."""


def _probe_marks(num_steps: int, max_steps: int) -> list[int]:
    """Hook steps 1, 2, 4, 8, ... <= min(num_steps, max_steps): segments of doubling length."""
    top = max(1, min(num_steps, max_steps))
    marks, s = [], 1
    while s <= top:
        marks.append(s)
        s *= 2
    return marks


def segment_costs(marks: list[tuple[int, float]]) -> tuple[float, float]:
    """(seconds per step, seconds per segment) from the probe's (step, time) marks: a least-squares
    line, duration = per_segment + per_step x length, through the segments after the first (which
    compiled) and, when there are three or more, after the second; with fewer than two, the last
    one's duration / length (overhead included)."""
    (s_prev, t_prev), segs = marks[0], []
    for s, t in marks[1:]:
        segs.append((s - s_prev, t - t_prev))
        s_prev, t_prev = s, t
    timed = segs[1:]
    if len(timed) >= 3:   # the first run after compiling can be slow (allocation, thread pools): left out
        timed = timed[1:]
    if len({n for n, _ in timed}) >= 2:
        n = np.array([n for n, _ in timed], float)
        d = np.array([d for _, d in timed], float)
        slope, intercept = np.polyfit(n, d, 1)
        if slope > 0:
            return float(slope), float(max(0.0, intercept))
    n, d = (timed or segs)[-1]
    return d / max(1, n), 0.0


class FitProbe:
    """Stands in for `lsb_jax.train.fit` while an experiment runs: measures each fit, then replays it
    with a no-op step so that the experiment goes on (see the module docstring)."""

    def __init__(self, real_fit: Callable, probe_s: float, eval_calls: int = 2):
        from lsb_jax.train.loop import EvalHook, Hook
        self.real_fit, self.probe_s, self.eval_calls = real_fit, probe_s, eval_calls
        self.EvalHook, self.Hook = EvalHook, Hook
        self.fits: list[dict] = []
        self.inside_s = 0.0

    def _clock(self, num_steps: int, max_steps: int):
        probe_s, Hook = self.probe_s, self.Hook

        class Clock(Hook):
            name = "gpu_check_probe"

            def __init__(self):
                super().__init__(at=_probe_marks(num_steps, max_steps))
                self.marks = [(0, time.perf_counter())]

            def __call__(self, state, step):
                now = time.perf_counter()
                self.marks.append((step, now))
                # done after >= 2 segments past the compiling one that took probe_s together, or at the last mark
                if step >= self.at[-1] or (len(self.marks) >= 4 and now - self.marks[1][1] >= probe_s):
                    raise _ProbeDone
                return None

        return Clock()

    def _cached(self, hook):
        """An EvalHook that runs for real `eval_calls` times, then repeats its last output and counts
        its measured time (the state does not change in the replay, so its output would not either)."""
        n, Hook = self.eval_calls, self.Hook

        class Cached(Hook):
            def __init__(self):
                super().__init__(hook.every, hook.at, hook.at_start)
                self.name, self.times, self.last, self.skipped = hook.name, [], None, 0

            def __call__(self, state, step):
                if len(self.times) < n:
                    t0 = time.perf_counter()
                    self.last = hook(state, step)
                    self.times.append(time.perf_counter() - t0)
                else:
                    self.skipped += 1
                return dict(self.last) if self.last else self.last

            @property
            def extrapolated_s(self) -> float:
                return self.skipped * (self.times[-1] if self.times else 0.0)

        return Cached()

    def __call__(self, step_fn, state, num_steps, **kw):
        import jax
        import jax.numpy as jnp

        t_enter = time.perf_counter()
        try:
            if kw.get("batches") is not None:
                raise NotEstimable("a fit fed by host batches (its data iterator cannot be replayed)")
            ctx = kw.get("ctx")
            if ctx is not None:
                if ctx.fit_used:
                    raise ValueError(f"fit() already ran in {ctx.dir}")
                ctx.fit_used = True
            step_args = tuple(kw.get("step_args", ()))
            chunk = int(kw.get("chunk_size", 100))
            common = dict(step_args=step_args, chunk_size=chunk, log_every=kw.get("log_every", 1),
                          desc=kw.get("desc", "train"))
            # 1. the real step: segments of 1, 1, 2, 4, ... steps of one compiled program
            clock = self._clock(num_steps, chunk)
            try:
                self.real_fit(step_fn, state, num_steps, hooks=[clock], on_divergence="continue", **common)
            except _ProbeDone:
                pass
            per_step, per_segment = segment_costs(clock.marks)
            (s0, t0), (s1, t1) = clock.marks[0], clock.marks[1]
            compile_s = max(0.0, (t1 - t0) - per_segment - per_step * (s1 - s0))
            # 2. the replay: a no-op step, the hooks at their real steps
            shapes = jax.eval_shape(lambda s: step_fn(s, *step_args)[1], state)

            def noop(st, *args):
                return st.replace(step=st.step + 1), jax.tree.map(lambda sd: jnp.zeros(sd.shape, sd.dtype), shapes)

            hooks = [self._cached(h) if type(h) is self.EvalHook else h for h in kw.get("hooks", ())]
            t_dry = time.perf_counter()
            result = self.real_fit(noop, state, num_steps, hooks=hooks, on_divergence="continue", divergence=None,
                                   donate_state=kw.get("donate_state", False), **common)
            dry_s = time.perf_counter() - t_dry
            extra = sum(getattr(h, "extrapolated_s", 0.0) for h in hooks)
            marks = clock.marks
            self.fits.append({"desc": common["desc"], "steps": int(num_steps), "probed_steps": int(marks[-1][0]),
                              "segments": [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])],
                              "compile_s": compile_s, "step_s": per_step, "hooks_s": dry_s + extra,
                              "estimate_s": compile_s + per_step * num_steps + dry_s + extra})
            return result
        finally:
            self.inside_s += time.perf_counter() - t_enter


def _project_modules() -> list:
    """lsb_jax's modules and the loaded experiment files (`experiments` registers them as lsb_experiments.*)."""
    return [m for name, m in list(sys.modules.items())
            if m is not None and name.split(".")[0] in ("lsb_jax", "lsb_experiments")]


def _patch_fit(real: Callable, probe: FitProbe) -> Callable[[], None]:
    """Points every project module's `fit` (the real one, or an earlier probe) at the probe; returns the
    undo, which also resets modules first imported while the probe was in place."""
    def point(to):
        for mod in _project_modules():
            if getattr(mod, "fit", None) is real or isinstance(getattr(mod, "fit", None), FitProbe):
                mod.fit = to

    point(probe)
    return lambda: point(real)


def estimate_experiment(exp, cfg, config_name: str, probe_s: float, cap_s: float) -> dict:
    """Runs `exp.run(cfg, ctx)` with the fit probe (at most cap_s seconds); the estimate and how it was made."""
    from lsb_jax.runner import RunContext
    from lsb_jax.train import loop

    if exp.check is not None:
        try:
            exp.check(cfg)
        except Exception as e:  # noqa: BLE001
            return {"status": "n/a", "why": f"its check fails here: {error_text(e)}"}
    real = loop.fit
    if isinstance(real, FitProbe):   # a probe left behind by an interrupted estimate
        real = real.real_fit
    probe = FitProbe(real, probe_s)

    def over_cap(signum, frame):
        raise _OverCap

    old_handler = signal.signal(signal.SIGALRM, over_cap)
    undo = _patch_fit(real, probe)
    error = None
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = RunContext(Path(tmp) / exp.name, cfg, config_name, progress=False)
            signal.setitimer(signal.ITIMER_REAL, cap_s, 5.0)   # and again every 5 s until it stops
            try:
                exp.run(cfg, ctx)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                ctx.close()
    except _OverCap:
        error = f"stopped at the {cap_s:.0f}s cap"
    except NotEstimable as e:
        error = str(e)
    except Exception as e:  # noqa: BLE001 - the experiment's own failure (e.g. analysis of the replay)
        error = error_text(e)
    finally:
        undo()
        signal.signal(signal.SIGALRM, old_handler)
    wall = time.perf_counter() - t0
    outside = wall - probe.inside_s
    fits = probe.fits
    out = {"fits": fits, "probe_wall_s": wall, "outside_fit_s": outside, "error": error}
    if not fits:
        if error is None:
            return out | {"status": "ok", "estimate_s": wall, "method": "measured: the whole run (no fit loop)"}
        return out | {"status": "n/a", "why": error}
    total = outside + sum(f["estimate_s"] for f in fits)
    method = (f"{len(fits)} fit(s): compile {sum(f['compile_s'] for f in fits):.1f}s + steps "
              f"{sum(f['step_s'] * f['steps'] for f in fits):.1f}s ("
              + ", ".join(f"{f['steps']} x {f['step_s'] * 1e3:.3g}ms" for f in fits[:4])
              + (", ..." if len(fits) > 4 else "")
              + f") + hooks {sum(f['hooks_s'] for f in fits):.1f}s + outside fit {outside:.1f}s")
    if error is not None:
        return out | {"status": "ok", "estimate_s": total, "lower_bound": True,
                      "method": f">= (the run stopped after {len(fits)} fit(s): {error}); {method}"}
    return out | {"status": "ok", "estimate_s": total, "method": method}


def section_estimate(size: dict, run: Run) -> tuple[list[dict], dict]:
    """Estimated wall time of each experiment's config (`full` on GPU) from a few measured steps."""
    from lsb_jax import experiments

    config_name = run.estimate_config or size["config"]
    cap = run.estimate_cap_s or size["cap_s"]
    broken: dict[str, str] = {}
    found = experiments.discover(None, broken)
    rank = lambda n: (FOLDER_ORDER.index(Path(found[n].source).parts[0])  # noqa: E731
                      if Path(found[n].source).parts[0] in FOLDER_ORDER else len(FOLDER_ORDER))
    names = list(run.experiments or size["experiments"] or sorted(found, key=rank))   # sorted() is stable
    rows, details = [], {"config": config_name, "broken": broken, "experiments": {}}
    for f, msg in broken.items():
        if run.experiments is None and size["experiments"] is None:
            rows.append(row("estimate", Path(f).stem, f"{Path(f).stem} ({config_name})", status="n/a",
                            notes=f"not estimated (its file fails to load: {msg[:200]})", unit="s"))
    for name in names:
        what = f"{name} ({config_name}) wall time"
        if name not in found:
            rows.append(row("estimate", name, what, unit="s", status="n/a", notes="not estimated (unknown experiment)"))
            continue
        # kept back: the table and the JSON, and an experiment's overrun of its cap (the alarm cannot stop
        # a compilation or a device wait while it runs)
        left = run.remaining_s() - 30.0
        if left < 30.0:
            rows.append(row("estimate", name, what, unit="s", status="n/a",
                            notes="not estimated (the time budget is spent: rerun with --only estimate "
                                  f"--experiments {name})"))
            continue
        exp = found[name]
        if config_name not in exp.configs:
            rows.append(row("estimate", name, what, unit="s", status="n/a", notes=f"no config '{config_name}'"))
            continue
        t0 = time.perf_counter()
        res = estimate_experiment(exp, exp.configs[config_name], config_name, run.probe_s or size["probe_s"],
                                  min(cap, left))
        res["probe_wall_s"] = time.perf_counter() - t0
        details["experiments"][name] = res
        declared = exp.cost.get(config_name, "")
        if res["status"] == "ok":
            rows.append(row("estimate", name, what, res["estimate_s"], unit="s",
                            notes=f"{res['method']}; this probe {res['probe_wall_s']:.1f}s; declared cost "
                                  f"'{declared}'; in a warm process, checkpoint writes not timed"))
        else:
            rows.append(row("estimate", name, what, unit="s", status="n/a", notes=f"not estimated ({res['why']})"))
        print(f"  estimate {name}: {rows[-1]['ours'] if rows[-1]['ours'] is not None else 'n/a'} "
              f"({res['probe_wall_s']:.1f}s)", flush=True)
        gc.collect()
    return rows, details


# ----------------------------------------------------------------------------- the table


def fmt(x) -> str:
    if not _finite(x):
        return "-"
    return f"{x:.4g}"


def print_table(rows: list[dict], out=print, legend: bool = True) -> None:
    out(f"{'section':9s} {'what':46s} {'ours':>11s} {'peer (best)':>11s} {'ratio':>8s}  {'unit':13s} notes")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if _finite(r["ratio"]) else ("ERROR" if r["status"] == "error" else
                                                                     ("n/a" if r["status"] == "n/a" else "-"))
        best = f"peer {r['peer_name']}; " if r["peer_name"] and _finite(r["peer"]) else ""
        out(f"{r['section']:9s} {r['what'][:46]:46s} {fmt(r['ours']):>11s} {fmt(r['peer']):>11s} {ratio:>8s}  "
            f"{r['unit'][:13]:13s} {best}{r['notes']}")
    if legend:
        out("(ratio: how many times faster lsb_jax is than the peer's best; > 1: lsb_jax faster. Medians of "
            "interleaved rounds after warm-up and compilation.)")


RUNNERS = {"icl": section_icl, "parity": section_parity, "lm": section_lm, "mfu": section_mfu,
           "kcenter": section_kcenter, "estimate": section_estimate}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (runs on CPU in seconds; the test's mode)")
    ap.add_argument("--only", default="", help=f"comma-separated sections of {','.join(SECTIONS)}")
    ap.add_argument("--out", default=str(ROOT / "runs/benchmarks/gpu_check.json"))
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak for MFU (default: by device)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check; the estimate "
                    "section uses what the others leave (kept under 8 minutes with the estimates' overrun)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default: by size)")
    ap.add_argument("--torch-compile", choices=("auto", "on", "off"), default="auto",
                    help="time torch.compile in the icl section (auto: on GPU sizes only)")
    ap.add_argument("--experiments", default="", help="estimate: comma-separated experiments (default: by size)")
    ap.add_argument("--config", default="", help="estimate: which config of each experiment (default: full; "
                    "--tiny: quick)")
    ap.add_argument("--estimate-cap", type=float, default=None, help="estimate: most seconds per experiment")
    ap.add_argument("--probe-s", type=float, default=None, help="estimate: seconds of timed steps per fit")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {','.join(SECTIONS)}")

    t_start = time.perf_counter()
    import jax
    backend = jax.default_backend()
    on_gpu = backend in ("gpu", "cuda", "rocm")
    if not args.tiny and not on_gpu:
        print(f"gpu_check: JAX's default backend is '{backend}', not a GPU. The GPU sizes need one (this is the "
              "check for a lent GPU machine); pass --tiny for the CPU smoke run.", file=sys.stderr)
        return 2
    size_name = "tiny" if args.tiny else "gpu"
    sizes = SIZES[size_name]
    kind = jax.devices()[0].device_kind
    run = Run(size_name=size_name, on_gpu=on_gpu, device_kind=kind, rounds=args.rounds or sizes["rounds"],
              torch_compile=args.torch_compile == "on" or (args.torch_compile == "auto" and not args.tiny),
              peak_tflops=args.peak_tflops or (default_peak(kind) if on_gpu else None), budget_s=args.budget,
              t_start=t_start, experiments=tuple(e for e in args.experiments.split(",") if e) or None,
              estimate_config=args.config or None, estimate_cap_s=args.estimate_cap, probe_s=args.probe_s)
    print(f"gpu_check: sizes '{size_name}', jax {jax.__version__} on {backend} ({kind}), sections {','.join(only)}",
          flush=True)

    from lsb_jax import io
    env = _peers.environment()

    def write(complete: bool) -> float:
        """The JSON so far (rewritten after every section: a run cut short keeps what it measured)."""
        total = time.perf_counter() - t_start
        io.write_json(args.out, {"sizes": size_name, "sections": only, "complete": complete, "env": env,
                                 "rows": rows, "details": details, "elapsed_s": elapsed, "total_s": total,
                                 "budget_s": args.budget})
        return total

    rows, details, elapsed = [], {}, {}
    for name in only:
        t0 = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        reserve = RESERVE_S[size_name][name]
        if run.remaining_s() < reserve:
            rows.append(row(name, "budget", f"{name} section", notes=f"n/a (budget): {run.remaining_s():.0f}s left of "
                            f"{args.budget:.0f}s, it needs ~{reserve:.0f}s; rerun with --only {name}", status="n/a"))
            elapsed[name] = 0.0
            print(f"[{name}] skipped: {rows[-1]['notes']}", flush=True)
            continue
        try:
            section_rows, details[name] = RUNNERS[name](sizes[name], run)
        except Exception as e:  # noqa: BLE001 - one section failing leaves the others
            traceback.print_exc()
            section_rows = [row(name, "error", f"{name} section", notes=error_text(e), status="error")]
            details[name] = {"error": error_text(e)}
        rows += section_rows
        elapsed[name] = time.perf_counter() - t0
        free_torch_memory()
        print_table(section_rows, legend=False)
        print(f"[{name}] {elapsed[name]:.1f}s (total {write(False):.1f}s)", flush=True)

    total = write(True)
    print()
    print_table(rows)
    print("elapsed: " + ", ".join(f"{k} {v:.1f}s" for k, v in elapsed.items()) + f"; total {total:.1f}s"
          + (f" (over the {args.budget:.0f}s budget)" if total > args.budget else ""))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
