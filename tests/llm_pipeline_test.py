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


ARMS_RUN = tuple(ARMS)   # all six: the paper's five and upsample_hard+synth


def wilson(k, n, z=statistics.NormalDist().inv_cdf(0.975)):
    """Textbook Wilson score interval (independent of lsb_jax.llm.evaluate)."""
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, c - h), min(1.0, c + h)


def bump_digits(text):
    return "".join(str((int(c) + 1) % 10) if c.isdigit() else c for c in text)


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
    scratch = lambda s, steps: dataclasses.replace(  # noqa: E731
        s, model=dataclasses.replace(s.model, hidden_size=16, num_heads=2, num_kv_heads=0, intermediate_size=32,
                                    num_layers=1), pretrain_steps=steps)
    cfg = dataclasses.replace(
        q, offline=dataclasses.replace(q.offline, train=(("chain_sum", 40), ("simple_equations", 30)), test_size=12),
        proxy_scratch=scratch(q.proxy_scratch, 3), target_scratch=scratch(q.target_scratch, 3),
        proxy_batch=8, target_batch=8, epoch_fraction=1.0, num_checkpoints=3, eval_batch=12, max_new_tokens=4,
        tokenizer_vocab=300, arms=ARMS_RUN, synth_scratch=scratch(q.synth_scratch, 0),
        synth=dataclasses.replace(q.synth, max_new_tokens=4, q=0.0),
        max_skip_fraction=0.75)   # default chain_sum rows are often longer than max_length: a length filter here
    out = tmp_path_factory.mktemp("uh") / "run"
    try:
        run_dir, results = runner.run_experiment(exp, cfg, "quick", out=out, progress=False)
    finally:
        mp.undo()
    assert len(calls) == 1 and calls[0][0] == len(calls[0][1][0])   # one real generation pass over the hard rows
    return cfg, run_dir, results


@pytest.mark.slow
def test_pipeline_writes_every_stage(pipeline_run):
    cfg, run_dir, results = pipeline_run
    for f in ("data/train.jsonl", "data/test.jsonl", "data/pretrain/train.jsonl", "models/proxy/config.json",
              "models/target0/tokenizer.json", "proxy/trajectories.npz", "clusters.npz", "comparison.md",
              "comparison.json", "proxy_clusters.png", "accuracy_per_arm.png", "results.json"):
        assert (run_dir / f).is_file(), f
    for arm in ARMS_RUN:
        for f in ("summary.json", "counts.npz", "eval_gsm8k_like.jsonl"):
            assert (run_dir / "scratch_target" / arm / f).is_file(), (arm, f)
    train = [json.loads(line) for line in (run_dir / "data/train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (run_dir / "data/test.jsonl").read_text().splitlines()]
    assert {r["source"] for r in train} == {"rg_chain_sum", "rg_simple_equations"} and len(test) == 12
    # the length filter's skipped rows are reported: read = the file's rows, kept = the proxy's examples
    v, n_scored = results["validation"], len(np.load(run_dir / "clusters.npz")["hard_N"])
    assert v["read"] == len(train) and v["kept"] == n_scored and v["num_skipped"] == len(train) - n_scored > 0
    from lsb_jax.report import write_report
    md = write_report(run_dir / "report_check.md",
                      [{"experiment": "upsample_hard", "reproduces": "", "run_dir": run_dir,
                        "status": "complete", "results": results}], "quick").read_text()
    assert f"read {len(train)}, kept {n_scored}, skipped {len(train) - n_scored} (" in md
    assert all(r["answer"].split("####")[-1].strip() for r in test)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "complete"
    head = results["headline"]
    assert set(head) >= {f"acc_{a}" for a in ARMS_RUN} and isinstance(results["summary"], str)
    assert sorted(results["figures"]) == ["accuracy_per_arm.png", "proxy_clusters.png"]


@pytest.mark.slow
def test_claims_pair_the_arms_on_the_test_items(pipeline_run):
    """Seed 001's LLM claims among the run's arms, decided on per-item correctness: the effect is the
    paired mean difference read back from the arms' eval files (n = the test items, one base seed)."""
    from lsb_jax import claims
    from lsb_jax.llm import upsample as up
    cfg, run_dir, results = pipeline_run
    expected = [k for k, arm, versus, _ in up._ARM_CLAIMS if arm in ARMS_RUN and versus in ARMS_RUN]
    decided = {c["key"]: c for c in results["claims"]}
    assert list(decided) == expected and expected

    def correct(arm):
        lines = (run_dir / "scratch_target" / arm / "eval_gsm8k_like.jsonl").read_text().splitlines()
        return np.asarray([json.loads(line)["correct"] for line in lines], float)
    for c in decided.values():
        assert c["verdict"] != claims.NOT_MEASURED
        (row,) = c["by_base_seed"]
        assert row["base_seed"] == cfg.seed and row["n"] == 12
        assert row["effect"] == pytest.approx(float(np.mean(correct(c["arm"]) - correct(c["versus"]))))
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
    np.testing.assert_allclose(results["headline"]["hard_fraction"], hard.mean())


@pytest.mark.slow
def test_arm_epochs_hold_the_upsampling_factor(pipeline_run):
    cfg, run_dir, _ = pipeline_run
    z = np.load(run_dir / "clusters.npz")
    hard = z["hard_N"].astype(bool)

    def arm(name):
        a = np.load(run_dir / "scratch_target" / name / "counts.npz")
        counts, ids = a["counts_N"], a["example_id_SxB"]
        epoch = int(counts.sum())
        assert ids.size >= epoch                             # at least one full epoch trained
        # the first E draws of the trainer are exactly one epoch of the multiset
        np.testing.assert_array_equal(np.bincount(ids.reshape(-1)[:epoch], minlength=len(counts)), counts)
        summary = json.loads((run_dir / "scratch_target" / name / "summary.json").read_text())
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
    rand = arm("random")
    assert (rand == cfg.factor).sum() == hard.sum() and set(np.unique(rand)) <= {1, cfg.factor}


@pytest.mark.slow
def test_comparison_table_is_well_formed(pipeline_run):
    _, run_dir, results = pipeline_run
    lines = (run_dir / "comparison.md").read_text().strip().splitlines()
    assert len(lines) == 2 + len(ARMS_RUN)
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    assert all(len(c) == 4 for c in cells) and set(lines[1].replace("|", "")) == {"-"}
    assert [c[0] for c in cells[2:]] == list(ARMS_RUN)
    rows = json.loads((run_dir / "comparison.json").read_text())
    assert [r["arm"] for r in rows] == list(ARMS_RUN) and rows == results["table"]
    base = rows[0]["accuracy"]
    for r, c in zip(rows, cells[2:]):
        records = [json.loads(x) for x in
                   (run_dir / "scratch_target" / r["arm"] / "eval_gsm8k_like.jsonl").read_text().splitlines()]
        assert r["n"] == len(records) == 12
        # correctness re-derived from the records: numeric equality of prediction and gold
        def num(s):
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
    assert len(variants) > 0 and results["headline"]["synthesis"]["kept"] == len(variants)
    assert [v["source_row"] for v in variants] == list(range(len(train), len(train) + len(variants)))
