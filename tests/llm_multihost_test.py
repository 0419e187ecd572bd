"""Many devices and many hosts from the same `lsb run` command (issue 18, docs/tpu.md): a sharded
(2, 2, 2) run equals the single-device run, and two processes (coordinator on 127.0.0.1, CPU
collectives over gloo, two forced host devices each) give the losses and the exported model of one
process with the same four devices and mesh."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import xla_flags  # noqa: E402
from llm_user_cli_test import as_fields, make_checkpoint, problems, write_jsonl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    root = tmp_path_factory.mktemp("mh")
    train, test = problems(96, 0), problems(8, 1)
    make_checkpoint(root / "llama", "llama", [q + " " + a for q, a in train], chat=False, pad=False, seed=0)
    return {"root": root, "train": write_jsonl(root / "train.jsonl", as_fields(train)),
            "test": write_jsonl(root / "test.jsonl", as_fields(test))}


def args(user, out, *sets):
    base = ["data=files", f"model={user['root'] / 'llama'}", "template=plain", "max_length=64", "max_new_tokens=4",
            "batch_size=8", "epochs=1", "train.lora_rank=4", "train.lora_targets=all_linear"]
    for part in ("train", "test"):
        base += [f"{part}_data.path={user[part]}", f"{part}_data.prompt_field=question",
                 f"{part}_data.response_field=answer"]
    return [sys.executable, "-m", "lsb_jax.cli", "run", "finetune", "--no-progress", "--out", str(out),
            *[x for s in base + list(sets) for x in ("--set", s)]]


def env(devices: int, xla_default: bool = False, **extra) -> dict:
    """A run's environment with `devices` forced CPU devices, compiled at the tests' XLA level
    (conftest), or at XLA's default level where it is compared with docs/tpu.md's command."""
    count = f"--xla_force_host_platform_device_count={devices}"
    out = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": count if xla_default else xla_flags(count), **extra}
    out["PYTHONPATH"] = os.pathsep.join([ROOT, out.get("PYTHONPATH", "")])
    for k in ("LSB_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        if k not in extra:
            out.pop(k, None)
    return out


def run(cmd, environ, timeout=600):
    res = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def step_losses(metrics_file) -> np.ndarray:
    rows = [json.loads(x) for x in metrics_file.read_text().splitlines()]
    return np.array([r["loss"] for r in rows if "loss" in r])


def losses(folder) -> np.ndarray:
    return step_losses(folder / "train" / "metrics.jsonl")


def weights(folder) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    return load_file(folder / "model" / "model.safetensors")


def free_port() -> int:
    """A free port for a coordinator that binds it seconds later, once its process has started.

    Taken below the kernel's ephemeral range, from which `bind(0)` and outgoing connections draw
    their ports: a socket of the other pytest worker (a Jupyter kernel, gloo, another coordinator)
    cannot be given it meanwhile. Each worker draws from its own block of that range."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    block = range(20000 + 400 * worker, 20400 + 400 * worker)
    candidates = random.Random().sample(block, len(block)) if block.stop <= ephemeral_low else []
    for port in [*candidates, 0]:        # 0: the kernel's choice, when no port of the block is free
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def doc_block() -> str:
    """The two-process command of docs/tpu.md, as written there."""
    text = open(os.path.join(ROOT, "docs", "tpu.md")).read()
    block = re.search(r"<!-- two-process-cpu -->\s*```bash\n(.*?)```\s*<!-- /two-process-cpu -->", text, re.S)
    assert block, "docs/tpu.md lost its two-process block"
    return block.group(1)


def run_doc_block(out, model, train, test, **extra):
    """docs/tpu.md's two-process command, run as written (one CPU device per process) with the
    environment it reads; `extra` adds variables. Returns the finished process."""
    environ = {**env(1, **extra), "OUT": str(out), "MODEL": str(model), "TRAIN": str(train), "TEST": str(test),
               "PORT": str(free_port()), "PATH": os.pathsep.join([os.path.dirname(sys.executable),
                                                                   os.environ.get("PATH", "")])}
    environ.pop("XLA_FLAGS")
    return run(["bash", "-c", "set -e\n" + doc_block()], environ)


@pytest.mark.slow
def test_two_processes_equal_one_process_and_sharding_equals_one_device(user, tmp_path):
    """docs/tpu.md's two-process command, run as written; the same run in one process with four
    devices; the single-device and the (2, 2, 2) runs."""
    root = tmp_path
    run(args(user, root / "one_device"), env(1))
    run(args(user, root / "sharded", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"), env(8))
    run(args(user, root / "one_process", "mesh.fsdp=2"), env(4, xla_default=True))  # as the docs' command compiles
    t0 = time.perf_counter()
    run_doc_block(root / "two_processes", user["root"] / "llama", user["train"], user["test"])
    print(f"two processes: {time.perf_counter() - t0:.1f} s")
    main, other = root / "two_processes", root / "two_processes.process-1"
    # process 0 owns the run folder and the one orbax checkpoint; process 1 runs beside it
    assert (main / "train" / "checkpoints").is_dir() and not (other / "train" / "checkpoints").exists()
    assert json.loads((main / "status.json").read_text())["status"] == "complete"

    one, two = losses(root / "one_process"), losses(main)
    print("two processes vs one: max |dloss|", np.abs(one - two).max(),
          "max |dweight|", max(float(np.abs(a - b).max()) for a, b in zip(weights(root / "one_process").values(),
                                                                         weights(main).values())))
    np.testing.assert_allclose(two, one, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(losses(other), two)          # both processes log the same global losses
    headline = lambda folder: json.loads((folder / "results.json").read_text())["headline"]  # noqa: E731
    assert headline(main)["train_tokens"] == headline(other)["train_tokens"] == \
        headline(root / "one_process")["train_tokens"]          # every process's rows counted, not its own
    for k, w in weights(root / "one_process").items():
        np.testing.assert_allclose(weights(main)[k], w, atol=1e-6, rtol=0, err_msg=k)
        np.testing.assert_array_equal(weights(other)[k], weights(main)[k])   # the same model exported twice

    single, sharded = losses(root / "one_device"), losses(root / "sharded")
    print("(2,2,2) vs one device: max |dloss|", np.abs(single - sharded).max())
    np.testing.assert_allclose(sharded, single, atol=1e-5, rtol=0)
    # AdamW divides each gradient entry by its own RMS: a reduction-order difference d in an entry g moves
    # the parameter by ~lr d / |g| (see llm_finetune_test's sharded test): a budget of 2e-3 lr
    for k, w in weights(root / "one_device").items():
        np.testing.assert_allclose(weights(root / "sharded")[k], w, atol=2e-3 * 1e-3, rtol=0, err_msg=k)


@pytest.mark.slow
def test_upsample_hard_two_processes_equal_one_process(user, tmp_path):
    """The whole protocol (proxy trajectories, clusters, arms) in two processes equals one process
    with the same four devices and mesh."""
    user_qwen = user["root"] / "qwen"
    if not user_qwen.exists():
        make_checkpoint(user_qwen, "qwen3", [json.loads(x)["question"] for x in open(user["train"])],
                        chat=False, pad=True, seed=1)
    sets = ["data=files", f"proxy={user_qwen}", f"targets={user['root'] / 'llama'}", "template=plain",
            "max_length=64", "max_new_tokens=4", "mesh.fsdp=2", "target_train.lora_rank=4", "proxy_batch=8",
            "target_batch=8", 'arms=["baseline","upsample_hard"]', "optimizers=adamw", "target_seeds=0",
            "base_seeds=0", "num_checkpoints=3"]
    for part in ("train", "test"):
        sets += [f"{part}_data.path={user[part]}", f"{part}_data.prompt_field=question",
                 f"{part}_data.response_field=answer"]

    def cmd(out):
        return [sys.executable, "-m", "lsb_jax.cli", "run", "upsample_hard", "--no-progress", "--out", str(out),
                *[x for s in sets for x in ("--set", s)]]

    run(cmd(tmp_path / "one"), env(4))
    port = free_port()
    procs = [subprocess.Popen(cmd(tmp_path / "two"), cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                                              JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(err[-3000:] for _, err in outs)
    for folder in (tmp_path / "two", tmp_path / "two.process-1"):
        one, two = np.load(tmp_path / "one" / "base0" / "clusters.npz"), np.load(folder / "base0" / "clusters.npz")
        print("proxy trajectories, two processes vs one: max |d|", np.abs(one["losses_NxK"] - two["losses_NxK"]).max())
        np.testing.assert_allclose(two["losses_NxK"], one["losses_NxK"], atol=1e-5, rtol=0)
        np.testing.assert_array_equal(two["hard_N"], one["hard_N"])
        arm = "base0/llama/adamw/seed0/upsample_hard"
        np.testing.assert_array_equal(np.load(folder / arm / "counts.npz")["example_id_SxB"],
                                      np.load(tmp_path / "one" / arm / "counts.npz")["example_id_SxB"])
        np.testing.assert_allclose(step_losses(folder / arm / "metrics.jsonl"),
                                   step_losses(tmp_path / "one" / arm / "metrics.jsonl"), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_two_processes_killed_and_resumed_equal_one_uninterrupted_process(user, tmp_path):
    """kill -9 of both processes after a checkpoint, then `--resume` on both: the losses and the
    exported model of one uninterrupted process (four devices, same mesh)."""
    # 96 rows / 8 x 12 = 144 steps: the kill lands long before the end (polled every 0.1 s from step 12)
    sets = ("mesh.fsdp=2", "epochs=12", "checkpoint_every=12")
    run(args(user, tmp_path / "one", *sets), env(4))

    def start(port, *extra):   # stderr to files: a pipe nobody reads while polling could fill and block them
        logs, procs = [tmp_path / f"stderr-{i}{''.join(extra)}.txt" for i in range(2)], []
        for i, log in enumerate(logs):
            with open(log, "w") as f:    # the child holds its own copy
                procs.append(subprocess.Popen(args(user, tmp_path / "two", *sets) + list(extra), cwd=ROOT, text=True,
                                              stdout=subprocess.DEVNULL, stderr=f,
                                              env=env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                                      JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))))
        return procs, logs

    (procs, _), ckpt, t0 = start(free_port()), tmp_path / "two" / "train" / "checkpoints", time.time()
    while not (ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())):
        assert time.time() - t0 < 300 and all(p.poll() is None for p in procs), "no checkpoint before the kill"
        time.sleep(0.1)
    for p in procs:
        p.kill()
        p.wait()
    assert json.loads((tmp_path / "two" / "status.json").read_text())["status"] == "running"
    procs, logs = start(free_port(), "--resume")
    for p in procs:
        p.wait(timeout=600)
    assert all(p.returncode == 0 for p in procs), "\n".join(log.read_text()[-3000:] for log in logs)
    one_losses, one_weights = losses(tmp_path / "one"), weights(tmp_path / "one")
    for folder in (tmp_path / "two", tmp_path / "two.process-1"):
        two_losses, two_weights = losses(folder), weights(folder)
        print(folder.name, "vs one uninterrupted process: max |dloss|", np.abs(two_losses - one_losses).max(),
              "max |dweight|", max(float(np.abs(two_weights[k] - w).max()) for k, w in one_weights.items()))
        np.testing.assert_allclose(two_losses, one_losses, atol=1e-5, rtol=0)
        for k, w in one_weights.items():
            np.testing.assert_allclose(two_weights[k], w, atol=1e-6, rtol=0, err_msg=k)
