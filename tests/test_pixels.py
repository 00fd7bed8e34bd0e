"""Pixel conventions when resizing: intrinsics and landmarks of a subject trained below its prepared
size must put a 3D point on the same place of the picture (core.pixels)."""

from __future__ import annotations

import numpy as np
import pytest

from talksplat.core.pixels import raster_intrinsics, rescale_intrinsics, rescale_pixels


def _project(K: np.ndarray, x_cam: np.ndarray) -> np.ndarray:
    return x_cam[:, :2] / x_cam[:, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]


def _rays_through(K: np.ndarray, uv: np.ndarray, depth: float = 500.0) -> np.ndarray:
    """3D camera-space points that project to the OpenCV pixel coordinates uv under K."""
    xy = (uv - K[:2, 2]) / [K[0, 0], K[1, 1]] * depth
    return np.concatenate([xy, np.full((len(uv), 1), depth)], axis=1)


@pytest.mark.parametrize("scale", [0.5, 0.25, 2.0])
def test_a_point_on_a_pixel_centre_or_the_image_edge_stays_there_after_a_resize(scale):
    size = 512
    K = np.array([[1100.0, 0, 260.3], [0, 1100.0, 248.9], [0, 0, 1]])
    # the top-left corner of the picture, the centre of pixel (0, 0) and the bottom-right corner
    uv = np.array([[-0.5, -0.5], [0.0, 0.0], [size - 0.5, size - 0.5]])
    points = _rays_through(K, uv)
    resized = _project(rescale_intrinsics(K, scale), points)
    np.testing.assert_allclose(resized, rescale_pixels(uv, scale), atol=1e-9)
    np.testing.assert_allclose(resized[0], [-0.5, -0.5], atol=1e-9)             # edges stay on edges
    np.testing.assert_allclose(resized[2], [size * scale - 0.5] * 2, atol=1e-9)
    # the rasterizer's convention (pixel centres at +0.5): the picture spans [0, size * scale]
    np.testing.assert_allclose(_project(raster_intrinsics(K, scale), points)[[0, 2]],
                               [[0, 0], [size * scale] * 2], atol=1e-9)


def test_rescaling_leaves_extra_columns_and_the_input_alone():
    uv = np.array([[10.0, 20.0, 7.0]])
    out = rescale_pixels(uv, 0.5)
    np.testing.assert_allclose(out, [[4.75, 9.75, 7.0]])
    assert uv[0, 0] == 10.0


def test_a_subject_loaded_below_its_prepared_size_projects_landmarks_where_its_images_show_them(tiny_subject):
    from talksplat.data.subject import load_subject_data

    full, half = load_subject_data(tiny_subject, 128), load_subject_data(tiny_subject, 64)
    assert full.source_size == 128
    t = int(full.train_frames[0])
    # 3D points on the rays through frame t's landmarks at the prepared size (OpenCV K = raster K - 0.5)
    K_full = full.K.double().numpy() - np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
    points = _rays_through(K_full, full.landmarks_px(t))
    K_half = half.K.double().numpy() - np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
    # the old formula (c * s, then + 0.5 for the rasterizer) put them a quarter pixel up and left
    np.testing.assert_allclose(_project(K_half, points), half.landmarks_px(t), atol=1e-4)
    np.testing.assert_allclose(half.landmarks_px(t), (full.landmarks_px(t) + 0.5) / 2 - 0.5, atol=1e-9)
