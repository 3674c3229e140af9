"""Camera motion over the exposure: what is sampled, as plain tensors.

A :class:`Trajectory` holds a batch of ``N`` motions sampled at ``T`` times each. It is either 6-DoF
camera motion (rotation vectors in radians and translations in metres, in the camera frame at
``t = 0``) or, for the classic 2-D models, an image-plane path in pixels. The camera module turns
6-DoF motion into image-plane paths; the kernel module rasterises paths.
"""

from __future__ import annotations

import math as _math
from dataclasses import dataclass, field, replace

import torch

from . import rng as _rng


@dataclass
class Trajectory:
    """A batch of camera motions sampled over the exposure.

    Attributes:
        t: ``(N, T)`` float32 sample times in seconds, non-decreasing, from 0 to the item's exposure.
            The kernel weights each sample by the exposure time it stands for, so samples need not be
            evenly spaced.
        rotation: ``(N, T, 3)`` float32 rotation vectors (axis * angle, radians) of the camera relative to
            its orientation at ``t = 0``, axes in the camera frame (x right, y down, z forward), or None.
        translation: ``(N, T, 3)`` float32 displacement of the camera centre in metres, camera frame, or None.
        path_px: ``(N, T, 2)`` float32 image-plane displacement ``(x, y)`` in pixels (2-D models), or None.
        params: per-item drawn scalars, each a ``(N,)`` tensor (exposure_s, amplitudes, ...), so every
            item can be regenerated and recorded.
    """

    t: torch.Tensor
    rotation: torch.Tensor | None = None
    translation: torch.Tensor | None = None
    path_px: torch.Tensor | None = None
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("t", "rotation", "translation", "path_px"):
            # (NumPy arrays were taken, and failed later in the renderer as "'numpy.ndarray' object has no
            # attribute 'to'"; a list as "'list' object has no attribute 'ndim'")
            value = getattr(self, name)
            if not (isinstance(value, torch.Tensor) or value is None and name != "t"):
                raise TypeError(f"Trajectory.{name} must be a torch.Tensor{'' if name == 't' else ' or None'}, got "
                                f"{type(value).__name__}; convert with torch.as_tensor(x, dtype=torch.float32)")
        if self.t.ndim != 2:
            raise ValueError(f"Trajectory.t must be (N, T), got shape {tuple(self.t.shape)}")
        if self.path_px is None and self.rotation is None and self.translation is None:
            raise ValueError("a Trajectory needs path_px (2-D) or rotation/translation (6-DoF)")
        n, steps = self.t.shape
        for name, width in (("rotation", 3), ("translation", 3), ("path_px", 2)):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (n, steps, width):
                raise ValueError(f"Trajectory.{name} must be ({n}, {steps}, {width}), got {tuple(value.shape)}")
        # (a float or a list of values was taken, and failed later in selecting, moving or joining items, as
        # "'float' object is not subscriptable" or "'list' object has no attribute 'to'")
        bad = [k for k, v in self.params.items() if not (torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == n)] \
            if isinstance(self.params, dict) else None
        if bad is None or bad:
            got = type(self.params).__name__ if bad is None else \
                ", ".join(f"{k}: {tuple(v.shape) if torch.is_tensor(v) else type(v).__name__}"
                          for k, v in self.params.items() if k in bad)
            raise ValueError(f"Trajectory.params must be a dict of ({n},) tensors, one value per item; got {got}")

    def __len__(self) -> int:
        return self.t.shape[0]

    @property
    def is_2d(self) -> bool:
        """Whether this is a 2-D image-plane path (``path_px``, pixels) rather than 6-DoF camera motion."""
        return self.path_px is not None

    @property
    def exposure_s(self) -> torch.Tensor:
        """``(N,)`` exposure time in seconds (the last sample time)."""
        return self.t[:, -1]

    def to(self, device: torch.device | str) -> "Trajectory":
        """A copy with every tensor (times, poses, params) on ``device``."""
        def move(x):
            return None if x is None else x.to(device)
        return replace(self, t=self.t.to(device), rotation=move(self.rotation), translation=move(self.translation),
                       path_px=move(self.path_px), params={k: v.to(device) for k, v in self.params.items()})

    def __getitem__(self, items) -> "Trajectory":
        """Select items (an int, slice, index tensor or boolean mask) along the batch dimension.

        An int gives a one-item trajectory; it counts from the end when negative, as for a list, and
        one outside ``-len(self) .. len(self) - 1`` is an IndexError. A 0-d integer tensor counts as an int.
        """
        items = _rng.plain_index(items)
        if _rng.is_integer(items):
            n = len(self)
            if not -n <= items < n:
                raise IndexError(f"Trajectory index {items} is out of range for {n} items "
                                 f"(use 0 to {n - 1}, or -{n} to -1)")
            items = int(items) % n
            items = slice(items, items + 1)

        def pick(x):
            return None if x is None else x[items]
        return replace(self, t=self.t[items], rotation=pick(self.rotation), translation=pick(self.translation),
                       path_px=pick(self.path_px), params={k: v[items] for k, v in self.params.items()})

    def replace_items(self, where: torch.Tensor, sub: "Trajectory") -> "Trajectory":
        """A copy with the items at batch positions ``where`` replaced by ``sub``'s (same T and kind;
        ``where`` an index tensor or mask on this trajectory's device, ``len(sub)`` items).

        Params present only here are kept as they are.
        """
        # (a 2-D sub for a 6-DoF batch failed in torch as "index_put(): argument 'values' (position 2) must be
        # Tensor, not NoneType", and other T as a shape mismatch of its internals)
        if not isinstance(sub, Trajectory):
            raise TypeError(f"Trajectory.replace_items: sub must be a Trajectory of the new items, "
                            f"got {type(sub).__name__}")

        def kind(x):
            return [name for name in ("rotation", "translation", "path_px") if getattr(x, name) is not None]
        if kind(sub) != kind(self) or sub.t.shape[1] != self.t.shape[1]:
            raise ValueError(f"Trajectory.replace_items: sub holds {kind(sub)} with {sub.t.shape[1]} samples per "
                             f"motion but this trajectory holds {kind(self)} with {self.t.shape[1]}; replace items "
                             "with ones of the same model (and samples=)")

        def put(full, part):
            return None if full is None else full.index_put((where,), part)  # (a copy)
        params = {k: put(v, sub.params[k]) if k in sub.params else v for k, v in self.params.items()}
        return Trajectory(t=put(self.t, sub.t), rotation=put(self.rotation, sub.rotation),
                          translation=put(self.translation, sub.translation), path_px=put(self.path_px, sub.path_px),
                          params=params)

    def reversed(self) -> "Trajectory":
        """The same poses visited in the opposite order (times re-measured from the new start).

        The poses stay relative to the original frame, so the set of image positions is unchanged:
        a kernel is the time integral of where the light went, and reversing time changes nothing.
        """
        t = self.t[:, -1:] - self.t.flip(1)
        path = None if self.path_px is None else self.path_px.flip(1)
        rot = None if self.rotation is None else self.rotation.flip(1)
        trans = None if self.translation is None else self.translation.flip(1)
        return replace(self, t=t, rotation=rot, translation=trans, path_px=path)

    @staticmethod
    def cat(items: list["Trajectory"]) -> "Trajectory":
        """Concatenate trajectories along the batch dimension.

        They must agree in everything but their number of items: the number of samples T, the kind
        (which of ``rotation``, ``translation``, ``path_px`` they hold) and the names of ``params``;
        otherwise a ValueError says what differs.
        """
        items = list(items)
        if not items or not all(isinstance(x, Trajectory) for x in items):
            raise TypeError("Trajectory.cat takes a non-empty list of Trajectory objects")
        first = items[0]

        def kind(x):
            return [name for name in ("rotation", "translation", "path_px") if getattr(x, name) is not None]
        for i, x in enumerate(items[1:], 1):
            if kind(x) != kind(first):
                raise ValueError(f"Trajectory.cat: items[{i}] holds {kind(x)} but items[0] holds {kind(first)} "
                                 "(6-DoF and 2-D trajectories cannot share a batch)")
            if x.t.shape[1] != first.t.shape[1]:
                raise ValueError(f"Trajectory.cat: items[{i}] has {x.t.shape[1]} samples per motion but items[0] has "
                                 f"{first.t.shape[1]}; sample both with the same number (e.g. the model's samples=)")
            if set(x.params) != set(first.params):
                raise ValueError(f"Trajectory.cat: items[{i}] has params {sorted(x.params)} but items[0] has "
                                 f"{sorted(first.params)}; concatenate trajectories of one model")

        def join(name):
            values = [getattr(x, name) for x in items]
            return None if values[0] is None else torch.cat(values)
        params = {k: torch.cat([x.params[k] for x in items]) for k in items[0].params}
        return Trajectory(t=join("t"), rotation=join("rotation"), translation=join("translation"),
                          path_px=join("path_px"), params=params)


# ---------------------------------------------------------------------------------------------
# Trajectory models. Both are frozen dataclasses of their parameters (physical units in the names)
# with ``sample(n, seed, start, device)``; every random quantity is drawn through blursynth.rng with
# its own stream number, so item i is a pure function of (seed, i).
# ---------------------------------------------------------------------------------------------

def check_trajectory(trajectory) -> None:
    """Refuse what is not a :class:`Trajectory`, naming it: a tensor of poses failed as "'Tensor' object has no
    attribute 'is_2d'", or in the renderer as "32 items for a batch of 1"."""
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"trajectory must be a blursynth.trajectory.Trajectory, such as CameraShake().sample(n, "
                        f"seed=0); got {type(trajectory).__name__}")


def _check_range(owner: str, name: str, value, positive: bool = False, low: float = 0.0,
                 high: float = _math.inf) -> tuple[float, float]:
    """``value`` as a ``(lo, hi)`` tuple of floats, or a ValueError naming the field unless it is a pair of
    numbers with ``low <= lo <= hi <= high``."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        lo, hi = (_rng.as_real(v) for v in value)
        if lo is None or hi is None:
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{owner}.{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (_math.isfinite(lo) and _math.isfinite(hi)) or lo > hi or lo < low or (positive and lo <= 0) or hi > high:
        bound = "> 0" if positive else f">= {low}"
        most = "" if high == _math.inf else f" <= {high:g}"
        raise ValueError(f"{owner}.{name} must be a finite range with {bound} low <= high{most}, got {value!r}")
    return lo, hi


# Upper ends of the models' ranges: far beyond any hand-held camera (shake is 0.01-0.2 rad/s at 0.3-12 Hz, and
# mm/s), yet where the float32 motion stays finite (exposure_s is bounded by the poses it needs). Values such as drift_rad_s = 1e20, drift_hz = 1e38 or
# gaussian_shake = 1e300 gave NaN poses, refused later as "path_px contains NaN" without naming the field.
_MOST = {"drift_rad_s": 1e3, "tremor_rad_s": 1e3, "jerk_rad_s": 1e3, "drift_hz": 1e4,
         "tremor_hz": 1e4, "jerk_hz": 1e4, "jerk_decay_s": 1e3, "translation_m_s": 1e3,
         "length_px": 1e6, "anxiety": 1e3, "centripetal": 1e3, "big_shake_probability": 1.0, "gaussian_shake": 1e3}


def _index(n: int, start: int, device) -> torch.Tensor:
    if not _rng.is_integer(n) or n < 1:
        raise ValueError(f"number of trajectories must be a positive integer, got {n!r}")
    if not _rng.is_integer(start) or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")
    return _rng.as_index(range(int(start), int(start) + int(n)), device=device)


@dataclass(frozen=True)
class RandomWalk2D:
    """The 2-D random-walk blur trajectories of Boracchi & Foi (2012), vectorised over a batch.

    Boracchi & Foi, "Modeling the performance of image restoration from motion blur", IEEE TIP 21(8),
    2012, section II: a particle visits ``steps`` positions at constant speed ``length_px / (steps - 1)``; at
    each step its velocity changes by a Gaussian kick, a pull back towards the start (``centripetal``)
    and, with probability ``big_shake_probability * anxiety``, an impulsive near-reversal. The defaults
    are theirs (total length 60 px for a 64 px canvas, 2000 steps, anxiety ~ U(0, 0.1), centripetal ~
    U(0, 0.7), big-shake probability ~ U(0, 0.2), Gaussian shake ~ U(0, 10), uniform start angle).

    Partial exposure (their T in {1/100, 1/10, 1/2, 1}): each item picks one fraction uniformly from
    ``exposure_fractions`` and keeps the first part of the walk, so a short exposure is the start of
    the same motion. The walk is returned resampled (linear interpolation along time) to ``samples``
    points; 256 samples keep consecutive points < 0.25 px apart for a 60 px walk, the spacing the
    rasteriser densifies to anyway, so no visible detail is lost.

    Attributes:
        length_px: ``(lo, hi)`` total path length in pixels of the full exposure, uniform.
        anxiety, centripetal, big_shake_probability, gaussian_shake: ``(lo, hi)`` uniform ranges.
        steps: number of random-walk steps (their ``numT``), >= 2.
        exposure_fractions: fractions of the walk an item may keep, each in (0, 1].
        exposure_s: nominal duration of the full walk in seconds (times are ``fraction * exposure_s``).
        samples: points in the returned path, >= 2.

    ``sample`` returns a 2-D :class:`Trajectory` (``path_px`` ``(N, samples, 2)`` starting at 0) with
    params ``length_px, anxiety, centripetal, big_shake_probability, gaussian_shake, exposure_fraction,
    big_shakes`` (the number of impulsive shakes that happened during the item's exposure: in the part of
    the walk it keeps).
    """

    length_px: tuple[float, float] = (60.0, 60.0)
    anxiety: tuple[float, float] = (0.0, 0.1)
    centripetal: tuple[float, float] = (0.0, 0.7)
    big_shake_probability: tuple[float, float] = (0.0, 0.2)
    gaussian_shake: tuple[float, float] = (0.0, 10.0)
    steps: int = 2000
    exposure_fractions: tuple[float, ...] = (1.0,)
    exposure_s: float = 1.0
    samples: int = 256

    def __post_init__(self) -> None:
        owner = type(self).__name__
        # (tuples of floats, as CameraShake's)
        object.__setattr__(self, "length_px", _check_range(owner, "length_px", self.length_px, positive=True,
                                                           high=_MOST["length_px"]))
        for name in ("anxiety", "centripetal", "big_shake_probability", "gaussian_shake"):
            object.__setattr__(self, name, _check_range(owner, name, getattr(self, name), high=_MOST[name]))
        if self.big_shake_probability[1] * self.anxiety[1] > 1:
            raise ValueError(f"{owner}: big_shake_probability * anxiety must stay <= 1")
        # (no upper bound let a typo such as steps = 10000000 run for hours and ask for terabytes: each
        # item holds every step's position; 2000 steps are Boracchi and Foi's)
        for name, most in (("steps", MAX_WALK_STEPS), ("samples", MAX_SAMPLES)):
            value = getattr(self, name)
            if not _rng.is_integer(value) or not 2 <= value <= most:
                raise ValueError(f"{owner}.{name} must be an integer from 2 to {most}, got {value!r}")
            object.__setattr__(self, name, int(value))  # (a NumPy integer becomes a Python int)
        try:
            fr = () if isinstance(self.exposure_fractions, (str, bytes)) else \
                tuple(map(_rng.as_real, self.exposure_fractions))
        except TypeError:
            fr = ()
        if not fr or any(f is None or not (0 < f <= 1) for f in fr):
            raise ValueError(f"{owner}.exposure_fractions must be a list of numbers in (0, 1], "
                             f"got {self.exposure_fractions!r}")
        object.__setattr__(self, "exposure_fractions", fr)
        exposure = _rng.as_real(self.exposure_s)
        if exposure is None or not (0 < exposure < _math.inf):
            raise ValueError(f"{owner}.exposure_s must be positive seconds, got {self.exposure_s!r}")
        object.__setattr__(self, "exposure_s", exposure)

    @property
    def n_samples(self) -> int:
        """Points per returned path (T)."""
        return self.samples

    def sample(self, n: int, seed: int = 0, start: int = 0, device: torch.device | str = "cpu") -> Trajectory:
        """Items ``start .. start + n - 1`` (``n >= 1``, ``start >= 0``, else a ValueError) as a 2-D
        :class:`Trajectory` on ``device``."""
        return self.sample_items(_index(n, start, device), seed)

    def sample_items(self, index: torch.Tensor, seed: int = 0) -> Trajectory:
        """The items with the given ``(N,)`` int64 indices (``N`` may be 0), on ``index.device``."""
        seed = _rng.check_seed(seed)
        idx = _rng.as_index(index)
        n, steps = idx.shape[0], self.steps
        dt64 = torch.float64  # the walk renormalises its speed 2000 times: keep the rounding out of sight

        def draw(name, stream):
            return _rng.range_uniform(seed, idx, *getattr(self, name), stream=stream).to(dt64)

        length, anxiety = draw("length_px", 1), draw("anxiety", 2)
        centripetal, p_big = draw("centripetal", 3), draw("big_shake_probability", 4)
        gauss = draw("gaussian_shake", 5)
        angle = 2 * torch.pi * _rng.uniform(seed, idx, (), stream=6, dtype=dt64)
        fractions = torch.tensor(self.exposure_fractions, dtype=dt64, device=idx.device)
        pick = (_rng.uniform(seed, idx, (), stream=7, dtype=dt64) * len(fractions)).long()
        fraction = fractions[pick.clamp(max=len(fractions) - 1)]
        # Real arithmetic, x and y as rows of one tensor: torch's complex multiply and abs round
        # differently in their vectorised and scalar code, so an item's walk would depend on its
        # batch (which lanes it falls in); +, -, *, / and sqrt round the same either way.
        step_len = length / (steps - 1)
        speed0 = torch.where(anxiety > 0, anxiety, step_len)
        v = torch.stack([torch.cos(angle), torch.sin(angle)]) * speed0  # (2, N) velocity

        def per_step(values):  # (N, steps - 1) -> (steps - 1, N): each step's slice contiguous
            return values.T.contiguous()

        # Per-step draws, each made ready and let go in turn (a chunk of 4096 walks holds 65 MB per
        # quantity): an impulsive shake adds twice the velocity turned by about 180 degrees, v times
        # (c, s) = 2 (cos, sin) of the turn, or 0 with no shake: (v_x c - v_y s, v_x s + v_y c).
        big = _rng.uniform(seed, idx, (steps - 1,), stream=8, dtype=dt64) < (p_big * anxiety)[:, None]
        twice = torch.where(big, 2.0, 0.0)
        turn = torch.pi + (_rng.uniform(seed, idx, (steps - 1,), stream=9, dtype=dt64) - 0.5)
        turn_c = per_step(twice * torch.cos(turn))
        turn_s = per_step(twice * torch.sin(turn))
        del twice, turn
        turn_s = torch.stack([-turn_s, turn_s], 1)  # (steps - 1, 2, N)
        gauss_kick = torch.stack([per_step(gauss[:, None] * _rng.normal(seed, idx, (steps - 1,), stream=stream,
                                                                          dtype=dt64)) for stream in (10, 11)], 1)
        x = torch.zeros(steps, 2, n, dtype=dt64, device=idx.device)
        pos = x[0]
        # The recurrence is sequential in time (the pull depends on the position); it is vectorised
        # over the batch, which is what makes it fast.
        for k in range(steps - 1):
            dv = (anxiety * (gauss_kick[k] - centripetal * pos)) * step_len
            v = v + (dv + (v * turn_c[k] + v.flip(0) * turn_s[k]))
            vv = v * v
            v = v / (vv[0] + vv[1]).sqrt().clamp_min(1e-300) * step_len
            pos = pos + v
            x[k + 1] = pos

        # Shakes during the exposure: step k's shake turns the move from position k to k + 1, so it happens
        # within the kept part when k < fraction * (steps - 1) (all of them counted, those of the discarded
        # rest too, said 40 shakes for a 1% exposure that kept 20 steps).
        during = torch.arange(steps - 1, dtype=dt64, device=idx.device) < (fraction * (steps - 1))[:, None]
        shakes = (big & during).sum(1)
        # Keep the first `fraction` of the walk and resample it to `samples` points.
        s = torch.linspace(0, 1, self.samples, dtype=dt64, device=idx.device)[None, :] * (fraction * (steps - 1))[:, None]
        i0 = s.floor().long().clamp(max=steps - 2)
        w = (s - i0).to(dt64)
        x = x.permute(2, 0, 1)  # (N, steps, 2)
        i0, w = i0[..., None].expand(-1, -1, 2), w[..., None]
        path = (x.gather(1, i0) * (1 - w) + x.gather(1, i0 + 1) * w).float()
        t = (torch.linspace(0, 1, self.samples, dtype=dt64, device=idx.device)[None, :]
             * (fraction * self.exposure_s)[:, None]).float()
        params = {"length_px": length.float(), "anxiety": anxiety.float(), "centripetal": centripetal.float(),
                  "big_shake_probability": p_big.float(), "gaussian_shake": gauss.float(),
                  "exposure_fraction": fraction.float(), "big_shakes": shakes.float()}
        return Trajectory(t=t, path_px=path, params=params)


# Random-walk steps per item at most: ten times Boracchi and Foi's 2000 (a chunk of 4096 walks then holds
# 1.3 GB of positions).
MAX_WALK_STEPS = 20_000

# Poses per item at most: 10 s of hand-held shake at the fastest default tremor is about 1,200; a
# chunk of 4096 items then holds at most 4096 x 4096 poses (400 MB of rotations and translations).
MAX_SAMPLES = 4096


@dataclass(frozen=True)
class CameraShake:
    """Hand-held camera shake: 6-DoF camera motion over the exposure, in physical units.

    The camera's angular velocity (camera frame: x right, y down, z forward; rotation about x is
    pitch, about y yaw, about z roll) is the sum of three parts, each integrated in closed form so the
    poses are exact at any sample time:

    - **drift**: the slow postural sway of hand and arm, two sinusoids per axis with frequencies in
      ``drift_hz`` (log-uniform) and random phases, scaled to an RMS angular speed ``drift_rad_s``;
    - **tremor**: physiological tremor, one sinusoid per axis at a shared frequency in ``tremor_hz``
      (the 8-12 Hz band of physiological hand tremor, the component Gavant et al. 2011 build their
      camera-shake model on), independent phases, RMS angular speed ``tremor_rad_s``;
    - **jerk**: the shutter press, a damped oscillation ``exp(-t / decay) cos(2 pi f t)`` starting at the
      shutter opening with peak angular speed ``jerk_rad_s``, frequency ``jerk_hz`` (about 2 Hz, the
      press-induced oscillation measured with accelerometers in Japanese J. Ergonomics 31(6):399, 1995)
      and decay ``jerk_decay_s``, mostly pitch (pressing tips the camera forward and down).

    Roll amplitudes are ``roll_ratio`` times those of pitch and yaw. Translation of the camera centre
    (drift plus tremor at the same frequencies, RMS speed ``translation_m_s``) is included; it only
    shows for close scenes (``depth_m`` in the camera/kernel functions), as Whyte et al. (IJCV 2012)
    and Köhler et al. (ECCV 2012, recorded 6-DoF hand shake) found rotation dominates hand-held blur.

    **Calibration.** The photographers' 1/f rule (a 35 mm-equivalent f mm lens is safe hand-held at
    1/f s, i.e. blur stays within the 0.03 mm circle of confusion of a 36 mm frame) means an angular
    blur of 0.03/f rad in 1/f s: an angular speed of about 0.03 rad/s (1.7 deg/s) for a typical hand.
    The default ranges (drift 0.01-0.06 rad/s log-uniform, tremor 0.004-0.02 rad/s, jerk 0-0.05 rad/s
    peak) give a median RMS angular speed of about 0.03 rad/s over the exposure, with a spread of
    hands from steady to shaky; the test suite checks this calibration. Rotation vectors are the
    integral of the angular velocity, exact to second order in the (milliradian) angles involved.

    Attributes:
        exposure_s: ``(lo, hi)`` exposure time in seconds, log-uniform (default 1/30 to 1/4 s).
        drift_rad_s, tremor_rad_s: ``(lo, hi)`` RMS angular speeds in rad/s, log-uniform.
        drift_hz, tremor_hz, jerk_hz: ``(lo, hi)`` frequencies in Hz (drift log-uniform, others uniform).
        jerk_rad_s: ``(lo, hi)`` peak angular speed of the shutter jerk in rad/s, uniform (0 allowed).
        jerk_decay_s: ``(lo, hi)`` decay time of the jerk in seconds, uniform.
        roll_ratio: roll amplitude relative to pitch/yaw (>= 0).
        translation_m_s: ``(lo, hi)`` RMS speed of the camera centre in m/s, log-uniform.
        samples: poses per item, evenly spaced in time over the exposure (>= 2); None (default)
            takes 10 per tremor cycle at the longest exposure and highest tremor frequency, at
            least 32 (32 for the defaults). Between poses the kernel follows a straight line, which
            departs from the sinusoid by under 5% of the tremor's (sub-pixel) amplitude.

    ``sample`` returns a 6-DoF :class:`Trajectory` with ``rotation`` and ``translation`` ``(N, samples, 3)``
    and params ``exposure_s, drift_rad_s, drift_hz, tremor_rad_s, tremor_hz, jerk_rad_s, jerk_hz,
    jerk_decay_s, translation_m_s`` (the drawn scalars; ``drift_hz`` is the mean of the item's drift
    frequencies) and ``rms_angular_speed_rad_s`` (measured over the exposure).
    """

    exposure_s: tuple[float, float] = (1 / 30, 1 / 4)
    drift_rad_s: tuple[float, float] = (0.01, 0.06)
    drift_hz: tuple[float, float] = (0.3, 3.0)
    tremor_rad_s: tuple[float, float] = (0.004, 0.02)
    tremor_hz: tuple[float, float] = (8.0, 12.0)
    jerk_rad_s: tuple[float, float] = (0.0, 0.05)
    jerk_hz: tuple[float, float] = (1.5, 3.0)
    jerk_decay_s: tuple[float, float] = (0.03, 0.15)
    roll_ratio: float = 0.5
    translation_m_s: tuple[float, float] = (0.001, 0.01)
    samples: int | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        # Kept as tuples of floats (lists from a recipe's TOML, NumPy arrays): a list made the model unhashable and
        # unequal to the same model given tuples, and an array made == raise "The truth value of an array ...".
        for name in ("exposure_s", "drift_rad_s", "drift_hz", "tremor_rad_s", "tremor_hz", "jerk_hz",
                     "jerk_decay_s", "translation_m_s"):
            object.__setattr__(self, name, _check_range(owner, name, getattr(self, name), positive=True,
                                                        high=_MOST.get(name, _math.inf)))
        object.__setattr__(self, "jerk_rad_s", _check_range(owner, "jerk_rad_s", self.jerk_rad_s,
                                                            high=_MOST["jerk_rad_s"]))
        ratio = _rng.as_real(self.roll_ratio)
        if ratio is None or not 0 <= ratio <= 1e3:  # (1e40 gave NaN poses: see _MOST)
            raise ValueError(f"{owner}.roll_ratio must be a number from 0 to 1000, got {self.roll_ratio!r}")
        object.__setattr__(self, "roll_ratio", ratio)
        if self.samples is not None:
            if not _rng.is_integer(self.samples) or self.samples < 2:
                raise ValueError(f"{owner}.samples must be an integer >= 2 or None, got {self.samples!r}")
            object.__setattr__(self, "samples", int(self.samples))  # (a NumPy integer becomes a Python int)
        if self.n_samples > MAX_SAMPLES:  # (a batch holds N x samples poses: this fails later on memory)
            what = "samples" if self.samples is not None else "exposure_s and tremor_hz (10 poses per tremor cycle)"
            raise ValueError(f"{owner}: {self.n_samples} poses per item from {what}; at most {MAX_SAMPLES} "
                             "(shorten exposure_s, or set samples)")

    @property
    def n_samples(self) -> int:
        """Poses per item (T): ``samples``, or the automatic count when it is None."""
        if self.samples is not None:
            return self.samples
        return max(32, _math.ceil(10 * self.exposure_s[1] * self.tremor_hz[1]) + 1)

    def sample(self, n: int, seed: int = 0, start: int = 0, device: torch.device | str = "cpu") -> Trajectory:
        """Items ``start .. start + n - 1`` (``n >= 1``, ``start >= 0``, else a ValueError) as a 6-DoF
        :class:`Trajectory` on ``device``."""
        return self.sample_items(_index(n, start, device), seed)

    def sample_items(self, index: torch.Tensor, seed: int = 0) -> Trajectory:
        """The items with the given ``(N,)`` int64 indices (``N`` may be 0), on ``index.device``."""
        seed = _rng.check_seed(seed)
        idx = _rng.as_index(index)
        dev = idx.device
        two_pi = 2 * _math.pi

        def logu(name, stream, shape=()):
            return _rng.log_uniform(seed, idx, *getattr(self, name), shape=shape, stream=stream)

        def uni(name, stream, shape=()):
            return _rng.range_uniform(seed, idx, *getattr(self, name), shape=shape, stream=stream)

        def phase(stream, shape):
            return two_pi * _rng.uniform(seed, idx, shape, stream=stream)

        # float32 throughout, as documented, whatever torch.set_default_dtype says (float64 made other poses)
        f32 = torch.float32
        exposure = logu("exposure_s", 1)
        t = exposure[:, None] * torch.linspace(0, 1, self.n_samples, device=dev, dtype=f32)[None, :]  # (N, T)
        axis_w = torch.tensor([1.0, 1.0, self.roll_ratio], device=dev, dtype=f32)

        # Drift: 2 sinusoids per axis. Frequencies and phases are shared by rotation and translation
        # (hand and camera move as one body); amplitudes are drawn separately.
        f_d = logu("drift_hz", 2, (3, 2))
        ph_d = phase(3, (3, 2))
        f_t = uni("tremor_hz", 4)
        ph_t = phase(5, (3,))

        def unit_rms(amp_d, amp_t):
            """Scale so that the RMS speed (sum of squared sinusoid amplitudes / 2) is 1."""
            power = (amp_d ** 2).sum((1, 2)) / 2 + (amp_t ** 2).sum(1) / 2
            return power.clamp_min(1e-30).rsqrt()

        drift_rad_s, tremor_rad_s = logu("drift_rad_s", 7), logu("tremor_rad_s", 9)
        a_d = _rng.normal(seed, idx, (3, 2), stream=6) * axis_w[:, None]
        a_d = a_d * (unit_rms(a_d, torch.zeros(1, 3, device=dev, dtype=f32)) * drift_rad_s)[:, None, None]
        a_t = _rng.normal(seed, idx, (3,), stream=8) * axis_w
        a_t = a_t * (unit_rms(torch.zeros(1, 3, 2, device=dev, dtype=f32), a_t) * tremor_rad_s)[:, None]
        # Translation: drift + tremor at the same frequencies (tremor at half the drift's share),
        # RMS speed translation_m_s.
        translation_m_s = logu("translation_m_s", 16)
        b_d = _rng.normal(seed, idx, (3, 2), stream=14)
        b_t = 0.5 * _rng.normal(seed, idx, (3,), stream=15)
        scale = unit_rms(b_d, b_t) * translation_m_s
        b_d, b_t = b_d * scale[:, None, None], b_t * scale[:, None]

        # The sinusoids' integrals are shared by rotation and translation: one set of cosines, (N, 9, T):
        # the drift's two per axis (x1, x2, y1, y2, z1, z2), then the tremor's per axis (x, y, z).
        n = len(idx)
        sines = _integrated_unit_sines(t, torch.cat([f_d.reshape(n, 6), f_t[:, None].expand(n, 3)], 1),
                                       torch.cat([ph_d.reshape(n, 6), ph_t], 1))

        def pose(drift_amp, tremor_amp):
            """(N, T, 3) sum of the sinusoids with amplitudes (N, 3, 2) and (N, 3)."""
            w = sines * torch.cat([drift_amp.reshape(n, 6), tremor_amp], 1)[:, :, None]
            # (+ 0.0: -0.0 + -0.0 is -0.0, where the sum over the drift's pair, from +0, gave +0.0 at t = 0)
            return ((w[:, 0:6:2] + w[:, 1:6:2]).add_(0.0) + w[:, 6:]).transpose(1, 2).contiguous()
        rotation, translation = pose(a_d, a_t), pose(b_d, b_t)

        # Shutter jerk, mostly pitch: negative pitch tips the lens down.
        jerk = uni("jerk_rad_s", 10)
        f_j, decay = uni("jerk_hz", 11), uni("jerk_decay_s", 12)
        side = 0.3 * _rng.normal(seed, idx, (2,), stream=13)
        direction = torch.stack([-torch.ones_like(jerk), side[:, 0], side[:, 1] * self.roll_ratio], dim=1)
        direction = direction / direction.norm(dim=1, keepdim=True)
        rotation = rotation + _integrated_damped_cosine(t, two_pi * f_j, 1 / decay)[..., None] * (jerk[:, None] * direction)[:, None, :]

        speed = _rms_speed(t, rotation)
        params = {"exposure_s": exposure, "drift_rad_s": drift_rad_s, "drift_hz": f_d.mean((1, 2)),
                  "tremor_rad_s": tremor_rad_s, "tremor_hz": f_t, "jerk_rad_s": jerk, "jerk_hz": f_j,
                  "jerk_decay_s": decay, "translation_m_s": translation_m_s,
                  "rms_angular_speed_rad_s": speed}
        return Trajectory(t=t, rotation=rotation, translation=translation, params=params)


def _integrated_unit_sines(t: torch.Tensor, freq_hz: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """``int_0^t sin(2 pi f s + phase) ds`` for ``(N, T)`` times and ``(N, K)`` frequencies and phases.

    Returns ``(N, K, T)``: time innermost. With the few sinusoids innermost instead, broadcasting
    kept torch from vectorising, and drawing 4096 shakes of 32 poses took twice as long.
    """
    omega = 2 * _math.pi * freq_hz[:, :, None]
    return (torch.cos(phase)[:, :, None] - torch.cos(omega * t[:, None, :] + phase[:, :, None])) / omega


def _integrated_damped_cosine(t: torch.Tensor, omega: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """``int_0^t exp(-rate s) cos(omega s) ds`` for ``(N, T)`` times and ``(N,)`` omega, rate: ``(N, T)``."""
    w, r = omega[:, None], rate[:, None]
    return (torch.exp(-r * t) * (w * torch.sin(w * t) - r * torch.cos(w * t)) + r) / (r * r + w * w)


def _rms_speed(t: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """``(N,)`` RMS angular speed in rad/s over the exposure, from finite differences of the poses."""
    dt = (t[:, 1:] - t[:, :-1]).clamp_min(1e-12)
    speed2 = ((rotation[:, 1:] - rotation[:, :-1]) ** 2).sum(-1) / dt ** 2
    return (speed2 * dt).sum(1).div((t[:, -1] - t[:, 0]).clamp_min(1e-12)).sqrt()
