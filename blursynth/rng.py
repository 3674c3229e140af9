"""Counter-based random numbers: item ``i`` of a generated set is a pure function of ``(seed, i)``.

Every sampler in the package draws through these functions instead of a stateful generator, so
the same set comes out whatever the batch size, chunking, worker count or device. A draw is the
SplitMix64 finaliser applied to a counter built from ``(seed, item index, stream, element)``;
the integer arithmetic is exact on CPU and CUDA alike, so the raw bits are identical on every
device. No global RNG state is read or written.

``stream`` separates the independent quantities one sampler draws for the same item (one small
integer constant per quantity), so adding a new quantity never changes the others.

A known limit of the key (``mix(mix(seed) ^ mix((stream + 1) * G))``, G the golden-ratio constant of
:func:`_key`): it is symmetric between a seed of the form ``(t + 1) * G mod 2**64`` and stream ``t``,
so seed ``(t + 1) * G`` on stream ``s`` draws what seed ``(s + 1) * G`` draws on stream ``t`` (when
both are valid seeds). Seeds chosen by hand or at random never take that form except by a chance
of the order of 2**-58 a seed; changing the key would change every set ever generated, so it stays.

A seed is an integer in ``[0, 2**63)`` (:data:`SEED_LIMIT`); :func:`check_seed` is the one place
that says so, and every draw goes through it.
"""

from __future__ import annotations

import math
import numbers
import operator
import reprlib

import numpy as np
import torch

_MASK64 = (1 << 64) - 1

SEED_LIMIT = 1 << 63
"""Seeds are integers in ``[0, SEED_LIMIT)``. The generator reduces a seed modulo ``2**64`` and the
pair maker derives 63-bit component seeds, so larger values would silently alias smaller ones;
``2**63`` also keeps every seed storable as an int64 (NumPy, torch, ``.npz`` files)."""


def is_integer(value) -> bool:
    """Whether ``value`` is a Python or NumPy integer (not a bool): what counts, sizes and indices take."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def plain_index(items):
    """``items`` with a 0-d integer tensor (what ``for i in torch.arange(n)`` gives) as the int it holds,
    so that it selects one item as an int does, not as a 0-d index that drops the batch axis."""
    if isinstance(items, torch.Tensor) and items.ndim == 0 and not items.is_floating_point() \
            and items.dtype != torch.bool:
        return int(items)
    return items


def is_real(value) -> bool:
    """Whether ``value`` is a real number, Python's or NumPy's (not a bool, which would be read as 0
    or 1, nor a string): what physical quantities and options take."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def as_real(value) -> float | None:
    """``value`` as a float if :func:`is_real` (NumPy's bool is no ``numbers.Real`` either), else None."""
    return float(value) if is_real(value) else None


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as a Python int, or a clear error: the one check of every seed in the package.

    Accepts a Python int, a NumPy integer or a one-element integer torch tensor in ``[0, 2**63)``.

    Raises:
        TypeError: not an integer (a float, a bool, a string, a float tensor ...); the message names
            ``name``.
        ValueError: negative or ``>= 2**63``; the message names ``name`` and the valid range.
    """
    bad_type = isinstance(seed, (bool, np.bool_)) or (isinstance(seed, torch.Tensor) and seed.dtype == torch.bool)
    try:
        if bad_type:
            raise TypeError
        value = operator.index(seed)
    except (TypeError, RuntimeError, ValueError):
        shown = f"a {type(seed).__name__}" if not isinstance(seed, torch.Tensor) else \
            f"a {seed.dtype} tensor of shape {tuple(seed.shape)}"
        raise TypeError(f"{name} must be an integer in [0, 2**63), got {seed!r} ({shown}); "
                        f"pass an int, e.g. {name}=0") from None
    if not 0 <= value < SEED_LIMIT:
        why = ": larger seeds would repeat smaller ones" if value > 0 else ""
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {value}{why}; pick {name} in that range")
    return value


def _i64(value: int) -> int:
    """A 64-bit unsigned constant as the signed int64 torch stores."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _i64(0x9E3779B97F4A7C15)
_M1 = _i64(0xBF58476D1CE4E5B9)
_M2 = _i64(0x94D049BB133111EB)


def _shr(x: torch.Tensor, s: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic on negative values), into ``out`` if given."""
    return torch.bitwise_right_shift(x, s, out=out).bitwise_and_((1 << (64 - s)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors (wrapping multiplication), in place: ``x`` is overwritten."""
    t = torch.empty_like(x)
    for shift, factor in ((30, _M1), (27, _M2), (31, None)):
        x ^= _shr(x, shift, out=t)
        if factor is not None:
            x *= factor
    return x


def _python_mix(x: int) -> int:
    """Reference of :func:`_mix` on Python ints (used to key seeds and in tests)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def as_index(index: torch.Tensor | int | range | list, device: torch.device | str | None = None) -> torch.Tensor:
    """Item indices as a 1-D int64 tensor on ``device`` (``int n`` means ``range(n)``; a tensor or list
    of any shape is flattened; ``device=None`` keeps a tensor's own, else the CPU). Indices are non-negative
    integers: a float one would be truncated into another item's draws, so it is refused."""
    if is_integer(index):
        if index < 0:  # (range(-3) was no items, without a word)
            raise ValueError(f"a number of items must be >= 0, got {index}")
        index = range(int(index))
    if isinstance(index, range):
        # Built from the range's first item and step, not its stop: torch.arange refused the stop
        # 2**63 (one past the largest int64) of valid last items, e.g. range(2**63 - 3, 2**63), with
        # a RuntimeError about int64_t; items past int64 get a message that says what is wrong.
        if len(index) and max(index[0], index[-1]) >= 1 << 63:
            raise ValueError(f"item indices must be < 2**63, got {max(index[0], index[-1])}")
        step = index.step if len(index) > 1 else 1
        idx = torch.arange(len(index), dtype=torch.int64, device=device).mul_(step).add_(index[0] if len(index) else 0)
    else:
        if isinstance(index, np.ndarray) and index.dtype.kind == "u" and index.size and int(index.max()) >= 1 << 63:
            # (torch wrapped a uint64 2**63 round to -2**63, and the message below named that)
            raise ValueError(f"item indices must be < 2**63, got {int(index.max())}")
        try:
            idx = torch.as_tensor(index, device=device).reshape(-1)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            # (torch's words named nothing: "new(): invalid data type 'str'", "Overflow when unpacking long long")
            raise TypeError(f"item indices must be integers in [0, 2**63): an int n (items 0 .. n-1), a range, or "
                            f"a list, array or tensor of them; got {reprlib.repr(index)}") from None
        # (an empty list or tuple comes back float32: no indices, nothing to refuse)
        if idx.numel() and (idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex()):
            raise TypeError(f"item indices must be integers, got {idx.dtype} values")
        idx = idx.to(torch.int64)
    if len(idx) and int(idx.min()) < 0:
        raise ValueError(f"item indices must be >= 0, got {int(idx.min())}")
    return idx


# On the CPU, words are made and used in blocks of about this many: a block's int64 and float64
# temporaries (256 KiB each) stay in the core's cache instead of streaming image-sized arrays
# through memory some 30 times. The normal draws of four 256x256 RGB noise fields took 17-39 ms in
# one call and 12-14 ms in blocks (the larger figures while the other core also used memory). A
# block holds whole multiples of 64 of every item's elements and, up to 512 items per call, no
# more than torch's parallel grain (32768 elements), so each element takes the same vector or
# scalar code path as in one single-threaded call: the values do not depend on the blocks.
_BLOCK = 1 << 15


def _key(seed: int, stream: int) -> int:
    seed = check_seed(seed)
    return _i64(_python_mix(_python_mix(seed) ^ _python_mix((stream + 1) * 0x9E3779B97F4A7C15)))


def _by_block(seed: int, index: torch.Tensor, shape: tuple[int, ...], stream: int, finish, dtype) -> torch.Tensor:
    """``finish(words)`` for the random words of items ``index``: ``(N, *shape)`` of ``dtype``.

    ``finish`` maps an ``(N, n)`` int64 block of words to values elementwise (it may overwrite
    the block). On the CPU it runs on blocks of :data:`_BLOCK` words, elsewhere on all at once.
    """
    numel = math.prod(shape)
    n = index.shape[0]
    out = torch.empty(n, numel, dtype=dtype, device=index.device)
    if n == 0 or numel == 0:
        return out.view(n, *shape)
    # Item and element counters are mixed separately, so item i's words never collide with
    # another item's for any per-item size.
    item = _mix(index.to(torch.int64) * _GOLDEN + _key(seed, stream)).view(n, 1)
    step = max(64, _BLOCK // n // 64 * 64) if index.device.type == "cpu" else numel
    for a in range(0, numel, step):
        b = min(numel, a + step)
        element = torch.arange(a + 1, b + 1, dtype=torch.int64, device=index.device).mul_(_GOLDEN)
        out[:, a:b] = finish(_mix(item + element))
    return out.view(n, *shape)


def bits(seed: int, index: torch.Tensor, shape: tuple[int, ...], stream: int) -> torch.Tensor:
    """Raw 64-bit random words.

    Args:
        seed: base seed, an integer in ``[0, 2**63)`` (see :func:`check_seed`).
        index: ``(N,)`` int64 item indices; the words of item ``i`` depend only on ``(seed, i, stream)``.
        shape: per-item shape.
        stream: small non-negative int naming the quantity being drawn.

    Returns:
        ``(N, *shape)`` int64 on ``index.device``.
    """
    return _by_block(seed, index, shape, stream, lambda words: words, torch.int64)


def uniform(seed: int, index: torch.Tensor, shape: tuple[int, ...] = (), stream: int = 0,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform draws in ``[0, 1)`` with 24-bit resolution (exact in float32 and float64; float16 and
    bfloat16 round, and may give 1.0).

    Returns ``(N, *shape)`` of ``dtype`` on ``index.device``.
    """
    word = _shr(bits(seed, index, shape, stream), 40)  # top 24 bits
    return (word.to(torch.float64) * (1.0 / (1 << 24))).to(dtype)


def _box_muller(word: torch.Tensor) -> torch.Tensor:
    """Standard normal float64 values of int64 words (top 24 bits: radius, low 24 bits: angle)."""
    radius = torch.empty(word.shape, dtype=torch.float64, device=word.device)
    angle = torch.empty_like(radius)
    radius.copy_(_shr(word, 40)).add_(0.5).mul_(1.0 / (1 << 24))  # in (0, 1): the log is finite
    radius.log_().mul_(-2.0).sqrt_()
    angle.copy_(word.bitwise_and_(0xFFFFFF)).mul_(1.0 / (1 << 24)).mul_(2.0 * math.pi).cos_()
    return radius.mul_(angle)


def normal(seed: int, index: torch.Tensor, shape: tuple[int, ...] = (), stream: int = 0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal draws by the Box-Muller transform, ``(N, *shape)`` on ``index.device``.

    Computed in float64 and rounded to ``dtype`` so CPU and CUDA agree to the last float32 bit in
    practice (the transcendental functions differ only far below float32 resolution). The radius
    and angle have 24 bits each, so ``|z| <= sqrt(50 ln 2) = 5.89``: the tails beyond, which hold
    4e-9 of a true normal's mass, are never drawn.
    """
    return _by_block(seed, index, shape, stream, _box_muller, dtype)


def log_uniform(seed: int, index: torch.Tensor, low: float, high: float, shape: tuple[int, ...] = (),
                stream: int = 0) -> torch.Tensor:
    """Draws whose logarithm is uniform on ``[log low, log high]`` (``0 < low <= high``, both finite),
    ``(N, *shape)`` float32 on ``index.device``."""
    if not 0 < low <= high < math.inf:
        raise ValueError(f"log-uniform range needs 0 < low <= high < inf, got ({low}, {high})")
    u = uniform(seed, index, shape, stream, dtype=torch.float64)
    lo, hi = math.log(low), math.log(high)
    return _inside32(torch.exp(lo + (hi - lo) * u).to(torch.float32), low, high, high)


def range_uniform(seed: int, index: torch.Tensor, low: float, high: float, shape: tuple[int, ...] = (),
                  stream: int = 0) -> torch.Tensor:
    """Uniform draws on ``[low, high)`` (finite, ``low <= high``; ``low == high`` gives ``low``),
    ``(N, *shape)`` float32 on ``index.device``.

    Drawn in float64 and rounded to float32; a value that rounds onto ``high`` (or past a bound float32
    cannot hold) is moved to the nearest float32 inside, so the bounds hold for the float32 values too.
    """
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"uniform range needs finite low <= high, got ({low}, {high})")
    out = (low + (high - low) * uniform(seed, index, shape, stream, dtype=torch.float64)).to(torch.float32)
    return _inside32(out, low, high, math.nextafter(high, -math.inf))


def _inside32(out: torch.Tensor, low: float, high: float, top: float) -> torch.Tensor:
    """float32 draws from ``[low, top]`` (``top``: ``high``, or just below it for a half-open range) moved
    onto the nearest float32 inside where rounding took them past a bound float32 cannot hold; ``low ==
    high`` is left as rounded."""
    if low < high:
        lo32, hi32 = np.float32(low), np.float32(top)
        if float(lo32) < low:  # (compared as Python floats: NumPy would compare in float32)
            lo32 = np.nextafter(lo32, np.float32(np.inf))
        if float(hi32) > top:
            hi32 = np.nextafter(hi32, np.float32(-np.inf))
        out = out.clamp(float(lo32), float(hi32))
    return out
