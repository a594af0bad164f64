"""rwkvdb.langchain against a real build of the extension, a real database file and a synthetic
model. The synthetic reranker's scores are meaningless, so orderings are only asserted for
searches without reranking (where an identical text has cosine 1) or against the binding's own
query results."""

import asyncio
import importlib
import sys
import uuid

import numpy as np
import pytest

import rwkvdb

langchain_core = pytest.importorskip("langchain_core")
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402

from rwkvdb.langchain import RwkvdbEmbeddings, RwkvdbVectorStore  # noqa: E402
from conftest import TEXTS  # noqa: E402

METADATAS = [
    {"topic": "physics", "year": 1900, "lang": "en"},
    {"topic": "physics", "year": 1970, "lang": "de"},
    {"topic": "music", "year": 1600, "lang": "it"},
    {"topic": "biology", "year": 1950, "lang": "en"},
    {"topic": "software", "year": 2015, "lang": "en"},
    {"topic": "geography", "year": 2000, "lang": "fr"},
]
IDS = [f"d{i}" for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    # One database for the module (it loads the model once); each test gets fresh collections.
    database = rwkvdb.Database(tmp_path_factory.mktemp("db") / "lc.redb", durable=False)
    yield database
    database.close()


@pytest.fixture
def new_collection(db, model):
    """A fresh, uniquely named collection (with the reranker unless reranker=False)."""

    def make(reranker=True):
        return db.create_collection(f"c{uuid.uuid4().hex[:12]}", embedder=model[0], reranker=model[1] if reranker else None)

    return make


@pytest.fixture
def collection(new_collection):
    return new_collection()


@pytest.fixture
def store(collection):
    s = RwkvdbVectorStore(collection)
    assert s.add_texts(TEXTS, METADATAS, ids=IDS) == IDS
    return s


def test_embeddings_are_the_collection_ones(collection):
    emb = RwkvdbEmbeddings(collection)
    assert isinstance(emb, Embeddings)
    docs = emb.embed_documents(TEXTS[:3])
    assert isinstance(docs, list) and len(docs) == 3
    assert all(isinstance(v, list) and len(v) == 128 and isinstance(v[0], float) for v in docs)
    assert np.allclose(np.array(docs, dtype=np.float32), collection.embed(TEXTS[:3]))
    q = emb.embed_query(TEXTS[1])
    assert isinstance(q, list) and np.allclose(q, docs[1], atol=1e-6)
    assert abs(np.linalg.norm(q) - 1) < 1e-5
    assert emb.embed_documents([]) == []
    assert np.allclose(asyncio.run(emb.aembed_query(TEXTS[1])), q)
    assert np.allclose(asyncio.run(emb.aembed_documents(TEXTS[:3])), docs)
    assert isinstance(RwkvdbVectorStore(collection).embeddings, RwkvdbEmbeddings)
    with pytest.raises(TypeError, match="Collection"):
        RwkvdbEmbeddings("not a collection")


def test_add_get_upsert_delete(store, collection):
    assert isinstance(store, VectorStore) and collection.count() == 6

    # Generated ids, and upsert for given ones (the text and metadata are replaced).
    generated = store.add_texts(["A note without an id."])
    assert len(generated) == 1 and isinstance(generated[0], str) and generated[0] not in IDS
    assert store.add_texts(["Water boils at 90 degrees up a mountain."], [{"topic": "physics"}], ids=["d0"]) == ["d0"]
    assert collection.count() == 7
    assert store.get_by_ids(["d0"]) == [
        Document(id="d0", page_content="Water boils at 90 degrees up a mountain.", metadata={"topic": "physics"})
    ]

    # Documents: Document.id is used where set, generated where not; kwargs ids win.
    ids = store.add_documents([Document(page_content="with id", id="x1"), Document(page_content="without id")])
    assert ids[0] == "x1" and ids[1] and ids[1] != "x1"
    assert store.add_documents([Document(page_content="kwarg id", id="ignored")], ids=["x2"]) == ["x2"]
    assert store.get_by_ids(["ignored"]) == []
    got = store.get_by_ids(["x2", "missing", "x1", ids[1], "x1"])
    assert [(d.id, d.page_content, d.metadata) for d in got] == [
        ("x2", "kwarg id", {}),
        ("x1", "with id", {}),
        (ids[1], "without id", {}),
    ]
    assert store.get_by_ids([]) == []
    assert store.add_texts([]) == []

    # Delete: missing ids are fine; deleting everything is not supported.
    assert store.delete(["x1", "x2", "never-there"]) is True
    assert store.get_by_ids(["x1", "x2"]) == []
    assert store.delete([]) is True
    with pytest.raises(rwkvdb.InvalidInputError, match="drop_collection"):
        store.delete()
    assert collection.count() == 8

    # Mismatched lengths: ValueErrors (the base class documents ValueError), nothing written.
    with pytest.raises(ValueError, match="2 texts but 1 ids"):
        store.add_texts(["a", "b"], ids=["only-one"])
    with pytest.raises(ValueError, match="2 texts but 1 metadatas"):
        store.add_texts(["a", "b"], [{"n": 1}])
    with pytest.raises(rwkvdb.DuplicateIdError):
        store.add_texts(["a", "b"], ids=["same", "same"])
    with pytest.raises(TypeError, match="unexpected"):
        store.add_texts(["a"], colour="blue")
    assert collection.count() == 8

    # Python metadata must be a dict (other JSON can only come from JSONL imports).
    with pytest.raises(TypeError, match="dict or None"):
        collection.add(["odd metadata"], ids=["odd"], metadatas=[[1, 2]])


def test_similarity_search_with_filters(store):
    def ids(filter, **kw):
        return sorted(d.id for d in store.similarity_search("light and energy", k=6, filter=filter, **kw))

    assert ids({"topic": "physics"}) == ["d0", "d1"]
    assert ids({"year": {"$gte": 1950}}) == ["d1", "d3", "d4", "d5"]
    assert ids({"lang": {"$in": ["de", "fr"]}}, rerank=None) == ["d1", "d5"]
    assert ids({"topic": "physics", "year": {"$lt": 1950}}, rerank="online") == ["d0"]
    assert ids({"topic": "astrology"}) == []
    assert ids(None) == IDS
    docs = store.similarity_search(TEXTS[4], k=2)
    assert len(docs) == 2 and all(isinstance(d, Document) and d.id in IDS for d in docs)
    d4 = [d for d in store.similarity_search(TEXTS[4], k=6) if d.id == "d4"][0]
    assert d4 == Document(id="d4", page_content=TEXTS[4], metadata=METADATAS[4])
    with pytest.raises(rwkvdb.FilterError):
        store.similarity_search("x", filter={"year": {"$near": 3}})


def test_scores_are_probabilities_when_reranking_else_cosine(store, collection):
    query = "Which river is the longest?"
    for mode in ["offline", "online"]:
        scored = store.similarity_search_with_score(query, k=4, rerank=mode, candidates=6)
        hits = collection.query(query, top_k=4, candidates=6, rerank=mode)
        assert [d.id for d, _ in scored] == [h.id for h in hits]
        assert [s for _, s in scored] == pytest.approx([h.probability for h in hits])
        assert all(0 <= s <= 1 for _, s in scored)
        assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)

    # Without reranking: the cosine similarity; an identical text is first with cosine 1.
    scored = store.similarity_search_with_score(TEXTS[2], k=6, rerank=None)
    assert scored[0][0].id == "d2" and scored[0][1] == pytest.approx(1, abs=1e-5)
    e = collection.embed(TEXTS)
    for doc, score in scored:
        assert score == pytest.approx(float(e[2] @ e[IDS.index(doc.id)]), abs=1e-5)

    # The store default applies unless a call overrides it.
    plain = RwkvdbVectorStore(collection, rerank=None, candidates=6)
    assert [s for _, s in plain.similarity_search_with_score(TEXTS[2], k=6)] == pytest.approx([s for _, s in scored])
    reranked = plain.similarity_search_with_score(query, k=4, rerank="offline")
    assert [s for _, s in reranked] == pytest.approx([s for _, s in store.similarity_search_with_score(query, k=4, candidates=6)])


def test_relevance_scores_are_in_unit_interval(store, collection):
    query = "strings and music"
    cos = {d.id: s for d, s in store.similarity_search_with_score(query, k=6, rerank=None)}
    prob = {d.id: s for d, s in store.similarity_search_with_score(query, k=6)}
    for kwargs, expected in [({}, prob), ({"rerank": None}, {i: (1 + c) / 2 for i, c in cos.items()})]:
        rel = store.similarity_search_with_relevance_scores(query, k=6, **kwargs)
        assert len(rel) == 6 and all(0 <= s <= 1 for _, s in rel)
        assert {d.id: s for d, s in rel} == pytest.approx(expected, abs=1e-6)
    # An identical text without reranking: relevance 1 (clamped, cosine may round above 1).
    top = store.similarity_search_with_relevance_scores(TEXTS[3], k=1, rerank=None)
    assert top[0][0].id == "d3" and top[0][1] == pytest.approx(1, abs=1e-5) and top[0][1] <= 1
    # score_threshold (popped by the base class) and filter pass through.
    kept = store.similarity_search_with_relevance_scores(
        TEXTS[3], k=6, rerank=None, score_threshold=0.999, filter={"lang": "en"}
    )
    assert [d.id for d, _ in kept] == ["d3"]
    # The function LangChain would pick for the store's default mode.
    assert store._select_relevance_score_fn()(0.25) == 0.25
    fn = RwkvdbVectorStore(collection, rerank=None)._select_relevance_score_fn()
    assert (fn(-1.0), fn(0.0), fn(1.0), fn(1.0000001)) == (0.0, 0.5, 1.0, 1.0)
    asy = asyncio.run(store.asimilarity_search_with_relevance_scores(query, k=6, rerank=None))
    assert {d.id: s for d, s in asy} == pytest.approx({i: (1 + c) / 2 for i, c in cos.items()}, abs=1e-6)


def test_retriever(store):
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"topic": "physics"}})
    docs = retriever.invoke("What bends light?")
    assert len(docs) == 2 and {d.id for d in docs} == {"d0", "d1"}
    assert asyncio.run(retriever.ainvoke("What bends light?")) == docs
    exact = store.as_retriever(search_kwargs={"k": 1, "rerank": None}).invoke(TEXTS[5])
    assert [d.id for d in exact] == ["d5"]
    thresholded = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.999, "rerank": None, "k": 6}
    ).invoke(TEXTS[5])
    assert [d.id for d in thresholded] == ["d5"]
    with pytest.raises(NotImplementedError, match="marginal relevance"):
        store.as_retriever(search_type="mmr").invoke("x")


def test_from_texts_and_from_documents(new_collection, collection):
    store = RwkvdbVectorStore.from_texts(TEXTS[:2], None, METADATAS[:2], ids=["a", "b"], collection=collection, rerank=None)
    assert store.rerank is None and store.candidates == 50
    assert [d.id for d in store.similarity_search(TEXTS[1], k=1)] == ["b"]
    # Its own embeddings object is accepted; it computes nothing anyway.
    again = RwkvdbVectorStore.from_texts(["third"], store.embeddings, collection=collection, candidates=7)
    assert again.candidates == 7 and again.rerank == "offline" and collection.count() == 3
    other = new_collection()
    from_docs = RwkvdbVectorStore.from_documents(
        [Document(page_content="doc one", id="one", metadata={"n": 1}), Document(page_content="doc two")],
        None,
        collection=other,
    )
    assert from_docs.get_by_ids(["one"]) == [Document(id="one", page_content="doc one", metadata={"n": 1})]
    assert other.count() == 2

    with pytest.raises(rwkvdb.InvalidInputError, match="collection="):
        RwkvdbVectorStore.from_texts(["x"], None)
    from langchain_core.embeddings import DeterministicFakeEmbedding

    with pytest.raises(rwkvdb.InvalidInputError, match="own model"):
        RwkvdbVectorStore.from_texts(["x"], DeterministicFakeEmbedding(size=6), collection=collection)
    with pytest.raises(rwkvdb.InvalidInputError, match="own model"):
        RwkvdbVectorStore.from_texts(["x"], RwkvdbEmbeddings(other), collection=collection)
    assert collection.count() == 3


def test_async_variants(collection):
    async def scenario():
        store = await RwkvdbVectorStore.afrom_texts(TEXTS, None, METADATAS, ids=IDS, collection=collection)
        assert await store.aadd_texts(["An async note."], [{"topic": "async"}], ids=["a1"]) == ["a1"]
        ids = await store.aadd_documents([Document(page_content="async doc", id="a2"), Document(page_content="gen")])
        assert ids[0] == "a2" and len(ids) == 2
        assert [d.id for d in await store.aget_by_ids(["a1", "nope", "a2"])] == ["a1", "a2"]
        docs = await store.asimilarity_search("async", k=3, filter={"topic": "async"})
        assert [d.id for d in docs] == ["a1"]
        scored = await store.asimilarity_search_with_score(TEXTS[0], k=1, rerank=None)
        assert scored[0][0].id == "d0" and scored[0][1] == pytest.approx(1, abs=1e-5)
        reranked = await store.asimilarity_search_with_score(TEXTS[0], k=3)
        assert all(0 <= s <= 1 for _, s in reranked)
        assert await store.adelete(["a1", "a2", "nope"]) is True
        assert await store.aget_by_ids(["a1", "a2"]) == []
        # Concurrent searches share the handle (the binding releases the GIL).
        results = await asyncio.gather(*(store.asimilarity_search(t, k=1, rerank=None) for t in TEXTS))
        assert [r[0].id for r in results] == IDS
        with pytest.raises(NotImplementedError, match="by vector"):
            await store.asimilarity_search_by_vector([0.0] * 128)
        return await store.asearch(TEXTS[3], "similarity", k=1, rerank=None)

    assert [d.id for d in asyncio.run(scenario())] == ["d3"]
    assert collection.count() == 7


def test_bad_input(store, new_collection):
    with pytest.raises(rwkvdb.InvalidInputError, match="rerank"):
        RwkvdbVectorStore(store.collection, rerank="sideways")
    with pytest.raises(rwkvdb.InvalidInputError, match="rerank"):
        store.similarity_search("x", rerank="sideways")
    with pytest.raises(rwkvdb.InvalidInputError, match="rerank"):
        store.similarity_search_with_relevance_scores("x", rerank=True)
    with pytest.raises(rwkvdb.InvalidInputError, match="candidates"):
        RwkvdbVectorStore(store.collection, candidates=0)
    with pytest.raises(rwkvdb.InvalidInputError, match="k must"):
        store.similarity_search("x", k=0)
    with pytest.raises(rwkvdb.LimitExceededError):
        store.similarity_search("x", candidates=10**6)
    with pytest.raises(rwkvdb.InvalidInputError, match="empty"):
        store.similarity_search("   ")
    with pytest.raises(TypeError, match="unexpected"):
        store.similarity_search("x", colour="blue")
    with pytest.raises(TypeError, match="Collection"):
        RwkvdbVectorStore("notes")
    with pytest.raises(NotImplementedError, match="by vector"):
        store.similarity_search_by_vector([0.0] * 128)
    with pytest.raises(NotImplementedError, match="marginal relevance"):
        store.max_marginal_relevance_search("x")
    with pytest.raises(NotImplementedError):
        store.max_marginal_relevance_search_by_vector([0.0] * 128)
    # A collection without a reranker: the default (offline) mode fails clearly, None works.
    plain = new_collection(reranker=False)
    no_rr = RwkvdbVectorStore.from_texts(["kept without states"], None, collection=plain)
    with pytest.raises(rwkvdb.NoRerankerError):
        no_rr.similarity_search("x")
    assert no_rr.similarity_search("x", rerank=None)[0].page_content == "kept without states"


def test_missing_langchain_core_is_a_clear_import_error(monkeypatch):
    for name in list(sys.modules):
        if name == "langchain_core" or name.startswith("langchain_core."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    monkeypatch.delitem(sys.modules, "rwkvdb.langchain")
    with pytest.raises(ImportError, match=r"pip install 'rwkvdb\[langchain\]'.*langchain-core"):
        importlib.import_module("rwkvdb.langchain")
    # monkeypatch restores sys.modules (and so the working rwkvdb.langchain) afterwards.


# --- LangChain's standard VectorStore suite (langchain-tests), when installed ----------------

try:
    import pytest_asyncio  # noqa: F401  (the suite's async tests need it)
    from langchain_tests.integration_tests import VectorStoreIntegrationTests
except ImportError:  # pragma: no cover
    VectorStoreIntegrationTests = None

if VectorStoreIntegrationTests is not None:

    @pytest.mark.asyncio
    @pytest.mark.filterwarnings("ignore:The test <Function .*is marked with '@pytest.mark.asyncio'")
    class TestRwkvdbStandard(VectorStoreIntegrationTests):
        """The suite's fake embeddings (``get_embeddings``) cannot apply: rwkvdb embeds with the
        collection's model. The store is built on a fresh collection of the synthetic model
        without reranking (its reranker scores are meaningless); the suite's ranking checks then
        hold because an identical text has cosine 1."""

        @pytest.fixture
        def vectorstore(self, db, new_collection):
            collection = new_collection()
            try:
                yield RwkvdbVectorStore(collection, rerank=None)
            finally:
                db.drop_collection(collection.name)

else:

    def test_standard_suite_unavailable():
        pytest.skip("langchain-tests (and pytest-asyncio) not installed")
