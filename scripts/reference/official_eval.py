#!/usr/bin/env python3
"""Expected values from the OFFICIAL rwkv-emb package (0.2.6), run on the CPU in float32.

Produces the same JSON as `rwkvdb model eval` for an eval input, so the Rust engine can be
compared against numbers it did not produce.

The package does not run on a CPU as shipped: `reference/rwkv7.py` JIT-compiles a CUDA-only
WKV kernel at import, and hard-codes device "cuda" and fp16. This script copies the package to a
temporary folder and changes exactly this:
  * DTYPE = torch.float (fp32) instead of torch.half; the string "cuda" becomes "cpu";
  * `torch.utils.cpp_extension.load` is replaced by a no-op, and the one op it would build,
    `torch.ops.rwkv7_state_fwd_fp16.forward(B, T, C, H, state, r, w, k, v, a, b, y)`, is
    registered through torch.library with a CPU implementation written from the .cu file
    (checked below against the pure-torch WKV formula that model.py uses for the reranker);
  * `transformers` (imported only for the vision tower) is stubbed.
Everything else — tokenizer, embedder, pooling, heads, reranker — is the package's own code.

Usage:
    pip install torch==2.9.1 numpy            # torch 2.9.1 TorchScript-compiles WKV_7.apply
    pip download --no-deps rwkv-emb==0.2.6 -d /tmp/w && python3 -m zipfile -e /tmp/w/*.whl /tmp/rwkv_emb
    python3 scripts/reference/official_eval.py --package /tmp/rwkv_emb \
        --embedder E.pth --reranker R.pth --input IN.json --output OUT.json
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import types

import torch

HEAD = 64


def wkv_cpu(B, T, C, H, state, r, w, k, v, a, b, y):
    """The CUDA kernel's math: per head, S = S*exp(-e^-0.5*w) + (S a) b^T + v k^T; y = S r."""
    N = HEAD
    st = state.view(B, H, N, N)
    rr, ww, kk, vv, aa, bb = (t.view(B, T, H, N).float() for t in (r, w, k, v, a, b))
    decay = torch.exp(-0.6065306597 * ww)
    out = y.view(B, T, H, N)
    for t in range(T):
        sa = torch.einsum("bhij,bhj->bhi", st, aa[:, t])
        st.mul_(decay[:, t, :, None, :])
        st.add_(sa[..., :, None] * bb[:, t, :, None, :] + vv[:, t, :, :, None] * kk[:, t, :, None, :])
        out[:, t] = torch.einsum("bhij,bhj->bhi", st, rr[:, t]).to(out.dtype)


def register_op():
    lib = torch.library.Library("rwkv7_state_fwd_fp16", "DEF")
    lib.define("forward(int B, int T, int C, int H, Tensor(a!) state, Tensor r, Tensor w, Tensor k, "
               "Tensor v, Tensor a, Tensor b, Tensor(b!) y) -> ()")
    lib.impl("forward", wkv_cpu, "CPU")
    return lib


def check_op_against_model_py(model_mod):
    """The registered op must agree with model.py's pure-torch RWKV7_OP (reranker path)."""
    g = torch.Generator().manual_seed(0)
    B, T, H = 2, 5, 2
    C = H * HEAD
    rnd = lambda *s: torch.rand(*s, generator=g) - 0.5
    r, k, v = rnd(B, T, C), rnd(B, T, C), rnd(B, T, C)
    kk = torch.nn.functional.normalize(rnd(B, T, H, HEAD), dim=-1).view(B, T, C)
    a_rate = torch.rand(B, T, C, generator=g)
    w_sig = torch.rand(B, T, C, generator=g) * 0.98 + 0.01
    s0 = rnd(B, H, HEAD, HEAD)
    s1 = s0.clone()
    y1 = torch.empty(B, T, C)
    torch.ops.rwkv7_state_fwd_fp16.forward(B, T, C, H, s1, r, w_sig, k, v, -kk, kk * a_rate, y1)
    w_loglog = torch.log(0.6065306597 * w_sig)  # exp(-exp(w_ll)) == exp(-e^-0.5 * w_sig)
    y2, s2 = model_mod.RWKV7_OP(r, w_loglog, k, v, -kk, kk * a_rate, s0)
    dy, ds = (y1 - y2).abs().max().item(), (s1 - s2).abs().max().item()
    assert dy < 1e-5 and ds < 1e-5, (dy, ds)
    return max(dy, ds)


def load_package(src):
    tmp = tempfile.mkdtemp(prefix="rwkv_emb_cpu_")
    dst = os.path.join(tmp, "rwkv_emb")
    shutil.copytree(os.path.join(src, "rwkv_emb"), dst)
    for rel in ("reference/rwkv7.py", "model.py"):
        p = os.path.join(dst, rel)
        text = open(p, encoding="utf-8").read()
        text = text.replace("DTYPE = torch.half", "DTYPE = torch.float")
        text = text.replace('"cuda"', '"cpu"').replace("'cuda'", "'cpu'")
        open(p, "w", encoding="utf-8").write(text)
    import torch.utils.cpp_extension as ext
    ext.load = lambda *args, **kwargs: None
    tf = types.ModuleType("transformers")
    tf.SiglipVisionModel = tf.SiglipVisionConfig = object
    sys.modules["transformers"] = tf
    sys.path.insert(0, tmp)
    import rwkv_emb.model as model_mod
    import rwkv_emb.tokenizer as tok_mod
    return model_mod, tok_mod


INSTR = "Instruct: Given a query, retrieve documents that answer the query\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", required=True, help="folder containing the unpacked rwkv_emb package")
    ap.add_argument("--embedder", required=True)
    ap.add_argument("--reranker")
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    lib = register_op()  # keep a reference: the registration lives as long as `lib`
    model_mod, tok_mod = load_package(args.package)
    op_diff = check_op_against_model_py(model_mod)
    tok = tok_mod.RWKVTokenizer()
    emb = model_mod.EmbeddingRWKV(model_path=args.embedder)
    rr = model_mod.RWKVReRanker(model_path=args.reranker) if args.reranker else None
    spec = json.load(open(args.input, encoding="utf-8"))
    out = {"embeddings": {}, "tokens": {}, "scores": []}
    for item in spec.get("documents", []) + spec.get("queries", []):
        ids = tok.encode(item["text"], add_eos=True)
        e, _ = emb.forward(ids, None)
        out["tokens"][item["id"]] = ids
        out["embeddings"][item["id"]] = [float(x) for x in e.flatten()]
    docs = {d["id"]: d["text"] for d in spec.get("documents", [])}
    queries = {q["id"]: q["text"] for q in spec.get("queries", [])}
    for qid, did in spec.get("pairs", []):
        d, q = docs[did], queries[qid]
        online = tok.encode(f"{INSTR}Document: {d}\nQuery: {q}", add_eos=True)
        _, st = emb.forward(online, None)
        on = rr.forward(st[1].unsqueeze(1)).flatten()[0].item()
        _, st = emb.forward(tok.encode(f"{INSTR}Document: {d}\n", add_eos=False), None)
        _, st = emb.forward(tok.encode(f"Query: {q}", add_eos=True), st)
        off = rr.forward(st[1].unsqueeze(1)).flatten()[0].item()
        out["scores"].append({"query": qid, "document": did, "online_logit": on, "offline_logit": off})
    out["meta"] = {
        "package": "rwkv-emb 0.2.6", "torch": torch.__version__, "dtype": "float32", "device": "cpu",
        "embedder": os.path.basename(args.embedder), "reranker": os.path.basename(args.reranker or ""),
        "wkv": "CPU implementation of rwkv7_state_fwd_fp16.forward registered via torch.library "
               f"(max diff vs model.py RWKV7_OP: {op_diff:.2e})",
    }
    json.dump(out, open(args.output, "w", encoding="utf-8"), ensure_ascii=False)
    diffs = [abs(s["online_logit"] - s["offline_logit"]) for s in out["scores"]]
    logits = [s["online_logit"] for s in out["scores"]]
    if logits:
        mean = sum(logits) / len(logits)
        std = math.sqrt(sum((x - mean) ** 2 for x in logits) / len(logits))
        print(f"pairs {len(logits)}: max |online-offline| {max(diffs):.2e}, logit mean {mean:.3f} std {std:.3f}")
    del lib


if __name__ == "__main__":
    main()
