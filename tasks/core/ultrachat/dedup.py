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


class _Kept:
    """The texts kept so far: normalised forms for exact matches, an LSH index for near ones."""

    def __init__(self, threshold: float, num_perm: int, shingle_words: int, near: bool):
        self.threshold, self.num_perm, self.shingle_words = threshold, num_perm, shingle_words
        self.exact: dict[str, str] = {}
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm) if near else None
        self.sigs: dict[str, MinHash] = {}

    def offer(self, key: str, text: str) -> tuple[str, str, float] | None:
        """(reason, key of the kept text, similarity) if `text` duplicates a kept text, else keep
        it under `key` and return None."""
        norm = normalize(text)
        if norm in self.exact:
            return "exact_duplicate", self.exact[norm], 1.0
        if self.lsh is not None:
            sig = _minhash(text, self.shingle_words, self.num_perm)
            scored = sorted(((sig.jaccard(self.sigs[c]), c) for c in self.lsh.query(sig)),
                            key=lambda sc: (-sc[0], sc[1]))
            if scored and scored[0][0] >= self.threshold:
                return "near_duplicate", scored[0][1], round(scored[0][0], 4)
            self.lsh.insert(key, sig)
            self.sigs[key] = sig
        self.exact[norm] = key
        return None


def dedup(items: Sequence[T], *, key: Callable[[T], str], text: Callable[[T], str],
          against: Sequence[T] = (), threshold: float = 0.8, num_perm: int = 128,
          shingle_words: int = 3, near: bool = True) -> tuple[list[T], list[Duplicate[T]]]:
    """Keep the first of each group of duplicates, in input order (callers pass a stable order).

    An item is an exact duplicate when its normalised text equals a kept one's, and a near
    duplicate when the MinHash estimate of the Jaccard similarity of its word shingles with a kept
    item reaches `threshold`. Items of `against` count as kept from the start (they are checked
    against, never returned): e.g. the selected openings that new expanded ones must not repeat.
    """
    kept_so_far = _Kept(threshold, num_perm, shingle_words, near)
    for item in against:
        kept_so_far.offer(key(item), text(item))
    kept: list[T] = []
    dropped: list[Duplicate[T]] = []
    for item in items:
        found = kept_so_far.offer(key(item), text(item))
        if found:
            dropped.append(Duplicate(item, *found))
        else:
            kept.append(item)
    return kept, dropped
