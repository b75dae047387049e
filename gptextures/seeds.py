"""Per-sample seeds from (dataset seed, split, index): independent of order, workers and shards.

A sample's randomness is ``SeedSequence(entropy=dataset_seed, spawn_key=(split_id, index))``;
the split id is derived from the split *name* (not its position), so adding a split never
changes the samples of another. Each level of a texture draws from a child key
``spawn_key + (level,)``; nothing here is stateful, so any subset of samples can be generated
alone, in any order, with the same bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np

MAX_SEED = 2**63 - 1


def check_seed(seed: object, name: str = "seed") -> int:
    """Validate a user seed: a non-negative int below 2**63."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name}: expected an int in [0, 2**63 - 1], got {seed!r}")
    seed = int(seed)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name}: must be in [0, 2**63 - 1], got {seed}")
    return seed


def split_id(split: str) -> int:
    """Stable 32-bit id of a split name (first 4 bytes of its sha256, big-endian)."""
    if not isinstance(split, str) or not split:
        raise ValueError(f"split: expected a non-empty string, got {split!r}")
    return int.from_bytes(hashlib.sha256(split.encode("utf-8")).digest()[:4], "big")


def sample_seed_sequence(dataset_seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The SeedSequence of sample ``index`` of ``split``."""
    dataset_seed = check_seed(dataset_seed, "seed")
    index = check_seed(index, "index")
    return np.random.SeedSequence(entropy=dataset_seed, spawn_key=(split_id(split), index))


def sample_seed(dataset_seed: int, split: str, index: int) -> int:
    """A 63-bit integer seed for sample ``index`` of ``split`` (what files store per sample).

    ``render(spec, class_index, seed=sample_seed(...))`` reproduces the stored image.
    """
    return _state_to_int(sample_seed_sequence(dataset_seed, split, index))


def _state_to_int(ss: np.random.SeedSequence) -> int:
    hi, lo = (int(x) for x in ss.generate_state(2, np.uint32))
    return ((hi << 32) | lo) & MAX_SEED


def level_seed_sequence(seed: int | np.random.SeedSequence, level: int) -> np.random.SeedSequence:
    """Child SeedSequence for one level of an image (pure: does not mutate ``seed``)."""
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(entropy=seed.entropy, spawn_key=(*seed.spawn_key, level))
    return np.random.SeedSequence(entropy=check_seed(seed), spawn_key=(level,))


def rng(seed: int | np.random.SeedSequence) -> np.random.Generator:
    """A SFC64 generator (fast, 256-bit state) for an int seed or a SeedSequence."""
    if not isinstance(seed, np.random.SeedSequence):
        seed = np.random.SeedSequence(check_seed(seed))
    return np.random.Generator(np.random.SFC64(seed))
