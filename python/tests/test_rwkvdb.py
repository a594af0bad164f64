"""The Python package against a real build of the extension, a real database file and a
synthetic model written by the package itself."""

import json
import threading

import numpy as np
import pytest

import rwkvdb
from conftest import TEXTS


@pytest.fixture
def db(tmp_path):
    database = rwkvdb.Database(tmp_path / "t.redb")
    yield database
    database.close()


@pytest.fixture
def notes(db, model):
    c = db.create_collection("notes", embedder=model[0], reranker=model[1])
    c.add(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))], metadatas=[{"n": i, "odd": i % 2 == 1} for i in range(len(TEXTS))])
    return c


def test_add_get_query_delete_upsert(db, notes):
    assert notes.count() == len(notes) == 6
    doc = notes.get("d2")
    assert (doc.id, doc.text, doc.metadata) == ("d2", TEXTS[2], {"n": 2, "odd": False})
    assert doc.to_dict() == {"id": "d2", "text": TEXTS[2], "metadata": {"n": 2, "odd": False}}
    assert [d and d.id for d in notes.get(["d1", "nope"])] == ["d1", None]
    assert notes.get("nope") is None

    for mode in ["offline", "online", None]:
        result = notes.query("Which river is the longest?", top_k=3, candidates=6, rerank=mode)
        assert len(result) == 3 and len(result.hits) == 3
        assert all((h.logit is None) == (mode is None) for h in result)
        assert set(result.timings) == {"embed_ms", "ann_ms", "load_ms", "rerank_ms"}
        if mode:
            probs = [h.probability for h in result]
            assert probs == sorted(probs, reverse=True)
            assert abs(result[0].probability - 1 / (1 + np.exp(-result[0].logit))) < 1e-6
    hits = notes.query("light", top_k=10, where={"odd": True, "n": {"$gte": 3}})
    assert sorted(h.id for h in hits) == ["d3", "d5"]
    assert hits[-1].to_dict()["id"] == hits[len(hits) - 1].id

    added = notes.add(["An extra note."])  # generated id
    assert len(added["ids"]) == 1 and notes.get(added["ids"][0]).text == "An extra note."
    assert notes.upsert(["Replaced text."], ids=["d0"])["replaced"] == 1
    assert notes.get("d0").text == "Replaced text." and notes.get("d0").metadata is None
    assert notes.delete(["d0", "zz"]) == {"deleted": ["d0"], "missing": ["zz"]}
    assert notes.count() == 6
    assert notes.stats()["documents"] == 6
    assert notes.checkpoint()["saved"] is True
    assert [c["name"] for c in db.list_collections()] == ["notes"]
    assert notes.config["state_preset"] == "balanced"


def test_embeddings_are_what_the_query_compares(notes):
    e = notes.embed(TEXTS[:2] + ["Where do rivers flow?"])
    assert e.shape == (3, 128) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    hits = {h.id: h.similarity for h in notes.query("Where do rivers flow?", top_k=6, rerank=None)}
    assert abs(hits["d0"] - float(e[2] @ e[0])) < 1e-5
    assert abs(hits["d1"] - float(e[2] @ e[1])) < 1e-5


def test_states_from_elsewhere_rank_like_the_package_own(db, notes, model):
    ids = [f"d{i}" for i in range(len(TEXTS))]
    shift, wkv = notes.document_states(TEXTS)
    # The official layout: token shift [layers, 2, B, C], WKV [layers, B, H, 64, 64].
    assert shift.shape == (2, 2, 6, 128) and wkv.shape == (2, 6, 2, 64, 64)
    emb = notes.embed(TEXTS)

    # Another process would hand over more layers (the whole model) and float64/torch arrays.
    class TensorLike:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a if dtype is None else self.a.astype(dtype)

    extra_layer = np.random.default_rng(0).standard_normal((1,) + shift.shape[1:])
    shift3 = np.concatenate([shift, extra_layer]).astype(np.float64)
    wkv3 = TensorLike(np.concatenate([wkv, np.ones((1,) + wkv.shape[1:], np.float32)]))
    other = db.create_collection("imported", embedder=model[0], reranker=model[1])
    other.add_precomputed(ids, TEXTS, emb, (shift3, wkv3), metadatas=[{"n": i} for i in range(6)])
    assert other.get("d4").metadata == {"n": 4}
    for mode in ["offline", None]:
        a = notes.query("a question about music", top_k=6, rerank=mode)
        b = other.query("a question about music", top_k=6, rerank=mode)
        assert [h.id for h in a] == [h.id for h in b]
        for x, y in zip(a, b):
            assert abs(x.similarity - y.similarity) < 1e-5
            if mode:
                assert abs(x.logit - y.logit) < 1e-5

    # Wrong shapes: a clear error, nothing written.
    bad = [
        (emb[:, :64], (shift, wkv), "embeddings"),
        (emb, (shift[:1], wkv[:1]), "token_shift"),
        (emb, (shift, wkv[:, :, :1]), "wkv"),
        (emb, (shift,), "states"),
        (emb, None, "keeps states"),
        (emb, ("not", "arrays"), "token_shift"),
    ]
    fresh = db.create_collection("fresh", embedder=model[0], reranker=model[1])
    for e, s, message in bad:
        with pytest.raises(rwkvdb.InvalidInputError, match=message):
            fresh.add_precomputed(ids, TEXTS, e, s)
    with pytest.raises(TypeError, match="ids"):
        fresh.add_precomputed([1, 2, 3, 4, 5, 6], TEXTS, emb, (shift, wkv))
    assert fresh.count() == 0


def test_bad_input_raises_and_writes_nothing(db, notes, model):
    before = notes.count()
    with pytest.raises(TypeError, match="one str"):
        notes.add("a lone string")
    with pytest.raises(TypeError, match="ids"):
        notes.add(["x"], ids=[7])
    with pytest.raises(rwkvdb.InvalidInputError, match="2 texts but 1 ids"):
        notes.add(["x", "y"], ids=["a"])
    with pytest.raises(rwkvdb.DuplicateIdError):
        notes.add(["new one", "clash"], ids=["new", "d1"])
    with pytest.raises(rwkvdb.DuplicateIdError):
        notes.add(["twice", "twice"], ids=["t", "t"])
    with pytest.raises(rwkvdb.InvalidInputError, match="empty"):
        notes.add(["fine", "  "])
    with pytest.raises(ValueError):
        notes.add(["nan metadata"], metadatas=[{"x": float("nan")}])
    with pytest.raises(TypeError):
        notes.add(["unserialisable"], metadatas=[{"x": object()}])
    assert notes.count() == before and notes.get("new") is None

    with pytest.raises(rwkvdb.FilterError):
        notes.query("x", where={"n": {"$near": 1}})
    with pytest.raises(rwkvdb.InvalidInputError, match="rerank"):
        notes.query("x", rerank="sideways")
    with pytest.raises(rwkvdb.InvalidInputError, match="top_k"):
        notes.query("x", top_k=0)
    with pytest.raises(rwkvdb.LimitExceededError):
        notes.query("x", candidates=10**6)
    with pytest.raises(rwkvdb.NoSuchCollectionError) as e:
        db.collection("nope")
    assert isinstance(e.value, KeyError) and str(e.value) == 'no collection named "nope"'
    with pytest.raises(rwkvdb.CollectionExistsError):
        db.create_collection("notes", embedder=model[0])
    with pytest.raises(rwkvdb.ConfigError, match="precision"):
        db.create_collection("q", embedder=model[0], precision="int3")
    with pytest.raises(rwkvdb.ModelFileError, match="missing.pth"):
        db.create_collection("m", embedder="missing.pth")
    plain = db.create_collection("plain", embedder=model[0])
    plain.add(["no states kept"])
    with pytest.raises(rwkvdb.NoRerankerError):
        plain.query("x", rerank="offline")
    assert plain.query("x", rerank=None)[0].text == "no states kept"

    db.drop_collection("notes")
    with pytest.raises(rwkvdb.NoSuchCollectionError):
        notes.count()


def test_closed_database_and_reopen(tmp_path, model):
    path = tmp_path / "c.redb"
    with rwkvdb.Database(path) as db:
        c = db.create_collection("notes", embedder=model[0], reranker=model[1])
        c.add(TEXTS[:2], ids=["a", "b"])
    assert db.closed
    with pytest.raises(rwkvdb.DatabaseClosedError):
        c.count()
    with pytest.raises(rwkvdb.DatabaseClosedError):
        db.collection("notes")
    db.close()  # twice is fine
    # The file was released: another handle opens it, with everything committed.
    again = rwkvdb.Database(path, create=False)
    assert again.collection("notes").get("b").text == TEXTS[1]
    with pytest.raises(rwkvdb.DatabaseLockedError, match="--server|serve"):
        rwkvdb.Database(path)
    again.close()


def test_import_jsonl_with_progress_and_resume(notes, tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": f"j{i}", "text": f"Imported note {i}."}) for i in range(10)]
    lines.insert(3, "{not json")
    src.write_text("\n".join(lines) + "\n")
    seen = []
    report = notes.import_jsonl(src, batch_size=4, progress=lambda done, total: seen.append((done, total)))
    assert report["imported"] == 10 and report["already_present"] == 0
    assert len(report["problems"]) == 1 and "in.jsonl:4" in report["problems"][0]["id"]
    assert seen[-1] == (10, 10) and len(seen) >= 3
    again = notes.import_jsonl(src)
    assert again["imported"] == 0 and again["already_present"] == 10
    with pytest.raises(rwkvdb.InvalidInputError, match="nowhere.jsonl"):
        notes.import_jsonl(tmp_path / "nowhere.jsonl")

    seen.clear()
    notes.add([f"batch {i}" for i in range(7)], batch_size=3, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(3, 7), (6, 7), (7, 7)]


def test_threads_share_a_handle_and_run_in_parallel(notes):
    errors = []

    def work(t):
        try:
            for r in range(3):
                notes.add([f"thread {t} round {r}"], ids=[f"t{t}-{r}"])
                assert len(notes.query(TEXTS[r], top_k=3)) == 3
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    # The GIL is released while they work: this thread keeps running meanwhile.
    ticks = 0
    while any(t.is_alive() for t in threads):
        ticks += 1
        threading.Event().wait(0.001)
    for t in threads:
        t.join()
    assert not errors, errors
    assert notes.count() == 6 + 12
    assert ticks > 0


def test_synthetic_model_arguments_are_checked(tmp_path):
    with pytest.raises(rwkvdb.InvalidInputError, match="multiple of 64"):
        rwkvdb.write_synthetic_model(tmp_path / "e.pth", tmp_path / "r.pth", width=100)
    with pytest.raises(rwkvdb.InvalidInputError, match="reranker_layers"):
        rwkvdb.write_synthetic_model(tmp_path / "e.pth", tmp_path / "r.pth", layers=2, reranker_layers=[5])


def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    import pathlib

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[-1] == "(1, 128)"
    assert {line.split()[0] for line in out[:2]} == {"boil", "melt"}


def test_metadata_must_be_a_dict(notes):
    with pytest.raises(TypeError, match="dict or None"):
        notes.add(["x", "y"], metadatas=[{"ok": 1}, [1, 2]])
    assert notes.count() == 6
