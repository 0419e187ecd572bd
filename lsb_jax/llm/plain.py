"""Plain fine-tuning: our trainer on your model and data, without the arms; `llm/finetune.py` is its recipe.

    cfg = PlainConfig(data="files", model="path/or/hub-id@rev",
                      train_data=DatasetSpec("train.jsonl", format="messages"),
                      test_data=DatasetSpec("test.jsonl", format="messages"),
                      train=FinetuneConfig(lora_rank=8))
    check(cfg)                                       # every input, before anything is written
    out = run(cfg, ctx)                              # fine-tune, evaluate, export model/ and adapter/

The model is a hub id or a folder (`"id@revision"` pins a revision) or "scratch" (a small decoder
pre-trained on generated data: the offline demo). One pass of `epochs` over the train rows in a
keyed order (the same order for the same `seed`), greedy-generation accuracy on the test rows
(optional: an empty test path skips it), then the model to take home (`pipeline.export_finetuned`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal


from lsb_jax.llm import pipeline as pl
from lsb_jax.llm.data import DatasetSpec, PromptTemplate, load_examples, pad_token_id, read_validated
from lsb_jax.llm.finetune import FinetuneConfig, finetune, steps_for_epochs
from lsb_jax.llm.mathdata import PlantedMathConfig
from lsb_jax.llm.upsample import Scratch
from lsb_jax.models.lm import load_tokenizer
from lsb_jax.models.lm.sharding import MeshConfig
from lsb_jax.optim import OptimConfig

SCRATCH = pl.SCRATCH
PRETRAIN_STREAM, TRAIN_STREAM = 1, 3    # PRNG streams of the data order (as in `llm.upsample`)


@dataclasses.dataclass(frozen=True)
class PlainConfig:
    """The defaults are the offline demo: generated sums (`mathdata.PlantedMathConfig`) and a
    scratch Qwen3-style decoder. Your own run: data="files", train_data / test_data, model."""

    data: str = "planted"   # one of ("planted", "files")
    planted: PlantedMathConfig = PlantedMathConfig(train_size=800, test_size=200)
    train_data: DatasetSpec = DatasetSpec(path="")
    test_data: DatasetSpec = DatasetSpec(path="", split="test")   # path "" with data="files": no evaluation
    prompt_format: str = "Question: {prompt}\nAnswer: "
    template: Literal["auto", "chat", "plain"] = "auto"
    max_length: int = 512                         # longer train rows are skipped (and counted) ...
    max_skip_fraction: float = 0.01               # ... and more than this share of them fails the run
    truncate: bool = False                        # cut too-long train rows' responses to max_length instead
    tokenizer_vocab: int = 384                    # scratch model: BPE trained on the train texts
    model: str = SCRATCH                          # hub id ("id@revision") / folder, or "scratch"
    scratch: Scratch = Scratch(pl.ScratchModel("qwen3", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                               intermediate_size=128, tie_embeddings=True), pretrain_steps=300)
    train: FinetuneConfig = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-3, schedule="warmup_cosine"),
                                           warmup_ratio=0.03)
    batch_size: int = 16
    epochs: float = 1.0
    seed: int = 0                                 # data order, scratch model, adapters' init (lora_seed aside)
    checkpoint_every: int = 200                   # steps between checkpoints (and at the end): --resume continues
    eval_batch: int = 64
    max_new_tokens: int = 24
    test_limit: int = 0                           # first n test rows (0: all)
    export: tuple[Literal["merged", "adapter"], ...] = ("merged", "adapter")
    # devices: data parallel over all of them by default (one device: the single-device program);
    # several processes (hosts) when `lsb run` finds LSB_DISTRIBUTED / JAX_COORDINATOR_ADDRESS (docs/tpu.md)
    mesh: MeshConfig = MeshConfig()

    def __post_init__(self):
        pl.check_data_choice(self.data, ("planted", "files"))
        # with data=files the test set is optional (no path: no evaluation)
        pl.check_files_config(self.data, self.train_data, None if self.data == "files" else self.test_data)
        if self.data == "files" and self.model == SCRATCH:
            raise ValueError("Config: a 'scratch' model needs generated data (its tokenizer is trained on it); "
                             "set model to a hub id or a checkpoint folder")
        if self.epochs <= 0 or self.batch_size < 1 or self.max_new_tokens < 1 or self.max_length < 2 \
                or self.checkpoint_every < 1:
            raise ValueError("Config: epochs > 0, batch_size >= 1, max_new_tokens >= 1, max_length >= 2 and "
                             "checkpoint_every >= 1")
        if not 0 <= self.max_skip_fraction <= 1:
            raise ValueError(f"Config.max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")
        pl.check_sizes(self, [("batch_size", "train"), ("batch_size", "scratch.pretrain")])
        PromptTemplate(kind=self.template, prompt_format=self.prompt_format)   # validates

    @property
    def has_test(self) -> bool:
        return self.data != "files" or bool(self.test_data.path)


def check(cfg: PlainConfig) -> None:
    """Before anything is written (`pipeline.check_inputs`): the mesh fits the devices (and several
    processes get a model to load, and batches they can split), the model resolves, LoRA options
    match it, with your own data every test row is valid and the train rows fit `max_length`."""
    pl.check_devices(cfg.mesh, [cfg.model], [cfg.batch_size])
    files = cfg.data == "files"
    pl.check_inputs([pl.ModelUse("model", cfg.model, cfg.train, cfg.scratch.model, cfg.tokenizer_vocab)],
                    train=cfg.train_data if files else None,
                    tests=[cfg.test_data] if files and cfg.has_test else (),
                    template=PromptTemplate(kind=cfg.template, prompt_format=cfg.prompt_format),
                    max_length=cfg.max_length, max_skip_fraction=cfg.max_skip_fraction, truncate=cfg.truncate)


def run(cfg: PlainConfig, ctx) -> dict:
    """Fine-tune, evaluate, export; results: the run's numbers (steps, tokens, tokens/s, accuracy
    with its 95% Wilson interval per test set, the exported folders) and the train rows' validation."""
    timer = pl.PhaseTimer()
    template = PromptTemplate(kind=cfg.template, prompt_format=cfg.prompt_format)
    corpus_spec, tokenizer = None, None
    if cfg.data == "files":
        train_spec, test_specs = cfg.train_data, (pl.user_tests(cfg.test_data) if cfg.has_test else {})
    else:
        train_spec, test_spec, corpus_spec = pl.offline_sets(ctx.dir / "data", dataclasses.replace(
            cfg.planted, seed=cfg.planted.seed + 2 * cfg.seed), pretrain=cfg.model == SCRATCH)
        test_specs = {"planted_test": test_spec}
        if cfg.model == SCRATCH:
            tokenizer = pl.scratch_tokenizer(train_spec, cfg.prompt_format, cfg.tokenizer_vocab)

    def corpus():   # our own generated corpus: max_length is a length filter on it, no skip limit
        return load_examples(corpus_spec, tokenizer, template, max_length=cfg.max_length, on_error="skip",
                             max_skip_fraction=None)[0]

    folder = pl.model_folder(cfg.model, ctx.dir / "models" / "base", cfg.scratch.model, tokenizer, corpus,
                             cfg.scratch.pretrain, cfg.scratch.pretrain_steps, batch_size=cfg.batch_size,
                             key=pl.key_for(cfg.seed, PRETRAIN_STREAM), seed=cfg.seed, ctx=ctx, child="pretrain",
                             desc="pretrain (scratch model)")
    tok = load_tokenizer(folder)
    examples, validation = load_examples(train_spec, tok, template, max_length=cfg.max_length, on_error="skip",
                                         max_skip_fraction=cfg.max_skip_fraction, truncate=cfg.truncate)
    timer.lap("data_and_model")
    num_steps = steps_for_epochs(len(examples), cfg.batch_size, cfg.epochs)
    batches = pl.epoch_batches(examples, None, pl.key_for(cfg.seed, TRAIN_STREAM), cfg.batch_size,
                               pad_id=pad_token_id(tok), length=pl.batch_length(examples))
    batches = pl.process_batches(batches)      # several processes: each feeds its rows of every batch
    train = dataclasses.replace(cfg.train, seed=cfg.seed)
    train_ctx = ctx.child("train")
    mesh = cfg.mesh.make()
    result = finetune(pl.load_for_training(folder, mesh), batches, train, num_steps, ctx=train_ctx, chunk_size=50,
                      mesh=mesh, checkpoint_every=cfg.checkpoint_every, desc="finetune")
    timer.lap("train")
    tests = {}
    if test_specs:
        rows = {name: read_validated(spec)[0] for name, spec in test_specs.items()}
        tests = pl.evaluate_tests(result.merged_model(), tok, template,
                                  {name: (spec, rows[name][:cfg.test_limit] if cfg.test_limit else rows[name])
                                   for name, spec in test_specs.items()}, ctx.dir,
                                  batch_size=cfg.eval_batch, max_new_tokens=cfg.max_new_tokens)
    pl.log_accuracy(train_ctx, num_steps, tests)
    timer.lap("eval")
    exported = pl.export_finetuned(result, tok, ctx.dir, base=folder, what=cfg.export, dropout=train.lora_dropout)
    timer.lap("export")
    return summarize(cfg, examples, validation, num_steps, result, tests, exported, timer.seconds, ctx)


def summarize(cfg: PlainConfig, examples, validation, num_steps: int, result, tests: dict, exported: dict,
              seconds: dict, ctx) -> dict:
    headline = {"n_train": len(examples), "steps": num_steps, "train_tokens": result.tokens,
                "train_tokens_per_s": result.tokens / result.seconds if result.seconds else None,
                "seconds": seconds}
    for name, s in tests.items():
        headline[f"accuracy_{name}"] = s["accuracy"]
        headline[f"accuracy_{name}_ci95"] = [s["ci_low"], s["ci_high"]]
    trained = f"LoRA rank {cfg.train.lora_rank}" if cfg.train.lora_rank else "all weights"
    acc = "; ".join(f"{name}: {s['correct']}/{s['n']} correct ({100 * s['accuracy']:.1f}%, 95% CI "
                    f"{100 * s['ci_low']:.1f}-{100 * s['ci_high']:.1f}%)" for name, s in tests.items())
    summary = (f"Fine-tuned {cfg.model} ({trained}, {cfg.train.optim.name}) for {num_steps} steps on "
               f"{len(examples)} rows ({validation.num_skipped} skipped). " + (f"Accuracy {acc}. " if acc else "")
               + "Exported: " + (", ".join(f"{k} -> {Path(v).relative_to(ctx.dir)}" for k, v in exported.items())
                                 or "nothing") + ".")
    return {"headline": headline, "summary": summary, "validation": validation.to_json(),
            "test": {k: {x: v for x, v in s.items() if x != "correct_items"} for k, s in tests.items()},
            "exported": {k: str(Path(v).relative_to(ctx.dir)) for k, v in exported.items()}}

