#!/usr/bin/env python3
"""Writes small made-up evaluation sets from the demo corpus (docs/demo/corpus.jsonl).

For `rwkvdb eval retrieval`, a BEIR-format set: every document is in the corpus; every third one
also gives a query made of its first six words (after the name prefix), judged relevant (grade 1)
for that document only.

For `rwkvdb eval layers`, `pairs-mrpc.tsv` in MRPC's layout: each of the first 200 documents
paired with its own first eight words (label 1) and with the next document's (label 0); and
`glove-random-50d.txt`, a GloVe-format file of seeded random vectors for the pairs' words (it
exercises --glove; its numbers mean nothing).

    scripts/make_eval_example.py target/eval-example
"""

import json
import os
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = sys.argv[1] if len(sys.argv) > 1 else "target/eval-example"
os.makedirs(out, exist_ok=True)
docs = [json.loads(line) for line in open(os.path.join(root, "docs/demo/corpus.jsonl"))]
with open(os.path.join(out, "corpus.jsonl"), "w") as f:
    for d in docs:
        f.write(json.dumps({"_id": d["id"], "title": "", "text": d["text"]}) + "\n")
with open(os.path.join(out, "queries.jsonl"), "w") as q, open(os.path.join(out, "qrels.tsv"), "w") as r:
    r.write("query-id\tcorpus-id\tscore\n")
    for i, d in enumerate(docs[::3]):
        words = d["text"].split(": ", 1)[-1].split()  # without the "module.name:" prefix
        q.write(json.dumps({"_id": f"q{i}", "text": " ".join(words[:6])}) + "\n")
        r.write(f"q{i}\t{d['id']}\t1\n")

import random
import re

rng = random.Random(7)
words = set()
with open(os.path.join(out, "pairs-mrpc.tsv"), "w") as f:
    f.write("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
    texts = [d["text"].split(": ", 1)[-1].replace("\t", " ") for d in docs[:201]]
    for i in range(len(texts) - 1):
        for label, other in ((1, texts[i]), (0, texts[i + 1])):
            short = " ".join(other.split()[:8])
            f.write(f"{label}\t{2 * i}\t{2 * i + 1}\t{texts[i]}\t{short}\n")
            words.update(re.findall(r"[^\W_]+", (texts[i] + " " + short).lower()))
with open(os.path.join(out, "glove-random-50d.txt"), "w") as f:
    for w in sorted(words):
        f.write(w + " " + " ".join(f"{rng.gauss(0, 0.4):.5f}" for _ in range(50)) + "\n")
print(f"wrote {out}/pairs-mrpc.tsv ({2 * (len(texts) - 1)} pairs) and glove-random-50d.txt ({len(words)} words)")
print(f"wrote {out}/corpus.jsonl ({len(docs)} documents), queries.jsonl and qrels.tsv ({len(docs[::3])} queries)")
