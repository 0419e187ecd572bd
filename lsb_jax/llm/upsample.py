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
from pathlib import Path
from typing import Literal

import jax
import numpy as np

from lsb_jax import io
from lsb_jax.claims import Claim
from lsb_jax.claims import per_seed as per_seed_table
from lsb_jax.llm import pipeline as pl
from lsb_jax.llm.arms import ARMS, PAPER_ARMS, check_arms
from lsb_jax.llm.data import (DatasetSpec, Examples, PromptTemplate, Row, load_examples, pad_token_id, read_labels,
                             read_validated, tokenize_rows)
from lsb_jax.llm.evaluate import comparison_table, to_jsonl
from lsb_jax.llm.finetune import FinetuneConfig, finetune, steps_for_epochs
from lsb_jax.llm.mathdata import GSM8K_TEST, MATH_TEST, MATHINSTRUCT, OfflineMathConfig, PlantedMathConfig, level_sizes
from lsb_jax.llm.scoring import ProxyConfig, ProxyResult, jit_scorer, make_score_loss, proxy_trajectories
from lsb_jax.llm.synthesis import SynthesisConfig, synthesize, variant_pairs
from lsb_jax.models.lm import load_pretrained, load_tokenizer
from lsb_jax.models.lm.sharding import MeshConfig
from lsb_jax.optim import OptimConfig
from lsb_jax.optim.factory import NAMES as OPTIMIZER_NAMES
from lsb_jax.tracking.clustering import selection_counts

SCRATCH = pl.SCRATCH
GENERATOR_TEMPLATE = PromptTemplate(kind="plain", prompt_format="{prompt}")   # synthesis prompts are complete
HUB_TESTS = {"gsm8k": GSM8K_TEST, "math": MATH_TEST}
PLANTED_FIELD = "level"   # the planted family's difficulty column (`mathdata.planted_rows`)
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
class UpsampleConfig(pl.BaseSeeded):
    """The protocol's settings; the defaults are the offline CPU scale (the experiment's quick config)."""

    # planted: sums whose difficulty is known (`mathdata.PlantedMathConfig`: 2 terms "easy", 3 terms
    # "hard"), so the report measures how well the proxy's clusters recover it; offline:
    # reasoning-gym look-alikes of MathInstruct / GSM8K (`offline`); hub: the real sets (network);
    # files: your own `train_data` and `test_data` (local files or hub ids, `data.DatasetSpec`)
    data: str = "planted"   # one of ("planted", "offline", "hub", "files")
    train_data: DatasetSpec = DatasetSpec(path="")
    test_data: DatasetSpec = DatasetSpec(path="", split="test")
    planted: PlantedMathConfig = PlantedMathConfig()
    offline: OfflineMathConfig = OfflineMathConfig(
        train=(("chain_sum_1d", 800),), test_generator="chain_sum_1d", test_size=100)
    # reasoning-gym generators with other default parameters, usable by name in `offline`:
    # (name, base generator, ((parameter, value), ...))
    generators: tuple[tuple[str, str, tuple[tuple[str, int], ...]], ...] = (
        ("chain_sum_1d", "chain_sum", (("max_digits", 1), ("max_terms", 3))),)
    test_sets: tuple[str, ...] = ("gsm8k",)       # hub: gsm8k / math; offline / planted: the look-alike
    prompt_format: str = "Question: {prompt}\nAnswer: "
    template: Literal["auto", "chat", "plain"] = "plain"
    max_length: int = 80                          # longer train rows are skipped (and counted)
    max_skip_fraction: float = 0.01               # more skipped train rows than this fails the run
    truncate: bool = False                        # cut too-long train rows' responses to max_length instead
    tokenizer_vocab: int = 384                    # scratch models: BPE trained on the train texts
    proxy: str = SCRATCH                          # hub id / folder, or "scratch"
    # the proxy is smaller than the target, not less trained: both are pre-trained the same number of
    # steps (as the paper's Pythia-70M and its targets are both fully pre-trained LMs)
    proxy_scratch: Scratch = Scratch(pl.ScratchModel("gpt_neox", hidden_size=32, num_layers=2, num_heads=4,
                                                     intermediate_size=128), pretrain_steps=1000)
    proxy_train: FinetuneConfig = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-3), warmup_ratio=0.0)
    proxy_batch: int = 16
    epoch_fraction: float = 1.0 / 3.0
    num_checkpoints: int = 5
    targets: tuple[str, ...] = (SCRATCH,)
    target_scratch: Scratch = Scratch(pl.ScratchModel("qwen3", hidden_size=64, num_layers=2, num_heads=4,
                                                      num_kv_heads=2, intermediate_size=128, tie_embeddings=True),
                                      pretrain_steps=1000)
    # Muon's matrix updates are scaled to RMS 0.2 (`OptimConfig.muon_consistent_rms`, Moonlight's
    # rule), so the Muon variant shares AdamW's lr; the AdamW variant ignores the field
    target_train: FinetuneConfig = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-3, schedule="warmup_cosine",
                                                                    muon_consistent_rms=0.2),
                                                  warmup_ratio=0.03)
    # every arm is fine-tuned once per optimizer (target_train.optim with this name; seed 001 makes
    # its claims with AdamW and with Muon) and per target seed (the fine-tuning data order and
    # the train state's rng): the claims pair the arms on the test items at each target seed
    optimizers: tuple[str, ...] = ("adamw", "muon")
    target_seeds: tuple[int, ...] = tuple(range(8))
    target_batch: int = 16
    epochs: float = 1.0
    checkpoint_every: int = 500                   # an arm's steps between checkpoints (and at its end)
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
    eval_batch: int = 100
    max_new_tokens: int = 24
    test_limit: int = 0                           # first n test rows (0: all)
    # the whole protocol (generated data, scratch models, proxy, clusters, arms) runs once per base
    # seed (`for_base`): the claims are decided at each and must agree
    base_seeds: tuple[int, ...] = (0, 1)
    # every fine-tuned arm's model to take home (`pipeline.export_finetuned`): "merged" a Hugging
    # Face folder, "adapter" a peft LoRA adapter (LoRA runs only), in the arm's folder
    export: tuple[Literal["merged", "adapter"], ...] = ("merged", "adapter")
    # devices of the proxy's and the arms' training (scratch pre-training runs on one device):
    # data parallel over all by default; several processes need every model as a folder or hub id
    mesh: MeshConfig = MeshConfig()

    def __post_init__(self):
        pl.check_data_choice(self.data, ("planted", "offline", "hub", "files"))
        check_arms(self.arms, "Config.arms")
        if self.data == "hub" and set(self.test_sets) - set(HUB_TESTS):
            raise ValueError(f"Config.test_sets: expected some of {tuple(HUB_TESTS)}, got {self.test_sets}")
        pl.check_files_config(self.data, self.train_data, self.test_data)
        if self.data in ("hub", "files") and SCRATCH in self.model_names:
            raise ValueError("Config: 'scratch' models need generated data (their tokenizer is trained on it)")
        if self.factor < 1 or self.epochs <= 0 or not self.targets or self.max_new_tokens < 1 \
                or self.checkpoint_every < 1:
            raise ValueError("Config: factor >= 1, epochs > 0, max_new_tokens >= 1, checkpoint_every >= 1 and at "
                             "least one target")
        if not 0 <= self.max_skip_fraction <= 1:
            raise ValueError(f"Config.max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")
        bad = [o for o in self.optimizers if o not in OPTIMIZER_NAMES]
        if bad or not self.optimizers or len(set(self.optimizers)) != len(self.optimizers):
            raise ValueError(f"Config.optimizers: distinct names of {OPTIMIZER_NAMES}, got {self.optimizers}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"Config.targets: each target once, got {self.targets}")
        if not self.target_seeds or len(set(self.target_seeds)) != len(self.target_seeds):
            raise ValueError(f"Config.target_seeds: at least one, all distinct, got {self.target_seeds}")
        self.check_base_seeds()
        pl.check_sizes(self, [("proxy_batch", "proxy_train"), ("target_batch", "target_train"),
                              ("target_batch", "proxy_scratch.pretrain"), ("target_batch", "target_scratch.pretrain"),
                              ("target_batch", "synth_scratch.pretrain")])
        PromptTemplate(kind=self.template, prompt_format=self.prompt_format)   # validates

    @property
    def synth_arms(self) -> tuple[str, ...]:
        return tuple(a for a in self.arms if ARMS[a].synth)

    @property
    def model_names(self) -> tuple[str, ...]:
        """Proxy, targets and (with a synthesis arm) the generator."""
        return (self.proxy, *self.targets) + ((self.synth_generator,) if self.synth_arms else ())

    def for_base(self, seed: int) -> UpsampleConfig:
        """The config of the pipeline of base seed `seed`: it seeds the data order of every phase,
        the scratch models' init, k-means and the random arm, and 2 x seed is added to the generated
        data's seed (so that data too is drawn anew). A run of base_seeds=(s,) is the base seed s of
        a run of several."""
        # generated sets use their seed s for train/test and s + 1 for the pre-training corpus: base
        # seeds step by 2 so that no base seed trains on another's pre-training corpus
        return dataclasses.replace(self, base_seeds=(seed,),
                                   planted=dataclasses.replace(self.planted, seed=self.planted.seed + 2 * seed),
                                   offline=dataclasses.replace(self.offline, seed=self.offline.seed + 2 * seed))

    @property
    def difficulty(self) -> tuple[str, tuple[str, ...]] | None:
        """(column of the rows' known difficulty, its values that count as hard), or None."""
        return (PLANTED_FIELD, (self.planted.hardest,)) if self.data == "planted" else None

    def target_train_for(self, optimizer: str, target_seed: int, sam: bool) -> FinetuneConfig:
        """`target_train` with the variant's optimizer, the target seed (the data order, and the LoRA
        adapters' init offset by it: a target seed replicates both, paired across the arms of a seed)
        and (SAM arms) `sam_rho`."""
        optim = dataclasses.replace(self.target_train.optim, name=optimizer,
                                    sam_rho=self.sam_rho if sam else self.target_train.optim.sam_rho)
        return dataclasses.replace(self.target_train, optim=optim, seed=target_seed,
                                   lora_seed=self.target_train.lora_seed + target_seed)


def check(cfg: UpsampleConfig) -> None:
    """Before anything is written (`pipeline.check_inputs`): every model resolves, LoRA options match
    the models they train, and with your own data (`data="files"`) every test row is valid and the
    train rows fit `max_length` with the proxy's and every target's tokenizer."""
    pl.check_devices(cfg.mesh, cfg.model_names, [cfg.proxy_batch, cfg.target_batch])
    if cfg.synth_arms and jax.process_count() > 1:
        from lsb_jax.config import ConfigError  # noqa: PLC0415
        raise ConfigError("the synthesis arm runs in one process only (its generation is not split over hosts)")
    files = cfg.data == "files"
    models = [pl.ModelUse("proxy", cfg.proxy, cfg.proxy_train, cfg.proxy_scratch.model, cfg.tokenizer_vocab,
                          evaluated=False)]
    models += [pl.ModelUse("target", t, cfg.target_train, cfg.target_scratch.model, cfg.tokenizer_vocab)
               for t in cfg.targets]
    if cfg.synth_arms:
        models.append(pl.ModelUse("generator", cfg.synth_generator, evaluated=False))
    pl.check_inputs(models, train=cfg.train_data if files else None, tests=[cfg.test_data] if files else (),
                    template=PromptTemplate(kind=cfg.template, prompt_format=cfg.prompt_format),
                    max_length=cfg.max_length, max_skip_fraction=cfg.max_skip_fraction, truncate=cfg.truncate)


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
    """Hub specs, or the planted / offline sets (+ a pre-training corpus) written into `ctx.dir/data`; the
    test rows read and validated; a BPE tokenizer when some proxy or target is built from scratch."""
    if cfg.data == "hub":
        train, test_specs, corpus = MATHINSTRUCT, {name: HUB_TESTS[name] for name in cfg.test_sets}, None
    elif cfg.data == "files":
        train, test_specs, corpus = cfg.train_data, pl.user_tests(cfg.test_data), None
    else:
        generated = cfg.planted if cfg.data == "planted" else cfg.offline
        train, test, corpus = pl.offline_sets(ctx.dir / "data", generated, cfg.generators)
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
    levels_N: np.ndarray | None = None            # the rows' known difficulty (`cfg.difficulty`) or None
    planted_N: np.ndarray | None = None           # ... whether it counts as hard

    def counts(self, selection: str, target_seed: int = 0) -> np.ndarray:
        """The counts [N] of one selection (`tracking.clustering.SELECTIONS`) over the proxy's rows;
        the random selection is drawn anew per target seed (its replicates), the clusters are not."""
        return selection_counts(self.losses_NxK, selection, **self.arm_kw,
                                draw_seed=(self.arm_kw["seed"], target_seed))[0]


def score_proxy(cfg: UpsampleConfig, data: RunData, folder: str, ctx) -> ProxyPhase:
    """The proxy's ~1/3 epoch with per-example losses at K checkpoints (sub-run `proxy/`), the hard
    cluster, clusters.npz and the trajectories-by-cluster figure."""
    tok = load_tokenizer(folder)
    examples, validation = load_examples(data.train, tok, data.template, max_length=cfg.max_length, on_error="skip",
                                         max_skip_fraction=cfg.max_skip_fraction, truncate=cfg.truncate)
    pcfg = ProxyConfig(finetune=cfg.proxy_train, epoch_fraction=cfg.epoch_fraction,
                       num_checkpoints=cfg.num_checkpoints, score_batch_size=64, bucket=16)
    batches = pl.epoch_batches(examples, None, pl.key_for(cfg.seed, PROXY_STREAM), cfg.proxy_batch,
                               pad_id=pad_token_id(tok), length=pl.batch_length(examples))
    mesh = cfg.mesh.make()
    result = proxy_trajectories(pl.load_for_training(folder, mesh), pl.process_batches(batches), examples, pcfg,
                                cfg.proxy_batch, ctx=ctx.child("proxy"), chunk_size=50, mesh=mesh)
    losses_NxK, steps_K = result.store.losses, np.asarray(result.store.steps)
    groups_N = examples.domain_N if cfg.per_source and examples.domain_names else None
    arm_kw = dict(factor=cfg.factor, groups_N=groups_N, features=cfg.features, seed=cfg.seed)
    _, hard_N = selection_counts(losses_NxK, "hard", **arm_kw)
    ctx.save_arrays("clusters", losses_NxK=losses_NxK, steps_K=steps_K, hard_N=hard_N, domain_N=examples.domain_N,
                    source_row_N=np.array([r.source_row for r in examples.rows]))
    levels_N = planted_N = None
    if cfg.difficulty is not None:
        field, hard_values = cfg.difficulty
        levels_N = np.asarray(read_labels(data.train, field, [r.source_row for r in examples.rows]))
        planted_N = np.isin(levels_N, hard_values)
    ctx.save_figure(pl.plot_trajectories(losses_NxK, steps_K, hard_N, groups_N, examples.domain_names,
                                         planted_N=planted_N), "proxy_clusters")
    return ProxyPhase(tok, examples, validation, result, losses_NxK, steps_K, hard_N, groups_N, arm_kw, levels_N,
                      planted_N)


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
                 ctx, *, optimizer: str, target_seed: int) -> dict:
    """Fine-tunes a fresh copy of the target on the arm's multiset with one optimizer at one target
    seed (`UpsampleConfig.target_train_for`: the data order's key is stream ARM_STREAM folded with
    the seed, the same key for every arm of a seed) and evaluates it on every test set; counts.npz,
    eval_<test>.jsonl and summary.json in `ctx.dir` (a finished arm's summary.json is returned as it
    is on a resume)."""
    done = ctx.dir / "summary.json"
    if done.exists():
        return io.read_json(done)
    tok = load_tokenizer(folder)
    train = cfg.target_train_for(optimizer, target_seed, ARMS[arm].sam)
    num_steps = steps_for_epochs(int(counts_N.sum()), cfg.target_batch, cfg.epochs)
    key = jax.random.fold_in(pl.key_for(cfg.seed, ARM_STREAM), target_seed)
    batches = pl.epoch_batches(examples, counts_N, key, cfg.target_batch, pad_id=pad_token_id(tok),
                               length=pl.batch_length(examples))
    mesh = cfg.mesh.make()
    result = finetune(pl.load_for_training(folder, mesh), pl.process_batches(batches), train, num_steps, ctx=ctx,
                      chunk_size=50, mesh=mesh, checkpoint_every=cfg.checkpoint_every,
                      desc=f"arm {ctx.name}")   # base seed/target/optimizer/seed/arm
    ids_SxB = np.asarray(result.fit.history["example_id"]).astype(np.int64)   # history is float
    ctx.save_arrays("counts", counts_N=counts_N, example_id_SxB=ids_SxB)
    t0 = time.perf_counter()
    tests = pl.evaluate_tests(result.merged_model(), tok, data.template, data.tests, ctx.dir,
                              batch_size=cfg.eval_batch, max_new_tokens=cfg.max_new_tokens)
    pl.log_accuracy(ctx, num_steps, tests)
    exported = pl.export_finetuned(result, tok, ctx.dir, base=folder, what=cfg.export, dropout=train.lora_dropout)
    out = {"steps": num_steps, "train_tokens": result.tokens, "train_seconds": result.seconds,
           "upsampled": int((counts_N > 1).sum()), "epoch_size": int(counts_N.sum()), "test": tests,
           "eval_seconds": time.perf_counter() - t0, "exported": {k: str(Path(v).relative_to(ctx.dir))
                                                                  for k, v in exported.items()}}
    ctx.save_json("summary.json", out)
    return out


@dataclasses.dataclass
class ArmResults:
    results: dict     # (optimizer, target seed) -> arm -> {test set (or target/test set): accuracy summary}
    info: dict        # "<target>/<optimizer>/seed<s>/<arm>" -> steps, tokens, seconds, epoch size


def target_name(target: str) -> str:
    return "scratch_target" if target == SCRATCH else target.rstrip("/").split("/")[-1]


def target_names(targets) -> list[str]:
    """Each target's name in folders and result keys: its last path part, prefixed by its position
    when two targets share one (org/A and /ckpts/A would share a folder and overwrite each other)."""
    names = [target_name(t) for t in targets]
    return names if len(set(names)) == len(names) else [f"{i}-{n}" for i, n in enumerate(names)]


def run_arms(cfg: UpsampleConfig, data: RunData, folders: dict, proxy: ProxyPhase, synth: Synthesized | None,
             ctx) -> ArmResults:
    """Every (target, optimizer, target seed, arm): the arm's proxy counts aligned to the target's
    rows (`align_counts`; the synthesis arm adds the kept variants once each), `finetune_arm` in
    `<target>/<optimizer>/seed<s>/<arm>/`."""
    out = ArmResults({}, {})
    multi = len(cfg.targets) > 1
    for i, tname in enumerate(target_names(cfg.targets)):
        folder = folders[f"target{i}"]
        tok = load_tokenizer(folder)
        examples, _ = load_examples(data.train, tok, data.template, max_length=cfg.max_length, on_error="skip",
                                    max_skip_fraction=cfg.max_skip_fraction, truncate=cfg.truncate)
        arm_examples = {arm: examples for arm in cfg.arms}
        for arm in cfg.synth_arms:   # + the kept variants, once each (source rows after the train rows),
            # tokenized as the train rows are (truncated, not dropped, when cfg.truncate)
            arm_examples[arm] = tokenize_rows(list(examples.rows) + synth.rows, tok, data.template,
                                              max_length=cfg.max_length, on_error="skip", truncate=cfg.truncate)
        counts = {}

        def arm_counts(arm, s):   # computed once per arm; only the random draw differs between target seeds
            key = (arm, s if ARMS[arm].selection == "random" else None)
            if key not in counts:
                counts[key] = pl.align_counts(proxy.counts(ARMS[arm].selection, s), proxy.examples, arm_examples[arm])
            return counts[key]

        for opt in cfg.optimizers:
            for s in cfg.target_seeds:
                for arm in cfg.arms:
                    where = f"{tname}/{opt}/seed{s}/{arm}"
                    res = finetune_arm(arm, folder, arm_examples[arm], arm_counts(arm, s), cfg, data,
                                       ctx.child(where), optimizer=opt, target_seed=s)
                    out.info[where] = {k: v for k, v in res.items() if k != "test"}
                    for name, summary in res["test"].items():
                        out.results.setdefault((opt, s), {}).setdefault(arm, {})[
                            f"{tname}/{name}" if multi else name] = summary
    return out


# ----------------------------------------------------------------------------- report

SYNTH_KEYS = ("generated", "parsed", "unique", "too_long", "scored", "kept", "threshold", "unparseable", "duplicates",
              "loss")


def planted_recovery(cfg: UpsampleConfig, proxy: ProxyPhase) -> dict | None:
    """How well the proxy's clusters recover the rows' known difficulty (`cfg.difficulty`), or None:
    the planted-hard share; per clustering (trajectories: the arms' hard cluster; the final loss
    alone) its size, precision (planted-hard share inside it), recall (share of the planted-hard
    rows it holds) and adjusted Rand index; the proxy's mean loss per level at each checkpoint."""
    if proxy.planted_N is None:
        return None
    from sklearn.metrics import adjusted_rand_score  # noqa: PLC0415

    planted_N, levels_N = proxy.planted_N, proxy.levels_N

    def recovery(mask_N):
        mask_N = np.asarray(mask_N, bool)
        return {"size": int(mask_N.sum()), "precision": float(planted_N[mask_N].mean()) if mask_N.any() else None,
                "recall": float(mask_N[planted_N].mean()) if planted_N.any() else None,
                "adjusted_rand": float(adjusted_rand_score(planted_N, mask_N))}

    final_N = selection_counts(proxy.losses_NxK, "final_loss", **proxy.arm_kw)[1]
    return {"field": cfg.difficulty[0], "hard_levels": list(cfg.difficulty[1]),
            "planted_hard_share": float(planted_N.mean()),
            "trajectory_clusters": recovery(proxy.hard_N), "final_loss_clusters": recovery(final_N),
            "mean_loss_by_level": {str(v): proxy.losses_NxK[levels_N == v].mean(0).tolist()
                                   for v in np.unique(levels_N)}}


def test_groups(cfg: UpsampleConfig, data: RunData, test: str) -> tuple[list[Row], dict[str, np.ndarray]]:
    """The rows of `test` (the first target's test set) and their groups as masks: "all" and, with
    a known difficulty (`cfg.difficulty`), each level."""
    spec, rows = data.tests[test.split("/")[-1]]
    groups = {"all": np.ones(len(rows), bool)}
    if cfg.difficulty is not None:
        levels = np.asarray(read_labels(spec, cfg.difficulty[0], [r.source_row for r in rows]))
        groups |= {str(v): levels == v for v in np.unique(levels)}
    return rows, groups


def accuracy_by_group(cfg: UpsampleConfig, arms: ArmResults, test: str, groups: dict[str, np.ndarray]) -> dict:
    """{optimizer: {arm: {group (`test_groups`): [accuracy per target seed]}}} on `test`."""
    out = {}
    for opt in cfg.optimizers:
        for arm in cfg.arms:
            per_seed_items = [np.asarray(arms.results[(opt, s)][arm][test]["correct_items"], float)
                              for s in cfg.target_seeds]
            out.setdefault(opt, {})[arm] = {g: [float(c[m].mean()) for c in per_seed_items] for g, m in groups.items()}
    return out


def report(cfg: UpsampleConfig, data: RunData, proxy: ProxyPhase, synth: Synthesized | None, arms: ArmResults,
           seconds: dict, ctx) -> dict:
    """comparison.{md,json} (per optimizer, `evaluate.comparison_table`: accuracy per arm and target
    seed with 95% Wilson intervals and the difference to the baseline; then the accuracy per planted
    level), the figures, and this base seed's results: headline numbers, a one-paragraph summary, the
    table, per-arm info, validation, the accuracies per target seed and the planted flags of the
    hard cluster (`combine` turns those of every base seed into the claims' tables)."""
    seeds = cfg.target_seeds
    first = next(iter(arms.results[(cfg.optimizers[0], seeds[0])][cfg.arms[0]]))
    md, table_rows = [], []
    for opt in cfg.optimizers:
        by_arm = {arm: {f"{name} seed{s}": arms.results[(opt, s)][arm][name]
                        for name in arms.results[(opt, seeds[0])][arm] for s in seeds} for arm in cfg.arms}
        t_md, t_rows = comparison_table(by_arm, arms=list(cfg.arms))
        md += [f"## {opt}", "", t_md]
        table_rows += [{"optimizer": opt, **r} for r in t_rows]
    test_rows, masks = test_groups(cfg, data, first)
    acc = accuracy_by_group(cfg, arms, first, masks)
    groups = list(masks)
    if len(groups) > 1:
        md += [f"## {first}: accuracy % by planted level (mean over target seeds {list(seeds)})", "",
               "| optimizer | arm | " + " | ".join(groups) + " |", "|---|---|" + "---|" * len(groups)]
        md += [f"| {opt} | {arm} | " + " | ".join(f"{100 * np.mean(acc[opt][arm][g]):.1f}" for g in groups) + " |"
               for opt in cfg.optimizers for arm in cfg.arms]
    io.write_text(ctx.dir / "comparison.md", "\n".join(md) + "\n")
    ctx.save_json("comparison.json", table_rows)
    ctx.save_figure(pl.plot_accuracy(acc, cfg.arms), "accuracy_per_arm")

    losses_NxK, hard_N = proxy.losses_NxK, proxy.hard_N
    mean_K = losses_NxK.mean(1)
    recovered = planted_recovery(cfg, proxy)
    headline = {
        "n_train": len(proxy.examples), "n_test": {k: len(rows) for k, (_, rows) in data.tests.items()},
        "train_rows_skipped": proxy.validation.num_skipped,
        "target_seeds": list(seeds),
        "hard_fraction": float(hard_N.mean()),
        "hard_mean_loss": float(mean_K[hard_N].mean()) if hard_N.any() else None,
        "easy_mean_loss": float(mean_K[~hard_N].mean()) if (~hard_N).any() else None,
        "proxy_loss_first_last": [float(losses_NxK[:, 0].mean()), float(losses_NxK[:, -1].mean())],
        **{f"acc_{opt}_{arm}": float(np.mean(acc[opt][arm]["all"])) for opt in cfg.optimizers for arm in cfg.arms},
        **({"planted": recovered} if recovered else {}),
        **({"test_in_train": train_overlap(test_rows, masks, data.train)} if cfg.data != "hub" else {}),
        **({"test_in_pretraining": train_overlap(test_rows, masks, data.pretrain)}
           if data.pretrain is not None else {}),
        **({"synthesis": {k: synth.report[k] for k in SYNTH_KEYS}} if synth else {}),
        "seconds": seconds,
    }
    out = {"headline": headline, "summary": summary_sentence(cfg, proxy, acc, first, recovered, synth),
           "table": table_rows, "arms": arms.info, "validation": proxy.validation.to_json(), "accuracy": acc}
    if recovered:
        out["hard_cluster_planted"] = proxy.planted_N[hard_N].astype(int).tolist()
        out["planted_hard_share"] = recovered["planted_hard_share"]
    ctx.save_json("base_results.json", out)
    return out


def combine(cfg: UpsampleConfig, bases: dict[int, dict]) -> dict:
    """The run's results from each base seed's `report`: the claims' tables (accuracy per target
    seed in points, the hard cluster's planted flags), a headline with one value per base seed,
    the summaries, tables, arms and validation of every base seed."""
    seeds = list(bases)
    heads = {b: r["headline"] for b, r in bases.items()}
    headline = {"base_seeds": seeds, "target_seeds": list(cfg.target_seeds),
                "n_train": [h["n_train"] for h in heads.values()], "n_test": heads[seeds[0]]["n_test"]}
    for opt in cfg.optimizers:
        for arm in cfg.arms:
            headline[f"acc_{opt}_{arm}"] = [h[f"acc_{opt}_{arm}"] for h in heads.values()]
    if all("planted" in h for h in heads.values()):
        for key, what in (("trajectory_clusters", "hard cluster"), ("final_loss_clusters", "final-loss cluster")):
            for stat in ("precision", "recall", "adjusted_rand"):
                headline[f"{what} {stat} vs planted"] = [h["planted"][key][stat] for h in heads.values()]
    headline["seconds"] = {f"base{b}": h["seconds"] for b, h in heads.items()}
    per_seed = {}
    for opt in cfg.optimizers:   # [arm, base x target seed]: each seed's accuracy over the test items, in points
        values = [[100 * a for b in seeds for a in bases[b]["accuracy"][opt][arm]["all"]] for arm in cfg.arms]
        per_seed[f"accuracy_{opt}"] = per_seed_table(values, list(cfg.arms), seeds, unit="pts")
    share = planted_share(cfg)
    # the mechanism claim's null is the planted share of the data: measured only where the proxy's
    # rows hold exactly that share (a length filter that drops rows would shift it)
    if all("hard_cluster_planted" in r and r["planted_hard_share"] == share for r in bases.values()):
        per_seed["planted_hard"] = {"arms": {"hard_cluster": [[float(x) for x in bases[b]["hard_cluster_planted"]]
                                                              for b in seeds]}, "base_seeds": seeds, "unit": ""}
    return {"headline": headline, "summary": " ".join(f"Base seed {b}: {r['summary']}" for b, r in bases.items()),
            "table": [{"base_seed": b, **row} for b, r in bases.items() for row in r["table"]],
            "arms": {f"base{b}/{k}": v for b, r in bases.items() for k, v in r["arms"].items()},
            "validation": [r["validation"] for r in bases.values()], "per_seed": per_seed}


def train_overlap(rows: list[Row], groups: dict[str, np.ndarray], train_spec: DatasetSpec) -> dict:
    """{group (`test_groups`): fraction of its test questions that are also prompts of `train_spec`
    (the train set, or the scratch models' pre-training corpus)}."""
    train = {r.prompt for r in read_validated(train_spec)[0]}
    seen = np.array([r.prompt in train for r in rows])
    return {g: float(seen[m].mean()) for g, m in groups.items()}


def summary_sentence(cfg: UpsampleConfig, proxy: ProxyPhase, acc: dict, test: str, recovered, synth) -> str:
    hard_N, mean_N = proxy.hard_N, proxy.losses_NxK.mean(1)
    out = (f"Proxy ({cfg.proxy}) trained {proxy.steps_K[-1]} steps (~{cfg.epoch_fraction:.2g} epoch) on "
           f"{len(proxy.examples)} examples; k-means on its {len(proxy.steps_K)}-checkpoint loss trajectories put "
           f"{hard_N.mean():.0%} in the hard cluster (mean loss {mean_N[hard_N].mean():.2f} vs "
           f"{mean_N[~hard_N].mean():.2f}).")
    if recovered:
        r, f = recovered["trajectory_clusters"], recovered["final_loss_clusters"]
        out += (f" Planted-hard rows are {recovered['planted_hard_share']:.0%} of the data, "
                f"{r['precision']:.0%} of the hard cluster (recall {r['recall']:.0%}; clustering the final loss "
                f"alone: {f['precision']:.0%}, recall {f['recall']:.0%}).")
    first = target_names(cfg.targets)[0]
    for opt in cfg.optimizers:
        out += (f" {first} with {opt} on {test}, mean over {len(cfg.target_seeds)} target seeds: "
                + ", ".join(f"{arm} {100 * np.mean(acc[opt][arm]['all']):.1f}%" for arm in cfg.arms) + ".")
    out += " The claims compare arms paired over the test items at each target seed."
    if synth:
        out += (f" Synthesis: {synth.report['generated']} variants of the hard examples generated, "
                f"{synth.report['parsed']} parsed, {synth.report['unique']} new, {synth.report['kept']} kept as "
                f"hard by the proxy.")
    return out


# ----------------------------------------------------------------------------- claims

_ARM_CLAIMS = (   # (key, arm, versus, source, the paper's sentence)
    ("hard_beats_baseline", "upsample_hard", "baseline", "Fig. 4(d)",
     "upsampling the examples the proxy finds hard improves the target's accuracy over the baseline"),
    ("hard_beats_easy", "upsample_hard", "upsample_easy", "Fig. 4(d)",
     "upsampling easy examples does not: hard beats easy"),
    ("hard_beats_random", "upsample_hard", "random", "Fig. 4(d)",
     "nor does upsampling a random subset: hard beats random"),
    ("trajectory_beats_final_loss", "upsample_hard", "upsample_final_loss", "Sec. 5 ablation",
     "clustering loss trajectories finds better examples to upsample than the final loss alone"),
    ("sam_beats_baseline", "sam", "baseline", "Fig. 4(d)",
     "SAM (twice the gradients per step) improves over the baseline"),
)


def planted_share(cfg: UpsampleConfig) -> float | None:
    """The share of the generated rows whose known difficulty counts as hard (None without one)."""
    if cfg.difficulty is None:
        return None
    sizes = level_sizes(cfg.planted.levels, cfg.planted.train_size)
    return sum(n for (name, _, _), n in zip(cfg.planted.levels, sizes) if name in cfg.difficulty[1]) \
        / cfg.planted.train_size


def claims(cfg: UpsampleConfig) -> list[Claim]:
    """Seed 001's LLM claims among the config's arms, per optimizer (seed 001 makes each with AdamW
    and with Muon), on the first target's first test set. The replicate is a target seed: its
    accuracy over the test items (every arm answers the same items, so item difficulty cancels in
    the difference), arms paired on the seed (the same data order stream); the interval is the
    paired t over target seeds, so it holds the fine-tuning noise, which a single fine-tuned model
    compared over items would leave out; decided at each base seed (they must agree). With a
    known difficulty (`cfg.difficulty`), also the mechanism: the proxy's hard cluster holds the
    planted-hard rows above their share of the data (exact binomial interval; the cluster is a
    draw without replacement from a finite set, so the binomial is the conservative side of the
    hypergeometric)."""
    out = [Claim(f"{key}_{opt}", "001", source, f"{says} ({opt})", f"accuracy_{opt}", arm, versus, expect="higher")
           for opt in cfg.optimizers for key, arm, versus, source, says in _ARM_CLAIMS
           if arm in cfg.arms and versus in cfg.arms]
    if cfg.difficulty is not None:
        share = planted_share(cfg)
        out.append(Claim("hard_cluster_is_planted_hard", "001", "Sec. 5 (mechanism)",
                         "examples the proxy learns late (its hard cluster) are the complex ones: the cluster holds "
                         "the planted-hard rows above their share", "planted_hard", "hard_cluster", expect="higher",
                         null=share, test="proportion"))
    return out


__all__ = ["Scratch", "UpsampleConfig", "check", "RunData", "prepare_data", "prepare_models", "ProxyPhase",
           "score_proxy", "Synthesized", "synthesize_hard", "finetune_arm", "ArmResults", "run_arms", "report",
           "claims", "combine", "planted_recovery", "test_groups", "accuracy_by_group"]
