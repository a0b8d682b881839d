"""Deduplication of texts before anything is paid for: exact (normalised) and near (MinHash LSH)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from datasketch import MinHash, MinHashLSH

from tasks.core.ultrachat.text import normalize, shingles

T = TypeVar("T")


@dataclass(frozen=True)
class Duplicate(Generic[T]):
    item: T
    reason: str  # "exact_duplicate" | "near_duplicate"
    of: str  # key of the kept item it duplicates
    similarity: float


def _minhash(text: str, n: int, num_perm: int) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=1)  # fixed seed: same signatures on every run
    m.update_batch(s.encode("utf-8") for s in sorted(shingles(text, n)))
    return m


def dedup(items: Sequence[T], *, key: Callable[[T], str], text: Callable[[T], str],
          threshold: float = 0.8, num_perm: int = 128, shingle_words: int = 3,
          near: bool = True) -> tuple[list[T], list[Duplicate[T]]]:
    """Keep the first of each group of duplicates, in input order (callers pass a stable order).

    An item is an exact duplicate when its normalised text equals a kept one's, and a near
    duplicate when the MinHash estimate of the Jaccard similarity of its word shingles with a kept
    item reaches `threshold`.
    """
    kept: list[T] = []
    dropped: list[Duplicate[T]] = []
    seen: dict[str, str] = {}
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm) if near else None
    sigs: dict[str, MinHash] = {}
    for item in items:
        k, t = key(item), text(item)
        norm = normalize(t)
        if norm in seen:
            dropped.append(Duplicate(item, "exact_duplicate", seen[norm], 1.0))
            continue
        if lsh is not None:
            sig = _minhash(t, shingle_words, num_perm)
            scored = sorted(((sig.jaccard(sigs[c]), c) for c in lsh.query(sig)),
                            key=lambda sc: (-sc[0], sc[1]))
            if scored and scored[0][0] >= threshold:
                dropped.append(Duplicate(item, "near_duplicate", scored[0][1], round(scored[0][0], 4)))
                continue
            lsh.insert(k, sig)
            sigs[k] = sig
        seen[norm] = k
        kept.append(item)
    return kept, dropped
