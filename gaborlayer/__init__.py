"""gaborlayer: differentiable Gabor filter-bank layers for PyTorch."""
from .functional import canonicalize, gabor_conv2d, gabor_kernel2d
from .fit import GaborFit, fit_kernel, fit_response
from .modules import GaborConv2d, replace_conv2d

__all__ = ["GaborConv2d", "GaborFit", "fit_kernel", "fit_response", "canonicalize", "gabor_conv2d", "gabor_kernel2d", "replace_conv2d"]
__version__ = "0.1.0"
