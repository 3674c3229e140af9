"""Which tone curve Levin et al. 2009's blur was applied through: each recorded kernel re-blurs its
sharp image, convolving the stored values as they are ("linear") or in linear light behind the sRGB
curve ("srgb"), and the result is scored against the recorded blurry image (aligned up to a shift,
since the recordings are not centred). The better fit is the curve the `levin-like` recipe uses.

    python bench/levin_curve.py --data ../shared/data/levin2009

Prints the mean PSNR (dB) and SSIM over the 32 pairs for each curve.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from blursynth.blur import blur
from blursynth.io import read_image
from blursynth.sensor import linear_to_srgb, srgb_to_linear
from unpaired.evaluate import levin_pairs
from unpaired.metrics import levin_scores

# A kernel reaches 13 px and the alignment 10 px past a pixel: a wider border keeps the reflected
# padding of the re-blurred image out of the scores.
BORDER = 25


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the Levin 2009 folder (sharp/, blurry/, kernels/)")
    args = ap.parse_args()
    curves = {"linear": lambda s, k: blur(s, k, "reflect"),
              "srgb": lambda s, k: linear_to_srgb(blur(srgb_to_linear(s), k, "reflect").clamp(0, 1))}
    scores = {name: {"psnr": [], "ssim": []} for name in curves}
    for pair in levin_pairs(args.data):
        sharp, blurry = (torch.from_numpy(read_image(p)[0])[None] for p in (pair.sharp, pair.blurry))
        kernel = torch.from_numpy(np.load(pair.kernel).astype(np.float32))[None]
        for name, form in curves.items():
            s = levin_scores(form(sharp, kernel).clamp(0, 1), blurry, radius=10, border=BORDER)
            scores[name]["psnr"].append(float(s["psnr"][0]))
            scores[name]["ssim"].append(float(s["ssim"][0]))
    n = len(scores["linear"]["psnr"])
    for name, s in scores.items():
        print(f"{name:>6}: re-blurred against recorded, mean of {n} pairs: "
              f"{np.mean(s['psnr']):.1f} dB, SSIM {np.mean(s['ssim']):.3f}")


if __name__ == "__main__":
    main()
