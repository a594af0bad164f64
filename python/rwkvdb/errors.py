"""The exceptions rwkvdb raises. Every one is an ``RwkvdbError``; those about the caller's
input are also ``ValueError``s, lookups of a missing collection also ``KeyError``s."""


class RwkvdbError(Exception):
    """Base class of every rwkvdb error."""


class InvalidInputError(RwkvdbError, ValueError):
    """Input refused before anything was written (empty text, bad id, wrong array shape...)."""


class DuplicateIdError(InvalidInputError):
    """An id is already stored (use ``upsert``) or appears twice in one call."""


class LimitExceededError(InvalidInputError):
    """A documented limit was exceeded (batch size, text or metadata size, candidates)."""


class FilterError(InvalidInputError):
    """A malformed ``where`` filter."""


class ConfigError(InvalidInputError):
    """An invalid collection setting (unknown preset or precision)."""


class NoSuchCollectionError(RwkvdbError, KeyError):
    """No collection of that name (or it was dropped)."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CollectionExistsError(RwkvdbError):
    """``create_collection`` with a name already in use (see ``get_or_create_collection``)."""


class ModelMismatchError(RwkvdbError):
    """The collection was created with another model than its files now hold."""


class ModelFileError(RwkvdbError):
    """A model file is missing, unreadable or not a checkpoint of the expected shape."""


class ModelError(RwkvdbError):
    """The model runtime failed (ONNX Runtime missing, inference error)."""


class NoRerankerError(ModelError):
    """Reranking (or states) asked of a collection that has no reranker."""


class StorageError(RwkvdbError):
    """The database file failed or holds damaged data."""


class DatabaseLockedError(StorageError):
    """Another process has the file open (share it with ``rwkvdb serve``)."""


class DatabaseClosedError(RwkvdbError):
    """The database handle was closed."""
