"""The camera around the blur: tone curve, highlights, sensor noise, saturation, Bayer, quantisation, JPEG.

The blur of a shaking camera happens to light, so it is applied to linear-light values; a camera then
adds noise to those values, clips at its white level, demosaics, applies its tone curve (CRF) and
stores 8/16-bit or JPEG values. This module is that pipeline, split as in DeepInverse into *what is
sampled* and *what applies it*:

- :class:`SensorModel` is the configuration (ranges and on/off switches, validated);
  :meth:`SensorModel.sample` draws one :class:`SensorParams` record per item.
- The functions apply a :class:`SensorParams`:

      sharp sRGB ─pre_blur─▶ linear (+ highlight boost) ─[caller blurs]─▶ post_blur ─▶ blurry sRGB
                  to_linear, boost_highlights                add_noise, clip, mosaic/demosaic,
                                                             from_linear, quantize, jpeg

Images are ``(B, 3, H, W)`` float32 tensors; each docstring says whether values are linear or
display-referred ("sRGB" below means encoded by the item's CRF, whichever it is). Everything runs on
the input's device; only JPEG coding goes through the CPU (Pillow's libjpeg) and comes back.

Sources: the pipeline and its highlight boost follow RSBlur (Rim et al., ECCV 2022); the noise model
and its parameter distribution follow Brooks et al., "Unprocessing images for learned raw denoising"
(CVPR 2019). Random streams 300-349 of :mod:`blursynth.rng` belong to this module.
"""

from __future__ import annotations

import io
import math
import numbers
from dataclasses import dataclass, fields
from typing import Sequence

import kornia.color as kc
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from blursynth import rng

CRFS = ("linear", "srgb", "gamma", "brooks")
"""Tone curves: identity; the sRGB curve (IEC 61966-2-1); a pure power ``x ** (1 / gamma)``; and
Brooks et al.'s camera-like curve (gamma 2.2 followed by the smoothstep S-curve ``3y^2 - 2y^3``)."""

BAYER = ("RGGB", "GRBG", "BGGR", "GBRG")
"""Bayer patterns, named by the colours of the top-left 2x2 cell read row by row."""

# kornia names a pattern by the colours at pixel (1, 1) onwards (OpenCV's convention).
_KORNIA_CFA = {"RGGB": kc.CFA.BG, "GRBG": kc.CFA.GB, "BGGR": kc.CFA.RG, "GBRG": kc.CFA.GR}

_BROOKS_GAMMA = 2.2

# One rng stream per drawn quantity (see blursynth.rng); 300-349 are reserved for this module.
_S_CRF, _S_GAMMA, _S_GAIN, _S_SHOT, _S_READ, _S_BAYER, _S_JPEG, _S_NOISE = range(300, 308)


# --------------------------------------------------------------------------- configuration


def _check_number(name: str, value, low: float, high: float, *, low_open: bool = False) -> float:
    """Validate a number in ``[low, high]`` (``(low, high]`` with ``low_open``); returns it as a float."""
    x = rng.as_real(value)
    lo_ok = x is not None and (x > low if low_open else x >= low)
    if not lo_ok or not x <= high:  # NaN fails both
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"SensorModel.{name} must be a number in {interval}, got {value!r}")
    return x


def _two_numbers(name: str, value, what: str, optional: bool) -> tuple[float, float]:
    """``value`` as two floats, or an error naming ``what`` the option must be."""
    items = None
    if not isinstance(value, (str, bytes)) and value is not None:
        try:
            items = tuple(value)
        except TypeError:
            pass
    pair = None if items is None or len(items) != 2 else tuple(rng.as_real(v) for v in items)
    if pair is None or None in pair:
        off = " or None (off)" if optional else ""
        raise ValueError(f"SensorModel.{name} must be {what}{off}, got {value!r}")
    return pair


def _check_range(name: str, value, low: float, high: float, *, integer: bool = False,
                 optional: bool = True) -> tuple:
    """Validate an option that is a ``(lo, hi)`` range inside ``[low, high]``; returns it as a tuple.
    ``optional``: whether None (step off) is a valid value, for the message (the caller handles None)."""
    lo, hi = _two_numbers(name, value, "a (low, high) pair of numbers", optional)
    if not (low <= lo <= hi <= high) or math.isnan(lo) or math.isnan(hi):
        # (shot_noise=(0, 0) is how one asks for no noise: say how)
        off = f"; {name}=None switches the step off" if optional else ""
        raise ValueError(f"SensorModel.{name}={value!r} is out of range: need {low} <= low <= high <= {high}{off}")
    if integer:
        if lo != int(lo) or hi != int(hi):
            raise ValueError(f"SensorModel.{name}={value!r} must hold integers")
        return int(lo), int(hi)
    return lo, hi


def _check_names(name: str, value, allowed: Sequence[str]) -> tuple[str, ...]:
    """Validate a non-empty choice list of names from ``allowed`` (one name or a list of names)."""
    try:
        names = (value,) if isinstance(value, str) else tuple(value)
    except TypeError:
        names = ()
    bad = [v for v in names if not isinstance(v, str) or v not in allowed]
    if not names or bad:
        raise ValueError(f"SensorModel.{name}={value!r}: choose one or more of {list(allowed)}")
    return names


@dataclass(frozen=True)
class SensorModel:
    """Configuration of the sensor pipeline: what is drawn per item, and which steps run.

    Every range is drawn independently per item by :meth:`sample`; ``None`` switches a step off.
    Every option is checked when the model is built (type and range), so a bad one fails here and
    never at sample time. Numbers are Python or NumPy reals (not bools or strings); pairs are any
    2-element sequence of them.

    Args:
        crf: tone curves drawn uniformly per item, from :data:`CRFS` (one name or a sequence of names);
            ``("linear",)`` is no curve, and so is ``None``.
        gamma: range of the exponent of the ``"gamma"`` curve (uniform), within ``[0.1, 10]``.
        highlight_gain: range (uniform) of the linear value added to saturated pixels before blurring,
            within ``[0, 100]``, so light sources, which are far brighter than the white level, bloom
            into streaks (RSBlur draws 0.25-1.75). ``None``: off.
        highlight_threshold: linear value at or above which a sharp pixel counts as saturated, per
            channel, in ``(0, 1]`` (0.98 is sRGB 253/255).
        shot_noise: range of the shot-noise coefficient ``a`` (variance per unit of linear signal),
            within ``[1e-12, 1]``, drawn log-uniformly; Brooks et al. use ``(1e-4, 1.2e-2)``. ``None``:
            no noise.
        read_noise_line: ``(slope, intercept)`` of ``log b = slope * log a + intercept`` giving the
            read-noise variance ``b`` from ``a`` (Brooks et al.: ``(2.18, 1.20)``); it must keep ``b <= 1``
            (the whole signal range) over ``shot_noise``, before the scatter.
        read_noise_scatter: standard deviation of the Gaussian scatter added to ``log b`` (0.26), in [0, 5].
        clip: clip at the white level 1 (and at 0) after the noise, as a sensor saturates: a bool;
            ``None`` (off) is ``False``.
        bayer: Bayer patterns drawn uniformly per item from :data:`BAYER`; the noisy image is
            mosaicked and demosaicked bilinearly. ``None``: off (the default; bilinear
            demosaicking softens detail more than a camera's ISP does).
        bits: quantisation of the output, 8 or 16 bits; ``None``: float output.
        jpeg_quality: integer range of JPEG quality (uniform, 1-100); ``None``: no JPEG. JPEG stores
            8 bits, so it needs ``bits=8``.

    Raises:
        ValueError: an option is out of range; the message names it and the valid range.
    """

    crf: tuple[str, ...] = ("srgb",)
    gamma: tuple[float, float] = (2.0, 2.6)
    highlight_gain: tuple[float, float] | None = (0.25, 1.75)
    highlight_threshold: float = 0.98
    shot_noise: tuple[float, float] | None = (1e-4, 1.2e-2)
    read_noise_line: tuple[float, float] = (2.18, 1.20)
    read_noise_scatter: float = 0.26
    clip: bool = True
    bayer: tuple[str, ...] | None = None
    bits: int | None = 8
    jpeg_quality: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        # None switches a step off: for the tone curve that is the identity, for clipping no clip.
        set_("crf", ("linear",) if self.crf is None else _check_names("crf", self.crf, CRFS))
        set_("gamma", _check_range("gamma", self.gamma, 0.1, 10.0, optional=False))
        if self.highlight_gain is not None:
            set_("highlight_gain", _check_range("highlight_gain", self.highlight_gain, 0.0, 100.0))
        set_("highlight_threshold", _check_number("highlight_threshold", self.highlight_threshold, 0.0, 1.0,
                                                  low_open=True))
        if self.shot_noise is not None:
            # (> 0: it is drawn log-uniformly)
            set_("shot_noise", _check_range("shot_noise", self.shot_noise, 1e-12, 1.0))
        slope, intercept = _two_numbers("read_noise_line", self.read_noise_line,
                                        "a (slope, intercept) pair of numbers", optional=False)
        if not (math.isfinite(slope) and math.isfinite(intercept)):
            raise ValueError(f"SensorModel.read_noise_line must be finite, got {self.read_noise_line!r}")
        set_("read_noise_line", (slope, intercept))
        if self.shot_noise is not None:
            # A read-noise variance above 1 (the whole signal range) is noise alone, and a line steep
            # enough overflows exp() to inf. The line is straight in log a: its ends bound it.
            worst = max(slope * math.log(a) + intercept for a in self.shot_noise)
            if worst > 0:
                raise ValueError(f"SensorModel.read_noise_line={self.read_noise_line!r} gives a read-noise "
                                 f"variance of {math.exp(min(worst, 700)):.3g} within shot_noise "
                                 f"{self.shot_noise!r}, above 1 (the whole signal range): lower the intercept "
                                 "or the shot_noise range")
        set_("read_noise_scatter", _check_number("read_noise_scatter", self.read_noise_scatter, 0.0, 5.0))
        if self.clip is None:
            set_("clip", False)
        elif isinstance(self.clip, (bool, np.bool_)):
            set_("clip", bool(self.clip))
        else:
            raise ValueError(f"SensorModel.clip must be True, False or None (off, the same as False), "
                             f"got {self.clip!r}")
        if self.bayer is not None:
            set_("bayer", _check_names("bayer", self.bayer, BAYER))
        if isinstance(self.bits, (bool, np.bool_)) or self.bits not in (None, 8, 16) \
                or (self.bits is not None and not isinstance(self.bits, numbers.Integral)):
            raise ValueError(f"SensorModel.bits={self.bits!r}: use 8, 16 or None (float output)")
        if self.bits is not None:
            set_("bits", int(self.bits))
        if self.jpeg_quality is not None:
            set_("jpeg_quality", _check_range("jpeg_quality", self.jpeg_quality, 1, 100, integer=True))
            if self.bits != 8:
                raise ValueError(f"SensorModel.jpeg_quality needs bits=8 (JPEG stores 8 bits), got bits={self.bits!r}")

    @classmethod
    def from_dict(cls, options: dict) -> "SensorModel":
        """Build from a mapping such as a TOML table (lists are accepted for pairs; the string ``"off"``
        stands for None, as in recipes: TOML has no null).

        Raises:
            ValueError: an unknown key (the message lists the valid ones) or an out-of-range value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown sensor option(s) {unknown}; valid options: {sorted(known)}")
        # (a recipe's [sensor] table, read with tomllib, failed on its jpeg_quality = "off")
        return cls(**{k: None if isinstance(v, str) and v == "off" else v for k, v in options.items()})

    def to_dict(self) -> dict:
        """The configuration as a JSON/TOML-ready dict (tuples as lists; ``None`` for steps that are off)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def off(cls) -> "SensorModel":
        """Every step switched off: :func:`post_blur` is the identity, :func:`pre_blur` clamps to [0, 1]
        (the identity on values in [0, 1], the range it takes; :func:`to_linear` clamps for every curve)."""
        return cls(crf=("linear",), highlight_gain=None, shot_noise=None, clip=False, bayer=None, bits=None,
                   jpeg_quality=None)

    def sample(self, n: int, seed: int, start: int = 0, device: torch.device | str = "cpu") -> "SensorParams":
        """Draw the parameters of items ``start .. start + n - 1``.

        Item ``i``'s parameters depend only on ``(seed, i)`` and this configuration: any batching of
        the same indices gives the same values, on any device.

        Returns:
            :class:`SensorParams` of ``(n,)`` tensors on ``device``.
        """
        if not (rng.is_integer(n) and rng.is_integer(start)) or n < 0 or start < 0:  # (2.5: range()'s words)
            raise ValueError(f"SensorModel.sample needs integers n >= 0 and start >= 0, got n={n!r}, start={start!r}")
        idx = rng.as_index(range(start, start + n), device=device)
        return self.sample_at(idx, seed)

    def sample_at(self, index: torch.Tensor, seed: int) -> "SensorParams":
        """Like :meth:`sample` for arbitrary item indices ``(N,)`` int64 (on the device wanted); negative
        or float indices are refused (a float was truncated into another item's draws)."""
        seed = rng.check_seed(seed)
        index = rng.as_index(index)
        n = index.shape[0]
        # A new tensor per field: one shared by several fields let an in-place edit of one
        # (params.read_noise += 1e-3) change the others too.
        zeros = lambda: torch.zeros(n, device=index.device, dtype=torch.float32)  # noqa: E731
        crf_names = torch.tensor([CRFS.index(c) for c in self.crf], device=index.device)
        crf = crf_names[(rng.uniform(seed, index, (), _S_CRF) * len(self.crf)).long().clamp(max=len(self.crf) - 1)]
        gamma = rng.range_uniform(seed, index, *self.gamma, stream=_S_GAMMA)
        gain = zeros() if self.highlight_gain is None else rng.range_uniform(seed, index, *self.highlight_gain,
                                                                             stream=_S_GAIN)
        if self.shot_noise is None:
            shot, read = zeros(), zeros()
        else:
            shot = rng.log_uniform(seed, index, *self.shot_noise, stream=_S_SHOT)
            slope, intercept = self.read_noise_line
            log_read = (slope * shot.double().log() + intercept
                        + self.read_noise_scatter * rng.normal(seed, index, (), _S_READ, dtype=torch.float64))
            read = log_read.exp().float()
        if self.bayer is None:
            bayer = torch.full((n,), -1, dtype=torch.int64, device=index.device)
        else:
            names = torch.tensor([BAYER.index(b) for b in self.bayer], device=index.device)
            bayer = names[(rng.uniform(seed, index, (), _S_BAYER) * len(names)).long().clamp(max=len(names) - 1)]
        if self.jpeg_quality is None:
            quality = torch.zeros(n, dtype=torch.int64, device=index.device)
        else:
            lo, hi = self.jpeg_quality
            quality = lo + (rng.uniform(seed, index, (), _S_JPEG) * (hi - lo + 1)).long().clamp(max=hi - lo)
        return SensorParams(
            crf=crf, gamma=gamma, highlight_gain=gain,
            highlight_threshold=torch.full((n,), float(self.highlight_threshold), device=index.device,
                                           dtype=torch.float32),
            shot_noise=shot, read_noise=read, bayer=bayer, jpeg_quality=quality,
            clip=torch.full((n,), self.clip, dtype=torch.bool, device=index.device),
            bits=torch.full((n,), self.bits or 0, dtype=torch.int64, device=index.device),
        )


@dataclass
class SensorParams:
    """The sensor values drawn for a batch: every field is an ``(N,)`` tensor on one device.

    Fields: ``crf`` (int64 index into :data:`CRFS`), ``gamma`` (exponent of the ``"gamma"`` curve),
    ``highlight_gain`` and ``highlight_threshold`` (linear units; gain 0 = no boost), ``shot_noise``
    ``a`` and ``read_noise`` ``b`` (noise variance ``a * x + b`` for linear value ``x``; 0 = no noise),
    ``clip`` (bool), ``bayer`` (int64 index into :data:`BAYER`, -1 = no mosaic), ``bits`` (int64: 8,
    16, or 0 = float output), ``jpeg_quality`` (int64 1-100, 0 = no JPEG).
    """

    crf: torch.Tensor
    gamma: torch.Tensor
    highlight_gain: torch.Tensor
    highlight_threshold: torch.Tensor
    shot_noise: torch.Tensor
    read_noise: torch.Tensor
    clip: torch.Tensor
    bayer: torch.Tensor
    bits: torch.Tensor
    jpeg_quality: torch.Tensor

    def __len__(self) -> int:
        return self.crf.shape[0]

    def __getitem__(self, items) -> "SensorParams":
        """The parameters of a subset of items (an index tensor, slice, list or int; a 0-d integer tensor is an int)."""
        items = rng.plain_index(items)
        if rng.is_integer(items):
            items = [int(items)]  # (a NumPy integer indexes like an int, not as a 0-d array)
        return SensorParams(**{f.name: getattr(self, f.name)[items] for f in fields(self)})

    def to(self, device: torch.device | str) -> "SensorParams":
        """The same parameters on ``device``."""
        return SensorParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def device(self) -> torch.device:
        return self.crf.device

    @staticmethod
    def cat(parts: Sequence["SensorParams"]) -> "SensorParams":
        """Concatenate batches of parameters (all on one device); at least one."""
        if not parts:  # (torch's "expected a non-empty list of Tensors" named no argument)
            raise ValueError("SensorParams.cat needs at least one SensorParams to join, got none")
        return SensorParams(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(SensorParams)})

    def to_records(self) -> list[dict]:
        """One JSON-serialisable dict per item with every value applied to it.

        Switched-off steps read ``None`` (no Bayer, float output, no JPEG) or 0 (no noise, no boost);
        ``gamma`` is ``None`` unless the item's curve is ``"gamma"`` (only that curve uses it). Floats
        are the exact float32 values used, so :meth:`from_records` restores every value the pipeline
        applies bit for bit (see there for the one field it cannot restore).
        """
        cols = {f.name: getattr(self, f.name).tolist() for f in fields(self)}
        out = []
        for i in range(len(self)):
            crf = CRFS[cols["crf"][i]]
            out.append({
                "crf": crf,
                "gamma": cols["gamma"][i] if crf == "gamma" else None,
                "highlight_gain": cols["highlight_gain"][i],
                "highlight_threshold": cols["highlight_threshold"][i],
                "shot_noise": cols["shot_noise"][i],
                "read_noise": cols["read_noise"][i],
                "clip": bool(cols["clip"][i]),
                "bayer": BAYER[cols["bayer"][i]] if cols["bayer"][i] >= 0 else None,
                "bits": cols["bits"][i] or None,
                "jpeg_quality": cols["jpeg_quality"][i] or None,
            })
        return out

    @classmethod
    def from_records(cls, records: Sequence[dict], device: torch.device | str = "cpu") -> "SensorParams":
        """Rebuild parameters from :meth:`to_records` output (e.g. a dataset manifest).

        Every value the pipeline applies comes back bit for bit, so the rebuilt parameters give the same
        images, and ``to_records`` of them gives the same records. One field is not the one drawn:
        ``gamma`` of an item whose curve is not ``"gamma"`` (recorded as ``None``, unused by its
        curve) comes back as 1.0.

        Raises:
            ValueError: a record that lacks a field or holds a value no :class:`SensorModel` draws
                (a negative or NaN noise variance, ``bits`` 12, ...); the message names the record
                and the field.
        """
        try:
            col = lambda key, conv: [conv(r[key]) for r in records]  # noqa: E731
            f32 = lambda v: torch.tensor(v, dtype=torch.float32, device=device)  # noqa: E731
            i64 = lambda v: torch.tensor(v, dtype=torch.int64, device=device)  # noqa: E731
            params = cls(
                crf=i64(col("crf", CRFS.index)),
                gamma=f32(col("gamma", lambda g: 1.0 if g is None else float(g))),
                highlight_gain=f32(col("highlight_gain", float)),
                highlight_threshold=f32(col("highlight_threshold", float)),
                shot_noise=f32(col("shot_noise", float)),
                read_noise=f32(col("read_noise", float)),
                clip=torch.tensor(col("clip", _strict_bool), dtype=torch.bool, device=device),
                bayer=i64(col("bayer", lambda b: -1 if b is None else BAYER.index(b))),
                bits=i64(col("bits", lambda b: 0 if b is None else _whole(b))),
                jpeg_quality=i64(col("jpeg_quality", lambda q: 0 if q is None else _whole(q))),
            )
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"sensor record is not one written by SensorParams.to_records: {err!r}") from None
        params._check_drawable(records)
        return params

    def _check_drawable(self, records: Sequence[dict]) -> None:
        """Refuse values no :class:`SensorModel` draws, which a hand-edited record may hold: a negative
        or NaN noise variance made NaN pixels without a word, bits 12 a grid no dataset file stores."""
        finite = torch.isfinite
        rules = {
            "gamma": ((self.gamma > 0) & finite(self.gamma), "a positive number, or None"),
            "highlight_gain": ((self.highlight_gain >= 0) & finite(self.highlight_gain), "a number >= 0"),
            "highlight_threshold": ((self.highlight_threshold > 0) & (self.highlight_threshold <= 1), "in (0, 1]"),
            "shot_noise": ((self.shot_noise >= 0) & finite(self.shot_noise), "a variance >= 0"),
            "read_noise": ((self.read_noise >= 0) & finite(self.read_noise), "a variance >= 0"),
            "bits": ((self.bits == 0) | (self.bits == 8) | (self.bits == 16), "8, 16 or None"),
            "jpeg_quality": ((self.jpeg_quality >= 0) & (self.jpeg_quality <= 100), "1-100 or None"),
        }
        for name, (ok, valid) in rules.items():
            if not bool(ok.all()):
                i = int((~ok).nonzero()[0])
                raise ValueError(f"sensor record {i}: {name}={records[i][name]!r} is out of range: it must be {valid}")
        # (None stands for an unused gamma: for a "gamma" curve it became 1.0, the identity, without a word)
        for i, record in enumerate(records):
            if record["crf"] == "gamma" and record["gamma"] is None:
                raise ValueError(f"sensor record {i}: gamma=None, but its curve is \"gamma\": it needs the exponent, "
                                 "a positive number")


def _whole(value) -> int:
    """A record's ``bits`` or ``jpeg_quality`` as an int, or -1 (a value no model draws, which
    :meth:`SensorParams._check_drawable` refuses naming the record) unless it is a whole number: ``int()``
    truncated 8.5 to 8 and read the string "8" as 8."""
    number = rng.as_real(value)
    return int(number) if number is not None and number.is_integer() else -1


def _strict_bool(value) -> bool:
    """A record's ``clip``: a bool (``bool("false")`` is True, so strings are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"clip must be true or false, got {value!r}")
    return bool(value)


# --------------------------------------------------------------------------- tone curves


def _check_image(img: torch.Tensor, params: SensorParams | None = None) -> None:
    if params is not None and not isinstance(params, SensorParams):
        # (a SensorModel, the configuration, failed as "object of type 'SensorModel' has no len()", and a list of
        # records as "'list' object has no attribute 'gamma'")
        how = {SensorModel: "a SensorModel is the configuration: draw the values with model.sample(n, seed)",
               list: "records become SensorParams with SensorParams.from_records(records)"}.get(type(params), "")
        raise TypeError(f"params must be SensorParams, the values drawn per item{'; ' + how if how else ''}; "
                        f"got {type(params).__name__}")
    if not isinstance(img, torch.Tensor) or img.dim() != 4 or img.shape[1] != 3:
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"sensor functions take RGB images (B, 3, H, W), got {shape}")
    _check_float(img, "sensor functions take")
    if params is not None and len(params) != img.shape[0]:
        raise ValueError(f"{len(params)} sensor parameter records for a batch of {img.shape[0]} images")


def _power(x: torch.Tensor, p) -> torch.Tensor:
    """``x ** p`` for ``x >= 0`` and ``p > 0`` (a number or a tensor broadcastable to ``x``); any device.

    float64 goes through ``exp(p log x)``, which torch vectorises, unlike its float64 ``pow``: that
    took 2.8-3.2x as long as ``exp`` + ``log`` on an Intel Xeon (5.1x in a forked process), and on
    an AMD EPYC 3.6x longer than in the parent in processes forked after torch was imported (the
    workers of ``blursynth dataset`` and of a DataLoader). The two agree to a few float64 ulps of
    ``p log x``. float32 ``pow`` is vectorised, and kept; so is ``pow`` under autograd, whose
    gradient at ``x = 0`` the logarithm would turn into NaN.
    """
    grad = torch.is_grad_enabled() and x.requires_grad
    if x.dtype == torch.float64 and not grad:
        return torch.exp(torch.log(x) * p)
    if grad:
        # pow's gradient at 0 is inf for p < 1, which torch 2.11 carried on as NaN through the zero slope
        # of what follows (a gamma curve re-blurring black in --mode reblur): 0 stays 0, with gradient 0
        return torch.where(x > 0, x.clamp(min=torch.finfo(x.dtype).tiny).pow(p), torch.zeros_like(x))
    return x.pow(p)


def srgb_to_linear(img: torch.Tensor) -> torch.Tensor:
    """The inverse sRGB curve (IEC 61966-2-1), elementwise: sRGB values in [0, 1] -> linear in [0, 1].
    The formula of ``kornia.color.rgb_to_linear_rgb``, with the power taken by :func:`_power`."""
    return torch.where(img > 0.04045, _power((img + 0.055).clamp(min=0.0) / 1.055, 2.4), img / 12.92)


def linear_to_srgb(img: torch.Tensor) -> torch.Tensor:
    """The sRGB curve, elementwise: linear values in [0, 1] -> sRGB in [0, 1] (inverse of :func:`srgb_to_linear`
    to 3e-7). The formula of ``kornia.color.linear_rgb_to_rgb``, with the power taken by :func:`_power`."""
    threshold = 0.0031308
    return torch.where(img > threshold, 1.055 * _power(img.clamp(min=threshold), 1 / 2.4) - 0.055, 12.92 * img)


def _per_item(img: torch.Tensor, codes: torch.Tensor, fns: dict) -> torch.Tensor:
    """Apply ``fns[code](sub_batch, item_indices)`` to the items of each code present in ``codes``; the result
    has ``img``'s dtype (a curve's float32 parameter promoted a float16 or bfloat16 image to float32, and mixed
    curves then failed to put the float32 items into the float16 output)."""
    codes = codes.to(img.device)
    present = codes.unique().tolist()
    if len(present) == 1:  # the common case: no copies in and out of sub-batches
        return fns[present[0]](img, torch.arange(img.shape[0], device=img.device)).to(img.dtype)
    out = torch.empty_like(img)
    for code in present:
        items = (codes == code).nonzero().squeeze(1)
        out[items] = fns[code](img[items], items).to(img.dtype)
    return out


def to_linear(img: torch.Tensor, params: SensorParams) -> torch.Tensor:
    """Undo each item's tone curve: ``(B, 3, H, W)`` display-referred values in [0, 1] (others are
    clamped to it first) -> linear in [0, 1], same dtype and device."""
    _check_image(img, params)
    gamma = params.gamma.to(img.device).view(-1, 1, 1, 1)
    x = img.clamp(0.0, 1.0)
    return _per_item(x, params.crf, {
        0: lambda v, i: v,
        1: lambda v, i: srgb_to_linear(v),
        2: lambda v, i: _power(v, gamma[i]),
        # Brooks et al.: inverse smoothstep, then gamma expansion.
        3: lambda v, i: _power(_inverse_smoothstep(v).clamp(min=0.0), _BROOKS_GAMMA),
    })


def from_linear(img: torch.Tensor, params: SensorParams) -> torch.Tensor:
    """Apply each item's tone curve: ``(B, 3, H, W)`` linear values -> display-referred values.

    Values are expected in [0, 1] (after clipping); the curves take negatives as 0, values above 1
    pass through the power curves and are clamped to 1 by the S-shaped ``"brooks"`` curve, and the
    ``"linear"`` curve is the identity, negatives and all (so :meth:`SensorModel.off` leaves
    :func:`post_blur` the identity).
    """
    _check_image(img, params)
    gamma = params.gamma.to(img.device).view(-1, 1, 1, 1)
    x = img.clamp(min=0.0)
    return _per_item(x, params.crf, {
        0: lambda v, i: img[i],
        1: lambda v, i: linear_to_srgb(v),
        2: lambda v, i: _power(v, 1.0 / gamma[i]),
        3: lambda v, i: _smoothstep(_power(v.clamp(max=1.0), 1.0 / _BROOKS_GAMMA)),
    })


def _inverse_smoothstep(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_smoothstep` on [0, 1]. Its slope is infinite at 0 and 1: under autograd
    the argument of ``asin`` is kept a machine epsilon inside [-1, 1], else a value within about 3e-8
    of black (1 - 2y rounding to 1 in float32) got a NaN gradient, which made --mode reblur with
    --photo-curve brooks diverge at its first step; without autograd (datasets) the values are exact."""
    a = 1.0 - 2.0 * y
    if y.requires_grad:
        eps = torch.finfo(y.dtype).eps
        a = a.clamp(-1.0 + eps, 1.0 - eps)
    return 0.5 - torch.sin(torch.asin(a) / 3.0)


def _smoothstep(y: torch.Tensor) -> torch.Tensor:
    return y * y * (3.0 - 2.0 * y)


# --------------------------------------------------------------------------- sensor steps


def boost_highlights(linear: torch.Tensor, params: SensorParams) -> torch.Tensor:
    """Add ``highlight_gain`` to every channel value at or above ``highlight_threshold`` (RSBlur).

    A sharp photo stores a light source at its white level although it was far brighter; blurring
    the clipped value would spread a dim smear, while the real camera records a saturated streak.

    Args:
        linear: ``(B, 3, H, W)`` linear sharp image in [0, 1].
    Returns:
        ``(B, 3, H, W)`` linear, in ``[0, 1 + highlight_gain]``.
    """
    _check_image(linear, params)
    gain = params.highlight_gain.to(linear.device).view(-1, 1, 1, 1)
    threshold = params.highlight_threshold.to(linear.device).view(-1, 1, 1, 1)
    return (linear + gain * (linear >= threshold).to(linear.dtype)).to(linear.dtype)  # (float16 stays float16)


def noise_std(linear: torch.Tensor, params: SensorParams) -> torch.Tensor:
    """Per-pixel noise standard deviation ``sqrt(a * max(x, 0) + b)`` for linear values ``x`` ``(B, 3, H, W)``:
    same shape, dtype and device, in linear units (the white level is 1)."""
    _check_image(linear, params)
    return _noise_std(linear, params).to(linear.dtype)


def _noise_std(linear: torch.Tensor, params: SensorParams) -> torch.Tensor:
    """:func:`noise_std` in the promoted dtype: float32 at least (the float32 parameters against a
    float16 or bfloat16 image), so that a read-noise variance of 1e-8 is not lost to float16's range."""
    a = params.shot_noise.to(linear.device).view(-1, 1, 1, 1)
    b = params.read_noise.to(linear.device).view(-1, 1, 1, 1)
    return (a * linear.clamp(min=0.0) + b).sqrt()


def add_noise(linear: torch.Tensor, params: SensorParams, seed: int, index) -> torch.Tensor:
    """Add shot and read noise to linear values: ``x + sqrt(a x + b) * z``, ``z`` standard normal.

    The Poisson shot noise is approximated by a Gaussian of the same variance, as in Brooks et al.
    (close for the photon counts of all but the darkest pixels). The field ``z`` of item ``i`` is
    ``rng.normal(seed, torch.tensor([i]), (3, H, W), stream=307, dtype=linear.dtype)`` (float64 inside
    :func:`post_blur`): it depends only on ``(seed, i)`` and the image size.

    Args:
        linear: ``(B, 3, H, W)`` linear values (may exceed 1 after a highlight boost).
        index: the ``B`` item indices (``(B,)`` tensor, list or range).
    Returns:
        ``(B, 3, H, W)`` linear values, unclipped, of ``linear``'s dtype and device (``linear`` itself
        when no item has noise).
    """
    _check_image(linear, params)
    seed = rng.check_seed(seed)  # before the no-noise shortcut: a bad seed fails on every batch, not on some
    index = rng.as_index(index, device=linear.device)
    if index.shape[0] != linear.shape[0]:
        raise ValueError(f"add_noise: {index.shape[0]} item indices for a batch of {linear.shape[0]} images")
    if not bool((params.shot_noise > 0).any() or (params.read_noise > 0).any()):
        return linear
    z = rng.normal(seed, index, tuple(linear.shape[1:]), _S_NOISE, dtype=linear.dtype)
    # (the float32 parameters promoted a float16 or bfloat16 image to float32: rounded back once, at the end)
    return (linear + _noise_std(linear, params) * z).to(linear.dtype)


def clip(img: torch.Tensor, params: SensorParams) -> torch.Tensor:
    """Sensor saturation: clamp to [0, 1] the items whose ``clip`` flag is set; ``(B, 3, H, W)`` linear."""
    _check_image(img, params)  # (an 8-bit image was clamped to 0 and 1 without a word, a batch mismatch torch's words)
    flag = params.clip.to(img.device).view(-1, 1, 1, 1)
    return torch.where(flag, img.clamp(0.0, 1.0), img)


def mosaic(rgb: torch.Tensor, pattern: str) -> torch.Tensor:
    """Sample an RGB image through a Bayer colour filter array: ``(B, 3, H, W)`` -> ``(B, 1, H, W)``.

    ``pattern`` is one of :data:`BAYER` (top-left 2x2 cell). Any H, W (odd sizes are padded).
    """
    if pattern not in BAYER:
        raise ValueError(f"Bayer pattern {pattern!r}: choose one of {list(BAYER)}")
    h, w = rgb.shape[-2:]
    padded = F.pad(rgb, (0, w % 2, 0, h % 2), mode="replicate")
    return kc.rgb_to_raw(padded, _KORNIA_CFA[pattern])[..., :h, :w]


def demosaic(raw: torch.Tensor, pattern: str) -> torch.Tensor:
    """Bilinear demosaicking (kornia): ``(B, 1, H, W)`` Bayer samples -> ``(B, 3, H, W)``.

    Padding an odd size would duplicate a row of the wrong colour, so odd sizes are padded by
    reflecting two pixels (which keeps the Bayer phase) and cropped back.
    """
    if pattern not in BAYER:
        raise ValueError(f"Bayer pattern {pattern!r}: choose one of {list(BAYER)}")
    h, w = raw.shape[-2:]
    if h < 2 or w < 2:
        raise ValueError(f"demosaic needs an image of at least 2x2 pixels, got {h}x{w}")
    ph, pw = h % 2, w % 2
    if ph or pw:
        # Append copies of row h-2 / column w-2: same Bayer colour as the missing row h / column w.
        raw = torch.cat([raw, raw[..., h - 2:h - 1, :]], dim=-2) if ph else raw
        raw = torch.cat([raw, raw[..., :, w - 2:w - 1]], dim=-1) if pw else raw
    # (kornia interpolates with conv2d, which autocast ran in bfloat16 or float16: 3e-3 off in mixed precision)
    with torch.autocast(raw.device.type, enabled=False):
        return kc.raw_to_rgb(raw, _KORNIA_CFA[pattern])[..., :h, :w]


def mosaic_demosaic(linear: torch.Tensor, params: SensorParams) -> torch.Tensor:
    """Each item through its Bayer pattern and back (items with ``bayer = -1`` are unchanged).

    ``(B, 3, H, W)`` linear -> ``(B, 3, H, W)`` linear. Noise added before this step is thereby
    noise on the raw samples, as on a real sensor.
    """
    _check_image(linear, params)
    fns = {-1: lambda v, i: v}
    for k, name in enumerate(BAYER):
        fns[k] = lambda v, i, name=name: demosaic(mosaic(v, name), name)
    return _per_item(linear, params.bayer.to(linear.device), fns)


def _check_float(img: torch.Tensor, what: str) -> None:
    if not img.is_floating_point():
        raise TypeError(f"{what} float images with values in [0, 1], got {img.dtype}; "
                        "convert with x.float() / 255 (8-bit) or x.float() / 65535 (16-bit)")


def _check_finite(img: torch.Tensor, what: str) -> None:
    """Refuse NaN and infinite values: NaN passed through every step (the clamps keep it) and came out
    as NaN, or as an arbitrary byte from JPEG's uint8 cast; +-inf met the noise as inf - inf = NaN."""
    bad = ~torch.isfinite(img)
    if bool(bad.any()):
        raise ValueError(f"{what} holds {int(bad.sum())} NaN or infinite value(s); find where they came from "
                         "or replace them, e.g. torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)")


def _check_batch(img: torch.Tensor, what: str) -> None:
    if not isinstance(img, torch.Tensor) or img.dim() != 4:
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"{what} takes images (B, C, H, W), got {shape}")


def _per_image(name: str, value, batch: int) -> torch.Tensor:
    """``value`` (a number, or one per image) as a ``(1,)`` or ``(batch,)`` CPU tensor, or a ValueError
    naming the parameter ``name``."""
    try:
        v = torch.as_tensor(value).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be an int or a ({batch},) tensor, one per image; got {value!r}") from None
    if v.dim() > 1 or v.numel() not in (1, batch):
        raise ValueError(f"{name} must be an int or a ({batch},) tensor, one per image of the batch of {batch}; "
                         f"got shape {tuple(v.shape)}")
    return v.reshape(-1)


def quantize(img: torch.Tensor, bits: int | torch.Tensor) -> torch.Tensor:
    """Round display values to ``2**bits`` levels: ``(B, C, H, W)`` in [0, 1] -> same, on the grid ``k / (2**bits - 1)``.

    ``bits`` is an int in 0-32 or a ``(B,)`` tensor of them (0 = leave that item as float).
    ``img`` is float (an integer image is a TypeError); float16 and bfloat16 images are rounded in
    float32 and come back in their own dtype.
    """
    _check_batch(img, "quantize")
    _check_float(img, "quantize takes")
    bits_t = _per_image("bits", bits, img.shape[0])
    # (2**bits - 1 levels overflowed float32 to inf from 128 bits, and the image to NaN; past 32 bits
    # no image format stores the grid, and float32 cannot hold it)
    if bits_t.is_floating_point() or bits_t.dtype == torch.bool or bool(((bits_t < 0) | (bits_t > 32)).any()):
        raise ValueError(f"bits must be non-negative integers up to 32 (0 = float output), got {bits_t.tolist()}")
    bits_t = bits_t.to(img.device).view(-1, 1, 1, 1)
    # 2**16 - 1 levels overflow float16 to inf (and the image to NaN): round in float32 at least
    work = img if img.dtype in (torch.float32, torch.float64) else img.float()
    levels = (2.0 ** bits_t.to(torch.float64) - 1.0).to(work.dtype)
    q = torch.round(work.clamp(0.0, 1.0) * levels) / levels
    return torch.where(bits_t > 0, q.to(img.dtype), img)


def jpeg(img: torch.Tensor, quality: int | torch.Tensor) -> torch.Tensor:
    """JPEG-compress and decode each image (Pillow's libjpeg on CPU, 4:2:0 chroma).

    Args:
        img: ``(B, 3, H, W)`` RGB or ``(B, 1, H, W)`` grayscale display values in [0, 1], a float dtype
            (an integer image is a TypeError), finite (NaN or inf is a ValueError), quantised to 8 bits
            for coding; a 1-channel image is coded as a grayscale JPEG.
        quality: an int or ``(B,)`` tensor of integer qualities 1-100 (0 = leave that item unchanged).
    Returns:
        ``img``'s shape, dtype and device: coded items hold multiples of 1/255 (divided in ``img``'s
        dtype), items of quality 0 are ``img``'s values (``img`` itself comes back when no item is coded).
    """
    _check_batch(img, "jpeg")
    _check_float(img, "jpeg takes")
    _check_finite(img, "jpeg: the image")
    if img.shape[1] not in (1, 3):
        raise ValueError(f"jpeg codes RGB (B, 3, H, W) or grayscale (B, 1, H, W) images, got shape "
                         f"{tuple(img.shape)}")
    quality_t = _per_image("quality", quality, img.shape[0])
    q = quality_t.expand(img.shape[0]).tolist()
    if quality_t.is_floating_point() or quality_t.dtype == torch.bool or any(not 0 <= v <= 100 for v in q):
        raise ValueError(f"quality (JPEG) must be integers in 1-100 (0 = off), got {q}")
    coded = [i for i, v in enumerate(q) if v > 0]
    if not coded:
        return img
    u8 = torch.round(img[coded].clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = torch.from_numpy(np.stack([_jpeg_round_trip(u8[j], q[i]) for j, i in enumerate(coded)]))
    out = img.clone()
    # divided on the CPU: CUDA divides by a scalar as a multiply by its reciprocal, an ulp off
    out[coded] = (decoded.permute(0, 3, 1, 2).to(img.dtype) / 255.0).to(img.device)
    return out


def _jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``(H, W, 3)`` or ``(H, W, 1)`` uint8 -> the same image after a JPEG file at ``quality``, in
    memory (a 1-channel image is coded as a grayscale JPEG). (Pillow's encoder wrote the same
    files, and its decoder the same pixels, as torchvision's, whose image codecs are deprecated
    since 0.29, in 40 random trials of sizes and qualities.)"""
    buf = io.BytesIO()
    gray = rgb.shape[-1] == 1
    Image.fromarray(rgb[..., 0] if gray else rgb).save(buf, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(buf).convert("L" if gray else "RGB"))
    return decoded[..., None] if gray else decoded


# --------------------------------------------------------------------------- composites


def pre_blur(sharp: torch.Tensor, params: SensorParams) -> torch.Tensor:
    """Sharp display image -> the linear radiance to blur.

    Args:
        sharp: ``(B, 3, H, W)`` display-referred (sRGB) values in [0, 1], a float dtype (an integer
            image is a TypeError: divide 8-bit values by 255 first), finite (NaN or inf is a ValueError).
    Returns:
        ``(B, 3, H, W)`` linear values in ``[0, 1 + highlight_gain]``: :func:`to_linear` then
        :func:`boost_highlights`.
    """
    _check_image(sharp, params)
    _check_finite(sharp, "pre_blur: the sharp image")
    # float64 inside, rounded once at the end: float32 kernels differ in the last bit between their
    # vectorised and scalar paths, so an item's result would depend on its place in the batch.
    return boost_highlights(to_linear(sharp.double(), params), params).to(sharp.dtype)


def post_blur(blurred: torch.Tensor, params: SensorParams, seed: int, index) -> torch.Tensor:
    """Blurred linear radiance -> the image the camera stores.

    :func:`add_noise`, :func:`clip`, :func:`mosaic_demosaic`, :func:`from_linear`, :func:`quantize`,
    :func:`jpeg`, each as ``params`` says (a step that is off is skipped).

    Args:
        blurred: ``(B, 3, H, W)`` finite linear values (output of the blur of :func:`pre_blur`'s image;
            NaN or inf is a ValueError).
        index: the ``B`` item indices: the noise of item ``i`` depends only on ``(seed, i)``.
    Returns:
        ``(B, 3, H, W)`` display-referred (sRGB) values of ``blurred``'s dtype, in [0, 1] when
        clipping or quantising. Computed in float64 and rounded once, so item ``i`` comes out the
        same in any batch (up to a float64 ulp landing on a float32 rounding boundary).
    """
    _check_image(blurred, params)
    _check_finite(blurred, "post_blur: the blurred image")
    x = add_noise(blurred.double(), params, seed, index)  # float64 inside: see pre_blur
    x = clip(x, params)
    if bool((params.bayer >= 0).any()):
        x = mosaic_demosaic(x, params)
    x = from_linear(x, params)
    if bool((params.bits > 0).any()):
        x = quantize(x, params.bits.to(x.device))
    x = x.to(blurred.dtype)
    if bool((params.jpeg_quality > 0).any()):
        x = jpeg(x, params.jpeg_quality)
    return x
