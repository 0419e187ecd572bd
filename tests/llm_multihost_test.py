"""Many devices and many hosts from the same `lsb run` command (issue 18, docs/tpu.md): a sharded
(2, 2, 2) run equals the single-device run, and two processes (coordinator on 127.0.0.1, CPU
collectives over gloo, two forced host devices each) give the losses and the exported model of one
process with the same four devices and mesh."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

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


def env(devices: int, **extra) -> dict:
    out = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           **extra}
    out["PYTHONPATH"] = os.pathsep.join([ROOT, out.get("PYTHONPATH", "")])
    for k in ("LSB_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        if k not in extra:
            out.pop(k, None)
    return out


def run(cmd, environ, timeout=600):
    res = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def losses(folder) -> np.ndarray:
    rows = [json.loads(x) for x in (folder / "train" / "metrics.jsonl").read_text().splitlines()]
    return np.array([r["loss"] for r in rows if "loss" in r])


def weights(folder) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    return load_file(folder / "model" / "model.safetensors")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_and_sharding_equals_one_device(user, tmp_path):
    root = tmp_path
    run(args(user, root / "one_device"), env(1))
    run(args(user, root / "sharded", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"), env(8))
    run(args(user, root / "one_process", "mesh.fsdp=2"), env(4))
    port, t0 = free_port(), time.perf_counter()
    procs = [subprocess.Popen(args(user, root / "two_processes", "mesh.fsdp=2"), cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                      JAX_PROCESS_ID=str(i))) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(err[-3000:] for _, err in outs)
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
