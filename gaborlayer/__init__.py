"""gaborlayer: differentiable Gabor filter-bank layers for PyTorch."""
from .functional import (canonicalize, envelope_extent, gabor_conv1d, gabor_conv2d, gabor_conv3d, gabor_kernel1d,
                         gabor_kernel2d, gabor_kernel3d, suggest_kernel_size)
from .fit import GaborFit, fit_kernel, fit_response
from .modules import GaborConv1d, GaborConv2d, GaborConv3d, GaborTruncationWarning, replace_conv2d
from . import init  # noqa: E402  (gaborlayer.init.gabor_, after .modules which it uses)

__all__ = ["GaborConv1d", "GaborConv2d", "GaborConv3d", "GaborFit", "fit_kernel", "fit_response", "canonicalize", "gabor_conv1d", "gabor_conv2d", "gabor_conv3d",
           "gabor_kernel1d", "gabor_kernel2d", "gabor_kernel3d", "replace_conv2d", "GaborTruncationWarning", "envelope_extent", "suggest_kernel_size"]
__version__ = "0.1.0"
