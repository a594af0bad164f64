"""LangChain integration: an rwkvdb collection as a LangChain ``VectorStore``.

    import rwkvdb
    from rwkvdb.langchain import RwkvdbVectorStore

    db = rwkvdb.Database("notes.redb")
    notes = db.get_or_create_collection("notes", embedder="emb.pth", reranker="rr.pth")
    store = RwkvdbVectorStore(notes)                 # reranks "offline" by default
    store.add_texts(["Water boils at 100 degrees."], metadatas=[{"topic": "physics"}])
    docs = store.similarity_search("When does water boil?", k=3, filter={"topic": "physics"})
    retriever = store.as_retriever(search_kwargs={"k": 3})

rwkvdb embeds with the collection's own model: the store never takes an ``Embeddings``
object to compute vectors (``embeddings`` gives the collection's model as one, for callers
that want vectors). Needs ``langchain-core`` (``pip install 'rwkvdb[langchain]'``).
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
except ImportError as _e:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "rwkvdb.langchain needs langchain-core, which is not installed: "
        "pip install 'rwkvdb[langchain]' (or pip install langchain-core)"
    ) from _e

from . import Collection
from .errors import InvalidInputError

if TYPE_CHECKING:
    from ._rwkvdb import Hit

__all__ = ["RwkvdbEmbeddings", "RwkvdbVectorStore"]

logger = logging.getLogger(__name__)

_RERANK_MODES = (None, "none", "offline", "online")
_UNSET: Any = object()


def _check_rerank(mode: Any) -> Optional[str]:
    """The rerank mode, None for none; InvalidInputError for anything else (as the binding says it)."""
    if mode not in _RERANK_MODES or (mode is not None and not isinstance(mode, str)):
        raise InvalidInputError(f"unknown rerank mode {mode!r} (choose \"offline\", \"online\" or None)")
    return None if mode in (None, "none") else mode


def _check_count(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{what} must be an integer of at least {minimum} (got {value!r})")
    return value


def _unit_interval(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def _cosine_to_relevance(cosine: float) -> float:
    """Cosine similarity in [-1, 1] -> relevance in [0, 1]: (1 + cos) / 2 (clamped for rounding)."""
    return _unit_interval((1.0 + float(cosine)) / 2.0)


def _probability_to_relevance(probability: float) -> float:
    """The reranker probability is already a relevance in [0, 1] (clamped for rounding only)."""
    return _unit_interval(probability)


def _metadata(value: Any) -> dict:
    """rwkvdb metadata -> LangChain metadata (a dict). rwkvdb also stores non-object JSON
    metadata (written through its own API); such a value is returned as {"metadata": value}."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return {"metadata": value}


def _document(id_: str, text: str, metadata: Any) -> Document:
    return Document(id=id_, page_content=text, metadata=_metadata(metadata))


class RwkvdbEmbeddings(Embeddings):
    """The embedder of an rwkvdb collection as LangChain ``Embeddings``: unit-length vectors,
    exactly those the collection stores and compares (documents and queries alike)."""

    def __init__(self, collection: Collection) -> None:
        if not isinstance(collection, Collection):
            raise TypeError(f"RwkvdbEmbeddings needs a rwkvdb.Collection, got {type(collection).__name__}")
        self.collection = collection

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embeddings of `texts` (a list of lists of floats)."""
        texts = list(texts)
        if not texts:
            return []
        return self.collection.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embedding of one query text."""
        return self.collection.embed([text])[0].tolist()


class RwkvdbVectorStore(VectorStore):
    """A LangChain ``VectorStore`` backed by an rwkvdb collection.

    Searches take the ANN top ``candidates`` and rerank them with the collection's reranker
    (``rerank``: "offline" resumes each candidate's stored state with the query, "online"
    re-reads each candidate with the query, None keeps ANN order). Both are store defaults
    that each search may override with ``rerank=`` / ``candidates=`` keyword arguments.
    ``filter`` is rwkvdb's ``where`` language: {"topic": "x"}, {"year": {"$gte": 2000}},
    {"lang": {"$in": ["en", "de"]}}.

    Scores (``similarity_search_with_score``), higher is better: the reranker probability
    (sigmoid of its logit, in [0, 1]) when the search reranks, the embeddings' cosine
    similarity (in [-1, 1]) when it does not. Relevance scores
    (``similarity_search_with_relevance_scores``) are in [0, 1]: the probability as is, or
    (1 + cosine) / 2.

    Not supported: searches by vector (``similarity_search_by_vector``) and maximal marginal
    relevance (``max_marginal_relevance_search``), which raise NotImplementedError, and
    ``delete()`` without ids.
    """

    def __init__(self, collection: Collection, *, rerank: Optional[str] = "offline", candidates: int = 50) -> None:
        if not isinstance(collection, Collection):
            raise TypeError(f"RwkvdbVectorStore needs a rwkvdb.Collection, got {type(collection).__name__}")
        self.collection = collection
        self.rerank = _check_rerank(rerank)
        self.candidates = _check_count(candidates, "candidates", 1)
        self._embeddings = RwkvdbEmbeddings(collection)

    def __repr__(self) -> str:
        return f"RwkvdbVectorStore(collection={self.collection.name!r}, rerank={self.rerank!r}, candidates={self.candidates})"

    @property
    def embeddings(self) -> RwkvdbEmbeddings:
        """The collection's embedder as LangChain ``Embeddings``."""
        return self._embeddings

    # --- writing ---------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[list[dict[str, Any]]] = None,
        *,
        ids: Optional[list[Optional[str]]] = None,
        batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embeds and stores `texts`; returns their ids.

        A given id that is already stored is replaced (upsert), as LangChain expects; ids are
        generated where `ids` is None or holds None. Without `batch_size` the call is one
        transaction (at most 4096 texts, rwkvdb's limit); with it each batch is one.
        InvalidInputError (a ValueError) when the lengths of `ids`/`metadatas` and `texts`
        differ; DuplicateIdError when an id appears twice in one call.
        """
        if kwargs:
            raise TypeError(f"add_texts: unexpected keyword arguments {sorted(kwargs)}")
        texts = list(texts)
        if metadatas is not None:
            metadatas = list(metadatas)
            if len(metadatas) != len(texts):
                raise InvalidInputError(f"{len(texts)} texts but {len(metadatas)} metadatas")
        if ids is not None:
            ids = list(ids)
            if len(ids) != len(texts):
                raise InvalidInputError(f"{len(texts)} texts but {len(ids)} ids")
            ids = [uuid.uuid4().hex if i is None else i for i in ids]
        if not texts:
            return []
        report = self.collection.upsert(texts, ids=ids, metadatas=metadatas, batch_size=batch_size)
        return list(report["ids"])

    def delete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Deletes the documents of `ids` (ids not stored are ignored); returns True.

        Deleting everything (`ids=None`) is not supported: rwkvdb cannot list a collection's
        ids; drop the collection (``Database.drop_collection``) instead. InvalidInputError then.
        """
        if kwargs:
            raise TypeError(f"delete: unexpected keyword arguments {sorted(kwargs)}")
        if ids is None:
            raise InvalidInputError(
                "delete() needs ids: rwkvdb cannot delete a whole collection this way "
                "(use Database.drop_collection)"
            )
        ids = list(ids)
        if ids:
            self.collection.delete(ids)
        return True

    # --- reading ---------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents of `ids` (Document.id set), in the order asked; ids not
        stored are left out, an id asked twice is returned once."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        found = self.collection.get(wanted)
        return [_document(d.id, d.text, d.metadata) for d in found if d is not None]

    def _search(
        self,
        query: str,
        k: int,
        filter: Optional[dict[str, Any]],
        rerank: Any = _UNSET,
        candidates: Optional[int] = None,
        ef: Optional[int] = None,
        **kwargs: Any,
    ) -> tuple[list[Hit], bool]:
        """The hits of one query and whether they were reranked."""
        if kwargs:
            raise TypeError(f"unexpected search keyword arguments {sorted(kwargs)}")
        mode = self.rerank if rerank is _UNSET else _check_rerank(rerank)
        candidates = self.candidates if candidates is None else _check_count(candidates, "candidates", 1)
        k = _check_count(k, "k", 1)
        result = self.collection.query(query, top_k=k, candidates=max(candidates, k), rerank=mode, where=filter, ef=ef)
        if result.skipped:
            logger.warning("rwkvdb: %d candidates skipped (damaged data): %s", len(result.skipped), result.skipped)
        return list(result), mode is not None

    def similarity_search(
        self, query: str, k: int = 4, filter: Optional[dict[str, Any]] = None, **kwargs: Any
    ) -> list[Document]:
        """The `k` best documents for `query` (reranked unless `rerank=None`), best first.

        kwargs: `rerank`, `candidates` (override the store's defaults), `ef` (HNSW search width).
        """
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Optional[dict[str, Any]] = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """(document, score) pairs, best first. The score is the reranker probability (in
        [0, 1]) when the search reranks, else the cosine similarity (in [-1, 1]); higher is
        better either way."""
        hits, reranked = self._search(query, k, filter, **kwargs)
        return [
            (_document(h.id, h.text, h.metadata), float(h.probability if reranked else h.similarity)) for h in hits
        ]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Score -> relevance in [0, 1] for the store's default mode: identity for the reranker
        probability, (1 + cosine) / 2 without reranking. (Searches that override `rerank` get
        the function of the mode they used.)"""
        return _probability_to_relevance if self.rerank is not None else _cosine_to_relevance

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        # Overridden so that a per-call `rerank=` maps its own kind of score.
        filter = kwargs.pop("filter", None)
        hits, reranked = self._search(query, k, filter, **kwargs)
        to_relevance = _probability_to_relevance if reranked else _cosine_to_relevance
        return [
            (_document(h.id, h.text, h.metadata), to_relevance(h.probability if reranked else h.similarity))
            for h in hits
        ]

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        # The base class would pair the async scores with _select_relevance_score_fn, wrong for
        # a per-call `rerank=`; the binding releases the GIL, so an executor thread is fine.
        from langchain_core.runnables.config import run_in_executor

        return await run_in_executor(None, self._similarity_search_with_relevance_scores, query, k, **kwargs)

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        """Not supported: raises NotImplementedError (rwkvdb queries by text only)."""
        raise NotImplementedError(
            "RwkvdbVectorStore cannot search by vector: the rwkvdb binding queries by text only "
            "(Collection.query embeds the text itself, and reranking needs the query text); "
            "use similarity_search(query_text)"
        )

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        """Not supported: raises NotImplementedError (the binding returns no stored vectors)."""
        raise NotImplementedError(
            "RwkvdbVectorStore does not support maximal marginal relevance: the rwkvdb binding "
            "returns no stored embeddings with its hits (MMR would have to re-embed every "
            "candidate); use similarity_search, which reranks with the collection's reranker"
        )

    def max_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        """Not supported: raises NotImplementedError (see max_marginal_relevance_search)."""
        raise NotImplementedError(
            "RwkvdbVectorStore supports neither searches by vector nor maximal marginal relevance"
        )

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Optional[Embeddings] = None,
        metadatas: Optional[list[dict[str, Any]]] = None,
        *,
        ids: Optional[list[str]] = None,
        collection: Optional[Collection] = None,
        rerank: Optional[str] = "offline",
        candidates: int = 50,
        **kwargs: Any,
    ) -> "RwkvdbVectorStore":
        """A store over `collection` (required: a rwkvdb.Collection) with `texts` added.

        rwkvdb embeds with the collection's own model, so `embedding` computes nothing: it may
        be None or an RwkvdbEmbeddings of the same collection; any other Embeddings is refused
        (InvalidInputError) rather than silently ignored. Other kwargs go to add_texts.
        """
        if collection is None:
            raise InvalidInputError("RwkvdbVectorStore.from_texts needs collection=<a rwkvdb.Collection>")
        if embedding is not None:
            same = isinstance(embedding, RwkvdbEmbeddings) and embedding.collection.name == collection.name
            if not same:
                raise InvalidInputError(
                    "rwkvdb embeds with the collection's own model: pass embedding=None (or the "
                    f"collection's RwkvdbEmbeddings), not {type(embedding).__name__}"
                )
        store = cls(collection, rerank=rerank, candidates=candidates)
        store.add_texts(texts, metadatas, ids=ids, **kwargs)
        return store
