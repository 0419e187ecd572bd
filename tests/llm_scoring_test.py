"""Proxy scoring (lsb_jax.llm.scoring): per-example losses vs PyTorch, resumable scoring, the
proxy trajectory run resumed after a failure mid-scoring, and the ablation arms vs scikit-learn."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import jax  # noqa: E402

from lm_fixtures import VOCAB, build  # noqa: E402
from lsb_jax.llm.finetune import FinetuneConfig, prepare  # noqa: E402
from lsb_jax.llm.scoring import (  # noqa: E402
    ProxyConfig, jit_scorer, make_score_loss, pool_batch, proxy_trajectories, score_into,
)
from lsb_jax.models.lm import load_pretrained  # noqa: E402
from lsb_jax.optim import OptimConfig  # noqa: E402
from lsb_jax.tracking import TrajectoryStore  # noqa: E402

N, T = 12, 16


def make_pool(seed: int = 0) -> dict:
    """Right-padded rows of varying length with a prompt (no loss) of varying length."""
    r = np.random.RandomState(seed)
    lengths = r.randint(4, T + 1, N)
    lengths[0] = 5   # at least one short row: its batch is trimmed
    prompt = r.randint(1, 3, N)
    pos = np.arange(T)
    return dict(tokens=r.randint(0, VOCAB, (N, T)).astype(np.int32),
                attention_mask=(pos < lengths[:, None]).astype(np.int32),
                loss_mask=((pos >= prompt[:, None]) & (pos < lengths[:, None])).astype(np.int32))


def torch_losses(hf, pool) -> np.ndarray:
    """Mean next-token CE over loss-mask tokens per row, full length, one row at a time."""
    out = []
    with torch.no_grad():
        for i in range(N):
            ids = torch.tensor(pool["tokens"][i:i + 1], dtype=torch.long)
            logits = hf.eval()(ids, attention_mask=torch.tensor(pool["attention_mask"][i:i + 1])).logits[0, :-1]
            nll = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:], reduction="none").numpy()
            mask = pool["loss_mask"][i, 1:]
            out.append((nll * mask).sum() / max(mask.sum(), 1))
    return np.asarray(out, np.float32)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("neox")
    hf = build("neox_parallel", folder)
    return folder, hf


class InjectedFailure(RuntimeError):
    pass


def failing_after(n_calls: int):
    calls = []

    def on_block(done, total):
        calls.append((done, total))
        if len(calls) == n_calls:
            raise InjectedFailure(f"after block {n_calls}")
    return on_block, calls


def test_pool_batch_trims_to_the_bucket():
    pool = make_pool()
    rows = np.array([0, 0])
    batch = pool_batch(pool, rows, bucket=4)
    assert batch["tokens"].shape == (2, 8)   # length 5 -> 8
    np.testing.assert_array_equal(batch["tokens"], pool["tokens"][rows, :8])
    assert pool_batch(pool, np.arange(N), bucket=64)["tokens"].shape == (N, T)   # never beyond T


def test_scoring_matches_pytorch_and_resumes_without_recomputing(proxy, tmp_path):
    folder, hf = proxy
    pool = make_pool()
    ref = torch_losses(hf, pool)
    cfg = FinetuneConfig()
    split, params = prepare(load_pretrained(folder), cfg)
    score = jit_scorer(make_score_loss(split, cfg))
    rows_seen = []

    def counting(*args):
        rows_seen.append(args[-1]["tokens"].shape[0])
        return score(*args)

    path = tmp_path / "traj.npz"
    store = TrajectoryStore(path, N, steps=(7,))
    on_block, calls = failing_after(1)
    kw = dict(batch_size=4, rows_per_save=4, bucket=4)
    with pytest.raises(InjectedFailure):
        score_into(store, 7, counting, (params, split.frozen), pool, on_block=on_block, **kw)
    saved = TrajectoryStore(path, N, steps=(7,))          # what a new process finds on disk
    assert saved.done.sum() == 4 and calls == [(4, N)]
    rows_seen.clear()
    missing = ~saved.done[:, 0]
    cost = score_into(saved, 7, counting, (params, split.frozen), pool, **kw)
    assert sum(rows_seen) == 8 and cost.rows == 8         # only the missing rows
    assert saved.complete
    np.testing.assert_allclose(saved.losses[:, 0], ref, atol=2e-5, rtol=1e-5)
    assert cost.tokens == int(pool["attention_mask"][missing].sum())
    assert 0 < cost.tokens <= cost.padded_tokens and cost.seconds > 0


class PoolBatches:
    """Training batches: the pool in order, B rows per step (wrapping); get/set_state for resume."""

    def __init__(self, pool, B):
        self.pool, self.B, self.step = pool, B, 0

    def __iter__(self):
        return self

    def __next__(self):
        rows = (np.arange(self.B) + self.step * self.B) % N
        self.step += 1
        return {**{k: v[rows] for k, v in self.pool.items()}, "example_id": rows.astype(np.int32)}

    def get_state(self):
        return {"step": self.step}

    def set_state(self, s):
        self.step = int(s["step"])


@pytest.mark.slow
def test_proxy_trajectories_resume_after_a_failure_mid_scoring(proxy, tmp_path):
    folder, hf = proxy
    pool = make_pool(1)
    cfg = ProxyConfig(finetune=FinetuneConfig(optim=OptimConfig(name="adamw", lr=3e-2), warmup_ratio=0.0),
                      epoch_fraction=1.0, num_checkpoints=3, include_start=True, score_batch_size=4,
                      rows_per_save=4, bucket=T)   # one scoring shape (trimming: tested above)
    assert cfg.schedule(N, 4) == (3, (0, 1, 2, 3))

    def run(name, on_block=None):
        return proxy_trajectories(load_pretrained(folder), PoolBatches(pool, 4), pool, cfg, 4,
                                  store_path=tmp_path / name / "traj.npz", checkpoint_dir=tmp_path / name / "ckpt",
                                  resume=True, chunk_size=3, on_block=on_block)

    full = run("full")
    assert full.store.losses.shape == (N, 4) and full.store.complete
    assert full.cost["score_rows"] == 4 * N and full.cost["train_tokens"] > 0
    # column 0 = the initial proxy, independently scored by PyTorch
    np.testing.assert_allclose(full.store.losses[:, 0], torch_losses(hf, pool), atol=2e-5, rtol=1e-5)
    # the last column = the final parameters scored by the plain (unbucketed, unbatched) loss
    score = jax.jit(make_score_loss(full.train.split, cfg.finetune))
    final = np.asarray(score(full.train.params, full.train.split.frozen, pool))
    np.testing.assert_allclose(full.store.losses[:, -1], final, atol=2e-5, rtol=1e-5)
    assert np.all(full.store.losses[:, -1].mean() < full.store.losses[:, 0].mean())   # the proxy learned

    # 3 blocks per column: fail after the 2nd block of column 2 (step 2; last checkpoint: step 1)
    on_block, calls = failing_after(8)
    with pytest.raises(InjectedFailure):
        run("failed", on_block)
    store = TrajectoryStore(tmp_path / "failed" / "traj.npz", N, (0, 1, 2, 3))
    assert store.done.sum(0).tolist() == [N, N, 8, 0]
    on_block, calls = failing_after(-1)
    resumed = run("failed", on_block)
    assert resumed.train.fit.resumed_from == 1
    # only the 4 missing rows of step 2 and the 12 of step 3 were scored after the resume
    assert calls == [(4, 4), (4, N), (8, N), (12, N)]
    # the counters live in the store with the rows they count: the 8 rows of step 2 scored before the
    # failure still count, so the totals and the logged per-step counts equal the uninterrupted run's
    assert resumed.cost["score_rows"] == 4 * N == full.cost["score_rows"]
    assert resumed.cost["score_tokens"] == full.cost["score_tokens"]
    logged = dict(zip(resumed.train.fit.history["score_rows_step"], resumed.train.fit.history["score_rows"]))
    assert logged == {2: N, 3: N}
    assert resumed.train.tokens == full.train.tokens    # train tokens restored with the iterator state
    np.testing.assert_allclose(resumed.store.losses, full.store.losses, atol=1e-6, rtol=1e-6)
