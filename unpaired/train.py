"""Train a deblurring network: ``python -m unpaired.train [options]`` (see ``--help``).

One loop, read top to bottom: options -> processes/device -> data -> models -> optimisers -> resume
-> steps (update, log, validate, checkpoint) -> final validation. Three modes share it:

- ``paired``: a generator G (blurry -> sharp) trained with L1/Charbonnier (+ optional VGG16 perceptual)
  on synthetic pairs made on the fly (default) or on a folder of pairs (``--pairs DIR``);
- ``cyclegan``: G (blurry -> sharp), F (sharp -> blurry) and two PatchGAN discriminators trained on
  unpaired blurry and sharp photos (``--blurry DIR --sharp DIR``; default: synthetic unpaired domains);
- ``reblur``: G and a kernel predictor K (blurry -> its blur kernel). On pairs (as ``paired``) G learns
  the sharp image and K the kernel that blurs the true sharp image into the blurry one; on blurry
  photos without sharp twin (``--blurry DIR``; default: the pairs' blurry images) G's output blurred by
  K's kernel must give back the photo.

Run folder (``--run-dir``): ``config.json``, ``metrics.jsonl`` (one JSON record per log/evaluation),
``samples/step_NNNNNNN.png`` (rows of blurry | output | sharp), ``checkpoints/step_NNNNNNN.pt`` (last
``--keep-last``), ``checkpoints/best.pt`` (highest validation PSNR) and, in reblur mode with photos,
``checkpoints/best_reblur.pt`` (lowest re-blur error on them). Checkpoints hold models,
optimisers, AMP scaler, every rank's image pools and RNG state, the step (the learning-rate
schedule is a function of the step) and the training time (the logged ``seconds`` go on from it), so
``--resume RUN_DIR`` continues exactly
where the run stopped. A new run in a folder that holds one is refused unless ``--overwrite`` (which
removes that run's files and nothing else). Under ``torchrun --nproc_per_node=N`` it trains with DistributedDataParallel
(gloo on CPU, nccl on CUDA) and only rank 0 writes. On CUDA, mixed precision and channels-last are on.
A loss that becomes NaN or inf (on any rank) stops the run before its update, and nothing of that step is saved.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from blursynth.interrupt import Terminated, exit_code, sigterm_interrupts
from blursynth.io import atomic_path, first_line, lock_folder, temporary_target
from unpaired import config as config_mod
from unpaired import metrics
from unpaired.data import (FolderImages, PairedCrops, StepSampler, SyntheticPool, UnpairedCrops, WithPhotos,
                           synthetic_pairs, usable_pairs, validation_pairs, validation_photos)
from unpaired.deblur import read_checkpoint, step_checkpoints
from unpaired.losses import ImagePool, VGGPerceptual, lsgan_loss, pixel_loss, reblur_losses
from unpaired.models import (KernelBlurGenerator, KernelPredictor, LearnedKernels, PatchDiscriminator, ShakeKernels,
                             build_generator, generator_spec, init_weights, kernel_centroid, reblur, tone_params,
                             valid_part)


class CycleGenerators(nn.Module):
    """G (blurry -> sharp) and F (sharp -> blurry) run in one forward so DDP sees a single call.

    F is the reference network, or a :class:`KernelBlurGenerator`, which can only blur. With the
    latter there is no blurry -> sharp -> blurry cycle (F's kernels are drawn, not the photo's), and F
    learns from its discriminator alone: through the cycle it would shrink its kernels towards the
    identity, the easiest blur to undo.
    """

    def __init__(self, g: nn.Module, f: nn.Module):
        super().__init__()
        self.G, self.F = g, f

    def forward(self, blur: torch.Tensor, sharp: torch.Tensor, identity: bool) -> dict:
        out = {"fake_sharp": self.G(blur)}
        if isinstance(self.F, KernelBlurGenerator):
            out["fake_blur"], out["kernel"] = self.F(sharp)
            out["rec_sharp"] = self.G(out["fake_blur"].detach())
        else:
            out["fake_blur"] = self.F(sharp)
            out["rec_blur"], out["rec_sharp"] = self.F(out["fake_sharp"]), self.G(out["fake_blur"])
            if identity:
                out["idt_blur"] = self.F(blur)
        if identity:  # G should leave sharp images alone (and a network F blurry ones)
            out["idt_sharp"] = self.G(sharp)
        return out


class ReblurNets(nn.Module):
    """G (blurry -> sharp) and K (:class:`~unpaired.models.KernelPredictor`) in one forward, so DDP sees a single call.

    ``forward(blur, photo)`` -> ``{"fake_sharp": G(blur), "kernel": K(blur)}`` for the pairs, plus
    ``"photo_sharp": G(photo)`` and ``"photo_kernel": K(photo)`` (made without autograd) for the photos
    without sharp twin (``photo`` None: the pairs' blurry images stand in, and G and K run once).
    ``blur`` and ``photo`` ``(B, 3, H, W)`` in ``[0, 1]``; images come back ``(B, 3, H, W)``, kernels
    ``(B, k, k)`` float32 (``k``: K's ``size``, ``--blur-kernel``).
    """

    def __init__(self, g: nn.Module, k: nn.Module):
        super().__init__()
        self.G, self.K = g, k

    def forward(self, blur: torch.Tensor, photo: torch.Tensor | None = None) -> dict:
        out = {"fake_sharp": self.G(blur), "kernel": self.K(blur)}
        if photo is None:
            out["photo_sharp"], out["photo_kernel"] = out["fake_sharp"], out["kernel"]
        else:
            out["photo_sharp"] = self.G(photo)
            with torch.no_grad():  # K's photo kernel is held fixed (losses.reblur_losses): no graph to keep
                out["photo_kernel"] = self.K(photo)
        return out


class Stopped(KeyboardInterrupt):
    """The run stopped at a step boundary on SIGINT/SIGTERM, with a checkpoint of that step written."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class Diverged(FloatingPointError):
    """A loss (or the weights) became NaN or inf: the run stopped before that update, or before writing
    anything of it. ``report``: this process says so (rank 0; every rank raises it at the same step)."""

    def __init__(self, message: str, report: bool = True):
        super().__init__(message)
        self.report = report


@contextlib.contextmanager
def _stop_requests(enabled: bool):
    """Within: the first SIGINT or SIGTERM is recorded in the yielded list, so the loop can finish its
    step and checkpoint it (a step cut in half would leave G and the discriminators a step apart);
    a second one interrupts at once. Off under torchrun (the ranks would stop at different steps,
    and the checkpoint is collective) and outside the main thread, where handlers cannot be set. A
    signal the run was started with ignored stays ignored, as Python leaves SIGINT (a command started
    with ``&`` from a script shares the script's Ctrl-C, and the shell ignores it for that reason)."""
    stop: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(signum, frame):
        if stop:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        stop.append(signum)

    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _ignore_ctrl_c(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C (sent to the whole process group) to the main process, which
    finishes its step and then shuts them down; a worker that died of it would fail that step.
    SIGTERM keeps its default: it is how multiprocessing stops a worker left running at exit, and a
    worker that ignored it kept its process from ever exiting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _close(batches) -> None:
    """Stop a DataLoader iterator's workers here rather than in its ``__del__``: workers ended by a
    signal to the whole process group made torch raise from inside ``__del__``, which Python prints
    as an ignored-exception traceback after the run's last line."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # (workers > 0 only)
    if shutdown is not None:
        try:
            shutdown()
        except (RuntimeError, KeyboardInterrupt):  # (a worker ended by the signal: nothing left to stop)
            pass


class CycleDiscriminators(nn.Module):
    """D_sharp judges sharp images, D_blur blurry ones; forward returns the summed LSGAN D loss."""

    def __init__(self, d_sharp: nn.Module, d_blur: nn.Module):
        super().__init__()
        self.D_sharp, self.D_blur = d_sharp, d_blur

    def forward(self, real_sharp, fake_sharp, real_blur, fake_blur) -> torch.Tensor:
        loss_sharp = lsgan_loss(self.D_sharp(real_sharp), True) + lsgan_loss(self.D_sharp(fake_sharp), False)
        loss_blur = lsgan_loss(self.D_blur(real_blur), True) + lsgan_loss(self.D_blur(fake_blur), False)
        return 0.5 * (loss_sharp + loss_blur)


def lr_factor(step: int, steps: int, decay_steps: int) -> float:
    """Constant, then linear decay to 0 over the last ``decay_steps`` steps (reference schedule)."""
    start = steps - decay_steps
    return 1.0 if step < start else max(0.0, (steps - step) / max(1, decay_steps))


def _finite(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One flag on ``device``: no NaN or inf in ``tensors`` (left on the device, so that the flags of a
    check are read back, and reduced across processes, at once)."""
    return torch.stack([t.detach().isfinite().all().to(device) for t in tensors]).all()


def _rank_mean(values: dict[str, float], device: torch.device, world: int) -> dict[str, float]:
    """``values`` (the same keys on every rank) averaged over the ``world`` ranks: the global batch's, as
    each rank's loss is that of its own slice (rank 0's alone was logged). Float64, so the mean of equal
    values is each of them (G's gradient norm, the same on every rank after DDP's averaging)."""
    total = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return dict(zip(values, (total / world).tolist()))


def _floats(state) -> list[torch.Tensor]:
    """The floating-point tensors of a state of nested dicts and lists (weights, Adam's moments)."""
    if torch.is_tensor(state):
        return [state] if state.is_floating_point() else []
    items = state.values() if isinstance(state, dict) else state if isinstance(state, (list, tuple)) else ()
    return [t for item in items for t in _floats(item)]


def _diverged(cfg: config_mod.TrainConfig, step: int, what: list[str], latest: Path | None) -> str:
    """Why the run stopped at ``step``, the checkpoint it keeps, and how to go on from it. Resumed as it
    is, the run would take the same steps (its data is a function of the step) and diverge again."""
    kept = (f"its last checkpoint, {latest}, holds finite weights" if latest is not None
            else "it wrote no checkpoint before it, so --resume starts it again at step 0")
    clip = (f" (or clip the gradient norm, which is off: --grad-clip {config_mod.TrainConfig.grad_clip:g})"
            if cfg.mode in config_mod.SUPERVISED and cfg.grad_clip == 0 else "")
    return (f"the run diverged at step {step}: {' and '.join(what)} became NaN or inf, and it stopped without "
            f"saving that step; {kept}. Resumed as it is, it would repeat the same steps, so resume with a lower "
            f"learning rate: --resume {cfg.run_dir} --lr {cfg.lr / 2:g}{clip}")


def _latest_checkpoint(resume: str, ckpt_dir: Path, device: torch.device,
                       ckpt_every: int) -> tuple[Path | None, dict | None]:
    """The run's latest ``step_*.pt`` and its training state, or ``(None, None)`` when it has none (a run
    killed before its first checkpoint: it starts again at step 0); ValueError naming the file (and the
    one before it, to resume from) when it is damaged or holds weights that are not finite, or when none
    is left of a run that logged steps beyond its first checkpoint."""
    ckpts = step_checkpoints(ckpt_dir)
    if not ckpts:
        metrics = ckpt_dir.parent / "metrics.jsonl"
        logged = max((r["step"] for r, _ in _records(metrics)), default=0) if metrics.is_file() else 0
        if logged > ckpt_every:  # (removed by hand: starting again would truncate its metrics and replace best.pt)
            raise ValueError(f"--resume {resume}: no checkpoints/step_*.pt to resume from, though metrics.jsonl "
                             f"reaches step {logged}; put them back, or pass --overwrite to start the run again")
        return None, None
    try:
        state = read_checkpoint(ckpts[-1], ("models", "optimizers", "step"), f"--resume {resume}: {ckpts[-1]}",
                                map_location=device)
        # (trainers before the divergence check went on and saved such weights: resumed, they diverge at once)
        if not bool(_finite(_floats({k: state[k] for k in ("models", "optimizers")}), device)):
            raise ValueError(f"--resume {resume}: {ckpts[-1]}: holds weights that are NaN or inf (saved after the run "
                             "diverged)")
        return ckpts[-1], state
    except ValueError as exc:
        earlier = f"; move it aside to resume from {ckpts[-2].name}" if len(ckpts) > 1 else ""
        raise ValueError(f"{exc}{earlier}") from None


def main(argv: list[str] | None = None) -> dict:
    cfg = config_mod.parse_args(argv)
    config_mod.printable_stdout()  # (a run folder's name that is not UTF-8 failed to print, after the run)
    with contextlib.ExitStack() as held:  # (the run folder's lock, :func:`_hold_run`, until the run ends)
        return _train(cfg, held)


def _hold_run(run: Path, held: contextlib.ExitStack) -> None:
    """Lock the run folder for this process until ``held`` closes (or the process dies): a second trainer
    in it at the same time (a job requeued while its first copy still runs) would interleave its metrics
    and checkpoints with this one's and delete this one's temporary files."""
    try:
        fd = lock_folder(run)
    except BlockingIOError:
        raise config_mod.ConfigError(f"--out {run}: another training run is using this folder; wait for it to end "
                                     "(then continue it with --resume), or choose another --out") from None
    if fd is not None:
        held.callback(os.close, fd)


def _train(cfg: config_mod.TrainConfig, held: contextlib.ExitStack) -> dict:
    """:func:`main`'s run of ``cfg``, the run folder held in ``held``."""
    # ---- processes and device: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = config_mod.pick_device(cfg.device, local_rank)
    # The run's options before this invocation (read by every process before rank 0 can rewrite them): its
    # --ckpt-every and --steps, not those given with --resume, tell which of its checkpoints were on its
    # schedule (a run killed before its first checkpoint and resumed with a lower --ckpt-every was refused
    # as if its checkpoints had been removed, and the checkpoints of the old schedule were removed).
    earlier = config_mod._saved_config(cfg.resume) if cfg.resume else None
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    master = rank == 0
    use_amp = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    amp_dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    run = Path(cfg.run_dir)
    ckpt_dir = run / "checkpoints"
    held_early = master and run.is_dir()
    if held_early:  # (a resume, or --overwrite: held before anything there is read or changed)
        _hold_run(run, held)
    # read before anything is written or made, so a bad checkpoint stops the run at once and changes nothing
    resume_from, state = (_latest_checkpoint(cfg.resume, ckpt_dir, device, earlier.ckpt_every)
                          if cfg.resume else (None, None))
    # ---- data: position p of the run is a pure function of (seed, p), so steps fix the data
    blurry = FolderImages(cfg.blurry, "--blurry", cfg.crop) if cfg.blurry else None
    sharp = FolderImages(cfg.sharp, "--sharp", cfg.crop) if cfg.sharp else None
    for option, folder in (("--blurry", blurry), ("--sharp", sharp)):
        if master and folder is not None:
            _report_skipped(option, folder.skipped, len(folder), "files")
    val, pair_source = validation_pairs(cfg, blurry)
    # reblur: G's re-blur error on held-out crops of the photos, which have no sharp twin to score on
    val_photos = validation_photos(cfg, blurry) if cfg.mode == "reblur" and blurry is not None else []
    if pair_source is not None:  # (checked now, as the photo folders are, not when a step first draws a bad pair)
        skipped = usable_pairs(pair_source, "--pairs", cfg.crop)
        if master:
            _report_skipped("--pairs", skipped, len(pair_source), "pairs")
    if master and cfg.mode != "cyclegan" and cfg.pairs and not cfg.val_pairs:  # the split is easy to overlook
        print(f"--pairs {cfg.pairs}: {len(pair_source)} pairs for training, the last {len(val)} held out for "
              "validation (--val-size, or --val-pairs DIR)", file=sys.stderr)
    if cfg.mode != "cyclegan":
        if pair_source is not None:
            train_set = PairedCrops(pair_source, cfg.crop, cfg.seed, synthetic=False)
        elif cfg.pair_pool:  # made once: a pair costs more CPU than a step of the default network
            train_set = SyntheticPool(cfg.seed, cfg.pair_pool, cfg.pair_pool_size, cfg.crop,
                                      progress=master and cfg.progress)
        else:
            train_set = PairedCrops(synthetic_pairs(cfg.seed, cfg.crop), cfg.crop, cfg.seed, synthetic=True)
        if blurry is not None:  # (reblur: photos without sharp twin beside the pairs)
            train_set = WithPhotos(train_set, blurry, cfg.crop, cfg.seed)
    else:
        train_set = UnpairedCrops(blurry, sharp, cfg.crop, cfg.seed, cfg.pair_pool, cfg.pair_pool_size,
                                  progress=master and cfg.progress)
    # Besides (seed, step), the data order depends on which files are read: checkpoints keep a digest
    # of their names, so a resume can say when the folders changed since.
    names = {option: [f.name for f in folder.files] for option, folder in (("--blurry", blurry), ("--sharp", sharp))
             if folder is not None}
    if pair_source is not None:
        names["--pairs"] = [r["blur"] for r in pair_source.records]
    # (surrogateescape: a file name that is not UTF-8, b"\xe9t\xe9.jpg", hashes as its bytes)
    data_files = {k: (len(v), hashlib.sha256("\0".join(v).encode("utf-8", "surrogateescape")).hexdigest())
                  for k, v in names.items()}
    # ... and of the validation images, which best.pt's score was measured on: another --val-size,
    # --val-crop, --val-pairs or --seed on resume makes scores that cannot be compared with it.
    def images_digest(items: list[dict]) -> tuple[int, str]:
        digest = hashlib.sha256()
        for item in items:
            for k in sorted(item):
                digest.update(item[k].cpu().contiguous().numpy().tobytes())
        return len(items), digest.hexdigest()
    val_digest, photos_digest = images_digest(val), images_digest(val_photos)  # (the latter: best_reblur.pt's)

    # ---- models (seeded init, then the same weights on every rank)
    spec = generator_spec(cfg)
    nets: dict[str, nn.Module] = {"G": build_generator(spec, seed=cfg.seed)}
    if cfg.mode == "cyclegan":
        if cfg.blur_model == "network":
            nets["F"] = build_generator(spec, seed=cfg.seed + 1)
        else:
            sampler = (ShakeKernels(cfg.blur_kernel, cfg.blur_recipe, seed=cfg.seed + 1) if cfg.blur_model == "shake"
                       else LearnedKernels(cfg.blur_kernel))
            nets["F"] = init_weights(KernelBlurGenerator(sampler=sampler), cfg.seed + 1)
        for i, name in enumerate(("D_sharp", "D_blur")):
            nets[name] = init_weights(PatchDiscriminator(cfg.ndf, cfg.n_layers_d), cfg.seed + 2 + i)
    elif cfg.mode == "reblur":
        nets["K"] = init_weights(KernelPredictor(cfg.blur_kernel), cfg.seed + 1)
    for net in nets.values():
        net.to(device, memory_format=memory_format)
    perceptual = VGGPerceptual(cfg.perceptual_weights).to(device) if cfg.perceptual > 0 else None

    # modules that are trained as one DDP unit each
    if cfg.mode == "paired":
        units = {"gen": nets["G"]}
    elif cfg.mode == "reblur":
        units = {"gen": ReblurNets(nets["G"], nets["K"])}
    else:
        units = {"gen": CycleGenerators(nets["G"], nets["F"]), "disc": CycleDiscriminators(nets["D_sharp"], nets["D_blur"])}
    raw_units = dict(units)
    if world > 1:
        units = {k: DDP(m, device_ids=[device.index] if device.type == "cuda" else None) for k, m in units.items()}

    # ---- optimisers (their schedules follow the resume, which sets the step)
    optims = {k: torch.optim.Adam(m.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)) for k, m in raw_units.items()}
    pools = {"sharp": ImagePool(cfg.pool_size, cfg.seed * 1000 + rank, 0),
             "blur": ImagePool(cfg.pool_size, cfg.seed * 1000 + rank, 1)}

    # ---- resume (else: seed the global RNG, which draws the kernels and noise of a kernel-blur F)
    start, best, best_reblur, elapsed = 0, -float("inf"), float("inf"), 0.0
    end = cfg.steps if cfg.stop_at < 0 else min(cfg.steps, cfg.stop_at)
    torch.manual_seed(cfg.seed * 1000 + rank)
    if state is not None:
        try:
            for k, m in nets.items():
                m.load_state_dict(state["models"][k])
            for k in optims:
                optims[k].load_state_dict(state["optimizers"][k])
            if state["scaler"]:  # (empty when the run had no scaler: on the CPU or with bfloat16; resumed on a
                # GPU without bfloat16, which scales float16 losses, it failed as "was config.json edited?")
                scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:  # options fixed by the run are checked in config
            raise ValueError(f"--resume {cfg.resume}: {resume_from} does not fit this run's options "
                             f"({type(exc).__name__}: {first_line(exc)}); was config.json edited?") from None
        # (a resume with another --crop: past fakes of the old size, mixed with new ones, failed the first
        # step in a traceback as the pool stacked them)
        sides = {tuple(t.shape[-2:]) for ranks in state["pools"] for p in ranks.values() for t in p["images"]}
        if len(state["pools"]) == world and sides <= {(cfg.crop, cfg.crop)}:
            for k, p in pools.items():
                p.load_state_dict(state["pools"][rank][k], device)
        elif master and cfg.mode == "cyclegan":  # (paired mode never fills its pools: nothing to say)
            why = (f"{len(state['pools'])} processes, this run has {world}" if len(state["pools"]) != world else
                   f"{' and '.join(f'{w}x{h}' for h, w in sorted(sides))} px images, this run's --crop is {cfg.crop}")
            print(f"resume: checkpoint has image pools of {why}; pools start empty", file=sys.stderr)
        # each process's own RNG (kernels and noise of a kernel-blur F); with a checkpoint of another
        # process count, or an older one (rank 0's state alone, as torch_rng), the other ranks keep their seed
        rngs = state.get("rng") or [{"torch": state["torch_rng"], "cuda": state.get("cuda_rng")}]
        if len(rngs) == world or rank == 0:
            mine = rngs[rank] if len(rngs) == world else rngs[0]
            torch.set_rng_state(mine["torch"].cpu())  # map_location may have moved it to the GPU
            if device.type == "cuda" and mine.get("cuda") is not None:
                torch.cuda.set_rng_state(mine["cuda"].cpu(), device)
        start, best, best_reblur = state["step"], state["best"], state.get("best_reblur", float("inf"))
        elapsed = _seconds_before(state, run / "metrics.jsonl", start)  # (the logged "seconds" go on from it)
        if start > end:  # (name the option that set the end: blaming "--stop-at -1" for a short --steps misled)
            option = f"--stop-at {cfg.stop_at}" if 0 < cfg.stop_at < cfg.steps else f"--steps {cfg.steps}"
            raise ValueError(f"{option}: the run in {run} is already at step {start}")
        then = state.get("data_files")  # (None: a checkpoint older than the digests)
        changed = []
        # (a folder given now and not then counts too: reblur's --blurry may be added on resume)
        for k in [] if then is None else [*data_files, *(k for k in then if k not in data_files)]:
            if tuple(then.get(k, ())) != tuple(data_files.get(k, ())):
                was = f"{then[k][0]} files" if k in then else "not given"
                changed.append(f"{k} ({was} then, {data_files[k][0] if k in data_files else 'not given'} now)")
        if master and changed:
            print(f"resume: other usable files than at step {start} in {' and '.join(changed)}; the run goes on, "
                  "but no longer repeats an uninterrupted one", file=sys.stderr)
        if tuple(state.get("validation", val_digest)) != val_digest and best > -float("inf"):
            if master:
                print(f"resume: other validation images than at step {start} (another --val-size, --val-crop, "
                      f"--val-pairs or --seed); best.pt's {best:.2f} dB was measured on the others, so the next "
                      "validation starts the best afresh", file=sys.stderr)
            best = -float("inf")
        curve_was = state.get("config", {}).get("photo_curve", cfg.photo_curve)
        if tuple(state.get("validation_photos", photos_digest)) != photos_digest or curve_was != cfg.photo_curve:
            # (best_reblur.pt's score was measured on other photos, or re-blurred them through another
            # --photo-curve: kept, it could stay unbeaten by every model of the right curve)
            if master and best_reblur < float("inf"):
                why = "other photos" if curve_was == cfg.photo_curve else f"--photo-curve {curve_was}"
                print(f"resume: best_reblur.pt's re-blur error {best_reblur:.4f} was measured with {why}; the next "
                      "validation starts the best afresh", file=sys.stderr)
            best_reblur = float("inf")
        if master:
            _truncate_metrics(run / "metrics.jsonl", start)
            _keep_last(ckpt_dir, cfg, earlier, start)  # (a run killed between writing one and removing the oldest)
            print(f"resumed {resume_from} at step {start}")
    elif cfg.resume and master:  # killed before its first checkpoint, after logging (or validating): a new
        # run is refused in the folder, which holds metrics, so --resume starts the run again
        _truncate_metrics(run / "metrics.jsonl", 0)
        print(f"no checkpoint in {ckpt_dir} yet (the run was killed before its first): starting it again at step 0")
    # The schedule is a function of the step, with --lr as its base rather than the rate the loaded
    # optimiser holds: a resume may lower --lr (the fix for a run that diverged), and a new --steps
    # sets the decay from the first resumed step on.
    decay = cfg.total_decay_steps()
    for o in optims.values():
        for group in o.param_groups:
            group["initial_lr"] = cfg.lr
    scheds = {k: torch.optim.lr_scheduler.LambdaLR(o, lambda s: lr_factor(s, cfg.steps, decay), last_epoch=start - 1)
              for k, o in optims.items()}
    del state  # (its copies of the weights and optimiser moments are not needed for the run)
    if master:  # only now: a start or resume that failed above has written (or removed) nothing
        if not held_early:  # a new run's folder, held at once (two started together: the second stops here)
            run.mkdir(parents=True, exist_ok=True)
            _hold_run(run, held)
            # (another run started with this one may have made the folder while this one made its data, and
            # even have ended there since: the second ran on unlocked, mixing its metrics and checkpoints in)
            config_mod._check_run_dir(cfg)
        if cfg.overwrite:  # the earlier run's files go, and nothing else in the folder
            _remove_run_files(run)
        _remove_temporaries(run)  # (of writes a killed run was in: a resumed one, or a start killed early)
        (run / "samples").mkdir(parents=True, exist_ok=True)
        config_mod.save(cfg, run / "config.json")

    def trained() -> dict:
        """What the steps change: the weights and the optimisers' states."""
        return {"models": {k: m.state_dict() for k, m in nets.items()},
                "optimizers": {k: o.state_dict() for k, o in optims.items()}}

    def checkpoint(step: int, name: str | None = None) -> None:
        """Atomically write the full training state; ``step_*.pt`` is collective (every rank's image
        pools and RNG states are gathered), ``best.pt`` is written by rank 0 alone with its own."""
        pool_states = [{k: p.state_dict() for k, p in pools.items()}]
        rng_states = [{"torch": torch.get_rng_state(),
                       "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}]
        if world > 1 and name is None:
            gathered = [None] * world
            dist.all_gather_object(gathered, (pool_states[0], rng_states[0]))
            pool_states, rng_states = [g[0] for g in gathered], [g[1] for g in gathered]
        if not master:
            return
        state = {"step": step, "seconds": time.time() - t0, "config": config_mod.kept(cfg), "generator_spec": spec,
                 "best": best, "best_reblur": best_reblur, "data_files": data_files,
                 "validation": val_digest, "validation_photos": photos_digest, **trained(),
                 "scaler": scaler.state_dict(), "pools": pool_states, "rng": rng_states}
        path = ckpt_dir / (name or f"step_{step:07d}.pt")
        data = io.BytesIO()  # (then written at once: torch's own file writer reports a full disk as
        torch.save(state, data)  # "enforce fail at inline_container.cc", naming neither the file nor the cause)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data.getbuffer())
        if name is None:
            _keep_last(ckpt_dir, cfg, earlier, start)

    def stop_if_diverged(step: int, values: dict[str, list[torch.Tensor]]) -> None:
        """Raise :class:`Diverged` when one of ``values`` holds a NaN or inf on any process. Every rank
        reads the same reduced flags, so all stop at this step: one stopping alone would leave the
        others waiting for it in their next all-reduce."""
        bad = torch.stack([~_finite(tensors, device) for tensors in values.values()]).float()
        if world > 1:
            dist.all_reduce(bad)
        what = [name for name, count in zip(values, bad.tolist()) if count]
        if what:
            latest = step_checkpoints(ckpt_dir)
            raise Diverged(_diverged(cfg, step, what, latest[-1] if latest else None), report=master)

    def log(record: dict) -> None:
        if master:
            # JSON has no NaN or Infinity: json.dumps wrote a diverged run's losses and scores as bare
            # NaN tokens, which strict readers (jq, JavaScript, pandas' default engine) refuse; null instead
            record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
            path = run / "metrics.jsonl"
            try:
                with open(path, "a") as fh:
                    fh.write(json.dumps(record, allow_nan=False) + "\n")
            except OSError as exc:  # (a write or flush that fails, on a full disk, names no file)
                if exc.filename is not None:
                    raise
                raise OSError(exc.errno, exc.strerror, str(path)) from None

    @torch.no_grad()
    def evaluate(step: int) -> dict:
        """Validation PSNR/SSIM of blurry input and model output (when pairs exist) and a sample grid."""
        g = nets["G"].eval()
        rows, psnr, ssim, psnr_in, ssim_in = [], [], [], [], []
        for i in range(0, len(val), 8):
            chunk = val[i:i + 8]
            blur = torch.stack([v["blur"] for v in chunk]).to(device)
            blur = _fit(blur, cfg.size_factor())
            with autocast():
                out = g(blur.contiguous(memory_format=memory_format)).float().clamp(0, 1)
            if "sharp" in chunk[0]:
                sharp = _fit(torch.stack([v["sharp"] for v in chunk]).to(device), cfg.size_factor())
                psnr += metrics.psnr(out, sharp).tolist()
                ssim += metrics.ssim(out, sharp).tolist()
                psnr_in += metrics.psnr(blur, sharp).tolist()
                ssim_in += metrics.ssim(blur, sharp).tolist()
                rows += [t for j in range(len(chunk)) for t in (blur[j], out[j], sharp[j])]
            else:
                rows += [t for j in range(len(chunk)) for t in (blur[j], out[j])]
        ncol = 3 if psnr else 2
        rows, scores = rows[: 4 * ncol], {}
        if val_photos:  # (one batch: at most 8 crops)
            photos = _fit(torch.stack([v["blur"] for v in val_photos]).to(device), cfg.size_factor())
            with autocast():
                restored, k = g(photos.contiguous(memory_format=memory_format)), nets["K"](photos)
            again = reblur(restored, k, cfg.photo_curve)
            scores["val_reblur"] = float(pixel_loss("l1", again, valid_part(photos, k.shape[-2:])))
            # rows of photo | output | output re-blurred, in the photo's frame where the kernel fits
            shown = photos.clone()
            valid_part(shown, k.shape[-2:]).copy_(again)
            restored = restored.float().clamp(0, 1)
            rows += [t for j in range(min(4, len(photos))) for t in (photos[j], restored[j], shown[j])]
        g.train()
        # (the photos' crops may be smaller or larger than the pairs': each cell is padded with white)
        h, w = max(r.shape[-2] for r in rows), max(r.shape[-1] for r in rows)
        cells = [F.pad(r, (0, w - r.shape[-1], 0, h - r.shape[-2]), value=1.0) for r in rows]
        grid = make_grid(torch.stack(cells).cpu(), nrow=ncol, padding=2, pad_value=1.0)
        with atomic_path(run / "samples" / f"step_{step:07d}.png") as tmp:
            save_image(grid, tmp, format="png")
        if not psnr:
            return {"step": step, **scores}
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        return {"step": step, **scores, "val_psnr": mean(psnr), "val_ssim": mean(ssim),
                "val_psnr_blurry": mean(psnr_in), "val_ssim_blurry": mean(ssim_in)}

    # ---- the loop
    loader = DataLoader(train_set, batch_size=cfg.batch, num_workers=cfg.workers,
                        sampler=StepSampler(start, end, cfg.batch, rank, world),
                        pin_memory=device.type == "cuda", worker_init_fn=_ignore_ctrl_c,
                        generator=torch.Generator().manual_seed(0))  # its base-seed draw must not use the global RNG
    bar = tqdm(total=end - start, initial=0, desc=f"{cfg.mode} steps {start}->{end}",
               disable=not (master and cfg.progress), dynamic_ncols=True)
    identity = cfg.lambda_identity > 0
    t0, last = time.time() - elapsed, {}  # (the run's training time, its earlier invocations' included)
    done = start
    batches = iter(loader)
    with _stop_requests(world == 1) as stop:
        try:
            for step, batch in zip(range(start, end), batches):
                blur = batch["blur"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
                sharp = batch["sharp"].to(device, non_blocking=True).contiguous(memory_format=memory_format)

                if cfg.mode != "cyclegan":
                    photo = batch["photo"].to(device, non_blocking=True).contiguous(
                        memory_format=memory_format) if "photo" in batch else None
                    with autocast():
                        o = units["gen"](blur, photo) if cfg.mode == "reblur" else {"fake_sharp": units["gen"](blur)}
                        out = o["fake_sharp"]
                        loss = pixel_loss(cfg.pixel_loss, out, sharp)
                        losses = {"loss_pixel": loss}
                        if perceptual is not None:
                            losses["loss_perceptual"] = perceptual(out.float(), sharp)
                            loss = loss + cfg.perceptual * losses["loss_perceptual"]
                        if cfg.mode == "reblur":
                            # (the pairs re-blurred through the curves their manifest records; else sRGB:
                            # the default recipe's synthetic pairs, lq/ + gt/ folders)
                            curve = tone_params(batch["crf"].to(device), batch["gamma"]) if "crf" in batch else "srgb"
                            losses.update(reblur_losses(o, blur, sharp, photo, cfg.photo_curve, curve))
                            loss = loss + losses["loss_kernel"] + cfg.lambda_reblur * losses["loss_reblur"]
                    stop_if_diverged(step + 1, {k: [v] for k, v in losses.items()})  # (before its gradients reach Adam)
                    optims["gen"].zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.grad_clip > 0:  # bounds each update: unclipped, deeper U-Nets at lr 1e-3 blew up within 100 steps
                        scaler.unscale_(optims["gen"])
                        # each network on its own (G; reblur: and K): one clip of their joint norm let the
                        # photos' gradients in G scale K's steps, which should follow the pairs alone
                        norms = {k: nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip) for k, net in nets.items()}
                        losses["grad_norm"] = norms["G"]
                    scaler.step(optims["gen"])
                else:
                    # generators: fool both discriminators, cycle back, keep identities
                    raw_units["disc"].requires_grad_(False)
                    with autocast():
                        o = units["gen"](blur, sharp, identity)
                        l1 = lambda pairs: sum(pixel_loss("l1", o[k], x) for k, x in pairs if k in o)  # noqa: E731
                        losses = {"loss_gan_G": lsgan_loss(nets["D_sharp"](o["fake_sharp"]), True),
                                  "loss_gan_F": lsgan_loss(nets["D_blur"](o["fake_blur"]), True),
                                  "loss_cycle": l1((("rec_blur", blur), ("rec_sharp", sharp)))}
                        loss = losses["loss_gan_G"] + losses["loss_gan_F"] + cfg.lambda_cycle * losses["loss_cycle"]
                        if identity:
                            losses["loss_identity"] = l1((("idt_sharp", sharp), ("idt_blur", blur)))
                            loss = loss + cfg.lambda_cycle * cfg.lambda_identity * losses["loss_identity"]
                        if "kernel" in o:  # F's kernels centred like the photos' (off-centre blur would teach G to shift)
                            losses["loss_centre"] = kernel_centroid(o["kernel"]).square().sum(-1).mean()
                            loss = loss + losses["loss_centre"]
                    stop_if_diverged(step + 1, {k: [v] for k, v in losses.items()})
                    optims["gen"].zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optims["gen"])
                    # discriminators: real vs. pooled past fakes
                    raw_units["disc"].requires_grad_(True)
                    fake_sharp = pools["sharp"].query(o["fake_sharp"].float())
                    fake_blur = pools["blur"].query(o["fake_blur"].float())
                    with autocast():
                        loss_d = units["disc"](sharp, fake_sharp, blur, fake_blur)
                    losses["loss_D"] = loss_d
                    stop_if_diverged(step + 1, {"loss_D": [loss_d]})
                    optims["disc"].zero_grad(set_to_none=True)
                    scaler.scale(loss_d).backward()
                    scaler.step(optims["disc"])
                scaler.update()
                lr = scheds["gen"].get_last_lr()[0]  # the rate this update used (logged with its losses)
                for s in scheds.values():
                    s.step()
                done = step + 1
                bar.update(1)

                # The run's last step logs and validates off the schedule, but not a --stop-at end before
                # it: a run split there and resumed would log a record and validate a model that an
                # uninterrupted run does not, and that model could become its best.pt.
                final = done == cfg.steps
                validate = (done % cfg.eval_every == 0 or final) and bool(val)
                save = cfg.checkpoint_due(done) or done == end or stop  # (stop: SIGINT/SIGTERM came in this step)
                if validate or save:  # (weights can also go NaN with finite losses, from a gradient that overflowed)
                    stop_if_diverged(done, {"the weights or Adam's moments": _floats(trained())})
                if done % cfg.log_every == 0 or final:
                    last = {k: float(v.detach()) for k, v in losses.items()}
                    if world > 1:  # the whole batch's: the mean of the ranks' (reduced at logged steps alone)
                        last = _rank_mean(last, device, world)
                    bar.set_postfix({k: f"{v:.4f}" for k, v in last.items()})
                    log({"step": done, "lr": lr, **last,
                         "seconds": round(time.time() - t0, 2)})
                if master and validate:
                    record = evaluate(done)
                    if len(record) > 1:  # (photos without sharp twins: a sample grid, no scores to log)
                        log(record)
                    if record.get("val_psnr", -float("inf")) > best:
                        best = record["val_psnr"]
                        checkpoint(done, "best.pt")  # master only: pools of rank 0 alone
                    # reblur: the model whose output re-blurs best into the photos, a choice made on them, not
                    # on synthetic pairs (on Levin's photos it picked a better model than best.pt; see README)
                    if record.get("val_reblur", float("inf")) < best_reblur:
                        best_reblur = record["val_reblur"]
                        checkpoint(done, "best_reblur.pt")
                if save:
                    checkpoint(done)
                if stop:
                    break
        except (RuntimeError, ConnectionError, EOFError):
            # A SIGTERM sent to the whole process group also ends --workers processes mid-step: the
            # DataLoader reports a killed worker (RuntimeError), or, when one died while handing over
            # a batch's shared memory, a reset or ended connection (each seen in the test suite under load).
            if stop:
                raise (Terminated() if stop[0] == signal.SIGTERM else KeyboardInterrupt()) from None
            raise
        finally:
            _close(batches)
            bar.close()  # (before an error's line, which would otherwise follow the bar's on one line)
    if stop and done < end:  # SIGINT/SIGTERM: the step it came in was finished and checkpointed
        raise Stopped(stop[0], f"stopped at step {done} of {cfg.steps} ({signal.Signals(stop[0]).name}); "
                               f"{ckpt_dir / f'step_{done:07d}.pt'} written: continue with --resume {run}")

    result = {"step": end}
    if master and val:
        # A --stop-at end is validated only on the schedule, so the last scores may be of an earlier
        # step: they say so, and the result's "step" stays the run's.
        scores = _last_eval(run / "metrics.jsonl")
        result.update({k: v for k, v in scores.items() if k != "step"})
        if "val_psnr" in result:
            at = "" if scores["step"] == end else f" at step {scores['step']}"
            before, after = result["val_psnr_blurry"], result["val_psnr"]
            gain = f" ({after - before:+.2f} dB)" if math.isfinite(after - before) else ""
            print(f"validation PSNR on {len(val)} held-out pair{'s' * (len(val) != 1)}{at}: blurry input "
                  f"{_db(before)}, model output {_db(after)}{gain}; SSIM {result['val_ssim_blurry']:.4f} -> {result['val_ssim']:.4f}")
            if not (math.isfinite(before) and math.isfinite(after)):
                print("(a PSNR that is not finite, null in metrics.jsonl, is infinite where the images equal their "
                      "sharp twins, as in pairs made without blur, or NaN where the model's output is)")
    if master:  # (--val-size 0 too: a run without validation ended without naming its folder)
        print(f"run folder: {run}")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _fit(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Crop ``(B, C, H, W)`` to sides that are multiples of ``factor`` (validation crops of odd images)."""
    h, w = x.shape[-2] // factor * factor, x.shape[-1] // factor * factor
    return x[..., :h, :w]


def _report_skipped(option: str, skipped: list[str], kept: int, what: str) -> None:
    """Say on stderr which inputs of ``option`` were left out and why (the first 10), if any."""
    if skipped:
        print(f"{option}: skipped {len(skipped)} of {len(skipped) + kept} {what}:\n  " + "\n  ".join(skipped[:10])
              + (f"\n  and {len(skipped) - 10} more" if len(skipped) > 10 else ""), file=sys.stderr)


def _remove_run_files(run: Path) -> None:
    """``--overwrite``: delete the earlier run's files (:data:`unpaired.config.RUN_FILES`), and a
    ``checkpoints/`` or ``samples/`` folder only if that leaves it empty."""
    for pattern in config_mod.RUN_FILES:
        for path in run.glob(pattern):
            # (step_ and digits alone: a copy such as step_0000500_good.pt is the user's, which resume and
            # --keep-last leave alone too, and the step_*.pt pattern removed it)
            stem = Path(temporary_target(path.name) or path.name).stem
            if not stem.startswith("step_") or stem.removeprefix("step_").isdigit():
                path.unlink()
    for folder in ("checkpoints", "samples"):
        with contextlib.suppress(OSError):  # (kept when it holds other files)
            (run / folder).rmdir()


def _keep_last(ckpt_dir: Path, cfg: config_mod.TrainConfig, earlier: config_mod.TrainConfig | None = None,
               start: int = 0) -> None:
    """Delete all but the last ``--keep-last`` ``step_*.pt`` of the schedule (every ``--ckpt-every``
    steps, and the last step). One written off it, at a ``--stop-at`` end or a stop, is kept while it
    is the latest (a resume needs it) and goes once a later one is written: a run stopped and resumed
    then keeps the checkpoints an uninterrupted run keeps. Of a resumed run (``start``: the step it resumed
    at, ``earlier``: its options before), the checkpoints before ``start`` are on the schedules that wrote
    them, and the one at ``start`` is off only if off its schedule then: judged by another ``--ckpt-every``
    or ``--steps`` given with ``--resume``, they were all removed as off the new one."""
    def due(step: int) -> bool:
        if earlier is None or step > start:
            return cfg.checkpoint_due(step)
        return step < start or earlier.checkpoint_due(step) or cfg.checkpoint_due(step)
    found = step_checkpoints(ckpt_dir)
    scheduled = [p for p in found if due(int(p.stem.removeprefix("step_")))]
    for old in found[:-1]:
        if old not in scheduled[-cfg.keep_last:]:
            old.unlink()


def _records(path: Path) -> list[tuple[dict, str]]:
    """The records of ``metrics.jsonl`` with their lines, less a line cut short (a run killed, or a
    disk that filled, while appending it: always after the last checkpoint, so it is redone on resume)."""
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append((record, line))
    return records


def _seconds_before(state: dict, metrics: Path, step: int) -> float:
    """The training time of a run before the ``step`` it resumes at: its checkpoint's ``"seconds"``; of a
    checkpoint older than them, the last ``seconds`` logged up to that step (what came after that line is
    lost), or 0 when none was."""
    if "seconds" in state:
        return state["seconds"]
    logged = [r["seconds"] for r, _ in (_records(metrics) if metrics.is_file() else [])
              if r["step"] <= step and isinstance(r.get("seconds"), (int, float))]
    return float(logged[-1]) if logged else 0.0


def _remove_temporaries(run: Path) -> None:
    """Delete the temporaries of writes a killed run was in (:data:`unpaired.config.RUN_TEMPORARIES`)."""
    for pattern in config_mod.RUN_TEMPORARIES:
        for stale in run.glob(pattern):
            stale.unlink(missing_ok=True)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records an interrupted run wrote after its last checkpoint (they will be redone), and a
    line it left cut short."""
    if not path.is_file():
        return
    keep = [line for record, line in _records(path) if record["step"] <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))


def _db(psnr: float) -> str:
    """A PSNR for the summary line: "not finite" for a score logged as null (infinite, or NaN)."""
    return f"{psnr:.2f} dB" if math.isfinite(psnr) else "not finite"


def _last_eval(path: Path) -> dict:
    if not path.is_file():  # (no step logged or validated yet)
        return {}
    records = [record for record, _ in _records(path)]
    evals = [r for r in records if "val_psnr" in r]
    # (a score logged as null, not finite, is NaN again here: the summary line formats it as a number)
    return {k: float("nan") if v is None else v for k, v in evals[-1].items()} if evals else {}


def cli(argv: list[str] | None = None) -> None:
    """Command-line entry: bad options and inputs end with one ``error: ...`` line and exit status 2,
    a disk that takes no more writes (full, read-only), a file this user may not access or a run that
    diverged with one line and status 1; SIGINT (Ctrl-C) or SIGTERM with one line and status 130 or 143, after the step
    under way is finished and checkpointed; no traceback."""
    try:
        with sigterm_interrupts():  # (a kill before the first step ends as Ctrl-C does)
            main(argv)
    except Stopped as exc:  # the step under way was finished and checkpointed
        print(exc, file=sys.stderr)
        raise SystemExit(exit_code(exc)) from None
    except Diverged as exc:  # nothing of the step that diverged was saved
        if exc.report:  # (rank 0 alone: every rank stops at that step)
            print(f"error: {exc}", file=sys.stderr)
        if dist.is_initialized():  # the others wait for that line: the first process to exit has torchrun end the rest
            dist.barrier()
            dist.destroy_process_group()
        raise SystemExit(1) from None
    except KeyboardInterrupt as exc:  # before the first step (making data), or a second Ctrl-C
        print("interrupted; the run folder keeps its last checkpoint (continue with --resume, if one was "
              "written)", file=sys.stderr)
        raise SystemExit(exit_code(exc)) from None
    except (config_mod.ConfigError, FileNotFoundError, ValueError) as exc:
        config_mod.refuse(_unwrap_worker_error(exc))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            print(f"error: cannot write {exc.filename} ({exc.strerror}); make room there (or make it writable), "
                  "then continue the run with --resume", file=sys.stderr)
        elif exc.errno in (errno.EACCES, errno.EPERM):  # an input (photo folder, checkpoint) as well as an output
            print(f"error: {exc.filename}: {exc.strerror}; give this user access to it, then run again "
                  "(with --resume if the run had begun)", file=sys.stderr)
        else:
            raise
        raise SystemExit(1) from None


def _unwrap_worker_error(exc: BaseException) -> BaseException | str:
    """The message of an error raised in a DataLoader worker (``--workers N``), which the DataLoader
    re-raises as ``Caught ImageError in DataLoader worker process 0.`` followed by the worker's
    traceback: what ``--workers 0`` would have said, so the error stays one line. Other errors as they are."""
    text = str(exc)
    if not (text.startswith("Caught ") and " in DataLoader worker process " in text.partition("\n")[0]):
        return exc
    cls = type(exc)  # the traceback ends with "module.Name: message" (builtins: "Name: message")
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    at = text.rfind(f"\n{name}: ")
    return text[at + len(name) + 3:].rstrip("\n") if at >= 0 else exc


if __name__ == "__main__":
    cli()
