"""Image files in and out: every input kind the package promises to accept, and atomic writes."""

import io
import re
import struct
import zipfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from blursynth.io import (ImageError, NpzWriter, _probe_png, atomic_path, png_bytes, pnm_bytes, probe_image,
                          probe_images, read_image, read_npz, read_samples, refuse_short_png, temporary_glob,
                          temporary_target, to_float, to_uint, write_image)


def _ramp(h=12, w=10, c=3, top=255):
    return (np.arange(h * w * c).reshape(h, w, c) * 7919 % (top + 1)).astype(np.uint16 if top > 255 else np.uint8)


def test_rgb_gray_rgba_palette_8bit(tmp_path):
    rgb = _ramp()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    img, bits = read_image(tmp_path / "rgb.png")
    assert bits == 8 and img.shape == (3, 12, 10) and img.dtype == np.float32
    assert np.array_equal(np.rint(img * 255).astype(np.uint8).transpose(1, 2, 0), rgb)

    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    gray, _ = read_image(tmp_path / "gray.png")
    assert np.array_equal(gray[0], gray[2]) and np.allclose(gray[0], rgb[:, :, 0] / 255)
    assert read_image(tmp_path / "gray.png", channels=1)[0].shape == (1, 12, 10)
    # channels=None: the file's colour type, even for an RGB file whose channels are equal
    assert read_image(tmp_path / "gray.png", channels=None)[0].shape == (1, 12, 10)
    Image.fromarray(np.repeat(rgb[:, :, :1], 3, axis=2)).save(tmp_path / "gray-as-rgb.png")
    assert read_image(tmp_path / "gray-as-rgb.png", channels=None)[0].shape == (3, 12, 10)

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 0, np.uint8)])  # fully transparent: white
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.allclose(read_image(tmp_path / "rgba.png")[0], 1.0)

    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "pal.png")
    pal, _ = read_image(tmp_path / "pal.png")
    expected = np.asarray(Image.open(tmp_path / "pal.png").convert("RGB"), np.float32) / 255
    assert np.allclose(pal.transpose(1, 2, 0), expected)



def test_a_transparent_colour_is_composited_over_white_as_alpha_is(tmp_path):
    # PNG's tRNS chunk (palette, gray, RGB) and GIF's transparent index mark pixels transparent without
    # an alpha channel; a viewer shows them as the background, here white (as for RGBA).
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)  # left: colour 0 (black, transparent), right: colour 1 (red, opaque)
    for name in ("pal.png", "pal.gif"):
        pal.save(tmp_path / name, transparency=0)
        img, _ = read_image(tmp_path / name)
        assert np.array_equal(img[:, 0, 0], [1, 1, 1]) and np.array_equal(img[:, 0, 1], [1, 0, 0]), name
    Image.fromarray(np.array([[0, 200]], np.uint8)).save(tmp_path / "gray.png", transparency=0)
    gray, _ = read_image(tmp_path / "gray.png", channels=None)
    assert gray.shape == (1, 1, 2) and np.allclose(gray[0, 0], [1, 200 / 255])
    Image.fromarray(np.array([[[0, 0, 0], [9, 9, 9]]], np.uint8)).save(tmp_path / "rgb.png", transparency=(0, 0, 0))
    assert np.allclose(read_image(tmp_path / "rgb.png")[0][:, 0], [[1, 9 / 255]] * 3)


def _with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with one more chunk before its image data (where tRNS and eXIf belong)."""
    at = png.index(b"IDAT") - 4
    return png[:at] + _chunk(kind, body) + png[at:]


@pytest.mark.parametrize("channels", [1, 3])
def test_a_transparent_colour_of_a_16_bit_png_is_composited_too(tmp_path, channels):
    # 16-bit gray and RGB PNGs can carry one too (the colour in 16-bit samples); it was left out
    img = np.full((2, 3, channels), 1000, np.uint16)
    img[0, 1] = 7 + np.arange(channels)  # the transparent colour ...
    img[1, 2, 0] = 7  # ... and, in RGB, a colour that only shares its red with it
    key = struct.pack(f">{channels}H", *(7 + np.arange(channels)))
    (tmp_path / "t.png").write_bytes(_with_chunk(png_bytes(img if channels == 3 else img[..., 0]), b"tRNS", key))
    out, bits = read_image(tmp_path / "t.png", channels=None)
    want = (img.transpose(2, 0, 1) / 65535).astype(np.float32)
    want[:, 0, 1] = 1.0
    if channels == 1:
        want[:, 1, 2] = 1.0
    assert bits == 16 and out.shape == (channels, 2, 3)
    np.testing.assert_allclose(out, want, rtol=1e-6)


def _unreached(monkeypatch, owner, name: str, why: str) -> None:
    """Replace ``owner.name`` (a decoder that must not see the file) by one that fails the test with ``why``."""
    def reached(*args, **kwargs):
        raise AssertionError(why)
    monkeypatch.setattr(owner, name, reached)


def _refused(path, pattern: str) -> None:
    """Check that probe_image and read_image both refuse ``path`` with an ImageError matching ``pattern``."""
    for read in (probe_image, read_image):
        with pytest.raises(ImageError, match=pattern):
            read(path)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
def test_a_transparent_gray_of_a_low_bit_depth_png_is_composited_too(tmp_path, depth):
    # Pillow scales 2- and 4-bit gray samples to 8 bits but kept tRNS's gray unscaled (1, not 85 or
    # 17), so the transparent pixels of such files came in opaque, as their gray
    top = (1 << depth) - 1
    values = [0, top, 1, 1, top // 2, 0, 1]
    bits = "".join(format(v, f"0{depth}b") for v in values)
    row = int(bits + "0" * (-len(bits) % 8), 2).to_bytes((len(bits) + 7) // 8, "big")
    plain = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", len(values), 1, depth, 0, 0, 0, 0))
             + _chunk(b"IDAT", zlib.compress(b"\0" + row)) + _chunk(b"IEND", b""))
    (tmp_path / "g.png").write_bytes(_with_chunk(plain, b"tRNS", struct.pack(">H", 1)))
    out, bits_read = read_image(tmp_path / "g.png", channels=None)
    want = [1.0 if v == 1 else v / top for v in values]
    assert bits_read == 8 and out.shape == (1, 1, len(values))
    np.testing.assert_allclose(out[0, 0], want, atol=1e-6)


def test_a_transparent_colour_beside_an_alpha_channel_is_ignored(tmp_path):
    # (the standard forbids it there, and libpng ignores it: a second alpha made gray + alpha read as RGB)
    img = np.zeros((2, 3, 2), np.uint16)
    img[..., 0], img[..., 1] = 7, 65535  # gray 7 = the key below, opaque
    (tmp_path / "ga.png").write_bytes(_with_chunk(png_bytes(img), b"tRNS", struct.pack(">2H", 7, 65535)))
    out, bits = read_image(tmp_path / "ga.png", channels=None)
    assert bits == 16 and out.shape == (1, 2, 3)
    np.testing.assert_allclose(out, 7 / 65535, rtol=1e-6)

# EXIF orientation tag -> what a viewer does to the stored pixels to show them upright (EXIF 2.3, 4.6.4).
UPRIGHT = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = _ramp(h=12, w=10)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation  # Orientation
    image.save(tmp_path / "photo.png", exif=exif)
    img, _ = read_image(tmp_path / "photo.png")
    assert np.array_equal(np.rint(img * 255).astype(np.uint8).transpose(1, 2, 0), UPRIGHT[orientation](stored))
    # 16-bit colour PNGs take their own reader (Pillow keeps only 8 bits of them): upright too
    deep = _ramp(h=12, w=10, top=65535)
    write_image(tmp_path / "deep.png", deep.transpose(2, 0, 1) / 65535, bits=16)
    data = (tmp_path / "deep.png").read_bytes()
    body = exif.tobytes()[6:]  # PNG's eXIf chunk holds the TIFF-format EXIF without the "Exif\0\0" prefix
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    (tmp_path / "deep.png").write_bytes(data[:33] + chunk + data[33:])  # after the signature and IHDR
    img, bits = read_image(tmp_path / "deep.png")
    assert bits == 16
    assert np.array_equal(np.rint(img * 65535).astype(np.uint16).transpose(1, 2, 0), UPRIGHT[orientation](deep))
    assert tuple(probe_image(tmp_path / "deep.png")) == img.shape[1:]


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
@pytest.mark.parametrize("kind", ["rgb8", "gray16", "bigtiff"])
def test_tiff_orientation_is_applied(tmp_path, orientation, kind):
    # TIFFs go through imageio's tifffile, not Pillow: their Orientation tag (a baseline TIFF tag,
    # which viewers and Pillow honour) must turn them upright too, as for JPEG and PNG
    if kind == "gray16":
        stored = _ramp(h=12, w=10, c=1, top=65535)[:, :, 0]
        image = Image.fromarray(stored)  # mode I;16
    else:
        stored = _ramp(h=12, w=10)
        image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "scan.tif", exif=exif, big_tiff=kind == "bigtiff")
    img, bits = read_image(tmp_path / "scan.tif", channels=None)
    top = 65535 if kind == "gray16" else 255
    assert bits == (16 if kind == "gray16" else 8)
    got = np.rint(img * top).astype(stored.dtype).transpose(1, 2, 0)
    assert np.array_equal(got, UPRIGHT[orientation](stored if stored.ndim == 3 else stored[:, :, None]))
    assert tuple(probe_image(tmp_path / "scan.tif")) == img.shape[1:]


@pytest.mark.parametrize("name", ["scan.tif", "scan.png", "scan.jpg"])
def test_16bit_colour_tiff_keeps_all_bits_under_any_suffix(tmp_path, name):
    # imageio chooses its reader by the suffix, and Pillow keeps 8 of 16 bits of colour: a TIFF
    # saved under another name must still be read as the TIFF it is
    import imageio.v3 as iio
    deep = _ramp(h=12, w=10, top=65535)
    iio.imwrite(tmp_path / "deep.tif", deep)
    (tmp_path / "deep.tif").rename(tmp_path / name)
    img, bits = read_image(tmp_path / name)
    assert bits == 16
    assert np.array_equal(np.rint(img.astype(np.float64) * 65535).astype(np.uint16).transpose(1, 2, 0), deep)


@pytest.mark.parametrize("top", [255, 65535])
def test_a_tiff_that_stores_each_channel_as_a_plane_is_read_as_its_image(tmp_path, top):
    # (PlanarConfiguration 2, as scanners and Photoshop's "per channel" order write: tifffile gives its
    # samples as (C, H, W), which was taken for an image 3 px tall with its width for channels)
    import imageio.v3 as iio
    planes = _ramp(h=12, w=10, top=top).transpose(2, 0, 1)
    iio.imwrite(tmp_path / "scan.tif", planes)  # (3, H, W): written planar
    with Image.open(tmp_path / "scan.tif") as stored:
        assert stored.tag_v2[284] == 2  # (the layout this test is about)
    img, bits = read_image(tmp_path / "scan.tif")
    assert img.shape == (3, 12, 10) and bits == (8 if top == 255 else 16)
    assert np.array_equal(np.rint(img.astype(np.float64) * top).astype(planes.dtype), planes)
    assert tuple(probe_image(tmp_path / "scan.tif")) == (12, 10)


@pytest.mark.parametrize("name", ["deep.TIF", "deep.Tiff", "deep.PNG"])
def test_16_bit_colour_is_written_under_a_suffix_in_capitals(tmp_path, name):
    # the format is the suffix's in any case: for .TIF imageio chose Pillow, which cannot write 16-bit RGB
    deep = _ramp(h=12, w=10, top=65535)
    write_image(tmp_path / name, deep)
    img, bits = read_image(tmp_path / name)
    assert bits == 16
    assert np.array_equal(np.rint(img.astype(np.float64) * 65535).astype(np.uint16).transpose(1, 2, 0), deep)


def test_tiff_size_is_checked_before_decoding(tmp_path, monkeypatch):
    # Pillow's size check does not cover TIFFs (read by tifffile): the header is checked instead,
    # so an over-large scan is refused in one line, not decoded until memory runs out
    Image.fromarray(_ramp(h=40, w=30)).save(tmp_path / "scan.tif")
    monkeypatch.setattr("blursynth.io.MAX_PIXELS", 1000)
    for read in (read_image, probe_image):
        with pytest.raises(ImageError, match=r"scan\.tif: 30x40 is 0 Mpx, more than"):
            read(tmp_path / "scan.tif")


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
@pytest.mark.parametrize("mode, progressive", [("RGB", False), ("L", False), ("RGB", True)])
def test_jpegs_decoded_by_torchvision_equal_pillows(tmp_path, monkeypatch, orientation, mode, progressive):
    """JPEGs take torchvision's decoder (twice as fast): the same samples as Pillow's, upright."""
    import blursynth.io as bio
    rng = np.random.default_rng(orientation)
    image = Image.fromarray((rng.random((37, 53, 3)) * 255).astype(np.uint8)).convert(mode)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "p.jpg", quality=90, exif=exif, progressive=progressive)
    real, used = bio._decode_jpeg, []
    monkeypatch.setattr(bio, "_decode_jpeg", lambda path, *a: used.append(path) or real(path, *a))
    fast, bits = read_image(tmp_path / "p.jpg", channels=None)
    assert used and real(tmp_path / "p.jpg") is not None and bits == 8  # (it was torchvision's)
    monkeypatch.setattr(bio, "_decode_jpeg", lambda path, *a: None)
    slow, _ = read_image(tmp_path / "p.jpg", channels=None)
    assert fast.shape == slow.shape and fast.shape[0] == len(mode) and np.array_equal(fast, slow)
    stored = np.asarray(image)
    assert fast.shape[1:] == UPRIGHT[orientation](stored if stored.ndim == 3 else stored[..., None]).shape[:2]


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_jpeg_whose_exif_follows_an_xmp_segment_is_read_upright_as_probed(tmp_path, orientation):
    """Editors may write the XMP APP1 segment before the EXIF one. torchvision's decoder looks for the orientation
    in the first APP1 only, so such a photo was read on its side (or upside down) while probe_image, by Pillow,
    gave its upright size: a --sharp scan then cut crops of the wrong size out of it, a traceback mid-run."""
    import blursynth.io as bio
    stored = (np.random.default_rng(orientation).random((30, 44, 3)) * 255).astype(np.uint8)
    data = io.BytesIO()
    Image.fromarray(stored).save(data, "JPEG", quality=95)

    def app1(body):
        return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    exif = b"Exif\0\0II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + bytes(4)
    xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"
    (tmp_path / "p.jpg").write_bytes(data.getvalue()[:2] + app1(xmp) + app1(exif) + data.getvalue()[2:])
    assert bio._decode_jpeg(tmp_path / "p.jpg") is not None  # (torchvision's decoder reads it)
    img, _ = read_image(tmp_path / "p.jpg")
    with Image.open(tmp_path / "p.jpg") as pil:
        upright = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
    assert img.shape[1:] == probe_image(tmp_path / "p.jpg") == UPRIGHT[orientation](stored).shape[:2]
    assert np.array_equal(img, upright.transpose(2, 0, 1) / np.float32(255))


def _orienting_text(how: str):
    """PNG text chunks that give EXIF orientation 6, as ImageMagick keeps a JPEG's EXIF ("Raw profile type exif")
    or as Adobe's exports write XMP's tiff:Orientation."""
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    if how == "imagemagick":
        exif = Image.Exif()
        exif[0x0112] = 6
        raw = exif.tobytes().hex()
        info.add_text("Raw profile type exif", f"\nexif\n{len(raw) // 2:8d}\n{raw}\n", zip=True)
    else:
        info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/'
                      '1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
                      'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    return info


@pytest.mark.parametrize("how", ["imagemagick", "xmp"])
def test_a_png_oriented_by_a_text_chunk_is_probed_at_the_size_it_is_read(tmp_path, how):
    """Pillow turns a PNG upright by the EXIF in a "Raw profile type exif" text chunk (ImageMagick's way of keeping
    a JPEG's EXIF) or by XMP's tiff:Orientation (Adobe's exports); probe_image gave the header's size, the wrong way
    round, so a --sharp scan kept photos whose crops then came out of the wrong size (a traceback mid-run)."""
    Image.fromarray(_ramp(h=30, w=44)).save(tmp_path / "p.png", pnginfo=_orienting_text(how))
    img, _ = read_image(tmp_path / "p.png")
    assert img.shape[1:] == probe_image(tmp_path / "p.png") == (44, 30)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_a_jpeg_under_8_px_is_probed_not_called_unreadable(tmp_path, mode):
    # Its 1/8-scale probe asked Pillow for a 0 px draft: "cannot be read as an image (ZeroDivisionError: ...)",
    # and a --sharp scan or a trainer's folder skipped a readable thumbnail with that false reason
    for h, w in ((1, 1), (3, 5), (7, 20), (20, 7)):
        path = tmp_path / f"{mode}{h}x{w}.jpg"
        Image.fromarray((np.random.default_rng(h).random((h, w, 3)) * 255).astype(np.uint8)).convert(mode).save(path)
        assert probe_image(path) == read_image(path)[0].shape[1:] == (h, w)


@pytest.mark.parametrize("how", ["imagemagick", "xmp"])
def test_a_16_bit_png_oriented_by_a_text_chunk_is_read_upright(tmp_path, how):
    """The 16-bit reader took the orientation from an eXIf chunk only: such a PNG (``magick IMG.jpg -depth 16``
    keeps the JPEG's EXIF as text) came in on its side, where the same file at 8 bits is turned upright."""
    from blursynth.io import read_samples
    stored = (np.random.default_rng(3).random((30, 44)) * 65535).astype(np.uint16)
    Image.fromarray(stored).save(tmp_path / "p.png", pnginfo=_orienting_text(how))
    assert (tmp_path / "p.png").read_bytes()[24] == 16  # (read by the 16-bit reader)
    assert np.array_equal(read_samples(tmp_path / "p.png")[..., 0], np.rot90(stored, -1))  # orientation 6
    assert probe_image(tmp_path / "p.png") == (44, 30)


@pytest.mark.parametrize("mode", ["P", "CMYK", "YCbCr", "L;I"])
def test_tiffs_not_stored_as_gray_or_rgb_are_converted_as_pillow_shows_them(tmp_path, mode):
    """tifffile returns a TIFF's samples as stored: a palette TIFF came in as its indices (gray), a CMYK one as
    RGBA with K for alpha (a print-ready photo read all white), YCbCr as if it were RGB, and a gray TIFF whose 0
    is white (MinIsWhite, as scanners write) as its negative. The README promises palette and CMYK converted."""
    rgb = (np.random.default_rng(5).random((12, 18, 3)) * 255).astype(np.uint8)
    if mode == "L;I":  # Pillow writes no MinIsWhite TIFF: the same gray samples with PhotometricInterpretation 0
        Image.fromarray(rgb).convert("L").save(tmp_path / "p.tif")
        data = bytearray((tmp_path / "p.tif").read_bytes())
        ifd = struct.unpack_from("<I", data, 4)[0]
        for k in range(struct.unpack_from("<H", data, ifd)[0]):
            if struct.unpack_from("<H", data, ifd + 2 + 12 * k)[0] == 262:
                struct.pack_into("<H", data, ifd + 2 + 12 * k + 8, 0)
        (tmp_path / "p.tif").write_bytes(bytes(data))
    else:
        Image.fromarray(rgb).convert(mode).save(tmp_path / "p.tif")
    try:
        with Image.open(tmp_path / "p.tif") as pil:
            shown = np.asarray(pil.convert("RGB"))
    except OSError:  # (Pillow 10.0 writes a YCbCr TIFF it cannot read back: "image file is truncated")
        pytest.skip(f"this Pillow ({Image.__version__}) cannot read the {mode} TIFF it wrote")
    img, bits = read_image(tmp_path / "p.tif")
    assert bits == 8 and img.shape == (3, 12, 18) and probe_image(tmp_path / "p.tif") == (12, 18)
    assert np.array_equal(np.rint(img * 255).astype(np.uint8).transpose(1, 2, 0), shown)
    if mode == "L;I":
        assert shown.mean() > 255 - np.asarray(Image.fromarray(rgb).convert("L")).mean() - 1  # (the negative)


def test_a_cut_jpeg_is_left_to_pillow(tmp_path):
    data = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 99, np.uint8)).save(data, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(data.getvalue()[:300])
    import blursynth.io as bio
    assert bio._decode_jpeg(tmp_path / "cut.jpg") is None


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    rgb = np.zeros((16, 32, 3), np.uint8)
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:] = (0, 0, 255)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    img, bits = read_image(tmp_path / "print.jpg")
    assert bits == 8 and img.shape == (3, 16, 32)
    # Red stays red and blue blue (read as RGBA, the K channel made them white), as Pillow converts them.
    assert np.abs(img.transpose(1, 2, 0) - rgb / 255).max() < 0.1
    expected = np.asarray(Image.open(tmp_path / "print.jpg").convert("RGB"), np.float32) / 255
    assert np.allclose(img.transpose(1, 2, 0), expected)


def test_photos_over_pillows_limit_are_read_and_over_ours_refused(tmp_path, monkeypatch):
    import PIL.Image

    import blursynth.io
    Image.fromarray(_ramp(h=12, w=10)).save(tmp_path / "photo.png")  # 120 px
    write_image(tmp_path / "deep.png", _ramp(h=12, w=10, top=65535).transpose(2, 0, 1) / 65535, bits=16)
    # Pillow refuses more than twice its limit: 100 px here stands for its 179 Mpx by default.
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(PIL.Image.DecompressionBombError):
        Image.open(tmp_path / "photo.png")
    assert read_image(tmp_path / "photo.png")[0].shape == (3, 12, 10)
    assert PIL.Image.MAX_IMAGE_PIXELS == 50  # put back for everyone else
    monkeypatch.setattr(blursynth.io, "MAX_PIXELS", 119)
    for name in ("photo.png", "deep.png"):  # through Pillow, and through the 16-bit PNG decoder
        with pytest.raises(ImageError, match=rf"{name}: 10x12 is .* more than the .* downscale it or cut it"):
            read_image(tmp_path / name)


def test_probe_agrees_with_reading(tmp_path):
    """probe_image gives read_image's size, or the same error, for files that take each of its paths."""
    photo = Image.fromarray(_ramp(h=48, w=64))
    files = []
    for orientation in sorted(UPRIGHT):
        exif = photo.getexif()
        exif[0x0112] = orientation
        photo.save(tmp_path / f"o{orientation}.jpg", exif=exif)
        files.append(f"o{orientation}.jpg")
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg")
    photo.save(tmp_path / "photo.png")
    photo.save(tmp_path / "progressive.jpg", progressive=True)
    data = (tmp_path / "progressive.jpg").read_bytes()
    for cut in (3, 200, len(data) // 2, len(data) - 20):  # truncated files: decoding finds each
        (tmp_path / f"cut{cut}.jpg").write_bytes(data[:cut])
        files.append(f"cut{cut}.jpg")
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    files += ["cmyk.jpg", "photo.png", "progressive.jpg", "notes.jpg", "empty.jpg"]
    errors = sum(_probe_agrees(tmp_path / name) for name in files)
    assert errors == 6  # the four cut files, the text and the empty file
    # a folder's worth on several threads: the same answers, in order, errors in their place
    paths = [tmp_path / name for name in files] * 3
    expected = []
    for path in paths:
        try:
            expected.append(tuple(probe_image(path)))
        except ImageError as exc:
            expected.append(str(exc))
    for threads in (1, 4):
        got = probe_images(paths, threads)
        assert [str(g) if isinstance(g, ImageError) else tuple(g) for g in got] == expected


def _probe_agrees(path) -> bool:
    """Check that probe_image gives read_image's size or its very error; True where both fail."""
    try:
        expected = read_image(path)[0].shape[1:]
    except ImageError as exc:
        with pytest.raises(ImageError, match=re.escape(str(exc))):
            probe_image(path)
        return True
    assert tuple(probe_image(path)) == expected, path
    return False


def test_png_probe_checks_the_chunks_and_leaves_the_rest_to_reading(tmp_path):
    photo = Image.fromarray(_ramp(h=48, w=64))
    photo.save(tmp_path / "plain.png")
    photo.convert("P").save(tmp_path / "palette.png")
    write_image(tmp_path / "deep.png", _ramp(h=48, w=64, top=65535).transpose(2, 0, 1) / 65535, bits=16)
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "turned.png", exif=exif)
    data = (tmp_path / "plain.png").read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside the image data: its CRC no longer matches
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    for cut in (5, 20, len(data) // 2, len(data) - 5):
        (tmp_path / f"cut{cut}.png").write_bytes(data[:cut])
    # sound files are measured from the header alone
    for name in ("plain.png", "palette.png", "deep.png"):
        assert _probe_png(tmp_path / name) == read_image(tmp_path / name)[0].shape[1:] == (48, 64)
    # defective ones, and one whose EXIF orientation turns it, are left to read_image
    others = ["turned.png", "flipped.png"] + [f"cut{cut}.png" for cut in (5, 20, len(data) // 2, len(data) - 5)]
    assert all(_probe_png(tmp_path / name) is None for name in others)
    assert sum(_probe_agrees(tmp_path / name) for name in others) >= 3  # the first cuts at least cannot be read
    assert tuple(probe_image(tmp_path / "turned.png")) == (64, 48)


@pytest.mark.parametrize("kind, body", [(b"pHYs", b"\0\0"), (b"sRGB", b""), (b"iCCP", b"icc\0\5" + zlib.compress(b"x")),
                                        (b"zTXt", b"Comment\0\5" + zlib.compress(b"x")), (b"iCCP", b"")])
@pytest.mark.parametrize("after", [False, True])
def test_an_8bit_png_whose_ancillary_chunk_pillow_refuses_is_refused_by_the_probe_too(tmp_path, kind, body, after):
    # (sound CRCs, so the probe measured it from its header; Pillow refuses the chunk's body at reading, and a
    # --sharp run stopped at its first pair from that photo. Which bodies Pillow refuses depends on its release:
    # 10.0 takes an iCCP of an unknown compression method, 13 does not; the probe must agree with the read.)
    plain = png_bytes(_ramp(h=48, w=64))
    at = len(plain) - 12 if after else plain.index(b"IDAT") - 4
    (tmp_path / "bad.png").write_bytes(plain[:at] + _chunk(kind, body) + plain[at:])
    refused = _probe_agrees(tmp_path / "bad.png")
    assert refused or (kind, bool(body)) == (b"iCCP", True)  # (every other one is refused by every Pillow here)
    # one it takes is still measured from the header, without decoding
    (tmp_path / "good.png").write_bytes(_with_chunk(plain, kind, b"\0\0\x0b\x13\0\0\x0b\x13\1" if kind == b"pHYs" else
                                                    b"\0" if kind == b"sRGB" else b"Comment\0\0" + zlib.compress(b"x")))
    assert _probe_png(tmp_path / "good.png") == (48, 64)


@pytest.mark.parametrize("top", [255, 65535])
def test_a_png_whose_sound_stream_ends_before_its_last_row_is_refused(tmp_path, top, short_png):
    # (a complete zlib stream of half the rows, CRCs sound: Pillow read the 8-bit one with the missing rows black,
    # without a word, and the probe measured it from its header, so a --sharp scan used the photo; deblur and
    # evaluate, which read a file with no probe first, restored or scored it)
    samples = _ramp(h=48, w=64, top=top)
    short_png(tmp_path / "half.png", samples)
    with pytest.raises(ImageError, match=r"half\.png: its image data ends before its last row .*replace it with a "
                                         r"good copy or re-export it$"):
        probe_image(tmp_path / "half.png")
    assert "ends before its last row" in probe_images([tmp_path / "half.png"])[0].args[0]
    with pytest.raises(ImageError, match=r"half\.png: its image data ends before its last row"):
        refuse_short_png(tmp_path / "half.png")  # (as deblur and evaluate check a file they read)
    if top > 255:  # (a 16-bit one at every read too)
        with pytest.raises(ImageError, match=r"half\.png: its image data ends before its last row"):
            read_image(tmp_path / "half.png")
    (tmp_path / "whole.png").write_bytes(png_bytes(samples))
    assert tuple(probe_image(tmp_path / "whole.png")) == (48, 64)
    refuse_short_png(tmp_path / "whole.png")
    assert read_image(tmp_path / "whole.png")[0].shape == (3, 48, 64)


def test_16bit_colour_png_keeps_all_bits(tmp_path):
    deep = _ramp(top=65535)
    write_image(tmp_path / "deep.png", deep.transpose(2, 0, 1).astype(np.float64) / 65535, bits=16)
    img, bits = read_image(tmp_path / "deep.png")
    assert bits == 16
    assert np.array_equal(np.rint(img.astype(np.float64) * 65535).astype(np.uint16).transpose(1, 2, 0), deep)
    # An independent decoder (Pillow reduces 16-bit colour to its high bytes) agrees with the file.
    assert np.array_equal(np.asarray(Image.open(tmp_path / "deep.png").convert("RGB")), (deep >> 8).astype(np.uint8))


def test_16bit_gray_png(tmp_path):
    deep = _ramp(c=1, top=65535)[:, :, 0]
    Image.fromarray(deep).save(tmp_path / "g16.png")
    img, bits = read_image(tmp_path / "g16.png", channels=1)
    assert bits == 16 and np.allclose(img[0], deep / 65535, atol=1e-6)


def _netpbm(path, data, maxval):
    """A binary PGM (``(H, W)`` data) or PPM (``(H, W, 3)``) made by hand, with a comment in the header."""
    magic = b"P5" if data.ndim == 2 else b"P6"
    path.write_bytes(magic + b"\n# by hand\n%d %d\n%d\n" % (data.shape[1], data.shape[0], maxval)
                     + data.astype(">u2" if maxval > 255 else np.uint8).tobytes())


@pytest.mark.parametrize("maxval", [65535, 1023])
def test_16bit_pgm_and_ppm_keep_all_bits(tmp_path, maxval):
    # Pillow reads 16-bit PPMs as 8-bit and 16-bit PGMs as int32 (which read_image took for a full
    # 32-bit range); netpbm samples are big-endian, each in [0, maxval].
    deep = _ramp(top=maxval)
    for name, data in (("deep.ppm", deep), ("deep.pgm", deep[:, :, 0])):
        _netpbm(tmp_path / name, data, maxval)
        img, bits = read_image(tmp_path / name, channels=None)
        expected = data.reshape(12, 10, -1).transpose(2, 0, 1) / maxval
        assert bits == 16 and img.shape == expected.shape
        assert np.abs(img - expected).max() <= 0.5 / 65535 + 1e-7
        write_image(tmp_path / f"out-{name}", img, bits=16)
        header = (b"P5" if data.ndim == 2 else b"P6") + b"\n10 12\n65535\n"
        written = (tmp_path / f"out-{name}").read_bytes()
        assert written.startswith(header)
        samples = np.frombuffer(written, ">u2", offset=len(header)).reshape(12, 10, -1).transpose(2, 0, 1)
        assert np.array_equal(samples, np.rint(expected * 65535))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out-deep.pgm")), np.rint(deep[:, :, 0] / maxval * 65535))
    write_image(tmp_path / "8bit.ppm", deep.transpose(2, 0, 1) / maxval)  # 8 bits, as Pillow reads them
    assert np.array_equal(np.asarray(Image.open(tmp_path / "8bit.ppm")), np.rint(deep / maxval * 255))


@pytest.mark.parametrize("comment", [10, 5000, 70000])
@pytest.mark.parametrize("kind", ["P5", "P6"])
def test_16bit_pgm_and_ppm_with_a_long_header_keep_their_values(tmp_path, comment, kind):
    # The header was looked for in the first 4096 bytes only; past that the file went to Pillow,
    # which read a 16-bit PGM as flat gray (32768 everywhere)
    deep = _ramp(c=1 if kind == "P5" else 3, top=65535)
    header = b"%s\n# %s\n%d %d\n# %s\n65535\n" % (kind.encode(), b"x" * comment, 10, 12, b"y" * comment)
    (tmp_path / "long.pnm").write_bytes(header + deep.astype(">u2").tobytes())
    img, bits = read_image(tmp_path / "long.pnm", channels=None)
    assert bits == 16 and np.array_equal(np.rint(img * 65535).astype(np.uint16).transpose(1, 2, 0), deep)
    assert probe_image(tmp_path / "long.pnm") == (12, 10)


@pytest.mark.parametrize("maxval", [65535, 1000])
@pytest.mark.parametrize("kind", ["P2", "P3"])
def test_plain_16bit_pgm_and_ppm_keep_their_values(tmp_path, maxval, kind):
    # The plain (ASCII) forms went to Pillow, which reads a plain PGM over 8 bits as 32-bit integers:
    # read_image made it a flat 0.5 gray. (A plain PPM came in at 8 bits.)
    deep = _ramp(c=1 if kind == "P2" else 3, top=65535).astype(np.int64) % (maxval + 1)
    text = " ".join(map(str, deep.ravel())).encode()
    (tmp_path / "plain.pgm").write_bytes(b"%s\n# a comment\n10 12\n%d\n%s\n" % (kind.encode(), maxval, text))
    img, bits = read_image(tmp_path / "plain.pgm", channels=None)
    assert bits == 16 and img.shape == (deep.shape[2], 12, 10)
    np.testing.assert_allclose(img.transpose(1, 2, 0), np.rint(deep * (65535 / maxval)) / 65535, atol=1e-7)
    (tmp_path / "bad.pgm").write_bytes(b"P2\n2 1\n65535\n7 x\n")
    with pytest.raises(ImageError, match="bad.pgm: cannot be read"):
        read_image(tmp_path / "bad.pgm")
    (tmp_path / "short.pgm").write_bytes(b"P2\n2 1\n65535\n7\n")
    with pytest.raises(ImageError, match="cut short"):
        read_image(tmp_path / "short.pgm")


@pytest.mark.parametrize("level", [10, -2, 2.5, True, "6"])
def test_a_compression_level_zlib_refuses_is_a_valueerror_that_says_the_range(tmp_path, level):
    # (zlib.error: "Bad compression level", naming neither the option nor its range; True passed as 1)
    with pytest.raises(ValueError, match=rf"compress_level {re.escape(repr(level))}: must be an integer from 0 to 9"):
        png_bytes(np.zeros((2, 2), np.uint8), compress_level=level)
    with pytest.raises(ValueError, match="compress_level"):
        write_image(tmp_path / "x.png", np.zeros((3, 2, 2), np.float32), compress_level=level)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(7, 9), (7, 9, 1), (7, 9, 2), (1, 1, 3), (6, 5, 3), (7, 9, 4)])
def test_written_pngs_decode_to_the_same_samples(dtype, shape):
    # Two independent decoders read back every sample: libpng (through torchvision) and Pillow
    # (which reduces 16-bit images with more than one channel to their high bytes, gray + alpha to RGBA).
    import torch
    from torchvision.io import ImageReadMode, decode_png
    data = np.random.default_rng(sum(shape)).integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)
    encoded = png_bytes(data, compress_level=1)
    libpng = decode_png(torch.frombuffer(bytearray(encoded), dtype=torch.uint8), ImageReadMode.UNCHANGED)
    assert np.array_equal(libpng.numpy().transpose(1, 2, 0).reshape(shape).astype(np.int64), data.astype(np.int64))
    pillow = np.asarray(Image.open(io.BytesIO(encoded)))
    if dtype == np.uint8 or data.ndim == 2 or shape[2] == 1:
        assert np.array_equal(pillow.reshape(shape).astype(np.int64), data.astype(np.int64))
    else:
        high = (data >> 8).astype(np.uint8)
        assert np.array_equal(pillow, high[:, :, [0, 0, 0, 1]] if shape[2] == 2 else high)
    assert png_bytes(data, compress_level=9) != encoded  # the level reaches zlib


@pytest.mark.parametrize("name", ["b.png", "b.pgm", "b.ppm"])
def test_big_endian_16_bit_arrays_are_written_as_uint16(tmp_path, name):
    # (e.g. from np.fromfile(..., ">u2"), as netpbm and FITS store them) were refused as
    # "needs uint8 or uint16, got >u2"
    deep = _ramp(c=1 if name.endswith(".pgm") else 3, top=65535)
    write_image(tmp_path / name, deep.astype(">u2"))
    img, bits = read_image(tmp_path / name, channels=None)
    assert bits == 16 and np.array_equal(np.rint(img * 65535).astype(np.uint16).transpose(1, 2, 0), deep)
    assert (tmp_path / name).read_bytes() == (png_bytes(deep) if name.endswith(".png") else pnm_bytes(deep))


@pytest.mark.parametrize("bits", [8, 16])
def test_the_suffix_decides_between_pgm_and_ppm(tmp_path, bits):
    # (a .pgm name got PPM data, P6, when the image was RGB: readers that go by the name failed on it)
    gray = _ramp(c=1, top=2 ** bits - 1).astype(np.uint8 if bits == 8 else np.uint16)
    write_image(tmp_path / "g.ppm", gray)
    assert (tmp_path / "g.ppm").read_bytes().startswith(b"P6")
    img, got = read_image(tmp_path / "g.ppm", channels=None)
    assert got == bits and img.shape[0] == 3 and np.array_equal(img[0], img[2])
    assert np.array_equal(np.rint(img[1] * (2 ** bits - 1)), gray[:, :, 0])
    with pytest.raises(ValueError, match=r"rgb\.pgm: a \.pgm holds one gray channel, not the 3 .*\.ppm or \.png"):
        write_image(tmp_path / "rgb.pgm", np.repeat(gray, 3, axis=2))
    assert not (tmp_path / "rgb.pgm").exists()
    write_image(tmp_path / "g.pgm", gray)  # gray stays gray
    assert (tmp_path / "g.pgm").read_bytes() == pnm_bytes(gray)


def test_png_writer_refuses_what_png_cannot_hold():
    with pytest.raises(ValueError, match="uint8 or uint16"):
        png_bytes(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        png_bytes(np.zeros((4, 4, 5), np.uint8))


@pytest.mark.parametrize("shape", [(3, 0, 5), (3, 4, 0), (1, 0, 0)])
@pytest.mark.parametrize("name", ["e.png", "e.ppm", "e.pgm"])
def test_an_empty_image_is_refused_not_written_unreadable(tmp_path, shape, name):
    # png_bytes wrote a PNG of width 0 and pnm_bytes PGM/PPMs of no pixels, which no decoder reads
    # (imageio's own writers refuse them); a height of 0 failed in png_bytes' reshape
    with pytest.raises(ValueError, match="at least one row and one column"):
        write_image(tmp_path / name, np.zeros(shape, np.float32))
    assert list(tmp_path.iterdir()) == []


def test_16bit_gray_alpha_png_keeps_all_bits(tmp_path):
    deep = _ramp(c=2, top=65535)
    (tmp_path / "la.png").write_bytes(png_bytes(deep))
    img, bits = read_image(tmp_path / "la.png", channels=1)
    gray, alpha = deep[:, :, 0] / 65535, deep[:, :, 1] / 65535
    assert bits == 16 and np.allclose(img[0], gray * alpha + 1 - alpha, atol=1e-6)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"),
    # (imageio said "Could not find a backend to open `bad.png`` with iomode `r`": its own words)
    (b"not an image at all", r"cannot be read as an image \(no decoder recognises its contents as \.png"),
    # (under 4 bytes, Pillow's BMP test, which imageio tries first, raised struct.error: "error: unpack_from ...")
    (b"x\n", r"cannot be read as an image \(no decoder recognises its contents as \.png"),
    (b"\x89PN", r"cannot be read as an image \(no decoder recognises its contents as \.png"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "cannot be read as an image")])
def test_bad_files_name_the_file(tmp_path, content, reason):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(ImageError, match=f"bad.png.*{reason}.*remove it") as err:
        read_image(bad)
    assert "\n" not in str(err.value)  # one line: the decoder's multi-line hints are dropped
    assert "backend" not in str(err.value) and "iomode" not in str(err.value)
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_to_uint_needs_no_whole_image_float64_temporaries():
    # Writing a large image (unpaired.deblur's output, evaluate's --grid) peaked at three float64
    # copies of it; converted a block of rows at a time, the peak is the output and a block.
    import tracemalloc
    image = np.random.default_rng(0).random((3, 700, 900), dtype=np.float32)
    image[0, :5] = [[-0.2], [1.3], [0.5 / 255], [1.5 / 255], [np.nextafter(0.5, 1) / 255]]
    expected = np.rint(np.clip(image.astype(np.float64), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    tracemalloc.start()
    try:
        out = to_uint(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(out, expected) and out.dtype == np.uint8
    assert peak < 0.6 * image.nbytes  # of 7.6 MB: the uint8 output (1.9 MB) and a block (it was 45 MB)
    gray = image[:1, :9, :7].astype(np.float64)
    assert np.array_equal(to_uint(gray, 16), np.rint(np.clip(gray[0], 0, 1) * 65535).astype(np.uint16))


def test_to_uint_of_no_rows_is_empty():
    # the block size came from arr[0], which an image of no rows does not have (an IndexError)
    assert to_uint(np.zeros((0, 5)), 8).shape == (0, 5)
    assert to_uint(np.zeros((3, 0, 4)), 16).shape == (0, 4, 3)


def test_to_uint_rounds_and_clips():
    x = np.array([[[-0.1, 0.0, 0.4 / 255, 0.6 / 255, 1.0, 1.5]]])
    assert to_uint(x, 8).tolist() == [[0, 0, 0, 1, 255, 255]]
    assert to_uint(np.array([[[0.5]]]), 16).item() == 32768
    with pytest.raises(ValueError):
        to_uint(x, 12)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("name", ["step_0000003.pt", "a.b.tar.gz", "no_suffix", "000017.png"])
def test_temporaries_are_recognised_by_name_and_glob(tmp_path, name):
    # what a SIGKILL inside the block leaves is what the commands' clean-ups must find, and nothing else
    with atomic_path(tmp_path / "sub" / name) as tmp:
        assert temporary_target(tmp.name) == name
        assert list(tmp_path.glob(temporary_glob("sub/" + name))) == [tmp]
        assert list(tmp_path.glob(temporary_glob("sub/*" + Path(name).suffix))) == [tmp]
    for other in (name, "." + name, f".{name}.tmp", f".{Path(name).stem}.short.tmp{Path(name).suffix}"):
        assert temporary_target(other) is None


def test_npz_writer_streams_arrays_in_pieces_and_gives_the_same_bytes(tmp_path):
    rng = np.random.default_rng(0)
    kernels = rng.random((11, 5, 5)).astype(np.float32)
    paths = rng.random((11, 7, 2))
    for name, pieces in (("a.npz", (11,)), ("b.npz", (4, 4, 3)), ("c.npz", (1,) * 11)):
        with NpzWriter(tmp_path / name) as npz:
            npz.add("seed", np.int64(3))
            npz.add("config", np.array('{"k": 5}'))
            npz.begin("kernels", kernels.shape, kernels.dtype)
            npz.begin("paths", paths.shape, paths.dtype)  # two arrays filled side by side, as generate does
            start = 0
            for size in pieces:
                npz.append("kernels", kernels[start:start + size])
                npz.append("paths", paths[start:start + size])
                start += size
        data = np.load(tmp_path / name)
        assert sorted(data.files) == ["config", "kernels", "paths", "seed"]
        assert np.array_equal(data["kernels"], kernels) and data["kernels"].dtype == np.float32
        assert np.array_equal(data["paths"], paths) and int(data["seed"]) == 3 and str(data["config"]) == '{"k": 5}'
    # fixed timestamps: the same arrays give the same file, however they were cut
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes() == (tmp_path / "c.npz").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz", "c.npz"]  # no staged parts left


def test_read_npz_maps_stored_arrays_and_reads_what_numpy_reads(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"kernels": rng.random((9, 5, 5)).astype(np.float32), "paths": rng.random((9, 4, 2)),
              "fortran": np.asfortranarray(rng.random((3, 4))), "empty": np.zeros((0, 3)),
              "seed": np.int64(7), "config": np.array('{"k": 5}')}
    with NpzWriter(tmp_path / "w.npz") as npz:
        for name, value in arrays.items():
            npz.add(name, value)
    np.savez(tmp_path / "s.npz", **arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    for name in ("w.npz", "s.npz", "c.npz"):
        data = read_npz(tmp_path / name)
        assert sorted(data) == sorted(arrays)
        for key, value in arrays.items():
            assert data[key].dtype == value.dtype and data[key].shape == value.shape
            assert np.array_equal(data[key], value), (name, key)
        # stored (uncompressed) arrays are mapped, not read into memory; compressed ones are read
        assert isinstance(data["kernels"], np.memmap) == (name != "c.npz")
        assert not data["kernels"].flags.writeable or name == "c.npz"
    np.savez(tmp_path / "o.npz", o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        read_npz(tmp_path / "o.npz")
    # a damaged array (bytes overwritten inside the stored kernels) is an error, not wrong numbers
    data = bytearray((tmp_path / "w.npz").read_bytes())
    at = data.index(arrays["kernels"].tobytes()[:64]) + 100
    data[at:at + 8] = bytes(8)
    (tmp_path / "d.npz").write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile, match="'kernels' is damaged or cut short"):
        read_npz(tmp_path / "d.npz")


def test_read_npz_refuses_an_array_whose_name_is_damaged_in_the_zip_directory(tmp_path):
    """No CRC covers the zip's directory, where each member's name is stored a second time: numpy.load (zipfile)
    compares it with the member's own header, read_npz did not, so a damaged byte there renamed an array without
    a word (blursynth inspect then printed a median under the wrong name, or said 'kernels' was missing)."""
    np.savez(tmp_path / "k.npz", kernels=np.ones((2, 3, 3), np.float32), param_x=np.arange(2.0))
    data = (tmp_path / "k.npz").read_bytes()
    at = data.rindex(b"param_x.npy")  # the directory's copy (the first is the member's own header)
    (tmp_path / "d.npz").write_bytes(data[:at] + b"param_y.npy" + data[at + 11:])
    with pytest.raises(zipfile.BadZipFile):
        np.load(tmp_path / "d.npz")["param_y"]
    with pytest.raises(zipfile.BadZipFile, match="'param_y' is damaged"):
        read_npz(tmp_path / "d.npz")


def test_npz_writer_refuses_what_does_not_fit_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"'k' has 4 of its 10 rows"):
        with NpzWriter(tmp_path / "short.npz") as npz:
            npz.begin("k", (10, 3), np.float32)
            npz.append("k", np.zeros((4, 3), np.float32))
    npz = NpzWriter(tmp_path / "bad.npz")
    npz.begin("k", (10, 3), np.float32)
    for rows in (np.zeros((4, 3)), np.zeros((4, 2), np.float32), np.zeros((11, 3), np.float32)):  # dtype, shape, too many
        with pytest.raises(ValueError, match=r"do not continue 'k'"):
            npz.append("k", rows)
    with pytest.raises(ValueError, match=r"'k' written twice"):
        npz.begin("k", (10, 3), np.float32)
    npz.discard()
    with pytest.raises(RuntimeError, match="stop"):
        with NpzWriter(tmp_path / "stopped.npz") as npz:
            npz.add("x", np.arange(3))
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_broken_symbolic_link_is_named_as_such(tmp_path):
    # ls lists it, so "no such file" would puzzle: say it is a link and where it points
    (tmp_path / "photo.jpg").symlink_to(tmp_path / "gone" / "photo.jpg")
    for read in (read_image, probe_image):
        with pytest.raises(ImageError, match=r"photo\.jpg: broken symbolic link \(to .*gone/photo\.jpg, which does "
                                             r"not exist\); fix or remove the link"):
            read(tmp_path / "photo.jpg")
    (missing,) = probe_images([tmp_path / "photo.jpg"])
    assert "broken symbolic link" in str(missing)
    # a loop of links: each one's target is there (a link), so "which does not exist" puzzled too
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    for read in (read_image, probe_image):
        with pytest.raises(ImageError, match=r"a\.jpg: broken symbolic link \(to .*b\.jpg, a loop of links\); "
                                             r"fix or remove the link"):
            read(tmp_path / "a.jpg")


def test_probe_decodes_without_converting_to_float(tmp_path):
    # a folder scan probes one file per thread: a TIFF (decoded to learn that it is sound) must not
    # also be converted to float RGB, 12 times the memory of a 1-bit scan's samples (of 1 byte each)
    import tracemalloc
    Image.new("1", (2000, 1500), 1).save(tmp_path / "scan.tif", compression="tiff_deflate")
    nan = np.full((4, 5), np.nan, np.float32)
    nan[0, 0] = 0.5
    Image.fromarray(nan).save(tmp_path / "nan.tif")  # mode F
    tracemalloc.start()
    try:
        assert probe_image(tmp_path / "scan.tif") == (1500, 2000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2000 * 1500  # (float RGB: 36 MB)
    with pytest.raises(ImageError, match=r"nan\.tif: contains NaN or infinite values; remove it or re-export it"):
        probe_image(tmp_path / "nan.tif")


def test_an_image_too_large_for_memory_says_so(tmp_path, monkeypatch):
    # a MemoryError while decoding a valid file said "cannot be read as an image ...; re-export it as PNG"
    import imageio.v3 as iio
    path = tmp_path / "huge.png"
    iio.imwrite(path, np.zeros((8, 8, 3), np.uint8))

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("blursynth.io._decode", no_memory)
    with pytest.raises(ImageError, match=r"huge\.png: too large to decode in the memory available here; downscale it"):
        read_image(path)


def test_bad_channels_and_a_folder_are_named(tmp_path):
    Image.fromarray(_ramp()).save(tmp_path / "rgb.png")
    for bad in (0, 2, 4, "3", True):  # "3" was read, then refused as "has 3 channels, cannot convert to 3"
        with pytest.raises(ValueError, match="channels must be 1"):
            read_image(tmp_path / "rgb.png", channels=bad)
    assert read_image(tmp_path / "rgb.png", channels=np.int64(1))[0].shape == (1, 12, 10)
    with pytest.raises(ImageError, match="is a folder, not an image file"):  # was "no such file"
        read_image(tmp_path)
    with pytest.raises(ImageError, match="is a folder"):
        probe_image(tmp_path)


def test_to_uint_refuses_nan_rather_than_writing_black(tmp_path):
    image = np.full((3, 4, 5), 0.5, np.float32)
    image[1, 3, 4] = np.nan  # in the last block: the check is made a block at a time
    for bad in (image, np.float64("nan")):
        with pytest.raises(ValueError, match="NaN"):
            to_uint(bad)
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "nan.png", image)
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left


@pytest.mark.parametrize("name,bits,said", [("x", 8, "a name without a suffix"), ("x.txt", 8, "the suffix .txt"),
                                            ("x.jpg", 16, ".jpg holds 8 bits"), ("x.webp", 16, ".webp holds 8 bits")])
def test_write_image_names_the_file_for_a_format_it_cannot_write(tmp_path, name, bits, said):
    # Before: IndexError, imageio's complaint about the temporary ".x.RANDOM.tmp.txt", or Pillow's
    # "Cannot handle this data type" for 16 bits in a JPEG.
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name}: ") + ".*" + re.escape(said)):
        write_image(tmp_path / name, np.full((3, 4, 5), 0.5, np.float32), bits=bits)
    assert not list(tmp_path.iterdir())
    write_image(tmp_path / "deep.tif", np.full((3, 4, 5), 0.5, np.float32), bits=16)  # 16-bit TIFF is written
    assert read_image(tmp_path / "deep.tif")[1] == 16


def test_write_image_of_a_16_bit_array_in_an_8_bit_format_names_the_fix_that_works(tmp_path):
    # bits is not used for an integer array, so "use bits=8" would not help: the array must be 8-bit
    with pytest.raises(ValueError, match="use a uint8 array or one of"):
        write_image(tmp_path / "x.jpg", np.zeros((4, 5), np.uint16), bits=8)
    with pytest.raises(ValueError, match="use bits=8 or one of"):
        write_image(tmp_path / "x.jpg", np.zeros((4, 5), np.float32), bits=16)
    assert not list(tmp_path.iterdir())


def test_probe_images_uses_the_cores_this_process_may_run_on(tmp_path, monkeypatch):
    # (a Slurm job given 2 cores of a 128-core machine started 128 decoding threads)
    import blursynth.io as io_mod
    Image.fromarray(_ramp()).save(tmp_path / "a.png")
    pools = []
    real = io_mod.ThreadPoolExecutor
    monkeypatch.setattr(io_mod, "ThreadPoolExecutor", lambda n: pools.append(n) or real(n))
    monkeypatch.setattr(io_mod.os, "sched_getaffinity", lambda pid: {3, 5}, raising=False)
    monkeypatch.setattr(io_mod.os, "cpu_count", lambda: 128)
    assert probe_images([tmp_path / "a.png"]) == [(12, 10)] and pools == [2]
    monkeypatch.delattr(io_mod.os, "sched_getaffinity")  # (macOS, Windows)
    assert probe_images([tmp_path / "a.png"]) == [(12, 10)] and pools == [2, 128]


def test_lock_folder_is_exclusive_and_none_where_there_are_no_locks(tmp_path, monkeypatch):
    # (NFS mounted without a lock daemon: flock fails with ENOLCK; a dataset, generate or training run there
    # goes on unlocked rather than stopping in a traceback)
    import errno
    import os

    import blursynth.io as io_mod
    from blursynth.io import lock_folder
    if io_mod.fcntl is None:
        pytest.skip("no folder locks on this system")
    fd = lock_folder(tmp_path)
    if fd is None:
        pytest.skip("no folder locks on this file system")
    try:
        with pytest.raises(BlockingIOError):  # (another open of the folder: another process's, as it were)
            lock_folder(tmp_path)
    finally:
        os.close(fd)
    fd = lock_folder(tmp_path)  # free again once closed
    assert isinstance(fd, int)
    os.close(fd)
    tried = []

    def no_locks(fd, operation):
        tried.append(fd)
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(io_mod.fcntl, "flock", no_locks)
    assert lock_folder(tmp_path) is None and len(tried) == 1
    with pytest.raises(OSError, match="Bad file descriptor"):  # (and its descriptor closed, not leaked)
        os.fstat(tried[0])
    monkeypatch.setattr(io_mod, "fcntl", None)  # (Windows)
    assert lock_folder(tmp_path) is None


def test_probe_images_refuses_one_path_and_bad_thread_counts(tmp_path):
    Image.fromarray(_ramp()).save(tmp_path / "a.png")
    with pytest.raises(TypeError, match=r"list of paths.*pass \[path\]"):  # was one "no such file" per letter
        probe_images(str(tmp_path / "a.png"))
    for bad in (0, -1, 1.5, True):  # -1: "max_workers must be greater than 0"; 0 and 1.5 passed
        with pytest.raises(ValueError, match="threads must be an integer >= 1"):
            probe_images([tmp_path / "a.png"], threads=bad)
    assert probe_images([tmp_path / "a.png"], threads=np.int64(2)) == [(12, 10)]


_SAMPLE_FILES = {  # name -> samples (H, W[, C]) of the file's own type
    "rgb.png": _ramp(23, 17, 3), "rgba.png": _ramp(23, 17, 4), "gray.png": _ramp(23, 17, 1)[:, :, 0],
    "gray_alpha.png": _ramp(23, 17, 2), "rgb16.png": _ramp(23, 17, 3, 65535), "gray16.png": _ramp(23, 17, 1, 65535)[:, :, 0],
    "rgb.tif": _ramp(23, 17, 3).astype(np.float32) / 300, "int32.tif": _ramp(23, 17, 1, 65535)[:, :, 0].astype(np.int32) - 999,
}


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(_SAMPLE_FILES)), channels=st.sampled_from([1, 3, None]),
       y=st.integers(0, 22), x=st.integers(0, 16), h=st.integers(1, 23), w=st.integers(1, 17))
def test_a_window_of_the_samples_converts_as_read_image_converts_it(tmp_path_factory, name, channels, y, x, h, w):
    # blursynth dataset and the trainers convert only the crop they take of a photo: it must hold the
    # values read_image gives that window, for every sample type and channel choice
    import imageio.v3 as iio
    path = tmp_path_factory.getbasetemp() / f"window_{name}"
    if not path.exists():
        data = _SAMPLE_FILES[name]
        if name.endswith(".png"):
            path.write_bytes(png_bytes(data))
        else:
            iio.imwrite(path, data)
    whole, bits = read_image(path, channels)
    samples = read_samples(path)
    assert samples.dtype == _SAMPLE_FILES[name].dtype or name.endswith(".tif")
    window, window_bits = to_float(samples[y:y + h, x:x + w], channels, path)
    assert window_bits == bits and window.flags.c_contiguous
    assert np.array_equal(window, whole[:, y:y + h, x:x + w])


def test_gray_from_rgb_uses_the_rec_709_luma_weights(tmp_path):
    """channels=1 turns RGB into Y = 0.2126 R + 0.7152 G + 0.0722 B (Rec. 709): pure red, green and blue
    come out as their own weights (red and blue swapped would be 0.0722 and 0.2126)."""
    rgb = np.zeros((3, 4, 6), np.float32)
    rgb[0, :, :2] = rgb[1, :, 2:4] = rgb[2, :, 4:] = 1.0
    write_image(tmp_path / "rgb.png", rgb)
    gray = read_image(tmp_path / "rgb.png", channels=1)[0]
    assert gray.shape == (1, 4, 6)
    assert np.allclose(gray[0, 0], [0.2126, 0.2126, 0.7152, 0.7152, 0.0722, 0.0722], atol=1e-6)


def test_other_integer_and_one_bit_samples_are_scaled_by_their_range():
    """Integer types other than 8/16-bit unsigned map their whole range onto [0, 1] (a signed type's
    minimum to 0, not to a negative value clipped later); 1-bit (bool) samples are 0 and exactly 1."""
    signed = np.array([[-32768, 0, 32767]], np.int16)
    img, bits = to_float(signed, 1)
    assert bits == 16 and np.allclose(img[0, 0], [0.0, 32768 / 65535, 1.0], atol=1e-7)
    img, bits = to_float(np.array([[-2**31, 2**31 - 1]], np.int32), 1)
    assert bits == 16 and np.array_equal(img[0, 0], [0.0, 1.0])
    img, bits = to_float(np.array([[-128, 0, 127]], np.int8), 1)  # (8 bits: it was reported, and written, as 16)
    assert bits == 8 and np.allclose(img[0, 0], [0.0, 128 / 255, 1.0], atol=1e-7)
    img, bits = to_float(np.array([[False, True]]), 3)
    assert bits == 8 and img.shape == (3, 1, 2) and np.array_equal(img[:, 0], [[0.0, 1.0]] * 3)


@pytest.mark.parametrize("mask", [0o002, 0o027])
def test_written_files_get_the_permissions_of_the_umask(tmp_path, mask):
    """atomic_path's temporary is made 0600; the result gets what open() would give a new file under the
    process umask (0666 less the mask), whatever that mask is, not a fixed 0644."""
    import os
    saved = os.umask(mask)
    try:
        write_image(tmp_path / "a.png", np.zeros((3, 2, 2), np.float32))
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(saved)
    for name in ("a.png", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_a_name_that_is_not_utf8_does_not_crash_the_decoders(tmp_path):
    """A file Pillow cannot read goes on to imageio's other plugins; OpenCV's (where installed) took the
    name's lone surrogates and crashed the process with a segmentation fault: a stray notes file named in
    Latin-1 ended a whole --sharp scan without a word. In a child process, so that a crash is a failure."""
    import os
    import subprocess
    import sys
    folder = tmp_path / "photos"
    folder.mkdir()
    for raw, data in ((b"not\xe9s.txt", b"hello"), (b"broken\xff.jpg", b"x"), (b"good\xe9.png", png_bytes(
            np.full((12, 10, 3), 200, np.uint8)))):
        try:
            (folder / os.fsdecode(raw)).write_bytes(data)
        except (OSError, UnicodeError):  # (a file system that takes UTF-8 names only, as macOS's)
            pytest.skip("this file system refuses names that are not UTF-8")
    root = Path(__file__).resolve().parent.parent
    code = ("import sys; from blursynth.pairs import ImageFolder\n"
            "f = ImageFolder.scan(sys.argv[1], (8, 8))\n"
            "print(len(f.files), sorted(s['reason'].split(' ')[0] for s in f.skipped))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "['cannot',", "'not']"]


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="RLIMIT_FSIZE and SIGXFSZ are POSIX")
@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_a_write_that_falls_short_is_an_oserror_naming_the_file(tmp_path, suffix):
    # A disk that fills up during a write: imageio's TIFF writer answered NumPy's short write with
    # ndarray.tostring, gone in NumPy 2, so deblur died in "AttributeError: ... tostring" instead of
    # stopping with one line. A file-size limit makes the write fall short as a full disk does (EFBIG).
    import os
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / f"out{suffix}"
    code = ("import errno, resource, signal, sys, numpy as np\n"
            "from blursynth.io import write_image\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))\n"
            "try:\n"
            "    write_image(sys.argv[1], np.random.default_rng(0).integers(0, 256, (200, 300, 3), np.uint8))\n"
            "except OSError as exc:\n"
            "    print(errno.errorcode.get(exc.errno), exc.filename)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert run.stdout.split() == ["EFBIG", str(out)]
    assert list(tmp_path.iterdir()) == []  # (no temporary left, no file cut short)


def test_a_damaged_16bit_png_never_reaches_torchvisions_decoder(tmp_path, monkeypatch):
    """16-bit PNGs are decoded by torchvision, whose libpng error handling kills the process (a segmentation
    fault) past the header: one byte damaged in the compressed rows of a photo took a --sharp scan down without
    a word. Such a file is refused before it gets there (the decoder is replaced here, so that reaching it fails
    the test rather than ending pytest), as one whose damage keeps its chunk's CRC sound (an encoder's bug)."""
    import torch
    import torchvision.io
    write_image(tmp_path / "deep.png", _ramp(h=40, w=50, top=65535).transpose(2, 0, 1) / 65535, bits=16)
    data = bytearray((tmp_path / "deep.png").read_bytes())
    at = data.index(b"IDAT")
    data[at + 200] ^= 0xFF  # bit rot in the image data: its chunk's CRC fails
    (tmp_path / "rot.png").write_bytes(bytes(data))
    (length,) = struct.unpack(">I", data[at - 4:at])
    data[at + 4 + length:at + 8 + length] = struct.pack(">I", zlib.crc32(data[at:at + 4 + length]))
    (tmp_path / "sound_crc.png").write_bytes(bytes(data))
    real = torchvision.io.decode_png
    with warnings.catch_warnings():  # (torchvision 0.29 marks its codecs deprecated)
        warnings.simplefilter("ignore", DeprecationWarning)
        assert real(torch.from_numpy(np.frombuffer((tmp_path / "deep.png").read_bytes(), np.uint8).copy())).shape[0] == 3

    _unreached(monkeypatch, torchvision.io, "decode_png", "torchvision's decoder was handed a damaged PNG: a "
               "segmentation fault")
    for name in ("rot.png", "sound_crc.png"):
        _refused(tmp_path / name, rf"{name}: damaged \(.*\); replace it with a good copy")


@pytest.mark.parametrize("layout", ["idat_split", "unknown_critical", "two_ihdr"])
def test_a_16bit_png_with_chunks_out_of_place_is_refused_alike_by_probe_and_read(tmp_path, monkeypatch, layout):
    """Sound CRCs and rows, but chunks libpng refuses: IDATs split by another chunk killed the process in
    torchvision's decoder (a segmentation fault) and the others failed only when read, after probe_image had
    passed them (a --sharp scan kept the photo, and the run stopped at its first pair)."""
    import torchvision.io
    write_image(tmp_path / "deep.png", _ramp(h=40, w=50, top=65535).transpose(2, 0, 1) / 65535, bits=16)
    data = (tmp_path / "deep.png").read_bytes()
    at = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[at:at + 4])
    ihdr, idat, rest = data[8:33], data[at + 8:at + 8 + length], data[at + 12 + length:]

    middle = {"idat_split": _chunk(b"IDAT", idat[:50]) + _chunk(b"tEXt", b"a\0b") + _chunk(b"IDAT", idat[50:]),
              "unknown_critical": _chunk(b"XYZW", b"hello") + _chunk(b"IDAT", idat),
              "two_ihdr": ihdr + _chunk(b"IDAT", idat)}[layout]
    (tmp_path / "p.png").write_bytes(data[:33] + middle + rest)

    _unreached(monkeypatch, torchvision.io, "decode_png", "torchvision's decoder was handed a PNG libpng refuses: "
               "a segmentation fault")
    _refused(tmp_path / "p.png", r"p\.png: damaged \(.*out of place")


@pytest.mark.parametrize("flaw", ["filter_method", "data_after_the_stream", "chunk_type"])
def test_a_16bit_png_libpng_refuses_is_refused_by_the_probe_too(tmp_path, flaw):
    """Sound CRCs, but what libpng refuses (an IHDR filter method other than 0, compressed data after the zlib
    stream's end, a chunk type whose third letter is lower-case): probe_image passed such a 16-bit PNG, so a
    --sharp scan kept it, and the run stopped at the first pair that read it."""
    write_image(tmp_path / "deep.png", _ramp(h=40, w=50, top=65535).transpose(2, 0, 1) / 65535, bits=16)
    data = (tmp_path / "deep.png").read_bytes()
    at = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[at:at + 4])
    ihdr, idat, rest = bytearray(data[16:29]), data[at + 8:at + 8 + length], data[at + 12 + length:]

    if flaw == "filter_method":
        ihdr[11] = 4
    body = _chunk(b"IDAT", idat + idat if flaw == "data_after_the_stream" else idat)
    extra = _chunk(b"abcd", b"x") if flaw == "chunk_type" else b""
    (tmp_path / "p.png").write_bytes(data[:8] + _chunk(b"IHDR", bytes(ihdr)) + extra + body + rest)
    _refused(tmp_path / "p.png", r"p\.png: ")


def test_a_tiff_whose_strips_lie_past_its_end_is_an_imageerror(tmp_path):
    """tifffile decodes a TIFF whose StripOffsets point past the end of the file (a cut or damaged copy) to a
    stack of 0 frames; taking the first frame was an IndexError, which a --sharp scan does not catch: the whole
    `blursynth dataset` run died with a traceback instead of listing the file as skipped."""
    write_image(tmp_path / "scan.tif", _ramp(h=20, w=30, top=65535).transpose(2, 0, 1) / 65535, bits=16)
    data = bytearray((tmp_path / "scan.tif").read_bytes())
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    for k in range(struct.unpack_from(order + "H", data, ifd)[0]):
        if struct.unpack_from(order + "HHI", data, ifd + 2 + 12 * k) == (273, 4, 1):  # StripOffsets, one LONG
            struct.pack_into(order + "I", data, ifd + 10 + 12 * k, 0xFF000000)
    (tmp_path / "scan.tif").write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as said:  # (tifffile's "failed to reshape" printed beside the line)
        warnings.simplefilter("always")
        _refused(tmp_path / "scan.tif", r"scan\.tif: a damaged TIFF \(its image data lies past the end of the file: "
                 r"cut short.*replace it with a good copy")
    assert [str(w.message) for w in said] == []
    assert "image data lies past the end" in probe_images([tmp_path / "scan.tif"])[0].args[0]


def _tiff_writer():
    """tifffile where it is installed, else the release imageio carries (TIFFs are read through either)."""
    try:
        import tifffile
    except ImportError:
        from imageio.plugins import _tifffile as tifffile
    return tifffile


@pytest.mark.parametrize("layout", [dict(rowsperstrip=8), dict(tile=(16, 16))])
@pytest.mark.parametrize("big", [False, True])
def test_a_tiff_cut_short_is_refused_by_its_layout_whichever_tifffile_reads_it(tmp_path, layout, big):
    """imageio's own tifffile read a tiled TIFF cut in half with its missing tiles black, without a word (a
    --sharp scan used the photo), and a stripped one with "cannot reshape"; the tifffile release installed
    beside it said "failed to read ... bytes" instead. Where the strips or tiles lie is checked from the file."""
    tifffile = _tiff_writer()
    a = _ramp(h=64, w=48)
    with tifffile.TiffWriter(tmp_path / "whole.tif", bigtiff=big) as tw:
        (tw.write if hasattr(tw, "write") else tw.save)(a, photometric="rgb", **layout)
    img, bits = read_image(tmp_path / "whole.tif")
    assert bits == 8 and np.array_equal(np.rint(img * 255).astype(np.uint8).transpose(1, 2, 0), a)
    data = (tmp_path / "whole.tif").read_bytes()
    for cut in (len(data) // 2, len(data) - 1):
        (tmp_path / "cut.tif").write_bytes(data[:cut])
        _refused(tmp_path / "cut.tif", r"cut\.tif: a damaged TIFF \(its image data lies past the end of the file: "
                 r"cut short.*\); replace it with a good copy or re-export it")


@pytest.mark.parametrize("writer", ["pillow", "blursynth"])
def test_a_tiff_whose_next_directory_points_into_its_pixels_is_refused_at_once(tmp_path, monkeypatch, writer):
    """One damaged offset (the next image directory's, pointing into the pixels at byte 8) made imageio's tifffile
    parse pixels as tags of any size: probing a 700 KB photo took minutes and GBs of memory, so a --sharp scan
    seemed to hang, then ran out of memory. A chain of directories that leaves the file is refused from the header."""
    if writer == "pillow":
        Image.fromarray(_ramp(h=200, w=300)).save(tmp_path / "scan.tif")
    else:
        write_image(tmp_path / "scan.tif", _ramp(h=200, w=300, top=65535).transpose(2, 0, 1) / 65535, bits=16)
    data = bytearray((tmp_path / "scan.tif").read_bytes())
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    struct.pack_into(order + "I", data, ifd + 2 + 12 * struct.unpack_from(order + "H", data, ifd)[0], 8)
    (tmp_path / "scan.tif").write_bytes(bytes(data))
    import blursynth.io as bio
    # (reaching the decoder is the hang: fail instead)
    _unreached(monkeypatch, bio.iio, "imopen", "a TIFF whose directories leave the file went to the decoder")
    _refused(tmp_path / "scan.tif", r"scan\.tif: a damaged TIFF .*replace it with a good copy")


@pytest.mark.parametrize("suffix", [".psd", ".xbm", ".exr"])
def test_a_format_nothing_here_writes_is_a_valueerror_naming_the_file_not_a_failing_disk(tmp_path, suffix):
    """Suffixes imageio knows but cannot write here: Pillow reads .psd but has no writer (a bare KeyError: 'PSD'),
    .xbm holds 1-bit images only, and .exr needs a plugin that is not installed. The last two came out as
    "[Errno 5] the write fell short (Could not find a backend to open `.../.out.x1y2z3.tmp.exr`...)": a disk
    error, naming the temporary, on a sound disk."""
    out = tmp_path / f"out{suffix}"
    try:
        write_image(out, np.zeros((3, 4, 5), np.float32))
    except ValueError as exc:
        assert str(exc).startswith(f"{out}: cannot be written as {suffix} here (") and ".tmp" not in str(exc)
    else:
        pytest.skip(f"a plugin that writes {suffix} is installed here")
    assert list(tmp_path.iterdir()) == []  # (no temporary left)


def test_float_samples_outside_the_unit_range_are_clipped():
    """Float samples (a 32-bit TIFF, e.g. an HDR export) are clipped to [0, 1], as documented: left as they
    were, -0.5 and 1.5 went on into a pipeline that takes display values in [0, 1]."""
    samples = np.array([[[-0.5, 0.25, 1.5], [0.0, 1.0, 3.0]]], np.float32)  # (1, 2, 3): H, W, RGB
    img, bits = to_float(samples, 3)
    assert bits == 32 and img.dtype == np.float32 and img.shape == (3, 1, 2)
    assert np.array_equal(img[:, 0, 0], [0.0, 0.25, 1.0]) and np.array_equal(img[:, 0, 1], [0.0, 1.0, 1.0])


def test_samples_with_more_than_four_channels_keep_their_first_three_as_rgb():
    """A file with extra channels (a TIFF with extra samples: 5 here) reads as its first three channels, RGB,
    rather than being refused as having too many."""
    raw = _ramp(4, 6, 5)
    img, bits = to_float(raw, 3)
    assert bits == 8 and img.shape == (3, 4, 6)
    assert np.array_equal(img, raw[:, :, :3].transpose(2, 0, 1) / np.float32(255))
    assert to_float(raw, None)[0].shape == (3, 4, 6)


def test_a_png_row_with_an_unknown_filter_type_is_refused_by_the_probe_as_by_reading(tmp_path):
    """Sound chunks (CRCs) and a sound zlib stream of the right length, but one row's filter type is 5
    (PNG defines 0-4): decoders refuse it, so the probe must not pass it as readable (a scan would keep a
    photo that fails later, mid-run)."""
    h, w = 6, 5
    rows = b"".join(bytes([5 if y == 3 else 0]) + bytes(range(y, y + w)) for y in range(h))

    (tmp_path / "filter5.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                                           + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))
    assert _probe_png(tmp_path / "filter5.png") is None
    assert _probe_agrees(tmp_path / "filter5.png")  # both refuse it, with the same message


@pytest.mark.parametrize("kind", [b"P5", b"P2"])
def test_16bit_pgm_samples_above_maxval_read_as_white_not_wrapped(tmp_path, kind):
    """A netpbm sample above its maxval (a damaged or sloppily written file) is taken as maxval, white: scaled
    as it was, 1500 of maxval 1000 came to 98302, which wrapped round in 16 bits to a dark 32766."""
    values = np.array([[0, 500, 1000, 1500]], np.uint16)
    header = kind + b"\n4 1\n1000\n"
    body = values.astype(">u2").tobytes() if kind == b"P5" else b" ".join(b"%d" % v for v in values.ravel()) + b"\n"
    (tmp_path / "over.pgm").write_bytes(header + body)
    img, bits = read_image(tmp_path / "over.pgm", channels=1)
    assert bits == 16 and np.abs(img[0, 0] - [0.0, 0.5, 1.0, 1.0]).max() <= 0.5 / 65535 + 1e-7


def test_to_uint_of_a_single_value_rounds_and_clips():
    """A 0-d array converts as each sample of an image does: rounded to the nearest level, clipped."""
    assert to_uint(np.array(0.9 / 255)) == 1 and to_uint(np.array(0.4 / 255)) == 0
    assert to_uint(np.array(1.7)) == 255 and to_uint(np.array(-0.2), 16) == 0
    assert to_uint(np.float32(0.5), 16) == 32768  # (65535 * 0.5 = 32767.5: half to even)
