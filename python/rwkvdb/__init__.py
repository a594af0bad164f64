"""rwkvdb: an embedded vector-and-state database for state-centric retrieval with EmbeddingRWKV.

    import rwkvdb
    db = rwkvdb.Database("notes.redb")
    notes = db.get_or_create_collection("notes", embedder="emb.pth", reranker="rr.pth")
    notes.add(["Water boils at 100 degrees."], ids=["n1"])
    for hit in notes.query("When does water boil?", top_k=3):
        print(hit.id, hit.probability, hit.text)

The Rust library does the work (model, index, storage); this package is its binding.
"""

import os as _os


def _find_onnxruntime():
    """libonnxruntime from the onnxruntime package (1.31 or newer), unless $ORT_DYLIB_PATH is set.

    The package is located, not imported: importing it would load a second copy of the library.
    """
    if _os.environ.get("ORT_DYLIB_PATH"):
        return
    try:
        import importlib.metadata as md
        import importlib.util

        version = tuple(int(x) for x in md.version("onnxruntime").split(".")[:2])
        spec = importlib.util.find_spec("onnxruntime")
    except Exception:
        return
    if version < (1, 31) or spec is None or not spec.submodule_search_locations:
        return
    capi = _os.path.join(list(spec.submodule_search_locations)[0], "capi")
    try:
        names = sorted(n for n in _os.listdir(capi) if n.startswith("libonnxruntime.so"))
    except OSError:
        return
    if names:
        _os.environ["ORT_DYLIB_PATH"] = _os.path.join(capi, names[0])


_find_onnxruntime()

from ._rwkvdb import Collection, Database, Document, Hit, QueryResult, __version__, offline_document_text, write_synthetic_model  # noqa: E402
from .errors import *  # noqa: E402,F401,F403
from . import errors  # noqa: E402

__all__ = ["Database", "Collection", "Document", "Hit", "QueryResult", "errors", "write_synthetic_model", "offline_document_text", "__version__"] + [
    n for n in dir(errors) if n.endswith("Error")
]
