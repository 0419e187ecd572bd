"""Parity of lsb_jax.models.lm.Decoder with transformers (PyTorch) on tiny random checkpoints.

For every family and quirk: fp32 logits within 1e-4 of `AutoModelForCausalLM` on a batch with
left and right padding (same attention_mask and position_ids), and per-example response-token
losses equal to torch's cross_entropy on the HF logits.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from lm_fixtures import CASES, FAST_COMPILE, T, build, tokens  # noqa: E402
from lsb_jax.models.lm import load_pretrained, positions_from_mask, sequence_loss  # noqa: E402

PAD = 3  # row 2 = row 0 left-padded by PAD; row 3 = the same tokens right-padded
MAX_ERR: dict[str, float] = {}


def _batch():
    tok = tokens(2)
    tok_BxT = np.concatenate([tok, tok[:1], np.roll(tok[:1], -PAD, axis=1)])
    attn_BxT = np.ones_like(tok_BxT)
    attn_BxT[2, :PAD] = 0
    attn_BxT[3, T - PAD:] = 0
    loss_mask_BxT = np.zeros_like(tok_BxT)
    loss_mask_BxT[:, T // 2:] = 1
    loss_mask_BxT[1, -2:] = 0
    loss_mask_BxT[3] = np.roll(loss_mask_BxT[2], -PAD)
    return tok_BxT, attn_BxT, loss_mask_BxT


def _forward_and_loss(graphdef, params, batch):
    model = nnx.merge(graphdef, params)
    attn_BxT = batch["attention_mask"]
    logits_BxTxV = model(batch["tokens"], positions_BxT=positions_from_mask(attn_BxT),
                         attention_mask_BxT=attn_BxT)
    return logits_BxTxV, sequence_loss(model, batch, chunk_size=5)


_forward_and_loss_jit = jax.jit(_forward_and_loss, static_argnums=0, compiler_options=FAST_COMPILE)


def _torch_losses(logits_BxTxV, tokens_BxT, loss_mask_BxT):
    """Per-example mean CE over masked targets, computed independently in torch."""
    nll = torch.nn.functional.cross_entropy(
        logits_BxTxV[:, :-1].transpose(1, 2), tokens_BxT[:, 1:], reduction="none")
    mask = loss_mask_BxT[:, 1:].to(nll.dtype)
    return ((nll * mask).sum(1) / mask.sum(1)).numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_losses_match_transformers(name, tmp_path):
    hf = build(name, tmp_path)
    graphdef, params = nnx.split(load_pretrained(tmp_path))
    tok_BxT, attn_BxT, loss_mask_BxT = _batch()
    pos_BxT = np.asarray(positions_from_mask(jnp.asarray(attn_BxT)))
    with torch.no_grad():
        ref = hf(torch.tensor(tok_BxT), attention_mask=torch.tensor(attn_BxT),
                 position_ids=torch.tensor(pos_BxT)).logits
    batch = dict(tokens=tok_BxT, attention_mask=attn_BxT, loss_mask=loss_mask_BxT)
    out, (loss_B, count_B) = jax.device_get(_forward_and_loss_jit(graphdef, params, batch))

    real = attn_BxT.astype(bool)
    MAX_ERR[name] = float(np.abs(out - ref.numpy())[real].max())
    np.testing.assert_allclose(out[real], ref.numpy()[real], atol=1e-4, rtol=0)
    # Padding is invisible: the left- and right-padded copies of row 0 agree.
    np.testing.assert_allclose(out[2, PAD:], out[3, :T - PAD], atol=1e-5, rtol=0)

    ref_B = _torch_losses(ref, torch.tensor(tok_BxT), torch.tensor(loss_mask_BxT))
    np.testing.assert_allclose(loss_B, ref_B, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss_B[2], loss_B[3], rtol=1e-5)
    np.testing.assert_array_equal(count_B, loss_mask_BxT[:, 1:].sum(1))


def test_report_max_errors():
    """Max |logit error| per case over real tokens (run with -s to see it)."""
    for name, err in sorted(MAX_ERR.items()):
        print(f"{name:28s} max |Δlogit| = {err:.2e}")
        assert err < 1e-4
