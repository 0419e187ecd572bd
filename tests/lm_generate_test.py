"""KV-cache decoding (lsb_jax.models.lm.generate) against transformers' `generate`.

Greedy tokens must equal `model.generate(do_sample=False)` token for token on left-padded
batches of prompts of different lengths (Gemma 3 / Qwen3 with a sliding window shorter than
prompt + generation); stop tokens pad the rest of a row as transformers does; sampling is
reproducible from its key, degenerates to greedy (top_k=1, temperature -> 0) and follows the
top-k / top-p truncated distribution.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from lm_fixtures import FAST_COMPILE, VOCAB, build  # noqa: E402
from lsb_jax.models.lm import load_pretrained  # noqa: E402
from lsb_jax.models.lm.generate import (  # noqa: E402
    _stop_hit, generate, generate_text, sample_logits, truncate_at_stop_strings,
)

N, P = 10, 7
FAMILIES = ["neox_parallel", "phi2_qk_layernorm_gqa", "llama3_gqa_scaled", "qwen3_tied_gqa_sliding", "gemma3_softcap"]


def _prompts():
    rng = np.random.RandomState(1)
    prompt_BxP = rng.randint(1, VOCAB, (3, P))
    mask_BxP = np.ones_like(prompt_BxP)
    mask_BxP[1, :3] = 0  # left padding: rows of 7, 4 and 2 real tokens
    mask_BxP[2, :5] = 0
    prompt_BxP[mask_BxP == 0] = 0
    return prompt_BxP, mask_BxP


def _hf_generate(hf, prompt_BxP, mask_BxP, eos=None, pad=0):
    hf.generation_config.eos_token_id = eos
    with torch.no_grad():
        out = hf.generate(torch.tensor(prompt_BxP), attention_mask=torch.tensor(mask_BxP),
                          max_new_tokens=N, do_sample=False, pad_token_id=pad).numpy()[:, P:]
    return np.pad(out, ((0, 0), (0, N - out.shape[1])), constant_values=pad)  # all rows stopped early


def _generate(model, prompt_BxP, mask_BxP, **kw):
    return jax.device_get(generate(model, prompt_BxP, mask_BxP, max_new_tokens=N,
                                   compiler_options=FAST_COMPILE, **kw))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    return build("llama3_gqa_scaled", folder), load_pretrained(folder)


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_matches_transformers_with_left_padding(name, tmp_path):
    hf = build(name, tmp_path)
    prompt_BxP, mask_BxP = _prompts()
    ref_BxN = _hf_generate(hf, prompt_BxP, mask_BxP)
    tokens_BxN, lengths_B = _generate(load_pretrained(tmp_path), prompt_BxP, mask_BxP)
    np.testing.assert_array_equal(tokens_BxN, ref_BxN)
    np.testing.assert_array_equal(lengths_B, [N] * 3)
    if name.startswith(("gemma3", "qwen3")):  # the window is exercised: it is shorter than the text
        assert hf.config.sliding_window < P + N


def test_stop_tokens_pad_like_transformers(llama):
    hf, model = llama
    prompt_BxP, mask_BxP = _prompts()
    free_BxN, _ = _generate(model, prompt_BxP, mask_BxP)
    stop = int(free_BxN[0, 3])  # row 0 stops at its 4th token (other rows wherever it occurs)
    tokens_BxN, lengths_B = _generate(model, prompt_BxP, mask_BxP, stop_token_ids=[stop], pad_id=5)
    np.testing.assert_array_equal(tokens_BxN, _hf_generate(hf, prompt_BxP, mask_BxP, eos=stop, pad=5))
    for row, n in zip(free_BxN, lengths_B):
        hits = np.flatnonzero(row == stop)
        assert n == (hits[0] + 1 if len(hits) else N)


def test_stop_sequences_match_the_tail_of_generated_tokens():
    out_BxN = jnp.asarray([[4, 7, 9, 0], [7, 9, 7, 9], [9, 7, 0, 0]], jnp.int32)
    hit = jax.jit(_stop_hit, static_argnums=2, compiler_options=FAST_COMPILE)
    stops = ((7, 9), (3,))
    assert hit(out_BxN, 0, stops).tolist() == [False, False, False]
    assert hit(out_BxN, 1, stops).tolist() == [False, True, False]  # row 2 is 9, 7: wrong order
    assert hit(out_BxN, 2, stops).tolist() == [True, False, False]
    assert hit(out_BxN, 3, ((7, 9), (0,))).tolist() == [True, True, True]


def test_sampling_reproducible_and_degenerates_to_greedy(llama):
    _, model = llama
    prompt_BxP, mask_BxP = _prompts()
    greedy_BxN, _ = _generate(model, prompt_BxP, mask_BxP)
    sample = lambda seed, **kw: _generate(model, prompt_BxP, mask_BxP,  # noqa: E731
                                          key=jax.random.key(seed), **{"temperature": 1.0, **kw})[0]
    np.testing.assert_array_equal(sample(0, top_k=1), greedy_BxN)
    np.testing.assert_array_equal(sample(1, temperature=1e-5), greedy_BxN)
    np.testing.assert_array_equal(sample(2, top_p=1e-6), greedy_BxN)
    np.testing.assert_array_equal(sample(3), sample(3))
    assert (sample(3) != sample(4)).any()
    with pytest.raises(ValueError, match="key"):
        generate(model, prompt_BxP, mask_BxP, max_new_tokens=N, temperature=1.0)
    # rows draw with fold_in(key, b): the same prompt in every row gives different samples, and
    # explicit per-row keys reproduce them row by row
    same_BxP = np.repeat(prompt_BxP[-1:], len(prompt_BxP), 0)
    same_mask = np.repeat(mask_BxP[-1:], len(prompt_BxP), 0)
    rows_BxN = _generate(model, same_BxP, same_mask, key=jax.random.key(6), temperature=1.0)[0]
    assert len({tuple(r) for r in rows_BxN}) > 1
    keys_B = jax.vmap(lambda b: jax.random.fold_in(jax.random.key(6), b))(jnp.arange(len(prompt_BxP)))
    np.testing.assert_array_equal(_generate(model, same_BxP, same_mask, key=keys_B, temperature=1.0)[0], rows_BxN)
    one = _generate(model, same_BxP[:1], same_mask[:1], key=keys_B[2:3], temperature=1.0)[0]
    np.testing.assert_array_equal(one[0], rows_BxN[2])


def test_zero_new_tokens_and_stop_sequences_longer_than_the_output(llama):
    _, model = llama
    prompt_BxP, mask_BxP = _prompts()
    tokens_BxN, lengths_B = jax.device_get(
        generate(model, prompt_BxP, mask_BxP, max_new_tokens=0))
    assert tokens_BxN.shape == (len(prompt_BxP), 0) and lengths_B.tolist() == [0] * len(prompt_BxP)
    greedy_BxN, greedy_B = jax.device_get(generate(model, prompt_BxP, mask_BxP, max_new_tokens=2,
                                                   compiler_options=FAST_COMPILE))
    long_BxN, long_B = jax.device_get(generate(model, prompt_BxP, mask_BxP, max_new_tokens=2,
                                               stop_sequences=[[1, 2, 3]], compiler_options=FAST_COMPILE))
    np.testing.assert_array_equal(long_BxN, greedy_BxN)
    np.testing.assert_array_equal(long_B, greedy_B)


def test_sample_logits_follows_truncated_distribution():
    probs_V = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
    logits_BxV = jnp.asarray(np.log(np.tile(probs_V, (20000, 1))), jnp.float32)

    def freqs(top_k, top_p, temperature=1.0):
        run = jax.jit(sample_logits, compiler_options=FAST_COMPILE)
        tok_B = np.asarray(run(logits_BxV, jax.random.key(0), temperature, top_k, top_p))
        return np.bincount(tok_B, minlength=5) / len(tok_B)

    np.testing.assert_allclose(freqs(0, 1.0), probs_V, atol=0.015)
    np.testing.assert_allclose(freqs(2, 1.0), [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0], atol=0.015)
    # top_p 0.8: 0.4 + 0.3 < 0.8, so 0.15 is needed too; 0.1 and 0.05 are cut.
    np.testing.assert_allclose(freqs(0, 0.8), [0, 0.4 / 0.85, 0, 0.3 / 0.85, 0.15 / 0.85], atol=0.015)
    sharp = probs_V ** 2 / (probs_V ** 2).sum()  # temperature 0.5 squares the probabilities
    np.testing.assert_allclose(freqs(0, 1.0, 0.5), sharp, atol=0.015)


def test_generate_text_and_stop_strings(llama):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", pad_token="w0")
    _, model = llama
    prompt_BxP, mask_BxP = _prompts()
    texts = [" ".join(f"w{t}" for t, m in zip(row, mrow) if m) for row, mrow in zip(prompt_BxP, mask_BxP)]
    free_BxN, _ = _generate(model, prompt_BxP, mask_BxP)
    stop = f"w{free_BxN[0, 4]} "
    got = generate_text(model, tokenizer, texts, max_new_tokens=N, stop_token_ids=(),
                        stop_strings=[stop], compiler_options=FAST_COMPILE)
    full = [" ".join(f"w{t}" for t in row) for row in free_BxN]
    assert got == [truncate_at_stop_strings(text, [stop]) for text in full]
    assert len(got[0]) < len(full[0])
    assert truncate_at_stop_strings("a. b. c", [". c", "b"]) == "a. "
    assert truncate_at_stop_strings("abc", ["x", ""]) == "abc"
