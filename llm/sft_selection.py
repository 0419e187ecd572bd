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
(30 steps of batch 16) per arm, 3 random seeds, at each of two base seeds (the base seed redraws
the data, the starting model, the random subsets and the data order). Generation accuracy of such
a model is ~0, so the held-out loss is the primary metric here.
full (GPU/TPU, network): TIGER-Lab/MathInstruct (262k rows), n = 10,000, target
Qwen/Qwen3-0.6B-Base (full fine-tuning, AdamW 2e-5, cosine, bf16, 3 epochs of n), test
openai/gsm8k; not run here.

Writes, per base seed in base<s>/: data/ (offline sets), models/target/ (the common starting
point), features.npz (MiniLM and hidden features [N, F]), subsets.npz (each arm's example ids),
per arm <arm>/{counts.npz (0/1 counts and the trainer's example ids [steps, B]), heldout.npz ([N_test, K] losses),
eval_<test>.jsonl, summary.json}, comparison.{md,json} (geometry, loss, accuracy per arm),
accuracy.md (`evaluate.comparison_table`), the figure heldout_loss (curves | final loss vs h_min).
What the run reports (results.json, comparison.md, the report): valid and skipped pool rows, h_min
of every subset (k-center vs random seeds, mean +- std), held-out loss per arm at every evaluation
and at the end, and generation accuracy with Wilson intervals. What to look for: seed 003
expects the k-center subsets (larger h_min) to end below the random subsets' held-out loss. A
k-center subset may spread its picks over the sources while the test set is of one source,
trading away in-distribution data; `kcenter_minilm_bysource` keeps the pool's source mix and
separates that effect from uniformity. Accuracy near 0 at the quick scale
makes the held-out loss the primary metric there. Cost: quick a few minutes of CPU; full: hours on
one accelerator (not run here).

    lsb run sft_selection --config quick
"""

from __future__ import annotations

from lsb_jax.experiments import Experiment
from lsb_jax.llm import pipeline as pl
from lsb_jax.llm import sft
from lsb_jax.llm.data import PromptTemplate
from lsb_jax.llm.finetune import FinetuneConfig
from lsb_jax.llm.sft import SFTConfig
from lsb_jax.optim import OptimConfig


def run(cfg: SFTConfig, ctx) -> dict:
    bases = {}
    for seed in cfg.base_seeds:                            # the whole protocol once per base seed
        bcfg, bctx, timer = cfg.for_base(seed), ctx.child(f"base{seed}"), pl.PhaseTimer()
        run = sft.prepare(bcfg, bctx)                      # data, the common starting model, pool, held-out set
        timer.lap("data_and_model")
        feats = sft.pool_features(run, bctx)               # MiniLM and hidden-state features of the pool
        picks = sft.subsets(bcfg, feats, len(run.examples), run.examples.domain_N)
        bctx.save_arrays("subsets", **picks)
        timer.lap("select")
        arms = {arm: sft.finetune_subset_arm(arm, idx, run, bcfg, bctx.child(arm)) for arm, idx in picks.items()}
        timer.lap("arms")
        bases[seed] = sft.report(bcfg, run, feats, picks, arms, timer.seconds, bctx)
    return sft.combine(cfg, bases)                         # the claims' tables over the base seeds


FULL = SFTConfig(
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
    # medium: 12 random subsets instead of 3, the claims' replicates (each one more fine-tuned arm)
    configs={"quick": SFTConfig(), "medium": SFTConfig(random_seeds=tuple(range(12))), "full": FULL},
    cost={"quick": "~1 min on 2 idle cores (2 base seeds; offline)",
          "medium": "~2-3 min (9 more random-subset arms per base seed)",
          "full": "hours per base seed on one GPU/TPU (network; not measured)"},
    run=run,
    check=sft.check,
    claims=sft.claims,
    order=75,
)
