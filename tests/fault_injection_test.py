"""Fault injection: every way a run can lose or corrupt data, or fail unclearly, and its outcome.

Divergence (a finite loss that explodes, in `fit`, in the theory sweeps and in an LLM phase),
corrupt checkpoints (bit flips, truncation, deleted files and items, bad metadata: detected,
moved aside, the run resumes bit-identical from the newest intact one), run files inconsistent
with the checkpoint (deleted or edited metrics, truncated or deleted trajectories), races of
runs into one directory (one runs, the rest are refused with the holder's PID), `--force` on a
folder that is not a run, errors that must be one line (huge ints, --out a file, a typo'd model
path, a full disk), and data files (case, gzip, BOM, folders, unknown suffixes, missing local
paths, bad parquet, too many skipped rows).
"""

import contextlib
import dataclasses
import errno
import fcntl
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import lsb_cmd
from lsb_jax import cli, io, runner, train
from lsb_jax.errors import ResumeMismatch, RunFailure, UsageError
from lsb_jax.experiments import Experiment
from lsb_jax.llm import data as D
from lsb_jax.optim import Optimizer
from lsb_jax.tracking import LossTracker, TrajectoryStore
from lsb_jax.train.guard import DivergenceGuard, trajectory_divergence

# ----------------------------------------------------------------------------- a small model

W = 512          # parameters: large enough that a checkpoint's data files are mostly array bytes
N, B = 256, 16
_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, W)).astype(np.float32) / np.sqrt(W)
Y = (X @ _rng.normal(size=W)).astype(np.float32)


def loss_fn(p, batch):
    return (batch["x"] @ p - batch["y"]) ** 2


def sample(key, step):
    idx = jax.random.randint(jax.random.fold_in(key, step), (B,), 0, N)
    return {"x": jnp.asarray(X)[idx], "y": jnp.asarray(Y)[idx]}


def Adam(lr):
    return Optimizer(optax.with_extra_args_support(optax.adam(lr)))


def SGD(lr):
    return Optimizer(optax.with_extra_args_support(optax.sgd(lr)))


STEP = train.make_sampled_step(loss_fn, Adam(1e-2), sample)


def fresh_state():
    return train.init_state(lambda k: jnp.zeros(W), Adam(1e-2).tx, jax.random.PRNGKey(0))


class Interrupt(RuntimeError):
    pass


class StopAt(train.Hook):
    """Raises at `step` (after the update reaching it; before that step's checkpoint): a crash."""

    name = "stop"

    def __init__(self, step, action=None):
        super().__init__(at=(step,))
        self.action = action

    def __call__(self, state, step):
        if self.action is not None:
            self.action()
        raise Interrupt(f"interrupted at step {step}")


def flat(tree):
    return {k: np.asarray(v) for k, v in io.flatten_tree(tree).items()}


def assert_same(a, b):
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert np.array_equal(fa[k], fb[k]), f"{k} differs"


# ----------------------------------------------------------------------------- divergence


def reference_first_bad(loss_TxM, factor, reference, floor, warmup=10):
    """An independent loop over steps: the first index where a member's loss is non-finite or
    above factor x max(|reference|, floor) (reference: the largest of its losses at steps
    1 .. min(t - 1, warmup), the loss itself at step 1; or its running minimum)."""
    out = []
    for m in range(loss_TxM.shape[1]):
        earlier, lo, bad = [], np.inf, -1
        for t, x in enumerate(loss_TxM[:, m]):
            if not np.isfinite(x):
                bad = t
                break
            lo = min(lo, x)
            ref = (max(earlier) if earlier else x) if reference == "start" else lo
            if x > factor * max(abs(ref), floor):
                bad = t
                break
            if t < warmup:          # step t + 1 <= warmup
                earlier.append(x)
        out.append(bad)
    return np.asarray(out)


@pytest.mark.parametrize("reference", ["start", "min"])
def test_divergence_guard_against_a_loop_and_across_segments(reference):
    rng = np.random.default_rng(1)
    loss = np.exp(rng.normal(size=(60, 8)) * 0.3) * np.geomspace(1.0, 1e-3, 60)[:, None]   # decaying, noisy
    loss[30:, 1] *= 1e5           # explodes (relative to its minimum first)
    loss[45, 2] = np.nan
    loss[50:, 3] = np.inf
    loss[20:, 4] *= 3e3           # 3000x: above the start for reference "start" only when large enough
    loss[0, 5] *= 1e-2            # a lucky first minibatch is no start level (the warmup's largest loss is):
    loss[25:, 5] *= 1e3           # 1000x above the lucky first loss, far below the start level
    loss[1:, 6] *= 1e6            # explodes at step 2, inside the warmup
    guard = DivergenceGuard(factor=1e3, reference=reference)
    want = reference_first_bad(loss, 1e3, reference, guard.floor)
    first, reasons, _ = guard.scan(loss, DivergenceGuard.init(8))
    np.testing.assert_array_equal(first, want)
    assert (want >= 0).sum() >= 3 and want[0] == -1 and want[6] == 1
    if reference == "start":
        assert want[5] == -1 and (loss[1:, 5] > 1e3 * loss[0, 5]).any()   # a first-loss rule would have fired
    # the same verdicts when the losses arrive in segments (a resumed run continues the references)
    state, seen = DivergenceGuard.init(8), np.full(8, -1)
    for a, b in ((0, 7), (7, 33), (33, 60)):
        f, _, state = guard.scan(loss[a:b], DivergenceGuard.state_from_json(DivergenceGuard.state_to_json(state), 8),
                                 first_step=a + 1)
        seen = np.where((seen < 0) & (f >= 0), a + f, seen)
    np.testing.assert_array_equal(seen, want)
    np.testing.assert_array_equal(state["diverged_at"], np.where(want >= 0, want + 1, -1))


def test_fit_stops_on_an_exploding_loss_and_names_the_verified_checkpoint(tmp_path):
    """A too-large lr drives the loss past 1000x its start long before it overflows (here it never
    does within the run); the step is the one an independent float32 numpy replay finds by the
    guard's rule. The newest checkpoint is corrupted on disk just after it is written: the one
    named as last good is the newest that verifies."""
    lr, every = 20.0, 4
    w, losses = np.zeros(W, np.float32), []
    with np.errstate(all="ignore"):
        for t in range(200):
            b = sample(jax.random.fold_in(jax.random.PRNGKey(0), 0), t)
            x, y = np.asarray(b["x"]), np.asarray(b["y"])
            r = x @ w - y
            losses.append(float(np.mean(r ** 2)))
            w = (w - np.float32(lr) * (2 * x.T @ r / B)).astype(np.float32)
    bad = int(reference_first_bad(np.asarray(losses)[:, None], 1e3, "start", 1e-8)[0]) + 1
    last = every * ((bad - 1) // every)            # the newest checkpoint before the divergence
    assert bad > 2 * every and bad - last >= 2 and np.isfinite(losses).all()
    ckpt_dir = tmp_path / "ckpt"

    class CorruptNewest(train.Hook):               # fires after the checkpoint of step `last` is written
        name = "corrupt"

        def __call__(self, state, step):
            flip_bytes(newest_step_dir(ckpt_dir), 1)

    state = train.init_state(lambda k: jnp.zeros(W), SGD(lr).tx, jax.random.PRNGKey(0))
    with pytest.raises(train.LossExplodedError) as e:
        train.fit(train.make_sampled_step(loss_fn, SGD(lr), sample), state, 200, chunk_size=every,
                  checkpoint_every=every, checkpoint_dir=ckpt_dir, hooks=[CorruptNewest(at=(last + 1,))])
    msg = str(e.value)
    level = max(losses[:min(bad - 1, 10)])
    said = re.search(r"\(> 1000 x its start level \(largest of its first 10 losses\) (\S+)\)", msg)
    assert "loss exploded to" in msg and said, msg
    # 4 digits of a float32 that the replay may round differently in its last bit (another CPU's sum order)
    assert abs(float(said.group(1)) - level) <= 1e-3 * level, (said.group(1), level)
    assert f"at step {bad}; stopped; last good checkpoint: step {last - every} in {ckpt_dir}" in msg, (bad, msg)
    assert train.Checkpointer(ckpt_dir).latest_step() == last   # the newest exists but does not verify


def test_sweeps_count_divergent_members_instead_of_stopping():
    lrs = jnp.asarray([1e-2, 60.0])   # member 1 explodes
    ens = jax.vmap(lambda s, lr: train.make_sampled_step(loss_fn, SGD(lr), sample)(s))
    state = jax.vmap(lambda k: train.init_state(lambda kk: jnp.zeros(W), SGD(1.0).tx, k))(
        jax.vmap(jax.random.PRNGKey)(jnp.arange(2)))
    result = train.fit(ens, state, 40, step_args=(lrs,), on_divergence="continue", chunk_size=10)
    assert result.num_diverged == 1 and result.diverged_at[0] == -1 and result.diverged_at[1] > 0
    # the theory sweeps apply the same rule to recorded trajectories
    traj = np.stack([np.linspace(1.0, 0.1, 50), np.r_[np.ones(10), np.full(40, 5e3)]])
    np.testing.assert_array_equal(trajectory_divergence(traj), [False, True])


def test_a_diverging_theory_proxy_stops_before_its_losses_are_clustered(tmp_path):
    """The theory pool pipeline: a proxy at a huge lr must not hand exploded per-example losses to
    k-means (the issue's LLM failure, on the theory path)."""
    from lsb_jax import experiments
    exp = experiments.get("mlsa_data_lever")
    q = exp.configs["quick"]
    cfg = dataclasses.replace(q, model=dataclasses.replace(q.model, lr=50.0, steps=200, record_every=10),
                              pool_size=64, track_points=4, proxy_fraction=0.5)
    mod = sys.modules[exp.run.__module__]
    with pytest.raises(train.TrainingDiverged, match=r"pool proxy: mean loss diverged at step \d+"):
        mod.pool_pipeline(cfg, runner.RunContext(tmp_path))
    assert not (tmp_path / "trajectories.npz").exists()


# ----------------------------------------------------------------------------- checkpoints


def newest_step_dir(ckpt_dir: Path) -> Path:
    return max((p for p in ckpt_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def data_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def array_bytes_middle(data: bytes) -> int:
    """A byte in the middle of stored array values. orbax's OCDBT store compresses each array chunk and
    each B-tree node as one zstd frame, and a data file can also hold nodes that a restore does not read
    (a bit flipped there changes nothing). Where the frames land depends on the writer threads'
    timing, so the file's middle byte need not be array data (once, in a run of the suite, a flip
    there went unnoticed). The largest frame is array data: the arrays are far larger than the nodes."""
    starts = [m.start() for m in re.finditer(re.escape(b"\x28\xb5\x2f\xfd"), data)]
    if not starts:                                           # stored uncompressed
        return len(data) // 2
    start, end = max(zip(starts, starts[1:] + [len(data)]), key=lambda se: se[1] - se[0])
    return (start + end) // 2


def flip_bytes(step_dir: Path, n: int) -> None:
    f = data_file(step_dir)
    b = bytearray(f.read_bytes())
    mid = array_bytes_middle(bytes(b))
    for i in range(n):
        b[mid + i] ^= 0x01 if n == 1 else 0xFF
    f.write_bytes(bytes(b))


CORRUPTIONS = {
    "flip_one_bit": lambda d: flip_bytes(d, 1),
    "flip_64_bytes": lambda d: flip_bytes(d, 64),
    "truncate_data_file": lambda d: os.truncate(data_file(d), data_file(d).stat().st_size // 2),
    "delete_data_file": lambda d: data_file(d).unlink(),
    "delete_state_item": lambda d: shutil.rmtree(d / "state"),
    "delete_meta_item": lambda d: shutil.rmtree(d / "meta"),
    "garbage_state_metadata": lambda d: (d / "state" / "_METADATA").write_text("{not json"),
    "garbage_meta_json": lambda d: (d / "meta" / "metadata").write_text("{not json"),
    "edited_meta_json": lambda d: (d / "meta" / "metadata").write_text(
        (d / "meta" / "metadata").read_text().replace('"step": 32', '"step": 31')),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train.fit(STEP, fresh_state(), 48, chunk_size=8, checkpoint_every=16,
                     checkpoint_dir=tmp_path_factory.mktemp("full") / "ckpt").state


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupt_latest_checkpoint_is_moved_aside_and_the_run_resumes_bit_identical(kind, uninterrupted, tmp_path,
                                                                                       capfd):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Interrupt):
        train.fit(STEP, fresh_state(), 48, chunk_size=8, checkpoint_every=16, checkpoint_dir=ckpt, hooks=[StopAt(40)])
    assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [16, 32]
    CORRUPTIONS[kind](ckpt / "32")
    resumed = train.fit(STEP, fresh_state(), 48, chunk_size=8, checkpoint_every=16, checkpoint_dir=ckpt, resume=True)
    err = capfd.readouterr().err
    assert resumed.resumed_from == 16, err
    assert "checkpoint step 32" in err and "is corrupt" in err and "newest intact one" in err
    assert (tmp_path / "ckpt-corrupt" / "32").is_dir()        # kept for inspection, out of the way
    assert_same(resumed.state, uninterrupted)


def test_no_intact_checkpoint_is_one_clear_error(tmp_path):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Interrupt):
        train.fit(STEP, fresh_state(), 48, chunk_size=8, checkpoint_every=16, checkpoint_dir=ckpt, hooks=[StopAt(40)])
    for s in (16, 32):
        flip_bytes(ckpt / str(s), 1)
    with pytest.raises(train.CheckpointCorrupt, match=r"no intact checkpoint in .*step 32: .*step 16: "):
        train.fit(STEP, fresh_state(), 48, chunk_size=8, checkpoint_every=16, checkpoint_dir=ckpt, resume=True)
    assert isinstance(train.CheckpointCorrupt("x"), RunFailure)
    # both were moved aside: resuming again must not quietly start over from step 0
    with pytest.raises(train.CheckpointCorrupt, match=r"the corrupt ones, steps 16, 32, were moved to .*-corrupt"):
        train.fit(STEP, fresh_state(), 48, chunk_size=8, checkpoint_every=16, checkpoint_dir=ckpt, resume=True)


def test_a_checkpoint_of_other_shapes_is_a_resume_mismatch_and_nothing_is_moved(tmp_path):
    """Intact checkpoints written for other shapes (another device or member count pads a sweep
    differently) are not corrupt: one clear error, and they stay where they are."""
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Interrupt):
        train.fit(STEP, fresh_state(), 48, chunk_size=8, checkpoint_every=16, checkpoint_dir=ckpt, hooks=[StopAt(40)])
    two = jax.tree.map(lambda x: jnp.stack([x, x]), fresh_state())       # two members where one was written
    with pytest.raises(ResumeMismatch, match=r"checkpoint step 32 in .* holds a state of other shapes .*\(512,\)"):
        train.fit(STEP, two, 48, chunk_size=8, checkpoint_every=16, checkpoint_dir=ckpt, resume=True)
    assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [16, 32]
    assert not (tmp_path / "ckpt-corrupt").exists()
    assert train.fit(STEP, fresh_state(), 48, chunk_size=8, checkpoint_every=16, checkpoint_dir=ckpt,
                     resume=True).resumed_from == 32


def test_a_failed_reads_event_loop_stragglers_are_dropped_and_other_reports_are_not(monkeypatch):
    """tensorstore's reads still in flight after a failed restore report "Event loop is closed"
    through sys.unraisablehook, and orbax's read coroutines closed mid-read their errors: those are
    dropped, anything else unraisable still reaches the hook that was there before."""
    import asyncio
    import types

    from lsb_jax.train import checkpoint

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    checkpoint._drop_read_stragglers()
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed") as closed:
        loop.call_soon_threadsafe(print)
    try:
        raise RuntimeError("something else")
    except RuntimeError as e:
        other = e

    orbax_read = types.SimpleNamespace(cr_code=types.SimpleNamespace(
        co_filename=os.path.join(os.sep, "site-packages", "orbax", "checkpoint", "serialization.py")))
    for e, obj in ((closed.value, None), (other, None), (Exception("reading array index"), orbax_read),
                   (other, types.SimpleNamespace(cr_code=types.SimpleNamespace(co_filename="/app/mine.py")))):
        sys.unraisablehook(types.SimpleNamespace(exc_type=type(e), exc_value=e, exc_traceback=e.__traceback__,
                                                 err_msg=None, object=obj))
    assert seen == [other, other]


def test_checksums_detect_every_single_bit_flip_of_a_leaf():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 7)).astype(np.float32))
    base = train.checkpoint.tree_checksums({"x": x})["x"]
    words = np.asarray(x).view(np.uint32).copy()
    for i in range(words.size):
        for bit in (0, 13, 31):
            w = words.copy().reshape(-1)
            w[i] ^= np.uint32(1 << bit)
            flipped = jnp.asarray(w.view(np.float32).reshape(3, 7))
            assert train.checkpoint.tree_checksums({"x": flipped})["x"] != base
    # bf16, int8, bool and typed PRNG keys have checksums too; equal values, equal checksums
    tree = {"b": jnp.ones(5, jnp.bfloat16), "i": jnp.arange(4, dtype=jnp.int8), "m": jnp.array([True, False]),
            "k": jax.random.key(3)}
    assert train.checkpoint.tree_checksums(tree) == train.checkpoint.tree_checksums(jax.tree.map(jnp.copy, tree))


# ----------------------------------------------------------------------------- run files vs the checkpoint


def interrupted_run(run_dir: Path, *, tracker=False):
    """fit under a RunContext, crashing at step 40 (checkpoints at 16 and 32)."""
    ctx = runner.RunContext(run_dir, progress=False)
    hooks = [StopAt(40)]
    if tracker:
        store = TrajectoryStore(run_dir / "trajectories.npz", N, (16, 32, 48))
        pool = {"x": jnp.asarray(X), "y": jnp.asarray(Y)}
        hooks.insert(0, LossTracker(lambda p, pool: loss_fn(p, pool), store, args=(pool,)))
    try:
        with pytest.raises(Interrupt):
            train.fit(STEP, fresh_state(), 48, ctx=ctx, chunk_size=8, checkpoint_every=16, hooks=hooks)
    finally:
        ctx.close()


def resume_run(run_dir: Path, *, tracker=False):
    ctx = runner.RunContext(run_dir, resume=True, progress=False)
    hooks = []
    if tracker:
        store = TrajectoryStore(run_dir / "trajectories.npz", N, (16, 32, 48))
        hooks = [LossTracker(lambda p, pool: loss_fn(p, pool), store,
                             args=({"x": jnp.asarray(X), "y": jnp.asarray(Y)},))]
    try:
        return train.fit(STEP, fresh_state(), 48, ctx=ctx, chunk_size=8, checkpoint_every=16, hooks=hooks)
    finally:
        ctx.close()


def test_throughput_rows_of_a_resumed_run_are_the_uninterrupted_runs_rows(tmp_path):
    """A step reporting "tokens" with log_every > 1: the logged steps are the config's, whichever
    segments compiled (tokens_per_s, wall clock, rides on rows that are logged anyway)."""
    def step(state):
        state, metrics = STEP(state)
        return state, {**metrics, "tokens": jnp.int32(B)}

    def rows(run_dir):
        return [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                if "loss" in r]

    def go(run_dir, hooks=(), resume=False):
        ctx = runner.RunContext(run_dir, resume=resume, progress=False)
        try:
            train.fit(step, fresh_state(), 28, ctx=ctx, chunk_size=7, checkpoint_every=7, log_every=4, hooks=hooks)
        finally:
            ctx.close()

    go(tmp_path / "full")
    with pytest.raises(Interrupt):
        go(tmp_path / "run", hooks=[StopAt(14)])
    go(tmp_path / "run", resume=True)
    assert rows(tmp_path / "run") == rows(tmp_path / "full") == [4, 8, 12, 16, 20, 24, 28]


def test_a_torn_metrics_tail_is_dropped_and_rows_equal_an_uninterrupted_run(tmp_path):
    full = runner.RunContext(tmp_path / "full", progress=False)
    train.fit(STEP, fresh_state(), 48, ctx=full, chunk_size=8, checkpoint_every=16)
    full.close()
    interrupted_run(tmp_path / "run")
    with open(tmp_path / "run" / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 41, "lo')                     # a kill in the middle of a line
    resume_run(tmp_path / "run")
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()


@pytest.mark.parametrize("damage", ["delete", "truncate", "edit"])
def test_metrics_lost_or_changed_since_the_checkpoint_stop_the_resume(damage, tmp_path):
    interrupted_run(tmp_path / "run")
    path = tmp_path / "run" / "metrics.jsonl"
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        os.truncate(path, path.stat().st_size // 3)
    else:
        path.write_text(path.read_text().replace('"step": 3,', '"step": 3, "x": 1,', 1))
    with pytest.raises(ResumeMismatch, match="metrics.jsonl") as e:
        resume_run(tmp_path / "run")
    assert "--force" in str(e.value) and isinstance(e.value, RunFailure)


@pytest.mark.parametrize("damage", ["delete", "truncate", "replace"])
def test_trajectories_lost_since_the_checkpoint_stop_the_resume(damage, tmp_path):
    interrupted_run(tmp_path / "run", tracker=True)
    path = tmp_path / "run" / "trajectories.npz"
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    else:
        with np.load(path) as z:
            arrays = {k: z[k].copy() for k in z.files}
        arrays["losses"][0, 0] += 1.0
        np.savez(path, **arrays)
    with pytest.raises(ResumeMismatch, match="trajectories.npz"):
        resume_run(tmp_path / "run", tracker=True)


# ----------------------------------------------------------------------------- run directories


@dataclasses.dataclass(frozen=True)
class Cfg:
    value: float = 1.0


def _fake_run(cfg, ctx):
    ctx.metrics.write(1, {"loss": 1.0})
    ctx.save_arrays("big", x=np.ones(10))
    return {"headline": {"value": cfg.value}}


FAKE = Experiment(name="fake", reproduces="nothing", configs={"quick": Cfg(), "full": Cfg()}, run=_fake_run)


def test_force_never_deletes_a_model_folder(tmp_path):
    folder = tmp_path / "hf_model"
    folder.mkdir()
    files = {"config.json": json.dumps({"model_type": "llama", "hidden_size": 8}), "model.safetensors": "weights",
             "tokenizer.json": "{}"}
    for name, text in files.items():
        (folder / name).write_text(text)
    for force in (True, False):
        with pytest.raises(runner.RunExists, match="is not a run directory"):
            runner.run_experiment(FAKE, Cfg(), "quick", out=folder, force=force, progress=False)
    assert {p.name: p.read_text() for p in folder.iterdir()} == files       # nothing deleted, nothing added
    # a real run directory is replaced by --force
    run_dir, _ = runner.run_experiment(FAKE, Cfg(), "quick", out=tmp_path / "run", progress=False)
    (run_dir / "extra.txt").write_text("x")
    runner.run_experiment(FAKE, Cfg(), "quick", out=run_dir, force=True, progress=False)
    assert not (run_dir / "extra.txt").exists() and runner.status_of(run_dir) == "complete"


def test_a_run_caught_writing_its_marker_is_in_use_not_a_foreign_folder(tmp_path):
    """A run that holds the lock writes its marker through a temporary file beside it; a second run
    looking in at that moment is refused as "in use" (it once was told "not a run directory")."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = runner.RunLock(run_dir).acquire()
    temporary = run_dir / f".{runner.MARKER}.k3x9q1.tmp"       # the name io.atomic_path gives it
    temporary.write_text("{")
    with pytest.raises(runner.RunLocked, match=f"in use by process {os.getpid()}"):
        runner.run_experiment(FAKE, Cfg(), "quick", out=run_dir, progress=False)
    holder.release()
    # the holder was killed there: the next run clears the leftover and runs
    runner.run_experiment(FAKE, Cfg(), "quick", out=run_dir, progress=False)
    assert runner.status_of(run_dir) == "complete" and not temporary.exists()
    # but a file of someone else's beside them is not taken for a run's
    other = tmp_path / "other"
    other.mkdir()
    (other / runner.LOCK).write_text("")
    (other / f".{runner.MARKER}.k3x9q1.tmp").write_text("{")
    (other / "notes.txt").write_text("mine")
    with pytest.raises(runner.RunExists, match="is not a run directory"):
        runner.run_experiment(FAKE, Cfg(), "quick", out=other, progress=False)
    assert (other / "notes.txt").read_text() == "mine"


def test_clearing_a_run_directory_removes_its_marker_last(tmp_path, monkeypatch):
    """While --force (or a run killed before its status) clears a directory, another process looking
    in still sees the marker, so it is refused by the lock, not told the folder is someone else's."""
    run_dir, _ = runner.run_experiment(FAKE, Cfg(), "quick", out=tmp_path / "run", progress=False)
    for i in range(20):
        (run_dir / f"extra{i}.txt").write_text("x")
    removed: list[str] = []
    real_unlink, real_rmtree = Path.unlink, runner.shutil.rmtree
    monkeypatch.setattr(Path, "unlink", lambda self, *a, **k: (removed.append(self.name), real_unlink(self, *a, **k)))
    monkeypatch.setattr(runner.shutil, "rmtree",
                        lambda p, *a, **k: (removed.append(Path(p).name), real_rmtree(p, *a, **k)))
    real_iterdir = Path.iterdir
    for reverse in (False, True):        # the directory's own order is the file system's: try both ends
        monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(real_iterdir(self), reverse=reverse)))
        removed.clear()
        runner._clear(run_dir)
        assert removed[-1] == runner.MARKER and len(removed) > 20, removed
        assert [p.name for p in run_dir.iterdir()] == [runner.LOCK]
        for name in (runner.MARKER, *(f"extra{i}.txt" for i in range(20))):
            (run_dir / name).write_text("x")


def test_a_lock_caught_before_its_holder_wrote_its_pid_or_as_it_lets_go(tmp_path, monkeypatch):
    """The holder writes its PID just after it takes the lock and empties the file just before it lets
    go. A second run that comes at one of those moments names the holder, or takes the lock; it used to
    say "in use by unknown process"."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def held_empty(then, after=0.1):       # the lock held, its file empty; `then` runs `after` s later
        fd = os.open(run_dir / runner.LOCK, os.O_RDWR | os.O_CREAT)
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_EX)
        timer = threading.Timer(after, then, (fd,))
        timer.start()
        return fd, timer

    def writes_pid(fd):
        os.write(fd, b"process 4242 (lsb run toy_regression)")

    fd, timer = held_empty(writes_pid)
    with pytest.raises(runner.RunLocked, match=r"in use by process 4242 \(lsb run toy_regression\)"):
        runner.RunLock(run_dir).acquire()
    timer.join()
    os.close(fd)

    fd, timer = held_empty(lambda fd: fcntl.flock(fd, fcntl.LOCK_UN))   # it lets go
    buf = StringIO()
    with contextlib.redirect_stderr(buf):
        runner.RunLock(run_dir).acquire().release()
    assert buf.getvalue() == ""             # a clean release: nothing stale taken over
    timer.join()
    os.close(fd)

    monkeypatch.setattr(runner, "HOLDER_WAIT", 0.3)
    fd, timer = held_empty(lambda fd: None)                              # it never writes
    with pytest.raises(runner.RunLocked, match="in use by another process"):
        runner.RunLock(run_dir).acquire()
    timer.join()
    os.close(fd)


def test_the_run_lock_refuses_a_second_holder_and_takes_over_a_stale_one(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = runner.RunLock(run_dir).acquire()
    with pytest.raises(runner.RunLocked, match=f"in use by process {os.getpid()}"):
        runner.RunLock(run_dir).acquire()
    first.release()
    runner.RunLock(run_dir).acquire().release()
    # a holder killed with SIGKILL leaves its PID in the file; the OS dropped its lock
    code = ("import os, signal, sys; from lsb_jax.runner import RunLock; RunLock(sys.argv[1]).acquire(); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    stale = (run_dir / runner.LOCK).read_text()
    assert stale.startswith("process ")
    buf = StringIO()
    with contextlib.redirect_stderr(buf):
        runner.RunLock(run_dir).acquire().release()
    assert "taking over the stale lock" in buf.getvalue() and stale in buf.getvalue()


def lsb(cwd, *args, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen(lsb_cmd(*args), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


TOY = ["--set", "steps=3000", "--set", "checkpoint_every=500", "--set", "chunk_size=250", "--set", "seeds=4",
       "--set", "pool_size=256", "--set", "track_points=5", "--set", "eval_every=250", "--no-progress"]


@pytest.mark.slow
def test_simultaneous_runs_into_one_folder_one_runs_the_rest_are_refused(tmp_path):
    procs = [lsb(tmp_path, "run", "toy_regression", *TOY, "--out", "shared") for _ in range(5)]
    deadline = time.time() + 120
    while time.time() < deadline and runner.status_of(tmp_path / "shared") != "running":
        time.sleep(0.02)
    resume = lsb(tmp_path, "run", "toy_regression", *TOY, "--out", "shared", "--resume")
    outs = [p.communicate(timeout=300) for p in procs + [resume]]
    codes = [p.returncode for p in procs + [resume]]
    refused = [err for (out, err), c in zip(outs, codes) if c == 2]
    assert codes.count(0) >= 1 and sorted(set(codes)) in ([0, 2], [0]), (codes, [e[-500:] for _, e in outs])
    for err in refused:
        assert err.count("\n") == 1 and "lsb: error:" in err and "is in use by process" in err, err
    assert codes[-1] == 2 or "up to date" in outs[-1][1], outs[-1][1]    # --resume while it runs: refused
    trained = [err for (out, err), c in zip(outs, codes) if c == 0 and "up to date" not in err]
    assert len(trained) == 1
    rows = [json.loads(line) for line in (tmp_path / "shared" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 3000
    assert runner.status_of(tmp_path / "shared") == "complete"


@pytest.mark.slow
def test_kill_then_corrupt_then_resume_through_the_cli_is_bit_identical(tmp_path):
    full = lsb(tmp_path, "run", "toy_regression", *TOY, "--out", "full")
    assert full.wait(timeout=300) == 0, full.stderr.read()
    proc = lsb(tmp_path, "run", "toy_regression", *TOY, "--out", "killed")
    ckpt = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            ckpt.is_dir() and len([p for p in ckpt.iterdir() if p.name.isdigit() and (p / "checksums").exists()]) >= 2):
        time.sleep(0.005)
    assert proc.poll() is None, "finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    flip_bytes(newest_step_dir(ckpt), 1)
    resumed = lsb(tmp_path, "run", "toy_regression", *TOY, "--out", "killed", "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "taking over the stale lock" in err and "is corrupt" in err
    for name in ("final_params.npz", "trajectories.npz"):
        a, b = np.load(tmp_path / "full" / name), np.load(tmp_path / "killed" / name)
        for k in a.files:
            assert np.array_equal(a[k], b[k], equal_nan=True), f"{name}:{k}"
    assert (tmp_path / "full" / "metrics.jsonl").read_text() == (tmp_path / "killed" / "metrics.jsonl").read_text()


# ----------------------------------------------------------------------------- one-line errors


def run_cli(capsys, *args):
    rc = cli.main(list(args))
    err = capsys.readouterr().err
    return rc, err


def test_bad_cli_inputs_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err = run_cli(capsys, "run", "toy_regression", "--set", "steps=99999999999999999999999", "--no-progress")
    assert rc == 2 and err.count("\n") == 1 and "expected an int in" in err and "int32" in err
    assert not (tmp_path / "runs").exists()
    (tmp_path / "afile").write_text("x")
    rc, err = run_cli(capsys, "run", "toy_regression", "--out", "afile", "--no-progress")
    assert rc == 2 and "is a file, not a directory" in err and err.count("\n") == 1
    rc, err = run_cli(capsys, "run", "toy_regression", "--out", "gs://bucket/runs/x", "--no-progress")
    assert rc == 2 and "must be local paths" in err and not (tmp_path / "gs:").exists()
    (tmp_path / "models").mkdir()
    for path in ("./no/such/model", "models/pythia-typo"):
        rc, err = run_cli(capsys, "run", "upsample_hard", "--set", f"proxy={path}", "--out", "u", "--no-progress")
        assert rc == 2 and err.count("\n") == 1 and f"model {path}: no such folder" in err, err
    assert not (tmp_path / "u").exists()


def test_a_full_disk_names_the_file_and_marks_the_run_failed(tmp_path, monkeypatch, capsys):
    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.np, "savez", no_space)
    with pytest.raises(OSError) as e:
        runner.run_experiment(FAKE, Cfg(), "quick", out=tmp_path / "run", progress=False)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "run" / "big.npz")
    assert cli.error_line(e.value) == f"{tmp_path / 'run' / 'big.npz'}: No space left on device"
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and "big.npz" in status["error"]
    # even when status.json itself cannot be replaced (no room for a temporary file)
    monkeypatch.setattr(runner.io, "write_json", no_space)
    runner._write_status(tmp_path / "run", {"status": "failed", "error": "x"})
    assert json.loads((tmp_path / "run" / "status.json").read_text()) == {"status": "failed", "error": "x"}


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (Linux, as root; skipped elsewhere): a real ENOSPC, not a monkeypatch."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if sys.platform != "linux" or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                                 capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_checkpoint_on_a_full_disk_is_one_error_and_the_disk_freed_saves_again(small_disk, capfd):
    state = {"w": jnp.arange(64 * 1024, dtype=jnp.float32)}     # 256 KiB: does not fit
    ckpt = train.Checkpointer(small_disk / "ckpt")
    with pytest.raises(train.CheckpointWriteError) as e:
        ckpt.save(8, state, {"a": 1})
    assert str(e.value) == f"writing checkpoint step 8 to {small_disk / 'ckpt'}: No space left on device (errno 28)"
    assert "Traceback" not in capfd.readouterr().err            # orbax's per-thread error logs held back
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    ckpt = train.Checkpointer(small_disk / "ckpt")               # the half-written step is no checkpoint
    assert ckpt.latest_step() is None
    ckpt.save(8, state, {"a": 1})
    got, meta = ckpt.restore(state)
    assert np.array_equal(got["w"], state["w"]) and meta == {"a": 1}


def test_an_unwritable_run_directory_is_a_usage_error(tmp_path, monkeypatch):
    real_open = os.open

    def deny(path, *a, **k):
        if str(path).endswith(runner.LOCK):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(runner.os, "open", deny)
    with pytest.raises(runner.RunExists, match="cannot write to the run directory .*: Permission denied"):
        runner.run_experiment(FAKE, Cfg(), "quick", out=tmp_path / "ro", progress=False)


@pytest.mark.slow
def test_an_lr_explosion_in_an_llm_phase_stops_the_run_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err = run_cli(capsys, "run", "upsample_hard", "--set", "proxy_scratch.pretrain.optim.lr=1e6",
                      "--set", 'planted={"train_size": 200, "test_size": 20}', "--out", "u", "--no-progress")
    line = [x for x in err.splitlines() if x.startswith("lsb: error:")]
    assert rc == 1 and len(line) == 1, err[-2000:]
    assert "pretrain" in line[0] and ("loss exploded" in line[0] or "loss became" in line[0]) and "at step" in line[0]
    status = json.loads((tmp_path / "u" / "status.json").read_text())
    assert status["status"] == "failed" and ("LossExplodedError" in status["error"]
                                             or "NonFiniteLossError" in status["error"])
    assert (tmp_path / "u" / "base0" / "pretrain_proxy").is_dir()
    assert not (tmp_path / "u" / "base0" / "proxy").exists()    # nothing after the failed phase ran


@pytest.mark.slow
def test_a_max_length_that_drops_every_row_is_one_usage_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err = run_cli(capsys, "run", "upsample_hard", "--set", "max_length=5",
                      "--set", 'planted={"train_size": 50, "test_size": 10}', "--out", "u", "--no-progress")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("lsb: error: ") and "Traceback" not in err, err
    assert "no valid rows" in err and "too long" in err and "(max_length=5)" in err and ".jsonl" in err
    assert json.loads((tmp_path / "u" / "status.json").read_text())["status"] == "failed"


# ----------------------------------------------------------------------------- data files


ROWS = [{"instruction": f"What is {i} + 1?", "output": f"{i + 1}"} for i in range(5)]


def jsonl_bytes(rows=ROWS):
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def rows_of(path):
    rows, _ = D.read_validated(D.DatasetSpec(str(path)))
    return [(r.prompt, r.response) for r in rows]


def test_data_file_names_case_gzip_and_bom_read_like_plain_jsonl(tmp_path):
    want = [(r["instruction"], r["output"]) for r in ROWS]
    files = {
        "upper.JSONL": jsonl_bytes(),
        "mixed.JsonL.GZ": gzip.compress(jsonl_bytes()),
        "list.json.gz": gzip.compress(json.dumps(ROWS).encode()),
        "bom.jsonl": b"\xef\xbb\xbf" + jsonl_bytes(),
        "bom.json": b"\xef\xbb\xbf" + json.dumps(ROWS).encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert rows_of(tmp_path / name) == want, name


@pytest.mark.parametrize("case,expect", [
    ("folder", "is a folder"),
    ("unknown_suffix", "unknown file type"),
    ("missing_under_local_folder", "no such file"),
    ("missing_dot_path", "no such file"),
    ("existing_without_suffix", "unknown file type"),
    ("empty_parquet", "not a readable parquet file"),
    ("text_as_parquet", "not a readable parquet file"),
    ("truncated_gzip", "unreadable"),
    ("empty_jsonl", "no rows"),
    ("jsonl_named_json", "one object per line? name the file .jsonl"),
])
def test_bad_data_files_are_one_clear_error_naming_the_file(case, expect, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    path = {
        "folder": "data", "unknown_suffix": "data/train.csv", "missing_under_local_folder": "data/trian",
        "missing_dot_path": "./trian", "existing_without_suffix": "data/train", "empty_parquet": "data/e.parquet",
        "text_as_parquet": "data/t.PARQUET", "truncated_gzip": "data/t.jsonl.gz", "empty_jsonl": "data/e.jsonl",
        "jsonl_named_json": "data/rows.json",
    }[case]
    content = {"unknown_suffix": b"a,b\n", "existing_without_suffix": jsonl_bytes(), "empty_parquet": b"",
               "text_as_parquet": b"not parquet at all", "truncated_gzip": gzip.compress(jsonl_bytes() * 50)[:60],
               "empty_jsonl": b"", "jsonl_named_json": jsonl_bytes()}.get(case)
    if content is not None:
        (tmp_path / path).write_bytes(content)
    assert D.is_local(path)                     # never sent to the hub
    t0 = time.perf_counter()
    with pytest.raises(D.DataError) as e:
        D.read_validated(D.DatasetSpec(path))
    assert time.perf_counter() - t0 < 5         # no hub lookups or retries
    assert expect in str(e.value) and str(e.value).startswith(path) and "\n" not in str(e.value)
    assert isinstance(e.value, UsageError)


def test_hub_ids_stay_hub_ids():
    assert not D.is_local("openai/gsm8k") and not D.is_local("TIGER-Lab/MathInstruct")
