"""Synthesis of hard-example variants (lsb_jax.llm.synthesis): parsing and dedup on hand-written
generations, the keep rule vs an independent numpy selection, generation vs a direct argmax loop,
re-scoring vs PyTorch, and no test problem ever in the output."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from lsb_jax.llm import pipeline as pl  # noqa: E402
from lsb_jax.llm import synthesis as syn  # noqa: E402
from lsb_jax.llm.data import PromptTemplate, Row  # noqa: E402
from lsb_jax.llm.finetune import FinetuneConfig, prepare  # noqa: E402
from lsb_jax.llm.scoring import jit_scorer, make_score_loss  # noqa: E402

CFG = syn.SynthesisConfig()
TEMPLATE = PromptTemplate(kind="plain", prompt_format="Question: {prompt}\nAnswer: ")
TEXTS = ["Question: 12 + 30 =\nAnswer: 12 + 30 = 42.\nThe answer is 42.",
         "Question: Solve for x: 3*x = 9\nAnswer: x = 3.\nThe answer is 3.",
         "Problem: 4 + 5 =\nSolution: 9. The answer is 9.\n\nWrite a new problem"] * 10


def row(prompt, response, domain="a", i=0):
    return Row(prompt, response, domain, i)


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text,expected", [
    (" 7 + 8 =\nSolution: 7 + 8 = 15.\nThe answer is 15.", ("7 + 8 =", "7 + 8 = 15.\nThe answer is 15.")),
    # the model goes on to another problem: cut there
    (" 7 + 8 =\nSolution: 15.\n\nProblem: 1 + 1 =\nSolution: 2.", ("7 + 8 =", "15.")),
    (" 7 + 8 = 15", "no_solution_marker"),
    ("\nSolution: 15.", "empty_problem"),
    (" 7 + 8 =\nSolution:   \n", "empty_solution"),
    (" 7 + 8 =\nSolution: fifteen", "no_answer"),
    ("", "no_solution_marker"),
])
def test_parse_variant_hand_written(text, expected):
    assert syn.parse_variant(text, CFG) == expected


def test_parse_variant_without_answer_check():
    cfg = syn.SynthesisConfig(require_answer=False)
    assert syn.parse_variant(" 7 + 8 =\nSolution: fifteen", cfg) == ("7 + 8 =", "fifteen")


def test_variant_pairs_round_trip_through_the_parser():
    rows = [row(f"{i} + 1 =", f"{i + 1}. The answer is {i + 1}.", "ab"[i % 2], i) for i in range(7)]
    rows.append(row("solo", "1", "c", 7))                 # alone in its domain: no pair
    pairs = syn.variant_pairs(rows, CFG, seed=3)
    assert len(pairs) == 7
    by_prompt = {syn.synthesis_prompt(r, CFG): r for r in rows}
    for p in pairs:
        a = by_prompt[p.prompt]
        problem, solution = syn.parse_variant(p.response, CFG)
        b = next(r for r in rows if r.prompt == problem)
        assert b.response == solution and b.domain == a.domain and b.source_row != a.source_row
    assert syn.synthesis_prompt(rows[0], CFG).endswith("Problem:")


def test_config_validation():
    with pytest.raises(ValueError, match="response"):
        syn.SynthesisConfig(prompt_format="{prompt} only")
    with pytest.raises(ValueError, match="q must be"):
        syn.SynthesisConfig(q=1.5)
    with pytest.raises(ValueError, match="keep"):
        syn.SynthesisConfig(keep="all")


# ----------------------------------------------------------------------------- dedup


def test_deduplicate_hand_written():
    train = ["What is 2 + 2?", "Solve for x: 3*x = 9"]
    test = ["What is 5 + 7?", "Compute 10 - 3."]
    cands = [row("What is 5 + 7?", "12"),            # test, exact
             row("  what IS 5 +   7? ", "12"),        # test, normalized
             row("What is 2 + 2?", "4"),              # train, exact
             row("solve for X: 3*x = 9", "3"),        # train, normalized
             row("What is 6 + 6?", "12"),             # new
             row("what is 6 + 6?", "12"),             # repeats an earlier variant
             row("Compute 10 - 4.", "6")]             # new (differs from the test problem)
    kept, dups = syn.deduplicate(cands, train=train, test=test)
    assert [r.prompt for r in kept] == ["What is 6 + 6?", "Compute 10 - 4."]
    assert dups == {"test_exact": 1, "test_normalized": 1, "train_exact": 1, "train_normalized": 1,
                    "generated": 1}


# ----------------------------------------------------------------------------- keep rule


def numpy_quantile_reference(x, q):
    """Linear interpolation between order statistics at position q (n - 1), written out."""
    s = np.sort(np.asarray(x, np.float64))
    pos = q * (len(s) - 1)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_keep_quantile_matches_an_independent_selection(q):
    r = np.random.default_rng(0)
    hard = r.gamma(2.0, 1.0, 37)
    losses = np.concatenate([r.gamma(2.0, 1.0, 50), [np.nan]])
    mask, threshold = syn.keep_mask(losses, hard, syn.SynthesisConfig(keep="quantile", q=q))
    t = numpy_quantile_reference(hard, q)
    assert threshold == pytest.approx(t, rel=1e-12)
    expected = [i for i, x in enumerate(losses) if not np.isnan(x) and x >= t]
    assert np.flatnonzero(mask).tolist() == expected


@pytest.mark.parametrize("m", [0, 1, 7, 50, 80])
def test_keep_top_m_matches_an_independent_selection(m):
    r = np.random.default_rng(1)
    losses = np.round(r.gamma(2.0, 1.0, 50), 1)          # ties: broken by generation order
    losses[3] = np.nan
    mask, threshold = syn.keep_mask(losses, [], syn.SynthesisConfig(keep="top_m", top_m=m))
    ranked = sorted((i for i in range(50) if i != 3), key=lambda i: (-losses[i], i))
    assert threshold is None and set(np.flatnonzero(mask)) == set(ranked[:m])


def test_keep_quantile_needs_the_hard_losses():
    with pytest.raises(ValueError, match="hard cluster"):
        syn.keep_mask([1.0], [], CFG)


# ----------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = pl.train_tokenizer(TEXTS, vocab_size=300)
    spec = pl.ScratchModel("gpt_neox", hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    model = pl.init_decoder(spec.hf_config(tok), seed=1, init_std=0.3)
    folder = pl.save_model(model, tok, tmp_path_factory.mktemp("tiny") / "m")
    return tok, model, folder


def argmax_loop(model, ids, max_new, eos, pad_to=192):
    """Greedy decoding by full forward passes (no cache), one token at a time; the sequence is
    right-padded to a fixed length (a causal model's logits at real positions do not see it), so
    one jitted forward serves every step."""
    from flax import nnx
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    out = []
    for _ in range(max_new):
        seq = ids + out
        x = np.zeros((1, pad_to), np.int32)
        x[0, :len(seq)] = seq
        logits = np.asarray(forward(state, jnp.asarray(x)))[0, len(seq) - 1]
        out.append(int(np.argmax(logits)))
        if out[-1] == eos:
            break
    return out


def test_greedy_generation_equals_a_direct_argmax_loop(tiny):
    tok, model, _ = tiny
    rows = [row("12 + 30 =", "42. The answer is 42."), row("Solve for x: 3*x = 9", "x = 3. The answer is 3."),
            row("1 =", "1")]
    cfg = syn.SynthesisConfig(temperature=0.0, max_new_tokens=12, batch_size=2)
    (texts,) = syn.generate_variants(model, tok, rows, cfg, key=None)
    for r, text in zip(rows, texts):
        ids = tok(syn.synthesis_prompt(r, cfg))["input_ids"]
        ref = argmax_loop(model, ids, 12, tok.eos_token_id)
        assert text == tok.decode(ref, skip_special_tokens=True)


def test_sampled_variants_follow_the_key(tiny):
    tok, model, _ = tiny
    rows = [row("12 + 30 =", "42. The answer is 42.")] * 3
    cfg = syn.SynthesisConfig(temperature=1.0, top_p=1.0, num_variants=2, max_new_tokens=8, batch_size=4)
    a = syn.generate_variants(model, tok, rows, cfg, key=jax.random.key(0))
    assert a == syn.generate_variants(model, tok, rows, cfg, key=jax.random.key(0))   # a function of the key
    assert a[0] != a[1]                                       # variant v uses fold_in(key, v)
    assert a != syn.generate_variants(model, tok, rows, cfg, key=jax.random.key(1))
    with pytest.raises(ValueError, match="key"):
        syn.generate_variants(model, tok, rows, cfg, key=None)


def torch_losses(folder, tok, rows):
    """Mean next-token CE over the response tokens (+ eos), one row at a time, in PyTorch."""
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    out = []
    for r in rows:
        p = tok(TEMPLATE.prompt_format.replace("{prompt}", r.prompt))["input_ids"]
        ids = p + tok(r.response)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(ids[1:]), reduction="none").numpy()
        out.append(nll[len(p) - 1:].mean())
    return np.asarray(out)


def test_synthesize_end_to_end_no_leak_and_proxy_losses(tiny, monkeypatch):
    tok, model, folder = tiny
    hard = [row("12 + 30 =", "42. The answer is 42.", "a", 0), row("3 * 4 =", "12. The answer is 12.", "b", 1)]
    train = [h.prompt for h in hard] + ["5 + 5 ="]
    test = ["7 + 8 =", "9 - 2 ="]
    generations = [[" 7 + 8 =\nSolution: 15. The answer is 15.",        # test leak (exact)
                    " 6 * 7 =\nSolution: 42. The answer is 42."],       # ok
                   [" 13 + 31 =\nSolution: 44. The answer is 44.",      # ok
                    " 9  -  2 =\nSolution: 7. The answer is 7."],       # test leak (normalized)
                   [" 5 + 5 =\nSolution: 10. The answer is 10.",        # train duplicate
                    " 2 * 2 = 4"],                                      # no solution marker
                   [" 20 + 1 =\nSolution: " + "1 " * 60 + "The answer is 1.",   # too long
                    " 6*7 =\nSolution: no answer here"]]               # no answer
    monkeypatch.setattr(syn, "generate_variants", lambda m, t, rows, cfg, key: generations)
    split, params = prepare(pl.init_decoder(pl.ScratchModel("gpt_neox", hidden_size=32, num_layers=2, num_heads=4,
                                                            intermediate_size=64).hf_config(tok), seed=1,
                                            init_std=0.3), FinetuneConfig())
    score = jit_scorer(make_score_loss(split, FinetuneConfig()))
    cfg = syn.SynthesisConfig(num_variants=4, keep="quantile", q=0.0, score_batch_size=2, bucket=8)
    kept, losses, report = syn.synthesize(
        hard, model, tok, cfg, key=jax.random.key(0), score=score, score_args=(params, split.frozen),
        score_tokenizer=tok, template=TEMPLATE, max_length=48, hard_final_losses=[0.0, 1.0],
        exclude_train=train, exclude_test=test, first_source_row=100)
    assert [r.prompt for r in kept] == ["6 * 7 =", "13 + 31 ="]
    assert [r.domain for r in kept] == ["b", "a"] and [r.source_row for r in kept] == [100, 101]
    normalized_test = {" ".join(t.lower().split()) for t in test}
    assert not any(" ".join(r.prompt.lower().split()) in normalized_test for r in kept)
    assert (report.generated, report.parsed, report.unique, report.too_long, report.scored, report.kept) == \
        (8, 6, 3, 1, 2, 2)
    assert report.unparseable == {"no_solution_marker": 1, "empty_problem": 0, "empty_solution": 0, "no_answer": 1}
    assert report.duplicates == {"test_exact": 1, "test_normalized": 1, "train_exact": 1, "train_normalized": 0,
                                 "generated": 0}
    np.testing.assert_allclose(losses, torch_losses(folder, tok, kept), rtol=2e-5, atol=2e-5)
    # a threshold above every loss keeps nothing
    _, _, report = syn.synthesize(
        hard, model, tok, cfg, key=None, score=score, score_args=(params, split.frozen), score_tokenizer=tok,
        template=TEMPLATE, max_length=48, hard_final_losses=[1e6], exclude_train=train, exclude_test=test)
    assert report.kept == 0 and report.threshold == 1e6 and report.loss["kept"] is None
