"""gaborlayer: differentiable Gabor filter-bank layers for PyTorch."""
from . import filters, init, optim
from .convert import replace_conv2d
from .fit import GaborFit, fit_kernel, fit_response
from .functional import (
                         canonicalize,
                         envelope_extent,
                         gabor_conv1d,
                         gabor_conv2d,
                         gabor_conv3d,
                         gabor_kernel1d,
                         gabor_kernel2d,
                         gabor_kernel3d,
                         suggest_kernel_size,
)
from .modules import GaborConv1d, GaborConv2d, GaborConv3d, GaborTruncationWarning
from .plotting import plot_bank

__all__ = [
    "GaborConv1d", "GaborConv2d", "GaborConv3d", "GaborTruncationWarning", "replace_conv2d",
    "gabor_kernel1d", "gabor_kernel2d", "gabor_kernel3d", "gabor_conv1d", "gabor_conv2d", "gabor_conv3d",
    "canonicalize", "envelope_extent", "suggest_kernel_size",
    "GaborFit", "fit_kernel", "fit_response",
    "plot_bank", "init", "optim", "filters",
]
__version__ = "0.1.0"
