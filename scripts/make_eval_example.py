#!/usr/bin/env python3
"""Writes a small BEIR-format set from the demo corpus (docs/demo/corpus.jsonl) for trying
`rwkvdb eval retrieval`: every document is in the corpus; every third one also gives a query
made of its first six words (after the name prefix), judged relevant (grade 1) for that document only.

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
print(f"wrote {out}/corpus.jsonl ({len(docs)} documents), queries.jsonl and qrels.tsv ({len(docs[::3])} queries)")
