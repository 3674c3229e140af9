"""Losses of the trainers: LSGAN, cycle/identity L1, L1/Charbonnier, VGG16 perceptual, re-blur, and the image pool.

Images are ``(B, 3, H, W)`` in ``[0, 1]`` on any device, ``pred`` and ``target`` of one shape (not
checked: torch broadcasts or refuses a mismatch); every loss is computed in float32 and returns a float32 scalar
tensor on the input's device. The image pool draws through :mod:`blursynth.rng` with its own query counter, so its
choices are a pure function of (seed, how many batches it has seen) and survive a resume exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from blursynth import rng
from blursynth.io import first_line
from blursynth.sensor import SensorParams

from .models import reblur, valid_part

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_ADVICE = (f"Download torchvision's VGG16 weights from {VGG16_URL} on a machine with internet access, "
                "copy the file here and pass its path.")


def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017): mean of (score - 1)^2 for real, score^2 for fake, over
    ``scores`` of any shape (NaN for none)."""
    target = torch.ones_like(scores) if real else torch.zeros_like(scores)
    return F.mse_loss(scores.float(), target.float())


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of sqrt((pred - target)^2 + eps^2): L1 that is smooth at 0 (``eps`` in image units; the
    loss of a perfect prediction is ``|eps|``)."""
    return torch.sqrt((pred.float() - target.float()) ** 2 + eps * eps).mean()


def pixel_loss(name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``"l1"`` or ``"charbonnier"`` (eps 1e-3) between two image batches, a float32 scalar; another
    ``name`` raises ValueError."""
    if name == "l1":
        return F.l1_loss(pred.float(), target.float())
    if name == "charbonnier":
        return charbonnier(pred, target)
    raise ValueError(f"unknown pixel loss {name!r}; expected 'l1' or 'charbonnier'")


def reblur_losses(out: dict, blur: torch.Tensor, sharp: torch.Tensor, photo: torch.Tensor | None,
                  photo_curve: str = "srgb", pairs_curve: str | SensorParams = "srgb") -> dict:
    """The two losses of ``--mode reblur`` (L1, over the pixels whose whole kernel lies in the crop), from
    :class:`~unpaired.train.ReblurNets`' outputs ``out`` for ``blur``, ``sharp`` and ``photo`` (None: no
    photos), each ``(B, 3, H, W)`` in ``[0, 1]``; ``photo_curve`` (a name, as ``--photo-curve`` takes it) and
    ``pairs_curve`` (per pair: :func:`~unpaired.models.tone_params`) are their tone curves, as
    :func:`~unpaired.models.reblur` takes them. Returns ``{"loss_kernel", "loss_reblur"}``, float32 scalars:

    - ``loss_kernel``: the true sharp image of each pair blurred by K's kernel for its blurry image,
      through the pairs' curve, against that blurry image. K learns here alone, where the true sharp
      image pins its kernel.
    - ``loss_reblur``: G's output for each photo blurred by K's kernel for it, through the photos'
      curve, against the photo (the pairs' blurry images, through theirs, when ``photo`` is None).
      K's kernel is held fixed here (no gradient): trained on this loss too, K and G fall together to
      the identity, as a 1-tap kernel and G(photo) = photo re-blur perfectly.
    """
    size = out["kernel"].shape[-2:]
    return {"loss_kernel": pixel_loss("l1", reblur(sharp, out["kernel"], pairs_curve), valid_part(blur, size)),
            "loss_reblur": pixel_loss("l1", reblur(out["photo_sharp"], out["photo_kernel"].detach(),
                                                   pairs_curve if photo is None else photo_curve),
                                      valid_part(blur if photo is None else photo, size))}


class VGGPerceptual(nn.Module):
    """Perceptual loss (Johnson et al. 2016): the sum over relu1_2, relu2_2 and relu3_3 of the mean L1
    distance between the two image batches' VGG16 features at that layer.

    The pretrained weights come from a local file (torchvision's ``vgg16-397923af.pth``, or any state
    dict holding at least its ``features.0`` .. ``features.14`` tensors); nothing is downloaded.
    Inputs ``(B, 3, H, W)`` sRGB in ``[0, 1]``, float32 on the module's device (gradients flow to ``pred``
    only); the network is frozen and follows ``.to(device)``. A missing file raises FileNotFoundError,
    a folder or any other file ValueError.
    """

    LAYERS = (3, 8, 15)  # indices of relu1_2, relu2_2, relu3_3 in torchvision's vgg16().features

    def __init__(self, weights_path: str | Path):
        super().__init__()
        path = Path(weights_path) if weights_path else None
        if path is not None and path.is_dir():  # (torch's cache, say: "no such file" sent users to download it again)
            raise ValueError(f"--perceptual-weights {path}: a folder; pass the weights file in it (torchvision's is "
                             f"vgg16-397923af.pth). {VGG16_ADVICE}")
        if path is None or not path.is_file():
            raise FileNotFoundError(f"--perceptual-weights {weights_path}: no such file. {VGG16_ADVICE}")

        def refuse(why: str) -> ValueError:  # (one line: torch's own messages run to several)
            first = first_line(why).rstrip(":")
            return ValueError(f"--perceptual-weights {path}: not torchvision's VGG16 state dict ({first}). {VGG16_ADVICE}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise refuse(f"not a torch.save file of tensors, or cut short: {type(exc).__name__}") from None
        if not isinstance(state, dict):
            raise refuse(f"it holds a {type(state).__name__}, not a dict of tensors")
        # only the convolutional trunk up to relu3_3 (building the whole VGG16 costs 138 M parameters)
        from torchvision.models.vgg import cfgs, make_layers
        # (float32 whatever torch's default dtype: under float64 the loss came out float64)
        features = make_layers(cfgs["D"])[: self.LAYERS[-1] + 1].float()
        wanted = {}
        for key, value in state.items():
            parts = str(key).split(".")
            if parts[0] == "features" and len(parts) == 3 and parts[1].isdigit() and int(parts[1]) <= self.LAYERS[-1]:
                wanted[f"{parts[1]}.{parts[2]}"] = value
        missing = sorted(set(features.state_dict()) - set(wanted), key=lambda k: (int(k.split(".")[0]), k))
        if missing:
            raise refuse(f"no features.{missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        for key, tensor in features.state_dict().items():
            got = wanted[key]
            if not isinstance(got, torch.Tensor) or got.shape != tensor.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise refuse(f"features.{key} is {shape}, not {tuple(tensor.shape)}")
        features.load_state_dict(wanted, strict=True)
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).view(1, 3, 1, 1))

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x - self.mean) / self.std, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.LAYERS:
                out.append(h)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(F.l1_loss(a, b) for a, b in zip(self._feats(pred), self._feats(target.detach())))

    def train(self, mode: bool = True):  # the feature extractor stays frozen in eval mode
        return super().train(False)


class ImagePool:
    """History of generated images (Shrivastava et al. 2017), as in the reference CycleGAN.

    Until ``size`` images are stored each query image is stored and returned; afterwards each is,
    with probability 1/2, swapped with a random stored image (the stored one is returned), else
    returned as is. ``size`` is an integer >= 0; ``size == 0`` disables the pool. Images are kept
    detached on their device; all queries must share one ``(C, H, W)``.
    """

    def __init__(self, size: int = 50, seed: int = 0, stream: int = 0):
        if not rng.is_integer(size) or size < 0:  # (-1 failed at the first swap)
            raise ValueError(f"image pool size must be an integer >= 0 (0 disables it), got {size!r}")
        self.size, self.seed, self.stream = size, seed, stream
        self.images: list[torch.Tensor] = []
        self.count = 0  # images queried so far: the counter of the random draws

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``, detached."""
        images = images.detach()
        if self.size == 0:
            return images
        index = rng.as_index(range(self.count, self.count + images.shape[0]))
        coin = rng.uniform(self.seed, index, (), stream=2 * self.stream + 100)
        pick = rng.uniform(self.seed, index, (), stream=2 * self.stream + 101)
        self.count += images.shape[0]
        out = []
        for img, c, p in zip(images, coin.tolist(), pick.tolist()):
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif c < 0.5:
                j = int(p * self.size)
                out.append(self.images[j])
                self.images[j] = img.clone()
            else:
                out.append(img)
        return torch.stack(out) if out else images  # (an empty batch: nothing to stack)

    def state_dict(self) -> dict:
        return {"size": self.size, "seed": self.seed, "stream": self.stream, "count": self.count,
                "images": [t.cpu() for t in self.images]}

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        self.size, self.seed, self.stream, self.count = state["size"], state["seed"], state["stream"], state["count"]
        self.images = [t.to(device) for t in state["images"]]
