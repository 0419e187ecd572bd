"""The LLM pipeline (issue 8): instruction data, offline math sets, proxy loss trajectories,
fine-tuning and generation-based evaluation, on the `lsb_jax.models.lm` decoder.

    data.py      rows from the hub or local JSON/JSONL/parquet, validated (errors name file, row,
                 field), chat/plain templates, response-only masks, example and domain ids,
                 resumable batch iterators over any `lsb_jax.data` sampler, length bucketing
    mathdata.py  hub specs (MathInstruct, GSM8K, MATH-500) and offline look-alikes (reasoning-gym)
    scoring.py   the proxy run: per-example losses at K checkpoints into a resumable
                 `TrajectoryStore` (which examples an arm upsamples: `tracking.selection_counts`)
    arms.py      the arm table: arm name -> selection, SAM, synthesized variants
    finetune.py  full or LoRA fine-tuning on `train.fit`: AdamW/Muon/SAM, accumulation, bf16,
                 mesh sharding, exact resume, multi-host
    evaluate.py  answer extraction, math-verify equivalence, Wilson intervals, batched
                 generation with per-example records, the arms comparison table
    synthesis.py variants of hard examples: generate (our decoding), parse, dedup vs train/test,
                 re-score with the proxy, keep the hard ones
    selection.py SFT subset selection (seed 003): MiniLM / hidden-state features, k-center vs
                 random subsets, fine-tuning on exactly a subset with held-out loss curves
    pipeline.py  the run glue both protocols share: local BPE tokenizer, from-scratch decoders
                 (built, pre-trained, saved: `model_folder`), offline sets, proxy -> target
                 row alignment, reasoning-gym generator variants, evaluation of an arm on its
                 test sets, phase timing, figures
    upsample.py  the upsample-hard protocol (seeds 000/001) in steps: data, models, proxy
                 trajectories and clusters, synthesis, arms, report (`llm/upsample_hard.py`)
    sft.py       the SFT selection protocol (seed 003) in steps: data and model, pool features,
                 subsets, one fine-tune per arm, comparison and verdicts (`llm/sft_selection.py`)
"""

from lsb_jax.llm.data import (
    ALPACA,
    BatchIterator,
    DataError,
    DatasetSpec,
    Examples,
    LengthBucketedEpochs,
    PromptTemplate,
    Row,
    ValidationReport,
    domain_mixture,
    encode_examples,
    encode_prompt,
    load_examples,
    pad_batch,
    pad_token_id,
    read_validated,
    tokenize_rows,
)
from lsb_jax.llm.arms import ARMS, PAPER_ARMS, LLMArm
from lsb_jax.llm.evaluate import (
    accuracy_summary,
    answers_match,
    comparison_table,
    evaluate_completions,
    evaluate_generation,
    extract_answer,
    gold_answer,
    model_generate_fn,
    to_jsonl,
    wilson_interval,
)
from lsb_jax.llm.finetune import (
    FinetuneConfig,
    finetune,
    finetune_split,
    make_finetune_step,
    maybe_initialize_distributed,
    prepare,
)
from lsb_jax.llm import pipeline, selection, sft, upsample  # module namespaces: lsb_jax.llm.pipeline.* etc.
from lsb_jax.llm.mathdata import (GSM8K_TEST, MATH_TEST, MATHINSTRUCT, OfflineMathConfig, offline_specs,
                                  write_offline_math)
from lsb_jax.llm.scoring import ProxyConfig, ScoringHook, proxy_trajectories, score_into
from lsb_jax.llm.synthesis import SynthesisConfig, SynthesisReport, synthesize

__all__ = [
    "accuracy_summary",
    "ALPACA",
    "answers_match",
    "ARMS",
    "BatchIterator",
    "comparison_table",
    "DataError",
    "DatasetSpec",
    "domain_mixture",
    "encode_examples",
    "encode_prompt",
    "evaluate_completions",
    "evaluate_generation",
    "Examples",
    "extract_answer",
    "finetune",
    "finetune_split",
    "FinetuneConfig",
    "gold_answer",
    "GSM8K_TEST",
    "LengthBucketedEpochs",
    "LLMArm",
    "load_examples",
    "make_finetune_step",
    "MATH_TEST",
    "MATHINSTRUCT",
    "maybe_initialize_distributed",
    "model_generate_fn",
    "offline_specs",
    "OfflineMathConfig",
    "pad_batch",
    "pad_token_id",
    "PAPER_ARMS",
    "pipeline",
    "prepare",
    "PromptTemplate",
    "proxy_trajectories",
    "ProxyConfig",
    "read_validated",
    "Row",
    "score_into",
    "ScoringHook",
    "selection",
    "sft",
    "SynthesisConfig",
    "SynthesisReport",
    "synthesize",
    "to_jsonl",
    "tokenize_rows",
    "upsample",
    "ValidationReport",
    "wilson_interval",
    "write_offline_math",
]
