"""Training data: a prepared subject with named per-frame channels, collections of subjects, samplers."""

from talksplat.data.collection import SubjectCollection
from talksplat.data.samplers import IncrementalSamplingConfig, make_sampler
from talksplat.data.subject import SubjectData, load_subject_data, subject_fingerprint

__all__ = ["IncrementalSamplingConfig", "SubjectCollection", "SubjectData", "load_subject_data", "make_sampler",
           "subject_fingerprint"]
