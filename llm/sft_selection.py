"""SFT on a uniform subset: greedy k-center (max-min h_min) vs random subsets of the same size (seed 003, LLM part).

Reproduces: seed 003's SFT experiments (arXiv "Data Uniformity Improves Training Efficiency and
More"): from an instruction pool of N examples, select n by maximizing the minimum pairwise
distance h_min of their embeddings (greedy k-center / farthest point,
`lsb_jax.data.selection.kcenter_greedy`, a 2-approximation of max-min h_min) and fine-tune on
them; the claim is that a larger h_min trains faster and ends at least as well as random
selection. Arms (every one fine-tunes the SAME starting model for the SAME number of steps,
batch size and data order key; only the subset differs):

    kcenter_minilm  k-center on all-MiniLM-L6-v2 embeddings of prompt + response (`data.embed`)
    kcenter_hidden  k-center on the target's own mean-pooled final hidden states (L2-normalized)
    kcenter_minilm_bysource
                    k-center within each source (the domain column), n split in proportion to the
                    sources' sizes: the pool's mix of sources, uniform within each
    random_<s>      uniform random subsets, one per seed s (the error bar)
    full            the whole pool (reference; same steps, so fewer passes over more examples)

Metrics: each subset's h_min and mean nearest-neighbour distance in both embedding spaces; the
held-out response loss (mean per-example next-token loss over the answer tokens of the
GSM8K-like test set) at evenly spaced steps (`llm.selection.finetune_on_subset`); greedy
generation accuracy with 95% Wilson intervals (`llm.evaluate`), reported even when 0.

quick (offline, CPU): pool = 600 reasoning-gym rows (chain_sum 300, simple_equations 150,
basic_arithmetic 150; MathInstruct fields), test = 100 GSM8K-like chain_sum rows, a byte-level
BPE tokenizer trained on the pool, a 2-layer width-64 Qwen3-style target built from scratch and
pre-trained 40 steps on a disjoint corpus from the same generators; n = 120, 4 passes over n
(30 steps of batch 16) per arm, 3 random seeds. Generation accuracy of such a model is ~0, so
the held-out loss is the primary metric here.
full (GPU/TPU, network): TIGER-Lab/MathInstruct (262k rows), n = 10,000, target
Qwen/Qwen3-0.6B-Base (full fine-tuning, AdamW 2e-5, cosine, bf16, 3 epochs of n), test
openai/gsm8k; not run here.

Writes: data/ (offline sets), models/target/ (the common starting point), features.npz (MiniLM
and hidden features [N, F]), subsets.npz (each arm's example ids), per arm <arm>/{counts.npz
(0/1 counts and the trainer's example ids [steps, B]), heldout.npz ([N_test, K] losses),
eval_<test>.jsonl, summary.json}, comparison.{md,json} (geometry, loss, accuracy per arm),
accuracy.md (`evaluate.comparison_table`), figures heldout_loss (curves) and hmin_vs_loss.
What the run reports (results.json, comparison.md, the report): valid and skipped pool rows, h_min
of every subset (k-center vs random seeds, mean +- std), held-out loss per arm at every evaluation
and at the end, generation accuracy with Wilson intervals, and each subset's mix over the pool's
sources. What to look for: seed 003 expects the k-center subsets (larger h_min) to end below the
random subsets' held-out loss. A k-center subset may spread its picks over the sources while the
test set is of one source, trading away in-distribution data; `kcenter_minilm_bysource` keeps the
pool's source mix and separates that effect from uniformity. Accuracy near 0 at the quick scale
makes the held-out loss the primary metric there. Cost: quick a few minutes of CPU; full: hours on
one accelerator (not run here).

    lsb run sft_selection --config quick
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import numpy as np

from lsb_jax import io
from lsb_jax.analysis import mean_std
from lsb_jax.experiments import Experiment
from lsb_jax.llm import pipeline as pl
from lsb_jax.llm import selection as sel
from lsb_jax.llm.data import PromptTemplate, load_examples, read_validated
from lsb_jax.llm.evaluate import comparison_table, evaluate_generation, model_generate_fn, to_jsonl
from lsb_jax.llm.finetune import FinetuneConfig, steps_for_epochs
from lsb_jax.llm.mathdata import GSM8K_TEST, MATHINSTRUCT, OfflineMathConfig, offline_specs, write_offline_math
from lsb_jax.models.lm import check_source, load_pretrained, load_tokenizer
from lsb_jax.optim import OptimConfig

SCRATCH = "scratch"
ARM_KINDS = ("kcenter_minilm", "kcenter_hidden", "kcenter_minilm_bysource", "random", "full")
SPACES = ("minilm", "hidden")
PRETRAIN_STREAM, ARM_STREAM = 1, 3      # PRNG streams of the data order (as in upsample_hard)


@dataclasses.dataclass(frozen=True)
class Config:
    data: Literal["offline", "hub"] = "offline"
    offline: OfflineMathConfig = OfflineMathConfig(
        train=(("chain_sum", 300), ("simple_equations", 150), ("basic_arithmetic", 150)),
        test_generator="chain_sum", test_size=100)
    prompt_format: str = "Question: {prompt}\nAnswer: "
    template: Literal["auto", "chat", "plain"] = "plain"
    max_length: int = 80                     # longer pool rows are skipped (and counted)
    heldout_max_length: int = 160            # longer test rows are left out of the held-out loss
    # max_length is a length filter here: the offline generators write some rows longer than it, by
    # design; more skipped rows than this fraction (of the pool or the held-out set) fails the
    # run; the counts are in results.json's "validation"
    max_skip_fraction: float = 0.25
    tokenizer_vocab: int = 384
    target: str = SCRATCH                    # hub id / folder, or "scratch"
    target_model: pl.ScratchModel = pl.ScratchModel("qwen3", hidden_size=64, num_layers=2, num_heads=4,
                                                    num_kv_heads=2, intermediate_size=128, tie_embeddings=True)
    pretrain_steps: int = 40                 # short: with 150 steps fine-tuning no longer lowers the held-out loss
    pretrain: FinetuneConfig = FinetuneConfig(optim=OptimConfig(name="adamw", lr=3e-3, schedule="warmup_cosine"),
                                              warmup_ratio=0.05)
    train: FinetuneConfig = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-3, schedule="warmup_cosine"),
                                           warmup_ratio=0.03)
    batch_size: int = 16
    subset_size: int = 120                   # n
    epochs: float = 4.0                      # steps = ceil(epochs * n / batch_size), the same for every arm
    arms: tuple[str, ...] = ARM_KINDS
    random_seeds: tuple[int, ...] = (0, 1, 2)
    kcenter_start: int = 0                   # first pick (any start keeps the 2-approximation)
    num_evals: int = 6                       # held-out loss at num_evals + 1 evenly spaced steps (0 included)
    score_batch: int = 50
    eval_batch: int = 50
    max_new_tokens: int = 20
    test_limit: int = 0                      # generation on the first n test rows (0: all)
    seed: int = 0

    def __post_init__(self):
        if self.data not in ("offline", "hub"):
            raise ValueError(f"Config.data must be 'offline' or 'hub', got {self.data!r}")
        unknown = [a for a in self.arms if a not in ARM_KINDS]
        if unknown or not self.arms:
            raise ValueError(f"Config.arms: unknown {unknown}; expected some of {ARM_KINDS}")
        if "random" in self.arms and not self.random_seeds:
            raise ValueError("Config.random_seeds: the random arm needs at least one seed")
        if self.data == "hub" and self.target == SCRATCH:
            raise ValueError("Config: a 'scratch' target needs the offline data (its tokenizer is trained on it)")
        if self.subset_size < 2 or self.batch_size < 1 or self.epochs <= 0 or self.num_evals < 1:
            raise ValueError("Config: subset_size >= 2, batch_size >= 1, epochs > 0 and num_evals >= 1")
        if not 0 <= self.max_skip_fraction <= 1:
            raise ValueError(f"Config.max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")
        PromptTemplate(kind=self.template, prompt_format=self.prompt_format)   # validates

    def arm_names(self) -> list[str]:
        out = []
        for a in self.arms:
            out += [f"random_{s}" for s in self.random_seeds] if a == "random" else [a]
        return out


def check(cfg: Config) -> None:
    """Before anything is written: a target that is not built from scratch resolves."""
    if cfg.target != SCRATCH:
        check_source(cfg.target)


def target_folder(cfg: Config, template, tokenizer, ctx) -> str:
    """The common starting point: a hub id / folder, or a scratch model pre-trained and saved."""
    if cfg.target != SCRATCH:
        return cfg.target
    folder = ctx.dir / "models" / "target"
    if (folder / "config.json").exists():          # done before a resume
        return str(folder)
    write_offline_math(ctx.dir / "data" / "pretrain", dataclasses.replace(cfg.offline, seed=cfg.offline.seed + 1))
    corpus_spec, _ = offline_specs(ctx.dir / "data" / "pretrain")
    corpus, _ = load_examples(corpus_spec, tokenizer, template, max_length=cfg.max_length, on_error="skip",
                              max_skip_fraction=None)      # our own generated corpus: a length filter, no limit
    model = sel.pretrain_scratch(cfg.target_model, tokenizer, corpus, cfg.pretrain, cfg.pretrain_steps,
                                 batch_size=cfg.batch_size, key=pl.key_for(cfg.seed, PRETRAIN_STREAM), seed=cfg.seed,
                                 ctx=ctx.child("pretrain"))
    return str(pl.save_model(model, tokenizer, folder))


def subsets(cfg: Config, feats: dict, n_pool: int, source_N: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for arm in cfg.arm_names():
        if arm.startswith("kcenter_"):
            space, by_source = arm.split("_")[1], arm.endswith("_bysource")
            out[arm] = sel.kcenter_subset(feats[space], cfg.subset_size, start=cfg.kcenter_start,
                                          groups_N=source_N if by_source else None)
        elif arm.startswith("random_"):
            out[arm] = sel.random_subset(n_pool, cfg.subset_size, seed=int(arm.split("_", 1)[1]))
        else:
            out[arm] = np.arange(n_pool)
    return out


def run_arm(arm, index_n, folder, examples, heldout, test, num_steps, cfg, template, ctx) -> dict:
    """Fine-tune a fresh copy of the target on the subset; held-out loss curve; generation accuracy."""
    done = ctx.dir / "summary.json"
    if done.exists():
        return io.read_json(done)
    tok = load_tokenizer(folder)
    run = sel.finetune_on_subset(load_pretrained(folder), examples, index_n, heldout, cfg.train, num_steps,
                                 batch_size=cfg.batch_size, key=pl.key_for(cfg.seed, ARM_STREAM),
                                 pad_id=tok.pad_token_id, eval_steps=sel.eval_steps(num_steps, cfg.num_evals),
                                 ctx=ctx, score_batch_size=cfg.score_batch)
    ctx.save_arrays("counts", counts_N=run.counts_N, example_id_SxB=run.example_id_SxB)
    spec, rows = test
    generate_fn = model_generate_fn(run.train.merged_model(), tok, template, batch_size=cfg.eval_batch,
                                    max_new_tokens=cfg.max_new_tokens, stop_strings=("\n\n",))
    t0 = time.perf_counter()
    records, acc = evaluate_generation(rows, generate_fn, answer_format=spec.answer_format)
    io.write_text(ctx.dir / "eval.jsonl", to_jsonl(records))
    loss_S = np.asarray(run.train.fit.history["loss"], np.float64).reshape(-1)
    out = {"arm": arm, "n": int(len(index_n)), "steps": num_steps, "train_tokens": run.train.tokens,
           "train_seconds": run.train.seconds, "eval_seconds": time.perf_counter() - t0,
           "eval_steps": run.steps_K.tolist(), "heldout_loss": run.curve_K.tolist(),
           "train_loss_first_last": [float(loss_S[0]), float(loss_S[-1])], "accuracy": acc}
    ctx.save_json("summary.json", out)
    return out


def table(arms: dict, geometry: dict) -> tuple[str, list[dict]]:
    """Markdown + JSON rows: geometry in both spaces, held-out loss (start, final, mean over the
    curve after step 0), train tokens, accuracy with its Wilson CI; plus a random mean +- std row."""
    rows = []
    for arm, out in arms.items():
        curve = np.asarray(out["heldout_loss"])
        acc = out["accuracy"]
        rows.append({"arm": arm, "n": out["n"], "train_tokens": out["train_tokens"],
                     **{f"{k}_{s}": geometry[arm][s][k] for s in SPACES if s in geometry[arm]
                        for k in ("h_min", "mean_nn")},
                     "heldout_start": float(curve[0]), "heldout_final": float(curve[-1]),
                     "heldout_mean": float(curve[1:].mean()) if len(curve) > 1 else float(curve[0]),
                     "accuracy": acc["accuracy"], "ci_low": acc["ci_low"], "ci_high": acc["ci_high"],
                     "acc_n": acc["n"]})
    spaces = [s for s in SPACES if f"h_min_{s}" in rows[0]]
    head = (["arm", "n", "train tokens"] + [f"{k} ({s})" for s in spaces for k in ("h_min", "mean NN")]
            + ["held-out loss start", "final", "mean over steps", "acc % (95% Wilson CI)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["arm"], str(r["n"]), str(r["train_tokens"])]
        cells += [f"{r[f'{k}_{s}']:.4f}" for s in spaces for k in ("h_min", "mean_nn")]
        cells += [f"{r['heldout_start']:.4f}", f"{r['heldout_final']:.4f}", f"{r['heldout_mean']:.4f}",
                  f"{100 * r['accuracy']:.1f} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}] (n={r['acc_n']})"]
        lines.append("| " + " | ".join(cells) + " |")
    rand = [r for r in rows if r["arm"].startswith("random_")]
    if len(rand) > 1:
        fmt = lambda key: "{:.4f} ± {:.4f}".format(*mean_std([r[key] for r in rand]))  # noqa: E731
        cells = [f"random (mean ± std, {len(rand)} seeds)", str(rand[0]["n"]),
                 "{:.0f} ± {:.0f}".format(*mean_std([r["train_tokens"] for r in rand]))]
        cells += [fmt(f"{k}_{s}") for s in spaces for k in ("h_min", "mean_nn")]
        cells += [fmt("heldout_start"), fmt("heldout_final"), fmt("heldout_mean"),
                  "{:.1f} ± {:.1f}".format(*(100 * x for x in mean_std([r["accuracy"] for r in rand])))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", rows


def plot(arms: dict, rows: list[dict]):
    from lsb_jax import plots  # noqa: PLC0415

    fig, (ax, sx) = plots.figure(2)
    rand = [a for a in arms if a.startswith("random_")]
    if rand:
        steps = np.asarray(arms[rand[0]]["eval_steps"])
        plots.band(ax, steps, np.stack([arms[a]["heldout_loss"] for a in rand], 1), label=f"random ({len(rand)} seeds)",
                   color="C0")
    colors = {a: f"C{i + 1}" for i, a in enumerate(a for a in arms if not a.startswith("random_"))}
    for arm, color in colors.items():
        ax.plot(arms[arm]["eval_steps"], arms[arm]["heldout_loss"], marker="o", ms=3, label=arm, color=color)
    ax.set(xlabel="fine-tuning step", ylabel="held-out response loss", title="held-out loss")
    ax.legend(fontsize=7)
    space = "minilm" if "h_min_minilm" in rows[0] else "hidden"
    for r in rows:
        color = colors.get(r["arm"], "C0")
        sx.scatter(r[f"h_min_{space}"], r["heldout_final"], color=color)
        sx.annotate(r["arm"], (r[f"h_min_{space}"], r["heldout_final"]), fontsize=6)
    sx.set(xlabel=f"h_min ({space} space)", ylabel="final held-out loss", title="uniformity vs held-out loss")
    return fig


def verdict(rows: list[dict], arm: str) -> str:
    """One honest sentence: arm vs the random seeds' range on h_min and on the held-out loss."""
    r = next(x for x in rows if x["arm"] == arm)
    rand = [x for x in rows if x["arm"].startswith("random_")]
    if not rand:
        return f"{arm}: final held-out loss {r['heldout_final']:.4f} (no random arm to compare)."
    space = arm.split("_")[1]          # kcenter_<space>[_bysource]
    parts = []
    for key, what in (("heldout_final", "final"), ("heldout_mean", "mean-over-steps")):
        vals = np.array([x[key] for x in rand])
        m, s = mean_std(vals)
        where = ("below every random seed" if r[key] < vals.min() else
                 "above every random seed" if r[key] > vals.max() else "within the random seeds' range")
        parts.append(f"{what} held-out loss {r[key]:.4f} vs random {m:.4f} ± {s:.4f} ({where})")
    hm, hs = mean_std([x[f"h_min_{space}"] for x in rand])
    return f"{arm}: h_min {r[f'h_min_{space}']:.3f} vs random {hm:.3f} ± {hs:.3f}; " + "; ".join(parts) + "."


def run(cfg: Config, ctx) -> dict:
    t_start = time.perf_counter()
    template = PromptTemplate(kind=cfg.template, prompt_format=cfg.prompt_format)
    if cfg.data == "hub":
        pool_spec, test_spec = MATHINSTRUCT, GSM8K_TEST
        tokenizer = None
    else:
        write_offline_math(ctx.dir / "data", cfg.offline)
        pool_spec, test_spec = offline_specs(ctx.dir / "data")
        rows, _ = read_validated(pool_spec)
        tokenizer = pl.train_tokenizer([cfg.prompt_format.replace("{prompt}", r.prompt) + r.response for r in rows],
                                       cfg.tokenizer_vocab)
    folder = target_folder(cfg, template, tokenizer, ctx)
    tok = load_tokenizer(folder)
    examples, report = load_examples(pool_spec, tok, template, max_length=cfg.max_length, on_error="skip",
                                     max_skip_fraction=cfg.max_skip_fraction)
    heldout, heldout_report = load_examples(test_spec, tok, template, max_length=cfg.heldout_max_length,
                                            on_error="skip", max_skip_fraction=cfg.max_skip_fraction)
    test_rows, _ = read_validated(test_spec)
    test = (test_spec, test_rows[:cfg.test_limit] if cfg.test_limit else test_rows)
    if cfg.subset_size > len(examples):
        raise ValueError(f"Config.subset_size={cfg.subset_size} exceeds the pool ({len(examples)} valid rows)")
    t_model = time.perf_counter()

    # --- features of the pool (cached in the run for a resume)
    fpath = ctx.dir / "features.npz"
    if fpath.exists():
        with np.load(fpath) as z:
            feats = {s: z[s] for s in SPACES}
    else:
        feats = {"minilm": sel.text_features(examples.rows),
                 "hidden": sel.hidden_features(load_pretrained(folder), examples)}
        ctx.save_arrays("features", **feats)
    picks = subsets(cfg, feats, len(examples), examples.domain_N)
    ctx.save_arrays("subsets", **picks)
    geometry = {arm: {s: sel.subset_geometry(feats[s], idx) for s in SPACES} for arm, idx in picks.items()}
    t_select = time.perf_counter()

    # --- one fine-tune per arm: same start, same steps, same data-order key
    num_steps = steps_for_epochs(cfg.subset_size, cfg.batch_size, cfg.epochs)
    arms = {arm: run_arm(arm, idx, folder, examples, heldout, test, num_steps, cfg, template, ctx.child(arm))
            for arm, idx in picks.items()}

    table_md, rows = table(arms, geometry)
    io.write_text(ctx.dir / "comparison.md", table_md)
    ctx.save_json("comparison.json", rows)
    acc_md, _ = comparison_table({a: {f"{test_spec.label}": o["accuracy"]} for a, o in arms.items()},
                                 baseline=next((a for a in arms if a.startswith("random_")), next(iter(arms))),
                                 arms=list(arms))
    io.write_text(ctx.dir / "accuracy.md", acc_md)
    ctx.save_figure(plot(arms, rows), "heldout_loss")

    rand = [r for r in rows if r["arm"].startswith("random_")]
    headline = {"n_pool": len(examples), "pool_rows_skipped": report.num_skipped, "n_heldout": len(heldout),
                "subset_size": cfg.subset_size, "steps": num_steps,
                **{f"h_min_{s}_{r['arm']}": r[f"h_min_{s}"] for r in rows for s in SPACES},
                **{f"heldout_final_{r['arm']}": r["heldout_final"] for r in rows},
                **{f"acc_{r['arm']}": r["accuracy"] for r in rows},
                "seconds": {"data_and_model": round(t_model - t_start, 1), "select": round(t_select - t_model, 1),
                            "arms": round(time.perf_counter() - t_select, 1)}}
    if rand:
        headline["random_heldout_final_mean_std"] = list(mean_std([r["heldout_final"] for r in rand]))
        headline["random_h_min_minilm_mean_std"] = list(mean_std([r["h_min_minilm"] for r in rand]))
    start = rows[0]["heldout_start"]
    summary = (f"{cfg.subset_size} of {len(examples)} pool examples, {num_steps} fine-tuning steps per arm from the "
               f"same start (held-out loss {start:.3f} at step 0, n_test={len(heldout)}). "
               + " ".join(verdict(rows, a) for a in arms if a.startswith("kcenter_"))
               + (f" Full pool: final held-out loss {arms['full']['heldout_loss'][-1]:.4f}." if "full" in arms else "")
               + " Generation accuracy: " + ", ".join(f"{r['arm']} {100 * r['accuracy']:.1f}%" for r in rows)
               + " (Wilson CIs in comparison.md).")
    return {"headline": headline, "summary": summary, "table": rows, "arms": arms,
            "validation": [report.to_json(), heldout_report.to_json()]}


FULL = Config(
    data="hub", template="auto", prompt_format=PromptTemplate().prompt_format, max_length=512, heldout_max_length=512,
    target="Qwen/Qwen3-0.6B-Base",
    train=FinetuneConfig(optim=OptimConfig(name="adamw", lr=2e-5, schedule="warmup_cosine"), warmup_ratio=0.03,
                         accum_steps=4, compute_dtype="bfloat16"),
    batch_size=32, subset_size=10_000, epochs=3.0, random_seeds=(0, 1, 2), num_evals=10, score_batch=64,
    eval_batch=64, max_new_tokens=512, max_skip_fraction=0.05)

EXPERIMENT = Experiment(
    name="sft_selection",
    reproduces="seed 003 SFT: fine-tune on a max-min-h_min (k-center) subset vs random subsets (issue 9)",
    description=__doc__.splitlines()[0],
    configs={"quick": Config(), "full": FULL},
    cost={"quick": "~3.5 min CPU (offline; 4.7 min wall measured on a loaded machine)",
          "full": "hours on one GPU/TPU (network; not measured)"},
    run=run,
    check=check,
    order=75,
)
