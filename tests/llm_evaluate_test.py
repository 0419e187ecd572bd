"""Generation-based evaluation (lsb_jax.llm.evaluate): answer extraction, equivalence, Wilson
intervals against the quadratic that defines them, the comparison table, and end to end runs
with a fake generator (accuracy 1) and a tiny random decoder (well-formed records)."""

import json
import math

import jax
import numpy as np
import pytest

from llm_data_test import tiny_tokenizer
from lsb_jax.llm import data as D
from lsb_jax.llm import evaluate as E
from lsb_jax.llm import mathdata as M

EXTRACT = [
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", "gsm8k"),
    ("so the total is\n#### 1,234\n", "1234", "gsm8k"),
    ("We get $x = \\boxed{\\frac{1}{2}}$ and then 7.", "\\frac{1}{2}", "boxed"),
    ("First \\boxed{3}, corrected: \\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}", "boxed"),
    ("3 + 4 = 7. The answer is 7.", "7", "answer_is"),
    ("The answer is 2. No wait, the answer is: $3.5$.", "3.5", "answer_is"),
    ("the final answer is 12.5 dollars", "12.5", "answer_is"),      # a number followed by words is the number
    ("Total: 9 + 9.\nThe answer is 18 dollars.", "18", "answer_is"),
    ("#### 18 cookies", "18", "gsm8k"),
    ("#### $1,200 in total", "1200", "gsm8k"),
    ("The answer is x + 1.", "x + 1", "answer_is"),                # an expression stays whole
    ("The answer is 2 sqrt(3).", "2 sqrt(3)", "answer_is"),
    ("The answer is 2 x", "2 x", "answer_is"),
    ("#### 3/4", "3/4", "gsm8k"),
    ("so 5 pens\n####\n\nQuestion: 7 apples", "7", "last_number"),  # "####" takes its own line only
    ("The answer is -8917.\n", "-8917", "answer_is"),
    ("He pays $1,200 then gets 35 back, so 1,165 remain", "1165", "last_number"),
    ("a drop of -.5 percent", "-.5", "last_number"),
    ("no digits here", None, "none"),
]


@pytest.mark.parametrize("text,answer,rule", EXTRACT)
def test_extract_answer(text, answer, rule):
    assert E.extract_answer(text) == E.Extraction(answer, rule)


def test_gold_answers_and_equivalence():
    assert E.gold_answer("steps\n#### 1,000", "gsm8k") == "1000"
    assert E.gold_answer("so \\boxed{\\dfrac{14}{3}}.", "boxed") == "\\dfrac{14}{3}"
    assert E.gold_answer(" $\\frac{14}{3}$ ", "raw") == "\\frac{14}{3}"
    with pytest.raises(ValueError, match="####"):
        E.gold_answer("no marker 3", "gsm8k")
    same = [("72.0", "72"), ("1000", "1000"), ("0.5", "\\frac{1}{2}"), ("1/2", "\\frac{1}{2}"),
            ("\\dfrac{14}{3}", "14/3"), ("x + 1", "1 + x"), ("50%", "50"), ("1,234", "1234"),
            ("0.0000010000001", "0.000001")]
    for pred, gold in same:
        assert E.answers_match(pred, gold), (pred, gold)
    for pred, gold in [("71", "72"), (None, "72"), ("\\sqrt{2}", "2"), ("0.3333", "\\frac{1}{3}"),
                       ("3,5", "35"), ("35", "3,5"), ("0", "0.000001"), ("1e-7", "0")]:  # "3,5" is no number
        assert not E.answers_match(pred, gold), (pred, gold)


Z95 = 1.959963984540054  # the 0.975 normal quantile


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (57, 200), (1, 1)])
def test_wilson_interval_solves_its_defining_quadratic(k, n):
    """Wilson's bounds are the roots in p of (k/n - p)^2 = z^2 p (1 - p) / n."""
    ph, z2 = k / n, Z95 ** 2
    roots = np.sort(np.roots([1 + z2 / n, -(2 * ph + z2 / n), ph ** 2]).real)
    lo, hi = E.wilson_interval(k, n)
    np.testing.assert_allclose([lo, hi], roots, atol=1e-12)
    s = E.accuracy_summary([True] * k + [False] * (n - k))
    assert (s["n"], s["correct"], s["ci_method"]) == (n, k, "wilson")
    assert s["ci_low"] <= s["accuracy"] <= s["ci_high"]
    if (k, n) == (0, 10):  # the tabulated 95% Wilson upper bound for 0/10
        assert round(hi, 4) == 0.2775


def test_wilson_confidence_and_empty():
    lo90, hi90 = E.wilson_interval(30, 100, 0.90)
    lo95, hi95 = E.wilson_interval(30, 100)
    assert lo95 < lo90 < 0.3 < hi90 < hi95
    assert E.wilson_interval(0, 0) == (0.0, 1.0)


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("math")
    cfg = M.OfflineMathConfig(train=(("gsm_symbolic", 4), ("chain_sum", 4)), test_size=12, seed=1)
    M.write_offline_math(folder, cfg)
    return M.offline_specs(folder)


def test_fake_generator_with_right_answers_scores_one(offline):
    _, test_spec = offline
    rows, _ = D.read_validated(test_spec)
    golds = {r.prompt: E.gold_answer(r.response, "gsm8k") for r in rows}
    styles = [lambda a: f"Reasoning...\n#### {a}", lambda a: f"So \\boxed{{{a}}}.", lambda a: f"The answer is {a}.",
              lambda a: f"it comes to {a}"]
    fake = lambda qs: [styles[i % 4](golds[q]) for i, q in enumerate(qs)]  # noqa: E731
    records, summary = E.evaluate_generation(rows, fake, answer_format=test_spec.answer_format)
    assert summary["accuracy"] == 1.0 and summary["correct"] == summary["n"] == 12
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx(E.wilson_interval(12, 12))
    assert [r["rule"] for r in records[:4]] == ["gsm8k", "boxed", "answer_is", "last_number"]
    wrong = lambda qs: [f"#### {float(golds[q]) + 1}" for q in qs]  # noqa: E731
    _, bad = E.evaluate_generation(rows, wrong, answer_format="gsm8k")
    assert bad["accuracy"] == 0.0 and bad["no_answer"] == 0


def test_comparison_table():
    res = {"upsample_hard": {"gsm8k": E.accuracy_summary([1] * 60 + [0] * 40)},
           "baseline": {"gsm8k": E.accuracy_summary([1] * 50 + [0] * 50),
                        "math": E.accuracy_summary([1] * 10 + [0] * 90)},
           "mine": {"math": E.accuracy_summary([1] * 12 + [0] * 88)}}
    md, rows = E.comparison_table(res)
    lines = md.strip().split("\n")
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["baseline", "upsample_hard", "mine"]
    hard = next(r for r in rows if r["arm"] == "upsample_hard")
    assert hard["delta"] == pytest.approx(0.1) and hard["relative_gain"] == pytest.approx(0.2)
    mine = next(r for r in rows if r["arm"] == "mine")
    assert mine["relative_gain"] == pytest.approx(0.2) and mine["test_set"] == "math"
    assert "60.0 [" in lines[3] and "+10.0" in lines[3] and "+20.0" in lines[3] and "—" in lines[3]
    assert json.loads(json.dumps(rows)) == rows and len(rows) == 4


def _tiny_decoder(vocab):
    """A 2-layer Llama-style Decoder with numpy random weights (threefry init is slow on CPU)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from lsb_jax.models.lm import Decoder, DecoderConfig, RopeConfig
    from lsb_jax.models.lm.config import FULL

    rope = RopeConfig(theta=10000.0, rotary_dim=8)
    cfg = DecoderConfig(family="llama", vocab_size=vocab, hidden_size=16, num_layers=2, num_heads=2,
                        num_kv_heads=1, head_dim=8, intermediate_size=32, norm="rmsnorm", norm_eps=1e-6,
                        activation="silu", gated_mlp=True, rope=((FULL, rope),),
                        layer_types=(FULL, FULL), attn_scale=8 ** -0.5)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))))
    rng = np.random.RandomState(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.randn(*s.shape), s.dtype), abstract)
    return nnx.merge(graphdef, params)


def test_generation_end_to_end_on_a_tiny_random_model(offline, tmp_path):
    from lm_fixtures import FAST_COMPILE

    tok = tiny_tokenizer()
    _, test_spec = offline
    rows, _ = D.read_validated(test_spec)
    rows = rows[:5]
    model = _tiny_decoder(len(tok))
    # one compiled program: every prompt pads to one 512-token bucket, every batch holds 4 rows
    gen = E.model_generate_fn(model, tok, D.PromptTemplate(kind="plain"), batch_size=4, max_new_tokens=6,
                              bucket=512, compiler_options=FAST_COMPILE)
    records, summary = E.evaluate_generation(rows, gen, answer_format="gsm8k")
    assert summary["n"] == 5 and 0 <= summary["correct"] <= 5 and summary["ci_method"] == "wilson"
    assert [r["example_id"] for r in records] == list(range(5))
    for r, row in zip(records, rows):
        assert r["question"] == row.prompt and r["gold"] == E.gold_answer(row.response, "gsm8k")
        assert isinstance(r["completion"], str) and isinstance(r["correct"], bool)
        assert r["rule"] in ("gsm8k", "boxed", "answer_is", "last_number", "none")
    # a prompt batched with others (length-sorted, left-padded) generates what it does alone
    assert gen([rows[3].prompt]) == [records[3]["completion"]]
    # sampled: question i draws with fold_in(key, i) whatever its batch; repeats of a question differ
    sample = dict(key=jax.random.key(5), temperature=1.0, bucket=512, compiler_options=FAST_COMPILE,
                  max_new_tokens=6)
    questions = [rows[0].prompt] * 3 + [rows[1].prompt] * 3
    by_batch = [E.model_generate_fn(model, tok, D.PromptTemplate(kind="plain"), batch_size=b, **sample)(questions)
                for b in (1, 2, 6)]
    assert by_batch[0] == by_batch[1] == by_batch[2]
    assert len(set(by_batch[0][:3])) > 1 or len(set(by_batch[0][3:])) > 1
    lines = E.to_jsonl(records).splitlines()
    assert [json.loads(x)["example_id"] for x in lines] == list(range(5))
    md, table = E.comparison_table({"baseline": {"offline_gsm": summary}, "sam": {"offline_gsm": summary}})
    assert table[1]["delta"] == 0.0 and md.count("\n") == 4 and not math.isnan(table[0]["accuracy"])




def test_chat_generation_stops_at_the_end_of_turn_token(monkeypatch):
    """A model fine-tuned on a ChatML template ends its answers with <|im_end|>, not eos: generation
    must stop there too (with skip_special_tokens the marker would vanish and the text run on)."""
    import importlib

    G = importlib.import_module("lsb_jax.models.lm.generate")   # the module (the package exports the function)

    chat, plain = tiny_tokenizer(chat=True), tiny_tokenizer()
    im_end = chat.convert_tokens_to_ids("<|im_end|>")
    assert D.end_of_turn_ids(chat, D.PromptTemplate(kind="chat")) == (im_end,)
    assert D.end_of_turn_ids(plain, D.PromptTemplate(kind="plain")) == ()
    seen = []

    def fake_generate(model, prompt_BxP, mask_BxP, *, max_new_tokens, stop_token_ids, pad_id, **kw):
        seen.append(tuple(stop_token_ids))
        return np.zeros((len(prompt_BxP), max_new_tokens), np.int32), np.zeros(len(prompt_BxP), np.int32)

    monkeypatch.setattr(G, "generate", fake_generate)
    E.model_generate_fn(None, chat, D.PromptTemplate(kind="chat"), batch_size=2, max_new_tokens=3)(["a", "b"])
    E.model_generate_fn(None, plain, D.PromptTemplate(kind="plain"), batch_size=2, max_new_tokens=3)(["a"])
    E.model_generate_fn(None, chat, D.PromptTemplate(kind="chat"), batch_size=2, max_new_tokens=3,
                        stop_token_ids=(7,))(["a"])
    assert seen == [(chat.eos_token_id, im_end), (plain.eos_token_id,), (7,)]
