"""TalkingGaussian (ECCV 2024) as a composition of talksplat's shared parts.

- Persistent Gaussians in the head frame (world = head, cameras from ``prepare``), seeded from the
  fitted face template and back-projected head pixels of a training frame.
- Two branches, each a Gaussian set plus a motion field: the face branch (audio + 7 expression
  coefficients -> delta position/scale/rotation) and the inside-mouth branch (audio -> delta
  position, lighter grid). Fused as C = C_face + (1 - A_face) C_mouth (premultiplied colours, eq. 8),
  then composited over the backdrop (plate + the frame's torso and neck).
- Incremental sampling (eq. 5): in the motion stage, training frames are drawn from a window that
  slides over the frames sorted by lip opening (closed -> open), blink (open -> closed) and
  lips-part, in turn.
- Stages: static (no deformation), motion, and a colour-only fine-tune.

Ablations of its Table 4 are config switches: ``decomposition``, ``incremental_sampling``,
``appearance_modification``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from talksplat.errors import TalksplatError
from talksplat.fields.hashgrid import HashGridConfig
from talksplat.fields.motion import (
    AudioEncoder,
    AudioEncoderConfig,
    LipStateEncoder,
    LipStateEncoderConfig,
    MotionField,
    MotionFieldConfig,
)
from talksplat.gaussians import rasterize
from talksplat.gaussians.densify import DensifyState, DensifyStrategy
from talksplat.gaussians.model import GaussianInitConfig, GaussianLearningRates, init_params, make_optimizers
from talksplat.recipes.data import HEAD_LABELS, INSIDE_MOUTH, LIPS, SubjectData
from talksplat.train.losses import l1_dssim, psnr

NAME = "talkinggaussian"
STAGES = ("static", "motion", "finetune")
MOUTH_DEPTH_BEHIND_LIPS_MM = 8.0  # the mouth interior starts a little behind the lip surface
AUDIO_CONDITIONS = ("lipstate", "learned")


@dataclass
class StageIterations:
    static: int = 1500
    motion: int = 3000
    finetune: int = 500

    @property
    def total(self) -> int:
        return self.static + self.motion + self.finetune


@dataclass
class IncrementalSamplingConfig:
    window: float = 0.3         # fraction of the sorted training frames in the window
    every: int = 50             # iterations between window moves (K in the paper)
    sweep_fraction: float = 0.6  # the window reaches the far end after this part of the motion stage


@dataclass
class TalkingGaussianConfig:
    size: int = 256
    iterations: StageIterations = field(default_factory=StageIterations)
    face_points: int = 8000
    mouth_points: int = 1500
    max_face_gaussians: int = 30_000
    max_mouth_gaussians: int = 4_000
    # Position learning rate in pixels per step at the subject's depth (the camera barely moves, so
    # 3DGS's 'x scene extent' rule does not apply).
    lr_means_px: float = 0.05
    lr_motion: float = 2e-3
    lr_grid: float = 1e-2
    dssim_weight: float = 0.2
    refine_every: int = 100
    face_motion: MotionFieldConfig = field(default_factory=MotionFieldConfig)
    mouth_motion: MotionFieldConfig = field(default_factory=lambda: MotionFieldConfig(
        grid=HashGridConfig(num_levels=8, log2_hashmap_size=12), expression_dim=0, outputs=("position",)))
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    audio_feature: str = "mel"
    # How audio conditions the motion fields. "lipstate": audio -> lip shape predicted by a ridge
    # map fitted on the training frames -> code (features/lipstate.py says why); training feeds the
    # tracked lip shapes (plus noise), rendering the predicted ones. "learned": the paper's
    # AudioNet on the raw features, trained end to end (memorises short clips).
    audio_condition: str = "lipstate"
    lip_state: LipStateEncoderConfig = field(default_factory=LipStateEncoderConfig)
    # Std of noise added to the tracked lip states in training. Independent per-frame noise taught
    # the temporal attention to average frames (blurring the mouth's motion); 0 did better.
    lip_state_noise: float = 0.0
    # Up-scaling of predicted lip states (features.lipstate): ridge predictions are shrunk towards
    # the mean; on the German anchor clip 2.0 raised held-out mouth-opening correlation 0.53 -> 0.57.
    lip_state_max_gain: float = 2.0
    sampling: IncrementalSamplingConfig = field(default_factory=IncrementalSamplingConfig)
    # In the motion stage, keep the canonical geometry fixed so mouth changes must be explained by
    # the audio-driven deformation rather than baked into an average mouth.
    freeze_geometry_in_motion: bool = False
    # Extra L1 over the lips' bounding box (lips + inside mouth, padded) in the motion stages: the
    # mouth is a few hundred of the 65k pixels at 256^2 and its motion barely moves the global loss.
    # German anchor, held-out mouth-opening correlation: 0.31 at 0, 0.53 at 2, 0.45 at 5.
    mouth_loss_weight: float = 2.0
    decomposition: bool = True
    incremental_sampling: bool = True
    appearance_modification: bool = False
    seed: int = 0

    def validate(self) -> None:
        if self.size < 32 or self.size % 2:
            raise ValueError("size must be an even number >= 32")
        if min(self.iterations.static, self.iterations.motion, self.iterations.finetune) < 0:
            raise ValueError("stage iteration counts must be >= 0")
        if self.audio_condition not in AUDIO_CONDITIONS:
            raise ValueError(f"audio_condition must be one of {AUDIO_CONDITIONS} (got {self.audio_condition!r})")


class Branch(nn.Module):
    """A Gaussian set and the motion field that deforms it."""

    def __init__(self, points: Tensor, colors: Tensor, motion_cfg: MotionFieldConfig, lr_means: float,
                 max_gaussians: int, refine_every: int, refine_stop: int) -> None:
        super().__init__()
        lrs = GaussianLearningRates(means=lr_means)
        self.params = init_params(points, colors, GaussianInitConfig(learning_rates=lrs))
        self.optimizers = make_optimizers(self.params, lrs)
        extent = float((points.max(0).values - points.min(0).values).max())
        self.motion = MotionField(motion_cfg, points.min(0).values, points.max(0).values)
        self.strategy = DensifyStrategy(max_gaussians=max_gaussians, scene_extent=extent, refine_start=refine_every * 2,
                                        refine_every=refine_every, refine_stop=refine_stop,
                                        reset_every=refine_stop + 1)
        self.densify_state = DensifyState()

    def gaussians(self, condition: tuple[Tensor, Tensor | None] | None) -> dict[str, Tensor]:
        p = self.params
        means, log_scales, quats = p["means"], p["log_scales"], p["quats"]
        opacity_logits, colors = p["opacity_logits"], p["colors"]
        if condition is not None:
            d = self.motion(means, *condition)
            means, log_scales, quats = means + d.d_means, log_scales + d.d_log_scales, quats + d.d_quats
            colors, opacity_logits = colors + d.d_colors, opacity_logits + d.d_opacity_logits
        return {"means": means, "quats": quats, "scales": torch.exp(log_scales),
                "opacities": torch.sigmoid(opacity_logits), "colors": colors}


class TalkingGaussian(nn.Module):
    """The recipe: owns both branches and the audio encoder, and knows how to train one step."""

    name = NAME

    def __init__(self, data: SubjectData, cfg: TalkingGaussianConfig) -> None:
        super().__init__()
        cfg.validate()
        if data.audio is None:
            raise TalksplatError("the subject has no audio features (prepared with --no-audio?); "
                                 "re-run `talksplat prepare` on a video with sound")
        self.cfg, self.data = cfg, data
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        K, w2c = data.K, data.w2c
        depth = float(w2c[:, 2, 3].median())
        lr_means = cfg.lr_means_px * depth / float(K[0, 0])
        refine_stop = cfg.iterations.static + cfg.iterations.motion // 2
        face_pts, face_cols, mouth_pts, mouth_cols = seed_points(data, cfg.face_points, cfg.mouth_points, self.rng)
        face_motion = _appearance_variant(cfg.face_motion) if cfg.appearance_modification else cfg.face_motion
        self.face = Branch(face_pts, face_cols, face_motion, lr_means, cfg.max_face_gaussians, cfg.refine_every,
                           refine_stop)
        self.mouth = Branch(mouth_pts, mouth_cols, cfg.mouth_motion, lr_means, cfg.max_mouth_gaussians,
                            cfg.refine_every, refine_stop) if cfg.decomposition else None
        self.lip_states: Tensor | None = None
        self.lip_state_fit: dict = {}
        if cfg.audio_condition == "lipstate":
            self.audio = self._fit_lip_state_encoder()
        else:
            self.audio = AudioEncoder(_audio_cfg(cfg.audio, data.audio))
            self.audio.fit_normalisation(data.audio[torch.as_tensor(data.train_frames)])
        self.net_optimizer = torch.optim.Adam(self._network_param_groups(), eps=1e-15)
        self.sorted_by = {
            "lip_open": data.train_frames[np.argsort(data.lip_open[data.train_frames], kind="stable")],
            "blink": data.train_frames[np.argsort(data.blink[data.train_frames], kind="stable")],
            "lips_part": data.train_frames[np.argsort(data.lips_part[data.train_frames], kind="stable")],
        }

    def _fit_lip_state_encoder(self) -> LipStateEncoder:
        from dataclasses import replace

        from talksplat.features.lipstate import LipBasis, fit_audio_to_lips

        data, train = self.data, self.data.train_frames
        basis = LipBasis.fit(data.lip_shapes[train], self.cfg.lip_state.lip_dims)
        states = basis.coefficients(data.lip_shapes)
        fit = fit_audio_to_lips(data.audio[torch.as_tensor(train)].numpy(), states[train],
                                max_gain=self.cfg.lip_state_max_gain)
        encoder = LipStateEncoder(replace(self.cfg.lip_state, input_dim=int(np.prod(data.audio.shape[1:]))))
        encoder.set_map(fit.x_mean, fit.x_std, fit.weight, fit.bias)
        self.lip_states = torch.from_numpy(states)
        self.lip_state_fit = {"ridge": fit.ridge, "cv_correlation": [round(float(c), 3) for c in fit.cv_correlation],
                              "gain": [round(float(g), 3) for g in fit.gain],
                              "explained_variance": [round(float(e), 3) for e in basis.explained]}
        return encoder

    def training_audio_code(self, t: int) -> Tensor | None:
        """The audio code for a training step on frame t: tracked lip states plus noise (lipstate),
        or None to use the audio itself."""
        if self.lip_states is None:
            return None
        noisy = self.lip_states + self.cfg.lip_state_noise * torch.randn_like(self.lip_states)
        return self.audio.from_states(noisy, t)

    # ---------------------------------------------------------------------------------- structure
    def branches(self) -> list[Branch]:
        return [self.face] + ([self.mouth] if self.mouth is not None else [])

    def _network_param_groups(self) -> list[dict]:
        groups = [{"params": list(self.audio.parameters()), "lr": self.cfg.lr_motion}]
        for branch in self.branches():
            groups.append({"params": [branch.motion.encoding.embeddings], "lr": self.cfg.lr_grid})
            others = [p for n, p in branch.motion.named_parameters() if not n.startswith("encoding.")]
            groups.append({"params": others, "lr": self.cfg.lr_motion})
        return groups

    @property
    def total_iterations(self) -> int:
        return self.cfg.iterations.total

    def stage(self, step: int) -> str:
        it = self.cfg.iterations
        if step < it.static:
            return "static"
        return "motion" if step < it.static + it.motion else "finetune"

    def num_gaussians(self) -> int:
        return sum(b.params["means"].shape[0] for b in self.branches())

    # ---------------------------------------------------------------------------------- rendering
    def conditions(self, t: int) -> tuple[Tensor, Tensor]:
        return self.audio(self.data.audio, t), self.data.expressions[t]

    def render(self, t: int, deform: bool = True, audio_code: Tensor | None = None,
               expression: Tensor | None = None, backdrop: Tensor | None = None,
               w2c: Tensor | None = None) -> dict:
        """Renders frame t (its camera, conditions and backdrop unless overridden)."""
        if deform:
            code = self.audio(self.data.audio, t) if audio_code is None else audio_code
            expr = self.data.expressions[t] if expression is None else expression
        size, K = self.cfg.size, self.data.K
        viewmat = self.data.w2c[t] if w2c is None else w2c
        face_cond = (code, expr) if deform else None
        face = rasterize(*self.face.gaussians(face_cond).values(), viewmat, K, size, size)
        image, transmittance = face.image, 1.0 - face.alpha
        mouth = None
        if self.mouth is not None:
            mouth = rasterize(*self.mouth.gaussians((code, None) if deform else None).values(), viewmat, K, size, size)
            image = image + transmittance * mouth.image
            transmittance = transmittance * (1.0 - mouth.alpha)
        backdrop = self.data.backdrop(t) if backdrop is None else backdrop
        # "head": premultiplied head colour, to composite the same render over another backdrop.
        return {"image": image + transmittance * backdrop, "alpha": 1.0 - transmittance, "head": image,
                "face_meta": face.meta, "mouth_meta": mouth.meta if mouth is not None else None}

    # ---------------------------------------------------------------------------------- training
    def sample_frame(self, step: int) -> int:
        stage = self.stage(step)
        frames = self.data.train_frames
        if stage != "motion" or not self.cfg.incremental_sampling:
            return int(self.rng.choice(frames))
        s = self.cfg.sampling
        motion_step = step - self.cfg.iterations.static
        sweep = max(int(self.cfg.iterations.motion * s.sweep_fraction), 1)
        if motion_step >= sweep:
            return int(self.rng.choice(frames))
        metric = ("lip_open", "blink", "lips_part")[step % 3]
        ordered = self.sorted_by[metric]
        width = max(int(len(ordered) * s.window), 1)
        progress = (motion_step // s.every * s.every) / sweep
        start = int(progress * (len(ordered) - width))
        return int(self.rng.choice(ordered[start:start + width]))

    def train_step(self, step: int) -> dict:
        stage = self.stage(step)
        t = self.sample_frame(step)
        target = self.data.image(t)
        deform = stage != "static"
        out = self.render(t, deform=deform, audio_code=self.training_audio_code(t) if deform else None)
        densifying = stage != "finetune"
        if densifying:
            self.face.strategy.step_pre_backward(out["face_meta"])
            if self.mouth is not None:
                self.mouth.strategy.step_pre_backward(out["mouth_meta"])
        loss = l1_dssim(out["image"], target, self.cfg.dssim_weight)
        if self.cfg.mouth_loss_weight > 0 and stage != "static":
            loss = loss + self.cfg.mouth_loss_weight * _mouth_box_l1(out["image"], target, self.data.labels(t))
        loss.backward()
        changes = {}
        if densifying:
            for branch, meta in ((self.face, out["face_meta"]), (self.mouth, out["mouth_meta"])):
                if branch is not None:
                    changes.update(branch.strategy.step_post_backward(
                        branch.params, branch.optimizers, branch.densify_state, step, meta, (self.cfg.size,) * 2))
        self._optimizer_step(stage)
        return {"loss": loss.item(), "psnr": psnr(out["image"], target), "stage": stage,
                "gaussians": self.num_gaussians(), **({"densify": changes} if changes else {})}

    def _optimizer_step(self, stage: str) -> None:
        trainable = None
        if stage == "finetune":
            trainable = ("colors",)
        elif stage == "motion" and self.cfg.freeze_geometry_in_motion:
            trainable = ("colors", "opacity_logits")
        for branch in self.branches():
            for name, opt in branch.optimizers.items():
                if trainable is None or name in trainable:
                    opt.step()
                opt.zero_grad(set_to_none=True)
        if stage == "motion":
            self.net_optimizer.step()
        self.net_optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def evaluate(self, frames: np.ndarray) -> dict:
        from talksplat.train.losses import ssim

        psnrs, ssims, head_psnrs, rendered_u8, static_u8, real_u8 = [], [], [], [], [], []
        # Lip motion is scored on renders over one fixed backdrop: a frame's own backdrop (its real
        # torso and neck) outlines the real jaw and would show the tracker the real mouth opening.
        fixed_backdrop = self.data.backdrop(int(self.data.train_frames[0]))
        for t in frames:
            out, target = self.render(int(t)), self.data.image(int(t))
            rendered = out["image"].clamp(0, 1)
            for_lips = (out["head"] + (1.0 - out["alpha"]) * fixed_backdrop).clamp(0, 1)
            rendered_u8.append((for_lips.numpy() * 255).round().astype(np.uint8))
            # The same without deformation: head pose alone correlates with mouth opening in real
            # footage (and moves the tracked landmarks), so this is the floor to compare with.
            undeformed = self.render(int(t), deform=False, backdrop=fixed_backdrop)["image"].clamp(0, 1)
            static_u8.append((undeformed.numpy() * 255).round().astype(np.uint8))
            real_u8.append((target.numpy() * 255).round().astype(np.uint8))
            psnrs.append(psnr(rendered, target))
            ssims.append(ssim(rendered, target).item())
            # Full-frame PSNR is flattered by the exact backdrop; the head box is the honest figure.
            ys, xs = np.nonzero(np.isin(self.data.labels(int(t)).numpy(), HEAD_LABELS))
            if len(ys):
                box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
                head_psnrs.append(psnr(rendered[box], target[box]))
        return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
                "psnr_head_box": float(np.mean(head_psnrs)) if head_psnrs else None,
                "mouth_opening_corr": _mouth_opening_agreement(rendered_u8, real_u8),
                "mouth_opening_corr_undeformed": _mouth_opening_agreement(static_u8, real_u8), "frames": len(frames)}

    def summary_extras(self) -> dict:
        """Recipe facts for the run summary."""
        return {"lip_state_map": self.lip_state_fit} if self.lip_state_fit else {}

    # ---------------------------------------------------------------------------------- state
    def state_tensors(self) -> dict[str, Tensor]:
        """Everything needed to resume exactly, as named tensors (for safetensors)."""
        tensors: dict[str, Tensor] = {}
        for prefix, branch in self._named_branches():
            for name, p in branch.params.items():
                tensors[f"{prefix}/params/{name}"] = p.detach()
                for key, value in branch.optimizers[name].state.get(p, {}).items():
                    tensors[f"{prefix}/adam/{name}/{key}"] = torch.as_tensor(value)
            for name, value in branch.motion.state_dict().items():
                tensors[f"{prefix}/motion/{name}"] = value
            for key in ("grad2d_sum", "count", "max_radius"):
                value = getattr(branch.densify_state, key)
                if value is not None:
                    tensors[f"{prefix}/densify/{key}"] = value
        for name, value in self.audio.state_dict().items():
            tensors[f"audio/{name}"] = value
        for i, p in enumerate(p for g in self.net_optimizer.param_groups for p in g["params"]):
            for key, value in self.net_optimizer.state.get(p, {}).items():
                tensors[f"net_adam/{i}/{key}"] = torch.as_tensor(value)
        tensors["rng/torch"] = torch.get_rng_state()
        tensors["rng/numpy"] = torch.tensor(_numpy_rng_words(self.rng), dtype=torch.int64)
        return tensors

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        for prefix, branch in self._named_branches():
            for name in list(branch.params.keys()):
                p = nn.Parameter(tensors[f"{prefix}/params/{name}"].clone())
                branch.params[name] = p
                opt = branch.optimizers[name]
                opt.param_groups[0]["params"] = [p]
                opt.state.clear()
                state = {key.rsplit("/", 1)[1]: v.clone() for key, v in tensors.items()
                         if key.startswith(f"{prefix}/adam/{name}/")}
                if state:
                    opt.state[p] = state
            branch.motion.load_state_dict({k[len(prefix) + 8:]: v for k, v in tensors.items()
                                           if k.startswith(f"{prefix}/motion/")})
            for key in ("grad2d_sum", "count", "max_radius"):
                setattr(branch.densify_state, key, tensors.get(f"{prefix}/densify/{key}"))
        self.audio.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("audio/")})
        params = [p for g in self.net_optimizer.param_groups for p in g["params"]]
        self.net_optimizer.state.clear()
        for i, p in enumerate(params):
            state = {k.rsplit("/", 1)[1]: v.clone() for k, v in tensors.items() if k.startswith(f"net_adam/{i}/")}
            if state:
                self.net_optimizer.state[p] = state
        torch.set_rng_state(tensors["rng/torch"])
        _restore_numpy_rng(self.rng, tensors["rng/numpy"])

    def _named_branches(self) -> list[tuple[str, Branch]]:
        return [("face", self.face)] + ([("mouth", self.mouth)] if self.mouth is not None else [])


def _mouth_opening_agreement(rendered: list[np.ndarray], real: list[np.ndarray]) -> float | None:
    """Correlation of the tracked mouth opening of rendered vs real frames (lip-motion fidelity)."""
    from talksplat.tracking.facemesh import mouth_opening, nan_correlation, track_frames

    if len(rendered) < 3:
        return None
    return nan_correlation(mouth_opening(track_frames(rendered)), mouth_opening(track_frames(real)))


MOUTH_BOX_PADDING_PX = 6


def _mouth_box_l1(image: Tensor, target: Tensor, labels: Tensor) -> Tensor:
    ys, xs = torch.nonzero((labels == LIPS) | (labels == INSIDE_MOUTH), as_tuple=True)
    if ys.numel() == 0:
        return image.new_zeros(())
    pad, size = MOUTH_BOX_PADDING_PX, labels.shape[0]
    y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad + 1, size)
    x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad + 1, size)
    return (image[y0:y1, x0:x1] - target[y0:y1, x0:x1]).abs().mean()


def _appearance_variant(cfg: MotionFieldConfig) -> MotionFieldConfig:
    from dataclasses import replace

    return replace(cfg, outputs=("color", "opacity"))


def _audio_cfg(cfg: AudioEncoderConfig, windows: Tensor) -> AudioEncoderConfig:
    from dataclasses import replace

    return replace(cfg, window=int(windows.shape[1]), input_dim=int(windows.shape[2]))


def _numpy_rng_words(rng: np.random.Generator) -> list[int]:
    state = rng.bit_generator.state  # PCG64: 128-bit state and increment
    words = []
    for value in (state["state"]["state"], state["state"]["inc"]):
        words += [(value >> shift) & 0xFFFFFFFF for shift in (96, 64, 32, 0)]
    return words + [state["has_uint32"], state["uinteger"]]


def _restore_numpy_rng(rng: np.random.Generator, words: Tensor) -> None:
    w = [int(x) for x in words.tolist()]
    join = lambda part: sum(v << shift for v, shift in zip(part, (96, 64, 32, 0)))
    state = rng.bit_generator.state
    state["state"] = {"state": join(w[0:4]), "inc": join(w[4:8])}
    state["has_uint32"], state["uinteger"] = w[8], w[9]
    rng.bit_generator.state = state


# ------------------------------------------------------------------------------------ initialisation
def seed_points(data: SubjectData, n_face: int, n_mouth: int, rng: np.random.Generator):
    """Back-projects head pixels of a training frame to 3D using the fitted template's depth.

    The face template (in the head/world frame, mm) is projected into the frame; pixel depths are
    interpolated from its vertices (nearest outside the face, so hair sits at the face's edge
    depth). Inside-mouth points come from the frame with the widest lip opening, a little behind
    the lips. Returns (face_points [n,3], face_colors [n,3], mouth_points, mouth_colors).
    """
    from talksplat.tracking.template import load_canonical_template

    template = torch.tensor(load_canonical_template().vertices, dtype=torch.float32)
    first = int(data.train_frames[0])
    widest = int(data.train_frames[np.argmax(data.lip_open[data.train_frames])])
    face = _backproject(data, first, template, HEAD_LABELS[:-1], n_face, rng, depth_offset=0.0)
    mouth = _backproject(data, widest, template, (INSIDE_MOUTH,), n_mouth, rng,
                         depth_offset=MOUTH_DEPTH_BEHIND_LIPS_MM)
    return (*face, *mouth)


def _backproject(data: SubjectData, t: int, template: Tensor, labels, n: int, rng, depth_offset: float):
    from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

    w2c = data.w2c[t]
    cam = template @ w2c[:3, :3].T + w2c[:3, 3]
    uv = (cam[:, :2] / cam[:, 2:3]) * torch.stack([data.K[0, 0], data.K[1, 1]]) + data.K[:2, 2]
    label_map = data.labels(t).numpy()
    ys, xs = np.nonzero(np.isin(label_map, labels))
    if len(xs) == 0:  # e.g. a closed mouth everywhere: seed at the template's mouth region
        ys, xs = np.nonzero(label_map == label_map[int(uv[13, 1]), int(uv[13, 0])])
    pick = rng.choice(len(xs), size=n, replace=len(xs) < n)
    px = np.stack([xs[pick], ys[pick]], -1).astype(np.float64) + rng.uniform(0, 1, (n, 2))
    linear = LinearNDInterpolator(uv.numpy(), cam[:, 2].numpy())
    nearest = NearestNDInterpolator(uv.numpy(), cam[:, 2].numpy())
    z = linear(px)
    z = np.where(np.isnan(z), nearest(px), z) + depth_offset
    K = data.K.numpy()
    x_cam = np.stack([(px[:, 0] - K[0, 2]) / K[0, 0] * z, (px[:, 1] - K[1, 2]) / K[1, 1] * z, z], -1)
    c2w = torch.linalg.inv(w2c).numpy()
    world = x_cam @ c2w[:3, :3].T + c2w[:3, 3]
    colors = data.image(t).numpy()[ys[pick], xs[pick]]
    return torch.tensor(world, dtype=torch.float32), torch.tensor(colors, dtype=torch.float32)
