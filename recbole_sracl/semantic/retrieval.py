"""Cosine top-k neighbours with faiss (self excluded), and the brute-force reference used by the tests."""

from __future__ import annotations

import numpy as np

from recbole_sracl.errors import require_one_of

INDEXES = ("flat", "hnsw", "ivf")


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def build_index(vectors: np.ndarray, kind: str = "flat", hnsw_m: int = 32, ivf_lists: int | None = None):
    """A faiss inner-product index over normalised ``vectors`` (inner product = cosine)."""
    import faiss

    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
    elif kind == "ivf":
        lists = ivf_lists or max(1, min(65536, int(4 * np.sqrt(len(vectors)))))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(lists, 16)
    else:
        require_one_of("semantic_index", kind, INDEXES)
    index.add(vectors)
    return index


def top_k_neighbours(vectors: np.ndarray, k: int, kind: str = "flat", batch_size: int = 8192) -> np.ndarray:
    """``[n, min(k, n-1)]`` row indices of each row's most cosine-similar OTHER rows, best first.

    The query row itself is removed wherever it appears among the results (ties with identical vectors
    included); with approximate indexes a missing slot is filled by -1.
    """
    vectors = normalise(vectors)
    n = len(vectors)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    index = build_index(vectors, kind)
    result = np.full((n, k), -1, dtype=np.int64)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        _, found = index.search(vectors[start:stop], k + 1)
        result[start:stop] = without_self(found, start, k)
    return result


def without_self(found: np.ndarray, first_row: int, k: int) -> np.ndarray:
    """Search results of rows ``first_row, first_row + 1, ...`` without the query row itself: the best ``k``
    other rows in rank order, faiss's -1 padding moved to the end."""
    invalid = (found == np.arange(first_row, first_row + len(found))[:, None]) | (found < 0)
    order = np.argsort(invalid, axis=1, kind="stable")  # valid candidates first, in rank order
    cleaned = np.take_along_axis(found, order, axis=1)[:, :k]
    cleaned[np.take_along_axis(invalid, order, axis=1)[:, :k]] = -1
    return cleaned


def brute_force_neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """Reference answer with numpy: full similarity matrix, self masked, stable descending sort."""
    vectors = normalise(vectors)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    k = min(k, len(vectors) - 1)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def recall_against(exact: np.ndarray, approximate: np.ndarray) -> float:
    """Mean fraction of each row's exact neighbours that the approximate search also returned."""
    hits = [len(set(e.tolist()) & set(a.tolist())) / max(1, len(e)) for e, a in zip(exact, approximate)]
    return float(np.mean(hits)) if hits else 1.0
