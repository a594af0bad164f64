"""The Python half of `cargo bench --bench binding`: the same adds and queries the Rust half runs,
through the binding, on the same database file. Prints one JSON line.

    python overhead.py DB EMBEDDER RERANKER COLLECTION DOCS.json QUERIES.json
"""

import json
import sys
import time

import rwkvdb


def main(db_path, embedder, reranker, name, docs_path, queries_path):
    docs = json.load(open(docs_path))
    queries = json.load(open(queries_path))
    with rwkvdb.Database(db_path) as db:
        c = db.create_collection(name, embedder=embedder, reranker=reranker)
        c.add(["warm up the model"], ids=["warm"])
        start = time.perf_counter()
        for i in range(0, len(docs), 32):
            batch = docs[i:i + 32]
            c.add([d["text"] for d in batch], ids=[d["id"] for d in batch], metadatas=[d["metadata"] for d in batch])
        add_s = time.perf_counter() - start
        latencies, outside = {}, {}
        for mode in ["none", "offline"]:
            c.query(queries[0], rerank=mode)  # warm
            times, rest = [], []
            for q in queries:
                t = time.perf_counter()
                hits = c.query(q, top_k=10, candidates=50, rerank=None if mode == "none" else mode)
                ms = (time.perf_counter() - t) * 1000
                assert len(hits) == 10
                times.append(ms)
                # Wall time outside the stages the library times itself: the binding's share.
                rest.append(ms - sum(hits.timings.values()))
            latencies[mode] = sorted(times)[len(times) // 2]
            outside[mode] = sorted(rest)[len(rest) // 2]
    print(json.dumps({"docs_per_s": len(docs) / add_s, "query_p50_ms": latencies, "untimed_p50_ms": outside}))


if __name__ == "__main__":
    main(*sys.argv[1:])
