"""lsb_jax.tasks.facts, lsb_jax.sweeps.facts and synthetic/facts_*: documents, levers, loss and accuracy against numpy
references, one tiny end-to-end sweep, and the experiments' registration."""

import functools
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from lsb_jax import experiments
from lsb_jax.models import gpt2
from lsb_jax.optim import OptimConfig
from lsb_jax.optim.partition import param_path
from lsb_jax.models.gpt2 import abstract_graphdef
from lsb_jax.sweeps import facts as fsweep
from lsb_jax.tasks import facts
from lsb_jax.tasks.facts import validate_arms
from lsb_jax.train.arms import member_arms

TASK = facts.FactsTask(num_subjects=12, num_relations=3, answers_per_relation=5, num_noise=7, k_noise=2)


def _sweep(**kw):
    base = dict(task=TASK, model=fsweep.ModelConfig(1, 2, 16), batch_size=8, steps=10, seeds=2, base_seeds=(0,),
                eval_every=5, chunk_size=10, log_every=5, curriculum_start=3, curriculum_switch=4)
    return fsweep.SweepConfig(**{**base, **kw})


def _hp(**lever):
    arm = validate_arms([lever], TASK.num_subjects)
    return {k: v[0] for k, v in member_arms(1, 0, arm).hparams.items()}


# ----------------------------------------------------------------------------- documents


def test_vocabulary_layout_is_a_partition():
    t = TASK
    assert (t.relation_offset, t.answer_offset, t.noise_offset, t.vocab_size) == (12, 15, 30, 37)
    assert t.seq_len == 5


def test_documents_round_trip_through_phi():
    t = TASK
    phi = np.asarray(t.facts(jax.random.PRNGKey(0)))
    # phi(s, r) lies in A^r: answer block r
    lo = t.answer_offset + np.arange(t.num_relations) * t.answers_per_relation
    assert np.all((phi >= lo) & (phi < lo + t.answers_per_relation))
    subj = jax.random.randint(jax.random.PRNGKey(1), (500,), 0, t.num_subjects)
    doc = np.asarray(t.documents(jax.random.PRNGKey(2), subj, jnp.asarray(phi)))
    assert doc.shape == (500, t.seq_len) and doc.dtype == np.int32
    assert doc.min() >= 0 and doc.max() < t.vocab_size
    s, r = doc[:, 0], doc[:, 1] - t.relation_offset
    np.testing.assert_array_equal(s, np.asarray(subj))
    assert np.all((r >= 0) & (r < t.num_relations))
    np.testing.assert_array_equal(doc[:, -1], phi[s, r])            # answer recoverable from (s, r)
    noise = doc[:, 2:-1]
    assert noise.shape[1] == t.k_noise
    assert np.all((noise >= t.noise_offset) & (noise < t.vocab_size))   # never S, R or A tokens
    # relations and noise are (roughly) uniform: every value appears
    assert set(r) == set(range(t.num_relations)) and len(np.unique(noise)) == t.num_noise


def test_all_pairs_cover_every_fact_once():
    t = TASK
    phi = t.facts(jax.random.PRNGKey(3))
    doc = np.asarray(t.all_pairs(jax.random.PRNGKey(4), phi))
    assert doc.shape == (t.num_subjects * t.num_relations, t.seq_len)
    pairs = {(a, b - t.relation_offset) for a, b in doc[:, :2]}
    assert pairs == {(s, r) for s in range(t.num_subjects) for r in range(t.num_relations)}
    np.testing.assert_array_equal(doc[:, -1], np.asarray(phi)[doc[:, 0], doc[:, 1] - t.relation_offset])


def test_chance_accuracy_is_the_best_subject_blind_guess():
    phi = np.array([[15, 20], [15, 21], [16, 21], [15, 22]])
    assert TASK.chance_accuracy(phi) == pytest.approx((3 + 2) / 8)


# ----------------------------------------------------------------------------- levers


def _subjects(lever, cfg, hp, step, n=4000):
    sampler = facts.subject_sampler(lever, cfg, hp, perm_seed=cfg.data_seed)
    return np.asarray(sampler.sample(jax.random.PRNGKey(5), step, n).index)


def test_truncation_draws_only_k_subjects():
    cfg = _sweep()
    hp = _hp(k=4)
    s = _subjects("subset", cfg, hp, 7)
    assert len(np.unique(s)) == 4
    # the same four at any step, and they are the sampler's first four ranks
    order = np.asarray(facts.subject_sampler("subset", cfg, hp, cfg.data_seed).order())
    assert set(np.unique(_subjects("subset", cfg, hp, 123))) == set(order[:4]) == set(np.unique(s))
    assert len(np.unique(_subjects("subset", cfg, _hp(k=math.inf), 0))) == TASK.num_subjects


def test_zipf_frequencies_follow_the_rank_law():
    cfg = _sweep()
    alpha, n = 1.0, 20000
    sampler = facts.subject_sampler("zipf", cfg, _hp(alpha=alpha), cfg.data_seed)
    s = _subjects("zipf", cfg, _hp(alpha=alpha), 3, n)
    order = np.asarray(sampler.order())
    counts_rank = np.bincount(s, minlength=TASK.num_subjects)[order]
    p = (np.arange(TASK.num_subjects) + 1.0) ** -alpha
    p /= p.sum()
    _, pval = stats.chisquare(counts_rank, n * p)
    assert pval > 1e-3
    assert counts_rank[0] > 3 * counts_rank[-1]


def test_curriculum_switches_at_the_right_step():
    cfg = _sweep(curriculum_start=3, curriculum_switch=4)
    hp = _hp(curriculum=1)
    sampler = facts.subject_sampler("curriculum", cfg, hp, cfg.data_seed)
    for step, k in [(0, 3), (3, 3), (4, TASK.num_subjects), (50, TASK.num_subjects)]:
        assert int((np.asarray(sampler.probs(step)) > 0).sum()) == k, step
        assert len(np.unique(_subjects("curriculum", cfg, hp, step))) == k, step
    # the curriculum's first subjects stay in the full set; a curriculum = 0 arm keeps its fixed k
    fixed = facts.subject_sampler("curriculum", cfg, _hp(k=5), cfg.data_seed)
    assert int((np.asarray(fixed.probs(0)) > 0).sum()) == int((np.asarray(fixed.probs(99)) > 0).sum()) == 5


def test_sample_batch_uses_the_members_own_facts():
    cfg = _sweep()
    phi = facts.draw_facts(cfg)
    assert phi.shape == (2, TASK.num_subjects, TASK.num_relations) and not np.array_equal(phi[0], phi[1])
    hp = _hp(k=math.inf)
    hp["seed"] = jnp.float32(1)
    tok = np.asarray(facts.make_sample_batch("subset", cfg, cfg.data_seed)(jax.random.PRNGKey(0), 3, hp, phi)["tokens"])
    np.testing.assert_array_equal(tok[:, -1], np.asarray(phi[1])[tok[:, 0], tok[:, 1] - TASK.relation_offset])


# ----------------------------------------------------------------------------- loss and accuracy


@functools.lru_cache(maxsize=1)
def _tiny_model():
    """(graphdef, params x 5): a 1-layer model with non-trivial logits, initialized by one jitted call."""
    cfg = fsweep.ModelConfig(1, 2, 16).gpt2(TASK)
    params = jax.jit(lambda k: jax.tree.map(lambda x: 5.0 * x, gpt2.init_params(cfg, k)[1]))(jax.random.PRNGKey(0))
    return abstract_graphdef(cfg), params


def _np_log_softmax(x):
    return x - logsumexp(x, axis=-1, keepdims=True)


def test_loss_equals_numpy_cross_entropy():
    graphdef, params = _tiny_model()
    phi = TASK.facts(jax.random.PRNGKey(1))
    tok = TASK.documents(jax.random.PRNGKey(2), jnp.arange(6) % TASK.num_subjects, phi)
    loss_all, loss_ans, logits = jax.jit(lambda p, b: (
        facts.make_loss_fn(graphdef, "all")(p, b), facts.make_loss_fn(graphdef, "answer")(p, b),
        gpt2.apply(graphdef, p, b["tokens"][:, :-1])))(params, {"tokens": tok})
    logits = np.asarray(logits, np.float64)
    t = np.asarray(tok)
    nll = -np.take_along_axis(_np_log_softmax(logits), t[:, 1:, None], axis=-1)[..., 0]   # [B, T-1]
    assert nll.shape == (6, TASK.seq_len - 1)
    np.testing.assert_allclose(loss_all, nll.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(loss_ans, nll[:, -1], rtol=1e-5)
    with pytest.raises(ValueError, match="loss_positions"):
        facts.per_example_loss(jnp.zeros((1, 2, 3)), jnp.zeros((1, 3), jnp.int32), "bogus")


def test_accuracy_equals_numpy_argmax_and_compare():
    graphdef, params = _tiny_model()
    phi = TASK.facts(jax.random.PRNGKey(1))
    tok = TASK.all_pairs(jax.random.PRNGKey(2), phi)
    correct, aloss = facts.evaluate_pairs(graphdef, params, tok)
    logits = np.asarray(jax.jit(gpt2.apply, static_argnums=0)(graphdef, params, tok[:, :-1]), np.float64)[:, -1]
    t = np.asarray(tok)
    np.testing.assert_array_equal(np.asarray(correct), logits.argmax(-1) == t[:, -1])
    np.testing.assert_allclose(np.asarray(aloss), -_np_log_softmax(logits)[np.arange(len(t)), t[:, -1]], rtol=1e-5)
    # an oracle logit table gets every fact right
    oracle = np.full((len(t), 1, TASK.vocab_size), -1.0)
    oracle[np.arange(len(t)), 0, t[:, -1]] = 1.0
    assert bool(np.all(np.asarray(facts.greedy_correct(jnp.asarray(oracle), tok))))


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match="num_relations"):
        facts.FactsTask(num_relations=0)
    with pytest.raises(ValueError, match="thresholds"):
        _sweep(thresholds=(1.5,))
    with pytest.raises(ValueError, match="curriculum_start"):
        _sweep(curriculum_start=100)
    with pytest.raises(ValueError, match="arms\\[0\\]"):
        fsweep.run_sweep(_sweep(), None, "subset", [{"beta": 0.5}], ["a"])
    with pytest.raises(ValueError, match="lever"):
        fsweep.run_sweep(_sweep(), None, "bogus", [{}], ["a"])


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_tiny_model_memorizes_its_training_facts(tmp_path):
    from lsb_jax.runner import RunContext

    task = facts.FactsTask(num_subjects=8, num_relations=2, answers_per_relation=4, num_noise=4, k_noise=1)
    cfg = fsweep.SweepConfig(task=task, model=fsweep.ModelConfig(1, 2, 32), optim=OptimConfig(name="adam", lr=3e-3),
                            batch_size=32, steps=300, seeds=2, base_seeds=(0,), eval_every=50, chunk_size=150,
                            log_every=50, thresholds=(0.5, 0.95), curriculum_start=2)
    ctx = RunContext(tmp_path / "run", progress=False)
    res = fsweep.run_sweep(cfg, ctx, "subset", [{"k": math.inf}, {"k": 2}], ["all", "k=2"])
    json.dumps(res, allow_nan=True)
    assert res["per_arm"]["all"]["final_test_acc_mean"] >= 0.95
    assert res["per_arm"]["k=2"]["final_train_acc_mean"] >= 0.95      # its own 2 subjects' facts
    assert res["per_arm"]["k=2"]["final_test_acc_mean"] < 0.8          # cannot know the other 6
    assert np.isfinite(res["per_arm"]["all"]["steps_to_0.5_rmean"])
    assert (tmp_path / "run" / "accuracy_curves.png").exists() and ctx.figures == ["accuracy_curves.png"]
    assert any(tmp_path.rglob("curves.npz"))
    head = fsweep.headline(res, cfg)
    assert head["all/final_acc"] >= 0.95 and head["fastest_arm"] in ("all", "k=2")


# ----------------------------------------------------------------------------- experiments

NAMES = ("facts_subjects", "facts_zipf", "facts_curriculum", "facts_interventions")


@pytest.fixture(scope="module")
def registry():
    return dict(experiments.discover())


def test_experiments_registered_with_paper_full_configs(registry):
    for name in NAMES:
        exp = registry[name]
        full, quick = exp.configs["full"].sweep, exp.configs["quick"].sweep
        assert (full.model.num_layers, full.model.num_heads, full.model.width) == (6, 6, 192)
        assert (full.optim.name, full.optim.lr, full.optim.b1, full.optim.b2) == ("adam", 5e-5, 0.9, 0.95)
        assert full.batch_size == 64 and full.task.num_subjects == 100
        assert quick.steps * quick.seeds <= 20_000
        assert 60 <= exp.order <= 69
    assert registry["facts_curriculum"].configs["full"].sweep.curriculum_start == 20
    assert registry["facts_curriculum"].configs["full"].sweep.curriculum_switch == 100


def test_experiment_sweeps_validate(registry):
    with pytest.raises(ValueError, match="ks"):
        type(registry["facts_subjects"].configs["full"])(ks=(20,))
    with pytest.raises(ValueError, match="alphas"):
        type(registry["facts_zipf"].configs["full"])(alphas=(1.0,))


def test_intervention_arms_configure_the_foundation_optimizers(registry):
    exp = registry["facts_interventions"]
    full = exp.configs["full"]
    names, training = exp.run.__globals__["arms"](full)
    by = dict(zip(names, training))
    assert by["adam"] is None and not full.sweep.model.tie_embeddings
    assert full.sweep.optim.grad_bias_every == 25                       # n = 25 for facts (Sec. 3)
    assert [by[f"grad_bias gamma={g:g}"].optim.grad_bias_gamma for g in full.gammas] == list(full.gammas)
    assert by["frozen_readout"].optim.freeze == (r"^lm_head$",)
    assert by["sam"].optim.sam_rho > 0 and by["layer_lr"].optim.layer_lr
    assert by["pcgrad"].optim.pcgrad and by["pcgrad"].batch_size == full.sweep.batch_size // 4 == 16
    # the readout regex names exactly the untied model's lm_head
    untied = fsweep.ModelConfig(1, 2, 16, tie_embeddings=False).gpt2(TASK)
    params = jax.eval_shape(lambda k: gpt2.init_params(untied, k)[1], jax.random.PRNGKey(0))
    paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert [p for p in paths if re.search(r"^lm_head$", p)] == ["lm_head"]
    with pytest.raises(ValueError, match="tie_embeddings"):
        type(full)(sweep=fsweep.FULL)
