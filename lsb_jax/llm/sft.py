"""Seed 003's SFT selection protocol as library steps; `llm/sft_selection.py` is its recipe.

    cfg = SFTConfig()                                  # defaults: the offline CPU scale
    run = prepare(cfg, ctx)                            # sets, tokenizer, the common starting model, pool
    feats = pool_features(run, ctx)                    # MiniLM and hidden-state features [N, F] (cached)
    picks = subsets(cfg, feats, len(run.examples), run.examples.domain_N)   # arm -> example ids
    arms = {arm: finetune_subset_arm(arm, idx, run, cfg, ctx.child(arm)) for arm, idx in picks.items()}
    out = report(cfg, run, feats, picks, arms, seconds, ctx)   # comparison.{md,json}, figures, results

Every arm fine-tunes the SAME starting model for the SAME number of steps, batch size and
data-order key; only the subset differs (`selection.finetune_on_subset`). Uniformity is measured
in both feature spaces (`selection.subset_geometry`: h_min and the mean nearest-neighbour
distance), the held-out response loss at `num_evals + 1` evenly spaced steps, and generation
accuracy with 95% Wilson intervals (`pipeline.evaluate_tests`). The comparison reads a k-center
arm against the spread of the random seeds (`verdict`). A resumed run reuses the model folder,
the features and every finished arm's summary.json.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

import numpy as np

from lsb_jax import io
from lsb_jax.claims import Claim, per_seed
from lsb_jax.analysis import mean_std
from lsb_jax.llm import pipeline as pl
from lsb_jax.llm import selection as sel
from lsb_jax.llm.data import (DatasetSpec, Examples, PromptTemplate, Row, load_examples, pad_token_id,
                              read_validated)
from lsb_jax.llm.evaluate import comparison_table
from lsb_jax.llm.finetune import FinetuneConfig, steps_for_epochs
from lsb_jax.llm.mathdata import GSM8K_TEST, MATHINSTRUCT, OfflineMathConfig
from lsb_jax.models.lm import load_pretrained, load_tokenizer
from lsb_jax.optim import OptimConfig

SCRATCH = pl.SCRATCH
ARM_KINDS = ("kcenter_minilm", "kcenter_hidden", "kcenter_minilm_bysource", "random", "full")
SPACES = ("minilm", "hidden")
PRETRAIN_STREAM, ARM_STREAM = 1, 3      # PRNG streams of the data order (as in `llm.upsample`)


@dataclasses.dataclass(frozen=True)
class SFTConfig(pl.BaseSeeded):
    """The protocol's settings; the defaults are the offline CPU scale (the experiment's quick config)."""

    data: str = "offline"   # "offline", "hub" or "files" (your own train_data (the pool) and test_data)
    train_data: DatasetSpec = DatasetSpec(path="")
    test_data: DatasetSpec = DatasetSpec(path="", split="test")
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
    pretrain_steps: int = 40                 # short: longer leaves fine-tuning little held-out loss to lower
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
    # the whole protocol (data, starting model, subsets, arms) runs once per base seed (`for_base`):
    # the claims are decided at each and must agree
    base_seeds: tuple[int, ...] = (0, 1)
    # every arm's model to take home (`pipeline.export_finetuned`): "merged" a Hugging Face folder,
    # "adapter" a peft LoRA adapter (LoRA runs only), in the arm's folder
    export: tuple[Literal["merged", "adapter"], ...] = ("merged", "adapter")

    def __post_init__(self):
        pl.check_data_choice(self.data, ("offline", "hub", "files"))
        pl.check_files_config(self.data, self.train_data, self.test_data)
        unknown = [a for a in self.arms if a not in ARM_KINDS]
        if unknown or not self.arms:
            raise ValueError(f"Config.arms: unknown {unknown}; expected some of {ARM_KINDS}")
        if "random" in self.arms and not self.random_seeds:
            raise ValueError("Config.random_seeds: the random arm needs at least one seed")
        if self.data != "offline" and self.target == SCRATCH:
            raise ValueError("Config: a 'scratch' target needs the offline data (its tokenizer is trained on it)")
        if self.subset_size < 2 or self.batch_size < 1 or self.epochs <= 0 or self.num_evals < 1:
            raise ValueError("Config: subset_size >= 2, batch_size >= 1, epochs > 0 and num_evals >= 1")
        if not 0 <= self.max_skip_fraction <= 1:
            raise ValueError(f"Config.max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")
        self.check_base_seeds()
        pl.check_sizes(self, [("batch_size", "train"), ("batch_size", "pretrain")])
        PromptTemplate(kind=self.template, prompt_format=self.prompt_format)   # validates

    def for_base(self, seed: int) -> SFTConfig:
        """The config of the pipeline of base seed `seed`: it seeds the pre-training, the random
        subsets and the data order, and 2 x seed is added to the generated data's seed. A run of
        base_seeds=(s,) is the base seed s of a run of several."""
        # the offline sets use their seed s and s + 1 (pre-training corpus): base seeds step by 2
        return dataclasses.replace(self, base_seeds=(seed,),
                                   offline=dataclasses.replace(self.offline, seed=self.offline.seed + 2 * seed))

    def arm_names(self) -> list[str]:
        out = []
        for a in self.arms:
            out += [f"random_{s}" for s in self.random_seeds] if a == "random" else [a]
        return out



def check(cfg: SFTConfig) -> None:
    """Before anything is written (`pipeline.check_inputs`): the target resolves, LoRA options match
    it, and with your own data (`data="files"`) every test row is valid and the pool fits
    `max_length` with the target's tokenizer."""
    import jax  # noqa: PLC0415

    from lsb_jax.config import ConfigError  # noqa: PLC0415
    if jax.process_count() > 1:
        raise ConfigError("sft_selection runs in one process (its arms are not split over hosts); run it without "
                          "LSB_DISTRIBUTED / JAX_COORDINATOR_ADDRESS")
    files = cfg.data == "files"
    pl.check_inputs([pl.ModelUse("target", cfg.target, cfg.train, cfg.target_model, cfg.tokenizer_vocab)],
                    train=cfg.train_data if files else None, tests=[cfg.test_data] if files else (),
                    template=PromptTemplate(kind=cfg.template, prompt_format=cfg.prompt_format),
                    max_length=cfg.max_length, max_skip_fraction=cfg.max_skip_fraction,
                    min_train_rows=cfg.subset_size, test_max_length=cfg.heldout_max_length)


@dataclasses.dataclass
class SFTRun:
    template: PromptTemplate
    test_spec: DatasetSpec
    folder: str                                   # the common starting model
    examples: Examples                            # the pool
    validation: object                            # the pool's `ValidationReport`
    heldout: Examples                             # the test rows as training examples (held-out loss)
    heldout_validation: object
    test: tuple[DatasetSpec, list[Row]]           # the generation test rows (test_limit applied)
    test_name: str                                # "gsm8k" (hub) or "gsm8k_like" (offline): file and table name


def prepare(cfg: SFTConfig, ctx) -> SFTRun:
    """Hub specs or the offline sets written into `ctx.dir/data`; a scratch target built on a BPE
    tokenizer of the pool, pre-trained on a disjoint corpus and saved to `ctx.dir/models/target`;
    the pool and the held-out set tokenized by the target's tokenizer."""
    template = PromptTemplate(kind=cfg.template, prompt_format=cfg.prompt_format)
    tokenizer, corpus_spec = None, None
    if cfg.data == "hub":
        pool_spec, test_spec = MATHINSTRUCT, GSM8K_TEST
    elif cfg.data == "files":
        pool_spec, test_spec = cfg.train_data, cfg.test_data
    else:
        pool_spec, test_spec, corpus_spec = pl.offline_sets(ctx.dir / "data", cfg.offline,
                                                            pretrain=cfg.target == SCRATCH)
        tokenizer = pl.scratch_tokenizer(pool_spec, cfg.prompt_format, cfg.tokenizer_vocab)

    def corpus():   # our own generated corpus: max_length is a length filter on it, no skip limit
        return load_examples(corpus_spec, tokenizer, template, max_length=cfg.max_length, on_error="skip",
                             max_skip_fraction=None)[0]

    folder = pl.model_folder(cfg.target, ctx.dir / "models" / "target", cfg.target_model, tokenizer, corpus,
                             cfg.pretrain, cfg.pretrain_steps, batch_size=cfg.batch_size,
                             key=pl.key_for(cfg.seed, PRETRAIN_STREAM), seed=cfg.seed, ctx=ctx, child="pretrain")
    tok = load_tokenizer(folder)
    examples, validation = load_examples(pool_spec, tok, template, max_length=cfg.max_length, on_error="skip",
                                         max_skip_fraction=cfg.max_skip_fraction)
    heldout, heldout_validation = load_examples(test_spec, tok, template, max_length=cfg.heldout_max_length,
                                                on_error="skip", max_skip_fraction=cfg.max_skip_fraction)
    if cfg.subset_size > len(examples):
        raise ValueError(f"Config.subset_size={cfg.subset_size} exceeds the pool ({len(examples)} valid rows)")
    test_rows, _ = read_validated(test_spec)
    test = (test_spec, test_rows[:cfg.test_limit] if cfg.test_limit else test_rows)
    test_name = {"hub": "gsm8k", "offline": "gsm8k_like"}.get(cfg.data) or next(iter(pl.user_tests(test_spec)))
    return SFTRun(template, test_spec, folder, examples, validation, heldout, heldout_validation, test, test_name)


def pool_features(run: SFTRun, ctx) -> dict[str, np.ndarray]:
    """{"minilm": MiniLM features, "hidden": the target's pooled hidden states} of the pool
    (`selection.text_features`, `selection.hidden_features`), cached in `ctx.dir/features.npz`."""
    path = ctx.dir / "features.npz"
    if path.exists():
        with np.load(path) as z:
            return {s: z[s] for s in SPACES}
    feats = {"minilm": sel.text_features(run.examples.rows),
             "hidden": sel.hidden_features(load_pretrained(run.folder), run.examples)}
    ctx.save_arrays("features", **feats)
    return feats


def subsets(cfg: SFTConfig, feats: dict, n_pool: int, source_N: np.ndarray) -> dict[str, np.ndarray]:
    """Arm name -> the example ids it trains on (k-center in its space, optionally within each
    source; a seeded random subset; the whole pool)."""
    out = {}
    for arm in cfg.arm_names():
        if arm.startswith("kcenter_"):
            space, by_source = arm.split("_")[1], arm.endswith("_bysource")
            out[arm] = sel.kcenter_subset(feats[space], cfg.subset_size, start=cfg.kcenter_start,
                                          groups_N=source_N if by_source else None)
        elif arm.startswith("random_"):
            out[arm] = sel.random_subset(n_pool, cfg.subset_size, seed=(cfg.seed, int(arm.split("_", 1)[1])))
        else:
            out[arm] = np.arange(n_pool)
    return out


def finetune_subset_arm(arm: str, index_n, run: SFTRun, cfg: SFTConfig, ctx) -> dict:
    """Fine-tunes a fresh copy of the target on the subset for `num_steps(cfg)` steps: held-out loss
    curve, generation accuracy; counts.npz, heldout.npz, eval_<test>.jsonl and summary.json in
    `ctx.dir` (a finished arm's summary.json is returned as it is on a resume)."""
    done = ctx.dir / "summary.json"
    if done.exists():
        return io.read_json(done)
    tok = load_tokenizer(run.folder)
    steps = num_steps(cfg)
    sub = sel.finetune_on_subset(load_pretrained(run.folder), run.examples, index_n, run.heldout, cfg.train, steps,
                                 batch_size=cfg.batch_size, key=pl.key_for(cfg.seed, ARM_STREAM),
                                 pad_id=pad_token_id(tok), eval_steps=sel.eval_steps(steps, cfg.num_evals),
                                 ctx=ctx, score_batch_size=cfg.score_batch)
    ctx.save_arrays("counts", counts_N=sub.counts_N, example_id_SxB=sub.example_id_SxB)
    t0 = time.perf_counter()
    acc = pl.evaluate_tests(sub.train.merged_model(), tok, run.template, {run.test_name: run.test}, ctx.dir,
                            batch_size=cfg.eval_batch, max_new_tokens=cfg.max_new_tokens)[run.test_name]
    loss_S = np.asarray(sub.train.fit.history["loss"], np.float64).reshape(-1)
    pl.log_accuracy(ctx, steps, {run.test_name: acc})
    exported = pl.export_finetuned(sub.train, tok, ctx.dir, base=run.folder, what=cfg.export,
                                   dropout=cfg.train.lora_dropout)
    out = {"arm": arm, "n": int(len(index_n)), "steps": steps, "train_tokens": sub.train.tokens,
           "train_seconds": sub.train.seconds, "eval_seconds": time.perf_counter() - t0,
           "eval_steps": sub.steps_K.tolist(), "heldout_loss": sub.curve_K.tolist(),
           "train_loss_first_last": [float(loss_S[0]), float(loss_S[-1])], "accuracy": acc,
           "exported": {k: str(Path(v).relative_to(ctx.dir)) for k, v in exported.items()}}
    ctx.save_json("summary.json", out)
    return out


def num_steps(cfg: SFTConfig) -> int:
    """Steps of every arm: ceil(epochs * subset_size / batch_size)."""
    return steps_for_epochs(cfg.subset_size, cfg.batch_size, cfg.epochs)


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
    """Held-out loss curves per arm (random seeds as a band) and final held-out loss vs h_min."""
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



def report(cfg: SFTConfig, run: SFTRun, feats: dict, picks: dict, arms: dict, seconds: dict, ctx) -> dict:
    """comparison.{md,json} (geometry, held-out loss, accuracy per arm), accuracy.md, the figures,
    and the run's results: headline numbers, a summary with one verdict per k-center arm, the
    table, every arm's summary, validation."""
    geometry = {arm: {s: sel.subset_geometry(feats[s], idx) for s in SPACES} for arm, idx in picks.items()}
    table_md, rows = table(arms, geometry)
    io.write_text(ctx.dir / "comparison.md", table_md)
    ctx.save_json("comparison.json", rows)
    acc_md, _ = comparison_table({a: {run.test_name: o["accuracy"]} for a, o in arms.items()},
                                 baseline=next((a for a in arms if a.startswith("random_")), next(iter(arms))),
                                 arms=list(arms))
    io.write_text(ctx.dir / "accuracy.md", acc_md)
    ctx.save_figure(plot(arms, rows), "heldout_loss")

    rand = [r for r in rows if r["arm"].startswith("random_")]
    headline = {"n_pool": len(run.examples), "pool_rows_skipped": run.validation.num_skipped,
                "n_heldout": len(run.heldout), "subset_size": cfg.subset_size, "steps": num_steps(cfg),
                **{f"h_min_{s}_{r['arm']}": r[f"h_min_{s}"] for r in rows for s in SPACES},
                **{f"heldout_final_{r['arm']}": r["heldout_final"] for r in rows},
                **{f"acc_{r['arm']}": r["accuracy"] for r in rows},
                "seconds": seconds}
    if rand:
        headline["random_heldout_final_mean_std"] = list(mean_std([r["heldout_final"] for r in rand]))
        headline["random_h_min_minilm_mean_std"] = list(mean_std([r["h_min_minilm"] for r in rand]))
    start = rows[0]["heldout_start"]
    summary = (f"{cfg.subset_size} of {len(run.examples)} pool examples, {num_steps(cfg)} fine-tuning steps per arm "
               f"from the same start (held-out loss {start:.3f} at step 0, n_test={len(run.heldout)}). "
               + " ".join(verdict(rows, a) for a in arms if a.startswith("kcenter_"))
               + (f" Full pool: final held-out loss {arms['full']['heldout_loss'][-1]:.4f}." if "full" in arms else "")
               + " Generation accuracy: " + ", ".join(f"{r['arm']} {100 * r['accuracy']:.1f}%" for r in rows)
               + " (Wilson CIs in comparison.md).")
    out = {"headline": headline, "summary": summary, "table": rows, "arms": arms,
           "validation": [run.validation.to_json(), run.heldout_validation.to_json()]}
    ctx.save_json("base_results.json", out)
    return out


def combine(cfg: SFTConfig, bases: dict[int, dict]) -> dict:
    """The run's results from each base seed's `report`: the claims' tables over the base seeds
    (`loss_tables`), the headline with one value per base seed, every base seed's summary, table,
    arms and validation."""
    seeds = list(bases)
    heads = [bases[b]["headline"] for b in seeds]
    headline = {"base_seeds": seeds, **{k: [h[k] for h in heads] for k in heads[0] if k != "seconds"},
                "seconds": {f"base{b}": h["seconds"] for b, h in zip(seeds, heads)}}
    return {"headline": headline, "summary": " ".join(f"Base seed {b}: {r['summary']}" for b, r in bases.items()),
            "table": [{"base_seed": b, **row} for b, r in bases.items() for row in r["table"]],
            "arms": {f"base{b}/{k}": v for b, r in bases.items() for k, v in r["arms"].items()},
            "validation": [v for r in bases.values() for v in r["validation"]],
            "per_seed": loss_tables({b: r["table"] for b, r in bases.items()})}


def claims(cfg: SFTConfig) -> list[Claim]:
    """Seed 003's SFT claims for every k-center arm of the config against the random subsets: the
    held-out loss averaged over the evaluations (training speed) and at the end. The replicates are
    the random subsets' seeds; the k-center subset is one fixed set, so the interval is that of
    k-center minus a random subset's value (`loss_tables`)."""
    if "random" not in cfg.arms:
        return []
    return [c for arm in cfg.arms if arm.startswith("kcenter_") for c in (
        Claim(f"{arm}_trains_faster", "003", "abstract (SFT)",
              f"an SFT subset of maximal min-distance ({arm}) trains faster than random subsets of its size: "
              "lower held-out loss over training", "heldout_mean", arm, "random"),
        Claim(f"{arm}_ends_lower", "003", "abstract (SFT)",
              f"... and ends at least as well ({arm}; decided as: lower final held-out loss)", "heldout_final", arm,
              "random"))]


def loss_tables(rows_by_base: dict[int, list[dict]]) -> dict:
    """{quantity: per_seed table} of `claims` over the base seeds (their table rows): arm "random"
    holds one value per random seed, every other arm its single value repeated (paired differences
    = the arm minus each random subset of the same base seed)."""
    seeds = list(rows_by_base)
    if not any(r["arm"].startswith("random_") for r in rows_by_base[seeds[0]]):
        return {}
    out = {}
    for key in ("heldout_mean", "heldout_final"):
        columns = {}   # arm -> values of every base seed, side by side
        for b in seeds:
            rows = rows_by_base[b]
            rand = [r[key] for r in rows if r["arm"].startswith("random_")]
            for r in rows:
                if not r["arm"].startswith("random_"):
                    columns.setdefault(r["arm"], []).extend([r[key]] * len(rand))
            columns.setdefault("random", []).extend(rand)
        out[key] = per_seed(np.asarray(list(columns.values()), np.float64), list(columns), seeds)
    return out


__all__ = ["SFTConfig", "ARM_KINDS", "SPACES", "check", "SFTRun", "prepare", "pool_features", "subsets",
           "finetune_subset_arm", "num_steps", "table", "plot", "verdict", "report", "combine", "claims", "loss_tables"]
