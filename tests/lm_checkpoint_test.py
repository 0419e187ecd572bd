"""Loading and exporting Hugging Face checkpoints (lsb_jax.models.lm.checkpoint)."""

import json
import math
import os
import pickle
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from conftest import xla_flags  # noqa: E402
from lm_fixtures import FAST_COMPILE, build  # noqa: E402
from lsb_jax.models.lm import (  # noqa: E402
    LOGICAL_AXES, CheckpointError, ConfigError, Decoder, load_config, load_pretrained, load_tokenizer,
    resolve_folder, save_pretrained,
)

ONE_PER_FAMILY = ["neox_parallel", "phi2_qk_layernorm_gqa", "llama_legacy_tied_headdim_bias",
                  "qwen3_tied_gqa_sliding", "gemma3_softcap", "gemma3_legacy_linear"]


def _flat_params(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _hf_reload(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_export_round_trip_is_exact(name, tmp_path):
    hf = build(name, tmp_path / "src")
    save_pretrained(load_pretrained(tmp_path / "src"), tmp_path / "out")
    src = load_file(tmp_path / "src" / "model.safetensors")
    out = load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(src) == sorted(out)
    for key in src:
        np.testing.assert_array_equal(out[key], src[key], err_msg=key)
    again = _hf_reload(tmp_path / "out")
    assert again.config.rope_parameters == hf.config.rope_parameters
    ref, got = hf.state_dict(), again.state_dict()
    assert sorted(ref) == sorted(got)
    for key in ref:
        assert torch.equal(ref[key], got[key]), key


def test_sharded_checkpoint_loads_like_single_file(tmp_path):
    build("llama3_gqa_scaled", tmp_path / "one")
    build("llama3_gqa_scaled", tmp_path / "many", max_shard_size="20KB")
    assert (tmp_path / "many" / "model.safetensors.index.json").exists()
    assert len(list((tmp_path / "many").glob("*.safetensors"))) > 2
    one = _flat_params(load_pretrained(tmp_path / "one"))
    many = _flat_params(load_pretrained(tmp_path / "many"))
    assert sorted(one) == sorted(many)
    for key in one:
        np.testing.assert_array_equal(one[key], many[key], err_msg=key)


def test_bf16_load_export_and_forward(tmp_path):
    hf = build("qwen3_tied_gqa_sliding", tmp_path / "src")
    model = load_pretrained(tmp_path / "src", dtype=jnp.bfloat16)
    assert {v.dtype for v in _flat_params(model).values()} == {jnp.dtype(jnp.bfloat16)}
    save_pretrained(model, tmp_path / "out")
    again = _hf_reload(tmp_path / "out")
    assert again.dtype == torch.bfloat16
    for key, ref in hf.state_dict().items():  # rounding on load matches torch's cast exactly
        assert torch.equal(again.state_dict()[key], ref.to(torch.bfloat16)), key
    tok_BxT = np.random.RandomState(0).randint(0, 96, (2, 12))
    with torch.no_grad():
        ref = hf(torch.tensor(tok_BxT)).logits.numpy()
    graphdef, params = nnx.split(model)
    forward = jax.jit(lambda p, t: nnx.merge(graphdef, p)(t), compiler_options=FAST_COMPILE)
    out = np.asarray(forward(params, jnp.asarray(tok_BxT)), np.float32)
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


def test_bf16_checkpoint_loads_exactly_in_fp32(tmp_path):
    hf = build("gemma3_softcap", tmp_path, dtype=torch.bfloat16)
    params = _flat_params(load_pretrained(tmp_path))
    assert params["embed"].dtype == np.float32
    np.testing.assert_array_equal(params["embed"], hf.model.embed_tokens.weight.detach().float().numpy())


def _rewrite(folder, edit):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_wrong_shape_and_unexpected_tensors_name_the_key(tmp_path):
    key = "model.layers.1.mlp.up_proj.weight"
    build("llama3_gqa_scaled", tmp_path)
    weight = load_file(tmp_path / "model.safetensors")[key]

    _rewrite(tmp_path, lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=rf"{re.escape(key)}.*missing.*{re.escape(str(tmp_path))}"):
        load_pretrained(tmp_path)

    _rewrite(tmp_path, lambda t: t.update({key: weight.T.copy()}))
    shapes = r"model\.safetensors has shape \(32, 64\), expected \(64, 32\)"
    with pytest.raises(CheckpointError, match=rf"{re.escape(key)}.*{shapes}"):
        load_pretrained(tmp_path)

    _rewrite(tmp_path, lambda t: t.update({key: weight, "model.layers.0.extra.weight": weight}))
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.extra\.weight"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("name,dtype", [("neox_parallel", None), ("llama3_gqa_scaled", None),
                                        ("gemma3_softcap", torch.bfloat16)])
def test_tensors_read_a_few_rows_at_a_time_equal_torchs_state_dict(name, dtype, tmp_path, monkeypatch):
    """The loader reads each tensor in blocks of rows into its final layout; with blocks of a few rows
    (a last partial block, transposed kernels filled a few columns at a time, a bf16 file cast to
    fp32) every parameter still equals torch's tensor put in our layout."""
    from lsb_jax.models.lm import checkpoint, names
    hf = build(name, tmp_path, dtype=dtype)
    monkeypatch.setattr(checkpoint, "_BLOCK_BYTES", 100)
    model = load_pretrained(tmp_path)
    params = _flat_params(model)
    state = {k: v.float().numpy() for k, v in hf.state_dict().items()}
    rules = names.expand(model.cfg.family, model.cfg.num_layers, set(params))
    assert {o for _, ours, _ in rules for o in ours} == set(params)
    aliases = names.ALIASES.get(model.cfg.family, {})
    for hf_name, ours, kind in rules:
        tensor = state[hf_name] if hf_name in state else state[aliases[hf_name]]
        for path, ref in zip(ours, names.to_ours(kind, tensor, params[ours[0]].shape)):
            assert params[path].dtype == np.float32
            np.testing.assert_array_equal(params[path], ref, err_msg=path)


def test_a_truncated_or_garbled_safetensors_file_is_named_in_one_line(tmp_path):
    build("llama3_gqa_scaled", tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=r"in .*model\.safetensors: data_offsets .* \(truncated or corrupt") as e:
        load_pretrained(tmp_path)
    assert "\n" not in str(e.value)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_pretrained(tmp_path)
    header = b'["a list"]'
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file .*JSON list"):
        load_pretrained(tmp_path)
    header = b'{"embed": {"dtype": "F32", "shape": [2, 2]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match=r"'embed' in .*model\.safetensors: malformed header entry"):
        load_pretrained(tmp_path)


def test_tied_checkpoint_with_redundant_lm_head_loads(tmp_path):
    build("qwen3_tied_gqa_sliding", tmp_path)
    _rewrite(tmp_path, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"]}))
    assert load_pretrained(tmp_path).lm_head is None


def test_config_errors_name_the_key(tmp_path):
    gpt2 = transformers.AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2)
    gpt2.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConfigError, match=r"'model_type'='gpt2'"):
        load_pretrained(tmp_path / "gpt2")

    build("qwen3_tied_gqa_sliding", tmp_path / "q")
    path = tmp_path / "q" / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "num_key_value_heads": 3}))
    with pytest.raises(ConfigError, match=r"num_key_value_heads"):
        load_config(tmp_path / "q")
    path.write_text(json.dumps({k: v for k, v in config.items() if k != "hidden_size"}))
    with pytest.raises(ConfigError, match=r"'hidden_size' is missing from .*config.json"):
        load_config(tmp_path / "q")
    path.write_text(json.dumps({**config, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4,
                                                              "factor": 2.0}}))
    yarn = load_config(tmp_path / "q").rope_for("full_attention")  # transformers fills the original length in
    assert yarn.kind == "yarn" and yarn.attention_factor == pytest.approx(0.1 * math.log(2.0) + 1.0)
    path.write_text(json.dumps({**config, "rope_parameters": {
        "rope_type": "longrope", "rope_theta": 1e4, "factor": 2.0, "original_max_position_embeddings": 64,
        "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}}))
    with pytest.raises(ConfigError, match=r"rope_type='longrope' is not supported"):
        load_config(tmp_path / "q")


def test_hub_id_goes_through_snapshot_download(tmp_path, monkeypatch):
    import huggingface_hub

    build("neox_parallel", tmp_path)
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: calls.append((repo_id, kw)) or str(tmp_path))
    assert load_config("EleutherAI/pythia-tiny").family == "gpt_neox"
    assert calls[0][0] == "EleutherAI/pythia-tiny" and "*.safetensors" in calls[0][1]["allow_patterns"]
    assert resolve_folder(tmp_path) == tmp_path and len(calls) == 1
    with pytest.raises(FileNotFoundError):
        resolve_folder(str(tmp_path / "missing"))


def test_hub_id_resolves_from_a_local_hub_cache_offline(tmp_path):
    """The real hub code path without network: a cache folder laid out as huggingface_hub writes it
    (models--org--name/{refs, snapshots/<commit>}), HF_HUB_OFFLINE=1, a hub id and a revision."""
    import shutil

    repo = tmp_path / "cache" / "models--lsb-test--tiny-neox"
    commits = {"main": "a" * 40, "v1": "b" * 40}
    for seed, (ref, commit) in enumerate(commits.items()):
        build("neox_parallel", tmp_path / ref, seed=seed)
        shutil.copytree(tmp_path / ref, repo / "snapshots" / commit)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    prog = textwrap.dedent("""
        import json, sys
        import numpy as np
        from lsb_jax.models.lm.checkpoint import load_config, resolve_folder
        out = {ref: str(resolve_folder("lsb-test/tiny-neox", revision=None if ref == "main" else ref))
               for ref in ("main", "v1")}
        out["family"] = load_config("lsb-test/tiny-neox", revision="v1").family
        print(json.dumps(out))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", prog], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["main"] == str(repo / "snapshots" / commits["main"])
    assert got["v1"] == str(repo / "snapshots" / commits["v1"])
    assert got["family"] == "gpt_neox"
    res = subprocess.run([sys.executable, "-c", "from lsb_jax.models.lm.checkpoint import resolve_folder; "
                          "resolve_folder('lsb-test/not-cached')"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0 and "lsb-test/not-cached" in res.stderr   # offline: a clear refusal, no download


def test_tokenizer_through_auto_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", "two", "plus", "is", "four"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path)("two plus two is four")["input_ids"] == [1, 2, 1, 3, 4]


def test_gemma3_attn_logit_softcapping_warns_that_it_has_no_effect(tmp_path):
    build("gemma3_softcap", tmp_path)   # attn_logit_softcapping=5.0: transformers ignores it (parity holds)
    with pytest.warns(UserWarning, match="attn_logit_softcapping.*has no effect.*transformers"):
        load_config(tmp_path)
    build("gemma3_legacy_linear", tmp_path / "plain")   # not set: no warning
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_config(tmp_path / "plain")


def test_weights_are_placed_on_given_shardings(tmp_path):
    build("gemma3_softcap", tmp_path)
    mesh = jax.make_mesh((1,), ("model",), axis_types=(jax.sharding.AxisType.Auto,))
    cfg = load_config(tmp_path)
    abstract = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
    mapping = {"vocab": "model", "mlp": "model", "q_heads": "model"}
    with nnx.logical_axis_rules([(a, mapping.get(a)) for a in LOGICAL_AXES]):
        shardings = nnx.get_named_sharding(nnx.state(abstract), mesh)
    model = load_pretrained(tmp_path, shardings=shardings)
    flat = {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model))}
    assert flat["embed"].sharding.spec == jax.sharding.PartitionSpec("model", None)
    assert flat["layers.0.mlp.down.kernel"].sharding.spec == jax.sharding.PartitionSpec("model", None)
    assert flat["layers.0.attn.q.kernel"].sharding.spec == jax.sharding.PartitionSpec(None, "model", None)


_SHARDED_SCRIPT = textwrap.dedent("""
    import pickle, sys, jax, jax.numpy as jnp, numpy as np
    from pathlib import Path
    from flax import nnx
    from lsb_jax.models.lm import LOGICAL_AXES, Decoder, read_params
    folder = Path(sys.argv[1])
    cfg = pickle.loads((folder / "cfg.pkl").read_bytes())  # no transformers import: fast
    mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    abstract = nnx.state(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))))
    mapping = dict(embed="data", vocab="model", mlp="model", q_heads="model", kv_heads="model")
    with nnx.logical_axis_rules([(a, mapping.get(a)) for a in LOGICAL_AXES]):
        named = nnx.get_named_sharding(abstract, mesh)
    dotted = lambda p: ".".join(map(str, p))
    shapes = {dotted(p): v.get_value().shape for p, v in nnx.to_flat_state(abstract)}
    shardings = {dotted(p): v.get_value() for p, v in nnx.to_flat_state(named)}
    sharded = read_params(folder, cfg, shapes, jnp.float32, shardings.get)
    plain = read_params(folder, cfg, shapes, jnp.float32)
    for path, arr in sharded.items():
        assert arr.sharding == shardings[path], path
        assert len(arr.sharding.device_set) == 4, path
        np.testing.assert_array_equal(np.asarray(arr), np.asarray(plain[path]))
    q = sharded["layers.0.attn.q.kernel"]
    assert {s.data.shape for s in q.addressable_shards} == {(16, 2, 16)}, q.addressable_shards
    print("ok")
""")


def test_weights_shard_across_devices(tmp_path):
    build("qwen3_tied_gqa_sliding", tmp_path)
    (tmp_path / "cfg.pkl").write_bytes(pickle.dumps(load_config(tmp_path)))
    env = {**os.environ, "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4"), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
