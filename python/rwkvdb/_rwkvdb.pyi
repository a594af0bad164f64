"""Type stubs of the compiled part of rwkvdb (python/src/lib.rs)."""

from os import PathLike
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

StrPath = Union[str, PathLike[str]]
Metadata = Optional[Mapping[str, Any]]
Progress = Callable[[int, int], object]

def write_synthetic_model(
    embedder: StrPath,
    reranker: StrPath,
    *,
    layers: int = 2,
    width: int = 128,
    reranker_layers: Optional[Sequence[int]] = None,
    seed: int = 42,
) -> None:
    """Writes a synthetic embedder + reranker pair (random weights, official layout) as .pth files."""

def offline_document_text(document: str) -> str:
    """The text whose state a collection keeps for a document (official offline template, no EOS)."""

class Document:
    """One stored document."""

    id: str
    text: str
    metadata: Any
    def to_dict(self) -> dict[str, Any]: ...

class Hit:
    """One query hit: similarity is the embeddings' cosine; logit/probability come from the reranker."""

    id: str
    text: str
    metadata: Any
    similarity: float
    logit: Optional[float]
    probability: Optional[float]
    def to_dict(self) -> dict[str, Any]: ...

class QueryResult:
    """Hits best first (iterable and indexable), skipped candidates, and timings in ms."""

    hits: list[Hit]
    skipped: list[dict[str, str]]
    timings: dict[str, float]
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Hit: ...
    def __iter__(self) -> Iterator[Hit]: ...

class Collection:
    """Documents bound to one embedder (+ reranker) pair."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...
    def add(
        self,
        texts: Sequence[str],
        ids: Optional[Sequence[str]] = None,
        metadatas: Optional[Sequence[Metadata]] = None,
        *,
        batch_size: Optional[int] = None,
        progress: Optional[Progress] = None,
    ) -> dict[str, Any]: ...
    def upsert(
        self,
        texts: Sequence[str],
        ids: Optional[Sequence[str]] = None,
        metadatas: Optional[Sequence[Metadata]] = None,
        *,
        batch_size: Optional[int] = None,
        progress: Optional[Progress] = None,
    ) -> dict[str, Any]: ...
    def delete(self, ids: Sequence[str]) -> dict[str, list[str]]: ...
    @overload
    def get(self, ids: str) -> Optional[Document]: ...
    @overload
    def get(self, ids: Sequence[str]) -> list[Optional[Document]]: ...
    def count(self) -> int: ...
    def __len__(self) -> int: ...
    def query(
        self,
        text: str,
        top_k: int = 10,
        candidates: int = 50,
        rerank: Optional[str] = "offline",
        where: Optional[Mapping[str, Any]] = None,
        ef: Optional[int] = None,
    ) -> QueryResult: ...
    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...
    def document_states(self, texts: Sequence[str]) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
    def add_precomputed(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        embeddings: npt.ArrayLike,
        states: Optional[Tuple[npt.ArrayLike, npt.ArrayLike]] = None,
        metadatas: Optional[Sequence[Metadata]] = None,
    ) -> dict[str, Any]: ...
    def import_jsonl(self, path: StrPath, *, batch_size: int = 32, progress: Optional[Progress] = None) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    def checkpoint(self) -> dict[str, Any]: ...

class Database:
    """An open database file; close() (or a with block) saves the ANN indexes and releases it."""

    def __init__(
        self,
        path: StrPath,
        *,
        create: bool = True,
        durable: bool = True,
        threads: int = 0,
        sessions: int = 1,
        ort_library: Optional[StrPath] = None,
    ) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def create_collection(
        self,
        name: str,
        embedder: StrPath,
        reranker: Optional[StrPath] = None,
        *,
        preset: str = "balanced",
        precision: Optional[str] = None,
        max_doc_tokens: int = 8192,
        truncate: bool = False,
    ) -> Collection: ...
    def get_or_create_collection(
        self,
        name: str,
        embedder: StrPath,
        reranker: Optional[StrPath] = None,
        *,
        preset: str = "balanced",
        precision: Optional[str] = None,
        max_doc_tokens: int = 8192,
        truncate: bool = False,
    ) -> Collection: ...
    def collection(self, name: str) -> Collection: ...
    def list_collections(self) -> list[dict[str, Any]]: ...
    def drop_collection(self, name: str) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Database": ...
    def __exit__(self, *args: object) -> bool: ...
