"""Fill an rwkvdb collection with embeddings and states computed by the official `rwkv_emb`
package (on GPUs, or spread over many workers with Ray or any job system), then query it with
rwkvdb on a machine without a GPU.

    # where the GPUs are (official package):
    pip install rwkv-emb torch
    python precomputed_states.py compute emb.pth docs.jsonl part-0.npz
    # where the database lives (any number of parts, e.g. one per worker):
    python precomputed_states.py load emb.pth rr.pth notes.redb docs.jsonl part-0.npz

`compute` runs, per document, the two passes rwkvdb runs itself on insert: the embedding of
`text + EOS`, and the state after reading the offline template without EOS
(`rwkvdb.offline_document_text`). The states are in the official layout, token shift
`[layers, 2, B, C]` and WKV `[layers, B, H, 64, 64]`, which `Collection.add_precomputed` takes
as they are (layers above those the collection keeps are dropped).
"""

import json
import sys

import numpy as np


def compute(embedder, docs_path, out_path):
    from rwkv_emb.model import EmbeddingRWKV
    from rwkv_emb.tokenizer import RWKVTokenizer

    import rwkvdb  # only for the template text; no database is opened here

    model, tok = EmbeddingRWKV(embedder), RWKVTokenizer()
    docs = [json.loads(line) for line in open(docs_path) if line.strip()]
    embeddings, shifts, wkvs = [], [], []
    for d in docs:
        emb, _ = model.forward([tok.encode(d["text"], add_eos=True)])
        _, state = model.forward([tok.encode(rwkvdb.offline_document_text(d["text"]), add_eos=False)])
        embeddings.append(emb.float().cpu().numpy())  # [1, C]
        shifts.append(state[0].float().cpu().numpy())  # [layers, 2, 1, C]
        wkvs.append(state[1].float().cpu().numpy())  # [layers, 1, H, 64, 64]
    np.savez(out_path, ids=np.array([d["id"] for d in docs]), embeddings=np.concatenate(embeddings),
             token_shift=np.concatenate(shifts, axis=2), wkv=np.concatenate(wkvs, axis=1))


def load(embedder, reranker, db_path, docs_path, *parts):
    import rwkvdb

    texts = {}
    metadata = {}
    for line in open(docs_path):
        if line.strip():
            d = json.loads(line)
            texts[d["id"]], metadata[d["id"]] = d["text"], d.get("metadata")
    with rwkvdb.Database(db_path) as db:
        notes = db.get_or_create_collection("notes", embedder=embedder, reranker=reranker)
        for part in parts:
            p = np.load(part)
            ids = [str(i) for i in p["ids"]]
            notes.add_precomputed(ids, [texts[i] for i in ids], p["embeddings"], (p["token_shift"], p["wkv"]),
                                  metadatas=[metadata[i] for i in ids])
        print(f"{notes.count()} documents; try: notes.query('...', rerank='offline')")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "compute":
        compute(*sys.argv[2:5])
    elif len(sys.argv) >= 7 and sys.argv[1] == "load":
        load(*sys.argv[2:])
    else:
        sys.exit(__doc__)
