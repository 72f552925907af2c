"""Perturbations: measured strength, output sizes, mask co-transform, seeding and specs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.errors import UserError
from bench.perturbations.base import sample_rng
from bench.perturbations.spec import perturbation_from_spec
from bench.plugins import PERTURBATIONS, create_perturbation

# IJG (libjpeg) standard tables, Annex K of ITU-T T.81, row-major order
LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])
CHROMA = np.array([17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5
                  + [47, 66] + [99] * 38)


def ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


def quality_from_tables(tables: dict[int, list[int]]) -> int:
    """The IJG quality whose scaled tables equal the file's (read back from the JPEG)."""
    found = [q for q in range(1, 101) if np.array_equal(ijg_table(LUMA, q), tables[0])
             and np.array_equal(ijg_table(CHROMA, q), tables[1])]
    assert len(found) == 1, found
    return found[0]


def photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def rect_mask(h: int = 48, w: int = 64) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[8:24, 16:40] = True
    return m


@pytest.mark.parametrize("quality", [70, 80, 95])
def test_jpeg_quality_read_back_from_quantisation_tables(quality: int) -> None:
    pert = create_perturbation("jpeg", quality=quality)
    with Image.open(io.BytesIO(pert.encode(photo()))) as im:
        tables = {k: list(v) for k, v in im.quantization.items()}
        assert im.layer[1][1:3] == (1, 1) and im.layer[0][1:3] == (2, 2)  # 4:2:0 subsampling
    assert quality_from_tables(tables) == quality
    ref = io.BytesIO()  # and the tables Pillow itself writes for that quality
    Image.fromarray(photo()).save(ref, "JPEG", quality=quality)
    assert tables == {k: list(v) for k, v in Image.open(ref).quantization.items()}
    out, mask = pert(photo(), rect_mask(), np.random.default_rng(0))
    assert out.shape == photo().shape and out.dtype == np.uint8 and not np.array_equal(out, photo())
    np.testing.assert_array_equal(mask, rect_mask())
    assert pert.params()["library"] == "Pillow" and pert.key == f"jpeg(quality={quality},subsampling=4:2:0)"


@pytest.mark.parametrize(
    ("kwargs", "sigma"), [({"sigma": 3.0}, 3.0), ({"variance": 5}, 5**0.5), ({"variance": 10}, 10**0.5)]
)
def test_gaussian_noise_applied_sigma_on_mid_grey(kwargs: dict, sigma: float) -> None:
    pert = create_perturbation("gaussian_noise", **kwargs)
    grey = np.full((256, 256, 3), 128, np.uint8)
    out, _ = pert(grey, None, np.random.default_rng(1))
    diff = out.astype(np.float64) - 128
    expected = np.sqrt(sigma**2 + 1 / 12)  # float noise, then rounding to integers
    assert diff.std() == pytest.approx(expected, rel=0.02)
    assert abs(diff.mean()) < 0.05
    params = pert.params()
    assert params["reading"] == next(iter(kwargs)) and params["sigma"] == pytest.approx(sigma)
    assert params["scale"] == "0-255"


def test_gaussian_noise_clips_and_rounds() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    img[:32] = 255
    out, _ = create_perturbation("gaussian_noise", sigma=20)(img, None, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out[:32].min() < 255 and out[32:].max() > 0
    assert np.mean(out[32:] == 0) == pytest.approx(0.5, abs=0.03)  # half the noise is negative: clipped


def test_noise_is_seeded_per_sample_and_independent_of_order() -> None:
    pert = create_perturbation("gaussian_noise", variance=10)
    images = {f"id{i}": photo(seed=i) for i in range(3)}

    def run(order: list[str]) -> dict[str, np.ndarray]:
        return {sid: pert(images[sid], None, sample_rng(0, sid, pert.key))[0] for sid in order}

    forward, backward = run(["id0", "id1", "id2"]), run(["id2", "id1", "id0"])
    for sid in images:
        np.testing.assert_array_equal(forward[sid], backward[sid])
    assert not np.array_equal(run(["id0"])["id0"], pert(images["id0"], None, sample_rng(1, "id0", pert.key))[0])


@pytest.mark.parametrize(("scale", "size"), [(0.5, (24, 32)), (0.75, (36, 48)), (0.3, (14, 19))])
def test_resize_output_size_and_mask(scale: float, size: tuple[int, int]) -> None:
    pert = create_perturbation("resize", scale=scale, interpolation="bicubic")
    out, mask = pert(photo(), rect_mask(), np.random.default_rng(0))
    assert out.shape == (*size, 3) and mask is not None and mask.shape == size and mask.dtype == bool
    expected = np.asarray(Image.fromarray(rect_mask().astype(np.uint8) * 255).resize(size[::-1], Image.NEAREST)) > 0
    np.testing.assert_array_equal(mask, expected)
    assert pert.params()["interpolation"] == "bicubic" and pert.params()["restore"] is False


def test_resize_half_maps_the_rectangle_exactly() -> None:
    _, mask = create_perturbation("resize", scale=0.5)(photo(), rect_mask(), np.random.default_rng(0))
    expected = np.zeros((24, 32), bool)
    expected[4:12, 8:20] = True
    np.testing.assert_array_equal(mask, expected)


def test_resize_restore_keeps_size_and_mask() -> None:
    out, mask = create_perturbation("resize", scale=0.5, restore=True)(photo(), rect_mask(), np.random.default_rng(0))
    assert out.shape == photo().shape and not np.array_equal(out, photo())
    np.testing.assert_array_equal(mask, rect_mask())


def test_crop_co_transforms_the_mask_and_is_seeded() -> None:
    img = np.zeros((48, 64, 3), np.uint8)
    img[..., 0] = rect_mask() * 255  # the mask painted into the image
    pert = create_perturbation("crop", size=[20, 30], position="random")
    outs = [pert(img, rect_mask(), sample_rng(0, f"s{i}", pert.key)) for i in range(8)]
    for out, mask in outs:
        assert out.shape == (20, 30, 3)
        np.testing.assert_array_equal(out[..., 0] == 255, mask)
    assert len({o.tobytes() for o, _ in outs}) > 1  # random positions differ between samples
    again = pert(img, rect_mask(), sample_rng(0, "s3", pert.key))[0]
    np.testing.assert_array_equal(again, outs[3][0])
    center, cmask = create_perturbation("crop", fraction=0.5)(img, rect_mask(), np.random.default_rng(0))
    np.testing.assert_array_equal(center, img[12:36, 16:48])
    np.testing.assert_array_equal(cmask, rect_mask()[12:36, 16:48])
    with pytest.raises(ValueError, match=r"crop 100x100 cannot handle a 48x64 \(HxW\) image: it needs at least 100x100 pixels"):
        create_perturbation("crop", size=100)(img, None, np.random.default_rng(0))


def test_gaussian_blur_applied_sigma() -> None:
    img = np.zeros((41, 101, 3), np.uint8)
    img[:, 50] = 255  # a vertical line: its blurred profile is the kernel
    out, _ = create_perturbation("gaussian_blur", sigma=3.0)(img, None, np.random.default_rng(0))
    profile = out[20, :, 0].astype(np.float64)
    x = np.arange(101) - 50
    measured = np.sqrt(np.sum(profile * x**2) / np.sum(profile))
    assert measured == pytest.approx(3.0, rel=0.03)
    flat = np.full((16, 16, 3), 77, np.uint8)
    np.testing.assert_array_equal(create_perturbation("gaussian_blur", sigma=2)(flat, None, None)[0], flat)


def test_webp_round_trip() -> None:
    pert = create_perturbation("webp", quality=50)
    out, mask = pert(photo(), rect_mask(), np.random.default_rng(0))
    assert out.shape == photo().shape and out.dtype == np.uint8
    assert 0 < np.abs(out.astype(int) - photo()).mean() < 20
    assert pert.encode(photo())[8:12] == b"WEBP"
    np.testing.assert_array_equal(mask, rect_mask())


def test_chain_equals_steps_in_order() -> None:
    steps = [{"name": "resize", "scale": 0.5}, {"name": "gaussian_noise", "sigma": 2}, {"name": "jpeg", "quality": 80}]
    chain = perturbation_from_spec({"name": "chain", "steps": steps})
    out, mask = chain(photo(), rect_mask(), sample_rng(0, "x", chain.key))
    rng = sample_rng(0, "x", chain.key)
    img, m = photo(), rect_mask()
    for s in steps:
        img, m = perturbation_from_spec(s)(img, m, rng)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(mask, m)
    assert chain.key.count("+") == 2 and chain.key.startswith("resize(")
    assert perturbation_from_spec(chain.spec()).key == chain.key
    assert [s["name"] for s in chain.params()["steps"]] == ["resize", "gaussian_noise", "jpeg"]


@pytest.mark.parametrize("name", sorted(PERTURBATIONS.names()))
def test_every_perturbation_round_trips_its_spec(name: str) -> None:
    defaults = {"crop": {"size": 16}, "gaussian_noise": {"sigma": 1}, "chain": {"steps": [{"name": "jpeg"}]}}
    pert = create_perturbation(name, **defaults.get(name, {}))
    assert perturbation_from_spec(pert.spec()).params() == pert.params()
    out, _ = pert(photo(), None, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.ndim == 3


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "jpeg", "qualty": 70}, "Did you mean 'quality'"),
        ({"name": "jpeg", "quality": 0}, "quality"),
        ({"name": "jpeg", "quality": 70.5}, "quality"),
        ({"name": "gaussian_noise", "sigma": 1, "variance": 1}, "exactly one"),
        ({"name": "gaussian_noise"}, "exactly one"),
        ({"name": "resize", "scale": 0}, "scale"),
        ({"name": "resize", "interpolation": "cubic"}, "interpolation"),
        ({"name": "crop"}, "exactly one"),
        ({"name": "chain", "steps": []}, "non-empty"),
        ({"name": "jpgg"}, "Did you mean"),
        ({"quality": 3}, "'name'"),
    ],
)
def test_bad_specs_are_user_errors(spec: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        perturbation_from_spec(spec)


def test_bad_image_is_a_per_sample_value_error() -> None:
    pert = create_perturbation("jpeg", quality=70)
    with pytest.raises(ValueError, match="uint8"):
        pert(photo().astype(np.float32), None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mask shape"):
        pert(photo(), np.zeros((3, 3), bool), np.random.default_rng(0))
