"""Instruction data (lsb_jax.llm.data): validation errors, response masks, batching, resume.

The tokenizer is a byte-level BPE trained on the fly (no download) and wrapped in
`transformers.PreTrainedTokenizerFast`; byte-level decoding round-trips text exactly, so a mask
is checked by decoding the masked tokens and comparing with the response text.
"""

import json

import jax
import numpy as np
import pytest

from lsb_jax.data.samplers import Epochs
from lsb_jax.llm import data as D

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ["Below is an instruction that describes a task. Write a response that appropriately "
          "completes the request.", "### Instruction:", "### Response:", "The answer is 42.",
          "Natalia sold 48 clips in April, and half as many in May. How many in all? #### 72",
          "Let's solve this step by step: 12 + 30 = 42", "Calculate 5 - 3 - 6. \\boxed{-4}"]


def tiny_tokenizer(chat: bool = False):
    """A 320-token byte-level BPE tokenizer (eos <|endoftext|>, pad <pad>), optional chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 5, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>",
                                 clean_up_tokenization_spaces=False)
    if chat:
        hf.chat_template = CHAT
    return hf


GOOD = [{"instruction": f"What is {i} + {i + 1}? Explain.", "output": f"{i} + {i + 1} = {2 * i + 1}. "
         f"The answer is {2 * i + 1}.", "source": ["gsm", "arith", "gsm"][i % 3]} for i in range(9)]
SPEC = dict(prompt_field="instruction", response_field="output", domain_field="source")


def write_jsonl(path, rows, raw_lines=None):
    lines = [json.dumps(r).encode() for r in rows]
    for at, raw in (raw_lines or {}).items():
        lines.insert(at, raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def chat_tok():
    return tiny_tokenizer(chat=True)


BAD = {  # name -> (bad row or raw bytes, field, reason fragment)
    "missing": ({"instruction": "q"}, "output", "missing field"),
    "wrong_type": ({"instruction": "q", "output": 7, "source": "gsm"}, "output", "wrong type"),
    "empty": ({"instruction": "q", "output": "   ", "source": "gsm"}, "output", "empty response"),
    "utf8": (b'{"instruction": "q", "output": "caf\xe9 ok", "source": "gsm"}', "output", "invalid UTF-8"),
    "too_long": ({"instruction": "q", "output": "x " * 400, "source": "gsm"}, "instruction+output", "too long"),
    "domain_type": ({"instruction": "q", "output": "a", "source": [1]}, "source", "wrong type"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_row_error_names_file_row_and_field(name, tok, tmp_path):
    bad, field, reason = BAD[name]
    raw = {3: bad} if isinstance(bad, bytes) else None
    rows = GOOD[:3] + ([] if raw else [bad]) + GOOD[3:]
    path = write_jsonl(tmp_path / "train.jsonl", rows, raw)
    spec = D.DatasetSpec(str(path), **SPEC)
    with pytest.raises(D.DataError) as info:
        D.load_examples(spec, tok, D.PromptTemplate(kind="plain"), max_length=128)
    e = info.value
    assert (e.file, e.row, e.line, e.field) == (str(path), 3, 4, field)
    assert reason in str(e) and str(path) in str(e) and "row 3" in str(e) and repr(field) in str(e)


def test_skip_mode_counts_bad_rows_and_numbers_the_rest(tok, tmp_path):
    raw = {2: BAD["utf8"][0], 5: b"{not json"}
    rows = [GOOD[0], GOOD[1], BAD["missing"][0], GOOD[2], BAD["wrong_type"][0], GOOD[3],
            BAD["empty"][0], BAD["too_long"][0], GOOD[4], "a string row"]
    path = write_jsonl(tmp_path / "train.jsonl", rows, raw)
    with open(path, "ab") as f:
        f.write(b"\n\n")  # blank lines are not rows
    with pytest.raises(D.DataError, match=r"7 of 12 rows skipped \(.*\), more than max_skip_fraction=0.01"):
        D.load_examples(D.DatasetSpec(str(path), **SPEC), tok, D.PromptTemplate(kind="plain"), max_length=128,
                        on_error="skip")   # the default limit: bad rows never vanish into a count
    ex, report = D.load_examples(D.DatasetSpec(str(path), **SPEC), tok, D.PromptTemplate(kind="plain"),
                                 max_length=128, on_error="skip", max_skip_fraction=0.6)
    assert report.read == 12 and report.kept == 5 == len(ex)
    assert report.skipped == {"invalid UTF-8": 1, "invalid JSON": 1, "missing field": 1, "wrong type": 1,
                              "empty response": 1, "too long": 1, "expected an object, got str": 1}
    assert [r.prompt for r in ex.rows] == [g["instruction"] for g in GOOD[:5]]  # example id = position
    assert [r.source_row for r in ex.rows] == [0, 1, 4, 7, 10]
    assert ex.domain_names == ("arith", "gsm")
    np.testing.assert_array_equal(ex.domain_N, [1, 0, 1, 1, 0])
    assert json.loads(json.dumps(report.to_json()))["num_skipped"] == 7


def test_json_and_parquet_read_like_jsonl(tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.json").write_text(json.dumps(GOOD))
    pq.write_table(pa.Table.from_pylist(GOOD), tmp_path / "d.parquet")
    write_jsonl(tmp_path / "d.jsonl", GOOD)
    sets = [D.load_examples(D.DatasetSpec(str(tmp_path / f"d.{s}"), **SPEC), tok, max_length=128)[0]
            for s in ("json", "parquet", "jsonl")]
    for ex in sets[1:]:
        np.testing.assert_array_equal(ex.tokens, sets[0].tokens)
        np.testing.assert_array_equal(ex.domain_N, sets[0].domain_N)
    with pytest.raises(D.DataError, match=r"d.json, row 1, field 'output': missing field"):
        (tmp_path / "d.json").write_text(json.dumps([GOOD[0], {"instruction": "q"}]))
        D.load_examples(D.DatasetSpec(str(tmp_path / "d.json"), **SPEC), tok)


@pytest.mark.parametrize("chat", [False, True])
def test_loss_mask_covers_exactly_the_response(chat, tok, chat_tok, tmp_path):
    tk = chat_tok if chat else tok
    rows = GOOD[:4] + [{"instruction": "Ünïcödé {braces} and\ttabs?", "output": "  spaced\nanswer ✓ ", "source": "x"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    ex, _ = D.load_examples(D.DatasetSpec(str(path), **SPEC), tk, max_length=256)
    batch = D.pad_batch(ex, np.arange(len(ex)), pad_id=tk.pad_token_id, length_multiple=16)
    assert batch["tokens"].shape[1] % 16 == 0
    for b, row in enumerate(rows):
        toks, loss, attn = batch["tokens"][b], batch["loss_mask"][b], batch["attention_mask"][b]
        assert loss.sum() > 0 and np.all(attn[loss == 1] == 1)
        n = attn.sum()
        assert np.all(attn[:n] == 1) and np.all(toks[n:] == tk.pad_token_id)  # right padding
        response = tk.decode(toks[loss == 1])
        prompt = tk.decode(toks[(attn == 1) & (loss == 0)])
        if chat:
            assert response == row["output"] + "<|im_end|>\n"
            assert prompt == f"<|im_start|>user\n{row['instruction']}<|im_end|>\n<|im_start|>assistant\n"
        else:
            assert response == row["output"] + "<|endoftext|>"
            assert prompt == D.ALPACA.replace("{prompt}", row["instruction"])
        assert np.all(loss[n - loss.sum():n] == 1)  # one block at the end of the real tokens


def test_input_field_and_plain_template_override(tok, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Add.", "input": "2 and 3", "output": "5"}])
    spec = D.DatasetSpec(str(path), input_field="input")
    ex, _ = D.load_examples(spec, tok, D.PromptTemplate(kind="plain", prompt_format="Q: {prompt}\nA: "))
    p = ex.prompt_lengths_N[0]
    assert tok.decode(ex.ids(0)[:p]) == "Q: Add.\n\n2 and 3\nA: "
    with pytest.raises(ValueError, match="chat template"):
        D.PromptTemplate(kind="chat").resolve(tok)


@pytest.fixture(scope="module")
def examples(tok):
    rows = [D.Row(f"q{i} " + "word " * (i % 7), f"a{i} " + "x " * (3 * i % 11), ["u", "v"][i % 2], i)
            for i in range(24)]
    return D.tokenize_rows(rows, tok, D.PromptTemplate(kind="plain"), max_length=256)


def test_epoch_shuffle_is_deterministic_and_resumes_exactly(examples, tok):
    key = jax.random.key(3)
    sampler = Epochs(np.ones(len(examples), np.int32))
    it = D.BatchIterator(examples, sampler, key, 6, pad_id=tok.pad_token_id, length_multiple=8)
    first = [next(it) for _ in range(8)]
    ids = np.concatenate([b["example_id"] for b in first])
    assert sorted(ids[:24]) == list(range(24)) and sorted(ids[24:]) == list(range(24))  # epochs
    assert not np.array_equal(ids[:24], ids[24:])  # reshuffled per epoch
    again = D.BatchIterator(examples, sampler, key, 6, pad_id=tok.pad_token_id, length_multiple=8)
    state = None
    for s in range(5):
        next(again)
        if s == 2:
            state = json.loads(json.dumps(again.get_state()))
    resumed = D.BatchIterator(examples, sampler, key, 6, pad_id=tok.pad_token_id, length_multiple=8)
    resumed.set_state(state)
    for b in first[3:]:
        got = next(resumed)
        assert set(got) == set(b) == {"tokens", "loss_mask", "attention_mask", "example_id", "loss_weight", "domain"}
        for k in b:
            np.testing.assert_array_equal(got[k], b[k])
    other = D.BatchIterator(examples, sampler, jax.random.key(4), 6, pad_id=tok.pad_token_id)
    assert not np.array_equal(next(other)["example_id"], first[0]["example_id"])
    np.testing.assert_array_equal(first[0]["tokens"][0, :examples.lengths_N[ids[0]]], examples.ids(ids[0]))


def test_length_bucketing_keeps_counts_and_cuts_padding(examples, tok):
    counts = np.where(np.arange(24) % 4 == 0, 2, 1)  # upsampled items appear twice per epoch
    E, B = int(counts.sum()), 5  # E = 30: one window is the whole epoch
    bucketed = D.LengthBucketedEpochs(examples.lengths_N, counts, window=E // B)
    per_epoch = E // B
    it = D.BatchIterator(examples, bucketed, jax.random.key(0), B, pad_id=tok.pad_token_id, length_multiple=1)
    batches = [next(it) for _ in range(2 * per_epoch)]
    for e in range(2):
        ids = np.concatenate([b["example_id"] for b in batches[e * per_epoch:(e + 1) * per_epoch]])
        np.testing.assert_array_equal(np.bincount(ids, minlength=24), counts)  # E divisible by B
    padded = sum(b["tokens"].size for b in batches[:per_epoch])
    shuffled = D.BatchIterator(examples, Epochs(counts), jax.random.key(0), B, pad_id=0, length_multiple=1)
    assert padded < sum(next(shuffled)["tokens"].size for _ in range(per_epoch))
    # sorted within the window: each batch holds consecutive lengths of the sorted epoch
    lens = np.sort(np.concatenate([examples.lengths_N[b["example_id"]] for b in batches[:per_epoch]]))
    assert padded == B * sum(lens[B - 1::B])
    it2 = D.BatchIterator(examples, D.LengthBucketedEpochs(examples.lengths_N, counts, window=E // B),
                          jax.random.key(0), B, pad_id=tok.pad_token_id, length_multiple=1, step=per_epoch + 1)
    np.testing.assert_array_equal(next(it2)["tokens"], batches[per_epoch + 1]["tokens"])


def test_domain_mixture_draws_domains_with_loss_weights(examples, tok):
    mixture, pool = D.domain_mixture(examples, np.array([0.0, 1.0]), loss_weights=np.array([3.0, 0.5]))
    assert mixture.domain_sizes == (12, 12)
    it = D.BatchIterator(examples, mixture, jax.random.key(1), 8, pad_id=tok.pad_token_id, pool=pool)
    for _ in range(3):
        b = next(it)
        assert np.all(b["domain"] == 1) and np.all(np.isin(b["example_id"], np.arange(1, 24, 2)))
        np.testing.assert_allclose(b["loss_weight"], 0.5)
        assert [examples.rows[i].domain for i in b["example_id"]] == ["v"] * 8
    with pytest.raises(ValueError, match="pool"):
        D.BatchIterator(examples, Epochs(np.ones(5, int)), jax.random.key(1), 2, pad_id=0)


def test_offline_math_sets_read_like_the_real_ones(tok, tmp_path):
    import re

    from lsb_jax.llm import mathdata as M

    cfg = M.OfflineMathConfig(train=(("gsm_symbolic", 6), ("chain_sum", 6), ("simple_equations", 4)),
                              test_size=8, seed=3)
    paths = M.write_offline_math(tmp_path / "a", cfg)
    M.write_offline_math(tmp_path / "b", cfg)
    M.write_offline_math(tmp_path / "c", M.OfflineMathConfig(train=cfg.train, test_size=8, seed=4))
    for name in ("train", "test"):  # deterministic in the seed
        assert paths[name].read_bytes() == (tmp_path / "b" / paths[name].name).read_bytes()
        assert paths[name].read_bytes() != (tmp_path / "c" / paths[name].name).read_bytes()
    train_spec, test_spec = M.offline_specs(tmp_path / "a")
    for real, offline in ((M.MATHINSTRUCT, train_spec), (M.GSM8K_TEST, test_spec)):
        assert (real.prompt_field, real.response_field, real.answer_format) == \
               (offline.prompt_field, offline.response_field, offline.answer_format)
    ex, report = D.load_examples(train_spec, tok, max_length=1024)
    assert report.read == report.kept == 16
    assert ex.domain_names == ("rg_chain_sum", "rg_gsm_symbolic", "rg_simple_equations")
    np.testing.assert_array_equal(ex.domain_sizes(), [6, 6, 4])
    test, _ = D.read_validated(test_spec)
    assert len(test) == 8 and not {r.prompt for r in test} & {r.prompt for r in ex.rows}
    for row in test:  # GSM8K's format: worked steps, then "#### integer"; the answer appears in the steps
        steps, answer = row.response.rsplit("\n#### ", 1)
        assert re.fullmatch(r"-?\d+", answer) and answer in steps
    for row in ex.rows:  # MathInstruct's chain-of-thought ending; chain sums checked by evaluating them
        answer = re.fullmatch(r"(?s).*\nThe answer is (-?\d+)\.", row.response).group(1)
        if row.domain == "rg_chain_sum":
            expression = row.prompt.split(":")[-1].strip().rstrip("=")
            assert eval(expression, {"__builtins__": {}}) == int(answer)  # noqa: S307 (digits and +/-)


def test_planted_math_has_exact_levels_correct_answers_and_a_seeded_order(tmp_path):
    """The planted family: each level exactly its share of the rows, a level's rows have its number
    of terms, the answers are the sums (checked by Python's own arithmetic on the expression), the
    files are a function of the seed, and `read_labels` returns the level of any source row."""
    import re

    from lsb_jax.llm import mathdata as M

    cfg = M.PlantedMathConfig(levels=(("a", 2, 0.25), ("b", 3, 0.5), ("c", 4, 0.25)), train_size=40, test_size=21,
                              seed=5)
    paths = M.write_planted_math(tmp_path / "x", cfg)
    M.write_planted_math(tmp_path / "y", cfg)
    M.write_planted_math(tmp_path / "z", M.PlantedMathConfig(levels=cfg.levels, train_size=40, test_size=21, seed=6))
    for name in ("train", "test"):
        assert paths[name].read_bytes() == (tmp_path / "y" / paths[name].name).read_bytes()
        assert paths[name].read_bytes() != (tmp_path / "z" / paths[name].name).read_bytes()
    train = [json.loads(x) for x in paths["train"].read_text().splitlines()]
    test = [json.loads(x) for x in paths["test"].read_text().splitlines()]
    assert [sum(r["level"] == v for r in train) for v in "abc"] == [10, 20, 10]
    assert [sum(r["level"] == v for r in test) for v in "abc"] == [5, 11, 5]      # the largest remainder (10.5)
    four = tuple((str(i), 2, 0.25) for i in range(4))
    for size in range(0, 40):   # every level within one row of its share, in total exactly `size`
        for levels in (cfg.levels, four, (("a", 2, 0.1), ("b", 2, 0.9))):
            got = M.level_sizes(levels, size)
            assert sum(got) == size and all(abs(n - share * size) < 1 for n, (_, _, share) in zip(got, levels))
    terms = {"a": 2, "b": 3, "c": 4}
    for r in train + test:
        text, answer = (r["instruction"], r["output"]) if "output" in r else (r["question"], r["answer"])
        expression = re.fullmatch(r"What is (.*)\?", text).group(1)
        assert len(re.findall(r"\d", expression)) == terms[r["level"]]
        got = re.fullmatch(r"(?:The answer is |#### )(-?\d+)\.?", answer).group(1)
        assert eval(expression, {"__builtins__": {}}) == int(got)  # noqa: S307 (digits and +/-)
    assert {r["source"] for r in train} == {M.PLANTED_SOURCE}
    train_spec, test_spec = M.offline_specs(tmp_path / "x")
    assert D.read_labels(train_spec, "level", [3, 0, 39]) == [train[3]["level"], train[0]["level"], train[39]["level"]]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "q", "output": "a", "level": "b"},
                                               {"instruction": "q", "output": "a"}])
    with pytest.raises(D.DataError, match=r"bad.jsonl, row 1 \(line 2\), field 'level': missing field"):
        D.read_labels(D.DatasetSpec(str(bad)), "level", [0, 1])
    with pytest.raises(D.DataError, match="row 7.*no such row"):
        D.read_labels(D.DatasetSpec(str(bad)), "level", [7])
    with pytest.raises(ValueError, match="sum to 1"):
        M.PlantedMathConfig(levels=(("a", 2, 0.5), ("b", 3, 0.4)))


def test_max_chars_hub_labels_and_raw_keys(examples, tok, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [GOOD[0], {"instruction": "q" * 50, "output": "a"}])
    with pytest.raises(D.DataError, match=r"row 1 \(line 2\), field 'instruction': too long: 50 characters"):
        D.read_validated(D.DatasetSpec(str(path)), max_chars=40)
    assert D.DatasetSpec("openai/gsm8k", config="main", split="test").label == "openai/gsm8k:main:test"
    assert not D.is_local("openai/gsm8k") and D.is_local(str(path))
    raw = jax.random.PRNGKey(5)  # the train state's raw uint32[2] keys work like typed ones
    typed = jax.random.wrap_key_data(raw)
    for sampler in (D.LengthBucketedEpochs(examples.lengths_N), Epochs(np.ones(24, np.int32))):
        a = D.BatchIterator(examples, sampler, raw, 4, pad_id=0).batch_at(7)["example_id"]
        b = D.BatchIterator(examples, sampler, typed, 4, pad_id=0).batch_at(7)["example_id"]
        np.testing.assert_array_equal(a, b)


def test_a_tokenizer_without_a_pad_token_pads_with_eos(examples):
    """Llama 3 and Pythia tokenizers ship without a pad token: batches pad with eos (as generation
    does), never crash; padded positions are out of the attention and loss masks."""
    nopad = tiny_tokenizer()
    nopad.pad_token = None
    assert nopad.pad_token_id is None and nopad.eos_token_id is not None
    assert D.pad_token_id(nopad) == nopad.eos_token_id
    it = D.BatchIterator(examples, Epochs(np.ones(len(examples), np.int32)), jax.random.key(0), 6,
                         pad_id=D.pad_token_id(nopad), length_multiple=8)
    batch = next(it)
    padded = batch["attention_mask"] == 0
    assert padded.any() and (batch["tokens"][padded] == nopad.eos_token_id).all()
    assert not batch["loss_mask"][padded].any()
    nopad.eos_token = None
    assert D.pad_token_id(nopad) == 0
