#!/usr/bin/env python3
"""Writes tests/data/tokenizer_cases.json: texts and the ids the REFERENCE tokenizer gives them.

The reference is `rwkv_emb.tokenizer.RWKVTokenizer` from the official package (rwkv-emb 0.2.6).
Its module imports torch at the top only for unrelated sampling helpers, so torch is stubbed:
this script needs nothing but the Python standard library and the wheel.

    pip download --no-deps rwkv-emb==0.2.6 -d /tmp/wheel
    python3 -m zipfile -e /tmp/wheel/rwkv_emb-0.2.6-py3-none-any.whl /tmp/rwkv_emb
    python3 scripts/gen_tokenizer_cases.py /tmp/rwkv_emb > tests/data/tokenizer_cases.json
"""
import json
import random
import sys
import types

sys.path.insert(0, sys.argv[1])
for name in ("torch", "torch.nn", "torch.nn.functional"):
    mod = types.ModuleType(name)
    mod.jit = types.SimpleNamespace(script=lambda f: f, ScriptModule=object, script_method=lambda f: f)
    mod.functional = mod
    mod.Tensor = object
    sys.modules[name] = mod
from rwkv_emb.tokenizer import RWKVTokenizer  # noqa: E402

tok = RWKVTokenizer()
INSTR = "Instruct: Given a query, retrieve documents that answer the query\n"
fixed = [
    "", " ", "a", "Hello, world!", "The quick brown fox jumps over the lazy dog.",
    "RWKV 分词器测试 🦆🚀", "haha haha haha!!!", "日本語のテキストとカタカナ、ひらがな。",
    "한국어 문장입니다.", "Ελληνικά και русский текст", "emoji: 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽",
    " " * 200, "\t\t\tindented\ttabs", "\n" * 7, "line1\r\nline2\r\n", "a\u00a0b\u2002c\u200bd",
    "def f(x):\n    return x ** 2  # square\n", "{\"json\": [1, 2, 3], \"k\": null}",
    "\x00\x01\x02 control \x7f", "Ünïcödé façade naïve café", "1234567890 3.14159 -42 1e-10",
    INSTR + "Document: The EOS token marks the end.\nQuery: What marks the end?",
    INSTR + "Document: The EOS token marks the end.\n", "Query: What marks the end?",
    INSTR + "Document: 東京は日本の首都です。\nQuery: 日本の首都は？",
    INSTR + "Document:  leading space\n", INSTR + "Document: \n",
    "#" * 100 + "-" * 100, "\\ backslashes \\n not newline",
]
rng = random.Random(20261124)
pieces = ["the", " ", "  ", "\n", "\t", "中文", "日本", "🙂", "é", "ß", "Query:", "Document:", "123",
          ".", ",", "!", "?", "don't", "http://example.com/a?b=c", "<tag>", "ÿ", "\u200d", "👩‍💻"]
randoms = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 40))) for _ in range(150)]
long_text = " ".join(rng.choice(pieces) for _ in range(1500))
cases = []
for text in fixed + randoms + [long_text]:
    cases.append({"text": text, "ids": tok.encode(text, add_eos=False), "ids_eos": tok.encode(text, add_eos=True)})
json.dump(cases, sys.stdout, ensure_ascii=False, indent=0)
