"""Networks: the reference CycleGAN ResNet generator, the 70x70 PatchGAN, and a small U-Net.

All generators take and return ``(B, 3, H, W)`` images in ``[0, 1]`` (display-referred sRGB) on the
input's device; internally they work in ``[-1, 1]`` like the reference code. With ``residual=True``
a generator predicts a correction added to its input (sharp = blurry + residual), which starts as
the identity and so trains much faster for deblurring; its output is not clamped during training
(clamping would stop gradients), :func:`deblur`-style inference clamps to ``[0, 1]``.

Sides must be multiples of :func:`size_factor` (4 for the ResNet generator, ``2**depth`` for the U-Net).
Weights are drawn from N(0, 0.02) by :func:`init_weights` with a seeded generator, never the global RNG,
except the U-Net's (no normalisation layers), which get He-scaled weights so that its signal neither
vanishes nor explodes with depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    Input/output ``(B, 3, H, W)`` in ``[0, 1]``, ``H, W`` multiples of 4.
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
    of ``2**depth``."""

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


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): with ``n_layers=3`` each output score sees a 70x70 patch.

    Input ``(B, 3, H, W)`` in ``[0, 1]``; output ``(B, 1, H', W')`` raw scores (LSGAN: real -> 1).
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
    if x.ndim != 4 or x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"generator input must be (B, C, H, W) with H, W multiples of {factor}; "
                         f"got {tuple(x.shape)} (pad the image, e.g. with unpaired.deblur.deblur_image)")


def init_weights(net: nn.Module, seed: int, std: float = 0.02) -> nn.Module:
    """Reference initialisation: conv weights ~ N(0, std), biases 0, from a generator seeded by ``seed``.

    Output layers marked ``zero_init`` (the heads of residual generators) start at exactly 0, so the
    generator starts as the identity and the first updates already improve on the blurry input. Layers
    marked ``he_gain`` (those of the U-Net, which has no normalisation) use ``std = he_gain / sqrt(fan_in)``
    instead of ``std`` (He et al. 2015), still from the seeded generator."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.weight[:, 0].numel()
                scale = m.he_gain / fan_in ** 0.5 if hasattr(m, "he_gain") else std
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * scale)
                if getattr(m, "zero_init", False):
                    m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
    return net


def size_factor(spec: dict) -> int:
    """Sides a generator built from ``spec`` accepts must be multiples of this."""
    return 2 ** spec.get("depth", 3) if spec["kind"] == "unet" else 4


def build_generator(spec: dict, seed: int | None = None) -> nn.Module:
    """Generator from a spec dict (stored in checkpoints so inference can rebuild it):
    ``{"kind": "resnet", "ngf", "n_blocks", "residual"}`` or ``{"kind": "unet", "ngf", "depth", "residual"}``."""
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
