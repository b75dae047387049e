"""gptextures: multi-scale Gaussian-process texture benchmark (Golkar & Cranmer, "Backdrop").

Public API: ``sample_field``, ``render``, ``render_components``, ``Level``, ``TextureSpec``,
``DatasetSpec``, ``presets``, ``Evaluator``, ``evaluate_submission``. See docs/ for the guides.
"""

from . import presets
from .evaluation import Evaluator, evaluate_submission
from .fields import sample_field
from .io import load
from .spec import ALGORITHM_VERSION, DatasetSpec, Level, Sample, TextureSpec
from .textures import render, render_components

__version__ = "0.1.0"

__all__ = [
    "ALGORITHM_VERSION",
    "DatasetSpec",
    "Evaluator",
    "Level",
    "Sample",
    "TextureSpec",
    "__version__",
    "evaluate_submission",
    "load",
    "presets",
    "render",
    "render_components",
    "sample_field",
]
