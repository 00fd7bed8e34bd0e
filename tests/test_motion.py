"""Motion fields and the audio encoder."""

from __future__ import annotations

import pytest
import torch

from talksplat.fields.hashgrid import HashGridConfig
from talksplat.fields.motion import AudioEncoder, AudioEncoderConfig, MotionField, MotionFieldConfig

SMALL_GRID = HashGridConfig(num_levels=4, log2_hashmap_size=10, base_resolution=4, desired_resolution=32)


def _field(**kw) -> MotionField:
    cfg = MotionFieldConfig(grid=SMALL_GRID, **kw)
    return MotionField(cfg, torch.tensor([-0.1, -0.1, 1.9]), torch.tensor([0.1, 0.1, 2.1]))


def test_starts_as_identity_and_learns_audio_dependent_motion():
    torch.manual_seed(0)
    field = _field()
    means = torch.rand(300, 3) * 0.2 + torch.tensor([-0.1, -0.1, 1.9])
    quiet, loud = torch.zeros(32), torch.ones(32)
    expr = torch.zeros(7)
    d = field(means, quiet, expr)
    assert d.d_means.abs().max() == 0 and d.d_quats.abs().max() == 0
    # Teach it: loud audio moves the lower half (y > 0) down by 0.01, quiet audio moves nothing.
    target_loud = torch.where(means[:, 1:2] > 0, torch.tensor([0.0, 0.01, 0.0]), torch.zeros(3))
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(300):
        loss = (field(means, loud, expr).d_means - target_loud).square().mean() + \
               field(means, quiet, expr).d_means.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved = field(means, loud, expr).d_means[:, 1]
    assert moved[means[:, 1] > 0.03].mean() > 0.007
    assert moved[means[:, 1] < -0.03].abs().mean() < 0.003
    assert field(means, quiet, expr).d_means.abs().mean() < 0.002


def test_mouth_branch_predicts_position_only():
    field = _field(expression_dim=0, outputs=("position",))
    with torch.no_grad():
        field.head[-1].bias.fill_(0.5)
    d = field(torch.zeros(10, 3) + torch.tensor([0.0, 0.0, 2.0]), torch.ones(32))
    # Outputs are in units of 5% of the canonical box's largest side (0.2 here).
    assert d.d_means.shape == (10, 3) and torch.allclose(d.d_means, torch.tensor(0.5 * 0.05 * 0.2))
    assert d.d_log_scales.abs().max() == 0 and d.d_quats.abs().max() == 0


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match=r"deformation.outputs: unknown \['sparkle'\]; use some of position"):
        _field(outputs=("position", "sparkle"))
    with pytest.raises(ValueError, match="deformation.outputs: empty"):
        _field(outputs=())
    with pytest.raises(ValueError, match="extra_dim must be >= 0"):
        _field(extra_dim=-1)
    with pytest.raises(ValueError, match="needs expression"):
        _field()(torch.zeros(3, 3), torch.zeros(32))


def test_audio_encoder_shapes_and_smoothing_window():
    enc = AudioEncoder(AudioEncoderConfig(input_dim=80))
    windows = torch.randn(20, 16, 80)
    assert enc.encode(windows).shape == (20, 32)
    code = enc(windows, frame=0)
    assert code.shape == (32,)
    # Frames far outside the 8-frame window do not influence the code.
    changed = windows.clone()
    changed[15:] = 0
    assert torch.allclose(enc(changed, frame=2), enc(windows, frame=2))
    assert not torch.allclose(enc(changed, frame=14), enc(windows, frame=14))


def test_inference_cache_matches_the_training_path_and_follows_parameter_updates():
    torch.manual_seed(1)
    field = _field()
    for p in field.head.parameters():  # a non-identity field
        torch.nn.init.normal_(p, std=0.1)
    means = torch.rand(200, 3) * 0.2 + torch.tensor([-0.1, -0.1, 1.9])
    audio, expr = torch.randn(32), torch.rand(7)
    reference = field(means, audio, expr)
    field.eval()
    with torch.no_grad():
        for _ in range(2):  # the second call is served from the cache
            cached = field(means, audio, expr)
            torch.testing.assert_close(cached.d_means, reference.d_means.detach(), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(cached.d_quats, reference.d_quats.detach(), atol=1e-5, rtol=1e-4)
        field.head[0].weight.add_(0.05)  # an in-place update must invalidate the cache
        changed = field(means, audio, expr)
    field.train()
    torch.testing.assert_close(changed.d_means, field(means, audio, expr).d_means.detach(), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(changed.d_means, cached.d_means)


def test_inference_cache_matches_the_training_path_with_per_gaussian_conditions():
    """Conditions may differ per Gaussian (SyncTalk++ masks audio and expression by face region):
    the cached inference path must give the training path's deformation for them too."""
    torch.manual_seed(2)
    field = _field()
    for p in field.head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    means = torch.rand(150, 3) * 0.2 + torch.tensor([-0.1, -0.1, 1.9])
    lower = (means[:, 1] > means[:, 1].median()).float()[:, None]
    audio, expr = lower * torch.randn(32), (1.0 - lower) * torch.rand(7)
    for a, e in ((audio, expr), (audio, torch.rand(7))):     # both per Gaussian; one per Gaussian
        reference = field(means, a, e)
        field.eval()
        with torch.no_grad():
            cached = field(means, a, e)
        field.train()
        torch.testing.assert_close(cached.d_means, reference.d_means.detach(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cached.d_log_scales, reference.d_log_scales.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("per_gaussian,gated", [(False, False), (True, False), (False, True)])
def test_inference_in_row_blocks_matches_the_training_path(monkeypatch, per_gaussian, gated):
    """The inference MLP runs in row blocks (cache-sized): blocks of 64 over 150 Gaussians (two full,
    one partial) with and without per-Gaussian conditions, with extra conditions (gated per Gaussian
    or not), and no Gaussians."""
    import talksplat.fields.motion as motion_module

    monkeypatch.setattr(motion_module, "INFERENCE_ROW_BLOCK", 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # blocks are used on one intra-op thread
    try:
        _check_blocks_against_training_path(per_gaussian, gated)
    finally:
        torch.set_num_threads(threads)


def _check_blocks_against_training_path(per_gaussian: bool, gated: bool = False) -> None:
    torch.manual_seed(3)
    field = _field(extra_dim=5)
    for p in field.head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    for n in (150, 0):
        means = torch.rand(n, 3) * 0.2 + torch.tensor([-0.1, -0.1, 1.9])
        audio = torch.randn(n, 32) if per_gaussian else torch.randn(32)
        expression, extra = torch.rand(7), torch.randn(5)
        gate = (torch.rand(n) > 0.5).float() if gated else None
        field.train()
        reference = field(means, audio, expression, extra, gate)
        field.eval()
        with torch.no_grad():
            blocked = field(means, audio, expression, extra, gate)
        assert blocked.d_means.shape == (n, 3)
        for name in ("d_means", "d_log_scales", "d_quats"):
            torch.testing.assert_close(getattr(blocked, name), getattr(reference, name).detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("region_attention", [True, False])
def test_extra_gate_hides_the_extra_conditions_from_gated_gaussians(region_attention):
    """A Gaussian gated 0 moves as if the extra conditions were 0, whatever they are; one gated 1 moves
    exactly as without a gate. Training and inference paths agree."""
    torch.manual_seed(4)
    field = _field(extra_dim=4, region_attention=region_attention)
    for p in field.head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    means = torch.rand(60, 3) * 0.2 + torch.tensor([-0.1, -0.1, 1.9])
    audio, expression, extra = torch.randn(32), torch.rand(7), torch.randn(4)
    gate = (torch.arange(60) % 2).float()          # odd rows see the extra conditions
    hidden, shown = gate == 0, gate == 1
    gated = field(means, audio, expression, extra, gate).d_means
    assert torch.allclose(gated[hidden], field(means, audio, expression, torch.zeros(4)).d_means[hidden], atol=1e-6)
    assert torch.allclose(gated[hidden], field(means, audio, expression, extra + 3, gate).d_means[hidden], atol=1e-6)
    assert torch.allclose(gated[shown], field(means, audio, expression, extra).d_means[shown], atol=1e-6)
    assert not torch.allclose(gated[shown], field(means, audio, expression, extra + 3, gate).d_means[shown])
    field.eval()
    with torch.no_grad():
        cached = field(means, audio, expression, extra, gate).d_means
    torch.testing.assert_close(cached, gated.detach(), atol=1e-5, rtol=1e-4)
