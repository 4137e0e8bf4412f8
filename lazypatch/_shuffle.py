"""Random orders in O(1) memory: keyed hashing and a keyed permutation of [0, n).

``permute(positions, n, key)`` is a bijection of [0, n) evaluated on demand
(a six-round Feistel network over the smallest even-bit power of two >= n,
with cycle walking back into [0, n)): no list of n indices ever exists, yet
consecutive outputs are spread like a uniform permutation's. Everything is
vectorized uint64 numpy arithmetic (wrapping on overflow by design).

>>> order = permute(np.arange(10), 10, key(3, 0))
>>> sorted(order.tolist()) == list(range(10))
True
"""

from __future__ import annotations

import numpy as np

_ROUNDS = 6
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15


def mix(values) -> np.ndarray:
    """splitmix64's finalizer: a bijective scramble of uint64 values."""
    x = np.asarray(values, dtype=np.uint64).copy()
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def key(*words: int) -> int:
    """One 64-bit key from integers (seed, epoch, stream...)."""
    state = np.zeros(1, dtype=np.uint64)
    for word in words:
        state = mix(state ^ np.uint64((int(word) * _GOLDEN + 1) & 0xFFFFFFFFFFFFFFFF))
    return int(state[0])


def uniform(positions, n, salt: int) -> np.ndarray:
    """Independent uniform draws in [0, n) (n scalar or array), one per position."""
    drawn = mix(np.asarray(positions, dtype=np.uint64) ^ np.uint64(salt))
    return (drawn % np.asarray(n, dtype=np.uint64)).astype(np.int64)


def _half_bits(n) -> np.ndarray:
    """Half the bits of the Feistel domain of each n: domain = 4 ** half >= n."""
    n = np.maximum(np.asarray(n, dtype=np.int64), 2)
    bits = np.ceil(np.log2(n.astype(np.float64))).astype(np.int64)
    bits += bits % 2
    # guard float rounding at exact powers of two
    bits = np.where((np.int64(1) << bits) < n, bits + 2, bits)
    return np.maximum(bits // 2, 1).astype(np.uint64)


def _encrypt(values: np.ndarray, half: np.ndarray, round_keys, tweak) -> np.ndarray:
    mask = (np.uint64(1) << half) - np.uint64(1)
    left = values >> half
    right = values & mask
    for round_key in round_keys:
        scrambled = mix(right ^ round_key ^ tweak) & mask
        left, right = right, left ^ scrambled
    return (left << half) | right


def permute(positions, n, salt: int, tweak=0) -> np.ndarray:
    """The images of ``positions`` under a keyed bijection of [0, n).

    ``n`` may be an array (one domain per position), and so may ``tweak``:
    each distinct tweak selects an independent permutation (of each image's
    patches, say) in the same vectorized pass. Positions must lie in [0, n).
    """
    values = np.asarray(positions, dtype=np.int64).astype(np.uint64)
    n = np.broadcast_to(np.asarray(n, dtype=np.int64), values.shape).astype(np.uint64)
    tweak = np.broadcast_to(mix(np.asarray(tweak, dtype=np.int64).astype(np.uint64)), values.shape)
    half = _half_bits(n)
    round_keys = [np.uint64(key(salt, r)) for r in range(_ROUNDS)]
    result = _encrypt(values, half, round_keys, tweak)
    outside = np.flatnonzero(result >= n)
    while outside.size:  # cycle walking: stays a bijection of [0, n)
        result[outside] = _encrypt(result[outside], half[outside], round_keys, tweak[outside])
        outside = outside[result[outside] >= n[outside]]
    small = n <= 1
    if small.any():
        result[small] = 0
    return result.astype(np.int64)
