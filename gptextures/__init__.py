"""gptextures: multi-scale Gaussian-process texture benchmark (Golkar & Cranmer, "Backdrop").

Public API: ``sample_field``, ``render``, ``render_components``, ``Level``, ``TextureSpec``,
``DatasetSpec``, ``presets``, ``generate`` (files), ``load`` (any source), ``Evaluator``,
``evaluate_submission``. See docs/ for the guides. Importing it loads numpy only: pyFFTW, scipy,
h5py, pyarrow, torch and datasets load where they are first used.
"""

from . import presets
from .evaluation import Evaluator, evaluate_submission
from .fields import sample_field
from .generation import generate
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
    "generate",
    "load",
    "presets",
    "render",
    "render_components",
    "sample_field",
]
