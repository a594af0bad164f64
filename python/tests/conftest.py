"""Fixtures shared by the Python tests: a synthetic model pair and a small corpus."""

import pytest

import rwkvdb

TEXTS = [
    "Water boils at 100 degrees Celsius at sea level.",
    "Black holes bend light around them.",
    "The violin has four strings tuned in fifths.",
    "Photosynthesis turns light into chemical energy.",
    "Rust's borrow checker prevents data races.",
    "The Nile is the longest river in Africa.",
]


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """(embedder, reranker) paths of a synthetic 3 x 128 pair written by the package."""
    d = tmp_path_factory.mktemp("model")
    emb, rr = d / "emb.pth", d / "rr.pth"
    rwkvdb.write_synthetic_model(emb, rr, layers=3, width=128, reranker_layers=[0, 1], seed=5)
    return emb, rr
