"""Networks: the reference CycleGAN ResNet generator, the 70x70 PatchGAN, a small U-Net, and
:class:`KernelBlurGenerator`, a CycleGAN F that can only blur (highlight gain and noise learned; kernels
from :class:`LearnedKernels`, a learned distribution, or :class:`ShakeKernels`, a recipe's camera shake
of learned size); and for ``--mode reblur``, :class:`KernelPredictor` (the blur kernel of a photo,
from the photo) and :func:`reblur`, the image formation its loss applies.

All generators take and return ``(B, 3, H, W)`` images in ``[0, 1]`` (display-referred sRGB) on the
input's device, float32 like their weights (float64 inputs are refused by torch); internally they work in ``[-1, 1]`` like the reference code. With ``residual=True``
a generator predicts a correction added to its input (sharp = blurry + residual), which starts as
the identity and so trains much faster for deblurring; its output is not clamped during training
(clamping would stop gradients), :func:`deblur`-style inference clamps to ``[0, 1]``.

Sides must be multiples of :func:`size_factor` (4 for the ResNet generator, ``2**depth`` for the U-Net),
and at least :func:`min_side` of it (twice it); other sides raise ValueError.
Weights are drawn from N(0, 0.02) by :func:`init_weights` with a seeded generator, never the global RNG,
except the U-Net's (no normalisation layers), which get He-scaled weights so that its signal neither
vanishes nor explodes with depth (and the kernel MLP's, He-scaled so its kernels vary with the code).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from blursynth.blur import blur
from blursynth.sensor import (CRFS, SensorModel, SensorParams, from_linear, linear_to_srgb, srgb_to_linear,
                              to_linear)


class ResnetBlock(nn.Module):
    """Two reflect-padded 3x3 convolutions with instance norm, added to the input."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=True), nn.InstanceNorm2d(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=True), nn.InstanceNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Zhu et al. (ICCV 2017) generator: c7s1-ngf, two stride-2 downs, ``n_blocks`` residual blocks,
    two transposed-convolution ups, c7s1-3. Instance norm without affine parameters, reflect padding.

    Input/output ``(B, 3, H, W)`` in ``[0, 1]``, ``H, W`` multiples of 4 and at least 8 (instance norm
    needs more than one value per channel at the 1/4 scale).
    """

    def __init__(self, ngf: int = 64, n_blocks: int = 9, residual: bool = False, channels: int = 3):
        super().__init__()
        self.residual = residual
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7, bias=True), nn.InstanceNorm2d(ngf),
                  nn.ReLU(True)]
        for i in range(2):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=True), nn.InstanceNorm2d(2 * c),
                       nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=True),
                       nn.InstanceNorm2d(c // 2), nn.ReLU(True)]
        head = nn.Conv2d(ngf, channels, 7)
        head.zero_init = residual  # a residual generator starts as the identity
        layers += [nn.ReflectionPad2d(3), head]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(x, 4)
        y = self.net(x * 2 - 1)
        # residual: the head's output is a correction in [0, 1] units; otherwise tanh like the reference
        return x + y if self.residual else (torch.tanh(y) + 1) / 2


class UNet(nn.Module):
    """A small U-Net for paired training: ``depth`` levels of two 3x3 convs, average-pool downs,
    bilinear ups with skip concatenation. Input/output ``(B, 3, H, W)`` in ``[0, 1]``, sides multiples
    of ``2**depth`` and at least ``2**(depth + 1)`` (the reflect padding of the coarsest level)."""

    def __init__(self, ngf: int = 32, depth: int = 3, residual: bool = True, channels: int = 3):
        super().__init__()
        self.residual, self.depth = residual, depth
        widths = [ngf * 2 ** min(i, 3) for i in range(depth + 1)]
        self.downs = nn.ModuleList()
        cin = channels
        for w in widths:
            self.downs.append(_double_conv(cin, w))
            cin = w
        self.ups = nn.ModuleList(_double_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], channels, 1)
        self.head.zero_init = residual  # a residual generator starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(x, 2 ** self.depth)
        h, skips = x * 2 - 1, []
        for i, down in enumerate(self.downs):
            h = down(h if i == 0 else F.avg_pool2d(h, 2))
            skips.append(h)
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = up(torch.cat([h, skip], dim=1))
        y = self.head(h)
        return x + y if self.residual else (torch.tanh(y) + 1) / 2


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    convs = [nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect"),
             nn.Conv2d(cout, cout, 3, padding=1, padding_mode="reflect")]
    for conv in convs:
        # Without normalisation, N(0, 0.02) shrinks the signal ~4x per layer (std 0.02 * sqrt(9 * 16) ~ 0.24),
        # so a deep U-Net starts with vanishing gradients and trains very slowly: He scaling keeps it at 1.
        conv.he_gain = nn.init.calculate_gain("leaky_relu", 0.2)
    return nn.Sequential(convs[0], nn.LeakyReLU(0.2, True), convs[1], nn.LeakyReLU(0.2, True))


def gaussian_logits(size: int, sigma: float = 2.0) -> torch.Tensor:
    """Logits ``(size * size,)`` float32 whose softmax is a round Gaussian kernel of ``sigma`` px centred on
    tap ``(size // 2, size // 2)``: the prior that learned kernels start from (so blur shows from the
    first step)."""
    r = torch.arange(size) - size // 2
    return -(r[:, None] ** 2 + r[None] ** 2).flatten().float() / (2 * sigma ** 2)


class LearnedKernels(nn.Module):
    """Kernels from a learned distribution: ``z ~ N(0, I)`` (``z_dim``, torch's global RNG) goes
    through a small MLP to ``size x size`` logits added to a Gaussian prior of 2 px (so G sees blur
    from the first step); their softmax is the kernel. ``forward(n, device)`` -> ``(n, size, size)``
    float32 on ``device``, each non-negative and summing to 1."""

    def __init__(self, size: int = 21, z_dim: int = 16, width: int = 128):
        super().__init__()
        self.size, self.z_dim = size, z_dim
        self.mlp = nn.Sequential(nn.Linear(z_dim, width), nn.ReLU(True), nn.Linear(width, size * size))
        self.mlp[0].he_gain, self.mlp[2].he_gain = 2 ** 0.5, 1.0  # kernels vary with z from the start
        self.register_buffer("prior", gaussian_logits(size))

    def forward(self, n: int, device) -> torch.Tensor:
        logits = self.prior + self.mlp(torch.randn(n, self.z_dim, device=device))
        return logits.softmax(-1).view(n, self.size, self.size)


class ShakeKernels(nn.Module):
    """Camera-shake kernels: ``bank`` principal-point paths of a blursynth recipe (the same draws
    :func:`blursynth.pairs.make_pairs` makes for items ``0 .. bank-1`` at ``seed``), one picked per
    image from torch's global RNG, scaled by one learned factor and rasterised differentiably
    (bilinear splatting; paths larger than the kernel shrink to fit). The factor corrects the
    recipe's blur size to the photos' (it starts at 1 and is stored as ``log10 = 10 * log_scale``
    so Adam's steps of about ``lr`` move it). ``forward(n, device)`` -> ``(n, size, size)`` float32 on
    ``device``."""

    def __init__(self, size: int = 41, recipe: str = "default", bank: int = 2048, seed: int = 0):
        super().__init__()
        from blursynth.pairs import shake_paths
        from blursynth.recipe import load_recipe
        self.size = size
        paths, t = shake_paths(load_recipe(recipe), range(bank), seed)
        # remade from (recipe, bank, seed) by the constructor, so not saved in checkpoints
        self.register_buffer("paths", paths.float(), persistent=False)
        self.register_buffer("t", t.float(), persistent=False)
        self.log_scale = nn.Parameter(torch.tensor(0.0))

    def scale(self) -> torch.Tensor:
        return 10 ** (10 * self.log_scale)

    def forward(self, n: int, device) -> torch.Tensor:
        from blursynth.kernel import rasterize
        i = torch.randint(len(self.paths), (n,), device=device).to(self.paths.device)
        return rasterize(self.paths[i] * self.scale(), self.size, self.t[i], fit="scale").to(device)


class KernelBlurGenerator(nn.Module):
    """A sharp -> blurry generator that can only blur, for CycleGAN's F:
    ``F(b) = srgb(clip(k * boost(linear(b)) + n))``, the image-formation model of blursynth with a
    kernel ``k`` drawn per image by ``sampler`` (``size x size``: :class:`LearnedKernels` by default,
    or :class:`ShakeKernels`), a learned highlight boost and sensor noise ``n`` of learned level.

    Why: a free network F can hide the sharp image in faint patterns of its "blurry" output for G to
    decode (the steganography of Chu et al. 2017), so the sharp -> blurry -> sharp cycle never teaches
    G to deblur. A kernel that is non-negative and sums to 1 hides nothing and changes no brightness:
    G must invert a real blur, and F's discriminator tunes the kernels to look like the photos' blur.

    The blur runs in linear light (sRGB decoded, blurred, re-encoded: blurring display values darkens
    highlights and softens edges differently), after the saturated pixels (linear >= the sensor
    model's highlight threshold, 0.98) get a learned highlight gain, then it is clipped at white: as
    in blursynth's sensor model (RSBlur), a clipped light source smears into a saturated streak, not a
    dim one, and the blurred photo comes out brighter than the sharp one. The noise is added to the
    blurred linear values ``y`` before the clip, as a sensor does (blursynth's Poisson-Gaussian model):
    std ``sqrt(s_a^2 y + s_b^2)``, so the tone curve then makes it stronger in the shadows, as in
    photos. It starts at the middle of blursynth's default sensor model (shot-noise variance
    ``a = s_a^2`` about 1.1e-3, read-noise variance ``b = s_b^2`` on Brooks et al.'s line). Scalars
    are stored scaled (``log10 s = 10 * noise``, gain ``softplus(10 * highlight) * 0.5 / ln 2``) so
    that Adam's steps of about ``lr`` move them.

    Input ``(B, 3, H, W)`` sRGB in ``[0, 1]`` (clamped; any float dtype); returns the blurred image
    (reflect boundary, same size, float32 in ``[0, 1]``, on the input's device; computed in float32
    under autocast too) and the kernels ``(B, size, size)``. ``size`` (of the default sampler, or the
    sampler's) odd, >= 1.
    """

    def __init__(self, size: int = 21, sampler: nn.Module | None = None):
        super().__init__()
        size = sampler.size if sampler is not None else size  # ``size`` only shapes the default sampler
        if size < 1 or size % 2 == 0:
            raise ValueError(f"kernel size must be odd and >= 1, got {size}")
        self.sampler = sampler if sampler is not None else LearnedKernels(size)
        self.noise = nn.Parameter(torch.tensor([-0.148, -0.296]))  # s_a = 0.033, s_b = 0.0011 (linear units)
        self.highlight = nn.Parameter(torch.tensor(0.0))  # gain 0.5 (blursynth's recipes draw 0.25-1.75)

    def kernels(self, n: int, device) -> torch.Tensor:
        """``n`` kernels ``(n, size, size)`` drawn from the sampler."""
        return self.sampler(n, device)

    def noise_std(self) -> torch.Tensor:
        """``(s_a, s_b)``, linear units: noise std per unit of signal (squared: variance ``s_a^2 y``) and floor."""
        return 10 ** (10 * self.noise)

    def highlight_gain(self) -> torch.Tensor:
        """Linear value added to saturated pixels before the blur."""
        return F.softplus(10 * self.highlight) * (0.5 / math.log(2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The formation model runs in float32 under mixed precision too: autocast ran the kernel MLP and
        # the direct blur of small kernels in bfloat16, whose steps (2**-9 relative) exceed the read noise.
        with torch.autocast(x.device.type, enabled=False):
            return self._form(x)

    def _form(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.kernels(x.shape[0], x.device)
        linear = srgb_to_linear(x.float().clamp(0, 1))
        saturated = linear >= SensorModel.highlight_threshold  # the sensor model's own threshold (0.98)
        linear = linear + self.highlight_gain() * saturated.to(linear.dtype)
        y = blur(linear, k, "reflect")
        s_a, s_b = self.noise_std()
        noisy = y + (s_a ** 2 * y.clamp(min=0) + s_b ** 2).sqrt() * torch.randn_like(y)
        return linear_to_srgb(noisy.clamp(0, 1)), k


class KernelPredictor(nn.Module):
    """The blur kernel of a photo, predicted from the photo: for ``--mode reblur``.

    Four 3x3 convolutions (three of stride 2; ``width`` to ``4 * width`` channels, leaky ReLU) and a
    mean over the whole image, then a linear layer to ``size x size`` logits, added to a Gaussian
    prior of 2 px as :class:`LearnedKernels` does; their softmax is the kernel. The mean makes it one
    kernel per image (uniform blur), from images of any size (the padded convolutions leave >= 1 px).

    Input ``(B, 3, H, W)`` sRGB in ``[0, 1]``; returns ``(B, size, size)`` kernels, float32 (the softmax
    runs in float32 under autocast too), non-negative, each summing to 1, on the input's device.
    ``size`` odd, >= 1.
    """

    def __init__(self, size: int = 21, width: int = 32, channels: int = 3):
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ValueError(f"kernel size must be odd and >= 1, got {size}")
        self.size = size
        widths = [width, width, 2 * width, 4 * width]
        layers, cin = [], channels
        for i, w in enumerate(widths):
            conv = nn.Conv2d(cin, w, 3, stride=1 if i == 0 else 2, padding=1)
            conv.he_gain = nn.init.calculate_gain("leaky_relu", 0.2)  # (no normalisation: keep the signal at 1)
            layers += [conv, nn.LeakyReLU(0.2, True)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, size * size)
        self.register_buffer("prior", gaussian_logits(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"kernel predictor input must be (B, C, H, W); got {tuple(x.shape)}")
        logits = self.head(self.features(x * 2 - 1).mean((-2, -1)))
        return (self.prior + logits.float()).softmax(-1).view(-1, self.size, self.size)


def tone_params(crf: torch.Tensor, gamma: torch.Tensor) -> SensorParams:
    """Sensor parameters ``(B,)`` that apply tone curve ``crf[i]`` (an index into
    :data:`blursynth.sensor.CRFS`) with exponent ``gamma[i]`` (used by ``"gamma"`` only) to image
    ``i``, every other step off: :func:`reblur`'s per-image curves, on ``crf``'s device."""
    return replace(SensorModel.off().sample(crf.shape[0], 0, device=crf.device), crf=crf,
                   gamma=gamma.to(crf.device, torch.float32))


PHOTO_CURVES = "srgb, linear, brooks or gamma:G (G from 0.1 to 10)"  # what --photo-curve takes


def curve_by_name(name: str) -> tuple[str, float]:
    """``(curve, exponent)`` for a tone curve named as ``--photo-curve`` takes it: ``"srgb"``, ``"linear"``,
    ``"brooks"`` (:data:`blursynth.sensor.CRFS`; the exponent is then 1, unused) or ``"gamma:G"``, the
    display value ``x ** (1 / G)`` of linear ``x``, as the sensor's ``"gamma"`` curve with that exponent.
    Raises ``ValueError`` for anything else."""
    curve, colon, exponent = name.partition(":") if isinstance(name, str) else ("", "", "")
    if curve in CRFS and curve != "gamma" and not colon:
        return curve, 1.0
    if curve == "gamma":
        try:
            gamma = float(exponent)
        except ValueError:
            gamma = math.nan
        if 0.1 <= gamma <= 10:  # (the sensor's range for its gamma curve; NaN fails it)
            return curve, gamma
    raise ValueError(f"curve must be {PHOTO_CURVES}; got {name!r}")


def reblur(sharp: torch.Tensor, kernel: torch.Tensor, curve: str | SensorParams = "srgb") -> torch.Tensor:
    """The image formation of ``--mode reblur``: ``curve(clip(k * curve^-1(sharp)))`` with one kernel per
    image, blurred in linear light as blursynth does (no noise, no highlight boost: the loss compares
    means). ``curve``: a name :func:`curve_by_name` reads (``"srgb"`` for camera output, ``"linear"``
    for images whose values are linear already, ``clip(k * sharp)``), or one per image, as
    :func:`tone_params` (a written dataset's pairs: :func:`~unpaired.data.tone_of`).
    ``sharp`` ``(B, 3, H, W)`` in ``[0, 1]`` (clamped), ``kernel`` ``(B, h, w)``; returns the "valid" part
    ``(B, 3, H - h + 1, W - w + 1)``, float32 (autocast off), where the whole kernel lies inside the
    image: a photo's pixel nearer its edge was blurred from scene the crop does not hold."""
    if isinstance(curve, str):
        name, gamma = curve_by_name(curve)
        n = sharp.shape[0]
        curve = tone_params(torch.full((n,), CRFS.index(name), device=sharp.device), torch.full((n,), gamma))
    with torch.autocast(sharp.device.type, enabled=False):
        x = sharp.float().clamp(0, 1)
        return from_linear(blur(to_linear(x, curve), kernel.float(), "valid").clamp(0, 1), curve)


def valid_part(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The pixels of ``image (..., H, W)`` that :func:`reblur` with an ``h x w`` kernel returns (kernel
    centred at ``(h // 2, w // 2)``): rows ``h - 1 - h // 2`` to ``H - h // 2``, likewise columns."""
    (hh, ww), (h, w) = image.shape[-2:], size
    top, left = h - 1 - h // 2, w - 1 - w // 2
    return image[..., top:hh - h // 2, left:ww - w // 2]


def kernel_centroid(k: torch.Tensor) -> torch.Tensor:
    """Offset ``(..., 2)`` (rows, columns; pixels) of each kernel's centre of mass from its centre tap
    ``(h // 2, w // 2)``, for kernels ``(..., h, w)`` summing to 1 (the mass is not normalised)."""
    h, w = k.shape[-2:]
    r = torch.arange(h, device=k.device, dtype=k.dtype) - h // 2
    c = torch.arange(w, device=k.device, dtype=k.dtype) - w // 2
    return torch.stack([(k.sum(-1) * r).sum(-1), (k.sum(-2) * c).sum(-1)], -1)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): with ``n_layers=3`` each output score sees a 70x70 patch.

    Input ``(B, 3, H, W)`` in ``[0, 1]``, float32; output ``(B, 1, H', W')`` raw scores (LSGAN: real -> 1),
    ``H' = H // 2**n_layers - 2`` (``H // 8 - 2`` with ``n_layers=3``), sides of at least
    :func:`discriminator_min_side` (24 px with ``n_layers=3``).
    """

    def __init__(self, ndf: int = 64, n_layers: int = 3, channels: int = 3):
        super().__init__()
        layers = [nn.Conv2d(channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=True),
                       nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def _check_size(x: torch.Tensor, factor: int) -> None:
    # (a side below min_side failed inside the network, in torch's instance norm or reflect padding)
    if x.ndim != 4 or x.shape[-1] % factor or x.shape[-2] % factor or min(x.shape[-2:]) < min_side(factor):
        raise ValueError(f"generator input must be (B, C, H, W) with H, W multiples of {factor} and at least "
                         f"{min_side(factor)}; got {tuple(x.shape)} (pad the image, e.g. with "
                         "unpaired.deblur.deblur_image)")


def init_weights(net: nn.Module, seed: int, std: float = 0.02) -> nn.Module:
    """Reference initialisation: conv (and linear) weights ~ N(0, std), biases 0, from a generator
    seeded by ``seed``.

    Output layers marked ``zero_init`` (the heads of residual generators) start at exactly 0, so the
    generator starts as the identity and the first updates already improve on the blurry input. Layers
    marked ``he_gain`` (those of the U-Net, which has no normalisation, and of the kernel MLP) use
    ``std = he_gain / sqrt(fan_in)`` instead of ``std`` (He et al. 2015), still from the seeded generator."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight[:, 0].numel() if isinstance(m, nn.ConvTranspose2d) else m.weight[0].numel()
                scale = m.he_gain / fan_in ** 0.5 if hasattr(m, "he_gain") else std
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * scale)
                if getattr(m, "zero_init", False):
                    m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
    return net


def size_factor(spec: dict) -> int:
    """Sides a generator built from ``spec`` accepts must be multiples of this (any kind but ``"unet"``
    counts as the ResNet: 4)."""
    return 2 ** spec.get("depth", 3) if spec["kind"] == "unet" else 4


def min_side(factor: int) -> int:
    """The smallest image side a generator of size factor ``factor`` (:func:`size_factor`) takes: 2 px
    at its coarsest scale, which the U-Net's reflect padding and the ResNet's instance norm need
    (smaller inputs fail inside the network, in a traceback)."""
    return 2 * factor


def discriminator_min_side(n_layers: int) -> int:
    """The smallest image side a :class:`PatchDiscriminator` of ``n_layers`` takes: ``3 * 2**n_layers``.
    Its ``n_layers`` stride-2 convolutions halve the side (rounding down), then two 4x4 stride-1
    ones take 1 px each: at 3 px they leave 2x2 for the last instance norm and one score; at
    2 px the instance norm gets one value per channel and fails (in a traceback at the first step)."""
    return 3 * 2 ** n_layers


def build_generator(spec: dict, seed: int | None = None) -> nn.Module:
    """Generator from a spec dict (stored in checkpoints so inference can rebuild it):
    ``{"kind": "resnet", "ngf", "n_blocks", "residual"}`` or ``{"kind": "unet", "ngf", "depth", "residual"}``
    (on the CPU; weights by :func:`init_weights` when ``seed`` is given). Another kind raises ValueError,
    another key TypeError."""
    spec = dict(spec)
    kind = spec.pop("kind")
    if kind == "resnet":
        net = ResnetGenerator(**spec)
    elif kind == "unet":
        net = UNet(**spec)
    else:
        raise ValueError(f"unknown generator kind {kind!r}; expected 'resnet' or 'unet'")
    return net if seed is None else init_weights(net, seed)


def generator_spec(cfg) -> dict:
    """The generator spec of a :class:`~unpaired.config.TrainConfig`."""
    if cfg.generator == "resnet":
        return {"kind": "resnet", "ngf": cfg.ngf, "n_blocks": cfg.n_blocks, "residual": cfg.residual}
    return {"kind": "unet", "ngf": cfg.ngf, "depth": cfg.unet_depth, "residual": cfg.residual}
