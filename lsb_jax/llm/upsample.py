"""The upsample-hard protocol of seeds 000/001 as library steps; `llm/upsample_hard.py` is its recipe.

    cfg = UpsampleConfig()                                   # defaults: the offline CPU scale
    data = prepare_data(cfg, ctx)                            # specs, test rows, a tokenizer for scratch models
    folders = prepare_models(cfg, data, ctx)                 # hub ids as is; scratch models pre-trained, saved
    proxy = score_proxy(cfg, data, folders["proxy"], ctx)    # [N, K] loss trajectories, the hard cluster
    synth = synthesize_hard(cfg, data, folders["generator"], proxy, ctx.child("synth"))  # the "+synth" arm
    arms = run_arms(cfg, data, folders, proxy, synth, ctx)   # per target and arm: fine-tune, evaluate
    out = report(cfg, data, proxy, synth, arms, seconds, ctx)   # comparison.{md,json}, figure, results

The proxy trains `epoch_fraction` of an epoch and scores every training example's response loss
at `num_checkpoints` checkpoints (`scoring.proxy_trajectories`); k-means on the trajectories
(per `source` with `per_source`) gives the hard cluster, and every arm's counts come from the one
selection table (`tracking.clustering.selection_counts`, arm -> selection in `llm.arms`). Each arm
fine-tunes a fresh copy of the target for `epochs` passes over its own multiset (`data.Epochs`:
each epoch holds example i exactly counts_i times), so upsampled arms take more steps, as in the
paper. Data order, pre-training and synthesis draw from named PRNG streams of `seed`
(`pipeline.key_for`), so every phase is a function of the config. A resumed run reuses every
finished phase (model folders, trajectories, synthesis, each arm's summary.json).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import numpy as np

from lsb_jax import io
from lsb_jax.claims import Claim, per_seed
from lsb_jax.llm import pipeline as pl
from lsb_jax.llm.arms import ARMS, PAPER_ARMS, check_arms
from lsb_jax.llm.data import DatasetSpec, Examples, PromptTemplate, Row, load_examples, read_validated, tokenize_rows
from lsb_jax.llm.evaluate import comparison_table, to_jsonl
from lsb_jax.llm.finetune import FinetuneConfig, finetune, steps_for_epochs
from lsb_jax.llm.mathdata import GSM8K_TEST, MATH_TEST, MATHINSTRUCT, OfflineMathConfig
from lsb_jax.llm.scoring import ProxyConfig, ProxyResult, jit_scorer, make_score_loss, proxy_trajectories
from lsb_jax.llm.synthesis import SynthesisConfig, synthesize, variant_pairs
from lsb_jax.models.lm import load_pretrained, load_tokenizer
from lsb_jax.optim import OptimConfig
from lsb_jax.tracking.clustering import selection_counts

SCRATCH = pl.SCRATCH
GENERATOR_TEMPLATE = PromptTemplate(kind="plain", prompt_format="{prompt}")   # synthesis prompts are complete
HUB_TESTS = {"gsm8k": GSM8K_TEST, "math": MATH_TEST}
# PRNG streams of the data order of each phase (and of the synthesis draws)
PRETRAIN_STREAM, PROXY_STREAM, ARM_STREAM, SYNTH_STREAM = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class Scratch:
    """A model built from scratch (used where the model name is "scratch")."""

    model: pl.ScratchModel = pl.ScratchModel()
    pretrain_steps: int = 300
    pretrain: FinetuneConfig = FinetuneConfig(optim=OptimConfig(name="adamw", lr=3e-3, schedule="warmup_cosine"),
                                              warmup_ratio=0.05)


@dataclasses.dataclass(frozen=True)
class UpsampleConfig:
    """The protocol's settings; the defaults are the offline CPU scale (the experiment's quick config)."""

    data: Literal["offline", "hub"] = "offline"
    # quick: sums of 2-3 one-digit terms (2 terms: the easy items, 3 terms: the hard ones), which
    # a from-scratch target learns in minutes; reasoning-gym's default chain_sum (up to 6 terms
    # of up to 4 digits) stays at 0% accuracy at this scale
    offline: OfflineMathConfig = OfflineMathConfig(
        train=(("chain_sum_1d", 800),), test_generator="chain_sum_1d", test_size=100)
    # reasoning-gym generators with other default parameters, usable by name in `offline`:
    # (name, base generator, ((parameter, value), ...))
    generators: tuple[tuple[str, str, tuple[tuple[str, int], ...]], ...] = (
        ("chain_sum_1d", "chain_sum", (("max_digits", 1), ("max_terms", 3))),)
    test_sets: tuple[str, ...] = ("gsm8k",)       # hub: gsm8k / math; offline: the look-alike
    prompt_format: str = "Question: {prompt}\nAnswer: "
    template: Literal["auto", "chat", "plain"] = "plain"
    max_length: int = 80                          # longer train rows are skipped (and counted)
    max_skip_fraction: float = 0.01               # more skipped train rows than this fails the run
    tokenizer_vocab: int = 384                    # scratch models: BPE trained on the train texts
    proxy: str = SCRATCH                          # hub id / folder, or "scratch"
    proxy_scratch: Scratch = Scratch(pl.ScratchModel("gpt_neox", hidden_size=32, num_layers=2, num_heads=4,
                                                     intermediate_size=128), pretrain_steps=100)
    proxy_train: FinetuneConfig = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-3), warmup_ratio=0.0)
    proxy_batch: int = 16
    epoch_fraction: float = 1.0 / 3.0
    num_checkpoints: int = 5
    targets: tuple[str, ...] = (SCRATCH,)
    target_scratch: Scratch = Scratch(pl.ScratchModel("qwen3", hidden_size=64, num_layers=2, num_heads=4,
                                                      num_kv_heads=2, intermediate_size=128, tie_embeddings=True),
                                      pretrain_steps=1000)
    target_train: FinetuneConfig = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-3, schedule="warmup_cosine"),
                                                  warmup_ratio=0.03)
    target_batch: int = 16
    epochs: float = 1.0
    sam_rho: float = 0.05
    arms: tuple[str, ...] = PAPER_ARMS
    factor: int = 2
    # arm "upsample_hard+synth": the hard arm's data plus variants of the hard examples written by
    # `synth_generator` (hub id / folder, or "scratch": a small model trained on pairs of examples
    # of the same source, `synthesis.variant_pairs`) that the proxy's final checkpoint still finds hard
    synth: SynthesisConfig = SynthesisConfig(prompt_format="Problem: {prompt}\nSolution: {response}\n\nProblem:",
                                             max_new_tokens=64, temperature=0.8, top_p=0.95, batch_size=64)
    synth_generator: str = SCRATCH
    synth_scratch: Scratch = Scratch(pl.ScratchModel("gpt_neox", hidden_size=64, num_layers=2, num_heads=4,
                                                     intermediate_size=128), pretrain_steps=150)
    per_source: bool = True                       # k-means separately per `source`, as the paper's code
    features: str = "none"                        # `clustering.normalize`: raw trajectories
    eval_batch: int = 50
    max_new_tokens: int = 24
    test_limit: int = 0                           # first n test rows (0: all)
    seed: int = 0

    def __post_init__(self):
        if self.data not in ("offline", "hub"):
            raise ValueError(f"Config.data must be 'offline' or 'hub', got {self.data!r}")
        check_arms(self.arms, "Config.arms")
        if self.data == "hub" and set(self.test_sets) - set(HUB_TESTS):
            raise ValueError(f"Config.test_sets: expected some of {tuple(HUB_TESTS)}, got {self.test_sets}")
        if self.data == "hub" and SCRATCH in self.model_names:
            raise ValueError("Config: 'scratch' models need the offline data (their tokenizer is trained on it)")
        if self.factor < 1 or self.epochs <= 0 or not self.targets or self.max_new_tokens < 1:
            raise ValueError("Config: factor >= 1, epochs > 0, max_new_tokens >= 1 and at least one target")
        if not 0 <= self.max_skip_fraction <= 1:
            raise ValueError(f"Config.max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")
        PromptTemplate(kind=self.template, prompt_format=self.prompt_format)   # validates

    @property
    def synth_arms(self) -> tuple[str, ...]:
        return tuple(a for a in self.arms if ARMS[a].synth)

    @property
    def model_names(self) -> tuple[str, ...]:
        """Proxy, targets and (with a synthesis arm) the generator."""
        return (self.proxy, *self.targets) + ((self.synth_generator,) if self.synth_arms else ())


def check(cfg: UpsampleConfig) -> None:
    """Before anything is written: every model that is not built from scratch resolves."""
    pl.check_sources(cfg.model_names)


# ----------------------------------------------------------------------------- data and models


@dataclasses.dataclass
class RunData:
    template: PromptTemplate
    train: DatasetSpec
    test_specs: dict[str, DatasetSpec]
    pretrain: DatasetSpec | None                  # the scratch models' corpus (offline only)
    tests: dict[str, tuple[DatasetSpec, list[Row]]]   # the evaluated rows (test_limit applied)
    tokenizer: object = None                      # trained on the train texts (scratch models)


def prepare_data(cfg: UpsampleConfig, ctx) -> RunData:
    """Hub specs, or the offline sets (+ a pre-training corpus) written into `ctx.dir/data`; the
    test rows read and validated; a BPE tokenizer when some proxy or target is built from scratch."""
    if cfg.data == "hub":
        train, test_specs, corpus = MATHINSTRUCT, {name: HUB_TESTS[name] for name in cfg.test_sets}, None
    else:
        train, test, corpus = pl.offline_sets(ctx.dir / "data", cfg.offline, cfg.generators)
        test_specs = {f"{cfg.test_sets[0]}_like": test}
    tests = {}
    for name, spec in test_specs.items():
        rows, _ = read_validated(spec)
        tests[name] = (spec, rows[:cfg.test_limit] if cfg.test_limit else rows)
    tokenizer = None
    if SCRATCH in (cfg.proxy, *cfg.targets):
        tokenizer = pl.scratch_tokenizer(train, cfg.prompt_format, cfg.tokenizer_vocab)
    template = PromptTemplate(kind=cfg.template, prompt_format=cfg.prompt_format)
    return RunData(template, train, test_specs, corpus, tests, tokenizer)


def prepare_models(cfg: UpsampleConfig, data: RunData, ctx) -> dict[str, str]:
    """{"proxy", "target<i>", ("generator")} -> model folder (`pipeline.model_folder`): scratch
    models are pre-trained on the corpus (the generator on pairs of corpus examples of one source,
    `synthesis.variant_pairs`) and saved under `ctx.dir/models/<name>`."""
    def corpus():   # our own generated corpus: max_length is a length filter on it, no skip limit
        return load_examples(data.pretrain, data.tokenizer, data.template, max_length=cfg.max_length, on_error="skip",
                             max_skip_fraction=None)[0]

    def pairs():    # the scratch generator learns "example -> another example of its source"
        rows, _ = read_validated(data.pretrain)
        return tokenize_rows(variant_pairs(rows, cfg.synth, seed=cfg.seed), data.tokenizer, GENERATOR_TEMPLATE,
                             max_length=3 * cfg.max_length, on_error="skip")

    models = [("proxy", cfg.proxy, cfg.proxy_scratch, corpus)]
    models += [(f"target{i}", t, cfg.target_scratch, corpus) for i, t in enumerate(cfg.targets)]
    if cfg.synth_arms:
        models.append(("generator", cfg.synth_generator, cfg.synth_scratch, pairs))
    return {name: pl.model_folder(source, ctx.dir / "models" / name, s.model, data.tokenizer, examples, s.pretrain,
                                  s.pretrain_steps, batch_size=cfg.target_batch,
                                  key=pl.key_for(cfg.seed, PRETRAIN_STREAM), seed=cfg.seed, ctx=ctx,
                                  child=f"pretrain_{name}")
            for name, source, s, examples in models}


# ----------------------------------------------------------------------------- proxy, clusters, synthesis


@dataclasses.dataclass
class ProxyPhase:
    tokenizer: object
    examples: Examples                            # the training rows as the proxy tokenized them
    validation: object                            # their `ValidationReport`
    result: ProxyResult
    losses_NxK: np.ndarray
    steps_K: np.ndarray
    hard_N: np.ndarray
    groups_N: np.ndarray | None                   # k-means groups (sources) or None
    arm_kw: dict                                  # selection_counts' keywords for every arm

    def counts(self, selection: str) -> np.ndarray:
        """The counts [N] of one selection (`tracking.clustering.SELECTIONS`) over the proxy's rows."""
        return selection_counts(self.losses_NxK, selection, **self.arm_kw)[0]


def score_proxy(cfg: UpsampleConfig, data: RunData, folder: str, ctx) -> ProxyPhase:
    """The proxy's ~1/3 epoch with per-example losses at K checkpoints (sub-run `proxy/`), the hard
    cluster, clusters.npz and the trajectories-by-cluster figure."""
    tok = load_tokenizer(folder)
    examples, validation = load_examples(data.train, tok, data.template, max_length=cfg.max_length, on_error="skip",
                                         max_skip_fraction=cfg.max_skip_fraction)
    pcfg = ProxyConfig(finetune=cfg.proxy_train, epoch_fraction=cfg.epoch_fraction,
                       num_checkpoints=cfg.num_checkpoints, score_batch_size=64, bucket=16)
    batches = pl.epoch_batches(examples, None, pl.key_for(cfg.seed, PROXY_STREAM), cfg.proxy_batch,
                               pad_id=tok.pad_token_id, length=pl.batch_length(examples))
    result = proxy_trajectories(load_pretrained(folder), batches, examples, pcfg, cfg.proxy_batch,
                                ctx=ctx.child("proxy"), chunk_size=50)
    losses_NxK, steps_K = result.store.losses, np.asarray(result.store.steps)
    groups_N = examples.domain_N if cfg.per_source and examples.domain_names else None
    arm_kw = dict(factor=cfg.factor, groups_N=groups_N, features=cfg.features, seed=cfg.seed)
    _, hard_N = selection_counts(losses_NxK, "hard", **arm_kw)
    ctx.save_arrays("clusters", losses_NxK=losses_NxK, steps_K=steps_K, hard_N=hard_N, domain_N=examples.domain_N,
                    source_row_N=np.array([r.source_row for r in examples.rows]))
    ctx.save_figure(pl.plot_trajectories(losses_NxK, steps_K, hard_N, groups_N, examples.domain_names),
                    "proxy_clusters")
    return ProxyPhase(tok, examples, validation, result, losses_NxK, steps_K, hard_N, groups_N, arm_kw)


@dataclasses.dataclass
class Synthesized:
    rows: list[Row]                               # kept variants, numbered after the train rows
    report: dict                                  # `SynthesisReport.to_json()` + seconds


def synthesize_hard(cfg: UpsampleConfig, data: RunData, generator: str, proxy: ProxyPhase, ctx) -> Synthesized:
    """Variants of the proxy's hard examples that its final checkpoint still finds hard
    (`synthesis.synthesize`; none may repeat a problem of the train set or of ANY test row, not
    only the evaluated `test_limit`), written to `ctx.dir/{variants.jsonl, variants.json,
    report.json}` (reused on a resume)."""
    if (ctx.dir / "report.json").exists():
        return Synthesized([Row(**r) for r in io.read_json(ctx.dir / "variants.json")],
                           io.read_json(ctx.dir / "report.json"))
    train_rows, _ = read_validated(data.train)
    test_rows = [r for spec in data.test_specs.values() for r in read_validated(spec)[0]]
    hard_rows = [proxy.examples.rows[i] for i in np.flatnonzero(proxy.hard_N)]
    score = jit_scorer(make_score_loss(proxy.result.train.split, cfg.proxy_train))
    t0 = time.perf_counter()
    kept, losses, rep = synthesize(
        hard_rows, load_pretrained(generator), load_tokenizer(generator), cfg.synth,
        key=pl.key_for(cfg.seed, SYNTH_STREAM), score=score,
        score_args=(proxy.result.train.params, proxy.result.train.split.frozen), score_tokenizer=proxy.tokenizer,
        template=data.template, max_length=cfg.max_length, hard_final_losses=proxy.losses_NxK[proxy.hard_N, -1],
        exclude_train=[r.prompt for r in train_rows], exclude_test=[r.prompt for r in test_rows],
        first_source_row=1 + max(r.source_row for r in train_rows))
    out = rep.to_json() | {"seconds": round(time.perf_counter() - t0, 1)}
    io.write_text(ctx.dir / "variants.jsonl", to_jsonl([dataclasses.asdict(r) | {"proxy_loss": float(x)}
                                                         for r, x in zip(kept, losses)]))
    ctx.save_json("variants.json", [dataclasses.asdict(r) for r in kept])
    ctx.save_json("report.json", out)
    return Synthesized(kept, io.read_json(ctx.dir / "report.json"))


# ----------------------------------------------------------------------------- arms


def finetune_arm(arm: str, folder: str, examples: Examples, counts_N, cfg: UpsampleConfig, data: RunData,
                 ctx) -> dict:
    """Fine-tunes a fresh copy of the target on the arm's multiset (SAM arms with `sam_rho`) and
    evaluates it on every test set; counts.npz, eval_<test>.jsonl and summary.json in `ctx.dir`
    (a finished arm's summary.json is returned as it is on a resume)."""
    done = ctx.dir / "summary.json"
    if done.exists():
        return io.read_json(done)
    tok = load_tokenizer(folder)
    train = cfg.target_train
    if ARMS[arm].sam:
        train = dataclasses.replace(train, optim=dataclasses.replace(train.optim, sam_rho=cfg.sam_rho))
    num_steps = steps_for_epochs(int(counts_N.sum()), cfg.target_batch, cfg.epochs)
    batches = pl.epoch_batches(examples, counts_N, pl.key_for(cfg.seed, ARM_STREAM), cfg.target_batch,
                               pad_id=tok.pad_token_id, length=pl.batch_length(examples))
    result = finetune(load_pretrained(folder), batches, train, num_steps, ctx=ctx, chunk_size=50)
    ids_SxB = np.asarray(result.fit.history["example_id"]).astype(np.int64)   # history is float
    ctx.save_arrays("counts", counts_N=counts_N, example_id_SxB=ids_SxB)
    t0 = time.perf_counter()
    tests = pl.evaluate_tests(result.merged_model(), tok, data.template, data.tests, ctx.dir,
                              batch_size=cfg.eval_batch, max_new_tokens=cfg.max_new_tokens)
    out = {"steps": num_steps, "train_tokens": result.tokens, "train_seconds": result.seconds,
           "upsampled": int((counts_N > 1).sum()), "epoch_size": int(counts_N.sum()), "test": tests,
           "eval_seconds": time.perf_counter() - t0}
    ctx.save_json("summary.json", out)
    return out


@dataclasses.dataclass
class ArmResults:
    results: dict                                 # arm -> {test set (or target/test set): accuracy summary}
    info: dict                                    # "<target>/<arm>" -> steps, tokens, seconds, epoch size


def target_name(target: str) -> str:
    return "scratch_target" if target == SCRATCH else target.split("/")[-1]


def run_arms(cfg: UpsampleConfig, data: RunData, folders: dict, proxy: ProxyPhase, synth: Synthesized | None,
             ctx) -> ArmResults:
    """Every (target, arm): the arm's proxy counts aligned to the target's rows (`align_counts`;
    the synthesis arm adds the kept variants once each), `finetune_arm` in `<target>/<arm>/`."""
    out = ArmResults({}, {})
    multi = len(cfg.targets) > 1
    for i, t in enumerate(cfg.targets):
        folder = folders[f"target{i}"]
        tok = load_tokenizer(folder)
        examples, _ = load_examples(data.train, tok, data.template, max_length=cfg.max_length, on_error="skip",
                                    max_skip_fraction=cfg.max_skip_fraction)
        tname = target_name(t)
        tctx = ctx.child(tname)
        for arm in cfg.arms:
            arm_examples = examples
            if ARMS[arm].synth:   # + the kept variants, once each (source rows after the train rows)
                arm_examples = tokenize_rows(list(examples.rows) + synth.rows, tok, data.template,
                                             max_length=cfg.max_length, on_error="skip")
            counts_N = pl.align_counts(proxy.counts(ARMS[arm].selection), proxy.examples, arm_examples)
            res = finetune_arm(arm, folder, arm_examples, counts_N, cfg, data, tctx.child(arm))
            out.info[f"{tname}/{arm}"] = {k: v for k, v in res.items() if k != "test"}
            for name, summary in res["test"].items():
                out.results.setdefault(arm, {})[f"{tname}/{name}" if multi else name] = summary
    return out


# ----------------------------------------------------------------------------- report

SYNTH_KEYS = ("generated", "parsed", "unique", "too_long", "scored", "kept", "threshold", "unparseable", "duplicates",
              "loss")


def report(cfg: UpsampleConfig, data: RunData, proxy: ProxyPhase, synth: Synthesized | None, arms: ArmResults,
           seconds: dict, ctx) -> dict:
    """comparison.{md,json} (`evaluate.comparison_table`: accuracy per arm and test set with 95%
    Wilson intervals and the difference to the baseline), the accuracy figure, and the run's
    results: headline numbers, a one-paragraph summary, the table, per-arm info, validation."""
    table_md, table_rows = comparison_table(arms.results, arms=list(cfg.arms))
    io.write_text(ctx.dir / "comparison.md", table_md)
    ctx.save_json("comparison.json", table_rows)
    ctx.save_figure(pl.plot_accuracy(arms.results, cfg.arms), "accuracy_per_arm")

    first = next(iter(next(iter(arms.results.values()))))
    acc = {arm: arms.results[arm][first]["accuracy"] for arm in cfg.arms if first in arms.results.get(arm, {})}
    losses_NxK, hard_N = proxy.losses_NxK, proxy.hard_N
    mean_K = losses_NxK.mean(1)
    headline = {
        "n_train": len(proxy.examples), "n_test": {k: len(rows) for k, (_, rows) in data.tests.items()},
        "train_rows_skipped": proxy.validation.num_skipped,
        "hard_fraction": float(hard_N.mean()),
        "hard_mean_loss": float(mean_K[hard_N].mean()) if hard_N.any() else None,
        "easy_mean_loss": float(mean_K[~hard_N].mean()) if (~hard_N).any() else None,
        "proxy_loss_first_last": [float(losses_NxK[:, 0].mean()), float(losses_NxK[:, -1].mean())],
        **{f"acc_{arm}": a for arm, a in acc.items()},
        **({"synthesis": {k: synth.report[k] for k in SYNTH_KEYS}} if synth else {}),
        "seconds": seconds,
    }
    per_seed = accuracy_tables(cfg, arms, first)
    summary = (f"Proxy ({cfg.proxy}) trained {proxy.steps_K[-1]} steps (~{cfg.epoch_fraction:.2g} epoch) on "
               f"{len(proxy.examples)} examples; k-means on its {len(proxy.steps_K)}-checkpoint loss trajectories put "
               f"{hard_N.mean():.0%} in the hard cluster (mean loss {headline['hard_mean_loss']:.2f} vs "
               f"{headline['easy_mean_loss']:.2f}). Target {cfg.targets[0]} on {first} "
               f"(n={next(iter(arms.results.values()))[first]['n']}): "
               + ", ".join(f"{arm} {100 * a:.1f}%" for arm, a in acc.items())
               + " (95% Wilson CIs in comparison.md; the claims compare arms paired over the test items)."
               + (f" Synthesis: {synth.report['generated']} variants of the hard examples generated, "
                  f"{synth.report['parsed']} parsed, {synth.report['unique']} new, {synth.report['kept']} kept as "
                  f"hard by the proxy." if synth else ""))
    return {"headline": headline, "summary": summary, "table": table_rows, "arms": arms.info,
            "validation": proxy.validation.to_json(), "per_seed": per_seed}


# ----------------------------------------------------------------------------- claims

_SOURCE = "Fig. 4(d)"     # seed 001: the upsampling ablation (hard vs easy vs random vs baseline)
_ARM_CLAIMS = (
    ("hard_beats_baseline", "upsample_hard", "baseline",
     "upsampling the examples the proxy finds hard improves the target's accuracy over the baseline"),
    ("hard_beats_easy", "upsample_hard", "upsample_easy", "upsampling easy examples does not: hard beats easy"),
    ("hard_beats_random", "upsample_hard", "random", "nor does upsampling a random subset: hard beats random"),
    ("sam_beats_baseline", "sam", "baseline", "SAM (twice the gradients per step) improves over the baseline"),
)


def claims(cfg: UpsampleConfig) -> list[Claim]:
    """Seed 001's LLM claims among the config's arms, on the first target's first test set: accuracy
    compared per test item (paired: every arm answers the same items), at the run's seed."""
    opt = cfg.target_train.optim.name          # seed 001 makes each claim with AdamW and with Muon
    return [Claim(key, "001", _SOURCE, f"{says} ({opt})", "accuracy", arm, versus, expect="higher")
            for key, arm, versus, says in _ARM_CLAIMS if arm in cfg.arms and versus in cfg.arms]


def accuracy_tables(cfg: UpsampleConfig, arms: ArmResults, test: str) -> dict:
    """{"accuracy": per-item 0/1 correctness of every arm on `test`} for `claims` (one base seed: the
    run's seed; replicates are the test items); empty when an arm's items are missing (a run resumed
    from summaries written before items were kept)."""
    items = {arm: arms.results.get(arm, {}).get(test, {}).get("correct_items") for arm in cfg.arms}
    if any(v is None for v in items.values()) or len({len(v) for v in items.values()}) != 1:
        return {}
    values = np.asarray([items[arm] for arm in cfg.arms], np.float64)
    return {"accuracy": per_seed(values, list(cfg.arms), [cfg.seed])}


__all__ = ["Scratch", "UpsampleConfig", "check", "RunData", "prepare_data", "prepare_models", "ProxyPhase",
           "score_proxy", "Synthesized", "synthesize_hard", "finetune_arm", "ArmResults", "run_arms", "report",
           "claims", "accuracy_tables"]
