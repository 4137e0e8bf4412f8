"""Random orders in O(1) memory: keyed hashing and a keyed permutation of [0, n).

``permute(positions, n, key)`` is a bijection of [0, n) evaluated on demand:
a six-round Feistel network on the mixed-radix domain Z_a x Z_b with
a = ceil(sqrt(n)), b = ceil(n / a) (so a * b - n < a), each round adding a
multiply-shift hash of one half to the other modulo its radix, with cycle
walking for the few values that land in [n, a * b). No list of n indices
ever exists, yet consecutive outputs are spread like a uniform
permutation's. Everything is vectorized uint64 numpy arithmetic (wrapping
on overflow by design).

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


_MASK = (1 << 64) - 1


def _mix_int(x: int) -> int:
    """``mix`` on one Python int (no numpy call: keys are made often)."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def key(*words: int) -> int:
    """One 64-bit key from integers (seed, epoch, stream...).

    >>> key(1, 2) == int(mix(np.uint64(key(1)) ^ np.uint64((2 * _GOLDEN + 1) & _MASK)))
    True
    """
    state = 0
    for word in words:
        state = _mix_int(state ^ ((int(word) * _GOLDEN + 1) & _MASK))
    return state


def uniform(positions, n, salt: int) -> np.ndarray:
    """Independent uniform draws in [0, n) (n scalar or array), one per position."""
    drawn = mix(np.asarray(positions, dtype=np.uint64) ^ np.uint64(salt))
    return (drawn % np.asarray(n, dtype=np.uint64)).astype(np.int64)


def _round_hash(values: np.ndarray, round_key, modulus) -> np.ndarray:
    """A keyed hash of each value into [0, modulus): multiply, keep the high bits."""
    scrambled = (values ^ round_key) * _M1
    scrambled ^= scrambled >> np.uint64(29)
    scrambled *= _M2
    return (scrambled >> np.uint64(32)) % modulus


def _encrypt(values, rows, cols, round_keys, tweak):
    high, low = np.divmod(values, cols)
    for number, round_key in enumerate(round_keys):
        if number % 2 == 0:
            high = (high + _round_hash(low ^ tweak, round_key, rows)) % rows
        else:
            low = (low + _round_hash(high ^ tweak, round_key, cols)) % cols
    return high * cols + low


def permute(positions, n, salt: int, tweak=0) -> np.ndarray:
    """The images of ``positions`` under a keyed bijection of [0, n).

    ``n`` may be an array (one domain per position), and so may ``tweak``:
    each distinct tweak selects an independent permutation (of each image's
    patches, say) in the same vectorized pass. Positions must lie in [0, n).
    """
    values = np.asarray(positions, dtype=np.int64).astype(np.uint64)
    n = np.broadcast_to(np.asarray(n, dtype=np.int64), values.shape).astype(np.uint64)
    if np.ndim(tweak) == 0:
        tweak = np.uint64(_mix_int(int(tweak) & _MASK))
    else:
        tweak = np.broadcast_to(mix(np.asarray(tweak, dtype=np.int64).astype(np.uint64)), values.shape)
    rows = np.maximum(np.ceil(np.sqrt(n.astype(np.float64))).astype(np.uint64), np.uint64(1))
    rows = np.where(rows * rows < n, rows + np.uint64(1), rows)  # float rounding of sqrt
    cols = np.maximum((n + rows - np.uint64(1)) // rows, np.uint64(1))
    round_keys = [np.uint64(key(salt, r)) for r in range(_ROUNDS)]
    result = _encrypt(values, rows, cols, round_keys, tweak)
    outside = np.flatnonzero(result >= n)
    while outside.size:  # cycle walking: stays a bijection of [0, n)
        result[outside] = _encrypt(result[outside], rows[outside], cols[outside], round_keys,
                                   tweak if np.ndim(tweak) == 0 else tweak[outside])
        outside = outside[result[outside] >= n[outside]]
    return result.astype(np.int64)
