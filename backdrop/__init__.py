"""Backdrop: stochastic backpropagation by masking gradients (Golkar & Cranmer, 2018).

Public API: the masking function and layer, the compute-saving paths over samples and over
spatial patches, the non-decomposable losses, and the paper's Table 1 networks with mask slots.
"""

from backdrop.efficient import EfficientBackdrop, efficient_backdrop
from backdrop.functional import (
    apply_mask,
    backdrop,
    cell_bounds,
    expand_mask,
    mask_weights,
    sample_mask,
    scale_gradient,
)
from backdrop.layers import Backdrop
from backdrop.losses import auc_rank_loss, centroid_distance_loss
from backdrop.models import AllConvNet, GPNet, PonceNet, lattice_size, mask_stage
from backdrop.spatial import efficient_spatial_backdrop

__all__ = [
    "AllConvNet",
    "Backdrop",
    "EfficientBackdrop",
    "GPNet",
    "PonceNet",
    "apply_mask",
    "auc_rank_loss",
    "backdrop",
    "cell_bounds",
    "centroid_distance_loss",
    "efficient_backdrop",
    "efficient_spatial_backdrop",
    "expand_mask",
    "lattice_size",
    "mask_stage",
    "mask_weights",
    "sample_mask",
    "scale_gradient",
]
