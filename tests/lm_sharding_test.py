"""Logical-axis sharding (lsb_jax.models.lm.sharding) on 8 forced host devices, in a subprocess.

For meshes (data, fsdp, tensor) = (2,2,2) and (1,1,8): parameters loaded straight onto
their shardings carry the specs the rules give (mesh axes that do not divide a dimension are
dropped) and are really split across devices; the jitted sharded forward and per-example loss
equal the single-device ones within 1e-5, and greedy KV-cache generation on the (2,2,2) mesh
gives the single-device tokens.
"""

import os
import subprocess
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec as P

pytest.importorskip("transformers")

from conftest import xla_flags  # noqa: E402
from lm_fixtures import build  # noqa: E402
from lsb_jax.models.lm.sharding import logical_to_spec, make_mesh  # noqa: E402

_SCRIPT = textwrap.dedent("""
    import sys, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from flax import nnx
    from lsb_jax.models.lm import load_config, load_pretrained, positions_from_mask, sequence_loss
    from lsb_jax.models.lm.generate import generate
    from lsb_jax.models.lm.sharding import make_mesh, param_shardings, shard_batch
    assert jax.device_count() == 8
    folder = sys.argv[1]
    fast = {"xla_backend_optimization_level": 0}
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, 96, (8, 12))
    attn = np.ones_like(tokens)
    attn[1, :3] = 0
    batch = dict(tokens=tokens, attention_mask=attn, loss_mask=np.ones_like(tokens))

    def forward_and_loss(graphdef, params, batch):
        model = nnx.merge(graphdef, params)
        logits = model(batch["tokens"], positions_BxT=positions_from_mask(batch["attention_mask"]),
                       attention_mask_BxT=batch["attention_mask"])
        return logits, sequence_loss(model, batch, chunk_size=5)[0]

    run = jax.jit(forward_and_loss, static_argnums=0, compiler_options=fast)
    ref_logits, ref_loss = jax.device_get(run(*nnx.split(load_pretrained(folder)), batch))
    ref_gen = jax.device_get(generate(load_pretrained(folder), tokens, attn, max_new_tokens=6, compiler_options=fast))
    cfg = load_config(folder)
    EXPECTED = {  # (data, fsdp, tensor) -> {param: spec}; llama D=32, N=4, K=2, H=8, F=64, V=96
        (2, 2, 2): {"embed": P("tensor", "fsdp"), "layers.0.attn.q.kernel": P("fsdp", "tensor", None),
                    "layers.0.attn.k.kernel": P("fsdp", "tensor", None),
                    "layers.0.attn.o.kernel": P("tensor", None, "fsdp"),
                    "layers.1.mlp.down.kernel": P("tensor", "fsdp"), "lm_head.kernel": P("fsdp", "tensor"),
                    "final_norm.scale": P("fsdp")},
        (1, 1, 8): {"embed": P("tensor", "fsdp"), "layers.0.attn.q.kernel": P("fsdp", None, None),
                    "layers.1.mlp.up.kernel": P("fsdp", "tensor"), "lm_head.kernel": P("fsdp", "tensor")},
    }
    SPLIT = {(2, 2, 2): {"embed": (48, 16), "layers.0.attn.k.kernel": (16, 1, 8)},
             (1, 1, 8): {"embed": (12, 32), "layers.1.mlp.up.kernel": (32, 8)}}
    for shape, expected in EXPECTED.items():
        mesh = make_mesh(*shape)
        shardings = param_shardings(cfg, mesh)
        model = load_pretrained(folder, shardings=shardings)
        graphdef, params = nnx.split(model)
        flat = {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(params)}
        assert set(flat) == set(shardings)
        for path, arr in flat.items():
            assert arr.sharding == shardings[path], path
        for path, spec in expected.items():
            assert flat[path].sharding.spec == spec, (shape, path, flat[path].sharding.spec)
        for path, local in SPLIT[shape].items():
            assert {s.data.shape for s in flat[path].addressable_shards} == {local}, (shape, path)
        sharded = shard_batch(batch, mesh)
        assert sharded["tokens"].sharding.spec == P(("data", "fsdp"), None)
        logits, loss = run(graphdef, params, sharded)
        assert len(logits.sharding.device_set) == 8
        np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.asarray(loss), ref_loss, atol=1e-5, rtol=1e-5)
        print(shape, "max |dlogit|", float(np.abs(np.asarray(logits) - ref_logits).max()))
        if shape == (2, 2, 2):  # KV-cache generation with sharded weights and a sharded prompt batch
            gen = generate(model, sharded["tokens"], sharded["attention_mask"], max_new_tokens=6,
                           compiler_options=fast)
            assert len(gen[0].sharding.device_set) == 8
            np.testing.assert_array_equal(np.asarray(gen[0]), ref_gen[0])
            np.testing.assert_array_equal(np.asarray(gen[1]), ref_gen[1])
    print("ok")
""")


def test_sharded_load_forward_and_loss_match_single_device(tmp_path):
    build("llama3_gqa_scaled", tmp_path)
    env = {**os.environ, "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=8"), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr[-3000:]
    print(result.stdout)


def test_logical_to_spec_drops_axes_that_do_not_divide_or_repeat():
    mesh = make_mesh(1, 1, 1)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert logical_to_spec(("batch", None), (4, 3), mesh) == P(("data", "fsdp"), None)
    rules = (("a", ("x", "y")), ("b", "x"), ("c", "y"))

    class FakeMesh:  # sizes x=2, y=4 without needing 8 devices in this process
        shape = {"x": 2, "y": 4}

    assert logical_to_spec(("a", None), (16, 3), FakeMesh, rules) == P(("x", "y"), None)
    assert logical_to_spec(("a",), (6,), FakeMesh, rules) == P("x")        # 6 % 8 != 0: y dropped
    assert logical_to_spec(("b", "a"), (4, 16), FakeMesh, rules) == P("x", "y")  # x used once
    assert logical_to_spec(("c", "b"), (3, 3), FakeMesh, rules) == P(None, None)
    assert logical_to_spec(("unknown", None), (4, 4), FakeMesh, rules) == P(None, None)
