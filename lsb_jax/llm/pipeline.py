"""The run glue of the LLM protocols (`llm.upsample`, `llm.sft`), offline or at scale.

    tok = train_tokenizer(texts, vocab_size=384)                    # byte-level BPE, digits split
    model = init_decoder(ScratchModel("qwen3").hf_config(tok), seed=0)  # no checkpoint, no download
    save_model(model, tok, "models/target")                         # load_pretrained/load_tokenizer read it
    batches = epoch_batches(examples, counts_N, key, B, pad_id=pad_token_id(tok), length=L)
    counts_N = align_counts(counts_P, proxy_examples, target_examples)   # proxy rows -> target rows
    register_generator("chain_sum_d1", "chain_sum", {"max_digits": 1})  # an easier offline generator

    folder = model_folder("scratch", "models/target", ScratchModel("qwen3"), tok, corpus_fn, cfg, 100,
                          batch_size=16, key=key_for(0, 1), seed=0, ctx=ctx, child="pretrain")
    accuracy = evaluate_tests(model, tok, template, {"gsm8k": (spec, rows)}, out_dir, batch_size=50,
                              max_new_tokens=24)                # + eval_gsm8k.jsonl per-example records

What is new here is small: a local tokenizer and a from-scratch decoder (so the whole pipeline
runs without network), a model folder per run (hub id as is, scratch models pre-trained and
saved), reasoning-gym generators with other parameters, the proxy -> target row alignment (two
tokenizers may drop different too-long rows), generation on every test set of an arm, and the
figures. Everything else is `llm.{data, mathdata, scoring, finetune, evaluate}`.

Epochs of an upsampled arm: `data.Epochs(counts_N)` visits the multiset {example i repeated
counts_N[i] times} without replacement, so in every E = sum(counts_N) consecutive draws example i
appears exactly counts_N[i] times (the tests check this from the trainer's `example_id`s).
"""

from __future__ import annotations

import dataclasses
import operator
import os
import re
import shutil
import time
from pathlib import Path
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsb_jax import io
from lsb_jax.data import Epochs
from lsb_jax.llm.data import (BatchIterator, DataError, DatasetSpec, Examples, PromptTemplate, check_renders,
                             check_skipped, is_local, load_examples, pad_token_id, read_validated)
from lsb_jax.llm.evaluate import evaluate_generation, model_generate_fn, to_jsonl
from lsb_jax.llm.finetune import FinetuneConfig, finetune
from lsb_jax.models.lm.config import DecoderConfig
from lsb_jax.models.lm.model import Decoder

SPECIAL_TOKENS = ("<pad>", "<|endoftext|>")
SCRATCH = "scratch"       # a model name that means "built from scratch" (`model_folder`)


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Sequence[str], vocab_size: int = 384, *, split_digits: bool = True):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `texts` (pad "<pad>" = id 0, eos
    "<|endoftext|>" = id 1). `split_digits` makes every digit its own token (arithmetic is
    learnable digit by digit). Decoding round-trips the text exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    if not texts:
        raise ValueError("train_tokenizer: no texts")
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(list(texts), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[1],
                                   clean_up_tokenization_spaces=False)


# ----------------------------------------------------------------------------- from-scratch decoders


@dataclasses.dataclass(frozen=True)
class ScratchModel:
    """A small decoder of one supported family (`models.lm.FAMILIES`), built without a checkpoint.

    num_kv_heads 0 = num_heads. The HF config is made by `transformers.AutoConfig.for_model`, so
    the model exports (`save_model`) to a folder that `transformers` and `load_pretrained` read.
    """

    family: str = "gpt_neox"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 0
    intermediate_size: int = 256
    max_positions: int = 512
    tie_embeddings: bool = False
    init_std: float = 0.02

    def __post_init__(self):
        from lsb_jax.models.lm.config import FAMILIES  # noqa: PLC0415
        if self.family not in FAMILIES:
            raise ValueError(f"ScratchModel.family: unknown {self.family!r}; expected one of {FAMILIES}")
        kv = self.num_kv_heads or self.num_heads
        if self.hidden_size % self.num_heads or self.num_heads % kv:
            raise ValueError(f"ScratchModel: hidden_size={self.hidden_size} must be divisible by num_heads="
                             f"{self.num_heads}, and num_heads by num_kv_heads={kv}")
        if min(self.hidden_size, self.num_layers, self.intermediate_size, self.max_positions) < 1 or \
                not self.init_std > 0:
            raise ValueError("ScratchModel: sizes must be >= 1 and init_std > 0")

    def hf_config(self, tokenizer=None, *, vocab_size: int | None = None):
        """The `transformers` config for `tokenizer`'s vocabulary (and its pad/eos ids), or for a
        vocabulary of `vocab_size` (pad 0, eos 1: `train_tokenizer`'s) before a tokenizer exists."""
        from transformers import AutoConfig  # noqa: PLC0415

        vocab, pad, eos = ((len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id) if tokenizer is not None
                           else (vocab_size, 0, 1))
        kw = dict(vocab_size=vocab, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                  num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
                  max_position_embeddings=self.max_positions, tie_word_embeddings=self.tie_embeddings,
                  pad_token_id=pad, eos_token_id=eos, bos_token_id=eos)
        if self.family != "gpt_neox":
            kw["num_key_value_heads"] = self.num_kv_heads or self.num_heads
        if self.family in ("llama", "qwen3", "gemma3_text"):
            kw["head_dim"] = self.hidden_size // self.num_heads
        return AutoConfig.for_model(self.family, **kw)


def init_decoder(hf_config, *, seed: int = 0, init_std: float = 0.02, dtype=jnp.float32) -> Decoder:
    """A `Decoder` for a `transformers` config with weights drawn on the host (numpy, seeded):
    embeddings and kernels ~ N(0, init_std^2), biases 0, norm scales 1 (0 for Gemma's (1 + w)
    norms). Host init avoids compiling one threefry program per weight shape."""
    cfg = DecoderConfig.from_hf(hf_config)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Decoder(cfg, dtype=dtype, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(seed)
    leaves = []
    for path, var in nnx.to_flat_state(abstract):
        name, shape = str(path[-1]), var.get_value().shape
        if name == "bias":
            value = np.zeros(shape)
        elif name == "scale":
            value = np.full(shape, 0.0 if cfg.norm_unit_offset else 1.0)
        else:
            value = init_std * rng.standard_normal(shape)
        leaves.append((path, var.replace(jnp.asarray(value, dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def _write_folder(folder: str | Path, write) -> Path:
    """`write(tmp)` fills a folder beside `folder`, renamed into place (a reader never sees a
    half-written folder; a failed write leaves the old one)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def save_model(model: Decoder, tokenizer, folder: str | Path, *, dtype=None, base: str | None = None) -> Path:
    """`save_pretrained` (weights in `dtype`, default the model's) + the tokenizer + a
    `generation_config.json` (the base checkpoint's when `base` has one, else derived from the
    config; its pad id falls back as batching does, `data.pad_token_id`) into `folder`, atomically."""
    from transformers import AutoConfig, GenerationConfig  # noqa: PLC0415

    from lsb_jax.models.lm.checkpoint import resolve_folder, save_pretrained  # noqa: PLC0415

    def write(tmp):
        save_pretrained(model, tmp, dtype=dtype)
        tokenizer.save_pretrained(tmp)
        src = resolve_folder(base) if base is not None and base != SCRATCH else None
        if src is not None and (src / "generation_config.json").exists():
            gen = GenerationConfig.from_pretrained(src)
        else:
            gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(tmp))
        if gen.eos_token_id is None:
            gen.eos_token_id = tokenizer.eos_token_id
        if gen.pad_token_id is None:
            gen.pad_token_id = pad_token_id(tokenizer)
        gen.save_pretrained(tmp)

    return _write_folder(folder, write)


def export_finetuned(result, tokenizer, folder: str | Path, *, base: str, what: Sequence[str] = ("merged", "adapter"),
                     dropout: float = 0.0) -> dict[str, str]:
    """A fine-tuned model to take home, in `folder`: "merged" -> `folder/model/`, a Hugging Face
    folder (adapters folded in, weights in the trained parameters' dtype, tokenizer,
    generation_config.json); "adapter" -> `folder/adapter/`, a `peft` LoRA adapter for `base`
    (only when the run trained adapters). Returns {kind: folder written}."""
    from lsb_jax.models.lm.checkpoint import split_revision  # noqa: PLC0415
    from lsb_jax.models.lm.lora import lora_paths, save_peft_adapter  # noqa: PLC0415

    out = {}
    model = result.model()
    dtype = jax.tree.leaves(result.params)[0].dtype
    base = str(Path(base).expanduser().resolve()) if io.looks_local(base) else base   # loadable from anywhere
    base_name, revision = split_revision(base)      # "org/name@rev": peft keeps the revision in its own field
    if "merged" in what:
        out["merged"] = str(save_model(result.merged_model(), tokenizer, Path(folder) / "model", dtype=dtype,
                                       base=base))
    if "adapter" in what and lora_paths(model):
        out["adapter"] = str(_write_folder(Path(folder) / "adapter", lambda tmp: save_peft_adapter(
            model, tmp, base_model=base_name, revision=revision, dropout=dropout)))
    return out


# ----------------------------------------------------------------------------- offline generators


def register_generator(name: str, base: str, params: Mapping[str, object] | Sequence[tuple[str, object]]) -> str:
    """Registers reasoning-gym generator `name`: generator `base` with other default parameters
    (e.g. `chain_sum` with max_digits=1), so `mathdata.OfflineMathConfig` can name it. Idempotent
    for the same (base, params); a different definition under a taken name raises."""
    import reasoning_gym.factory as rg  # noqa: PLC0415

    params = dict(params)
    if base not in rg.DATASETS:
        raise ValueError(f"register_generator: unknown reasoning-gym generator {base!r}")
    dataset_cls, config_cls = rg.DATASETS[base]
    known = {f.name for f in dataclasses.fields(config_cls)}
    if set(params) - known:
        raise ValueError(f"register_generator({name!r}): {base} has no parameters {sorted(set(params) - known)}")
    if name in rg.DATASETS:
        if getattr(rg.DATASETS[name][1], "_lsb_definition", None) != (base, params):
            raise ValueError(f"register_generator: {name!r} is already registered differently")
        return name
    fields = [(k, type(v), dataclasses.field(default=v)) for k, v in params.items()]
    variant = dataclasses.make_dataclass(f"{config_cls.__name__}_{name}", fields, bases=(config_cls,))
    variant._lsb_definition = (base, params)
    if hasattr(variant, "validate"):
        variant().validate()    # bad parameter values fail here, not at the first draw
    rg.register_dataset(name, dataset_cls, variant)
    return name


# ----------------------------------------------------------------------------- batches and arms


def batch_length(examples: Examples, multiple: int = 16) -> int:
    """The longest example rounded up to `multiple` tokens: one fixed batch shape for `fit`."""
    return int(-(-int(examples.lengths_N.max()) // multiple) * multiple)


def epoch_batches(examples: Examples, counts_N, key, batch_size: int, *, pad_id: int, length: int,
                  perm_seed: int = 0) -> BatchIterator:
    """Padded batches over epochs of the multiset {example i x counts_N[i]} (`data.Epochs`)."""
    counts_N = np.ones(len(examples), np.int64) if counts_N is None else np.asarray(counts_N)
    if counts_N.shape != (len(examples),):
        raise ValueError(f"epoch_batches: counts must be [N={len(examples)}], got shape {counts_N.shape}")
    return BatchIterator(examples, Epochs(counts_N, perm_seed=perm_seed), key, batch_size, pad_id=pad_id,
                         length=length)


def align_counts(counts_P, proxy_examples: Examples, target_examples: Examples) -> np.ndarray:
    """Target counts [N_target] from proxy counts [N_proxy], matched by source row (the two
    tokenizers may drop different too-long rows); target rows the proxy never saw keep 1."""
    by_row = {r.source_row: int(c) for r, c in zip(proxy_examples.rows, np.asarray(counts_P), strict=True)}
    return np.array([by_row.get(r.source_row, 1) for r in target_examples.rows], np.int64)


# ----------------------------------------------------------------------------- figures


def plot_trajectories(losses_NxK, steps_K, hard_N, groups_N=None, group_names: Sequence[str] = (), *,
                      planted_N=None):
    """Left: mean +- std of the hard and easy clusters' loss trajectories (dashed: per group;
    dotted: the mean of the rows known to be hard / easy when `planted_N` is given).
    Right: histogram of the mean trajectory loss by cluster."""
    from lsb_jax import plots  # noqa: PLC0415

    losses_NxK, hard_N = np.asarray(losses_NxK, np.float64), np.asarray(hard_N, bool)
    steps_K = np.asarray(steps_K)
    fig, (ax, hx) = plots.figure(2)
    for mask, name, color in ((hard_N, "hard", "C3"), (~hard_N, "easy", "C0")):
        if mask.any():
            plots.band(ax, steps_K, losses_NxK[mask].T, label=f"{name} cluster (n={int(mask.sum())})", color=color)
    if groups_N is not None:
        for g, gname in enumerate(group_names):
            for mask, color in ((hard_N, "C3"), (~hard_N, "C0")):
                sel = mask & (np.asarray(groups_N) == g)
                if sel.any():
                    ax.plot(steps_K, losses_NxK[sel].mean(0), ls="--", lw=0.8, color=color, alpha=0.6)
    if planted_N is not None:
        planted_N = np.asarray(planted_N, bool)
        for mask, name, color in ((planted_N, "planted hard", "k"), (~planted_N, "planted easy", "0.5")):
            if mask.any():
                ax.plot(steps_K, losses_NxK[mask].mean(0), ls=":", lw=1.5, color=color,
                        label=f"{name} (mean, n={int(mask.sum())})")
    ax.set(xlabel="proxy step", ylabel="per-example loss (nats/token)", title="proxy loss trajectories by cluster")
    plots.legend(ax)
    mean_N = losses_NxK.mean(1)
    bins = np.linspace(mean_N.min(), mean_N.max(), 31)
    for mask, name, color in ((hard_N, "hard", "C3"), (~hard_N, "easy", "C0")):
        if mask.any():
            hx.hist(mean_N[mask], bins=bins, alpha=0.6, color=color, label=name)
    hx.set(xlabel="mean loss over the K checkpoints (nats/token)", ylabel="examples", title="loss by cluster")
    plots.legend(hx)
    return fig


def plot_accuracy(acc: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]], arms: Sequence[str]):
    """One panel per optimizer of acc[optimizer][arm][group] = [accuracy per target seed]: per arm
    a bar at the mean over seeds with a dot per seed, one bar per item group ("all" and, with a
    known difficulty, each level)."""
    from lsb_jax import plots  # noqa: PLC0415

    opts = list(acc)
    groups = list(acc[opts[0]][arms[0]])
    fig, axes = plots.figure(len(opts), width=max(4.5, 0.35 * len(arms) * len(groups) + 1.5))
    width = 0.8 / len(groups)
    for ax, opt in zip(axes, opts):
        for j, g in enumerate(groups):
            x = np.arange(len(arms)) + (j - (len(groups) - 1) / 2) * width
            vals = [100 * np.asarray(acc[opt][arm][g], np.float64) for arm in arms]
            ax.bar(x, [v.mean() for v in vals], width=width, color=f"C{j}", alpha=0.7, label=g)
            for xi, v in zip(x, vals):
                ax.plot(np.full(v.size, xi), v, "k.", ms=3)
        ax.set_xticks(range(len(arms)), arms, rotation=25, ha="right")
        ax.set(ylabel="accuracy % (bar: mean, dots: target seeds)", title=f"accuracy per arm ({opt})", ylim=(0, 100))
        plots.legend(ax)
    return fig


def key_for(seed: int, stream: int) -> jax.Array:
    """A named PRNG stream of the pipeline (data order of each phase)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), stream)


# ----------------------------------------------------------------------------- the models and data of a run


class BaseSeeded:
    """For the protocol configs (`UpsampleConfig`, `SFTConfig`) whose field `base_seeds` runs the
    whole pipeline once per base seed: `seed` is the base seed of a one-pipeline config (what
    their `for_base(seed)` returns); `check_base_seeds` is for their `__post_init__`."""

    @property
    def seed(self) -> int:
        if len(self.base_seeds) != 1:
            raise ValueError(f"{type(self).__name__}.seed: {self.base_seeds} are several base seeds; "
                             "use for_base(seed)")
        return self.base_seeds[0]

    def check_base_seeds(self) -> None:
        from lsb_jax.train.arms import check_base_seeds  # noqa: PLC0415

        check_base_seeds(self.base_seeds, "Config.base_seeds")


class PhaseTimer:
    """Wall seconds of a run's phases: `lap(name)` records the time since the previous lap (or
    since construction) under `name` in `seconds`, rounded to 0.1 s."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 1)
        self._last = now


def check_sources(names: Sequence[str]) -> None:
    """Before anything is written: every model that is not built from scratch resolves (a hub id
    in the local cache or a folder; `models.lm.check_source` raises a one-line error otherwise)."""
    from lsb_jax.models.lm import check_source  # noqa: PLC0415

    for name in names:
        if name != SCRATCH:
            check_source(name)


def check_data_choice(data: str, choices: Sequence[str]) -> None:
    """Config.data is one of `choices`; a file or hub id given there gets the fields to use instead."""
    if data in choices:
        return
    hint = (f": for your own data set data=files and train_data.path={data} (and test_data.path)"
            if "files" in choices and ("/" in data or "." in data) else "")
    raise ValueError(f"Config.data must be one of {', '.join(map(repr, choices))}, got {data!r}{hint}")


def check_sizes(cfg, accum: Sequence[tuple[str, str]] = ()) -> None:
    """The size fields the LLM protocols share (for their `__post_init__`): eval_batch >= 1,
    test_limit >= 0, and every (batch field, fine-tuning config field) of `accum` (dotted names)
    a batch that splits into that fine-tuning's `accum_steps` equal micro-batches."""
    from lsb_jax.config import require_positive  # noqa: PLC0415

    require_positive(cfg, ("eval_batch",), "Config")
    if cfg.test_limit < 0:
        raise ValueError(f"Config.test_limit must be >= 0 (0: every test row), got {cfg.test_limit}")
    for batch, train in accum:
        b, a = operator.attrgetter(batch)(cfg), operator.attrgetter(train)(cfg).accum_steps
        if b % a:
            raise ValueError(f"Config.{batch}={b} is not divisible by {train}.accum_steps={a} "
                             "(a step's batch is split into accum_steps equal micro-batches)")


def check_files_config(data: str, train: DatasetSpec, test: DatasetSpec | None) -> None:
    """With data="files" the train (and test) specs need a path; with other data they must be unset
    (a path set there would be silently ignored)."""
    specs = {"train_data": train} | ({"test_data": test} if test is not None else {})
    if data == "files":
        missing = [k for k, v in specs.items() if not v.path]
        if missing:
            raise ValueError(f"Config: data='files' needs {' and '.join(f'{k}.path' for k in missing)} "
                             "(a local .json/.jsonl/.parquet file or a hub dataset id)")
    else:
        given = [k for k, v in specs.items() if v.path]
        if given:
            raise ValueError(f"Config: {', '.join(f'{k}.path' for k in given)} set but data={data!r}: "
                             "set data=files to train on your own data")


def user_tests(spec: DatasetSpec) -> dict[str, DatasetSpec]:
    """{name: spec} of a user's test set: the file's stem ("data/eval.jsonl" -> "eval") or the hub
    id's last part with its split."""
    if is_local(spec.path):
        name = Path(spec.path).name
        return {name.split(".")[0] or "test": spec}
    return {f"{spec.path.split('/')[-1]}_{spec.split}": spec}


@dataclasses.dataclass(frozen=True)
class ModelUse:
    """A model the run will load (`check_inputs`): its role in messages, its source, the
    fine-tuning config that trains it (None if it is not fine-tuned), its scratch spec (used when
    source is "scratch") and whether it answers the test rows (`evaluated`: their prompts must
    render with its tokenizer and the run's template)."""

    role: str
    source: str
    train: FinetuneConfig | None = None
    scratch: ScratchModel | None = None
    vocab_size: int = 384
    evaluated: bool = True


def check_inputs(models: Sequence[ModelUse], *, train: DatasetSpec | None = None,
                 tests: Sequence[DatasetSpec] = (), template: PromptTemplate | None = None, max_length: int = 0,
                 max_skip_fraction: float | None = None, truncate: bool = False, min_train_rows: int = 0,
                 test_max_length: int | None = None) -> None:
    """Everything a run needs, checked before anything is written or computed; each failure is one
    `UsageError` line naming the model, file, row and field:

    - every model resolves (a folder with config.json, or a hub id (optionally "id@revision") in
      the local cache when HF_HUB_OFFLINE is set), its config.json is one we load, its weights'
      headers hold every tensor we need (`models.lm.check_checkpoint`: no weight is read) and its
      tokenizer loads, with a chat template if `template` asks for one;
    - LoRA options match at least one linear layer of every model they fine-tune;
    - every test row is valid (fields present, strings, non-empty; conversations well formed) and
      its prompt renders with the template and the tokenizer of every evaluated model;
    - the train rows: with the tokenizer of each model trained on them (`ModelUse.train` given),
      at most `max_skip_fraction` of them are invalid
      or longer than `max_length` tokens (the error counts them and names the first); with
      `truncate` only prompts that leave no room for a response count as too long; every row
      renders with the template; at least `min_train_rows` of them remain;
    - with `test_max_length` (test rows that are also training examples: a held-out loss), the
      same for the test rows at that length.
    """
    from lsb_jax.config import ConfigError  # noqa: PLC0415
    from lsb_jax.models.lm import check_checkpoint  # noqa: PLC0415
    from lsb_jax.models.lm.lora import linear_paths  # noqa: PLC0415

    template = template if template is not None else PromptTemplate()
    check_sources([m.source for m in models])
    tokenizers = []                                     # (model, its tokenizer) of every non-scratch model
    for m in models:
        cfg = None
        if m.source != SCRATCH:
            cfg = check_checkpoint(m.source)
            tokenizers.append((m, _checked_tokenizer(m, template if m.evaluated or m.train else None)))
        lora = m.train.lora if m.train is not None else None
        if lora is not None:
            cfg = cfg or DecoderConfig.from_hf(m.scratch.hf_config(vocab_size=m.vocab_size))
            paths = linear_paths(cfg)
            if not any(re.fullmatch(lora.targets, p) for p in paths):
                raise ConfigError(f"lora_targets {m.train.lora_targets!r} ({lora.targets!r}) match no linear layer "
                                  f"of the {m.role} {m.source} (paths look like {', '.join(paths[:3])}, ...)")
    for spec in tests:
        rows, _ = read_validated(spec)
        field = spec.messages_field if spec.format == "messages" else spec.prompt_field
        for m, tok in tokenizers:
            if m.evaluated:
                try:
                    check_renders(rows, tok, template, spec.label, field, responses=False)
                except DataError as e:
                    raise DataError(e.file, e.row, e.field, f"{e.reason} (for the {m.role} {m.source})",
                                    e.line) from None
    if train is None:
        return
    _, report = read_validated(train, on_error="skip")   # files and fields: checked once, before any tokenizer
    check_skipped(report, max_skip_fraction)
    for m, tok in tokenizers:
        if m.train is not None:     # the models fine-tuned on the train rows
            try:
                examples, _ = load_examples(train, tok, template, max_length=max_length, on_error="skip",
                                            max_skip_fraction=max_skip_fraction, truncate=truncate)
                if len(examples) < min_train_rows:
                    raise DataError(train.label, None, None, f"{len(examples)} usable rows, fewer than the "
                                    f"{min_train_rows} the run needs")
                for spec in tests if test_max_length else ():
                    load_examples(spec, tok, template, max_length=test_max_length, on_error="skip",
                                  max_skip_fraction=max_skip_fraction)
            except DataError as e:
                too_long = "too long" in e.reason
                fix = ("; raise max_length or set truncate=true" if too_long and not truncate and e.file == train.label
                       else f"; test rows are training examples here, of at most {test_max_length} tokens"
                       if too_long and e.file != train.label else "")
                raise DataError(e.file, e.row, e.field, f"{e.reason}{fix} (tokenized for the {m.role} {m.source})",
                                e.line) from None
            except ConfigError as e:
                raise ConfigError(f"the {m.role} {m.source}: {e}") from None


def _checked_tokenizer(m: ModelUse, template: PromptTemplate | None):
    """The tokenizer of model `m`, or a one-line `ConfigError` naming the model when it does not
    load (no tokenizer files, a broken one) or lacks the chat template `template` asks for."""
    from lsb_jax.config import ConfigError  # noqa: PLC0415
    from lsb_jax.errors import UsageError  # noqa: PLC0415
    from lsb_jax.models.lm import load_tokenizer  # noqa: PLC0415

    try:
        tok = load_tokenizer(m.source)
    except UsageError:
        raise
    except Exception as e:   # transformers' own errors (OSError, ValueError, ...) on a folder it cannot read
        msg = " ".join(str(e).split())
        raise ConfigError(f"the {m.role} {m.source}: its tokenizer does not load ({type(e).__name__}: "
                          f"{msg[:300]})") from None
    if template is not None:
        try:
            template.resolve(tok)
        except ConfigError as e:
            raise ConfigError(f"the {m.role} {m.source}: {e}") from None
    return tok


def scratch_tokenizer(spec: DatasetSpec, prompt_format: str, vocab_size: int):
    """`train_tokenizer` on the prompt-formatted texts (prompt + response) of the rows of `spec`."""
    rows, _ = read_validated(spec)
    return train_tokenizer([prompt_format.replace("{prompt}", r.prompt) + r.response for r in rows], vocab_size)


def offline_sets(folder: str | Path, offline, generators=(), *, pretrain: bool = True):
    """Writes the offline math sets into `folder` (`mathdata.write_offline_math`, after registering
    the extra reasoning-gym `generators` (name, base, params); or `mathdata.write_planted_math`
    when `offline` is a `PlantedMathConfig`) and, with `pretrain`, a pre-training corpus from the
    same generators (seed + 1) into `folder/pretrain`.
    Returns (train spec, test spec, pretraining spec or None)."""
    from lsb_jax.llm.mathdata import PlantedMathConfig, offline_specs, write_offline_math, write_planted_math  # noqa

    write = write_planted_math if isinstance(offline, PlantedMathConfig) else write_offline_math
    for name, base, params in generators if write is write_offline_math else ():
        register_generator(name, base, params)
    folder = Path(folder)
    write(folder, offline)
    train, test = offline_specs(folder)
    corpus = None
    if pretrain:
        write(folder / "pretrain", dataclasses.replace(offline, seed=offline.seed + 1))
        corpus, _ = offline_specs(folder / "pretrain")
    return train, test, corpus


def pretrain_scratch(spec: ScratchModel, tokenizer, corpus: Examples, cfg: FinetuneConfig, num_steps: int, *,
                     batch_size: int, key, seed: int = 0, ctx=None, chunk_size: int = 50,
                     desc: str | None = None) -> Decoder:
    """A from-scratch decoder (`init_decoder`, seeded) briefly trained on `corpus` (epochs in a
    keyed order): the common starting point of every fine-tuning arm."""
    model = init_decoder(spec.hf_config(tokenizer), seed=seed, init_std=spec.init_std)
    if num_steps < 1:
        return model
    batches = epoch_batches(corpus, None, key, batch_size, pad_id=pad_token_id(tokenizer), length=batch_length(corpus))
    return finetune(model, batches, cfg, num_steps, ctx=ctx, chunk_size=chunk_size, desc=desc).model()


def model_folder(source: str, folder: str | Path, spec: ScratchModel, tokenizer, corpus, cfg: FinetuneConfig,
                 num_steps: int, *, batch_size: int, key, seed: int, ctx, child: str, desc: str | None = None) -> str:
    """The model folder an arm loads: `source` as is (hub id or folder) unless it is "scratch";
    then `pretrain_scratch` on `corpus()` (a callable, so the corpus is only tokenized when
    needed; its sub-run is `ctx.child(child)`), saved atomically to `folder` (`save_model`). A
    folder that already holds a model (a resumed run) is reused as it is."""
    if source != SCRATCH:
        return source
    folder = Path(folder)
    if (folder / "config.json").exists():
        return str(folder)
    model = pretrain_scratch(spec, tokenizer, corpus() if num_steps else None, cfg, num_steps, batch_size=batch_size,
                             key=key, seed=seed, ctx=ctx.child(child) if num_steps else None, desc=desc)
    return str(save_model(model, tokenizer, folder))


def load_for_training(folder: str, mesh=None) -> Decoder:
    """The model of `folder`, born sharded on `mesh` (each device reads its slice) or on one device."""
    from lsb_jax.models.lm import load_config, load_pretrained, param_shardings  # noqa: PLC0415

    return load_pretrained(folder, shardings=param_shardings(load_config(folder), mesh) if mesh is not None else None)


def process_batches(batches):
    """`batches` as this process feeds them: every process iterates the same global batches and
    keeps its rows (`finetune.ProcessShare`) when there are several processes."""
    from lsb_jax.llm.finetune import ProcessShare  # noqa: PLC0415

    return ProcessShare(batches) if jax.process_count() > 1 else batches


def check_devices(mesh, models: Sequence[str], batch_sizes: Sequence[int]) -> None:
    """Before anything is written: the mesh (`sharding.MeshConfig`) fits the devices; with several
    processes no model is built from scratch (one process would build it) and every batch splits over
    the processes and over the mesh's (data, fsdp) devices (which must span the processes)."""
    from lsb_jax.config import ConfigError  # noqa: PLC0415

    try:
        data, fsdp, _ = mesh.shape(jax.device_count())
    except ValueError as e:
        raise ConfigError(f"mesh: {e}") from None
    n = jax.process_count()
    if n > 1 and SCRATCH in models:
        raise ConfigError(f"{n} processes: a scratch model is built by one process; give every model as a "
                          "checkpoint folder or hub id that every host can read")
    bad = [b for b in batch_sizes if b % n]
    if bad:
        raise ConfigError(f"batch size {bad[0]} cannot be split over {n} processes")
    if n > 1:   # each process feeds its own rows: the batch must be split over (data, fsdp), across processes
        split = data * fsdp
        if split % n:
            raise ConfigError(f"mesh data={data} x fsdp={fsdp}: with {n} processes the batch axes must span every "
                              f"process (data x fsdp a multiple of {n}), or each would train on its own rows alone")
        bad = [b for b in batch_sizes if b % split]
        if bad:
            raise ConfigError(f"batch size {bad[0]} cannot be split over the mesh's data x fsdp = {split} devices "
                              f"({n} processes each feed their own rows)")


def log_accuracy(ctx, step: int, tests: Mapping[str, dict]) -> None:
    """Each test set's generation accuracy (`evaluate_tests`) as metrics `eval/accuracy_<test>` at
    `step` (the fine-tuning's last), beside its loss, lr and grad norm in JSONL and TensorBoard."""
    if ctx is not None and tests:
        ctx.metrics.write(step, {f"eval/accuracy_{name}": s["accuracy"] for name, s in tests.items()})


def evaluate_tests(model, tokenizer, template: PromptTemplate, tests: Mapping[str, tuple], out_dir: str | Path, *,
                   batch_size: int, max_new_tokens: int) -> dict[str, dict]:
    """Greedy generation on every test set {name: (spec, rows)} (stops at a blank line), per-example
    records written to `out_dir/eval_<name>.jsonl`; returns {name: accuracy summary with its
    Wilson interval (`evaluate.evaluate_generation`) and `correct_items`, each row's 0/1 in row order}."""
    generate_fn = model_generate_fn(model, tokenizer, template, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                    stop_strings=("\n\n",))
    out = {}
    for name, (spec, rows) in tests.items():
        records, out[name] = evaluate_generation(rows, generate_fn, answer_format=spec.answer_format)
        io.write_text(Path(out_dir) / f"eval_{name}.jsonl", to_jsonl(records))
        out[name]["correct_items"] = [bool(r["correct"]) for r in records]   # in test-row order: arms pair on it
    return out
