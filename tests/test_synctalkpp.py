"""SyncTalk++ parts: the VQ-VAE expression generator, the facial-aware masked attention, the torso
restorer, and the recipe's ``generated`` expression mode (the contract itself is
tests/test_recipe_conformance.py's)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from talksplat.engine.config import apply_overrides
from talksplat.engine.trainer import TrainerConfig, build_recipe, train
from talksplat.features.expression_generator import (
    ExpressionGenerator,
    ExpressionGeneratorConfig,
    Memo,
    blink_peaks,
    starts_blink,
    window_seed,
)
from talksplat.fields.inpainting import (
    InpaintingUNet,
    RestorerConfig,
    dilate,
    margin_pixels,
    training_example,
)
from talksplat.recipes import load_avatar
from talksplat.recipes.synctalkpp import SyncTalkPP


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: on a busy 2-core machine two threads were ~30x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ generator
def _synthetic_sequence(n: int = 600, seed: int = 0):
    """Coefficients (n, 3) that follow an 'audio' signal (two alternating sounds switch the brows),
    plus blinks every ~75 frames in column 0; audio features (n, 4)."""
    rng = np.random.default_rng(seed)
    sound = (np.arange(n) // 20) % 2                       # 0.8 s of one sound, then the other
    audio = np.stack([sound, 1 - sound, rng.normal(0, 0.1, n), rng.normal(0, 0.1, n)], 1)
    ex = np.zeros((n, 3))
    ex[:, 1] = 0.2 + 0.6 * sound                           # brows follow the sound
    ex[:, 2] = 0.5 + 0.1 * np.sin(np.arange(n) / 7)
    for peak in range(30, n - 5, 75):
        ex[peak - 2:peak + 3, 0] = [0.3, 0.7, 1.0, 0.7, 0.3]
    return torch.tensor(ex, dtype=torch.float32), torch.tensor(audio, dtype=torch.float32)


@pytest.fixture(scope="module")
def trained_generator():
    torch.manual_seed(0)
    ex, audio = _synthetic_sequence()
    cfg = ExpressionGeneratorConfig(chunk=8, codebook=16, latent=8, hidden=48, context=4, batch=32)
    gen = ExpressionGenerator(cfg, 3, 4, blink_columns=(0,))
    train_frames = np.arange(len(ex))
    info = gen.fit_statistics(ex, audio, train_frames)
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    weights = {"vq_reconstruction": 1.0, "vq_codebook": 1.0, "vq_commitment": 0.25, "code_prediction": 0.2}
    first = None
    for _ in range(400):
        terms = gen.losses(ex, audio, rng.integers(0, len(ex), 32))
        loss = sum(weights[k] * v for k, v in terms.items())
        first = first if first is not None else {k: float(v.detach()) for k, v in terms.items()}
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = {k: float(v) for k, v in gen.losses(ex, audio, np.arange(0, len(ex), 3)).items()}
    return gen, ex, audio, info, first, last


def test_codebook_learns_the_subjects_coefficient_snippets(trained_generator):
    _gen, _ex, _audio, _, first, last = trained_generator
    assert last["vq_reconstruction"] < 0.5 * first["vq_reconstruction"]
    assert last["vq_reconstruction"] < 0.08                      # L1 on coefficients spanning [0, 1]
    assert last["code_prediction"] < 0.7 * first["code_prediction"]


def test_generated_expressions_follow_the_audio_and_stay_in_the_subjects_range(trained_generator):
    gen, ex, audio, _, _, _ = trained_generator
    generated = torch.stack([gen.generate(audio, i) for i in range(len(audio))])
    assert bool((generated >= gen.low - 1e-6).all() and (generated <= gen.high + 1e-6).all())
    brows = generated[:, 1].numpy()
    r = np.corrcoef(brows[10:-10], ex[10:-10, 1].numpy())[0, 1]
    assert r > 0.7, r


def test_generated_blinks_appear_at_the_subjects_rate(trained_generator):
    gen, _ex, _, info, _, _ = trained_generator
    assert info["blinks_in_training"] == 8
    # Unseen 'speech': new random audio features for 3000 frames (2 minutes).
    rng = np.random.default_rng(5)
    audio = torch.tensor(rng.normal(0, 1, (3000, 4)), dtype=torch.float32)
    seeds = np.array([window_seed(a) for a in audio])
    blink = np.array([float(gen.generate(audio, i, seeds)[0]) for i in range(len(audio))])
    found = len(blink_peaks(blink, 0.5))
    expected = float(gen.blink_rate) * len(audio)
    assert expected == pytest.approx(8 / 600 * 3000)
    assert 0.5 * expected <= found <= 1.5 * expected, (found, expected)
    assert blink.max() > 0.8                                     # full blinks, not a half-closed average
    # One start per blink period at most: starts are spaced (an independent draw per frame would put
    # some of its ~40 starts within 10 frames of each other) and their number is close to expected.
    behind, ahead = gen.blink_window()
    assert (behind, ahead) == (64, 10)                             # a period of 600 / 8 = 75 frames
    starts = [t for t in range(len(audio)) if starts_blink(seeds, t, behind, ahead)]
    assert np.diff(starts).min() > ahead
    assert abs(len(starts) - expected) <= 0.25 * expected, (len(starts), expected)   # ~3 std
    assert found == len(starts)


def test_identical_windows_start_no_blink_and_edges_blink_no_more_often():
    flat = np.full(400, 0.3)
    assert not any(starts_blink(flat, t, 40, 10) for t in range(400))
    rng = np.random.default_rng(1)
    firsts = [sum(starts_blink(seeds, t, 40, 10) for t in range(10)) for seeds in rng.random((2000, 60))]
    assert np.mean(firsts) == pytest.approx(10 / 51, rel=0.25)   # the interior rate, 1 / period


def test_memoised_codes_give_the_same_expressions(trained_generator):
    gen, _ex, audio, _, _, _ = trained_generator
    keys = [a.numpy().tobytes() for a in audio[:60]]
    memo = Memo(50)
    plain = torch.stack([gen.generate(audio[:60], i) for i in range(60)])
    memoised = torch.stack([gen.generate(audio[:60], i, keys=keys, code_memo=memo) for i in range(60)])
    torch.testing.assert_close(memoised, plain, atol=1e-5, rtol=0)
    assert len(memo) == 50                      # bounded: the oldest contexts were dropped


def test_memo_drops_the_least_recently_used_entry():
    memo, made = Memo(2), []
    for key in ("a", "b", "a", "c", "a", "b"):
        memo.get(key, lambda key=key: made.append(key) or key.upper())
    assert made == ["a", "b", "c", "b"]         # "b" was the oldest when "c" came; "a" stayed


def test_window_seed_is_a_pure_function_of_the_window():
    w = torch.arange(12, dtype=torch.float32).view(3, 4)
    assert window_seed(w) == window_seed(w.clone())
    assert window_seed(w) != window_seed(w + 1e-3)
    assert 0.0 <= window_seed(w) < 1.0


# ------------------------------------------------------------------------------------------ restorer
def test_margins_scale_with_size_and_dilation_grows_by_them():
    assert margin_pixels(15, 512) == 15 and margin_pixels(15, 256) == 8 and margin_pixels(10, 64) == 1
    mask = torch.zeros(20, 20)
    mask[10, 10] = 1
    grown = dilate(mask, 3)
    assert int(grown.sum()) == 49 and grown[7, 13] == 1 and grown[6, 10] == 0


def test_restorer_keeps_the_known_pixels_and_learns_to_fill_holes():
    torch.manual_seed(0)
    size = 32
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([yy, xx, 0.5 * (yy + xx)], -1)           # a smooth image the net can learn
    head = torch.zeros(size, size)
    head[10:20, 12:22] = 1
    cfg = RestorerConfig(channels=8, levels=2, train_margin_px=(10, 30), max_rotation_deg=10)
    net = InpaintingUNet(cfg)
    rng = np.random.default_rng(0)
    rotated, hole = training_example(image, head, cfg, rng)
    assert hole.sum() > head.sum()                               # expanded by the random margin
    out = net(rotated, hole)
    keep = hole[..., None] < 0.5
    assert torch.equal(torch.where(keep, out, 0), torch.where(keep, rotated, 0))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def hole_l1():
        with torch.no_grad():
            h = dilate(head, 2)
            return float(((net(image, h) - image).abs() * h[..., None]).sum() / (3 * h.sum()))

    before = hole_l1()
    for _ in range(150):
        img, h = training_example(image, head, cfg, rng)
        loss = ((net(img, h) - img).abs() * h[..., None]).sum() / (3 * h.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert hole_l1() < 0.4 * before


# ------------------------------------------------------------------------------------------ recipe
def _tiny(**changes):
    cfg = apply_overrides(SyncTalkPP.Config(), SyncTalkPP.test_overrides)
    return replace(cfg, **changes)


@pytest.mark.parametrize("masked", [True, False])
def test_masked_attention_keeps_audio_below_and_expression_above_the_nose(tiny_subject, masked):
    recipe = build_recipe(SyncTalkPP, tiny_subject, _tiny(masked_attention=masked))
    torch.manual_seed(1)
    with torch.no_grad():                      # a deformation that is not the identity
        for p in recipe.deformation.head.parameters():
            p.normal_(0, 0.3)
    means = recipe.sets["face"].params["means"]
    lip, exp = recipe.region_masks(means)
    assert lip.sum() > 0 and exp.sum() > 0
    frame = int(recipe.data.train_frames[0])
    base = recipe.conditions(frame)
    other_audio = {**base, "audio_code": base["audio_code"] + 1.0}
    other_expression = {**base, "expression": base["expression"] + 0.5}
    w2c = recipe.data.w2c[frame]
    with torch.no_grad():
        moved = {name: recipe._deformed(c, w2c)[0]["means"]
                 for name, c in (("base", base), ("audio", other_audio), ("expression", other_expression))}
    by_audio = (moved["audio"] - moved["base"]).norm(dim=-1)
    by_expression = (moved["expression"] - moved["base"]).norm(dim=-1)
    upper, lower = exp > 0, lip > 0
    if masked:
        assert float(by_audio[upper].max()) == 0.0 and float(by_audio[lower].min()) > 0.0
        assert float(by_expression[lower].max()) == 0.0 and float(by_expression[upper].min()) > 0.0
    else:
        assert float(by_audio[upper].min()) > 0.0 and float(by_expression[lower].min()) > 0.0


def test_config_refuses_a_feature_the_sync_encoder_cannot_read():
    with pytest.raises(ValueError, match="audio_feature must be mel"):
        _tiny(audio_feature="phones").validate()
    with pytest.raises(ValueError, match="audio_condition"):
        _tiny(audio_condition="wav2vec").validate()


@pytest.fixture(scope="module")
def tiny_run(tiny_subject, tmp_path_factory):
    run = tmp_path_factory.mktemp("synctalkpp-run")
    summary = train(tiny_subject, SyncTalkPP, _tiny(), TrainerConfig(eval_frames=2, preview_every=1000, quiet=True),
                    out_dir=run)
    return run, summary


def test_generated_expressions_stream_like_offline_and_come_from_the_audio(tiny_run, tiny_subject):
    from talksplat.render.renderer import Renderer, RenderOptions

    run, summary = tiny_run
    assert summary["sync_encoder"]["steps"] == 20
    avatar = load_avatar(tiny_subject, run=run)
    renderer = Renderer(avatar)
    assert "generated" in renderer.conditioner.expression_modes
    assert renderer.conditioner.default_expression == "generated"     # what `render` uses unless told
    rng = np.random.default_rng(0)
    samples = (0.2 * rng.standard_normal(16_000)).astype(np.float32)
    options = RenderOptions(pose="still", expression="generated")
    offline = list(renderer.render_frames(samples, options))
    stream = renderer.stream(options)
    streamed, pos = [], 0
    while pos < len(samples):
        streamed += stream.push(samples[pos:pos + 1500])
        pos += 1500
    streamed += stream.flush()
    assert len(offline) == len(streamed) == 25
    assert all(np.array_equal(a, b) for a, b in zip(offline, streamed, strict=True))
    # With the pose held still, only the generated expression (and the mouth) can change over time.
    windows = renderer.audio_windows(samples)
    conditioner = renderer.conditioner
    expr = torch.stack([conditioner.conditions(windows, i, 0, "generated")["expression"] for i in range(25)])
    gen = avatar.recipe.generator
    assert bool((expr >= gen.low - 1e-6).all() and (expr <= gen.high + 1e-6).all())
    assert conditioner.look_ahead >= gen.reach
    # The conditioner memoises window embeddings and codes; the direct computation agrees.
    recipe = avatar.recipe
    for i in (0, 12, 24):
        lo, hi = max(0, i - conditioner.look_behind), min(25, i + conditioner.look_ahead + 1)
        seeds = np.array([window_seed(w) for w in windows[lo:hi]])
        direct = gen.generate(recipe.frame_audio_features(windows[lo:hi]), i - lo, seeds)
        torch.testing.assert_close(expr[i], direct, atol=1e-5, rtol=0)
        torch.testing.assert_close(conditioner.conditions(windows, i, 0, "video")["audio_code"],
                                   recipe.audio(windows, i), atol=1e-5, rtol=0)


def test_the_restorer_changes_only_the_ring_around_the_head(tiny_run, tiny_subject):
    run, _ = tiny_run
    avatar = load_avatar(tiny_subject, run=run)
    recipe = avatar.recipe
    assert int(recipe.restorer_steps) == 3
    frame = int(recipe.data.train_frames[2])
    raw = recipe.forward(recipe_view(frame), recipe.conditions(frame))
    restored = recipe.post_render(frame, raw)
    changed = (restored["image"] - raw["image"]).abs().amax(-1) > 0
    hole = dilate(recipe.head_mask(frame), margin_pixels(recipe.cfg.restorer.render_margin_px, recipe.cfg.size))
    assert bool(changed.any()) and not bool(changed[hole < 0.5].any())


def recipe_view(frame: int):
    from talksplat.engine.contract import View

    return View(frame)


def test_blink_events_can_come_from_another_signal_than_the_coefficients():
    """A head model's blink coefficients may stay low while the eyes close (German anchor: 0.18 at
    the 99th percentile): events then come from the tracked eye-aspect-ratio blink signal."""
    ex, audio = _synthetic_sequence()
    ex[:, 0] *= 0.3                                     # coefficients never reach the 0.5 threshold
    signal = np.zeros(len(ex))
    signal[[105, 330, 555]] = 1.0                      # three of the blinks of column 0
    gen = ExpressionGenerator(ExpressionGeneratorConfig(), 3, 4, blink_columns=(0,))
    assert gen.fit_statistics(ex, audio, np.arange(len(ex)))["blinks_in_training"] == 0
    info = gen.fit_statistics(ex, audio, np.arange(len(ex)), blink_signal=signal)
    assert info["blinks_in_training"] == 3
    assert float(gen.blink_profile.max()) == pytest.approx(float(ex[:, 0].max()), abs=0.05)
