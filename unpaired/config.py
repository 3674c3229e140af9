"""All options of ``python -m unpaired.train`` in one dataclass, from a TOML file and the command line.

Precedence: dataclass defaults < ``--config FILE`` (TOML, keys are the field names) < command-line
flags (``--lr 1e-4``, ``--no-residual``; one flag per field, generated from the dataclass). With
``--resume RUN_DIR`` the run's saved ``config.json`` replaces the defaults (except ``stop_at``,
``resume``, ``progress`` and ``overwrite``, which belong to one invocation), so a resumed run continues with the
options it started with unless a flag overrides one (e.g. ``--steps`` to train longer; not one of
``RESUME_FIXED``, which the checkpoint fixes). Unknown keys, bad values and options the run would
ignore raise :class:`ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import io
import json
import math
import os
import re
import sys
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

from blursynth.io import dead_link_above, temporary_glob, usable_cores

MODES = ("paired", "cyclegan", "reblur")
GENERATORS = ("unet", "resnet")
PIXEL_LOSSES = ("l1", "charbonnier")
BLUR_MODELS = ("network", "kernel", "shake")
PER_INVOCATION = ("stop_at", "resume", "progress", "overwrite")  # not inherited by --resume from the saved config
# What a killed write leaves in a run folder (blursynth.io.atomic_path's temporaries): removed on --resume.
RUN_TEMPORARIES = tuple(map(temporary_glob, ("metrics.jsonl", "config.json", "checkpoints/*.pt", "samples/step_*.png")))
# What a run writes in its folder (--overwrite removes these and nothing else).
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints/step_*.pt", "checkpoints/best.pt",
             "checkpoints/best_reblur.pt", "samples/step_*.png", *RUN_TEMPORARIES)
# Fixed by a run's checkpoint: the networks' shapes and Adam's betas, which loading the checkpoint
# would fail on or silently restore (so would the image pools their size: --pool-size was ignored,
# while config.json recorded it). A resume may change anything else (e.g. --steps; --lr, the fix for
# a run that diverged: the trainer rebuilds the schedule from it).
RESUME_FIXED = ("mode", "generator", "ngf", "n_blocks", "unet_depth", "residual", "blur_model", "blur_kernel",
                "blur_recipe", "ndf", "n_layers_d", "beta1", "beta2", "pool_size")
# Options that only one mode, generator or --blur-model reads: given for another, they would be ignored.
SUPERVISED = ("paired", "reblur")  # the modes that learn from pairs
MODE_ONLY = {"pairs": SUPERVISED, "pixel_loss": SUPERVISED, "perceptual": SUPERVISED,
             "perceptual_weights": SUPERVISED, "grad_clip": SUPERVISED, "blurry": ("cyclegan", "reblur"),
             "sharp": ("cyclegan",), "blur_model": ("cyclegan",), "blur_kernel": ("cyclegan", "reblur"),
             "blur_recipe": ("cyclegan",), "ndf": ("cyclegan",), "n_layers_d": ("cyclegan",),
             "lambda_cycle": ("cyclegan",), "lambda_identity": ("cyclegan",), "pool_size": ("cyclegan",),
             "lambda_reblur": ("reblur",), "photo_curve": ("reblur",)}
GENERATOR_ONLY = {"n_blocks": "resnet", "unet_depth": "unet"}
BLUR_MODEL_ONLY = {"blur_kernel": ("kernel", "shake"), "blur_recipe": ("shake",)}


# The trainer seeds each process's RNG and image pools with seed * 1000 + rank, and blursynth.rng takes
# seeds below 2**63 (larger ones would repeat smaller ones' draws): room for 1000 ranks.
MAX_SEED = (2 ** 63 - 1000) // 1000
# DataLoader workers per core this process may use: each is a process holding a copy of the data set,
# so an absurd --workers forked until the system killed the run for memory; a few per core still
# lets workers that wait on a slow disk overlap, beyond which they only compete for the cores.
WORKERS_PER_CORE = 4


class ConfigError(ValueError):
    """A bad option; the message names the option (or file) and the fix."""


def refuse(exc) -> typing.NoReturn:
    """End a command that refused its input: one ``error: ...`` line on stderr and exit status 2, as
    argparse and the blursynth commands do (1 stays for failures while running)."""
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2)


def printable_stdout() -> None:
    """Let stdout print any file name, as stderr does: under a UTF-8 locale other than C its errors are
    strict, so a name that is not UTF-8 (``b"\\xe9t\\xe9.png"``, held as surrogates) failed to print
    after its work was done (evaluate's table, in a traceback that lost the scores; deblur's line,
    counting a written output as failed). Such a byte is shown as ``\\udce9``."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


def say(text: str) -> None:
    """Print ``text`` on stdout. Once its reader is gone (``| head``), stdout goes to /dev/null and the
    command goes on: the BrokenPipeError was a traceback, or a failure, after the work was done."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (also for the flush at exit)


@dataclass
class TrainConfig:
    """Every option of the trainer. Sizes in pixels, steps in optimiser updates, lr per step."""

    # what to train on
    mode: str = "paired"                   # paired | cyclegan | reblur
    pairs: str | None = None               # paired, reblur: folder written by `blursynth dataset` (default: synthetic); reblur re-blurs each through the tone curve its manifest record names
    val_pairs: str | None = None           # paired folder for validation (default: held-out synthetic pairs)
    blurry: str | None = None              # cyclegan: folder of blurry photos (domain A); reblur: photos without sharp twin
    sharp: str | None = None               # cyclegan: folder of unrelated sharp photos (domain B)
    pair_pool: int = 512                   # synthetic data: pairs (cyclegan: images per domain) made once and cropped (0: on the fly)
    pair_pool_size: int = 128              # side of the pooled pairs, >= crop (crops are cut, flipped and turned)
    crop: int = 64                         # training crop side, taken at the image's own scale (no resize)
    val_crop: int = 128                    # centre crop side of validation images
    val_size: int = 32                     # number of validation pairs
    batch: int = 8                         # crops per step per process
    workers: int = 0                       # DataLoader worker processes (at most 4 per core this process may use)
    # models
    generator: str | None = None           # unet | resnet (reference CycleGAN); default: resnet cyclegan, else unet
    ngf: int = 16                          # generator base width (CPU-sized; the reference CycleGAN uses 64)
    n_blocks: int = 6                      # resnet residual blocks (reference: 9 at 256 px, 6 at 128 px)
    unet_depth: int = 3                    # unet down-sampling levels (input sides must divide 2**depth)
    residual: bool = True                  # predict sharp = blurry + residual (trains much faster)
    blur_model: str = "network"            # cyclegan F (sharp -> blurry): network (reference) | kernel (learned blur kernels + noise) | shake (camera-shake kernels of --blur-recipe, learned size + noise)
    blur_kernel: int | None = None         # side of F's kernels (odd); default: 21 with --blur-model kernel, the recipe's kernel size with shake; reblur: of the predicted kernels (21)
    blur_recipe: str = "default"           # --blur-model shake: recipe (name or TOML file) whose camera shake F draws
    ndf: int = 64                          # PatchGAN base width
    n_layers_d: int = 3                    # PatchGAN strided layers (3 -> 70x70 receptive field)
    # losses
    pixel_loss: str = "l1"                 # l1 | charbonnier (paired, reblur)
    perceptual: float = 0.0                # weight of the VGG16 perceptual loss (paired, reblur)
    perceptual_weights: str | None = None  # local file of torchvision's VGG16 weights (vgg16-397923af.pth)
    lambda_cycle: float | None = None      # cycle-consistency weight per direction; default: 10 (reference), 50 with --blur-model shake
    lambda_identity: float | None = None   # identity weight as a fraction of lambda_cycle; default: 0.5 (reference), 0 with --blur-model shake
    pool_size: int = 50                    # image pool of past fakes shown to the discriminators
    lambda_reblur: float = 1.0             # reblur: weight of the photos' re-blur loss (G's output blurred by the predicted kernel against the photo)
    photo_curve: str = "srgb"              # reblur: tone curve of the --blurry photos, undone to blur in linear light: srgb (camera output) | linear (linear values, e.g. Levin et al. 2009's) | brooks | gamma:G
    # optimisation
    steps: int = 2000                      # total optimiser steps
    decay_steps: int = -1                  # final steps of linear lr decay to 0 (-1: half of steps)
    lr: float | None = None                # Adam step size; default: 2e-4 cyclegan (reference), 1e-3 paired and reblur
    beta1: float | None = None             # Adam beta1; default: 0.5 cyclegan (reference), 0.9 paired and reblur
    beta2: float = 0.999
    grad_clip: float = 0.05                # paired, reblur: clip the generator's gradient norm to this (reblur: K's too, on its own; 0: off)
    seed: int = 0                          # seeds data order, crops, pools and initial weights
    # bookkeeping
    run_dir: str = "runs/train"            # folder for config, metrics.jsonl, samples, checkpoints
    log_every: int = 50
    eval_every: int = 250                  # validation PSNR/SSIM and a sample grid every N steps
    ckpt_every: int = 500
    keep_last: int = 3                     # checkpoints kept besides best.pt (and reblur's best_reblur.pt)
    stop_at: int = -1                      # stop (with a checkpoint) after this step; -1: run to `steps`
    resume: str | None = None              # run folder to continue from its latest checkpoint
    overwrite: bool = False                # replace a run already in run_dir (else starting there is refused)
    device: str = "auto"                   # auto | cpu | cuda | cuda:N
    amp: str = "auto"                      # auto (on for CUDA) | on | off
    progress: bool = True                  # tqdm progress bar

    def resolve(self) -> "TrainConfig":
        """Fill the mode-dependent defaults (``None`` fields) and return ``self``."""
        cyclegan = self.mode == "cyclegan"
        if self.generator is None:
            self.generator = "resnet" if cyclegan else "unet"
        if self.lr is None:
            self.lr = 2e-4 if cyclegan else 1e-3
        if self.beta1 is None:
            self.beta1 = 0.5 if cyclegan else 0.9
        shake = cyclegan and self.blur_model == "shake"  # (F, which --blur-model sets, is CycleGAN's alone)
        if self.lambda_identity is None:
            # With F drawing realistic shake (slight to strong), "leave sharp images alone" outweighs
            # the cycle: G could not tell slight blur from sharp and stayed the identity (+0.01 dB).
            self.lambda_identity = 0.0 if shake else 0.5
        if self.lambda_cycle is None:
            # With that F the cycle is a faithful deblurring lesson; at the reference weight G's
            # adversarial loss took over after ~1000 steps and it painted the sharp scenes' textures.
            self.lambda_cycle = 50.0 if shake else 10.0
        if self.blur_kernel is None:
            self.blur_kernel = _recipe(self.blur_recipe).kernel_size if shake else 21
        return self

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an inconsistent or out-of-range option (after :meth:`resolve`)."""
        _choice("mode", self.mode, MODES)
        _choice("generator", self.generator, GENERATORS)
        _choice("pixel_loss", self.pixel_loss, PIXEL_LOSSES)
        _choice("amp", self.amp, ("auto", "on", "off"))
        _choice("blur_model", self.blur_model, BLUR_MODELS)
        if self.blur_model == "shake":
            _recipe(self.blur_recipe)
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ConfigError(f"--blur-kernel must be odd and >= 1, got {self.blur_kernel}")
        _check_device(self.device)
        for name in ("crop", "val_crop", "batch", "ngf", "ndf", "n_layers_d", "steps", "log_every",
                     "eval_every", "ckpt_every", "keep_last", "unet_depth", "pair_pool_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("val_size", "workers", "n_blocks", "pool_size", "seed", "pair_pool"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        cores = usable_cores()  # (per process: under torchrun each has its own)
        if self.workers > WORKERS_PER_CORE * cores:  # (a resume from a larger machine's run too: its config.json
            # holds its --workers)
            raise ConfigError(f"--workers must be at most {WORKERS_PER_CORE * cores} ({WORKERS_PER_CORE} per core; "
                              f"this process may use {cores}), got {self.workers}")
        if self.seed > MAX_SEED:  # (else refused by blursynth.rng mid-run, naming a derived seed, not --seed)
            raise ConfigError(f"--seed must be at most {MAX_SEED} (each process draws from seed * 1000 + its rank, "
                              f"which must stay below 2**63), got {self.seed}")
        for name in ("lr", "perceptual", "lambda_cycle", "lambda_identity", "grad_clip", "lambda_reblur"):
            # (`not >= 0` also catches NaN, which every comparison lets through: --lr nan failed in torch
            # without naming the option, --lambda-cycle nan or --lr inf trained to NaN weights, and
            # --perceptual nan or --grad-clip nan were silently off; an infinite --grad-clip is "no clip")
            value = getattr(self, name)
            if not value >= 0 or (value == math.inf and name != "grad_clip"):
                raise ConfigError(f"--{_flag(name)} must be >= 0 and finite, got {value}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"--beta1/--beta2 must lie in [0, 1), got {self.beta1}, {self.beta2}")
        synthetic = not (self.blurry if self.mode == "cyclegan" else self.pairs)
        if synthetic and self.pair_pool and self.crop > self.pair_pool_size:
            raise ConfigError(f"--crop {self.crop} must be at most --pair-pool-size {self.pair_pool_size} "
                              "(crops are cut from the pre-made pairs); raise --pair-pool-size")
        # Synthetic pairs are crops of the default recipe's procedural frame (with the held-out ones when no
        # --val-pairs is given): a larger side stopped the run with the recipe's error, naming
        # datasets/default.toml and "enlarge the frame or reduce the crop", not the option to lower.
        sides = []
        if synthetic:
            sides.append("pair_pool_size" if self.pair_pool else "crop")
            if not self.val_pairs:
                sides.append("val_crop")
        most = _largest_synthetic_side() if sides else 0
        for name in sides:
            if getattr(self, name) > most:
                data = ("--val-pairs DIR" if name == "val_crop" else
                        "--blurry DIR --sharp DIR" if self.mode == "cyclegan" else "--pairs DIR")
                raise ConfigError(f"--{_flag(name)} {getattr(self, name)} is larger than the synthetic pairs, which are "
                                  f"at most {most} px a side (the default recipe's frame of procedural scenes, less the "
                                  f"kernel margin); lower --{_flag(name)}, or pass {data}")
        if self.stop_at == 0 or self.stop_at < -1:
            raise ConfigError(f"--stop-at must be a step >= 1 (or -1: run to --steps), got {self.stop_at}")
        if self.stop_at > self.steps:  # (the run ended at --steps without a word)
            raise ConfigError(f"--stop-at {self.stop_at} is past --steps {self.steps}, where the run ends anyway; "
                              "leave --stop-at out or raise --steps")
        if self.decay_steps < -1:  # (any negative value was read as -1)
            raise ConfigError(f"--decay-steps must be >= 0 (or -1: half of --steps), got {self.decay_steps}")
        if self.decay_steps > self.steps:
            raise ConfigError(f"--decay-steps ({self.decay_steps}) cannot exceed --steps ({self.steps})")
        factor = self.size_factor()
        for name in ("crop", "val_crop"):
            if getattr(self, name) % factor:
                raise ConfigError(f"--{_flag(name)} {getattr(self, name)} must be a multiple of {factor} "
                                  f"for the {self.generator} generator")
        from unpaired.metrics import SSIM_WINDOW
        from unpaired.models import PHOTO_CURVES, curve_by_name, discriminator_min_side, min_side

        try:
            curve_by_name(self.photo_curve)
        except ValueError:
            raise ConfigError(f"--photo-curve must be {PHOTO_CURVES}; got {self.photo_curve!r}") from None
        # (--crop 8 with the default U-Net passed, made the data, then failed in a traceback at step 1)
        for name in ("crop",) + (("val_crop",) if self.val_size else ()):
            if getattr(self, name) < min_side(factor):
                raise ConfigError(f"--{_flag(name)} {getattr(self, name)} is below {min_side(factor)} px, the least "
                                  f"the {self.generator} generator takes (2 px at its coarsest scale); raise it")
        # (the discriminators see training crops only: --crop 16 in cyclegan mode failed at the first step)
        least = discriminator_min_side(self.n_layers_d)
        if self.mode == "cyclegan" and self.crop < least:
            raise ConfigError(f"--crop {self.crop} is below {least} px, the least the PatchGAN discriminator takes "
                              f"with --n-layers-d {self.n_layers_d} (3 * 2**{self.n_layers_d}); raise --crop or lower "
                              "--n-layers-d")
        if self.val_size and self.val_crop < SSIM_WINDOW:  # (else the first validation fails)
            raise ConfigError(f"--val-crop {self.val_crop} is smaller than SSIM's {SSIM_WINDOW} px window; use at "
                              f"least {SSIM_WINDOW} (or --val-size 0 for no validation)")
        if self.mode == "reblur" and self.blur_kernel == 1:  # (the softmax of one logit: K has no gradient)
            raise ConfigError("--blur-kernel 1 with --mode reblur predicts the 1-tap kernel alone, which blurs "
                              "nothing: K cannot learn and the re-blur loss teaches G the identity; use 3 or more")
        if self.mode == "cyclegan" and self.blur_model != "network" and self.blur_kernel == 1:
            # (shake: rasterize refused it mid-start, naming "size", not the option; kernel: F's only
            # kernel was the identity, so F could not blur and the cycle taught G nothing of deblurring)
            raise ConfigError(f"--blur-kernel 1 with --blur-model {self.blur_model} gives F the 1-tap kernel "
                              "alone, which blurs nothing; use 3 or more")
        if self.mode == "reblur" and self.crop < self.blur_kernel:  # (no pixel to compare the re-blurred crop on)
            raise ConfigError(f"--crop {self.crop} is smaller than --blur-kernel {self.blur_kernel}: the re-blur loss "
                              "compares the pixels whose whole kernel lies inside the crop; raise --crop or lower "
                              "--blur-kernel")
        if self.mode == "reblur" and self.blurry and self.val_size and self.val_crop < self.blur_kernel:
            raise ConfigError(f"--val-crop {self.val_crop} is smaller than --blur-kernel {self.blur_kernel}: the photos' "
                              "re-blur score compares the pixels whose whole kernel lies inside the crop; raise "
                              "--val-crop")
        if self.mode == "reblur" and self.sharp:
            raise ConfigError("--sharp is for --mode cyclegan; reblur mode learns from pairs (--pairs DIR or "
                              "synthetic) and blurry photos without sharp twin (--blurry DIR)")
        if self.mode == "cyclegan" and (self.blurry is None) != (self.sharp is None):
            raise ConfigError("--mode cyclegan needs both --blurry DIR and --sharp DIR (or neither, for "
                              "synthetic unpaired domains)")
        if self.mode == "paired" and (self.blurry or self.sharp):
            raise ConfigError("--blurry/--sharp are for --mode cyclegan (--blurry also for --mode reblur); paired mode "
                              "reads --pairs DIR")
        if self.perceptual > 0 and not self.perceptual_weights:
            raise ConfigError("--perceptual > 0 needs --perceptual-weights PATH to torchvision's VGG16 weights "
                              "(download https://download.pytorch.org/models/vgg16-397923af.pth on a "
                              "machine with internet access and copy it here)")

    def size_factor(self) -> int:
        """Image sides the generator accepts must be multiples of this."""
        from unpaired.models import generator_spec, size_factor  # torch: only once options are in use
        return size_factor(generator_spec(self))

    def total_decay_steps(self) -> int:
        return self.steps // 2 if self.decay_steps < 0 else self.decay_steps

    def checkpoint_due(self, step: int) -> bool:
        """Whether the checkpoint schedule writes one at ``step``: every --ckpt-every steps, and the last."""
        return step % self.ckpt_every == 0 or step == self.steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _recipe(name: str):
    """The blursynth recipe ``--blur-recipe`` names, or a :class:`ConfigError` naming the option."""
    from blursynth.recipe import RecipeError, load_recipe
    try:
        return load_recipe(name)
    except (RecipeError, FileNotFoundError) as exc:
        raise ConfigError(f"--blur-recipe {name}: {exc}") from None


def _largest_synthetic_side() -> int:
    """The largest square side of the trainers' synthetic pairs (:func:`unpaired.data.synthetic_pairs`: the
    ``default`` recipe's procedural scenes, crops of its ``camera.frame_px`` frame with the kernel margin)."""
    from blursynth.recipe import load_recipe
    recipe = load_recipe("default")
    return min(recipe.frame_px) - 2 * recipe.margin


def _check_device(name: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N; got {name!r}")


def pick_device(name: str, local_rank: int = 0):
    """The ``torch.device`` of a ``--device`` value (shared by training and inference): ``auto`` is this
    process's GPU when CUDA is present, else the CPU; ``cuda`` is this process's GPU."""
    import torch

    _check_device(name)
    if name in ("auto", "cuda") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():  # torchrun started more processes than there are GPUs
            raise ConfigError(f"--device {name}: process {local_rank} needs GPU {local_rank} but "
                              f"{torch.cuda.device_count()} are visible; start at most that many processes "
                              "(torchrun --nproc_per_node) or use --device cpu")
        return torch.device("cuda", local_rank)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is visible; use --device cpu")
    from blursynth.data import check_device
    try:  # (cuda:N beyond the visible GPUs, as blursynth's commands refuse it)
        return check_device("cpu" if name == "auto" else name, f"--device {name}")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"--{_flag(name)} must be one of {', '.join(allowed)}; got {value!r}")


def _field_types() -> dict[str, tuple[type, bool]]:
    """Field name -> (base type, optional) from the dataclass annotations."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        out[f.name] = (args[0] if optional else hint, optional)
    return out


def _coerce(name: str, value, where: str):
    """Check a TOML/JSON value against the field's type (ints are accepted for floats)."""
    base, optional = _field_types()[name]
    if value is None and optional:
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, bool) or not isinstance(value, base):
        raise ConfigError(f"{where}: '{name}' must be {base.__name__}, got {value!r}")
    if base is str and not value.strip():  # (`--pairs "$DATA"` with DATA unset trained on synthetic pairs, and
        # `--resume ""` started a new run: an empty path read as "not given")
        raise ConfigError(f"{where}: --{_flag(name)} is empty; give it a value (an unset shell variable?) or leave "
                          "it out")
    return value


def from_mapping(values: dict, base: TrainConfig | None = None, where: str = "config") -> TrainConfig:
    """A config from ``base`` (or defaults) with ``values`` applied; unknown keys are an error."""
    types = _field_types()
    unknown = sorted(set(values) - set(types))
    if unknown:
        near = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, types, n=1)) else k for k in unknown]
        raise ConfigError(f"{where}: unknown option(s) {', '.join(near)}; valid options are {', '.join(types)}")
    cfg = dataclasses.replace(base or TrainConfig(),
                              **{k: _coerce(k, v, where) for k, v in values.items()})
    return cfg


# (blur_recipe is a recipe's name or its TOML file; a name is left as it is, not starting with ~)
PATH_OPTIONS = ("pairs", "val_pairs", "blurry", "sharp", "perceptual_weights", "run_dir", "blur_recipe")


def load_toml(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read a TOML file of ``name = value`` lines (field names, underscores or dashes). A path option's
    leading ``~`` is the home folder, as the shell makes it on the command line (``out = "~/runs/a"``
    made a folder named ``~``)."""
    return from_mapping(_read_toml(path), base, where=str(path))


# Second spellings of a flag: `--out` is what blursynth's commands and unpaired.deblur call an output folder.
ALIASES = {"run_dir": ("--out",)}


def _read_toml(path: str | Path) -> dict:
    """The ``{field: value}`` of a ``--config`` file (dashes in keys read as underscores)."""
    try:
        # (utf-8-sig: a byte-order mark, which Windows editors write, was "Invalid statement at line 1, column 1",
        # before any character the user can see; recipe files are read so too)
        data = tomllib.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8, "
                          "as TOML requires") from None
    except OSError as exc:  # a folder, no permission
        raise ConfigError(f"--config {path}: cannot be read ({exc.strerror}); pass a TOML file") from None
    values, spelled = {}, {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in spelled:  # (both spellings of one option: the last one silently won)
            raise ConfigError(f"--config {path}: {spelled[name]!r} and {key!r} are the same option; keep one")
        values[name], spelled[name] = value, key
    for name, flags in ALIASES.items():  # `out = "runs/x"` as the command line's --out
        for alias in (flag.lstrip("-").replace("-", "_") for flag in flags):
            if alias in values:
                if name in values:
                    raise ConfigError(f"--config {path}: give one of {name} and {alias}, not both")
                values[name] = values.pop(alias)
    for name in PATH_OPTIONS:  # (here, not in load_toml alone: `--config FILE` reads the file through this)
        if isinstance(values.get(name), str):
            values[name] = os.path.expanduser(values[name])
    return values


class _OneSpelling(argparse.Action):
    """Store an option that has a second spelling, refusing both spellings with different values
    (``--out a --run-dir b``: the last silently won), as a ``--config`` file does."""

    def __call__(self, parser, namespace, value, option_string=None):
        spelled = namespace.__dict__.setdefault("_spelled", {})
        first = spelled.setdefault(self.dest, (option_string, value))
        if first[0] != option_string and first[1] != value:
            parser.error(f"{first[0]} {first[1]} and {option_string} {value} are the same option; give one")
        setattr(namespace, self.dest, value)


def build_parser() -> argparse.ArgumentParser:
    """One flag per dataclass field; flags not given stay unset (``argparse.SUPPRESS``)."""
    parser = argparse.ArgumentParser(
        prog="python -m unpaired.train",
        description="Train a deblurring network: supervised on (synthetic) pairs, CycleGAN on unpaired folders "
                    "of blurry and sharp photos, or (--mode reblur) on pairs plus blurry photos without sharp "
                    "twin, by re-blurring. With no argument: a small CPU run on synthetic pairs.")
    parser.add_argument("--config", help="TOML file of options (keys are the option names)")
    defaults = TrainConfig()
    notes = _field_notes()
    for name, (base, optional) in _field_types().items():
        flags = ["--" + _flag(name), *ALIASES.get(name, ())]
        default = getattr(defaults, name)
        note = notes.get(name, "")
        text = note if "default" in note else f"{note} (default: {default})".strip()
        if base is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(*flags, dest=name, type=base, default=argparse.SUPPRESS,
                                metavar=base.__name__.upper(), help=text,
                                **({"action": _OneSpelling} if name in ALIASES else {}))
    # (blursynth's commands and unpaired.evaluate call it --quiet)
    parser.add_argument("--quiet", dest="progress", action="store_false", default=argparse.SUPPRESS,
                        help="no progress bar (the same as --no-progress)")
    return parser


def _field_notes() -> dict[str, str]:
    """The comment beside each field of :class:`TrainConfig`: written once, shown by ``--help``."""
    import inspect
    notes = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        match = re.match(r"\s+(\w+):[^#]*#\s*(.+)$", line)
        if match:
            notes[match.group(1)] = match.group(2).strip()
    return notes


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Command line -> validated :class:`TrainConfig` (``--resume`` loads the run's saved config)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    args.pop("_spelled", None)
    config_file = args.pop("config", None)
    toml = _read_toml(config_file) if config_file else {}
    if "resume" in toml:  # (read here, it would start from the defaults, not the run's saved options)
        raise ConfigError(f"--config {config_file}: 'resume' belongs on the command line; drop it there and "
                          f"run with --resume {toml['resume']} (the run's config.json gives its options)")
    saved = None
    if args.get("resume"):
        # (a --config file's run_dir or out too: it was silently replaced by the resumed folder)
        for where, values in (("", args), (f" in --config {config_file}", toml)):
            if Path(values.get("run_dir", args["resume"])).resolve() != Path(args["resume"]).resolve():
                raise ConfigError(f"--resume {args['resume']} continues the run in that folder; drop --run-dir/--out "
                                  f"{values['run_dir']}{where} (a resumed run stays where it is)")
        saved = _saved_config(args["resume"])
    base = from_mapping(toml, saved, where=str(config_file))
    cfg = from_mapping(args, base, where="command line").resolve()
    if cfg.resume:
        cfg.run_dir = cfg.resume
    given = set(args) | set(toml)
    if saved is not None:  # first: a changed --mode or network is the cause of what validate would find
        _check_resume(cfg, saved, given)  # (--mode cyclegan on a paired run's 16 px crops: "below 24 px")
    cfg.validate()
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: pass one of them")
    _check_used(cfg, given)
    _check_run_dir(cfg)
    return cfg


def _saved_config(run_dir: str) -> TrainConfig:
    """The options a run in ``run_dir`` was started with, less the per-invocation ones."""
    saved = Path(run_dir) / "config.json"
    if not saved.is_file():
        lost = _config_lost(Path(run_dir), f"--resume {run_dir}")
        raise ConfigError(lost or f"--resume {run_dir}: no config.json there; pass the run folder "
                          "that an earlier `python -m unpaired.train` wrote")
    try:
        values = json.loads(saved.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        raise ConfigError(f"--resume {run_dir}: {saved} is not the JSON that unpaired.train writes ({exc}); "
                          "restore it, or start a new run") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--resume {run_dir}: {saved} is not the JSON that unpaired.train writes")
    for name in PER_INVOCATION:  # options of the interrupted invocation, not of the run
        values.pop(name, None)
    return from_mapping(values, where=str(saved))


def _run_held(run: Path) -> list[str]:
    """What in ``run`` shows that steps were trained there: metrics.jsonl, checkpoints/ (a start that failed
    leaves only config.json)."""
    return [name for name in ("metrics.jsonl", "checkpoints") if (run / name).exists()]


def _config_lost(run: Path, option: str) -> str | None:
    """The error for a run folder that holds a run (metrics or checkpoints) but not its config.json (removed
    by hand), the same whether it was given to --resume or to a new run: each told the user to use the
    other. None for a folder without either."""
    held = _run_held(run)
    if not held or (run / "config.json").exists():
        return None
    copy = (" (each checkpoints/step_*.pt holds a copy of it, under the key 'config')"
            if any(run.glob("checkpoints/step_*.pt")) else "")
    return (f"{option}: holds a run ({held[0]}) but not its config.json, which --resume needs (it holds the run's "
            f"options); put it back{copy} and continue with --resume {run}, start the run again with --overwrite, "
            "or choose another --run-dir")


def _check_resume(cfg: TrainConfig, saved: TrainConfig, given: set[str]) -> None:
    """Refuse a change the checkpoint cannot take (before anything is written in the run folder)."""
    for name in RESUME_FIXED:
        if name in given and getattr(cfg, name) != getattr(saved, name):
            raise ConfigError(f"--{_flag(name)} {getattr(cfg, name)}: the run in {cfg.resume} was trained with "
                              f"{getattr(saved, name)}, and a resumed run keeps its networks and optimiser; drop "
                              f"--{_flag(name)}, or start a new run in another --run-dir")


def _unused(cfg: TrainConfig) -> dict[str, str]:
    """Options this run does not read, each with what it is for."""
    unused = {name: f"--mode {' or '.join(modes)}" for name, modes in MODE_ONLY.items() if cfg.mode not in modes}
    unused |= {name: f"--generator {gen}" for name, gen in GENERATOR_ONLY.items() if gen != cfg.generator}
    if cfg.mode == "cyclegan":
        unused |= {name: f"--blur-model {' or '.join(models)}" for name, models in BLUR_MODEL_ONLY.items()
                   if cfg.blur_model not in models}
    if cfg.perceptual == 0:
        unused.setdefault("perceptual_weights", "--perceptual > 0")
    if not cfg.blurry:
        unused.setdefault("photo_curve", "--blurry photos")
    if cfg.blurry if cfg.mode == "cyclegan" else cfg.pairs:  # (the pool is of synthetic pairs: none are made)
        given = "--blurry or --sharp" if cfg.mode == "cyclegan" else "--pairs"
        unused.update(dict.fromkeys(("pair_pool", "pair_pool_size"), f"synthetic data (no {given})"))
    return unused


def _check_used(cfg: TrainConfig, given: set[str]) -> None:
    """Refuse an option given with a value the run would ignore: one other than it would have anyway
    (``--lambda-cycle 10`` in paired mode is harmless, ``--lambda-cycle 50`` is not)."""
    # (--blur-model, and with shake --blur-recipe, set the defaults of other CycleGAN options; in another
    # mode they are unused themselves, and were let through as if they had their value anyway)
    kept = ("mode", "generator") + ((("blur_model",) + (("blur_recipe",) if cfg.blur_model == "shake" else ()))
                                    if cfg.mode == "cyclegan" else ())
    anyway = dataclasses.replace(TrainConfig(), **{k: getattr(cfg, k) for k in kept}).resolve()
    for name, what in sorted(_unused(cfg).items()):
        if name in given and getattr(cfg, name) != getattr(anyway, name):
            raise ConfigError(f"--{_flag(name)} {getattr(cfg, name)}: only read with {what}, which this run "
                              "does not use; drop it")


def _check_run_dir(cfg: TrainConfig) -> None:
    """Refuse a run folder that is a file, or that holds a run (or a foreign config.json) a new run would mix with."""
    run = Path(cfg.run_dir)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--run-dir {cfg.run_dir}: is a file; choose a folder (it is made if missing)")
    # (a FileExistsError traceback, after the data was made)
    if (gone := dead_link_above(run)) is not None:
        raise ConfigError(f"--run-dir {cfg.run_dir}: {gone}, or choose another --run-dir")
    # (a file above it: making the folder failed in a NotADirectoryError traceback, after the data was made)
    above = next((p for p in run.absolute().parents if p.exists()), None)
    if not run.exists() and above is not None and not above.is_dir():
        raise ConfigError(f"--run-dir {cfg.run_dir}: {above} is a file, so the folder cannot be made there; "
                          "choose another --run-dir")
    # (a file where the run keeps a folder, or the reverse: a traceback once the data was made, or at the
    # first checkpoint, hours in)
    for name, folder in (("checkpoints", True), ("samples", True), ("metrics.jsonl", False)):
        if (run / name).exists() and (run / name).is_dir() != folder:
            raise ConfigError(f"--run-dir {cfg.run_dir}: {run / name} is a {'file' if folder else 'folder'}, where "
                              f"the run writes its {'folder' if folder else 'file'} of that name; move it aside")
    if cfg.resume:
        return
    config = run / "config.json"
    if config.exists():  # ours after a start that failed before a step (then replaced), or someone else's
        try:
            values = json.loads(config.read_text(encoding="utf-8"))
            from_mapping(values if isinstance(values, dict) else {"": None}, where=str(config))
        except (ValueError, OSError):  # (ConfigError and JSON's errors are ValueErrors)
            raise ConfigError(f"--run-dir {cfg.run_dir}: holds a config.json that unpaired.train did not write; "
                              "choose another --run-dir") from None
    held = _run_held(run)
    lost = _config_lost(run, f"--run-dir {cfg.run_dir}")  # (--resume would be refused as well: say why)
    if lost and not cfg.overwrite:
        raise ConfigError(lost)
    if held and not cfg.overwrite:  # a new run would mix its metrics and checkpoints in
        raise ConfigError(f"--run-dir {cfg.run_dir}: holds a run ({held[0]}); pass --resume {cfg.run_dir} to "
                          "continue it, --overwrite to replace it, or choose another --run-dir")


def kept(cfg: TrainConfig) -> dict:
    """``cfg.to_dict()`` as a run keeps it (``config.json``, checkpoints): its input paths absolute. A resume
    reads them from ``config.json``, and relative ones were taken from where it was run, not from where
    the run began (other data, or none). ``run_dir`` stays as given: a resume replaces it by its folder."""
    from blursynth.recipe import recipe_names
    values = cfg.to_dict()
    for name in PATH_OPTIONS:
        value = values[name]
        recipe = name == "blur_recipe" and Path(value).suffix != ".toml" and value in recipe_names()
        if name != "run_dir" and value is not None and not recipe:
            values[name] = str(Path(value).absolute())
    return values


def save(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as JSON (atomically), as :func:`kept`."""
    from blursynth.io import write_json
    write_json(path, kept(cfg))


__all__ = ["TrainConfig", "ConfigError", "parse_args", "load_toml", "from_mapping", "build_parser", "save"]
