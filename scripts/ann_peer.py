#!/usr/bin/env python3
"""The peer of `cargo bench --bench ann`: faiss's IndexHNSWFlat on the same vectors and queries.

    python3 scripts/ann_peer.py DATA_DIR SIZES EFS     (run by the bench; needs faiss-cpu, numpy)

DATA_DIR holds what the bench wrote: queries.f32, base-N.f32 and truth-N.u32 (exact top-10
slot numbers) for each N in SIZES. Same M (16), efConstruction (200), inner product on unit
vectors; the graph is built with the default OpenMP threads, searches run on one thread.
Prints JSON: {"peer": ..., "builds": [...], "runs": [{"n", "ef", "recall_at_10", "qps"}]}.
"""
import json
import sys
import time

import faiss
import numpy as np

DIM = 768


def main():
    data, sizes, efs = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], [int(e) for e in sys.argv[3].split(",")]
    queries = np.fromfile(f"{data}/queries.f32", dtype="<f4").reshape(-1, DIM)
    builds, runs = [], []
    threads = faiss.omp_get_max_threads()
    for n in sizes:
        base = np.fromfile(f"{data}/base-{n}.f32", dtype="<f4").reshape(-1, DIM)
        truth = np.fromfile(f"{data}/truth-{n}.u32", dtype="<u4").reshape(-1, 10)
        index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        start = time.perf_counter()
        index.add(base)
        builds.append({"system": "faiss", "n": n, "build_s": time.perf_counter() - start})
        faiss.omp_set_num_threads(1)
        for ef in efs:
            index.hnsw.efSearch = ef
            start = time.perf_counter()
            _, got = index.search(queries, 10)
            secs = time.perf_counter() - start
            found = sum(len(set(g.tolist()) & set(t.tolist())) for g, t in zip(got, truth))
            runs.append({"system": "faiss", "n": n, "ef": ef, "recall_at_10": found / (10 * len(queries)),
                         "qps": len(queries) / secs})
        faiss.omp_set_num_threads(threads)
    print(json.dumps({"peer": f"faiss-cpu {faiss.__version__} IndexHNSWFlat", "builds": builds, "runs": runs}))


if __name__ == "__main__":
    main()
