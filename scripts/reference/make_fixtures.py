#!/usr/bin/env python3
"""Builds the committed PyTorch fixtures in tests/data/ref/ and their expected values.

1. `rwkvdb model synth` writes a small embedder/reranker pair in the official key layout.
2. PyTorch loads it and re-saves it (torch.save), as fp32 and bf16, so the fixtures are files
   *written by PyTorch*. Embedding rows >= 1024 (except EOS) are made periodic so git stores the
   65,536-row table compactly; it changes nothing about what is tested.
3. official_eval.py runs the official package on them (see its header) to give expected-*.json.

    cargo build --release
    python3 scripts/reference/make_fixtures.py --package /tmp/rwkv_emb
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "ref")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", required=True)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp()
    e, r = os.path.join(tmp, "e.pth"), os.path.join(tmp, "r.pth")
    subprocess.run([os.path.join(ROOT, "target", "release", "rwkvdb"), "model", "synth", "--layers", "4", "--width", "128",
                    "--reranker-layers", "1,2", "--seed", "11", "--embedder", e, "--reranker", r], check=True)
    emb = torch.load(e, weights_only=True)
    table = emb["rwkv.emb.weight"]
    for row in range(1024, 65535):
        table[row] = table[1024 + row % 16]
    torch.save(emb, os.path.join(OUT, "tiny-emb-fp32.pth"))
    torch.save({k: v.to(torch.bfloat16) for k, v in emb.items()}, os.path.join(OUT, "tiny-emb-bf16.pth"))
    rr = torch.load(r, weights_only=True)
    torch.save(rr, os.path.join(OUT, "tiny-reranker.pth"))
    rr2 = {k: v.to(torch.bfloat16) for k, v in rr.items() if k != "reranker_layer_idx"}
    rr2["reranker.token.weight"] = rr2.pop("reranker.emb.weight")
    torch.save(rr2, os.path.join(OUT, "tiny-reranker-token.pth"))
    ev = os.path.join(os.path.dirname(os.path.abspath(__file__)), "official_eval.py")
    inp = os.path.join(OUT, "eval_input.json")
    for emb_file, rr_file, out in [("tiny-emb-fp32.pth", "tiny-reranker.pth", "expected-fp32.json"),
                                   ("tiny-emb-bf16.pth", "tiny-reranker-token.pth", "expected-bf16.json")]:
        subprocess.run([sys.executable, ev, "--package", args.package, "--embedder", os.path.join(OUT, emb_file),
                        "--reranker", os.path.join(OUT, rr_file), "--input", inp, "--output", os.path.join(OUT, out)],
                       check=True)


if __name__ == "__main__":
    main()
