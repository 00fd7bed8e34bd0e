"""Several prepared subjects for multi-identity training (one-shot avatars pretrain on many people).

Layout a user builds: one folder per person, each written by ``talksplat prepare`` (e.g. from HDTF
clips), all under one parent::

    identities/
        person_a/  subject.json frames.npy ...
        person_b/  ...

``SubjectCollection.load(parent, size)`` opens every prepared subject in it (sorted by name, so the
identity indices are stable) and ``sample_pair`` draws (identity, source frame, target frame) with
the source different from the target, as a one-shot recipe trains: reconstruct the target frame of
a person from another frame of the same person.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talksplat.data.subject import SubjectData, load_subject_data
from talksplat.errors import TalksplatError, UsageError


@dataclass
class SubjectCollection:
    subjects: list[SubjectData]

    def __len__(self) -> int:
        return len(self.subjects)

    @classmethod
    def load(cls, parent: Path, size: int, audio_feature: str = "mel") -> SubjectCollection:
        parent = Path(parent)
        if not parent.is_dir():
            raise UsageError(f"{parent} is not a folder of prepared subjects")
        folders = sorted(p for p in parent.iterdir() if (p / "subject.json").is_file())
        if not folders:
            raise UsageError(f"{parent} holds no prepared subjects (folders with subject.json); "
                             "run `talksplat prepare VIDEO -o PARENT/NAME` for each person")
        return cls([load_subject_data(p, size, audio_feature) for p in folders])

    def sample_pair(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """(identity, source frame, target frame), source != target, both training frames."""
        identity = int(rng.integers(len(self.subjects)))
        frames = self.subjects[identity].train_frames
        if len(frames) < 2:
            raise TalksplatError(f"subject {self.subjects[identity].name} has fewer than 2 training frames")
        source, target = rng.choice(frames, size=2, replace=False)
        return identity, int(source), int(target)
