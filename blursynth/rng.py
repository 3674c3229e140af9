"""Counter-based random numbers: item ``i`` of a generated set is a pure function of ``(seed, i)``.

Every sampler in the package draws through these functions instead of a stateful generator, so
the same set comes out whatever the batch size, chunking, worker count or device. A draw is the
SplitMix64 finaliser applied to a counter built from ``(seed, item index, stream, element)``;
the integer arithmetic is exact on CPU and CUDA alike, so the raw bits are identical on every
device. No global RNG state is read or written.

``stream`` separates the independent quantities one sampler draws for the same item (one small
integer constant per quantity), so adding a new quantity never changes the others.
"""

from __future__ import annotations

import math

import torch

_MASK64 = (1 << 64) - 1


def _i64(value: int) -> int:
    """A 64-bit unsigned constant as the signed int64 torch stores."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _i64(0x9E3779B97F4A7C15)
_M1 = _i64(0xBF58476D1CE4E5B9)
_M2 = _i64(0x94D049BB133111EB)


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic on negative values)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors (wrapping multiplication)."""
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def _python_mix(x: int) -> int:
    """Reference of :func:`_mix` on Python ints (used to key seeds and in tests)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def as_index(index: torch.Tensor | int | range | list, device: torch.device | str | None = None) -> torch.Tensor:
    """Item indices as a 1-D int64 tensor (``int n`` means ``range(n)``)."""
    if isinstance(index, int):
        index = range(index)
    if isinstance(index, range):
        return torch.arange(index.start, index.stop, index.step, dtype=torch.int64, device=device)
    return torch.as_tensor(index, dtype=torch.int64, device=device).reshape(-1)


def bits(seed: int, index: torch.Tensor, shape: tuple[int, ...], stream: int) -> torch.Tensor:
    """Raw 64-bit random words.

    Args:
        seed: base seed, any Python int.
        index: ``(N,)`` int64 item indices; the words of item ``i`` depend only on ``(seed, i, stream)``.
        shape: per-item shape.
        stream: small non-negative int naming the quantity being drawn.

    Returns:
        ``(N, *shape)`` int64 on ``index.device``.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    key = _i64(_python_mix(_python_mix(seed) ^ _python_mix((stream + 1) * 0x9E3779B97F4A7C15)))
    numel = 1
    for s in shape:
        numel *= s
    element = torch.arange(numel, dtype=torch.int64, device=index.device)
    # Item and element counters are mixed separately, so item i's words never collide with
    # another item's for any per-item size.
    item = _mix(index.to(torch.int64) * _GOLDEN + key)
    words = _mix(item[:, None] + (element[None, :] + 1) * _GOLDEN)
    return words.reshape(index.shape[0], *shape)


def uniform(seed: int, index: torch.Tensor, shape: tuple[int, ...] = (), stream: int = 0,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform draws in ``[0, 1)`` with 24-bit resolution (exact in float32).

    Returns ``(N, *shape)`` of ``dtype`` on ``index.device``.
    """
    word = _shr(bits(seed, index, shape, stream), 40)  # top 24 bits
    return (word.to(torch.float64) * (1.0 / (1 << 24))).to(dtype)


def normal(seed: int, index: torch.Tensor, shape: tuple[int, ...] = (), stream: int = 0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal draws by the Box-Muller transform, ``(N, *shape)`` on ``index.device``.

    Computed in float64 and rounded to ``dtype`` so CPU and CUDA agree to the last float32 bit in
    practice (the transcendental functions differ only far below float32 resolution).
    """
    word = bits(seed, index, shape, stream)
    u1 = (_shr(word, 40).to(torch.float64) + 0.5) * (1.0 / (1 << 24))  # (0, 1): log is finite
    u2 = (word & 0xFFFFFF).to(torch.float64) * (1.0 / (1 << 24))
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)
    return z.to(dtype)


def log_uniform(seed: int, index: torch.Tensor, low: float, high: float, shape: tuple[int, ...] = (),
                stream: int = 0) -> torch.Tensor:
    """Draws whose logarithm is uniform on ``[log low, log high]`` (``0 < low <= high``)."""
    if not 0 < low <= high:
        raise ValueError(f"log-uniform range needs 0 < low <= high, got ({low}, {high})")
    u = uniform(seed, index, shape, stream, dtype=torch.float64)
    lo, hi = math.log(low), math.log(high)
    return torch.exp(lo + (hi - lo) * u).to(torch.float32)


def range_uniform(seed: int, index: torch.Tensor, low: float, high: float, shape: tuple[int, ...] = (),
                  stream: int = 0) -> torch.Tensor:
    """Uniform draws on ``[low, high)`` (``low <= high``), float32."""
    if low > high:
        raise ValueError(f"uniform range needs low <= high, got ({low}, {high})")
    return (low + (high - low) * uniform(seed, index, shape, stream, dtype=torch.float64)).to(torch.float32)
