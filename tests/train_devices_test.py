"""The CPU split into several devices (`train.hosts.use_cpu_cores`) and members split over them
(`train.member_vmap`, `member_mesh`, `shard_members`). Each check needs a fresh process: the CPU's
device count is fixed when JAX starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import TEST_XLA_FLAGS

from lsb_jax.errors import UsageError
from lsb_jax.train import hosts

_SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from lsb_jax import train
    from lsb_jax.data import permute
    from lsb_jax.train import hosts

    got = hosts.use_cpu_cores(4)
    assert jax.device_count() == 4, jax.devices()

    N = 101     # > 64 and not a power of 4: the permutation cycle-walks, a loop whose trip count depends on the data

    def member_step(state, shift, table):
        # a data-dependent while loop (the cycle walk), a replicated argument and a per-member one
        idx = permute(jnp.arange(8) + state["t"], jax.random.fold_in(state["key"], state["t"]), N)
        return {"key": state["key"], "t": state["t"] + 1, "acc": state["acc"] + table[idx] * shift}, idx

    M = 8
    state = {"key": jax.random.split(jax.random.PRNGKey(0), M), "t": jnp.zeros(M, jnp.int32),
             "acc": jnp.zeros((M, 8), jnp.float32)}
    shift = jnp.arange(M, dtype=jnp.float32)
    table = jnp.linspace(-1.0, 1.0, N)

    def run(step, state):
        def body(i, s):
            return step(s, shift, table)[0]
        return jax.jit(lambda s: jax.lax.fori_loop(0, 20, body, s))

    mesh = train.member_mesh()
    split = train.member_vmap(member_step, (0, 0, None), mesh)
    plain = jax.vmap(member_step, in_axes=(0, 0, None))
    placed = train.shard_members(state, mesh)
    hlo_split = run(split, placed).lower(placed).compile().as_text()
    hlo_plain = run(plain, placed).lower(placed).compile().as_text()     # the same vmap, only sharded
    a = run(split, placed)(placed)
    b = run(plain, state)(state)      # one device
    print("RESULT" + json.dumps({
        "use_cpu_cores": got, "mesh": mesh.size,
        "sharded_over": len(a["acc"].sharding.device_set),
        "collectives_split": sum(hlo_split.count(c) for c in ("all-reduce", "all-gather", "collective-permute")),
        "collectives_plain": sum(hlo_plain.count(c) for c in ("all-reduce", "all-gather", "collective-permute")),
        "diff": float(np.max(np.abs(np.asarray(a["acc"]) - np.asarray(b["acc"])))),
        "t": np.asarray(a["t"]).tolist(),
        "again": hosts.use_cpu_cores(4),
        "mesh_for": [None if (mm := train.member_mesh(members=k)) is None else mm.size for k in (6, 7, 8, 12)]}))
""")


_GRID_SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from lsb_jax.theory import dynamics, mlsa, sweeps
    from lsb_jax.train import hosts
    hosts.use_cpu_cores(4)
    m = 6                                   # padded to 8 on 4 devices
    params = sweeps.init_members(m, 4, 4, mlsa.Init("random", 0.05))
    rho = np.linspace(0.0, 0.05, m)
    spec = mlsa.spectrum(np.array([4.0, 2.0, 1.0, 0.5]))
    run = dynamics.simulator(mlsa.population_loss, num_steps=30, record_every=10, method="sam")
    split = sweeps.run_members(run, params, spec, 0.02, rho, data_axes=None)
    one = sweeps.run_members(run, params, spec, 0.02, rho, data_axes=None, devices=jax.devices()[:1])
    alone = run(jax.tree.map(lambda x: x[5], params), spec, 0.02, rho[5])     # member 5 by itself
    print("RESULT" + json.dumps({
        "shape": list(split.features.shape), "devices": len(split.features.sharding.device_set),
        "diff": float(np.max(np.abs(np.asarray(split.loss) - np.asarray(one.loss)))),
        "diff_alone": float(np.max(np.abs(np.asarray(split.loss[5]) - np.asarray(alone.loss))))}))
""")


def test_a_theory_grid_split_over_cpu_devices_equals_one_device():
    proc = subprocess.run([sys.executable, "-c", _GRID_SCRIPT], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    assert out["shape"] == [6, 4, 4] and out["devices"] == 4     # 6 members (the 2 padding ones dropped), 3 records + 0
    assert out["diff"] < 1e-6 and out["diff_alone"] < 1e-6


_RESUME_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from lsb_jax import train
    from lsb_jax.models.mlp import init_mlp, mlp_apply
    from lsb_jax.optim import OptimConfig, make_optimizer
    from lsb_jax.tasks.parity import online_points, parity
    from lsb_jax.train import hosts
    hosts.use_cpu_cores(2)
    root = sys.argv[1]
    opt = make_optimizer(OptimConfig(name="adam", lr=0.01), 60)
    members = train.member_grid(4, seed=3, wd=[0.0, 0.1])            # 8 members: 4 per device
    def member_init(key, hp):
        return train.init_state(lambda k: init_mlp(k, (12, 16, 1)), opt.tx, key)
    def member_step(state, hp):
        def batch(key, step):
            x = online_points(key, step, 8, 12)
            return {"x": x, "y": parity(x, 3)}
        decay = lambda p: hp["wd"] * jnp.sum(p["layers_0"]["kernel"] ** 2)
        loss = lambda p, b: (mlp_apply(p, b["x"], "relu")[:, 0] - b["y"]) ** 2 + decay(p)
        return train.make_sampled_step(loss, opt, batch)(state)
    mesh = train.member_mesh(members=members.size)
    step = train.ensemble_step(member_step, mesh)
    hp = train.shard_members(members.hparams, mesh)
    fresh = lambda: train.shard_members(train.ensemble_init(member_init, members), mesh)
    whole = train.fit(step, fresh(), 60, step_args=(hp,), chunk_size=7, checkpoint_every=20,
                      checkpoint_dir=root + "/a").state
    train.fit(step, fresh(), 40, step_args=(hp,), chunk_size=7, checkpoint_every=20, checkpoint_dir=root + "/b")
    resumed = train.fit(step, fresh(), 60, step_args=(hp,), chunk_size=7, checkpoint_every=20,
                        checkpoint_dir=root + "/b", resume=True)
    same = all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.state.params)))
    print("RESULT" + json.dumps({"mesh": mesh.size, "resumed_from": resumed.resumed_from, "bit_equal": same,
                                 "devices": len(jax.tree.leaves(resumed.state.params)[0].sharding.device_set)}))
""")


def test_a_split_ensemble_resumes_bit_exactly(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _RESUME_SCRIPT, str(tmp_path)], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    assert out == {"mesh": 2, "resumed_from": 40, "bit_equal": True, "devices": 2}


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    return {**env, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS, **extra}   # no device count


def test_members_split_over_cpu_devices_run_without_collectives_and_equal_one_device():
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    assert out["use_cpu_cores"] == 4 and out["mesh"] == 4 and out["sharded_over"] == 4
    assert out["again"] == 4                      # the same count again after JAX started: accepted
    # plain sharding of the vmapped loop agrees on the cycle walk's trips with collectives; the split
    # program has none (each device runs its members on its own)
    assert out["collectives_plain"] > 0
    assert out["collectives_split"] == 0
    assert out["diff"] == 0.0                     # integer-valued gathers times a shift: exact on both
    assert out["t"] == [20] * 8
    assert out["mesh_for"] == [2, None, 4, 4]     # with a member count: the most devices that divide it


@pytest.mark.parametrize("env", [{"JAX_NUM_CPU_DEVICES": "3"},
                                 {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}])
def test_an_explicit_device_count_is_left_alone(env):
    code = ("import jax; from lsb_jax.train import hosts; "
            "print('RESULT', hosts.use_cpu_cores('auto'), jax.device_count())")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(**env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("RESULT")[-1].split() == ["None", "3"]


def test_auto_is_one_device_per_usable_core():
    code = ("import jax; from lsb_jax.train import hosts; "
            "print('RESULT', hosts.use_cpu_cores('auto'), jax.device_count())")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cores = len(os.sched_getaffinity(0))
    assert proc.stdout.split("RESULT")[-1].split() == [str(cores), str(cores)]


def test_bad_counts_and_a_started_backend_get_one_line_errors():
    import jax
    jax.numpy.ones(1).block_until_ready()          # JAX has started in this process
    for bad in ("0", "-2", "many"):
        with pytest.raises(UsageError, match="need a count >= 1 or 'auto'"):
            hosts.use_cpu_cores(bad, env={})
    want = jax.device_count() + 1
    with pytest.raises(UsageError, match="set it before any JAX computation"):
        hosts.use_cpu_cores(want, env={})
    assert hosts.use_cpu_cores(None, env={}) is None


_BUFFERS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import jax, jax.numpy as jnp
    from lsb_jax.train import hosts
    kept = hosts.keep_cpu_buffers() if sys.argv[1] == "keep" else None
    x = jnp.arange(int(sys.argv[2]), dtype=jnp.float32)
    f = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, c: jnp.flip(c) * 0.5 + 1.0, x).sum())
    temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
    out = [float(f(x)) for _ in range(2)]
    faults = []
    for _ in range(7):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out.append(float(f(x)))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    faults = sorted(faults)[3]              # the median call: now and then one call faults a fresh buffer
    late = None
    try:
        hosts.keep_cpu_buffers()
    except Exception as e:
        late = f"{type(e).__name__}: {e}"
    print("RESULT", json.dumps({"kept": kept, "temp_bytes": temp, "faults_per_call": faults, "out": out,
                                "late": late}))
""")


def _buffers_run(mode, size):
    proc = subprocess.run([sys.executable, "-c", _BUFFERS_SCRIPT, mode, str(size)], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT")[-1])


def test_kept_cpu_buffers_are_reused_across_calls_without_new_pages():
    """`keep_cpu_buffers`: from the second call on, a program's temporary buffer comes back with its
    pages already there (the kernel counts the minor page faults of each call; the median of 7 calls
    counts, since now and then one call gets a fresh buffer): 128 MiB (above glibc's largest mmap
    threshold) and over 2 GiB (above any finite trim threshold mallopt can set). The results
    are those of a default process, and a call after JAX started is refused with one line."""
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the malloc part is glibc's")
    small = 1 << 24                                      # 64 MiB in, 128 MiB of temporary buffer
    kept, default = _buffers_run("keep", small), _buffers_run("default", small)
    big = _buffers_run("keep", (1 << 28) + (1 << 24))    # 1.06 GiB in, 2.1 GiB of temporary buffer
    assert kept["kept"]["cpu_async_dispatch"] is False and "glibc keeps freed blocks" in kept["kept"]["malloc"]
    assert kept["temp_bytes"] >= 64 << 20 and big["temp_bytes"] > 2 << 30     # the buffers are that large
    for run in (kept, big):               # default glibc: about one fault per page at every call
        assert run["faults_per_call"] < 0.02 * run["temp_bytes"] / 4096
    assert kept["out"] == pytest.approx(default["out"], rel=1e-6)    # same arithmetic (sums of about 1e13)
    for run in (kept, default):
        assert run["late"].startswith("UsageError: keep_cpu_buffers: JAX has already started") and \
            "\n" not in run["late"]
