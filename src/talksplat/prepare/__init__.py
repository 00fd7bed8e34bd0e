"""``talksplat prepare``: turn a raw talking video into a training set (docs/dataset.md).

    from talksplat.prepare import PrepareConfig, prepare, load_subject
    result = prepare("talk.mp4", "subjects/anna", PrepareConfig(size=512))
    data = load_subject("subjects/anna")
"""

from talksplat.prepare.config import PrepareConfig
from talksplat.prepare.layout import FORMAT, FORMAT_VERSION, load_subject
from talksplat.prepare.pipeline import PrepareResult, prepare

__all__ = ["FORMAT", "FORMAT_VERSION", "PrepareConfig", "PrepareResult", "load_subject", "prepare"]
