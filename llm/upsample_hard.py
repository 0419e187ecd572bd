"""Upsample the examples a small proxy learns late, then fine-tune the target (seeds 000/001, LLM part).

Reproduces: the LLM protocol of arXiv 2602.00576 (seeds 000/001; /work/shared/notes/theory.md):
a small proxy is trained for ~1/3 epoch on the instruction set and scores every training
example's loss at K checkpoints; the [N, K] trajectories are clustered by k-means (k = 2, per
MathInstruct `source`), the higher-mean-loss cluster is "hard" and gets `factor` copies (2x). The
target is fine-tuned on each arm's data and evaluated by greedy generation (0-shot, answer
extraction + math-verify):

    baseline       the data as is                       upsample_hard  hard cluster x factor
    upsample_easy  easy cluster x factor                random         a random subset of the hard
    sam            the data as is, SAM optimizer                       cluster's size x factor
    upsample_final_loss  the higher cluster of k-means on the final loss alone x factor (the
                   paper's trajectory-vs-final-loss ablation)
    upsample_hard+synth  upsample_hard plus synthesized variants of the hard examples (seed 001's
                   optional enhancement; `llm.synthesis`): a generator model writes new problems
                   of the same kind with their solutions, unparseable ones and any problem of the
                   train or test set (exact or normalized text) are dropped, the proxy's final
                   checkpoint re-scores the rest and those with loss >= the q-quantile of the hard
                   cluster's final losses are added once each. Not in the default arms (cost).

Every arm trains `epochs` passes over its own multiset (`data.Epochs`: each epoch holds example
i exactly counts_i times), so the upsampled arms take more steps, as in the paper. Every arm is
fine-tuned with each of `optimizers` (AdamW and Muon: seed 001 makes its claims with both; Muon's
updates scaled to AdamW's RMS so they share the lr) at each of `target_seeds` (the fine-tuning
data order and the random arm's draw). A claim's replicate is a target seed: its accuracy over the
same test items, paired between arms; the claim is decided at each base seed and only when the
base seeds agree.

quick (CPU, no network): the planted family (`llm.mathdata.PlantedMathConfig`): 800 train and
1,000 test sums of one-digit terms, half "easy" (2 terms) and half "hard" (3 terms), the level
known to the report but never to the pipeline, so the report shows how well the proxy's hard
cluster recovers the planted difficulty (precision, recall, adjusted Rand index, against the
same for clustering the final loss alone) and each arm's accuracy per level; a byte-level BPE
tokenizer trained on the train texts (digits split), a 2-layer width-32 GPT-NeoX proxy and a
2-layer width-64 Qwen3-style target built from scratch; both are first "pre-trained" (supervised,
same format; 1000 steps of batch 16 each: the proxy is smaller, not less trained) on a corpus from
the same family (other seed), because a from-scratch model learns nothing in 1/3 epoch. Eight
target seeds at each of two base seeds (the base seed redraws the data, the scratch models and the
proxy). medium: 24 target seeds per base seed, for the claims quick leaves inconclusive.
`--set data=offline` uses reasoning-gym look-alikes of MathInstruct / GSM8K instead (`offline`,
one-digit chain sums with a worked line).
The synthesis arm (off by default) adds a 2-layer width-64 GPT-NeoX generator pre-trained 150
steps on pairs of corpus examples.
full (GPU/TPU, network): proxy EleutherAI/pythia-70m, targets Qwen3-0.6B-Base, Llama-3.2-1B,
Gemma-3-1B-pt, Phi-2 (full fine-tuning, AdamW and Muon at lr 2e-5, 3 epochs, cosine, bf16, three
target seeds at one base seed), train TIGER-Lab/MathInstruct, test openai/gsm8k and MATH-500 (`llm.mathdata`
specs). Not run here.

Writes: data/{train,test}.jsonl (+ data/pretrain/ for scratch models), models/<name>/ (scratch
models after pre-training, HF format), proxy/trajectories.npz, clusters.npz, synth/{variants.jsonl,
report.json} (with the synth arm), per arm <target>/<optimizer>/seed<s>/<arm>/{counts.npz,
eval_<test>.jsonl, summary.json}, comparison.{md,json}, figures (trajectories by cluster and by
planted level + loss histogram; accuracy per arm, optimizer and level with a dot per target seed).
What the run reports (results.json, comparison.md, the report): the hard cluster's size and mean
loss vs the easy cluster's; with a planted difficulty how well both clusterings recover it and the
share of test questions also in the train set per level; per optimizer, arm and target seed the
accuracy with its 95% Wilson interval and the difference to the baseline, and the accuracy per
level; the synthesis counts with the synth arm; the time of each phase. The claims (`upsample.claims`):
per optimizer hard vs baseline, easy, random and the final-loss clustering, SAM vs baseline, each
paired over the test items at every target seed; with a planted difficulty, that the hard cluster
holds the planted-hard rows above their share. Reasoning-gym's default chain_sum (up to 6 terms of
up to 4 digits) is not learned at this scale, hence the one-digit sums. Cost: see the `cost` field
(`lsb list`); full: hours per target, optimizer and seed on one accelerator (not run here).

    lsb run upsample_hard --config quick
    lsb run upsample_hard --config quick --set 'arms=["baseline","upsample_hard","upsample_hard+synth"]'
"""

from __future__ import annotations

from lsb_jax.experiments import Experiment
from lsb_jax.llm import pipeline as pl
from lsb_jax.llm import upsample as up
from lsb_jax.llm.data import PromptTemplate
from lsb_jax.llm.finetune import FinetuneConfig
from lsb_jax.llm.synthesis import SynthesisConfig
from lsb_jax.llm.upsample import UpsampleConfig
from lsb_jax.optim import OptimConfig


def run(cfg: UpsampleConfig, ctx) -> dict:
    bases = {}
    for seed in cfg.base_seeds:                                 # the whole protocol once per base seed
        bcfg, bctx, timer = cfg.for_base(seed), ctx.child(f"base{seed}"), pl.PhaseTimer()
        data = up.prepare_data(bcfg, bctx)                      # generated sets or hub specs, test rows, tokenizer
        folders = up.prepare_models(bcfg, data, bctx)           # scratch models pre-trained and saved
        timer.lap("data_and_models")
        proxy = up.score_proxy(bcfg, data, folders["proxy"], bctx)   # [N, K] trajectories -> hard cluster
        timer.lap("proxy")
        synth = up.synthesize_hard(bcfg, data, folders["generator"], proxy, bctx.child("synth")) \
            if cfg.synth_arms else None
        timer.lap("synthesis")
        arms = up.run_arms(bcfg, data, folders, proxy, synth, bctx)   # per target, optimizer, seed, arm
        timer.lap("arms")
        bases[seed] = up.report(bcfg, data, proxy, synth, arms, timer.seconds, bctx)
    return up.combine(cfg, bases)                               # the claims' tables over base and target seeds


FULL = UpsampleConfig(
    data="hub", test_sets=("gsm8k", "math"), template="auto", generators=(),
    prompt_format=PromptTemplate().prompt_format, max_length=512,
    proxy="EleutherAI/pythia-70m",
    proxy_train=FinetuneConfig(optim=OptimConfig(name="adamw", lr=2e-5, schedule="warmup_cosine"),
                               warmup_ratio=0.03, compute_dtype="bfloat16"),
    proxy_batch=32, num_checkpoints=5,
    targets=("Qwen/Qwen3-0.6B-Base", "meta-llama/Llama-3.2-1B", "google/gemma-3-1b-pt", "microsoft/phi-2"),
    target_train=FinetuneConfig(optim=OptimConfig(name="adamw", lr=2e-5, schedule="warmup_cosine",
                                                  muon_consistent_rms=0.2),
                                warmup_ratio=0.03, accum_steps=4, compute_dtype="bfloat16"),
    target_batch=32, epochs=3.0, eval_batch=64, max_new_tokens=512,
    synth=SynthesisConfig(max_new_tokens=512, batch_size=64), synth_generator="Qwen/Qwen3-0.6B-Base",
    target_seeds=(0, 1, 2), base_seeds=(0,))

EXPERIMENT = Experiment(
    name="upsample_hard",
    reproduces="seeds 000/001 LLM protocol: upsample the proxy's hard cluster, fine-tune, evaluate (issue 8)",
    description=__doc__.splitlines()[0],
    configs={"quick": UpsampleConfig(), "medium": UpsampleConfig(target_seeds=tuple(range(24))), "full": FULL},
    cost={"quick": "~5 min on 2 idle cores (2 base seeds x 2 optimizers x 8 target seeds x 6 arms; offline)",
          "medium": "~3x quick's arm phase, ~15 min on 2 idle cores",
          "full": "hours per target, optimizer and seed on one GPU/TPU (network; not measured)"},
    run=run,
    check=up.check,
    claims=up.claims,
    order=60,
)
