"""Which training frame each step uses: reusable samplers the engine picks per stage.

A sampler is built once per stage from the data and returns a frame index for a step, drawing from
the engine's numpy generator (so a resumed run draws exactly what an uninterrupted one would).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talksplat.data.subject import SubjectData


class Sampler:
    def sample(self, step: int, stage_start: int, stage_iterations: int, rng: np.random.Generator) -> int:
        raise NotImplementedError


class UniformSampler(Sampler):
    """Any training frame, uniformly."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = np.asarray(frames)

    def sample(self, step, stage_start, stage_iterations, rng) -> int:
        return int(rng.choice(self.frames))


@dataclass
class IncrementalSamplingConfig:
    window: float = 0.3          # fraction of the sorted training frames in the window
    every: int = 50              # iterations between window moves (K in the paper)
    sweep_fraction: float = 0.6  # the window reaches the far end after this part of the stage


# Per-frame measures the incremental sampler sorts by, in turn (TalkingGaussian eq. 5): lip opening
# (closed -> open), blink (open -> closed), lips apart.
INCREMENTAL_METRICS = ("lip_open", "blink", "lips_part")


class IncrementalSampler(Sampler):
    """TalkingGaussian's incremental sampling: a window sliding over the training frames sorted by a
    motion measure (one measure per step, in turn), from small to large motion; after
    ``sweep_fraction`` of the stage, uniform."""

    def __init__(self, data: SubjectData, cfg: IncrementalSamplingConfig) -> None:
        train = data.train_frames
        self.cfg = cfg
        self.uniform = UniformSampler(train)
        self.sorted_by = [train[np.argsort(np.asarray(data.channel(m))[train], kind="stable")]
                          for m in INCREMENTAL_METRICS]

    def sample(self, step, stage_start, stage_iterations, rng) -> int:
        s = self.cfg
        stage_step = step - stage_start
        sweep = max(int(stage_iterations * s.sweep_fraction), 1)
        if stage_step >= sweep:
            return self.uniform.sample(step, stage_start, stage_iterations, rng)
        ordered = self.sorted_by[step % len(INCREMENTAL_METRICS)]
        width = max(int(len(ordered) * s.window), 1)
        progress = (stage_step // s.every * s.every) / sweep
        start = int(progress * (len(ordered) - width))
        return int(rng.choice(ordered[start:start + width]))


def share_of(frames: np.ndarray, train_frames: np.ndarray) -> float:
    """The share of the training frames that ``frames`` are (a uniform draw's long-run share)."""
    return len(frames) / max(len(train_frames), 1)


class MinimumShareSampler(Sampler):
    """Another sampler, except that at least ``share`` of the steps draw one of ``frames`` (uniformly).

    For rare, short events a loss would otherwise hardly see: a news anchor who blinks twice in his
    18 s of training frames has his eyes shut in 1% of them, and his avatar learned to half-close
    them. Where ``frames`` already make up ``share`` of the training frames (the base sampler's
    long-run share), it draws exactly what the base sampler draws.
    """

    def __init__(self, base: Sampler, frames: np.ndarray, train_frames: np.ndarray, share: float) -> None:
        self.base, self.frames = base, np.asarray(frames)
        natural = share_of(self.frames, train_frames)
        # P(extra draw) + (1 - P) * natural = share
        self.extra = (share - natural) / (1.0 - natural) if 0 < len(self.frames) and natural < share else 0.0

    def sample(self, step, stage_start, stage_iterations, rng) -> int:
        if self.extra > 0 and rng.random() < self.extra:     # no draw otherwise: runs stay as they were
            return int(rng.choice(self.frames))
        return self.base.sample(step, stage_start, stage_iterations, rng)


# A training frame has its eyes shut when its blink coefficient (ARKit eyeBlink, both eyes) is at
# least this: half closed.
SHUT_EYES_BLINK = 0.5


def shut_eye_frames(data: SubjectData) -> np.ndarray:
    """The training frames whose eyes are shut (blink coefficient >= SHUT_EYES_BLINK)."""
    train = np.asarray(data.train_frames)
    return train[np.asarray(data.blink)[train] >= SHUT_EYES_BLINK]


SAMPLERS = ("uniform", "incremental")


def make_sampler(kind: str, data: SubjectData, incremental: IncrementalSamplingConfig | None = None) -> Sampler:
    if kind == "uniform":
        return UniformSampler(data.train_frames)
    if kind == "incremental":
        return IncrementalSampler(data, incremental or IncrementalSamplingConfig())
    raise ValueError(f"unknown sampler {kind!r}; choose one of {', '.join(SAMPLERS)}")
