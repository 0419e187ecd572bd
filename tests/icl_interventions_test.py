"""ICL optimizer arms (lsb_jax.train.arms on the ICL task, lsb_jax.sweeps.icl) and diagnostics
(seed 004 Figs. 2, 3, 8, 9, 12): arms really train with their own optimizer / batch size, the
gradient cosine equals an independent computation, and the
synthetic/icl_{grad_bias,interventions,grad_cosine,batch_scaling} experiments run end to end."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lsb_jax import experiments
from lsb_jax.models import gpt2
from lsb_jax.optim import OptimConfig
from lsb_jax.sweeps.icl import ModelConfig, SweepConfig
from lsb_jax.tasks import icl, icl_levers
from lsb_jax.tasks.icl_levers import GradCosine
from lsb_jax.train.arms import ArmTraining, group_arms, group_members, member_arms
from lsb_jax.train.sweep import SweepTask, group_program
from lsb_jax.train import ensemble_init, ensemble_step
from lsb_jax.train.state import data_key

TINY = SweepConfig(dim=3, num_points=5, model=ModelConfig(1, 2, 8), batch_size=16, steps=6, seeds=2, pool_size=32,
                   base_seeds=(0,),
                   test_size=16, eval_every=3, track_tasks=4, track_points=2, chunk_size=6, log_every=3,
                   optim=OptimConfig(name="adam", lr=1e-2))
ADAM = TINY.optim


def _groups(cfg, training, num_arms):
    return group_arms(training, num_arms, optim=cfg.optim, batch_size=cfg.batch_size, steps=cfg.steps)


def _opt(**kw):
    return ArmTraining(optim=dataclasses.replace(ADAM, **kw))


# ----------------------------------------------------------------------------- grouping


def test_group_arms_traces_numeric_fields_and_splits_static_ones():
    training = [None, _opt(grad_bias_gamma=0.3), _opt(grad_bias_gamma=1.0, lr=3e-3), _opt(pcgrad=True),
                ArmTraining(batch_size=4), _opt(freeze=(icl_levers.READOUT,)), _opt(sam_rho=0.05), _opt(sam_rho=0.1)]
    groups = _groups(TINY, training, len(training))
    by_arm = {a: g for g in groups for a in g.arms}
    # plain Adam and both gamma arms share one program: gamma (0 for the plain arm) and lr are traced
    g = by_arm[0]
    assert g.arms == (0, 1, 2) and set(g.traced) == {"grad_bias_gamma", "lr"}
    assert g.optim.grad_bias_gamma > 0                     # the stage is on for the whole group
    assert [v["grad_bias_gamma"] for v in g.values] == [0.0, 0.3, 1.0]
    assert [v["lr"] for v in g.values] == [1e-2, 1e-2, 3e-3]
    # static differences: PCGrad, batch size, freeze, SAM on -> own programs; two SAM radii share one
    assert len({id(by_arm[a]) for a in (0, 3, 4, 5, 6)}) == 5
    assert by_arm[6] is by_arm[7] and by_arm[6].traced == ("sam_rho",)
    assert by_arm[4].batch_size == 4 and by_arm[3].batch_size == TINY.batch_size
    # a single plain arm: no traced overrides at all (the existing experiments' program)
    (plain,) = _groups(TINY, None, 1)
    assert plain.traced == () and plain.optim == ADAM


def test_group_arms_errors_name_the_arm():
    with pytest.raises(ValueError, match=r"training\[1\]\.batch_size"):
        _groups(TINY, [None, ArmTraining(batch_size=0)], 2)
    with pytest.raises(ValueError, match=r"training\[0\]\.optim: .*warmup_steps"):   # > sweep.steps
        _groups(TINY, [_opt(schedule="warmup_cosine", warmup_steps=100)], 1)
    with pytest.raises(ValueError, match="2 entries for 3 arms"):
        _groups(TINY, [None, None], 3)


# ----------------------------------------------------------------------------- per-arm training


STEPS = 3
ONE = dataclasses.replace(TINY, seeds=1)


@pytest.fixture(scope="module")
def trained():
    """STEPS steps of four arms on fresh tasks (3 compiled programs: gamma 0 and 0.5 share one):
    {name: (state at init, state after STEPS, its ArmGroup)} with the member axis dropped, plus
    what a hand-made reference needs (pools, v_D, the arm's hyperparameters)."""
    names = ["gamma=0", "gamma=0.5", "frozen", "pcgrad"]
    training = [_opt(grad_bias_gamma=0.0), _opt(grad_bias_gamma=0.5), _opt(freeze=(icl_levers.READOUT,)),
                ArmTraining(optim=dataclasses.replace(ADAM, pcgrad=True), batch_size=ONE.batch_size // 4)]
    arms = icl_levers.validate_arms([{"k": 0}] * len(names), ONE.pool_size)
    members = member_arms(ONE.seeds, ONE.base_seeds, arms)
    pools, v_D = jax.jit(lambda: (icl_levers.draw_pools(ONE), icl.random_direction(jax.random.PRNGKey(2), ONE.dim)))()
    graphdef = gpt2.abstract_graphdef(ONE.model.gpt2(ONE.task))
    task = SweepTask(init_params=lambda k: gpt2.init_params(ONE.model.gpt2(ONE.task), k)[1],
                     loss_fn=icl_levers.make_loss_fn(graphdef, ONE.dim),
                     sampler=lambda g: icl_levers.make_sample_batch("subset", ONE, 7, g.batch_size), evaluate=None)
    out = {}
    for group in _groups(ONE, training, len(arms)):
        _, gm = group_members(members, group)
        init, step = group_program(task, group, ONE.steps)
        state0 = ensemble_init(init, gm)
        run = jax.jit(lambda s, hp: jax.lax.fori_loop(
            0, STEPS, lambda _, s: ensemble_step(step)(s, hp, pools, v_D)[0], s))
        state = run(state0, gm.hparams)
        for j, lab in enumerate(gm.labels):
            out[names[lab["arm"]]] = (jax.tree.map(lambda x: x[j], state0), jax.tree.map(lambda x: x[j], state), group)
    hp = {n: jnp.float32(arms[0][n]) for n in icl_levers.ARM_DEFAULTS} | {"seed": jnp.float32(0)}
    return out, pools, v_D, hp


def _reference_run(optim, batch_size, key, pools, v_D, hp, steps):
    """The member's run by hand: its own init from the member key, then `steps` plain train steps
    (no vmap, no grouping) on batches of `batch_size` drawn from the member's data key."""
    from lsb_jax.models import gpt2
    from lsb_jax.optim import make_optimizer
    from lsb_jax.train import init_state, make_train_step
    model_cfg = ONE.model.gpt2(ONE.task)
    loss_fn = icl_levers.make_loss_fn(gpt2.abstract_graphdef(model_cfg), ONE.dim)
    sample = icl_levers.make_sample_batch("subset", ONE, 7, batch_size)
    opt = make_optimizer(optim, ONE.steps)

    def one_step(_, state):
        return make_train_step(loss_fn, opt)(state, sample(data_key(state.rng), state.step, hp, pools, v_D))[0]

    @jax.jit
    def run(key):
        state = init_state(lambda k: gpt2.init_params(model_cfg, k)[1], opt.tx, key)
        return state.params, jax.lax.fori_loop(0, steps, one_step, state).params

    shapes = jax.eval_shape(lambda: sample(data_key(key), jnp.int32(0), hp, pools, v_D))
    assert shapes["tokens"].shape[0] == batch_size
    return run(key)


def _max_diff(p, q):
    """max |p - q| over the parameters except the attention key bias (qkv_bias[1]): softmax is invariant
    to it, so its gradient is exactly 0 and in float32 pure rounding noise, which differs between programs
    and CPUs (reduction order, vector width, FMA). Adam divides that noise by its own RMS, so the key bias
    moves by an arbitrary fraction of lr in each run (~1e-6 to 1e-5 apart here): not comparable."""
    def leaves(tree):
        return [x[::2] if "qkv_bias" in jax.tree_util.keystr(path) else x   # q and v biases only
                for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]]
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(leaves(p), leaves(q)))


def test_gamma_zero_arm_equals_a_plain_adam_run_and_gamma_changes_training(trained):
    out, pools, v_D, hp = trained
    (init0, end0, group), (init5, end5, group5) = out["gamma=0"], out["gamma=0.5"]
    assert group is group5 and group.traced == ("grad_bias_gamma",)       # one program, gamma traced
    jax.tree.map(np.testing.assert_array_equal, init0.params, init5.params)  # common random numbers
    plain_init, plain = _reference_run(ADAM, ONE.batch_size, init0.rng, pools, v_D, hp, STEPS)
    # the ensemble's init is compiled for compile time (train.jit_once), the reference's inside its run:
    # the same draws up to the rounding of the normal transform
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), init0.params, plain_init)
    # equal up to float reassociation: Adam turns rounding in small gradients into <~1e-6 changes of
    # parameters that move by ~lr = 1e-2 per step; budget 2e-3 lr (observed 3e-7; key bias excluded)
    assert _max_diff(end0.params, plain) < 2e-5
    assert _max_diff(end5.params, plain) > 1e-3


def test_frozen_readout_arm_keeps_the_readout_and_plain_arm_changes_it(trained):
    out = trained[0]
    (init_p, end_p, _), (init_f, end_f, _) = out["gamma=0"], out["frozen"]
    for name in ("read_out_kernel", "read_out_bias"):
        np.testing.assert_array_equal(end_f.params[name], init_f.params[name])
        assert float(jnp.max(jnp.abs(end_p.params[name] - init_p.params[name]))) > 1e-3
    # the rest of the frozen arm still trains
    assert float(jnp.max(jnp.abs(end_f.params["read_in_kernel"] - init_f.params["read_in_kernel"]))) > 1e-3


def test_pcgrad_arm_steps_on_a_quarter_batch(trained):
    """The PCGrad arm equals hand-made PCGrad + Adam steps on B/4 sequences from the member's data key,
    with the projection orders of the member's own PCGrad seed (`train.arms.pcgrad_seeds`)."""
    out, pools, v_D, hp = trained
    init, end, group = out["pcgrad"]
    assert group.batch_size == ONE.batch_size // 4 and group.optim.pcgrad
    from lsb_jax.train.arms import pcgrad_seeds
    seed = int(pcgrad_seeds(jnp.asarray(init.rng)[None], ADAM.pcgrad_seed)[0])   # the member's own orders
    _, want = _reference_run(dataclasses.replace(ADAM, pcgrad=True, pcgrad_seed=seed), ONE.batch_size // 4, init.rng,
                             pools, v_D, hp, STEPS)
    assert _max_diff(end.params, want) < 2e-5
    assert _max_diff(end.params, out["gamma=0"][1].params) > 1e-3


# ----------------------------------------------------------------------------- gradient cosine


def _flat(tree, keep=lambda name: True):
    from lsb_jax.optim import param_path
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return np.concatenate([np.asarray(x, np.float64).ravel() for p, x in leaves if keep(param_path(p))])


def test_gradient_cosine_equals_numpy_on_two_independent_batches():
    cfg = TINY
    graphdef, params = gpt2.init_params(cfg.model.gpt2(cfg.task), jax.random.PRNGKey(1))
    loss_fn = icl_levers.make_loss_fn(graphdef, cfg.dim)
    pools = icl_levers.draw_pools(cfg)
    v_D = icl.random_direction(jax.random.PRNGKey(2), cfg.dim)
    arm = icl_levers.validate_arms([{"k": 4}], cfg.pool_size)[0]
    hp = {n: jnp.float32(arm[n]) for n in icl_levers.ARM_DEFAULTS} | {"seed": jnp.float32(1)}
    sample = icl_levers.make_sample_batch("subset", cfg, 7, 8)
    rng, step, pairs = jax.random.PRNGKey(9), jnp.int32(5), 3
    got = jax.jit(icl_levers.make_grad_cosine(loss_fn, sample, GradCosine(pairs=pairs)))(
        params, rng, step, hp, pools, v_D)

    @jax.jit
    def grad(batch):   # independent: the mean of the per-example losses (loss weights are 1 for Subset)
        return jax.grad(lambda p: jnp.mean(loss_fn(p, batch)))(params)

    is_readout = lambda name: name.startswith("read_out_")  # noqa: E731
    cos, part_r, within_r, within_rest = [], [], [], []
    for k_a, k_b in np.asarray(icl_levers.diagnostic_keys(rng, step, pairs)):
        b_a, b_b = (jax.jit(sample)(k, step, hp, pools, v_D) for k in (k_a, k_b))
        assert not np.allclose(b_a["tokens"], b_b["tokens"])           # two independent batches,
        train = jax.jit(sample)(data_key(rng), step, hp, pools, v_D)   # neither of them the training batch
        assert not np.allclose(b_a["tokens"], train["tokens"]) and not np.allclose(b_b["tokens"], train["tokens"])
        g_a, g_b = grad(b_a), grad(b_b)
        a, b = _flat(g_a), _flat(g_b)
        ar, br = _flat(g_a, is_readout), _flat(g_b, is_readout)
        an, bn = _flat(g_a, lambda n: not is_readout(n)), _flat(g_b, lambda n: not is_readout(n))
        cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        part_r.append(ar @ br / np.linalg.norm(a) / np.linalg.norm(b))
        within_r.append(ar @ br / np.linalg.norm(ar) / np.linalg.norm(br))
        within_rest.append(an @ bn / np.linalg.norm(an) / np.linalg.norm(bn))
    np.testing.assert_allclose(got["grad_cos"], np.mean(cos), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(got["grad_cos_part_readout"], np.mean(part_r), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(got["grad_cos_within_readout"], np.mean(within_r), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(got["grad_cos_within_rest"], np.mean(within_rest), rtol=2e-4, atol=2e-5)
    # the per-group terms sum to the cosine
    np.testing.assert_allclose(got["grad_cos_part_readout"] + got["grad_cos_part_rest"], got["grad_cos"], atol=1e-6)


def test_gradient_cosine_of_identical_and_opposite_gradients():
    g = {"read_out_kernel": jnp.array([[1.0], [2.0]]), "blocks": {"w": jnp.array([3.0, -1.0])}}
    same = icl_levers.gradient_cosine(g, g)
    np.testing.assert_allclose(same["grad_cos"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(same["grad_cos_part_readout"], 5.0 / 15.0, rtol=1e-6)   # |g_r|^2 / |g|^2
    flip = icl_levers.gradient_cosine(g, {"read_out_kernel": -g["read_out_kernel"], "blocks": g["blocks"]})
    np.testing.assert_allclose(flip["grad_cos"], (10.0 - 5.0) / 15.0, rtol=1e-6)
    np.testing.assert_allclose(flip["grad_cos_within_readout"], -1.0, rtol=1e-6)


# ----------------------------------------------------------------------------- through run_sweep


def test_experiments_are_registered():
    found = experiments.discover()
    orders = {}
    for name in ("icl_grad_bias", "icl_interventions", "icl_grad_cosine", "icl_batch_scaling"):
        exp = found[name]
        orders[name] = exp.order
        full = exp.configs["full"].sweep
        assert (full.dim, full.num_points, full.batch_size, full.optim.lr) == (20, 41, 128, 1e-4)
        assert (full.model.num_layers, full.model.width) == (12, 256)
    assert sorted(orders.values()) == sorted(set(orders.values())) and all(45 <= o <= 49 for o in orders.values())
