"""Models and losses: reference sizes, receptive field, init, residual start, pool, perceptual loss."""

import math

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blursynth.blur import blur
from blursynth.sensor import linear_to_srgb, srgb_to_linear
from test_kernel import _moments  # tests/ is on the path under pytest's default import mode
from unpaired.losses import ImagePool, VGGPerceptual, charbonnier, lsgan_loss
from unpaired.models import (KernelBlurGenerator, KernelPredictor, LearnedKernels, PatchDiscriminator, ResnetBlock,
                             ResnetGenerator, ShakeKernels, UNet, build_generator, discriminator_min_side,
                             generator_spec, init_weights, kernel_centroid, min_side, size_factor)


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_reference_parameter_counts():
    # pytorch-CycleGAN-and-pix2pix prints 11.378 M for resnet_9blocks (ngf 64) and 2.765 M for the
    # basic 70x70 PatchGAN (ndf 64, 3 layers)
    assert round(n_params(ResnetGenerator(64, 9)) / 1e6, 3) == 11.378
    assert round(n_params(PatchDiscriminator(64, 3)) / 1e6, 3) == 2.765


def test_patchgan_receptive_field_is_70():
    d = init_weights(PatchDiscriminator(8, 3), seed=0)
    # instance norm couples every pixel through its statistics; the patch size is the convolutions'
    for i, m in enumerate(d.net):
        if isinstance(m, torch.nn.InstanceNorm2d):
            d.net[i] = torch.nn.Identity()
    x = torch.rand(1, 3, 160, 160, requires_grad=True)
    out = d(x)
    centre = out[0, 0, out.shape[2] // 2, out.shape[3] // 2]
    (grad,) = torch.autograd.grad(centre, x)
    rows = grad.abs().sum(dim=(0, 1, 3)).nonzero()
    cols = grad.abs().sum(dim=(0, 1, 2)).nonzero()
    assert int(rows.max() - rows.min() + 1) == 70
    assert int(cols.max() - cols.min() + 1) == 70


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
def test_patchgan_takes_exactly_the_sides_from_its_min_side(n_layers):
    """--crop 16 in cyclegan mode passed the config and failed at the first step, in the last
    instance norm (one value per channel): the rule, not one size, is checked for each depth."""
    d = init_weights(PatchDiscriminator(4, n_layers), seed=0)
    least = discriminator_min_side(n_layers)
    for side in (least, least + 1, least + 5):
        out = d(torch.rand(1, 3, side, side))
        assert out.shape[-2:] == (side // 2 ** n_layers - 2,) * 2 and out.shape[-1] >= 1
    with pytest.raises(ValueError):
        d(torch.rand(1, 3, least - 1, least - 1))


@pytest.mark.parametrize("net", [ResnetGenerator(8, 2), UNet(8, 2)])
def test_generators_keep_shape_and_range(net):
    init_weights(net, seed=1)
    x = torch.rand(2, 3, 32, 48)
    y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    if not net.residual:
        assert y.min() >= 0 and y.max() <= 1


def test_residual_generator_starts_as_identity():
    x = torch.rand(2, 3, 32, 32)
    for kind in ("unet", "resnet"):
        spec = {"kind": kind, "ngf": 8, "residual": True, **({"depth": 2} if kind == "unet" else {"n_blocks": 2})}
        net = build_generator(spec, seed=0)
        assert torch.equal(net(x), x)


def test_bad_size_is_explained():
    with pytest.raises(ValueError, match="multiples of 4"):
        ResnetGenerator(8, 1)(torch.rand(1, 3, 30, 32))
    # sides below min_side failed inside the network (instance norm, reflect padding)
    for net, shape in ((ResnetGenerator(4, 1), (4, 8)), (UNet(4, 2), (8, 4))):  # (both: factor 4, least 8)
        with pytest.raises(ValueError, match=r"multiples of 4 and at least 8; got \(1, 3, "):
            init_weights(net, seed=0)(torch.rand(1, 3, *shape))


def test_init_is_seeded_and_reference_scaled():
    a = init_weights(ResnetGenerator(16, 2), seed=3)
    b = init_weights(ResnetGenerator(16, 2), seed=3)
    c = init_weights(ResnetGenerator(16, 2), seed=4)
    wa, wb, wc = (torch.cat([p.flatten() for n, p in m.named_parameters() if "weight" in n]) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert abs(wa.std().item() - 0.02) < 0.001


def test_unet_init_keeps_the_signal_through_its_depth():
    # no normalisation layers: with N(0, 0.02) weights the bottleneck would carry ~1e-4 of the input
    net = init_weights(UNet(16, 3), seed=0)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    h = x
    for i, down in enumerate(net.downs):
        h = down(h if i == 0 else torch.nn.functional.avg_pool2d(h, 2))
    assert 0.1 < h.std().item() / x.std().item() < 10
    conv = net.downs[1][0]  # 16 -> 32 channels, fan-in 16 * 9
    assert abs(conv.weight.std().item() - torch.nn.init.calculate_gain("leaky_relu", 0.2) / 12) < 0.01


def test_lsgan_and_charbonnier():
    s = torch.tensor([0.0, 1.0, 2.0])
    assert lsgan_loss(s, True).item() == pytest.approx((1 + 0 + 1) / 3)
    assert lsgan_loss(s, False).item() == pytest.approx((0 + 1 + 4) / 3)
    a, b = torch.zeros(4), torch.full((4,), 0.5)
    assert charbonnier(a, b, eps=1e-3).item() == pytest.approx((0.25 + 1e-6) ** 0.5)


def test_image_pool_fills_then_mixes_history():
    pool = ImagePool(size=3, seed=0)
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returned as is
    seen = set()
    for k in range(20):
        batch = torch.full((2, 1, 1, 1), 10.0 + k)
        out = pool.query(batch).flatten().tolist()
        # every returned image is either the query or one that was stored earlier
        assert all(v == 10.0 + k or v in seen | {0.0, 1.0, 2.0} for v in out)
        seen |= {10.0 + k}
    stored = [float(t) for t in pool.images]
    assert any(v >= 10 for v in stored)  # history was refreshed


def test_image_pool_swaps_half_the_queries_at_uniform_slots():
    """The reference's rule once full: each query is swapped with probability 1/2 for a stored image
    drawn uniformly (the fill test above would pass with any rate, 0 and 1 included)."""
    pool, n = ImagePool(size=5, seed=3), 4000
    pool.query(torch.full((5, 1, 1, 1), -1.0))
    slots = torch.zeros(5)
    swapped = 0
    for k in range(n):
        before = [float(t) for t in pool.images]
        out = float(pool.query(torch.full((1, 1, 1, 1), float(k))))
        if out != k:
            swapped += 1
            slots[before.index(out)] += 1  # (values are distinct: the slot it came from)
    # binomial(4000, 1/2): std 32, so 5 std either side; the slots, 2000/5 each, std ~18
    assert abs(swapped - n / 2) < 160
    assert bool((slots - swapped / 5).abs().max() < 100)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2 ** 31), st.integers(1, 5))
def test_image_pool_resume_is_exact(seed, warm):
    a = ImagePool(size=4, seed=seed)
    for k in range(warm):
        a.query(torch.full((3, 1, 2, 2), float(k)))
    b = ImagePool(size=4, seed=seed)
    b.load_state_dict(a.state_dict())
    for k in range(5):
        q = torch.full((3, 1, 2, 2), 100.0 + k)
        assert torch.equal(a.query(q), b.query(q))


def test_image_pool_holds_at_most_size_images():
    # "Until size images are stored each query image is stored", then swapped: never more than size.
    for size in (1, 3):
        pool = ImagePool(size=size, seed=1)
        for k in range(4 * size + 5):
            pool.query(torch.full((1, 1, 1, 1), float(k)))
            assert len(pool.images) == min(k + 1, size)
        assert len(pool.state_dict()["images"]) == size


def test_image_pool_size_zero_is_passthrough():
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(ImagePool(0).query(x), x)
    assert ImagePool(3).query(x[:0]).shape == (0, *x.shape[1:])  # (torch.stack of nothing failed)


def test_perceptual_needs_local_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        VGGPerceptual(tmp_path / "missing.pth")
    from torchvision.models.vgg import cfgs, make_layers

    trunk = {f"features.{k}": v for k, v in make_layers(cfgs["D"])[:16].state_dict().items()}
    wrong = dict(trunk, **{"features.0.weight": torch.zeros(1)})
    bad = tmp_path / "bad.pth"
    # a saved tensor (AttributeError: 'Tensor' object has no attribute 'items'), garbage bytes (torch's
    # multi-line advice to set weights_only=False), a dict without the trunk, a tensor of the wrong shape
    for content, why in ((torch.zeros(3), "holds a Tensor"), (b"garbage", "not a torch.save file"),
                         ({"features": 1, "classifier.0.weight": torch.zeros(1)}, "no features.0.bias and 13 more"),
                         (wrong, r"features.0.weight is \(1,\), not \(64, 3, 3, 3\)")):
        if isinstance(content, bytes):
            bad.write_bytes(content)
        else:
            torch.save(content, bad)
        with pytest.raises(ValueError) as err:
            VGGPerceptual(bad)
        message = str(err.value)
        assert message.startswith(f"--perceptual-weights {bad}: not torchvision's VGG16 state dict (")
        assert re.search(why, message) and "vgg16-397923af.pth" in message and "\n" not in message, message


def test_perceptual_weights_that_name_a_folder_say_so(tmp_path):
    # (the folder torch caches the weights in, say: "no such file" advised downloading them again)
    with pytest.raises(ValueError, match=f"--perceptual-weights {re.escape(str(tmp_path))}: a folder; pass the weights "
                       "file in it") as err:
        VGGPerceptual(tmp_path)
    assert "vgg16-397923af.pth" in str(err.value)


def test_perceptual_loss_with_local_weights(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    # the first 16 layers of a randomly initialised VGG16 trunk stand in for the pretrained file
    features = make_layers(cfgs["D"])[:16]
    path = tmp_path / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    loss = VGGPerceptual(path)
    x = torch.rand(1, 3, 32, 32)
    assert loss(x, x).item() == 0.0
    assert loss(x, torch.rand(1, 3, 32, 32)).item() > 0
    assert not any(p.requires_grad for p in loss.parameters())


def test_perceptual_loss_is_float32_under_a_float64_default_dtype(tmp_path):
    # (the losses module: every loss is float32; the VGG trunk was built in the default dtype, so float64 here)
    from torchvision.models.vgg import cfgs, make_layers
    path = tmp_path / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"])[:16].state_dict().items()}, path)
    pred, target = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    expected = VGGPerceptual(path)(pred, target)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        loss = VGGPerceptual(path)(pred, target)
    finally:
        torch.set_default_dtype(default)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)


def test_perceptual_loss_is_l1_of_relu1_2_relu2_2_relu3_3_on_imagenet_normalised_inputs(tmp_path):
    """Against torchvision's own VGG16 with the same weights: the layers and the input normalisation
    (the test above would pass with any layers and none)."""
    from torchvision.models import vgg16
    net = vgg16(weights=None).features.eval()
    path = tmp_path / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in net.state_dict().items()}, path)
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 40, 36, generator=gen), torch.rand(2, 3, 40, 36, generator=gen)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def relus(x):  # outputs of relu1_2, relu2_2, relu3_3: the ends of torchvision's blocks 1-3
        x = (x - mean) / std
        return [x := net[a:b](x) for a, b in ((0, 4), (4, 9), (9, 16))]
    with torch.no_grad():
        expected = sum((u - v).abs().mean() for u, v in zip(relus(pred), relus(target)))
        torch.testing.assert_close(VGGPerceptual(path)(pred, target), expected, rtol=1e-5, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(size=st.sampled_from([1, 3, 7, 11]), n=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_kernel_blur_generator_draws_normalised_kernels_and_blurs_with_them(size, n, seed):
    f = init_weights(KernelBlurGenerator(size, LearnedKernels(size, z_dim=4, width=8)), seed)
    x = torch.rand(n, 3, 24, 20, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    y, k = f(x)
    assert y.shape == x.shape and k.shape == (n, size, size)
    assert (k >= 0).all()
    torch.testing.assert_close(k.sum((-2, -1)), torch.ones(n))
    # the output is the input blurred by the returned kernels in linear light (saturated pixels boosted
    # first), plus noise of the learned level in linear light, clipped at black and white, then sRGB
    assert (y >= 0).all() and (y <= 1).all()
    linear = srgb_to_linear(x)
    boosted = linear + f.highlight_gain() * (linear >= 0.98)
    clean = blur(boosted, k, "reflect")
    s_a, s_b = f.noise_std()
    inside = (y > 0) & (y < 1 - 1e-6)  # (where the clip left the noise whole; white comes back as 1 - 6e-8)
    z = ((srgb_to_linear(y) - clean) / (s_a ** 2 * clean.clamp(min=0) + s_b ** 2).sqrt())[inside]
    assert inside.float().mean() > 0.9 and abs(z.std().item() - 1) < 0.1 and abs(z.mean().item()) < 0.1
    torch.manual_seed(seed)  # z and the noise come from the global RNG: reseeding repeats the draw
    y2, k2 = f(x)
    torch.testing.assert_close(k2, k)
    torch.testing.assert_close(y2, y)


@settings(max_examples=30, deadline=None)
@given(h=st.sampled_from([1, 3, 5, 9]), w=st.sampled_from([1, 3, 7]), data=st.data())
def test_kernel_centroid_of_a_delta_is_its_offset(h, w, data):
    r, c = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    k = torch.zeros(2, h, w, dtype=torch.float64)
    k[:, r, c] = 1
    torch.testing.assert_close(kernel_centroid(k), torch.tensor([[r - h // 2, c - w // 2]] * 2, dtype=torch.float64))


def test_kernel_blur_generator_saturated_light_smears_into_a_saturated_streak():
    """A one-pixel light source at white blurred along a 5-tap line: without the highlight gain it
    spreads into 5 dim pixels; with it the streak's linear values exceed 1 and clip to white."""
    f = KernelBlurGenerator(5)
    f.noise.data.fill_(-10.0)  # no noise (std 1e-100)
    line = torch.zeros(5, 5)
    line[2] = 0.2
    f.kernels = lambda n, device: line.expand(n, 5, 5)
    x = torch.zeros(1, 3, 9, 9)
    x[..., 4, 4] = 1.0
    dim = linear_to_srgb(torch.full((3, 1, 1), 0.2))[0, 0, 0].item()
    for gain, expected in ((0.0, dim), (4.0, 1.0)):
        f.highlight.data.fill_(-10.0 if gain == 0 else math.log(math.expm1(gain * math.log(2) / 0.5)) / 10)
        torch.testing.assert_close(f.highlight_gain(), torch.tensor(gain), atol=1e-6, rtol=1e-5)
        y, _ = f(x)
        torch.testing.assert_close(y[0, :, 4, 2:7], torch.full((3, 5), expected), atol=1e-5, rtol=0)
        assert (y[0, :, 4, [0, 1, 7, 8]] == 0).all() and (y[0, :, [3, 5]] == 0).all()


@pytest.mark.parametrize("size", [9, 21])  # the direct blur (at most 100 taps) and the FFT
def test_kernel_blur_generator_runs_in_float32_under_mixed_precision(size):
    """Under autocast (on by default on CUDA) the kernel MLP ran in bfloat16, and for small kernels the
    blur too, returning a bfloat16 image: the formation model is the same with and without it."""
    f = init_weights(KernelBlurGenerator(size), seed=0)
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(size))
    torch.manual_seed(0)
    y, k = f(x)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_amp, k_amp = f(x)
    assert y_amp.dtype == k_amp.dtype == torch.float32
    torch.testing.assert_close(k_amp, k, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(y_amp, y, atol=1e-6, rtol=1e-5)


def test_kernel_blur_generator_size_must_be_odd():
    with pytest.raises(ValueError, match="odd"):
        KernelBlurGenerator(4)


def _radius(k: torch.Tensor) -> torch.Tensor:
    """RMS radius (px) of each kernel ``(N, h, w)`` about its centre of mass."""
    return _moments(k)[1].sum(1).sqrt()


def test_shake_kernels_are_the_recipes_own_kernels_at_scale_one():
    # F's camera-shake kernels are exactly the kernels `blursynth dataset` makes for the same items
    from blursynth.pairs import make_pairs
    from blursynth.recipe import load_recipe
    recipe = load_recipe("default")
    sampler = ShakeKernels(recipe.kernel_size, "default", bank=8, seed=3)
    torch.manual_seed(0)
    pick = torch.randint(8, (3,))  # the draw the sampler makes from the global RNG
    torch.manual_seed(0)
    k = sampler(3, "cpu")
    made = make_pairs(recipe, sorted(set(pick.tolist())), seed=3)
    for j, i in enumerate(pick.tolist()):
        torch.testing.assert_close(k[j], made["kernel"][made["index"].tolist().index(i)])
    assert (k >= 0).all() and torch.allclose(k.sum((-2, -1)), torch.ones(3))


def test_shake_kernels_grow_with_the_learned_scale():
    from blursynth.kernel import fit_scale
    sampler = ShakeKernels(41, "default", bank=64, seed=0)
    torch.manual_seed(1)
    pick = torch.randint(64, (64,))
    torch.manual_seed(1)
    before = _radius(sampler(64, "cpu")).detach()
    sampler.log_scale.data.fill_(math.log10(2) / 10)  # scale 2
    torch.manual_seed(1)
    k = sampler(64, "cpu")
    after = _radius(k)
    # paths that still fit the canvas: twice as long (bilinear splatting adds a fraction of a pixel)
    fit = (fit_scale(sampler.paths[pick] * 2, 41, sampler.t[pick]) == 1) & (before > 2)
    assert fit.sum() >= 5
    ratio = after[fit].detach() / before[fit]
    assert ((ratio > 1.85) & (ratio < 2.01)).all(), ratio
    after.sum().backward()  # and the discriminator's gradient reaches the scale
    assert sampler.log_scale.grad > 0
    torch.testing.assert_close(kernel_centroid(k), torch.zeros(64, 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [-1, 2.5, "50"])
def test_image_pool_refuses_a_bad_size(size):
    """ImagePool(-1) was built and its first query past the fill failed with 'list index out of range'."""
    with pytest.raises(ValueError, match="image pool size must be an integer >= 0"):
        ImagePool(size)


def test_image_pool_takes_a_numpy_integer_size():
    assert ImagePool(np.int64(3)).size == 3


@given(h=st.integers(1, 8), w=st.integers(1, 8), seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_valid_part_is_where_reblur_puts_a_centred_delta(h, w, seed):
    """A delta kernel at its centre tap ``(h // 2, w // 2)`` re-blurs an image (linear curve) into
    ``valid_part`` of it, for odd and even kernel sides alike."""
    from unpaired.models import reblur, valid_part
    image = torch.rand(1, 3, 14, 15, generator=torch.Generator().manual_seed(seed))
    delta = torch.zeros(1, h, w)
    delta[0, h // 2, w // 2] = 1.0
    again = reblur(image, delta, "linear")
    assert again.shape[-2:] == (14 - h + 1, 15 - w + 1)
    assert torch.allclose(again, valid_part(image, (h, w)), atol=1e-6)


def test_pixel_loss_is_the_mean_absolute_error_or_charbonnier_and_nothing_else():
    from unpaired.losses import pixel_loss
    a, b = torch.zeros(4), torch.tensor([0.5, -0.5, 0.25, 0.0])
    assert pixel_loss("l1", a, b).item() == pytest.approx(1.25 / 4)
    assert pixel_loss("charbonnier", a, b).item() == pytest.approx(
        sum((v * v + 1e-6) ** 0.5 for v in (0.5, 0.5, 0.25, 0.0)) / 4)
    with pytest.raises(ValueError, match="unknown pixel loss 'l2'"):
        pixel_loss("l2", a, b)


def test_perceptual_loss_sends_gradients_to_pred_only(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    path = tmp_path / "vgg.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"])[:16].state_dict().items()}, path)
    pred, target = torch.rand(1, 3, 16, 16, requires_grad=True), torch.rand(1, 3, 16, 16, requires_grad=True)
    VGGPerceptual(path)(pred, target).backward()
    assert pred.grad is not None and target.grad is None


def test_a_resnet_block_adds_an_instance_normalised_correction_to_its_input():
    """Each block is ``x + IN(conv(relu(IN(conv(x)))))``: what it adds has zero mean and unit variance per
    channel (the last instance norm), and it adds it to ``x`` rather than replacing it."""
    block = init_weights(ResnetBlock(8), seed=0)
    x = torch.randn(2, 8, 12, 12, generator=torch.Generator().manual_seed(0)) * 3 + 5
    added = block(x) - x
    torch.testing.assert_close(added.mean((-2, -1)), torch.zeros(2, 8), atol=1e-4, rtol=0)
    torch.testing.assert_close(added.var((-2, -1), unbiased=False), torch.ones(2, 8), atol=1e-2, rtol=0)


def test_a_non_residual_resnet_generator_is_the_reference_tanh_network_on_minus_one_to_one():
    """As in the reference code, the network sees ``2x - 1`` and its tanh output is mapped back to [0, 1]."""
    net = init_weights(ResnetGenerator(8, 1), seed=0)
    for m in net.modules():  # (weights large enough that tanh is far from linear)
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == 3:
            m.weight.data *= 50
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net.net(x * 2 - 1)
        assert y.abs().max() > 2  # (tanh saturates: its formula is tested, not its linear part)
        torch.testing.assert_close(net(x), (torch.tanh(y) + 1) / 2)
        assert not torch.allclose(net.net(x), y, atol=1e-3)  # (the input scaling matters)


def test_the_patch_discriminator_scores_its_input_mapped_to_minus_one_to_one():
    d = init_weights(PatchDiscriminator(4, 2), seed=0)
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(d(x), d.net(x * 2 - 1))
        assert not torch.allclose(d.net(x), d.net(x * 2 - 1), atol=1e-3)


@pytest.mark.parametrize("spec", [{"kind": "resnet", "ngf": 4, "n_blocks": 1, "residual": False},
                                  {"kind": "unet", "ngf": 4, "depth": 2, "residual": True},
                                  {"kind": "unet", "ngf": 4, "depth": 3, "residual": True}])
def test_generators_take_exactly_the_sides_size_factor_and_min_side_say(spec):
    """The sides a generator takes are the multiples of size_factor from min_side up: each other side refused."""
    net, factor = build_generator(spec, seed=0), size_factor(spec)
    least = min_side(factor)
    for h, w in ((least, least), (least + factor, least), (least, 3 * factor)):
        assert net(torch.rand(1, 3, h, w)).shape == (1, 3, h, w)
    for h, w in ((least + factor // 2, least), (least, least + 1), (least - factor, least)):
        with pytest.raises(ValueError, match="multiples of"):
            net(torch.rand(1, 3, h, w))


@pytest.mark.parametrize("generator", ["resnet", "unet"])
@pytest.mark.parametrize("residual", [True, False])
def test_the_generator_spec_carries_the_options_of_its_kind(generator, residual):
    """What a checkpoint stores to rebuild G: every option of its kind, --residual and --no-residual alike."""
    from unpaired.config import parse_args
    shape = {"n_blocks": 2} if generator == "resnet" else {"depth": 2}
    cfg = parse_args(["--generator", generator, "--ngf", "8", "--n-blocks" if generator == "resnet" else "--unet-depth",
                      "2", "--residual" if residual else "--no-residual"])
    assert generator_spec(cfg) == {"kind": generator, "ngf": 8, **shape, "residual": residual}
    net = build_generator(generator_spec(cfg), seed=0)
    assert net.residual is residual


def test_learned_kernels_and_the_kernel_predictor_start_from_a_centred_gaussian_of_2_px():
    """Their logits are added to a prior whose softmax is a round Gaussian of sigma 2 px centred on the
    centre tap: with the last layer at zero the kernel is that Gaussian, whatever the code or photo."""
    r = torch.arange(11.0) - 5
    g = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * 2.0 ** 2))
    g = g / g.sum()
    sampler, predictor = LearnedKernels(11, z_dim=4, width=8), KernelPredictor(11, width=4)
    for layer in (sampler.mlp[2], predictor.head):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    with torch.no_grad():
        for k in (sampler(3, "cpu"), predictor(torch.rand(3, 3, 16, 16))):
            torch.testing.assert_close(k, g.expand(3, 11, 11))


def test_kernel_blur_generator_noise_starts_at_the_middle_of_the_default_sensor_model():
    """Shot-noise variance ``a`` about 1.1e-3 and read-noise variance ``b`` on Brooks et al.'s (2019) line
    ``ln b = 2.18 ln a + 1.20``: the read noise is the far smaller one."""
    s_a, s_b = KernelBlurGenerator(5).noise_std().tolist()
    a, b = s_a ** 2, s_b ** 2
    assert abs(a / 1.1e-3 - 1) < 0.05
    assert abs(math.log(b) - (2.18 * math.log(a) + 1.20)) < 0.1


def test_the_kernel_predictor_averages_its_features_over_the_image():
    """Four 3x3 convolutions (the last three of stride 2) on ``2x - 1``, a mean over the image, a linear
    layer to logits added to the prior, a softmax: one kernel per image, from any size."""
    predictor = init_weights(KernelPredictor(7, width=4), seed=0)
    convs = [m for m in predictor.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    x = torch.rand(2, 3, 20, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = predictor.features(x * 2 - 1)
        assert features.shape[-2:] == (3, 2)
        logits = predictor.head(features.mean((-2, -1))) + predictor.prior
        torch.testing.assert_close(predictor(x), logits.softmax(-1).view(2, 7, 7))
