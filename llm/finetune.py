"""Plain fine-tuning of your own model on your own data: our trainer without the arms.

Not a paper figure: the entry point for users who want the LLM trainer (full fine-tuning or LoRA;
AdamW, Muon, SAM; per-example losses in the metrics) on a model of theirs, and a model to take
home. Every input is checked before anything is written (`llm.plain.check`).

    lsb run finetune --set data=files --set model=path/to/checkpoint \
        --set train_data.path=train.jsonl --set train_data.prompt_field=question \
        --set train_data.response_field=answer --set test_data.path=test.jsonl \
        --set test_data.prompt_field=question --set test_data.response_field=answer
    lsb run finetune --set data=files --set model=Qwen/Qwen3-0.6B-Base@main \
        --set train_data.path=chat.jsonl --set train_data.format=messages --set train.lora_rank=8

Data (`data.DatasetSpec`): a local .json/.jsonl/.parquet file or a hub dataset id; prompt/response
fields, the conversational `messages` format (`format=messages`) or TRL's prompt-completion with
conversational prompts; the tokenizer's chat template renders conversations (`template=auto`).
Writes: models/base (a scratch model only), train/ (metrics, checkpoints), eval_<test>.jsonl,
model/ (a Hugging Face folder: merged weights, config, tokenizer, generation_config.json),
adapter/ (LoRA runs: a peft adapter for the base model), results.json.

quick (CPU, no network): generated one-digit sums and a 2-layer width-64 Qwen3-style decoder
pre-trained 300 steps from scratch, fine-tuned one epoch. full: Qwen/Qwen3-0.6B-Base on the same
generated sums, LoRA rank 16, bf16 compute (network: the model is downloaded).
"""

from __future__ import annotations

from lsb_jax.experiments import Experiment
from lsb_jax.llm import plain
from lsb_jax.llm.finetune import FinetuneConfig
from lsb_jax.llm.plain import PlainConfig
from lsb_jax.optim import OptimConfig


def run(cfg: PlainConfig, ctx) -> dict:
    return plain.run(cfg, ctx)      # data -> model -> fine-tune -> evaluate -> export


FULL = PlainConfig(
    model="Qwen/Qwen3-0.6B-Base", max_length=512, batch_size=32, epochs=2.0, eval_batch=64, max_new_tokens=64,
    train=FinetuneConfig(optim=OptimConfig(name="adamw", lr=2e-4, schedule="warmup_cosine"), warmup_ratio=0.03,
                         lora_rank=16, lora_alpha=32.0, lora_targets="all_linear", compute_dtype="bfloat16"))

EXPERIMENT = Experiment(
    name="finetune",
    reproduces="no paper figure: plain fine-tuning of your model on your data (issue 18)",
    description=__doc__.splitlines()[0],
    configs={"quick": PlainConfig(), "full": FULL},
    cost={"quick": "under a minute on 2 idle cores (offline)",
          "full": "minutes on one GPU (network; not measured)"},
    run=run,
    check=plain.check,
    order=90,
)
