"""A user's own tiny checkpoints and JSONL data through the `lsb` command line (issue 18): plain
fine-tuning and the upsample-hard protocol, prompt/response and `messages` formats, full and LoRA,
the exported Hugging Face folder and peft adapter reloaded by transformers / peft with our logits,
and every bad input refused in one line before anything is written."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import jax.numpy as jnp  # noqa: E402

from lsb_jax import cli  # noqa: E402
from lsb_jax.llm import pipeline as pl  # noqa: E402

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SYSTEM = "You add small numbers."


def problems(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        terms = [rng.randint(0, 9) for _ in range(rng.choice((2, 3)))]
        expr = " + ".join(map(str, terms))
        out.append((f"What is {expr}?", f"{expr} = {sum(terms)}. The answer is {sum(terms)}."))
    return out


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def as_fields(pairs):
    return [{"question": q, "answer": a} for q, a in pairs]


def as_messages(pairs):
    return [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                          {"role": "assistant", "content": a}]} for q, a in pairs]


def make_checkpoint(folder, family: str, texts, *, chat: bool, pad: bool, seed: int):
    """A random-init transformers model of `family` saved with a BPE tokenizer trained on `texts`
    (with a ChatML template and its special tokens when `chat`; without a pad token unless `pad`,
    as Llama 3 and Pythia ship)."""
    tok = pl.train_tokenizer(texts, vocab_size=300)
    if chat:
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = CHATML
    if not pad:
        tok.pad_token = None
    kw = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=64, max_position_embeddings=256, eos_token_id=tok.eos_token_id,
              bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if family == "qwen3":
        kw.update(head_dim=8, tie_word_embeddings=True)
    config = transformers.AutoConfig.for_model(family, **kw)
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """Two checkpoint folders (Llama-style without a pad token; Qwen3-style with a chat template)
    and 200 train / 24 test rows in both formats."""
    root = tmp_path_factory.mktemp("user")
    train, test = problems(200, 0), problems(24, 1)
    texts = [q + " " + a for q, a in train]
    return {"root": root,
            "llama": make_checkpoint(root / "llama", "llama", texts, chat=False, pad=False, seed=0),
            "qwen": make_checkpoint(root / "qwen", "qwen3", texts, chat=True, pad=True, seed=1),
            "train_fields": write_jsonl(root / "train.jsonl", as_fields(train)),
            "test_fields": write_jsonl(root / "test.jsonl", as_fields(test)),
            "train_messages": write_jsonl(root / "chat_train.jsonl", as_messages(train)),
            "test_messages": write_jsonl(root / "chat_test.jsonl", as_messages(test))}


STRICT = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
          "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def broken(user):
    """Damaged copies of the user's checkpoints, under user["root"]: no tokenizer files, weights cut
    in half, an unsupported model_type, a tokenizer without an eos token, and a chat template that
    refuses system turns (as Mistral-style templates do)."""
    import shutil

    root = user["root"]
    for name, source in (("notok", "llama"), ("trunc", "llama"), ("qwen2", "llama"), ("noeos", "llama"),
                         ("strict", "qwen")):
        shutil.copytree(user[source], root / name)
    for f in (root / "notok").glob("tokenizer*"):
        f.unlink()
    weights = root / "trunc" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    config = json.loads((root / "qwen2" / "config.json").read_text())
    (root / "qwen2" / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    for name, change in (("noeos", {"eos_token": None}), ("strict", {"chat_template": STRICT})):
        tok = transformers.AutoTokenizer.from_pretrained(root / name)
        for key, value in change.items():
            setattr(tok, key, value)
        tok.save_pretrained(root / name)
    return root


def fields_sets(user, which=("train", "test")):
    out = []
    for part in which:
        out += ["--set", f"{part}_data.path={user[part + '_fields']}", "--set", f"{part}_data.prompt_field=question",
                "--set", f"{part}_data.response_field=answer"]
    return out


def messages_sets(user):
    return [x for part in ("train", "test") for x in (
        "--set", f"{part}_data.path={user[part + '_messages']}", "--set", f"{part}_data.format=messages")]


class Captured:
    """Wraps `pipeline.export_finetuned` to keep what it exported and the trained model it came from."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = pl.export_finetuned

        def export(result, tokenizer, folder, **kw):
            out = real(result, tokenizer, folder, **kw)
            self.calls.append((result.model(), out, kw["base"]))
            return out

        monkeypatch.setattr(pl, "export_finetuned", export)


def lsb(capsys, *args) -> tuple[int, str]:
    rc = cli.main(["run", *args, "--no-progress"])
    return rc, capsys.readouterr().err


def probe_tokens(vocab: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab, (2, 10))


def our_logits(model, tok_BxT) -> np.ndarray:
    return np.asarray(model(jnp.asarray(tok_BxT)), np.float32)


def hf_logits(model, tok_BxT) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tok_BxT)).logits.float().numpy()


@pytest.mark.slow
def test_finetune_messages_with_lora_exports_a_merged_model_and_a_peft_adapter(user, tmp_path, capsys, monkeypatch):
    cap = Captured(monkeypatch)
    out = tmp_path / "run"
    rc, err = lsb(capsys, "finetune", "--out", str(out), "--set", "data=files", "--set", f"model={user['qwen']}",
                  *messages_sets(user), "--set", "train.lora_rank=4", "--set", "train.lora_targets=all_linear",
                  "--set", "epochs=2", "--set", "max_new_tokens=8", "--set", "max_length=128")
    assert rc == 0, err
    (model, exported, base), = cap.calls
    assert base == user["qwen"] and set(exported) == {"merged", "adapter"}
    results = json.loads((out / "results.json").read_text())
    assert results["headline"]["n_train"] == 200 and results["exported"] == {"merged": "model", "adapter": "adapter"}
    records = [json.loads(x) for x in (out / "eval_chat_test.jsonl").read_text().splitlines()]
    assert len(records) == 24 and all(r["question"].startswith("What is ") for r in records)   # the user turn
    tok_BxT = probe_tokens(model.cfg.vocab_size)
    ours = our_logits(model, tok_BxT)
    base_model = transformers.AutoModelForCausalLM.from_pretrained(user["qwen"]).eval()
    assert np.abs(ours - hf_logits(base_model, tok_BxT)).max() > 1e-3          # training changed the model
    merged = transformers.AutoModelForCausalLM.from_pretrained(out / "model").eval()
    np.testing.assert_allclose(hf_logits(merged, tok_BxT), ours, atol=1e-5, rtol=0)
    adapted = peft.PeftModel.from_pretrained(base_model, out / "adapter").eval()
    np.testing.assert_allclose(hf_logits(adapted, tok_BxT), ours, atol=1e-5, rtol=0)
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == user["qwen"]
    saved_tok = transformers.AutoTokenizer.from_pretrained(out / "model")
    assert saved_tok.chat_template == CHATML
    gen = transformers.GenerationConfig.from_pretrained(out / "model")
    assert gen.eos_token_id == saved_tok.eos_token_id


def tensorboard_tags(folder) -> set[str]:
    """Scalar tags of the TensorBoard event files in `folder` (TFRecord framing read by hand)."""
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        data, i = path.read_bytes(), 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            tags |= {v.tag for v in event.summary.value}
            i += 12 + n + 4
    return tags


@pytest.mark.slow
def test_finetune_prompt_response_without_pad_token_full(user, tmp_path, capsys, monkeypatch):
    """A Llama-style tokenizer without a pad token, plain prompt format, all weights trained; the
    logs a fine-tuner reads (loss, lr, grad norm, tokens/s, accuracy; no per-slot losses in TensorBoard)."""
    cap = Captured(monkeypatch)
    out = tmp_path / "run"
    rc, err = lsb(capsys, "finetune", "--out", str(out), "--set", "data=files", "--set", f"model={user['llama']}",
                  *fields_sets(user), "--set", "template=plain", "--set", "max_new_tokens=8", "--set", "max_length=64",
                  "--set", "epochs=6", "--set", "batch_size=8", "--set", "train.warmup_ratio=0.1")
    assert rc == 0, err
    rows = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    T, lr = 150, 1e-3                                          # 6 epochs x 200 rows / 8; the default lr
    W = round(0.1 * T)
    want = [lr * (t / W if t < W else 0.5 * (1 + np.cos(np.pi * (t - W) / (T - W)))) for t in range(T)]
    np.testing.assert_allclose([r["lr"] for r in steps], want, rtol=1e-5, atol=1e-6 * lr)   # float32 cos
    assert len(steps) == T and all(r["grad_norm"] > 0 and r["tokens"] > 0 for r in steps)
    rates = [r["tokens_per_s"] for r in steps if "tokens_per_s" in r]
    assert [r["step"] for r in steps if "tokens_per_s" in r] == [100, 150] and min(rates) > 0   # 50-step segments
    acc = json.loads((out / "results.json").read_text())["headline"]["accuracy_test"]
    assert rows[-1] == {"step": T, "eval/accuracy_test": acc}
    tags = tensorboard_tags(out / "train" / "tb")
    assert {"loss", "lr", "grad_norm", "tokens", "tokens_per_s", "eval/accuracy_test"} <= tags
    assert not any(t.startswith("example_") for t in tags), tags
    (model, exported, _), = cap.calls
    assert set(exported) == {"merged"} and not (out / "adapter").exists()
    tok_BxT = probe_tokens(model.cfg.vocab_size)
    merged = transformers.AutoModelForCausalLM.from_pretrained(out / "model").eval()
    np.testing.assert_allclose(hf_logits(merged, tok_BxT), our_logits(model, tok_BxT), atol=1e-5, rtol=0)
    gen = transformers.GenerationConfig.from_pretrained(out / "model")
    assert gen.pad_token_id == gen.eos_token_id    # no pad token: eos, as batching pads


@pytest.mark.slow
def test_upsample_hard_on_own_models_and_data(user, tmp_path, capsys, monkeypatch):
    """The protocol on user folders: a Qwen3-style proxy, a Llama-style LoRA target; every arm
    exported (merged + adapter onto the target folder)."""
    cap = Captured(monkeypatch)
    out = tmp_path / "run"
    rc, err = lsb(capsys, "upsample_hard", "--out", str(out), "--set", "data=files", *fields_sets(user),
                  "--set", f"proxy={user['qwen']}", "--set", f"targets={user['llama']}", "--set", "template=plain",
                  "--set", 'arms=["baseline","upsample_hard"]', "--set", "optimizers=adamw",
                  "--set", "target_seeds=0", "--set", "base_seeds=0", "--set", "target_train.lora_rank=4",
                  "--set", "max_new_tokens=8", "--set", "max_length=64", "--set", "num_checkpoints=3")
    assert rc == 0, err
    assert len(cap.calls) == 2 and all(base == user["llama"] for _, _, base in cap.calls)
    arm = out / "base0" / "llama" / "adamw" / "seed0"
    for name in ("baseline", "upsample_hard"):
        assert (arm / name / "model" / "model.safetensors").is_file()
        assert (arm / name / "adapter" / "adapter_model.safetensors").is_file()
    counts = np.load(arm / "upsample_hard" / "counts.npz")["counts_N"]
    assert counts.shape == (200,) and set(np.unique(counts)) == {1, 2}
    results = json.loads((out / "results.json").read_text())
    assert results["headline"]["n_train"] == [200]


@pytest.mark.slow
def test_sft_selection_on_own_model_and_messages(user, tmp_path, capsys, monkeypatch):
    cap = Captured(monkeypatch)
    out = tmp_path / "run"
    rc, err = lsb(capsys, "sft_selection", "--out", str(out), "--set", "data=files", *messages_sets(user),
                  "--set", f"target={user['qwen']}", "--set", 'arms=["kcenter_hidden","random"]',
                  "--set", "template=auto", "--set", "random_seeds=0", "--set", "base_seeds=0",
                  "--set", "subset_size=40", "--set", "epochs=1", "--set", "max_length=128",
                  "--set", "heldout_max_length=128", "--set", "max_new_tokens=8", "--set", "num_evals=2")
    assert rc == 0, err
    assert len(cap.calls) == 2 and all(base == user["qwen"] for _, _, base in cap.calls)
    for arm in ("kcenter_hidden", "random_0"):
        assert (out / "base0" / arm / "model" / "model.safetensors").is_file()
        assert (out / "base0" / arm / "eval_chat_test.jsonl").is_file()


def test_hub_dataset_ids_resolve_from_a_local_cache_offline(user, tmp_path):
    """Train and test sets given as hub dataset ids, read from a Hugging Face cache folder laid out
    as huggingface_hub writes it (datasets--org--name/{refs, snapshots/<commit>}) with
    HF_HUB_OFFLINE=1, in the parquet shards and split names of the hub's conventions; a pinned
    revision; an uncached id refused in one line before anything is written."""
    import os
    import subprocess
    import sys

    import datasets

    repo = tmp_path / "cache" / "datasets--lsb-test--sums"
    commits = {"main": "c" * 40, "v1": "d" * 40}
    for ref, commit in commits.items():
        data = repo / "snapshots" / commit / "data"
        data.mkdir(parents=True)
        n = 40 if ref == "main" else 24
        datasets.Dataset.from_list(as_fields(problems(n, 0))).to_parquet(data / "train-00000-of-00001.parquet")
        datasets.Dataset.from_list(as_fields(problems(8, 1))).to_parquet(data / "test-00000-of-00001.parquet")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu",
           "HF_DATASETS_CACHE": str(tmp_path / "datasets_cache")}

    def lsb_run(out, train_id):
        sets = ["data=files", f"model={user['llama']}", "template=plain", "max_length=64", "max_new_tokens=4",
                f"train_data.path={train_id}", "train_data.prompt_field=question", "train_data.response_field=answer",
                "test_data.path=lsb-test/sums", "test_data.prompt_field=question", "test_data.response_field=answer"]
        return subprocess.run([sys.executable, "-m", "lsb_jax.cli", "run", "finetune", "--no-progress", "--out",
                               str(out), *[x for s in sets for x in ("--set", s)]], env=env, capture_output=True,
                              text=True, timeout=600)

    res = lsb_run(tmp_path / "main", "lsb-test/sums")
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / "main" / "results.json").read_text())
    assert results["headline"]["n_train"] == 40 and results["test"]["sums_test"]["n"] == 8
    res = lsb_run(tmp_path / "v1", "lsb-test/sums@v1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "v1" / "results.json").read_text())["headline"]["n_train"] == 24
    res = lsb_run(tmp_path / "missing", "lsb-test/not-cached")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr[-3000:]
    assert res.stderr.startswith("lsb: error: lsb-test/not-cached:train: hub dataset lsb-test/not-cached not "
                                 "available (HF_HUB_OFFLINE is set")
    assert not (tmp_path / "missing").exists()


BAD = {   # --set assignments -> what the one-line error must say
    "a file as data": (["data={root}/train.jsonl"], "for your own data set data=files and train_data.path="),
    "no such train file": (["train_data.path={root}/trian.jsonl"], "trian.jsonl: no such file"),
    "wrong prompt field": (["train_data.prompt_field=prompt"], "field 'prompt': missing field"),
    "max_length too short": (["max_length=12"], "rows skipped (200 too long), more than max_skip_fraction"),
    "max_length hint": (["max_length=12"], "; raise max_length or set truncate=true (tokenized for the model"),
    "lora regex matches nothing": (["train.lora_rank=4", r"train.lora_targets=layers\.9\..*"],
                                   "match no linear layer of the model"),
    "lora options without rank": (["train.lora_targets=all_linear"], "lora_targets set but lora_rank=0"),
    "model folder typo": (["model={root}/lama"], "lama: no such folder"),
    "hub id not cached offline": (["model=nobody/no-such-model@v1"], "not in the local Hugging Face cache"),
    "test row without answer": (["test_data.response_field=solution"], "row 0 (line 1), field 'solution'"),
    # the model's files and tokenizer, and what the template makes of the rows (issue 19's review)
    "chat template the tokenizer lacks": (["template=chat"],
                                          "the model {root}/llama: template='chat' but the tokenizer has no chat"),
    "tokenizer files missing": (["model={root}/notok"], "the model {root}/notok: its tokenizer does not load"),
    "weights cut short": (["model={root}/trunc"], "truncated or corrupt file?"),
    "unsupported family, full fine-tuning": (["model={root}/qwen2"], "'model_type'='qwen2'"),
    "tokenizer without eos, plain template": (["model={root}/noeos"], "the tokenizer has no eos token"),
    "test conversation a plain template cannot render": (
        ["test_data.path={root}/chat_test.jsonl", "test_data.format=messages"],
        "chat_test.jsonl, row 0 (line 1), field 'messages': the plain template cannot render it"),
    "chat template refusing a system turn": (
        ["model={root}/strict", "template=auto", "train_data.path={root}/chat_train.jsonl",
         "train_data.format=messages"],
        "chat_train.jsonl, row 0 (line 1), field 'messages': the chat template cannot render it: TemplateError: "
        "System role not supported"),
    "accum_steps not dividing the batch": (["train.accum_steps=3"], "batch_size=16 is not divisible by "
                                           "train.accum_steps=3"),
    "eval_batch 0": (["eval_batch=0"], "eval_batch must be >= 1"),
    "negative test_limit": (["test_limit=-1"], "test_limit must be >= 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_are_one_line_before_anything_is_written(user, broken, tmp_path, capsys, monkeypatch, case):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    sets, message = BAD[case]
    message = message.format(root=user["root"])
    base = ["data=files", f"model={user['llama']}", "template=plain", "max_length=64"]
    args = [x for s in fields_sets(user) for x in [s]]
    for s in base + [s.format(root=user["root"]) for s in sets]:
        args += ["--set", s]
    out = tmp_path / "run"
    rc, err = lsb(capsys, "finetune", "--out", str(out), *args)
    assert rc == 2 and err.startswith("lsb: error:") and err.count("\n") == 1, err
    assert message in err, err
    assert not out.exists()


def test_truncate_cuts_responses_to_max_length(user):
    """truncate=True: each example is its prompt plus the first max_length - len(prompt) response
    ids (the ids `encode_examples` gives, independently cut here); a prompt that leaves no room is
    still too long; without truncate the error counts the rows."""
    from lsb_jax.llm.data import DataError, DatasetSpec, PromptTemplate, encode_examples, load_examples
    from lsb_jax.models.lm import load_tokenizer

    tok, template = load_tokenizer(user["llama"]), PromptTemplate(kind="plain", prompt_format="Q: {prompt}\nA: ")
    spec = DatasetSpec(user["train_fields"], prompt_field="question", response_field="answer")
    rows = as_fields(problems(200, 0))
    p_ids, r_ids = encode_examples(tok, template, [r["question"] for r in rows], [r["answer"] for r in rows])
    L = int(np.median([len(p) + len(r) for p, r in zip(p_ids, r_ids)]))
    assert max(len(p) for p in p_ids) < L
    examples, report = load_examples(spec, tok, template, max_length=L, truncate=True, on_error="skip")
    assert len(examples) == 200 and report.num_skipped == 0
    for i in range(200):
        want = (p_ids[i] + r_ids[i])[:L]
        got = examples.tokens[examples.offsets_N[i]:examples.offsets_N[i] + examples.lengths_N[i]]
        np.testing.assert_array_equal(got, want)
        assert examples.prompt_lengths_N[i] == len(p_ids[i])
    with pytest.raises(DataError, match=r"rows skipped \(\d+ too long\)"):
        load_examples(spec, tok, template, max_length=L, on_error="skip")
    with pytest.raises(DataError, match="prompts alone too long"):
        load_examples(spec, tok, template, max_length=min(len(p) for p in p_ids), truncate=True, on_error="skip")


def test_messages_rows_are_validated_by_turn(tmp_path):
    """The conversational formats' own errors name the row and the turn."""
    from lsb_jax.llm.data import DataError, DatasetSpec, read_validated

    rows = [{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
            {"messages": [{"role": "user", "content": "hi"}]},
            {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},
            {"messages": "not a list"},
            {"messages": [{"role": "user", "content": ["an image part"]}, {"role": "assistant", "content": "x"}]},
            {"prompt": [{"role": "user", "content": "3+3?"}], "completion": [{"role": "assistant", "content": "6"}]}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    spec = DatasetSpec(path, format="messages")
    kept, report = read_validated(spec, on_error="skip")
    assert [r.source_row for r in kept] == [0] and kept[0].query == (("user", "2+2?"),)
    assert kept[0].prompt == "2+2?" and kept[0].response == "4"
    assert report.errors[0].endswith("row 1 (line 2), field 'messages[0].role': the last turn must be the "
                                     "assistant's response, got 'user'")
    assert "field 'messages[1].role': unknown role 'robot'" in report.errors[1]
    assert "wrong type: expected a list of {role, content} turns, got str" in report.errors[2]
    assert "field 'messages[0].content': wrong type: expected a string, got list" in report.errors[3]
    with pytest.raises(DataError, match="row 1"):
        read_validated(spec)
    completion = DatasetSpec(path, prompt_field="prompt", response_field="completion")
    kept, _ = read_validated(completion, on_error="skip")
    assert [(r.source_row, r.query, r.response) for r in kept] == [(5, (("user", "3+3?"),), "6")]


def test_chat_rendering_of_a_conversation_matches_the_template(user):
    """A messages row renders exactly as the tokenizer's chat template renders the conversation
    (its own system turn kept), and the response ids are what the full conversation adds."""
    from lsb_jax.llm.data import PromptTemplate, Row, encode_examples
    from lsb_jax.models.lm import load_tokenizer

    tok = load_tokenizer(user["qwen"])
    turns = (("system", SYSTEM), ("user", "What is 1 + 2?"))
    row = Row("What is 1 + 2?", "1 + 2 = 3.", None, 0, turns=turns)
    (p_ids,), (r_ids,) = encode_examples(tok, PromptTemplate(kind="chat", system="ignored"), [row.query],
                                         [row.response])
    msgs = [{"role": r, "content": c} for r, c in turns]
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": row.response}], tokenize=False)
    assert tok.decode(p_ids + r_ids) == full
    assert tok.decode(p_ids) == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
