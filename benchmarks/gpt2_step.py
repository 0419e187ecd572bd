"""GPT-2 training step: lsb_jax (`models.gpt2`) vs the same model in PyTorch, one run, same machine.

The in-context regression step of seed 004 (Garg et al. 2022): prompts of P (x, y) pairs,
x ~ N(0, I_d), y = <w, x> + noise, interleaved as T = 2P tokens of dimension d + 1
([x, 0] then [0, y]); the prediction for y_i is read at x_i's position; MSE loss, Adam(1e-4).
Both frameworks start from the same weights and see the same batch; their step-0 losses must agree.

Measured (median seconds per step over --repeats interleaved rounds of --steps steps, after warm-up/compile):
  (a) lsb_jax: jitted step (value_and_grad + optax.adam, params/opt state donated), one call per step
  (a') the same step as the experiments train it: `train.fit`, --loop-steps steps per compiled
      segment (one program runs them in a loop; the ICL sweeps use 100-250). Per call, a program
      pays its dispatch and the first touch of its temporary buffers (fresh pages from the OS);
      in the loop, once per segment.
  (b) PyTorch eager (torch.optim.Adam), (c) torch.compile of the model (if it works here)
  (d) lsb_jax: --seeds members vmapped in one jitted step, vs (e) the seeds run one after another
      in PyTorch eager.
With --keep-cpu-buffers the process first calls `train.hosts.keep_cpu_buffers()` (one-device CPU
programs on the calling thread, glibc keeping freed blocks): a call then reuses its temporary
buffers instead of faulting in fresh pages; the rows say "(CPU buffers kept)" and PyTorch runs in
the same process, under the same malloc. Also forward-only and forward+backward times, to see
where time goes. PyTorch is timed at 1 thread and at all cores (`--threads`) and every ratio is
against its faster setting (on a loaded 2-core machine its default threads can be many times
slower); XLA uses the cores JAX sees. Medians of interleaved rounds (`benchmarks/_peers.py`).

    .venv/bin/python benchmarks/gpt2_step.py [--layers 6 --heads 4 --width 128] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lsb_jax import io
from lsb_jax.models import gpt2
from lsb_jax.train import TrainState, fit
from lsb_jax.train.hosts import keep_cpu_buffers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import compare, environment, interleaved, peer_threads, print_table, torch_at_threads  # noqa: E402


def icl_batch(rng: np.random.Generator, B: int, P: int, d: int, noise: float = 1.0):
    """tokens [B, 2P, d+1] ([x_i, 0], [0.., y_i] interleaved) and targets y [B, P] (float32)."""
    x_BxPxd = rng.normal(size=(B, P, d)).astype(np.float32)
    w_Bxd = rng.normal(size=(B, d)).astype(np.float32)
    y_BxP = np.einsum("bpd,bd->bp", x_BxPxd, w_Bxd) + noise * rng.normal(size=(B, P)).astype(np.float32)
    tok_BxPx2xI = np.zeros((B, P, 2, d + 1), np.float32)
    tok_BxPx2xI[:, :, 0, :d] = x_BxPxd
    tok_BxPx2xI[:, :, 1, d] = y_BxP
    return tok_BxPx2xI.reshape(B, 2 * P, d + 1), y_BxP.astype(np.float32)


def jax_parts(cfg: gpt2.GPT2Config, lr: float):
    graphdef, _ = jax.eval_shape(lambda k: gpt2.init_params(cfg, k), jax.random.key(0))
    tx = optax.adam(lr)

    def loss(params, x, y):
        pred_BxP = gpt2.apply(graphdef, params, x)[:, ::2, 0]
        return jnp.mean((pred_BxP - y) ** 2)

    def step(params, opt_state, x, y):
        l, g = jax.value_and_grad(loss)(params, x, y)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, l

    init = lambda key: gpt2.init_params(cfg, key)[1]
    return graphdef, tx, loss, step, init


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=41, help="(x, y) pairs per prompt; T = 2 * pairs tokens")
    ap.add_argument("--dim", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=4, help="members of the vmapped run (0: skip)")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    ap.add_argument("--loop-steps", type=int, default=8, help="(a'): steps per fit segment (0: skip)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to time (default: 1 and all cores); ratios are against the best")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--keep-cpu-buffers", action="store_true",
                    help="call train.hosts.keep_cpu_buffers() first (calls reuse their temporary buffers)")
    ap.add_argument("--out", default=str(ROOT / "runs/benchmarks/gpt2_step.json"))
    args = ap.parse_args()
    kept = keep_cpu_buffers() if args.keep_cpu_buffers else None   # before any JAX computation

    import torch
    from _torch_gpt2 import TorchGPT2, load_jax_params
    threads = tuple(args.threads) if args.threads else peer_threads()

    P, d, B, T = args.pairs, args.dim, args.batch, 2 * args.pairs
    cfg = gpt2.GPT2Config(num_layers=args.layers, num_heads=args.heads, width=args.width, max_len=T,
                          input_dim=d + 1, output_dim=1)
    graphdef, tx, loss_fn, step_fn, init = jax_parts(cfg, 1e-4)
    x_np, y_np = icl_batch(np.random.default_rng(0), B, P, d)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    params0 = jax.jit(init)(jax.random.key(0))
    n_params = gpt2.num_params(params0)
    res = {"config": vars(args) | {"T": T, "num_params": n_params}, "jax": {}, "torch": {}}
    sync_jax = jax.block_until_ready

    # ---- lsb_jax, one model
    fwd = jax.jit(loss_fn)
    fwd_bwd = jax.jit(jax.value_and_grad(loss_fn))
    step = jax.jit(step_fn, donate_argnums=(0, 1))
    t0 = time.perf_counter()
    state = [jax.tree.map(jnp.copy, params0), tx.init(params0)]
    sync_jax(step(jax.tree.map(jnp.copy, params0), tx.init(params0), x, y))
    res["jax"]["compile_s"] = time.perf_counter() - t0
    loss0_jax = float(fwd(params0, x, y))

    def jstep():
        state[0], state[1], l = step(state[0], state[1], x, y)
        return l
    thunks = {"jax.forward": (lambda: fwd(params0, x, y), sync_jax),
              "jax.fwd_bwd": (lambda: fwd_bwd(params0, x, y), sync_jax),
              "jax.step": (jstep, sync_jax)}
    loops = {}
    if args.loop_steps:   # (a'): fit's own segment program, --loop-steps steps per call
        K = args.loop_steps

        def fit_step(st, xb, yb):
            p, o, l = step_fn(st.params, st.opt_state, xb, yb)
            return st.replace(step=st.step + 1, params=p, opt_state=o), {"loss": l}
        fit_state = [TrainState(step=jnp.int32(0), params=jax.tree.map(jnp.copy, params0), opt_state=tx.init(params0),
                                rng=jax.random.key_data(jax.random.key(0)))]

        def jfit():
            st = fit_state[0]
            fit_state[0] = fit(fit_step, st, int(st.step) + K, step_args=(x, y), chunk_size=K, log_every=K,
                               donate_state=True).state
            return fit_state[0].step
        jfit()   # compiles; its K steps from params0 must be the per-call step's K steps
        ref = [jax.tree.map(jnp.copy, params0), tx.init(params0)]
        for _ in range(K):
            ref[0], ref[1], _ = step(ref[0], ref[1], x, y)
        res["jax"]["fit_loop_max_param_diff"] = max(float(jnp.abs(a - b).max()) for a, b in
                                                    zip(jax.tree.leaves(ref[0]), jax.tree.leaves(fit_state[0].params)))
        loops["jax.fit_loop"] = (jfit, sync_jax)

    # ---- PyTorch, same weights and batch
    pure0 = nnx.to_pure_dict(params0)
    new_torch = lambda pure: load_jax_params(TorchGPT2(cfg.num_layers, cfg.num_heads, cfg.width, cfg.max_len,
                                                       d + 1, 1), pure)
    tmodel = new_torch(pure0)
    xt, yt = torch.from_numpy(x_np), torch.from_numpy(y_np)
    tloss = lambda m, xm=xt, ym=yt: ((m(xm)[:, ::2, 0] - ym) ** 2).mean()
    with torch.no_grad():
        loss0_torch = float(tloss(tmodel))
    res["loss0"] = {"jax": loss0_jax, "torch": loss0_torch}

    def torch_step_fn(model, opt, xm=xt, ym=yt):
        def one():
            opt.zero_grad(set_to_none=True)
            l = tloss(model, xm, ym)
            l.backward()
            opt.step()
            return l
        return one

    def torch_fwd():
        with torch.no_grad():
            return tloss(tmodel)

    def torch_fwd_bwd():
        tmodel.zero_grad(set_to_none=True)
        l = tloss(tmodel)
        l.backward()
        return l

    nosync = lambda _: None
    thunks |= torch_at_threads({
        "torch.eager_forward": (torch_fwd, nosync), "torch.eager_fwd_bwd": (torch_fwd_bwd, nosync),
        "torch.eager_step": (torch_step_fn(tmodel, torch.optim.Adam(tmodel.parameters(), lr=1e-4)), nosync)}, threads)

    if not args.no_compile:
        try:
            cmodel = new_torch(pure0)
            cstep = torch_step_fn(torch.compile(cmodel), torch.optim.Adam(cmodel.parameters(), lr=1e-4))
            t0 = time.perf_counter()
            cstep()
            cstep()
            res["torch"]["compile_s"] = time.perf_counter() - t0
            thunks |= torch_at_threads({"torch.compiled_step": (cstep, nosync)}, threads)
        except Exception as e:  # torch.compile needs a C++ toolchain; report, don't fail
            res["torch"]["compiled_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"

    # ---- seeds: vmapped lsb_jax vs PyTorch eager one seed after another (each seed --steps steps)
    M = args.seeds
    if M:
        keys = jax.random.split(jax.random.key(1), M)
        xs_np, ys_np = zip(*(icl_batch(np.random.default_rng(10 + m), B, P, d) for m in range(M)))
        xs, ys = jnp.asarray(np.stack(xs_np)), jnp.asarray(np.stack(ys_np))
        vstep = jax.jit(jax.vmap(step_fn), donate_argnums=(0, 1))
        vparams = jax.jit(jax.vmap(init))(keys)
        seed_steps = []
        for m in range(M):
            tm = new_torch(nnx.to_pure_dict(jax.tree.map(lambda a: a[m], vparams)))
            seed_steps.append(torch_step_fn(tm, torch.optim.Adam(tm.parameters(), lr=1e-4),
                                            torch.from_numpy(xs_np[m]), torch.from_numpy(ys_np[m])))
        vstate = [vparams, jax.vmap(tx.init)(vparams)]

        def jvstep():
            vstate[0], vstate[1], l = vstep(vstate[0], vstate[1], xs, ys)
            return l

        def seq_torch():
            for one in seed_steps:
                for _ in range(args.steps):
                    one()
        thunks |= {"jax.vmap_step": (jvstep, sync_jax)}
        thunks |= torch_at_threads({"torch.sequential_seeds": (seq_torch, nosync)}, threads)

    seq = {k: v for k, v in thunks.items() if k.startswith("torch.sequential_seeds")}
    timed = interleaved({k: v for k, v in thunks.items() if k not in seq}, rounds=args.repeats, calls=args.steps)
    if seq:  # one call runs --steps steps of every seed: per vmapped-step equivalent
        timed |= {k: v / args.steps for k, v in interleaved(seq, rounds=args.repeats).items()}
    if loops:  # one call runs --loop-steps steps
        timed |= {k: v / args.loop_steps for k, v in interleaved(loops, rounds=args.repeats).items()}
    for name, sec in timed.items():
        fw, key = name.split(".")
        res[fw][key.replace("@", "_at_") + "_s"] = sec
    size = f"L{cfg.num_layers} W{cfg.width} B{B}"
    shape = f"L{cfg.num_layers} W{cfg.width} H{cfg.num_heads} B{B} T{T} ({n_params / 1e6:.2f}M params)"
    pairs = [("forward", "jax.forward", "torch.eager_forward"), ("fwd+bwd", "jax.fwd_bwd", "torch.eager_fwd_bwd"),
             ("step", "jax.step", "torch.eager_step")]
    if any(k.startswith("torch.compiled_step") for k in timed):
        pairs.append(("step", "jax.step", "torch.compiled_step"))
    if loops:
        pairs.append((f"step in fit's loop ({args.loop_steps} per call)", "jax.fit_loop", "torch.eager_step"))
        if any(k.startswith("torch.compiled_step") for k in timed):
            pairs.append((f"step in fit's loop ({args.loop_steps} per call)", "jax.fit_loop", "torch.compiled_step"))
    if M:
        pairs.append((f"{M} seeds vmap", "jax.vmap_step", "torch.sequential_seeds"))
    tag = " (CPU buffers kept)" if kept else ""
    rows = [compare(f"ICL GPT-2 {size} {what}{tag}", timed, ours, peer, shape=shape) for what, ours, peer in pairs]
    res["rows"], res["cpu_buffers"] = rows, kept or "default"
    res["ratios"] = {r["benchmark"]: r["ratio_vs_best"] for r in rows}  # > 1: lsb_jax is faster
    res["env"] = environment()

    print(f"GPT-2 {shape}, device={jax.devices()[0].platform}, torch threads timed {threads}")
    print(f"step-0 loss: lsb_jax {loss0_jax:.6f}  torch {loss0_torch:.6f}  "
          f"(|diff| {abs(loss0_jax - loss0_torch):.2e}); jax compile {res['jax']['compile_s']:.1f} s")
    if kept:
        print(f"CPU buffers kept: {kept}")
    if "compiled_error" in res["torch"]:
        print(f"torch.compile: failed ({res['torch']['compiled_error']})")
    print_table(rows)
    io.write_json(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
