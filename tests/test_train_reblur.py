"""--mode reblur: the kernel predictor, the re-blur formation and losses, and runs of the trainer."""

import json
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blursynth.blur import blur
from blursynth.data import PairedFolder
from blursynth.recipe import load_recipe
from blursynth.cli import main as blursynth_main
from blursynth.io import write_image
from blursynth.sensor import CRFS, linear_to_srgb, srgb_to_linear
from unpaired.data import PairedCrops, tone_of
from unpaired.deblur import load_generator
from unpaired.deblur import main as deblur_main
from unpaired.losses import reblur_losses
from unpaired.models import (KernelPredictor, build_generator, curve_by_name, init_weights, reblur, tone_params,
                             valid_part)
from unpaired import train as train_module
from unpaired.train import ReblurNets, main

from test_train import (TINY, TINY_GAN, TINY_NET, assert_resumed_as_uninterrupted, records, sample_cell,
                        scaled_objectives, weights)

TINY_REBLUR = TINY + ["--mode", "reblur", "--blur-kernel", "5", "--device", "cpu"]


def _photos(folder: Path, n: int = 3, side: int = 40) -> Path:
    folder.mkdir()
    g = torch.Generator().manual_seed(5)
    for i in range(n):
        write_image(folder / f"p{i}.png", torch.rand(3, side, side + 8 * i, generator=g))
    return folder


# ---------------------------------------------------------------- kernel predictor

@settings(max_examples=12, deadline=None)
@given(size=st.sampled_from([1, 3, 7]), h=st.integers(8, 40), w=st.integers(8, 40), b=st.integers(1, 3),
       seed=st.integers(0, 2 ** 16))
def test_predicted_kernels_are_non_negative_and_sum_to_one(size, h, w, b, seed):
    net = init_weights(KernelPredictor(size, width=4), seed)
    x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))
    k = net(x)
    assert k.shape == (b, size, size) and k.dtype == torch.float32
    assert (k >= 0).all()
    torch.testing.assert_close(k.sum((-2, -1)), torch.ones(b), atol=1e-6, rtol=0)


def test_predicted_kernels_follow_the_image_and_stay_float32_under_autocast():
    net = init_weights(KernelPredictor(5, width=4), 0)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    k = net(x)
    assert not torch.allclose(k[0], k[1])  # one kernel per image, from that image
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(x).dtype == torch.float32


def test_kernel_predictor_refuses_even_sizes_and_takes_images_of_any_size():
    with pytest.raises(ValueError, match="odd"):
        KernelPredictor(4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        KernelPredictor(3)(torch.rand(3, 16, 16))
    # (its padded convolutions leave at least 1 px: it refused sides under 8, which --crop allows with
    # --unet-depth 1, so such a run failed at its first step)
    for side in (1, 4, 7):
        assert KernelPredictor(3, width=4)(torch.rand(2, 3, side, side + 1)).shape == (2, 3, 3)


def test_a_reblur_run_on_crops_under_8_px(tmp_path):
    i = TINY_REBLUR.index("--unet-depth")
    opts = TINY_REBLUR[:i] + ["--unet-depth", "1"] + TINY_REBLUR[i + 2:]
    main(opts + ["--crop", "4", "--blur-kernel", "3", "--steps", "1", "--run-dir", str(tmp_path / "r")])
    assert (tmp_path / "r" / "checkpoints" / "step_0000001.pt").is_file()


# ---------------------------------------------------------------- formation and losses

@pytest.mark.parametrize("size", [(5, 5), (4, 6)])
def test_reblur_of_the_true_sharp_image_gives_back_the_blurry_one_where_the_kernel_fits(size):
    # a blurry image made the other way round (same-size "reflect" blur of the linear scene): the pixels
    # valid_part keeps are those reblur returns, exactly; a misplaced window or a flipped kernel is not
    g = torch.Generator().manual_seed(2)
    sharp = torch.rand(2, 3, 20, 23, generator=g)
    k = torch.rand(2, *size, generator=g)
    k = k / k.sum((-2, -1), keepdim=True)
    blurry = linear_to_srgb(blur(srgb_to_linear(sharp), k, "reflect"))
    again = reblur(sharp, k)
    assert again.shape == (2, 3, 20 - size[0] + 1, 23 - size[1] + 1)
    torch.testing.assert_close(again, valid_part(blurry, size), atol=2e-6, rtol=0)
    assert (reblur(sharp, k.flip(-2, -1)) - valid_part(blurry, size)).abs().max() > 1e-2
    assert (again - blurry[..., :again.shape[-2], :again.shape[-1]]).abs().max() > 1e-2


def test_reblur_of_linear_images_blurs_the_values_themselves():
    g = torch.Generator().manual_seed(4)
    sharp, k = torch.rand(1, 3, 12, 12, generator=g), torch.rand(1, 3, 3, generator=g)
    k = k / k.sum()
    torch.testing.assert_close(reblur(sharp, k, "linear"), blur(sharp, k, "valid"))
    assert (reblur(sharp, k, "linear") - reblur(sharp, k)).abs().max() > 1e-2
    with pytest.raises(ValueError, match="curve must be srgb, linear, brooks or gamma:G"):
        reblur(sharp, k, "gamma")


@pytest.mark.parametrize("recipe, crop", [("levin-like", 40), ("gopro-like", 80)])
def test_pairs_re_blurred_through_their_own_curve_give_back_the_written_blurry_images(tmp_path, recipe, crop):
    # levin-like pairs are blurred in linear values, gopro-like ones through a gamma of 2.2 (no noise in
    # either): the true kernel re-blurs the written sharp image to the written blurry one, to 8-bit
    # rounding, only through the curve the manifest records
    out = tmp_path / recipe
    assert blursynth_main(["dataset", "--out", str(out), "--pairs", "2", "--recipe", recipe, "--crop", str(crop),
                           "--quiet"]) == 0
    pairs = PairedFolder(out)
    for item in (pairs[0], pairs[1]):
        tone = tone_of(item["params"])
        assert CRFS[int(tone["crf"])] == {"levin-like": "linear", "gopro-like": "gamma"}[recipe]
        curve = tone_params(tone["crf"][None], tone["gamma"][None])
        k, sharp, blurry = item["kernel"][None], item["sharp"][None], valid_part(item["blur"][None], item["kernel"].shape)
        assert (reblur(sharp, k, curve) - blurry).abs().max() < 4 / 255
        wrong = {"levin-like": "srgb", "gopro-like": "linear"}[recipe]  # (sRGB is close to a gamma of 2.2)
        assert (reblur(sharp, k, wrong) - blurry).abs().max() > 2e-2



def test_a_pairs_tone_has_gamma_1_where_its_curve_has_none():
    """tone_of reads a record flattened by flatten_params, which writes a value not drawn (the gamma of a
    curve other than "gamma") as NaN, not None: the gamma it promises to be 1 there came out NaN."""
    from blursynth.data import flatten_params
    for crf, gamma, want in (("srgb", None, 1.0), ("linear", None, 1.0), ("gamma", 2.2, 2.2)):
        tone = tone_of(flatten_params({"sensor": {"crf": crf, "gamma": gamma}}))
        assert CRFS[int(tone["crf"])] == crf and tone["gamma"].dtype == torch.float32
        assert float(tone["gamma"]) == pytest.approx(want)

def test_each_pair_is_re_blurred_through_its_own_curve():
    g = torch.Generator().manual_seed(6)
    sharp, k = torch.rand(4, 3, 12, 12, generator=g), torch.rand(4, 3, 3, generator=g)
    k = k / k.sum((-2, -1), keepdim=True)
    names = ["srgb", "linear", "gamma", "brooks"]
    mixed = reblur(sharp, k, tone_params(torch.tensor([CRFS.index(n) for n in names]),
                                         torch.tensor([1.0, 1.0, 2.2, 1.0])))
    for i, name in enumerate(names):
        alone = tone_params(torch.tensor([CRFS.index(name)]), torch.tensor([2.2])) if name == "gamma" else name
        torch.testing.assert_close(mixed[i:i + 1], reblur(sharp[i:i + 1], k[i:i + 1], alone), atol=1e-6, rtol=0)
    assert (mixed[2] - reblur(sharp[2:3], k[2:3], tone_params(torch.tensor([2]), torch.tensor([1.8])))).abs().max() > 1e-3
    # pairs with no curve recorded are taken as sRGB: the synthetic ones are the default recipe's, which says so
    assert load_recipe("default").sensor_model().crf == ("srgb",)


def test_a_dataset_mixing_tone_curves_trains_each_pair_through_its_own(tmp_path, monkeypatch):
    recipe = tmp_path / "mixed.toml"
    recipe.write_text('name = "mixed"\ndescription = "two curves"\ncrop = 24\n[kernel]\nsize = 9\n'
                      '[sensor]\ncrf = ["srgb", "linear"]\nshot_noise = "off"\n')
    out = tmp_path / "pairs"
    assert blursynth_main(["dataset", "--out", str(out), "--pairs", "12", "--recipe", str(recipe), "--quiet"]) == 0
    crops = PairedCrops(PairedFolder(out), 16, 0, synthetic=False)
    assert {int(crops[p]["crf"]) for p in range(12)} == {CRFS.index("srgb"), CRFS.index("linear")}
    seen = []  # the curves each step's loss was given, per pair
    real = train_module.reblur_losses
    monkeypatch.setattr(train_module, "reblur_losses", lambda *a: seen.append(a[5].crf.tolist()) or real(*a))
    assert main(TINY_NET + ["--mode", "reblur", "--blur-kernel", "5", "--device", "cpu", "--pairs", str(out),
                            "--steps", "3", "--out", str(tmp_path / "run")])["step"] == 3
    assert len(seen) == 3 and {c for step in seen for c in step} == {CRFS.index("srgb"), CRFS.index("linear")}


def test_a_gamma_curve_re_blurs_black_with_finite_gradients():
    # x ** (1 / 2.2) has an infinite slope at 0, where a black crop re-blurs: K's gradients stay finite
    k = torch.full((1, 3, 3), 1 / 9, requires_grad=True)
    sharp = torch.zeros(1, 3, 8, 8)
    sharp[..., 4, 4] = 1.0
    for curve in (tone_params(torch.tensor([CRFS.index("gamma")]), torch.tensor([2.2])), "brooks", "srgb", "linear"):
        reblur(sharp, k, curve).sum().backward()
        assert torch.isfinite(k.grad).all(), curve
        k.grad = None
    with pytest.raises(ValueError, match="curve must be srgb, linear"):
        reblur(sharp, k, "gamma")  # (a gamma curve needs its exponent)


@pytest.mark.parametrize("curve", ["srgb", "linear", "gamma:2.2", "gamma:0.5", "brooks"])
def test_g_gets_finite_gradients_next_to_black_and_white(curve):
    # the inverse of the brooks curve has an infinite slope at 0: G's output within 3e-8 of black got a NaN
    # gradient, and a reblur run with --photo-curve brooks diverged at its first step
    k = torch.full((1, 3, 3), 1 / 9)
    for v in (0.0, 1e-12, 1e-9, 1e-8, 3e-8, 1e-7, 1 - 1e-7, 1 - 6e-8, 1.0):
        sharp = torch.full((1, 3, 8, 8), v, requires_grad=True)
        out = reblur(sharp, k, curve)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(sharp.grad).all(), (curve, v)


@pytest.mark.parametrize("name, expected", [("srgb", ("srgb", 1.0)), ("linear", ("linear", 1.0)),
                                            ("brooks", ("brooks", 1.0)), ("gamma:2.2", ("gamma", 2.2)),
                                            ("gamma:0.1", ("gamma", 0.1)), ("gamma:10", ("gamma", 10.0))])
def test_curve_names_are_read(name, expected):
    assert curve_by_name(name) == expected


@pytest.mark.parametrize("name", ["gamma", "gamma:", "gamma:x", "gamma:0.09", "gamma:10.5", "gamma:nan",
                                  "gamma:inf", "srgb:2.2", "sRGB", "", "log", None])
def test_other_curve_names_are_refused(name):
    with pytest.raises(ValueError, match=r"curve must be srgb, linear, brooks or gamma:G \(G from 0.1 to 10\)"):
        curve_by_name(name)


def test_a_named_gamma_curve_re_blurs_in_its_linear_light():
    # "gamma:G" takes the photo to linear light as x ** G and back as x ** (1 / G), around the blur
    # (checked here with scipy's convolution, not the package's)
    from scipy.signal import convolve2d
    g = torch.Generator().manual_seed(8)
    sharp, k = torch.rand(1, 3, 14, 14, generator=g), torch.rand(1, 5, 5, generator=g)
    k = k / k.sum()
    linear = [convolve2d(c ** 1.8, k[0].double().numpy(), mode="valid") for c in sharp[0].double().numpy()]
    expected = torch.from_numpy(np.stack(linear).clip(0, 1) ** (1 / 1.8))[None].float()
    torch.testing.assert_close(reblur(sharp, k, "gamma:1.8"), expected, atol=2e-6, rtol=0)
    assert (reblur(sharp, k, "gamma:1.8") - reblur(sharp, k, "gamma:2.2")).abs().max() > 1e-3


def test_the_photo_curve_applies_to_the_photos_only():
    nets = ReblurNets(init_weights(build_generator({"kind": "unet", "ngf": 4, "depth": 2, "residual": True}), 0),
                      init_weights(KernelPredictor(5, width=4), 1))
    gen = torch.Generator().manual_seed(3)
    blurry, sharp, photo = (torch.rand(2, 3, 16, 16, generator=gen) for _ in range(3))
    with torch.no_grad():
        out = nets(blurry, photo)
        srgb, linear = (reblur_losses(out, blurry, sharp, photo, curve) for curve in ("srgb", "linear"))
        assert srgb["loss_kernel"] == linear["loss_kernel"] and srgb["loss_reblur"] != linear["loss_reblur"]
        out = nets(blurry)  # no photos: the pairs' blurry images stand in, and they are sRGB
        assert reblur_losses(out, blurry, sharp, None, "linear") == reblur_losses(out, blurry, sharp, None)


def test_the_photo_loss_trains_g_and_not_the_kernel_predictor():
    g = init_weights(build_generator({"kind": "unet", "ngf": 4, "depth": 2, "residual": True}), 0)
    k = init_weights(KernelPredictor(5, width=4), 1)
    nets = ReblurNets(g, k)
    gen = torch.Generator().manual_seed(3)
    blurry, sharp, photo = (torch.rand(2, 3, 16, 16, generator=gen) for _ in range(3))
    for use_photo in (photo, None):
        losses = reblur_losses(nets(blurry, use_photo), blurry, sharp, use_photo)
        nets.zero_grad()
        losses["loss_reblur"].backward(retain_graph=True)
        assert all(p.grad is None or not p.grad.any() for p in k.parameters())
        assert any(p.grad is not None and p.grad.any() for p in g.parameters())
        nets.zero_grad()
        losses["loss_kernel"].backward()
        assert any(p.grad is not None and p.grad.any() for p in k.parameters())
        assert all(p.grad is None or not p.grad.any() for p in g.parameters())  # (the true sharp image: no G)


def test_the_photos_kernels_keep_no_graph_and_are_k_s_kernels():
    k = init_weights(KernelPredictor(5, width=4), 1)
    nets = ReblurNets(init_weights(build_generator({"kind": "unet", "ngf": 4, "depth": 2, "residual": True}), 0), k)
    gen = torch.Generator().manual_seed(4)
    blurry, photo = (torch.rand(2, 3, 16, 16, generator=gen) for _ in range(2))
    out = nets(blurry, photo)
    assert out["kernel"].requires_grad and out["photo_sharp"].requires_grad
    assert not out["photo_kernel"].requires_grad  # (no autograd graph kept for a kernel no loss trains)
    assert torch.equal(out["photo_kernel"], k(photo))


# ---------------------------------------------------------------- runs

def test_a_reblur_run_trains_both_networks_and_deblur_reads_it(tmp_path, capsys):
    run = tmp_path / "run"
    result = main(TINY_REBLUR + ["--steps", "3", "--eval-every", "3", "--run-dir", str(run)])
    assert "val_psnr" in result
    state = torch.load(run / "checkpoints" / "step_0000003.pt", weights_only=False)
    assert set(state["models"]) == {"G", "K"}
    start = init_weights(KernelPredictor(5), 1).state_dict()  # (the trainer's K: --seed 0 + 1)
    assert any(not torch.equal(state["models"]["K"][n], start[n]) for n in start)  # K was trained
    logged = [r for r in records(run) if "loss_pixel" in r]
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert all(r["loss_kernel"] > 0 and r["loss_reblur"] > 0 for r in logged)
    net, _ = load_generator(run / "checkpoints" / "best.pt")  # inference needs G alone
    assert net(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_a_resume_from_another_folder_reads_the_photos_the_run_was_given(tmp_path, monkeypatch):
    # config.json kept --blurry photos as given, and a resume took it from the folder it was run in: it
    # read the photos there (or stopped on none); its paths are now absolute
    photos = _photos(tmp_path / "photos")
    (tmp_path / "elsewhere").mkdir()
    _photos(tmp_path / "elsewhere" / "photos", n=2, side=48)  # (other photos under the same relative name)
    a, b = tmp_path / "a", tmp_path / "b"
    opts = TINY_REBLUR + ["--blurry", "photos", "--eval-every", "100", "--steps", "4"]
    monkeypatch.chdir(tmp_path)
    main(opts + ["--run-dir", str(a)])
    main(opts + ["--stop-at", "2", "--run-dir", str(b)])
    monkeypatch.chdir(tmp_path / "elsewhere")
    main(["--resume", str(b), "--no-progress"])
    assert_resumed_as_uninterrupted(a, b, 4)
    assert json.loads((b / "config.json").read_text())["blurry"] == str(photos)


def test_reblur_resume_on_photos_equals_uninterrupted(tmp_path):
    photos = _photos(tmp_path / "photos")
    a, b = tmp_path / "a", tmp_path / "b"
    opts = TINY_REBLUR + ["--blurry", str(photos), "--eval-every", "100"]
    main(opts + ["--steps", "4", "--run-dir", str(a)])
    main(opts + ["--steps", "4", "--stop-at", "2", "--run-dir", str(b)])
    main(["--resume", str(b), "--no-progress"])
    assert any(k.startswith("K.") for k in weights(a, 4))
    assert_resumed_as_uninterrupted(a, b, 4)
    la = [r["loss_reblur"] for r in records(a) if "loss_reblur" in r]
    lb = [r["loss_reblur"] for r in records(b) if "loss_reblur" in r]
    assert len(la) == 4 and lb == pytest.approx(la, rel=1e-5)
    # best_reblur.pt: the same step either way (a resume carries the score to beat)
    steps = [torch.load(r / "checkpoints" / "best_reblur.pt", weights_only=False)["step"] for r in (a, b)]
    assert steps[0] == steps[1]


@pytest.mark.parametrize("curve", ["linear", "srgb", "gamma:2.2", "brooks"])
def test_validation_re_blurs_the_photos_through_photo_curve(tmp_path, monkeypatch, curve):
    # val_reblur and the photo rows re-blur G's output of a photo in the light --photo-curve names, as
    # training does (an sRGB re-blur of linear photos would score the wrong blur)
    from unpaired import train
    curves, real = [], train.reblur

    def recording(image, kernel, photo_curve, *args, **kwargs):
        curves.append(photo_curve)
        return real(image, kernel, photo_curve, *args, **kwargs)

    trained, real_losses = [], train.reblur_losses

    def recording_losses(out, blur, sharp, photo, photo_curve, *args):  # (the training step's photo loss)
        trained.append(photo_curve)
        return real_losses(out, blur, sharp, photo, photo_curve, *args)

    monkeypatch.setattr(train, "reblur", recording)
    monkeypatch.setattr(train, "reblur_losses", recording_losses)
    main(TINY_REBLUR + ["--blurry", str(_photos(tmp_path / "photos")), "--photo-curve", curve, "--steps", "1",
                        "--eval-every", "1", "--run-dir", str(tmp_path / "run")])
    assert curves and set(curves) == {curve}
    assert trained == [curve]


def test_photos_get_a_re_blur_score_at_validation(tmp_path):
    photos, run = _photos(tmp_path / "photos"), tmp_path / "run"
    main(TINY_REBLUR + ["--blurry", str(photos), "--steps", "2", "--eval-every", "1", "--run-dir", str(run)])
    scores = [r for r in records(run) if "val_psnr" in r]
    assert [r["step"] for r in scores] == [1, 2] and all(0 < r["val_reblur"] < 1 for r in scores)
    assert scores[0]["val_reblur"] != scores[1]["val_reblur"]  # (G trained in between)
    main(TINY_REBLUR + ["--steps", "1", "--eval-every", "1", "--run-dir", str(tmp_path / "none")])
    assert not any("val_reblur" in r for r in records(tmp_path / "none"))  # no photos, no score
    # the sample grid gains rows of photo | output | output re-blurred: 2 pairs and 2 photos of 16 px
    with_photos = iio.imread(run / "samples" / "step_0000002.png")
    without = iio.imread(tmp_path / "none" / "samples" / "step_0000001.png")
    assert with_photos.shape[:2] == (4 * 18 + 2, 3 * 18 + 2) and without.shape[:2] == (2 * 18 + 2, 3 * 18 + 2)


def test_a_photo_row_shows_the_output_re_blurred_where_the_kernel_fits(tmp_path):
    # rows of photo | output | output re-blurred (in the photo's frame where the 5 px kernel fits, the photo
    # in the 2 px border): the mean |re-blurred - photo| over that region is the logged val_reblur
    photos, run = _photos(tmp_path / "photos"), tmp_path / "run"
    main(TINY_REBLUR + ["--blurry", str(photos), "--steps", "1", "--eval-every", "1", "--run-dir", str(run)])
    (rec,) = [r for r in records(run) if "val_reblur" in r]
    grid = iio.imread(run / "samples" / "step_0000001.png").astype(np.float64) / 255
    cell = lambda r, c: sample_cell(grid, r, c)  # noqa: E731
    photo, shown = np.stack([cell(r, 0) for r in (2, 3)]), np.stack([cell(r, 2) for r in (2, 3)])
    inner = (slice(None), slice(2, 14), slice(2, 14))
    border = np.ones(photo.shape[:3], bool)
    border[inner] = False
    assert np.array_equal(shown[border], photo[border])
    assert rec["val_reblur"] > 0.01 and np.abs(shown[inner] - photo[inner]).mean() == pytest.approx(rec["val_reblur"],
                                                                                                     abs=2e-3)


def test_best_reblur_holds_the_model_with_the_lowest_re_blur_error_on_the_photos(tmp_path, capsys):
    photos, run = _photos(tmp_path / "photos"), tmp_path / "run"
    # (a high rate, so that the error goes up and down, and the lowest is not the latest)
    main(TINY_REBLUR + ["--blurry", str(photos), "--steps", "6", "--eval-every", "1", "--lr", "3e-2",
                        "--run-dir", str(run)])
    scores = {r["step"]: r["val_reblur"] for r in records(run) if "val_reblur" in r}
    best = torch.load(run / "checkpoints" / "best_reblur.pt", weights_only=False)
    assert len(set(scores.values())) == 6 and best["step"] == min(scores, key=scores.get) < 6
    assert best["best_reblur"] == min(scores.values())
    assert (run / "checkpoints" / "best.pt").is_file()  # (still chosen on the pairs' PSNR)
    # deblur given the run folder takes best.pt, and names the other choice
    write_image(tmp_path / "in" / "a.png", torch.rand(3, 24, 24))
    assert deblur_main([str(tmp_path / "in" / "a.png"), "--checkpoint", str(run), "--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().err
    assert f"checkpoint: {run / 'checkpoints' / 'best.pt'} (the run's other choice" in said
    assert str(run / "checkpoints" / "best_reblur.pt") in said
    main(TINY_REBLUR + ["--steps", "1", "--eval-every", "1", "--run-dir", str(tmp_path / "none")])
    assert not (tmp_path / "none" / "checkpoints" / "best_reblur.pt").exists()  # no photos, no such choice


def test_a_resume_on_other_photos_judges_best_reblur_afresh(tmp_path):
    photos, run = _photos(tmp_path / "photos"), tmp_path / "run"
    main(TINY_REBLUR + ["--blurry", str(photos), "--steps", "3", "--stop-at", "2", "--eval-every", "1",
                        "--run-dir", str(run)])
    other = tmp_path / "other"
    other.mkdir()
    board = (torch.arange(40)[:, None] + torch.arange(40)[None, :]) % 2  # (fine detail: far worse re-blur errors)
    for i in range(3):
        write_image(other / f"q{i}.png", board.float().expand(3, 40, 40))
    main(["--resume", str(run), "--blurry", str(other), "--no-progress"])
    scores = {r["step"]: r["val_reblur"] for r in records(run) if "val_reblur" in r}
    assert scores[3] > max(scores[1], scores[2])  # (so only a fresh judgement writes it at step 3)
    assert torch.load(run / "checkpoints" / "best_reblur.pt", weights_only=False)["step"] == 3


def test_a_resume_with_another_photo_curve_judges_best_reblur_afresh(tmp_path, capsys):
    # the re-blur error of the photos through another curve is another score (a run started with the
    # wrong --photo-curve and resumed with the right one kept the old curve's best as the one to beat)
    photos, run = _photos(tmp_path / "photos"), tmp_path / "run"
    main(TINY_REBLUR + ["--blurry", str(photos), "--steps", "3", "--stop-at", "2", "--eval-every", "1",
                        "--photo-curve", "linear", "--run-dir", str(run)])
    capsys.readouterr()
    main(["--resume", str(run), "--photo-curve", "srgb", "--no-progress"])
    assert re.search(r"resume: best_reblur.pt's re-blur error 0\.\d{4} was measured with --photo-curve linear; "
                     "the next validation starts the best afresh", capsys.readouterr().err)
    scores = {r["step"]: r["val_reblur"] for r in records(run) if "val_reblur" in r}
    assert scores[3] > min(scores[1], scores[2])  # (so only a fresh judgement writes it at step 3)
    assert torch.load(run / "checkpoints" / "best_reblur.pt", weights_only=False)["step"] == 3


def test_photos_given_only_on_resume_are_named(tmp_path, capsys):
    photos, run = _photos(tmp_path / "photos"), tmp_path / "run"
    main(TINY_REBLUR + ["--steps", "2", "--stop-at", "1", "--eval-every", "100", "--run-dir", str(run)])
    main(["--resume", str(run), "--blurry", str(photos), "--no-progress"])
    assert ("resume: other usable files than at step 1 in --blurry (not given then, 3 now)"
            in capsys.readouterr().err)


def test_the_reblur_objective_adds_the_kernel_loss_and_weighs_the_photos_loss(tmp_path, monkeypatch):
    # G and K minimise pixel + kernel + lambda_reblur * reblur, from the losses the step logs
    seen = scaled_objectives(monkeypatch)
    run = tmp_path / "r"
    main(TINY_REBLUR + ["--blurry", str(_photos(tmp_path / "photos")), "--lambda-reblur", "3", "--steps", "1",
                        "--eval-every", "100", "--run-dir", str(run)])
    (rec,) = [r for r in records(run) if "loss_kernel" in r]
    assert min(rec["loss_pixel"], rec["loss_kernel"], rec["loss_reblur"]) > 1e-3
    assert seen[0] == pytest.approx(rec["loss_pixel"] + rec["loss_kernel"] + 3 * rec["loss_reblur"], rel=1e-5)


@pytest.mark.parametrize("clip", ["0", "0.05"])
def test_photos_change_g_but_not_the_kernel_predictor(tmp_path, clip):
    # K learns from the pairs alone: with or without the photos' loss its weights come out the same,
    # with the default --grad-clip 0.05 too (G and K are clipped each on its own: a clip of their joint
    # gradient norm let the photos' gradients in G scale K's steps)
    photos = _photos(tmp_path / "photos")
    opts = TINY_REBLUR + ["--blurry", str(photos), "--eval-every", "100", "--steps", "3", "--grad-clip", clip]
    main(opts + ["--run-dir", str(tmp_path / "on")])
    main(opts + ["--run-dir", str(tmp_path / "off"), "--lambda-reblur", "0"])
    on, off = weights(tmp_path / "on", 3), weights(tmp_path / "off", 3)
    assert all(torch.equal(on[k], off[k]) for k in on if k.startswith("K."))
    assert any(not torch.equal(on[k], off[k]) for k in on if k.startswith("G."))


@pytest.mark.parametrize("argv, match", [
    (["--sharp", "x"], "--sharp is for --mode cyclegan"),
    (["--blur-kernel", "21"], r"--crop 16 is smaller than --blur-kernel 21"),
    (["--blur-kernel", "1"], r"--blur-kernel 1 .*1-tap kernel"),  # (K untrainable, G taught the identity)
    (["--lambda-reblur", "nan"], "--lambda-reblur must be >= 0"),
    (["--photo-curve", "gamma"], r"--photo-curve must be srgb, linear, brooks or gamma:G \(G from 0.1 to 10\); "
                                 "got 'gamma'"),
    (["--blurry", "x", "--photo-curve", "gamma:0"], "--photo-curve must be .*; got 'gamma:0'"),
    (["--blurry", "x", "--blur-kernel", "13", "--val-crop", "12"],
     "--val-crop 12 is smaller than --blur-kernel 13"),
    # the synthetic pairs are made unless --pairs is given: --blurry photos do not replace them
    (["--pairs", "x", "--pair-pool", "64"], r"--pair-pool 64: only read with synthetic data \(no --pairs\)"),
    (["--photo-curve", "linear"], r"--photo-curve linear: only read with --blurry photos"),
])
def test_reblur_options_are_checked(tmp_path, argv, match):
    with pytest.raises(ValueError, match=match):
        main(TINY_REBLUR + ["--steps", "1", "--run-dir", str(tmp_path / "r")] + argv)
    assert not (tmp_path / "r").exists()


def test_reblur_options_are_refused_in_other_modes(tmp_path):
    with pytest.raises(ValueError, match=r"--lambda-reblur 2.0: only read with --mode reblur"):
        main(TINY + ["--steps", "1", "--lambda-reblur", "2", "--run-dir", str(tmp_path / "r")])
    with pytest.raises(ValueError, match=r"--photo-curve linear: only read with --mode reblur"):
        main(TINY_GAN + ["--steps", "1", "--photo-curve", "linear", "--run-dir", str(tmp_path / "r")])
    # (at its default value it changes nothing: accepted, as other modes' options are)
    main(TINY + ["--steps", "1", "--lambda-reblur", "1", "--eval-every", "100", "--run-dir", str(tmp_path / "ok")])


def test_reblur_nets_run_g_and_k_on_the_photos_when_there_are_photos():
    """G's output on the photos (not on the pairs' blurry images) is what the photos' re-blur loss judges."""
    nets = ReblurNets(build_generator({"kind": "unet", "ngf": 4, "depth": 2, "residual": False}, seed=0),
                      init_weights(KernelPredictor(5, width=4), seed=1))
    gen = torch.Generator().manual_seed(0)
    blur, photo = torch.rand(2, 3, 16, 16, generator=gen), torch.rand(2, 3, 16, 16, generator=gen)
    o = nets(blur, photo)
    with torch.no_grad():
        torch.testing.assert_close(o["fake_sharp"], nets.G(blur))
        torch.testing.assert_close(o["kernel"], nets.K(blur))
        torch.testing.assert_close(o["photo_sharp"], nets.G(photo))
        torch.testing.assert_close(o["photo_kernel"], nets.K(photo))
        assert not torch.allclose(nets.G(photo), nets.G(blur), atol=1e-4)
    alone = nets(blur)
    assert alone["photo_sharp"] is alone["fake_sharp"] and alone["photo_kernel"] is alone["kernel"]
