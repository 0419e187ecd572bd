"""lsb_jax.train.sweep: arms x seeds on a tiny linear-regression task against hand-run members.

Grouping by static signature (one compiled program per group), every (arm, seed) curve equal to
that member trained alone by the core pieces (so the stitching back into [arm, seed] order is
right), per-member data in sweep order, censored steps-to-threshold against a hand computation and
scipy's Kaplan-Meier estimator, bit-exact resume through the sweep after a crash, and 8 forced host
devices giving the single-device results.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import xla_flags
from scipy import stats

from lsb_jax import analysis
from lsb_jax.optim import OptimConfig, make_optimizer
from lsb_jax.runner import RunContext
from lsb_jax.train import Hook, init_state, make_sampled_step, seed_keys
from lsb_jax.train.arms import ArmTraining
from lsb_jax.train.loop import _cached_program
from lsb_jax.train.sweep import Arm, SweepSpec, SweepTask, run

D = 3
W_STAR = jnp.array([1.0, -2.0, 0.5])
SGD = OptimConfig(name="sgd", lr=0.02)
SPEC = SweepSpec(seeds=3, steps=40, optim=SGD, batch_size=8, eval_every=10, seed=5, chunk_size=20, log_every=10)


def init_params(key):
    return {"w": 0.1 * jax.random.normal(key, (D,))}


def loss_fn(params, batch):
    return (batch["x"] @ params["w"] - batch["y"]) ** 2


def sampler(group):
    shift = 0.0 if group.static is None else float(group.static)   # a static key changes the program

    def sample_batch(key, step, hp, w_star):
        x = hp["scale"] * jax.random.normal(key, (group.batch_size, D))
        return {"x": x, "y": x @ w_star + shift}
    return sample_batch


def evaluate(params, step, hp, w_eval, offset):
    err = jnp.sum((params["w"] - w_eval) ** 2)
    return {"err": err, "err_plus_offset": err + offset}


ARMS = [
    Arm("base", {"scale": 1.0}),
    Arm("scale2", {"scale": 2.0}),                                                  # traced lever: same program
    Arm("lr", {"scale": 1.0}, ArmTraining(dataclasses.replace(SGD, lr=0.05))),     # traced lr: same program
    Arm("b4", {"scale": 1.0}, ArmTraining(batch_size=4)),                          # own program
    Arm("shift", {"scale": 1.0}, static=0.5),                                      # own program
]


def _task(num_members):
    offset = np.arange(num_members, dtype=np.float32) * 100.0    # member m's offset: sweep (seed-major) order
    return SweepTask(init_params, loss_fn, sampler, evaluate, data=(W_STAR,), eval_data=(W_STAR,),
                     member_data=(offset,)), offset


def _alone(arm: Arm, seed: int, spec: SweepSpec = SPEC) -> np.ndarray:
    """The member (arm, seed) trained alone from the core pieces: its err at every evaluation step."""
    t = arm.training or ArmTraining()
    optim = make_optimizer(t.optim or spec.optim, spec.steps)
    b = t.batch_size or spec.batch_size
    shift = 0.0 if arm.static is None else float(arm.static)
    hp = {k: jnp.float32(v) for k, v in arm.levers.items()}

    def sample(key, step):
        x = hp["scale"] * jax.random.normal(key, (b, D))
        return {"x": x, "y": x @ W_STAR + shift}

    step = make_sampled_step(loss_fn, optim, sample)

    @jax.jit
    def trajectory(key):
        state = init_state(init_params, optim.tx, key)

        def body(s, _):
            s = step(s)[0]
            return s, jnp.sum((s.params["w"] - W_STAR) ** 2)
        _, err = jax.lax.scan(body, state, None, length=spec.steps)
        return jnp.concatenate([jnp.sum((state.params["w"] - W_STAR) ** 2)[None], err])

    err = np.asarray(trajectory(seed_keys(spec.seed, spec.seeds)[seed]))
    return err[np.arange(0, spec.steps + 1, spec.eval_every)]


@pytest.fixture(scope="module")
def swept():
    task, offset = _task(SPEC.seeds * len(ARMS))
    before = _cached_program.cache_info().misses
    res = run(task, ARMS, SPEC)
    return res, offset, _cached_program.cache_info().misses - before


def test_arms_are_grouped_by_static_signature_one_program_each(swept):
    res, _, compiled = swept
    groups = res.program_groups()
    assert [g["arms"] for g in groups] == [["base", "scale2", "lr"], ["b4"], ["shift"]]
    assert groups[0]["traced"] == ["lr"] and groups[1]["batch_size"] == 4
    assert compiled == len(groups) == 3
    np.testing.assert_array_equal(res.batch_size, [8, 8, 8, 4, 8])


def test_every_member_equals_its_run_alone_in_arm_seed_order(swept):
    res, _, _ = swept
    np.testing.assert_array_equal(res.eval_steps, np.arange(0, SPEC.steps + 1, SPEC.eval_every))
    assert res.curves["err"].shape == (len(ARMS), SPEC.seeds, len(res.eval_steps))
    for a, arm in enumerate(ARMS):
        for s in range(SPEC.seeds):
            np.testing.assert_allclose(res.curves["err"][a, s], _alone(arm, s), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{arm.name}, seed {s}")
    # common random numbers: the same seed starts from the same point in every arm
    start = res.curves["err"][:, :, 0]
    np.testing.assert_array_equal(start, np.broadcast_to(start[:1], start.shape))
    assert np.ptp(start[0]) > 0                  # ... and different seeds from different points
    w = res.final_params["w"]
    assert w.shape == (len(ARMS), SPEC.seeds, D)
    np.testing.assert_allclose(np.sum((w - np.asarray(W_STAR)) ** 2, -1), res.curves["err"][:, :, -1], rtol=1e-5)


def test_member_data_reaches_its_member(swept):
    res, offset, _ = swept
    got = res.curves["err_plus_offset"] - res.curves["err"]
    want = offset.reshape(SPEC.seeds, len(ARMS)).T            # member m = seed * A + arm
    np.testing.assert_allclose(got, np.broadcast_to(want[..., None], got.shape), atol=1e-3)


# ----------------------------------------------------------------------------- censored statistics


def _km_median(times, horizon):
    """Kaplan-Meier median from scipy: the first time the survival function drops to <= 1/2."""
    t = np.asarray(times, float)
    data = stats.CensoredData(uncensored=t[~np.isnan(t)], right=np.full(np.isnan(t).sum(), float(horizon)))
    sf = stats.ecdf(data).sf
    grid = np.unique(t[~np.isnan(t)])
    below = grid[sf.evaluate(grid) <= 0.5 + 1e-12]
    return float(below[0]) if below.size else math.nan


@pytest.mark.parametrize("times", [[100, np.nan], [100, 300, np.nan, 200], [np.nan, np.nan, 50],
                                   [10, 20, 30, 40, 50], [np.nan] * 3, [70, 70, np.nan, np.nan]])
def test_censored_summary_matches_hand_and_kaplan_meier(times):
    horizon = 400
    s = analysis.censored_summary(times, horizon)
    capped = np.where(np.isnan(times), horizon, times)
    assert s["n"] == len(times) and s["reached"] == int(np.sum(~np.isnan(times)))
    np.testing.assert_allclose(s["restricted_mean"], capped.mean())
    np.testing.assert_allclose(s["restricted_std"], np.std(capped, ddof=1))
    km = _km_median(times, horizon)
    if math.isnan(km):
        assert math.isnan(s["median"]) and s["median_censored"]
    else:
        assert s["median"] == km and not s["median_censored"]


def test_one_of_two_seeds_reaching_does_not_look_fast():
    """The bug the sweep engine removes: averaging only the seeds that reached."""
    s = analysis.censored_summary([100, np.nan], 1000)
    assert s["restricted_mean"] == 550 and s["reached"] == 1 and s["median"] == 100   # KM: S(100) = 1/2
    assert analysis.censored_summary([100, np.nan, np.nan], 1000)["median_censored"]
    with pytest.raises(ValueError, match="horizon"):
        analysis.censored_summary([2000], 1000)


def test_threshold_columns_are_censored_at_the_horizon(swept):
    res, _, _ = swept
    err = res.curves["err"]
    thr = float(np.median(err[:, :, -1]))       # some members reach it, some do not
    times = res.steps_to(err, thr)
    for a in range(len(ARMS)):
        for s in range(SPEC.seeds):
            hit = np.flatnonzero(err[a, s] <= thr)
            assert (math.isnan(times[a, s]) if hit.size == 0 else times[a, s] == res.eval_steps[hit[0]])
    cols = res.threshold_columns("err", thr, prefix="t")
    capped = np.where(np.isnan(times), res.eval_steps[-1], times)   # censored at the last evaluation
    for a, arm in enumerate(ARMS):
        c = cols[arm.name]
        np.testing.assert_allclose(c["t_rmean"], capped[a].mean())
        assert c["t_reached"] == int(np.sum(~np.isnan(times[a])))
        np.testing.assert_allclose(c["t_speedup"], capped[0].mean() / capped[a].mean())
    # above the threshold (accuracy-like metrics): the mirror image
    np.testing.assert_array_equal(res.steps_to(-err, -thr, below=False), times)


def test_base_seeds_are_replicates_equal_to_their_runs_alone():
    """seed=(5, 9): base seed 9's seeds are columns 3..5 and equal the members of a sweep of seed 9
    alone; the claims table splits them back by base seed."""
    arms, spec = ARMS[:2], dataclasses.replace(SPEC, seed=(5, 9))
    both = run(_task(spec.total_seeds * 2)[0], arms, spec)
    assert both.base_seeds == (5, 9) and both.curves["err"].shape[1] == 6
    for r, base in enumerate((5, 9)):
        alone = run(_task(SPEC.seeds * 2)[0], arms, dataclasses.replace(SPEC, seed=base))
        np.testing.assert_allclose(both.curves["err"][:, 3 * r:3 * r + 3], alone.curves["err"], rtol=1e-6, atol=1e-7)
    table = both.per_seed(both.curves["err"][:, :, -1])
    assert table["base_seeds"] == [5, 9] and np.allclose(table["arms"]["scale2"][1], both.curves["err"][1, 3:, -1])
    with pytest.raises(ValueError, match="distinct"):
        dataclasses.replace(SPEC, seed=(5, 5)).base_seeds


# ----------------------------------------------------------------------------- resume


class _Crash(Hook):
    name = "crash"

    def __init__(self, at):
        super().__init__(at=(at,))

    def __call__(self, state, step):
        raise RuntimeError("simulated crash")


def test_resume_after_a_crash_is_bit_exact(tmp_path):
    """Group 0 finishes, group 1 crashes after its step-20 checkpoint; the resumed sweep equals an
    uninterrupted one bit for bit (curves, train loss, final parameters)."""
    arms, spec = ARMS[:1] + ARMS[3:4], dataclasses.replace(SPEC, checkpoint_every=20)
    task, _ = _task(spec.seeds * len(arms))
    clean = run(task, arms, spec, RunContext(tmp_path / "clean", progress=False))
    crash = dataclasses.replace(task, hooks=lambda g: [_Crash(30)] if g.number == 1 else [])
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crash, arms, spec, RunContext(tmp_path / "run", progress=False))
    assert (tmp_path / "run" / "group1" / "checkpoints").exists()
    resumed = run(task, arms, spec, RunContext(tmp_path / "run", resume=True, progress=False))
    for k in clean.curves:
        np.testing.assert_array_equal(resumed.curves[k], clean.curves[k])
    np.testing.assert_array_equal(resumed.train_loss, clean.train_loss)
    np.testing.assert_array_equal(resumed.final_params["w"], clean.final_params["w"])


def test_bad_arms_are_refused_before_training():
    task, _ = _task(3)
    with pytest.raises(ValueError, match="unique"):
        run(task, [Arm("a", {"scale": 1.0}), Arm("a", {"scale": 2.0})], SPEC)
    with pytest.raises(ValueError, match="same lever names"):
        run(task, [Arm("a", {"scale": 1.0}), Arm("b", {"size": 2.0})], SPEC)
    with pytest.raises(ValueError, match=r"training\[1\]\.batch_size"):
        run(task, [Arm("a", {"scale": 1.0}), Arm("b", {"scale": 1.0}, ArmTraining(batch_size=0))], SPEC)


# ----------------------------------------------------------------------------- devices


_DEVICES_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    import train_sweep_test as T
    assert jax.local_device_count() == 8, jax.local_devices()
    task, _ = T._task(T.SPEC.seeds * len(T.ARMS))
    many = T.run(task, T.ARMS, T.SPEC)
    one = T.run(task, T.ARMS, T.SPEC, devices=jax.local_devices()[:1])
    out = {"devices": [g.devices for g in many.groups], "padded": [g.members.size for g in many.groups],
           "max_diff": max(float(np.max(np.abs(many.curves[k] - one.curves[k]))) for k in one.curves),
           "params_diff": float(np.max(np.abs(many.final_params["w"] - one.final_params["w"]))),
           "eval_steps_equal": bool(np.array_equal(many.eval_steps, one.eval_steps))}
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_members_sharded_over_eight_host_devices_equal_one_device():
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=8"), JAX_PLATFORMS="cpu")
    here = Path(__file__).parent
    proc = subprocess.run([sys.executable, "-c", _DEVICES_SCRIPT, str(here)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=here.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    assert out["devices"] == [8, 8, 8]
    assert out["padded"] == [16, 8, 8]          # 9, 3 and 3 members padded to a multiple of 8
    assert out["eval_steps_equal"]
    assert out["max_diff"] < 1e-5 and out["params_diff"] < 1e-6


def test_pcgrad_members_draw_their_own_projection_orders():
    """Under PCGrad each seed gets its own shuffle stream from its own key (the same in every arm of
    that seed): seeds and base seeds differ, and a base seed's replicate draws what it draws alone."""
    from lsb_jax.optim import OptimConfig, make_optimizer
    from lsb_jax.train.arms import ArmTraining, group_arms, group_members, member_arms, pcgrad_seeds

    pc = OptimConfig(name="sgd", lr=0.1, pcgrad=True, pcgrad_seed=5)
    groups = group_arms([None, ArmTraining(optim=pc)], 2, optim=OptimConfig(name="sgd", lr=0.1), batch_size=4,
                        steps=10)
    plain, pcg = groups
    both = member_arms(3, (0, 1), [{"k": 1.0}, {"k": 2.0}])           # 2 base seeds x 3 seeds x 2 arms
    alone = member_arms(3, 1, [{"k": 1.0}, {"k": 2.0}])
    assert "optim.pcgrad_seed" not in group_members(both, plain)[1].hparams
    seeds_both = np.asarray(group_members(both, pcg)[1].hparams["optim.pcgrad_seed"])
    seeds_alone = np.asarray(group_members(alone, pcg)[1].hparams["optim.pcgrad_seed"])
    np.testing.assert_array_equal(seeds_both[3:], seeds_alone)          # base seed 1's replicate = its run alone
    assert len(set(seeds_both.tolist())) == 6                            # every seed its own stream
    np.testing.assert_array_equal(seeds_both, pcgrad_seeds(both.keys[1::2], 5))

    def init_key(seed):
        state = make_optimizer(pc, 10, pcgrad_seed=seed).tx.init({"w": jnp.zeros(3)})
        return jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "key") and hasattr(x, "count"))[0].key

    keys = np.asarray(jax.vmap(init_key)(jnp.asarray(seeds_both)))
    np.testing.assert_array_equal(keys, np.stack([np.asarray(jax.random.PRNGKey(int(s))) for s in seeds_both]))


def test_arms_with_a_linear_warmup_schedule_group():
    """The static signature never rebuilds a config with blanked fields (warmup_steps 0 does not validate)."""
    from lsb_jax.optim import OptimConfig
    from lsb_jax.train.arms import ArmTraining, group_arms

    warm = OptimConfig(name="adam", lr=1e-3, schedule="linear_warmup", warmup_steps=5)
    groups = group_arms([None, ArmTraining(optim=dataclasses.replace(warm, lr=2e-3, warmup_steps=3))], 2,
                        optim=warm, batch_size=4, steps=20)
    assert len(groups) == 1 and set(groups[0].traced) >= {"lr", "warmup_steps"}


def test_specs_and_arms_that_cannot_be_measured_are_refused():
    from lsb_jax.optim import OptimConfig
    from lsb_jax.train.arms import member_arms

    with pytest.raises(ValueError, match="no evaluation"):
        SweepSpec(seeds=2, steps=5, optim=OptimConfig(name="sgd", lr=0.1), batch_size=4, eval_every=10,
                  eval_at_start=False)
    with pytest.raises(ValueError, match="seeds, steps and eval_every"):
        SweepSpec(seeds=0, steps=5, optim=OptimConfig(name="sgd", lr=0.1), batch_size=4, eval_every=1)
    with pytest.raises(ValueError, match="members' own labels"):
        member_arms(2, 0, [{"seed": 1.0}])
