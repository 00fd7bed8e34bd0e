"""The lip-state audio condition: lip-shape basis, audio-to-lips ridge map, and its encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talksplat.errors import TalksplatError
from talksplat.features.lipstate import PREDICTED_STATE_LIMIT, LipBasis, fit_audio_to_lips
from talksplat.fields.motion import LipStateEncoder, LipStateEncoderConfig


def test_basis_coefficients_have_unit_variance_and_ordered_axes():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(300, 3)) * np.array([5.0, 2.0, 0.5])
    shapes = latent @ rng.normal(size=(3, 80)) + rng.normal(size=80)
    basis = LipBasis.fit(shapes, 3)
    coeffs = basis.coefficients(shapes)
    np.testing.assert_allclose(coeffs.std(axis=0), 1.0, atol=1e-4)
    assert np.all(np.diff(basis.explained) < 0) and basis.explained.sum() == pytest.approx(1.0, abs=1e-6)


def test_basis_of_lips_that_never_move_is_finite():
    shapes = np.tile(np.arange(80.0), (50, 1))     # a still clip: one lip shape throughout (exact mean)
    with np.errstate(all="raise"):
        basis = LipBasis.fit(shapes, 3)
    assert np.all(basis.explained == 0.0)
    assert np.all(np.isfinite(basis.coefficients(shapes)))


def test_ridge_map_recovers_a_linear_relation_and_generalises():
    rng = np.random.default_rng(1)
    windows = rng.normal(size=(400, 16, 8))
    true_w = rng.normal(size=(128, 2)) * 0.1
    targets = windows.reshape(400, -1) @ true_w + 0.05 * rng.normal(size=(400, 2))
    fit = fit_audio_to_lips(windows[:300], targets[:300])
    held_out = fit.predict(windows[300:])
    for j in range(2):
        assert np.corrcoef(held_out[:, j], targets[300:, j])[0, 1] > 0.9
    assert np.all(fit.cv_correlation > 0.9)


def test_ridge_map_on_unrelated_audio_does_not_generalise():
    rng = np.random.default_rng(2)
    fit = fit_audio_to_lips(rng.normal(size=(300, 16, 8)), rng.normal(size=(300, 2)))
    assert np.all(np.abs(fit.cv_correlation) < 0.3)


def test_ridge_map_rejects_too_few_frames():
    with pytest.raises(TalksplatError, match="at least"):
        fit_audio_to_lips(np.zeros((10, 16, 8)), np.zeros((10, 2)))


@pytest.mark.parametrize("center_skip", [False, True])
def test_encoder_on_predicted_states_equals_encoder_on_audio(center_skip):
    rng = np.random.default_rng(3)
    windows = rng.normal(size=(120, 16, 8))
    targets = windows.reshape(120, -1)[:, :2]
    fit = fit_audio_to_lips(windows, targets)
    encoder = LipStateEncoder(LipStateEncoderConfig(input_dim=128, lip_dims=2, center_skip=center_skip))
    encoder.set_map(fit.x_mean, fit.x_std, fit.weight, fit.bias)
    w = torch.tensor(windows, dtype=torch.float32)
    limit = PREDICTED_STATE_LIMIT
    np.testing.assert_allclose(encoder.predict(w).numpy(), fit.predict(windows).clip(-limit, limit), atol=1e-4)
    for frame in (0, 57, 119):
        a = encoder(w, frame)
        b = encoder.from_states(encoder.predict(w), frame)
        torch.testing.assert_close(a, b)
    assert a.shape == (32,)


def test_encoder_clamps_states_predicted_far_outside_the_tracked_range():
    """New audio unlike the training voice (a telephone band) can send the linear map to states the
    motion fields never saw; they are held at PREDICTED_STATE_LIMIT standard deviations."""
    encoder = LipStateEncoder(LipStateEncoderConfig(input_dim=4, lip_dims=2))
    encoder.set_map(np.zeros(4), np.ones(4), np.array([[1.0, 0.0], [0.0, -1.0], [0, 0], [0, 0]]), np.zeros(2))
    windows = torch.tensor([[0.5, 1.0, 0.0, 0.0], [9.0, 20.0, 0.0, 0.0]])
    states = encoder.predict(windows)
    torch.testing.assert_close(states[0], torch.tensor([0.5, -1.0]))               # inside: as mapped
    torch.testing.assert_close(states[1], torch.tensor([PREDICTED_STATE_LIMIT, -PREDICTED_STATE_LIMIT]))
    assert torch.isfinite(encoder(windows, 1)).all()
