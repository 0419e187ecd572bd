"""The offline end-to-end pipeline (llm/upsample_hard.py through lsb_jax.runner) and the helpers of
lsb_jax.llm.pipeline: a from-scratch decoder vs transformers, tokenizer round trips, row alignment."""

import dataclasses
import json
import math
import statistics

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("reasoning_gym")

import jax.numpy as jnp  # noqa: E402

from lsb_jax import experiments, runner  # noqa: E402
from lsb_jax.llm import pipeline as pl  # noqa: E402
from lsb_jax.llm.arms import ARMS  # noqa: E402
from lsb_jax.llm.data import Row, tokenize_rows, PromptTemplate  # noqa: E402
from lsb_jax.models.lm import load_pretrained, load_tokenizer  # noqa: E402

TEXTS = ["Question: 12 + 30 =\nAnswer: 12 + 30 = 42.\nThe answer is 42.",
         "Question: Solve for x: 3*x = 9\nAnswer: x = 3.\nThe answer is 3."] * 20


@pytest.fixture(scope="module")
def tok():
    return pl.train_tokenizer(TEXTS, vocab_size=300)


def test_tokenizer_round_trips_and_splits_digits(tok):
    text = "Calculate 1234 - 56 = 1178.\nThe answer is 1178."
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    digits = [t for t in tok.convert_ids_to_tokens(ids) if any(c.isdigit() for c in t)]
    assert all(len(t) == 1 for t in digits)             # every digit its own token
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)


@pytest.mark.parametrize("family,kw", [("gpt_neox", {}), ("qwen3", dict(num_kv_heads=2, tie_embeddings=True)),
                                       ("llama", dict(num_kv_heads=1))])
def test_scratch_decoder_matches_transformers(tok, tmp_path, family, kw):
    spec = pl.ScratchModel(family, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, **kw)
    model = pl.init_decoder(spec.hf_config(tok), seed=3, init_std=0.5)    # large weights: differences show
    folder = pl.save_model(model, tok, tmp_path / family)
    assert load_tokenizer(folder)("12 + 30")["input_ids"] == tok("12 + 30")["input_ids"]
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids = np.array([tok(TEXTS[0])["input_ids"][:16]])
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    ours = np.asarray(load_pretrained(folder)(jnp.asarray(ids)))
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)
    embed = np.asarray(model.embed[...])
    assert abs(embed.std() - 0.5) < 0.05 and abs(embed.mean()) < 0.05     # N(0, init_std^2)


def test_align_counts_matches_by_source_row(tok):
    rows = [Row(prompt=f"{i} + {i} =", response=f"{2 * i}." + (" pad" * 40 if i == 2 else ""),
                domain=None, source_row=i, source_line=i + 1) for i in range(5)]
    template = PromptTemplate(kind="plain", prompt_format="{prompt}")
    full = tokenize_rows(rows, tok, template, max_length=200)
    short = tokenize_rows(rows, tok, template, max_length=20, on_error="skip")   # drops row 2
    assert [r.source_row for r in short.rows] == [0, 1, 3, 4]
    np.testing.assert_array_equal(pl.align_counts([2, 1, 2, 1], short, full), [2, 1, 1, 2, 1])
    np.testing.assert_array_equal(pl.align_counts([3, 1, 3, 1, 1], full, short), [3, 1, 1, 1])


def test_register_generator_equals_the_base_with_those_parameters():
    import reasoning_gym
    params = {"max_digits": 1, "max_terms": 3}
    assert pl.register_generator("test_chain_sum_1d", "chain_sum", params) == "test_chain_sum_1d"
    pl.register_generator("test_chain_sum_1d", "chain_sum", params)               # idempotent
    ours = reasoning_gym.create_dataset("test_chain_sum_1d", size=6, seed=5)
    ref = reasoning_gym.create_dataset("chain_sum", size=6, seed=5, **params)
    assert [ours[i]["question"] for i in range(6)] == [ref[i]["question"] for i in range(6)]
    assert [ours[i]["answer"] for i in range(6)] == [ref[i]["answer"] for i in range(6)]
    with pytest.raises(ValueError, match="already registered"):
        pl.register_generator("test_chain_sum_1d", "chain_sum", {"max_digits": 2})
    with pytest.raises(ValueError, match="no parameters"):
        pl.register_generator("test_bad", "chain_sum", {"digits": 2})
    with pytest.raises(ValueError, match="unknown"):
        pl.register_generator("test_bad", "no_such_generator", {})


ARMS_RUN = tuple(ARMS)   # all seven: the paper's six and upsample_hard+synth
OPTS = ("adamw", "muon")


def arm_dir(run_dir, arm, opt="adamw", seed=0):
    return run_dir / "scratch_target" / opt / f"seed{seed}" / arm


def wilson(k, n, z=statistics.NormalDist().inv_cdf(0.975)):
    """Textbook Wilson score interval (independent of lsb_jax.llm.evaluate)."""
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, c - h), min(1.0, c + h)


def bump_digits(text):
    return "".join(str((int(c) + 1) % 10) if c.isdigit() else c for c in text)


def scratch(s, steps):
    """A scratch model section at toy size (1 layer, width 16), pre-trained `steps` steps."""
    return dataclasses.replace(s, model=dataclasses.replace(s.model, hidden_size=16, num_heads=2, num_kv_heads=0,
                                                            intermediate_size=32, num_layers=1), pretrain_steps=steps)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The quick pipeline at toy scale, all arms. The scratch generator (not pre-trained)
    writes noise, so its real generations are followed by hand-made ones: per hard example a
    variant with every digit bumped, the first test question (a leak the filter must drop), and
    the source problem itself (a train duplicate)."""
    from lsb_jax.llm import synthesis as syn
    real = syn.generate_variants
    calls = []

    def generate_variants(model, tok, rows, cfg, key):
        texts = real(model, tok, rows, cfg, key)
        calls.append((len(rows), texts))
        test_q = json.loads(next(out.rglob("data/test.jsonl")).read_text().splitlines()[0])["question"]
        made = [[f" {bump_digits(r.prompt)}\nSolution: {bump_digits(r.response)}" for r in rows],
                [f" {test_q}\nSolution: The answer is 1." for _ in rows],
                [f" {r.prompt}\nSolution: {r.response}" for r in rows]]
        return texts + made

    mp = pytest.MonkeyPatch()
    mp.setattr(syn, "generate_variants", generate_variants)
    exp = experiments.get("upsample_hard")
    q = exp.configs["quick"]
    cfg = dataclasses.replace(
        q, offline=dataclasses.replace(q.offline, train=(("chain_sum", 40), ("simple_equations", 30)), test_size=12),
        proxy_scratch=scratch(q.proxy_scratch, 3), target_scratch=scratch(q.target_scratch, 3),
        proxy_batch=8, target_batch=8, epoch_fraction=1.0, num_checkpoints=3, eval_batch=12, max_new_tokens=4,
        tokenizer_vocab=300, arms=ARMS_RUN, synth_scratch=scratch(q.synth_scratch, 0), data="offline",
        optimizers=OPTS, target_seeds=(0,), base_seeds=(0,),
        synth=dataclasses.replace(q.synth, max_new_tokens=4, q=0.0),
        max_skip_fraction=0.75)   # default chain_sum rows are often longer than max_length: a length filter here
    out = tmp_path_factory.mktemp("uh") / "run"
    try:
        run_dir, results = runner.run_experiment(exp, cfg, "quick", out=out, progress=False)
    finally:
        mp.undo()
    assert len(calls) == 1 and calls[0][0] == len(calls[0][1][0])   # one real generation pass over the hard rows
    return cfg.for_base(0), run_dir / "base0", results   # one base seed: its pipeline's folder


@pytest.mark.slow
def test_pipeline_writes_every_stage(pipeline_run):
    cfg, run_dir, results = pipeline_run
    for f in ("data/train.jsonl", "data/test.jsonl", "data/pretrain/train.jsonl", "models/proxy/config.json",
              "models/target0/tokenizer.json", "proxy/trajectories.npz", "clusters.npz", "comparison.md",
              "comparison.json", "proxy_clusters.png", "accuracy_per_arm.png", "base_results.json",
              "../results.json"):
        assert (run_dir / f).is_file(), f
    for arm in ARMS_RUN:
        for opt in OPTS:
            for f in ("summary.json", "counts.npz", "eval_gsm8k_like.jsonl"):
                assert (arm_dir(run_dir, arm, opt) / f).is_file(), (arm, opt, f)
    train = [json.loads(line) for line in (run_dir / "data/train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (run_dir / "data/test.jsonl").read_text().splitlines()]
    assert {r["source"] for r in train} == {"rg_chain_sum", "rg_simple_equations"} and len(test) == 12
    # the length filter's skipped rows are reported: read = the file's rows, kept = the proxy's examples
    (v,), n_scored = results["validation"], len(np.load(run_dir / "clusters.npz")["hard_N"])
    assert v["read"] == len(train) and v["kept"] == n_scored and v["num_skipped"] == len(train) - n_scored > 0
    from lsb_jax.report import write_report
    md = write_report(run_dir / "report_check.md",
                      [{"experiment": "upsample_hard", "reproduces": "", "run_dir": run_dir.parent,
                        "status": "complete", "results": results}], "quick").read_text()
    assert f"read {len(train)}, kept {n_scored}, skipped {len(train) - n_scored} (" in md
    assert all(r["answer"].split("####")[-1].strip() for r in test)
    assert json.loads((run_dir.parent / "status.json").read_text())["status"] == "complete"
    head = results["headline"]
    base = json.loads((run_dir / "base_results.json").read_text())["headline"]
    assert all(head[f"acc_{o}_{a}"] == [base[f"acc_{o}_{a}"]] for a in ARMS_RUN for o in OPTS)
    assert isinstance(results["summary"], str) and head["base_seeds"] == [0]
    assert "planted" not in base       # no known difficulty in the offline look-alikes
    assert sorted(results["figures"]) == ["base0/accuracy_per_arm.png", "base0/proxy_clusters.png"]


def correct_items(run_dir, arm, opt="adamw", seed=0):
    lines = (arm_dir(run_dir, arm, opt, seed) / "eval_gsm8k_like.jsonl").read_text().splitlines()
    return np.asarray([json.loads(line)["correct"] for line in lines], float)


@pytest.mark.slow
def test_claims_compare_the_arms_per_target_seed(pipeline_run):
    """Seed 001's LLM claims among the run's arms, per optimizer: the replicate is a target seed's
    accuracy over the test items (in points), read back from the arms' eval files (one target seed
    here: its interval is undefined, so inconclusive)."""
    from lsb_jax import claims
    from lsb_jax.llm import upsample as up
    cfg, run_dir, results = pipeline_run
    expected = [f"{k}_{o}" for o in OPTS for k, arm, versus, _, _ in up._ARM_CLAIMS
                if arm in ARMS_RUN and versus in ARMS_RUN]
    decided = {c["key"]: c for c in results["claims"]}
    assert list(decided) == expected and len(expected) == 10
    for c in decided.values():
        (row,) = c["by_base_seed"]
        assert row["base_seed"] == 0 and row["n"] == 1 and c["verdict"] == claims.INCONCLUSIVE
        opt = c["key"].rsplit("_", 1)[1]
        assert c["quantity"] == f"accuracy_{opt}" and c["unit"] == "pts"
        want = 100 * (correct_items(run_dir, c["arm"], opt).mean() - correct_items(run_dir, c["versus"], opt).mean())
        assert row["effect"] == pytest.approx(want)
    assert "best arm" not in results["summary"]


@pytest.mark.slow
def test_hard_cluster_has_the_higher_mean_loss(pipeline_run):
    _, run_dir, results = pipeline_run
    z = np.load(run_dir / "clusters.npz")
    losses, hard, domain = z["losses_NxK"], z["hard_N"].astype(bool), z["domain_N"]
    assert losses.shape == (len(hard), 3) and np.isfinite(losses).all()
    traj = np.load(run_dir / "proxy" / "trajectories.npz")
    np.testing.assert_array_equal(np.asarray(traj["losses"]).reshape(losses.shape), losses)
    for g in np.unique(domain):        # clustered per source: within each source hard > easy
        sel = domain == g
        if hard[sel].any() and (~hard[sel]).any():
            assert losses[sel & hard].mean() > losses[sel & ~hard].mean()
    assert 0 < hard.sum() < len(hard)
    base = json.loads((run_dir / "base_results.json").read_text())["headline"]
    np.testing.assert_allclose(base["hard_fraction"], hard.mean())


@pytest.mark.slow
def test_arm_epochs_hold_the_upsampling_factor(pipeline_run):
    cfg, run_dir, _ = pipeline_run
    z = np.load(run_dir / "clusters.npz")
    hard = z["hard_N"].astype(bool)

    def arm(name):
        a = np.load(arm_dir(run_dir, name) / "counts.npz")
        counts, ids = a["counts_N"], a["example_id_SxB"]
        epoch = int(counts.sum())
        assert ids.size >= epoch                             # at least one full epoch trained
        # the first E draws of the trainer are exactly one epoch of the multiset
        np.testing.assert_array_equal(np.bincount(ids.reshape(-1)[:epoch], minlength=len(counts)), counts)
        summary = json.loads((arm_dir(run_dir, name) / "summary.json").read_text())
        assert summary["steps"] == math.ceil(epoch * cfg.epochs / cfg.target_batch) == len(ids)
        return counts

    n = len(hard)   # one tokenizer: the target's rows are the proxy's rows
    np.testing.assert_array_equal(arm("upsample_hard"), np.where(hard, cfg.factor, 1))
    kept = json.loads((run_dir / "synth" / "variants.json").read_text())
    np.testing.assert_array_equal(arm("upsample_hard+synth"),   # + each kept variant once
                                  np.concatenate([np.where(hard, cfg.factor, 1), np.ones(len(kept))]))
    np.testing.assert_array_equal(arm("upsample_easy"), np.where(hard, 1, cfg.factor))
    np.testing.assert_array_equal(arm("sam"), np.ones(n))
    np.testing.assert_array_equal(arm("baseline"), np.ones(n))
    final, domain = z["losses_NxK"][:, -1], z["domain_N"]   # final-loss cluster: a threshold per source
    up_final = arm("upsample_final_loss") == cfg.factor
    assert set(np.unique(arm("upsample_final_loss"))) == {1, cfg.factor}
    for g in np.unique(domain):
        sel = domain == g
        if up_final[sel].any() and (~up_final[sel]).any():
            assert final[sel & up_final].min() > final[sel & ~up_final].max()
    rand = arm("random")
    assert (rand == cfg.factor).sum() == hard.sum() and set(np.unique(rand)) <= {1, cfg.factor}


@pytest.mark.slow
def test_comparison_table_is_well_formed(pipeline_run):
    _, run_dir, results = pipeline_run
    sections = (run_dir / "comparison.md").read_text().strip().split("## ")[1:]
    assert [sec.splitlines()[0] for sec in sections] == list(OPTS)
    rows = json.loads((run_dir / "comparison.json").read_text())
    assert [{"base_seed": 0, **r} for r in rows] == results["table"]
    assert [r["optimizer"] for r in rows] == [o for o in OPTS for _ in ARMS_RUN]
    for opt, sec in zip(OPTS, sections):
        lines = [x for x in sec.strip().splitlines()[1:] if x.strip()]
        assert len(lines) == 2 + len(ARMS_RUN)
        cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
        assert all(len(c) == 4 for c in cells) and set(lines[1].replace("|", "")) == {"-"}
        assert cells[0][1].startswith("gsm8k_like seed0 acc %")
        assert [c[0] for c in cells[2:]] == list(ARMS_RUN)
        opt_rows = [r for r in rows if r["optimizer"] == opt]
        base = opt_rows[0]["accuracy"]
        for r, c in zip(opt_rows, cells[2:]):
            records = [json.loads(x) for x in (arm_dir(run_dir, r["arm"], opt) / "eval_gsm8k_like.jsonl")
                       .read_text().splitlines()]
            assert r["n"] == len(records) == 12

            def num(s):   # correctness re-derived from the records: numeric equality of prediction and gold
                try:
                    return float(s)
                except (TypeError, ValueError):
                    return None
            k = sum(num(x["prediction"]) is not None and num(x["prediction"]) == num(x["gold"]) for x in records)
            assert r["correct"] == k and r["accuracy"] == pytest.approx(k / r["n"])
            lo, hi = wilson(k, r["n"])
            assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
            assert c[1].startswith(f"{100 * r['accuracy']:.1f} [") and f"(n={r['n']})" in c[1]
            if r["arm"] != "baseline":
                assert r["delta"] == pytest.approx(r["accuracy"] - base)


@pytest.mark.slow
def test_synthesis_keeps_hard_variants_and_never_a_test_problem(pipeline_run):
    cfg, run_dir, results = pipeline_run
    z = np.load(run_dir / "clusters.npz")
    hard, losses = z["hard_N"].astype(bool), z["losses_NxK"]
    n_hard = int(hard.sum())
    report = json.loads((run_dir / "synth" / "report.json").read_text())
    variants = [json.loads(x) for x in (run_dir / "synth" / "variants.jsonl").read_text().splitlines()]
    train = [json.loads(x)["instruction"] for x in (run_dir / "data/train.jsonl").read_text().splitlines()]
    test = [json.loads(x)["question"] for x in (run_dir / "data/test.jsonl").read_text().splitlines()]
    assert report["generated"] == 4 * n_hard                         # one real + three hand-made per hard row
    assert report["parsed"] >= 3 * n_hard
    assert report["duplicates"]["test_exact"] >= n_hard and report["duplicates"]["train_exact"] >= n_hard
    assert report["generated"] == report["parsed"] + sum(report["unparseable"].values())
    assert report["parsed"] == report["unique"] + sum(report["duplicates"].values())
    assert report["unique"] == report["scored"] + report["too_long"] and report["kept"] == len(variants)
    norm = lambda t: " ".join(t.lower().split())  # noqa: E731
    assert not {norm(v["prompt"]) for v in variants} & {norm(t) for t in test}           # no leak
    assert not {v["prompt"] for v in variants} & set(train)
    # q = 0: the threshold is the smallest final-checkpoint loss of the hard cluster
    assert report["threshold"] == pytest.approx(float(losses[hard, -1].min()), rel=1e-6)
    assert all(v["proxy_loss"] >= report["threshold"] for v in variants)
    base = json.loads((run_dir / "base_results.json").read_text())["headline"]
    assert len(variants) > 0 and base["synthesis"]["kept"] == len(variants)
    assert [v["source_row"] for v in variants] == list(range(len(train), len(train) + len(variants)))


# ----------------------------------------------------------------------------- planted difficulty, seeds

PLANTED_ARMS = ("baseline", "upsample_hard", "upsample_final_loss")
SEEDS, BASES = (0, 1), (0, 1)


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    """The planted family at toy scale: three arms, AdamW, two target seeds at each of two base seeds."""
    from lsb_jax.llm.mathdata import PlantedMathConfig
    exp = experiments.get("upsample_hard")
    q = exp.configs["quick"]
    cfg = dataclasses.replace(
        q, planted=PlantedMathConfig(train_size=64, test_size=14), proxy_scratch=scratch(q.proxy_scratch, 20),
        target_scratch=scratch(q.target_scratch, 3), proxy_batch=8, target_batch=8, epoch_fraction=1.0,
        num_checkpoints=3, eval_batch=14, max_new_tokens=4, tokenizer_vocab=300, arms=PLANTED_ARMS,
        optimizers=("adamw",), target_seeds=SEEDS, base_seeds=BASES)
    assert cfg.data == "planted" and cfg.difficulty == ("level", ("hard",))
    run_dir, results = runner.run_experiment(exp, cfg, "quick", out=tmp_path_factory.mktemp("planted") / "run",
                                             progress=False)
    return cfg, run_dir, results


def jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def adjusted_rand(a, b):
    """Hubert-Arabie adjusted Rand index from the 2 x 2 contingency table (by hand)."""
    a, b = np.asarray(a, int), np.asarray(b, int)
    n_ij = np.array([[np.sum((a == i) & (b == j)) for j in (0, 1)] for i in (0, 1)])
    pairs = lambda x: sum(math.comb(int(v), 2) for v in np.ravel(x))  # noqa: E731
    index, rows, cols, total = pairs(n_ij), pairs(n_ij.sum(1)), pairs(n_ij.sum(0)), math.comb(len(a), 2)
    expected = rows * cols / total
    return (index - expected) / ((rows + cols) / 2 - expected)


def planted_items(run_dir, base, arm, seed):
    return np.asarray([r["correct"] for r in jsonl(run_dir / f"base{base}" / "scratch_target" / "adamw" /
                                                     f"seed{seed}" / arm / "eval_gsm8k_like.jsonl")], float)


@pytest.mark.slow
def test_planted_recovery_is_measured_against_the_known_levels(planted_run):
    """Per base seed: precision, recall and adjusted Rand index of both clusterings re-derived from
    the train file's levels and clusters.npz; the mechanism claim is the exact binomial test of the
    hard cluster's planted-hard count against the planted share. Base seeds draw other data."""
    from scipy import stats

    from lsb_jax.tracking.clustering import selection_counts
    cfg, run_dir, results = planted_run
    (claim,) = [c for c in results["claims"] if c["key"] == "hard_cluster_is_planted_hard"]
    assert (run_dir / "base0/data/train.jsonl").read_bytes() != (run_dir / "base1/data/train.jsonl").read_bytes()
    for b, row in zip(BASES, claim["by_base_seed"]):
        d = run_dir / f"base{b}"
        train, z = jsonl(d / "data/train.jsonl"), np.load(d / "clusters.npz")
        hard, rows = z["hard_N"].astype(bool), z["source_row_N"]
        planted = np.array([train[i]["level"] == "hard" for i in rows])
        assert planted.mean() == 0.5 and len(rows) == 64
        rec = json.loads((d / "base_results.json").read_text())["headline"]["planted"]
        assert rec["planted_hard_share"] == 0.5
        tr = rec["trajectory_clusters"]
        assert tr["size"] == hard.sum() and tr["precision"] == pytest.approx(planted[hard].mean())
        assert tr["recall"] == pytest.approx(hard[planted].mean())
        assert tr["adjusted_rand"] == pytest.approx(adjusted_rand(planted, hard), abs=1e-12)
        final = selection_counts(z["losses_NxK"], "final_loss", factor=2, seed=b)[1]
        assert rec["final_loss_clusters"]["precision"] == pytest.approx(planted[final].mean())
        assert rec["final_loss_clusters"]["adjusted_rand"] == pytest.approx(adjusted_rand(planted, final), abs=1e-12)
        for level in ("easy", "hard"):
            want = z["losses_NxK"][np.array([train[i]["level"] == level for i in rows])].mean(0)
            np.testing.assert_allclose(rec["mean_loss_by_level"][level], want, rtol=1e-6)
        k, n = int(planted[hard].sum()), int(hard.sum())
        ci = stats.binomtest(k, n, 0.5).proportion_ci(0.95, method="exact")
        assert row["base_seed"] == b and row["n"] == n and row["effect"] == pytest.approx(k / n - 0.5)
        assert row["ci"] == pytest.approx([ci.low - 0.5, ci.high - 0.5])
        assert results["headline"]["hard cluster precision vs planted"][b] == pytest.approx(planted[hard].mean())


@pytest.mark.slow
def test_claims_take_target_seeds_as_replicates(planted_run):
    """At each base seed the replicates are the target seeds: each one's accuracy over the same test
    items (points), paired between arms; effect and paired t interval re-derived from the eval files."""
    from scipy import stats

    from lsb_jax import claims
    cfg, run_dir, results = planted_run
    decided = {c["key"]: c for c in results["claims"]}
    assert set(decided) == {"hard_beats_baseline_adamw", "trajectory_beats_final_loss_adamw",
                            "hard_cluster_is_planted_hard"}
    for key in ("hard_beats_baseline_adamw", "trajectory_beats_final_loss_adamw"):
        c = decided[key]
        assert [r["base_seed"] for r in c["by_base_seed"]] == list(BASES)
        for r in c["by_base_seed"]:
            d = np.array([100 * (planted_items(run_dir, r["base_seed"], c["arm"], s).mean()
                                 - planted_items(run_dir, r["base_seed"], c["versus"], s).mean()) for s in SEEDS])
            assert r["n"] == len(SEEDS) and r["effect"] == pytest.approx(d.mean())
            if np.ptp(d) > 0:
                ci = stats.ttest_1samp(d, 0).confidence_interval(0.95)
                assert r["ci"] == pytest.approx([ci.low, ci.high])
        verdicts = {r["verdict"] for r in c["by_base_seed"]}
        assert c["verdict"] == (verdicts.pop() if len(verdicts) == 1 else claims.INCONCLUSIVE)


@pytest.mark.slow
def test_target_seeds_change_the_order_and_levels_split_the_accuracy(planted_run):
    cfg, run_dir, results = planted_run
    for b in BASES:
        d = run_dir / f"base{b}"
        ids = [np.load(d / "scratch_target/adamw" / f"seed{s}" / "baseline/counts.npz")["example_id_SxB"]
               for s in SEEDS]
        assert all(np.array_equal(np.sort(i.ravel()[:64]), np.arange(64)) for i in ids)    # each: one epoch
        assert not np.array_equal(ids[0], ids[1])
        test = jsonl(d / "data/test.jsonl")
        levels = np.array([r["level"] for r in test])
        md = (d / "comparison.md").read_text()
        head = json.loads((d / "base_results.json").read_text())["headline"]
        for arm in PLANTED_ARMS:
            per_seed = [planted_items(run_dir, b, arm, s) for s in SEEDS]
            assert head[f"acc_adamw_{arm}"] == pytest.approx(np.mean([c.mean() for c in per_seed]))
            assert results["headline"][f"acc_adamw_{arm}"][b] == pytest.approx(head[f"acc_adamw_{arm}"])
            by_level = [100 * np.mean([c[levels == lv].mean() for c in per_seed]) for lv in ("easy", "hard")]
            assert f"| adamw | {arm} | {100 * np.mean([c.mean() for c in per_seed]):.1f} | {by_level[0]:.1f} | " \
                   f"{by_level[1]:.1f} |" in md
        for key, file in (("test_in_train", "data/train.jsonl"), ("test_in_pretraining", "data/pretrain/train.jsonl")):
            train = {r["instruction"] for r in jsonl(d / file)}
            seen = np.array([r["question"] in train for r in test])
            assert head[key] == pytest.approx(
                {"all": seen.mean(), "easy": seen[levels == "easy"].mean(), "hard": seen[levels == "hard"].mean()})
    # no base seed trains on another's data: base 1's train set is neither base 0's train set nor its corpus
    files = [(run_dir / f"base{b}" / f).read_bytes() for b in BASES for f in ("data/train.jsonl",
                                                                             "data/pretrain/train.jsonl")]
    assert len(set(files)) == 4


def test_check_devices_refuses_batches_the_processes_cannot_split(monkeypatch):
    """With several processes each one feeds its own rows, so the mesh's (data, fsdp) axes must span
    the processes and divide every batch; else the batch would be replicated and every process would
    train on its own rows alone (the 2-process x 2-device case of batch 6 on data=4 summed 15 and 51)."""
    import jax

    from lsb_jax.config import ConfigError
    from lsb_jax.models.lm.sharding import MeshConfig

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "device_count", lambda: 4)
    pl.check_devices(MeshConfig(), ["m"], [8, 4])
    pl.check_devices(MeshConfig(data=2, fsdp=2), ["m"], [8])
    for mesh, batch, match in [(MeshConfig(), 6, "data x fsdp = 4"), (MeshConfig(data=1, tensor=4), 8, "span every"),
                               (MeshConfig(), 3, "over 2 processes")]:
        with pytest.raises(ConfigError, match=match):
            pl.check_devices(mesh, ["m"], [batch])


def test_targets_with_the_same_last_path_part_get_their_own_folders():
    """org/A and /ckpts/A would share `<target>/...` folders and result keys: the second would reuse
    the first's finished arms. A target listed twice is refused."""
    from lsb_jax.llm import upsample as U

    assert U.target_names(["org/Qwen3-0.6B-Base", "/ckpts/Qwen3-0.6B-Base/"]) == ["0-Qwen3-0.6B-Base",
                                                                                 "1-Qwen3-0.6B-Base"]
    assert U.target_names(["org/A", "org/B", "scratch"]) == ["A", "B", "scratch_target"]
    quick = experiments.discover()["upsample_hard"].configs["quick"]
    with pytest.raises(ValueError, match="each target once"):
        dataclasses.replace(quick, targets=(quick.targets[0], quick.targets[0]))


def test_target_seeds_replicate_the_data_order_and_the_adapters_init():
    quick = experiments.discover()["upsample_hard"].configs["quick"]
    a, b = (quick.target_train_for("adamw", s, False) for s in (0, 3))
    assert (a.seed, b.seed) == (0, 3) and b.lora_seed == a.lora_seed + 3
    assert quick.target_train_for("adamw", 3, True).lora_seed == b.lora_seed    # paired across the arms of a seed
