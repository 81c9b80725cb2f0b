import numpy as np
import pytest
import torch
from matplotlib import font_manager

from lightning_rollout.rendering import (
    BACKGROUND,
    GAP,
    blend,
    colorize_maps,
    render_filmstrip,
    render_grid,
    render_panel,
    render_text,
    to_display_images,
)


_BLACK = np.zeros((1, 1, 3), dtype=np.uint8)


def _assert_rgb_uint8(image: np.ndarray, shape: tuple[int, ...]) -> None:
    assert image.shape == shape
    assert image.dtype == np.uint8
    assert image.flags["C_CONTIGUOUS"]


def _gray(values) -> np.ndarray:
    """An (H, W, 3) uint8 image whose three channels all hold ``values``."""
    return np.repeat(np.asarray(values, dtype=np.uint8)[..., None], 3, axis=-1)


def _is_background(pixels: np.ndarray) -> bool:
    return bool((pixels == np.asarray(BACKGROUND, dtype=np.uint8)).all())


# --- to_display_images -------------------------------------------------------------------------------------


def test_to_display_images_unnormalises_per_channel():
    images = torch.tensor([-2.0, 2.0, 0.2]).view(1, 1, 1, 3).expand(1, 3, 1, 3).clone()
    images[0, 1] = torch.tensor([0.0, 0.0, 0.0])
    out = to_display_images(images, mean=(0.5, 0.25, 0.5), std=(0.25, 1.0, 0.25))
    _assert_rgb_uint8(out, (1, 1, 3, 3))
    # channel 0 and 2: x * 0.25 + 0.5 -> 0.0, 1.0, 0.55; channel 1: 0.25 everywhere.
    assert out[0, 0, :, 0].tolist() == [0, 255, 140]
    assert out[0, 0, :, 1].tolist() == [64, 64, 64]
    assert out[0, 0, :, 2].tolist() == [0, 255, 140]


def test_to_display_images_grayscale_and_no_normalisation():
    images = torch.tensor([[[[-0.1, 0.2, 1.5]]]])  # (1, 1, 1, 3), already in [0, 1] up to clipping
    out = to_display_images(images, mean=None, std=None)
    _assert_rgb_uint8(out, (1, 1, 3, 3))
    assert out[0, 0].tolist() == [[0, 0, 0], [51, 51, 51], [255, 255, 255]]


def test_to_display_images_single_value_stats_broadcast():
    out = to_display_images(torch.zeros(2, 3, 2, 2), mean=[0.2], std=[1.0])
    assert (out == 51).all()


@pytest.mark.parametrize(
    ("images", "mean", "std", "error", "match"),
    [
        ([[0.0]], None, None, TypeError, "`images` must be a torch.Tensor"),
        (torch.zeros(3, 2, 2), None, None, ValueError, r"`images` must be 4-D .* \(3, 2, 2\)"),
        (torch.zeros(1, 2, 2, 2), None, None, ValueError, "`images` must have 1 or 3 channels, got 2"),
        (torch.zeros(1, 3, 2, 2), (0.5, 0.5), None, ValueError, r"`mean` must hold 1 or 3 values .* \(0.5, 0.5\)"),
        (torch.zeros(1, 3, 2, 2), None, (1.0, 1.0), ValueError, "`std` must hold 1 or 3 values"),
    ],
    ids=["type", "ndim", "channels", "mean-length", "std-length"],
)
def test_to_display_images_errors(images, mean, std, error, match):
    with pytest.raises(error, match=match):
        to_display_images(images, mean, std)


# --- colorize_maps and blend -------------------------------------------------------------------------------


def test_colorize_maps_min_max_scales_each_sample():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[10.0, 20.0], [30.0, 40.0]], [[5.0, 5.0], [5.0, 5.0]]])
    heat = colorize_maps(maps, (2, 2), "gray")
    assert heat.shape == (3, 2, 2, 3)
    assert heat.dtype == np.float32
    expected = np.array([[0, 85], [170, 255]], dtype=np.float32) / 255  # gray has 256 levels
    np.testing.assert_allclose(heat[0, ..., 0], expected, atol=1e-6)
    np.testing.assert_allclose(heat[1, ..., 0], expected, atol=1e-6)  # scale-free
    assert (heat[2] == 0).all()  # constant map


def test_colorize_maps_upsamples_bilinearly():
    heat = colorize_maps(torch.tensor([[[0.0, 1.0]]]), (1, 4), "gray")
    # align_corners=False samples at -0.25, 0.25, 0.75, 1.25 of the source: clipped to 0, 0.25, 0.75, 1.
    np.testing.assert_allclose(heat[0, 0, :, 0], np.array([0, 64, 192, 255]) / 255, atol=1e-6)


def test_colorize_maps_drops_alpha_and_uses_the_colormap():
    heat = colorize_maps(torch.tensor([[[0.0, 1.0]]]), (3, 5), "viridis")
    assert heat.shape == (1, 3, 5, 3)
    assert not np.allclose(heat[0, :, 0], heat[0, :, 0, :1])  # coloured, not gray


@pytest.mark.parametrize(
    ("maps", "size", "colormap", "error", "match"),
    [
        (np.zeros((1, 2, 2)), (2, 2), "jet", TypeError, "`maps` must be a torch.Tensor"),
        (torch.zeros(2, 2), (2, 2), "jet", ValueError, "`maps` must be 3-D"),
        (torch.zeros(1, 2, 2), (2, 0), "jet", ValueError, r"`size` .* got \(2, 0\)"),
        (torch.zeros(1, 2, 2), (2, 2), "no-such-map", ValueError, "name in matplotlib.colormaps.*'no-such-map'"),
    ],
    ids=["type", "ndim", "size", "colormap"],
)
def test_colorize_maps_errors(maps, size, colormap, error, match):
    with pytest.raises(error, match=match):
        colorize_maps(maps, size, colormap)


def test_blend_formula():
    images = np.array([[0, 100, 255]], dtype=np.uint8).reshape(1, 1, 3)
    heat = np.array([[1.0, 0.5, 0.0]], dtype=np.float32).reshape(1, 1, 3)
    # 0.6 * image + 0.4 * 255 * heat = [102, 111, 153]
    assert blend(images, heat, 0.4).tolist() == [[[102, 111, 153]]]
    assert blend(images, heat, 0.0).tolist() == [[[0, 100, 255]]]
    assert blend(images, heat, 1.0).tolist() == [[[255, 128, 0]]]  # 127.5 rounds to even


def test_overlay_of_a_2x2_map_is_pinned_pixel_exactly():
    image = _gray([[12, 20], [30, 40]])[None]
    heat = colorize_maps(torch.tensor([[[0.0, 1.0], [2.0, 3.0]]]), (2, 2), "gray")
    overlay = blend(image, heat, 0.25)
    # 0.75 * image + 0.25 * [[0, 85], [170, 255]]
    _assert_rgb_uint8(overlay, (1, 2, 2, 3))
    np.testing.assert_array_equal(overlay[0], _gray([[9, 36], [65, 94]]))


@pytest.mark.parametrize(
    ("images", "heat", "alpha", "error", "match"),
    [
        (np.zeros((1, 1, 3)), np.zeros((1, 1, 3)), 0.5, ValueError, "`images` must be uint8"),
        (_BLACK, np.zeros((1, 2, 3)), 0.5, ValueError, r"`heat` must have the shape .* \(1, 2, 3\)"),
        (_BLACK, np.zeros((1, 1, 3)), 1.5, ValueError, r"`alpha` must be a number in \[0, 1\], got 1.5"),
        (_BLACK, [[0.0]], 0.5, TypeError, "`heat` must be a numpy array"),
    ],
    ids=["dtype", "shape", "alpha", "type"],
)
def test_blend_errors(images, heat, alpha, error, match):
    with pytest.raises(error, match=match):
        blend(images, heat, alpha)


# --- text --------------------------------------------------------------------------------------------------


def test_render_text_draws_light_text_on_the_background():
    strip = render_text(["true: cat", "pred: dog (0.83)"], 120)
    _assert_rgb_uint8(strip, (32, 120, 3))
    ink = strip[..., 0] > 200
    assert ink[:16].sum() > 20 and ink[16:].sum() > 20  # each line drew glyphs in its own slot
    assert _is_background(strip[:, -3:])  # short lines leave the right edge empty


def test_render_text_truncates_lines_that_do_not_fit():
    strip = render_text(["W" * 200], 60, line_height=20)
    _assert_rgb_uint8(strip, (20, 60, 3))
    assert _is_background(strip[:, -2:])  # cut before the edge instead of running off it
    assert (strip[..., 0] > 200).sum() > 20


def test_render_text_without_lines_is_empty():
    _assert_rgb_uint8(render_text([], 50), (0, 50, 3))


@pytest.mark.parametrize(
    ("lines", "width", "error", "match"),
    [
        ("abc", 10, TypeError, "`lines` must be a sequence of str"),
        ([1], 10, TypeError, "`lines` must hold only str"),
        (["a"], 0, ValueError, "`width` must be a positive int, got 0"),
    ],
    ids=["bare-str", "item-type", "width"],
)
def test_render_text_errors(lines, width, error, match):
    with pytest.raises(error, match=match):
        render_text(lines, width)


# --- panels, filmstrips, grids -----------------------------------------------------------------------------


def test_render_panel_layout_is_pixel_exact():
    image = _gray([[0, 50], [100, 150]])
    overlay = _gray([[200, 210], [220, 230]])
    panel = render_panel(image, overlay, ["a", "b"], min_size=4)  # factor 2
    _assert_rgb_uint8(panel, (4 + 32, 2 * 4 + GAP, 3))
    np.testing.assert_array_equal(panel[:4, :4], np.repeat(np.repeat(image, 2, 0), 2, 1))
    assert _is_background(panel[:4, 4 : 4 + GAP])
    np.testing.assert_array_equal(panel[:4, 4 + GAP :], np.repeat(np.repeat(overlay, 2, 0), 2, 1))


@pytest.mark.parametrize(
    ("shape", "min_size", "factor"),
    [((128, 128), 128, 1), ((100, 200), 128, 2), ((3, 5), 128, 43), ((32, 32), 96, 3), ((200, 300), 128, 1)],
)
def test_render_panel_upscale_factor(shape, min_size, factor):
    image = np.zeros((*shape, 3), dtype=np.uint8)
    panel = render_panel(image, image, ["x"], min_size=min_size)
    assert panel.shape == (shape[0] * factor + 16, 2 * shape[1] * factor + GAP, 3)


def test_render_panel_loads_the_font_once(monkeypatch):
    # What keeps a panel cheap (a few ms): the font file is looked up and loaded once per text size, not per
    # panel or per line. Panels are timed, not asserted, inside the callback's hook by the benchmarks.
    lookups = []
    find = font_manager.findfont
    monkeypatch.setattr(font_manager, "findfont", lambda *args, **kwargs: lookups.append(args) or find(*args, **kwargs))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    overlay = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    first = render_panel(image, overlay, ["true: cat", "pred: dog (0.83)"])  # may load the font
    loaded = len(lookups)
    assert loaded <= 1
    for index in range(5):
        panel = render_panel(image, overlay, [f"true: cat {index}", "pred: dog (0.83)"])
        assert panel.shape == first.shape
    assert len(lookups) == loaded, "render_panel looked the font up again"


def test_render_panel_errors():
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"`overlay` must have the shape of `image` \(2, 2, 3\), got \(2, 3, 3\)"):
        render_panel(image, np.zeros((2, 3, 3), dtype=np.uint8), [])
    with pytest.raises(ValueError, match="`image` must be uint8"):
        render_panel(image.astype(np.float32), image, [])
    with pytest.raises(ValueError, match=r"`overlay` must have shape \(H, W, 3\)"):
        render_panel(image, image[..., :1], [])
    with pytest.raises(ValueError, match="`min_size` must be a positive int, got -1"):
        render_panel(image, image, [], min_size=-1)


def test_render_filmstrip_grows_with_frames():
    frames = [_gray([[10 * i, 0], [0, 0]]) for i in range(3)]
    one = render_filmstrip(frames[:1], ["epoch 0"], min_size=4)
    three = render_filmstrip(frames, ["epoch 0", "epoch 1", "epoch 2"], min_size=4)
    _assert_rgb_uint8(one, (16 + 4, 4, 3))
    _assert_rgb_uint8(three, (16 + 4, 3 * 4 + 2 * GAP, 3))
    for i in range(3):
        left = i * (4 + GAP)
        np.testing.assert_array_equal(three[16:, left : left + 4], np.repeat(np.repeat(frames[i], 2, 0), 2, 1))
    assert _is_background(three[:, 4 : 4 + GAP])


def test_render_filmstrip_draws_labels():
    frame = np.zeros((32, 32, 3), dtype=np.uint8)
    strip = render_filmstrip([frame, frame], ["epoch 1", "epoch 2"])
    assert (strip[:16, :96, 0] > 200).any() and (strip[:16, 96 + GAP :, 0] > 200).any()


def test_render_filmstrip_errors():
    frame = np.zeros((2, 2, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="`frames` must hold at least one image"):
        render_filmstrip([], [])
    with pytest.raises(ValueError, match=r"`labels` must hold one label per frame \(2\), got 1"):
        render_filmstrip([frame, frame], ["epoch 0"])
    with pytest.raises(ValueError, match=r"frames\[1\] has \(3, 2, 3\)"):
        render_filmstrip([frame, np.zeros((3, 2, 3), dtype=np.uint8)], ["a", "b"])


def test_render_grid_tiles_and_pads():
    panels = [np.full((2, 3, 3), 10 * (i + 1), dtype=np.uint8) for i in range(3)]
    grid = render_grid(panels, ncols=2)
    _assert_rgb_uint8(grid, (2 * 2 + GAP, 2 * 3 + GAP, 3))
    assert (grid[:2, :3] == 10).all()
    assert (grid[:2, 3 + GAP :] == 20).all()
    assert (grid[2 + GAP :, :3] == 30).all()
    assert _is_background(grid[2 + GAP :, 3 + GAP :])  # empty last cell
    assert _is_background(grid[2 : 2 + GAP])  # gap between rows


def test_render_grid_pads_smaller_panels_to_the_largest():
    grid = render_grid([np.full((2, 2, 3), 7, np.uint8), np.full((3, 1, 3), 9, np.uint8)], ncols=5)
    _assert_rgb_uint8(grid, (3, 2 + GAP + 2, 3))  # one row; ncols shrinks to the number of panels
    assert (grid[:2, :2] == 7).all()
    assert _is_background(grid[2, :2])
    assert (grid[:, 2 + GAP] == 9).all()
    assert _is_background(grid[:, 2 + GAP + 1])


def test_render_grid_errors():
    with pytest.raises(ValueError, match="`panels` must hold at least one image"):
        render_grid([], ncols=2)
    with pytest.raises(ValueError, match="`ncols` must be a positive int, got 0"):
        render_grid([np.zeros((1, 1, 3), np.uint8)], ncols=0)
    with pytest.raises(TypeError, match=r"`panels\[0\]` must be a numpy array"):
        render_grid([[0]], ncols=1)
