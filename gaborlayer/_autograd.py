"""The Gabor banks as ``torch.autograd.Function``s with analytic backwards.

Each dimension has three plain functions, ``gabor_kernelNd_forward(params, size)``,
``gabor_kernelNd_backward(grad, params, size, needs_input_grad)`` and
``gabor_kernelNd_jvp(params, tangents, size)`` (forward mode: the bank's tangent from the
parameters' tangents, ``None`` for none), where ``params`` are the
parameter vectors ``(N,)`` in the family's order (``gaborlayer._family``). The autograd
Functions (:class:`GaborKernel1d`, :class:`GaborKernel2d`, :class:`GaborKernel3d`) and the
``torch.library`` registration (``gaborlayer._ops``) both call them.

Forward saves only the parameter vectors; backward recomputes the rotated coordinates, envelope
and phase, so no ``(N, *size)`` intermediate outlives the forward. The backward is written in
differentiable torch ops, so double backward (gradgradcheck) works through it. The derivation of
every term is in ``docs/math.md`` (2-D) and ``docs/nd.md`` (1-D and 3-D).
"""
from __future__ import annotations

import functools
import math

import torch

from . import _cpu_kernels
from ._checks import LAMBD_FLOOR
from ._compat import forward_ad_active, functorch_active, fx_tracing
from ._reference import reduced_phase_offset, sampling_grid1d, sampling_grid2d, sampling_grid3d
from ._storage import LOG_LIMIT, _bounded_exp

TWO_PI = 2 * math.pi


def _terms2d(theta, sigma, lambd, gamma, psi, kh, kw):
    """Shared intermediates, each ``(P, N)`` with ``P = kh * kw`` taps in row-major order.

    The filter index is the contiguous one: broadcasting a per-tap column against per-filter rows
    then runs along contiguous memory, about twice as fast on a CPU as ``(N, kh, kw)`` with the
    parameters broadcast over the taps (the forward of 4096 3 x 3 filters: 0.79 -> 0.44 ms, one
    thread; docs/benchmarks.md). No matmul for the rotation: autocast would run it in half
    precision. Per-filter factors (``2 pi / lambd``) are formed on the ``(N,)`` vectors, and
    ``addcmul`` fuses a product with a sum, so each ``(P, N)`` intermediate costs one operation.

    ``a = x'/sigma`` and ``b = gamma c`` with ``c = y'/sigma`` are the envelope's scaled
    coordinates. They are formed by dividing the coordinate (bounded by the kernel size) by sigma,
    never by multiplying with 1/sigma**2, so a tiny sigma gives an envelope of exact zeros instead
    of 0 * inf = NaN.
    """
    y, x = sampling_grid2d(kh, kw, theta.dtype, theta.device)
    x, y = x.expand(kh, kw).reshape(-1, 1), y.expand(kh, kw).reshape(-1, 1)  # (P, 1) columns
    cos_t, sin_t = torch.cos(theta), torch.sin(theta)
    x_rot = torch.addcmul(x * cos_t, y, sin_t)
    y_rot = torch.addcmul(y * cos_t, x, sin_t, value=-1)
    a = x_rot / sigma
    c = y_rot / sigma
    b = gamma * c
    envelope = torch.exp(torch.addcmul(a * a, b, b).mul_(-0.5))
    phase = torch.addcmul(reduced_phase_offset(psi), x_rot, TWO_PI / lambd)
    return x_rot, y_rot, a, b, c, envelope, phase


def _bank_terms2d(theta, sigma, lambd, gamma, psi, kh: int, kw: int) -> torch.Tensor:
    """The bank ``K = E cos(phase)`` as ``(P, N)`` (taps, filters) in PyTorch operations: the plain
    forward wherever the compiled loop (``gaborlayer._cpu_kernels``, the same formula) does not run
    -- under torch.compile, fx and jit tracing, functorch transforms, on other devices.

    ``x' = x cos + y sin``, ``y' = y cos - x sin`` and the phase ``2 pi x'/lambd + psi`` are each
    a per-column term plus a per-row term: the three column terms come from one product of the
    per-filter ``(cos, sin, cos / lambd)`` with the cached column table ``(x, -x, 2 pi x)``, the
    row terms likewise with ``(sin, cos, sin / lambd)`` and ``(y, y, 2 pi y)`` (the filter index
    contiguous, see :func:`_terms2d`). The envelope's scaled coordinates divide the bounded ``x'``
    and ``y'`` by sigma (a tiny sigma gives an envelope of exact zeros, never 0 * inf). The carrier
    is separable: ``cos(alpha + beta) = cos alpha cos beta - sin alpha sin beta`` with ``alpha`` the
    phase's column term plus psi and ``beta`` its row term, so cosines and sines are taken of
    ``(kw + kh) N`` angles, not of ``kh kw N`` phases. Later steps run in place, except under
    functorch transforms (whose batched tensors refuse some in-place writes) and
    ``torch.jit.trace`` (whose graph is replayed with autograd on).
    """
    columns, rows = _tap_coordinates(kh, kw, theta)  # (3, 1, kw, 1) and (3, kh, 1, 1)
    cos_t, sin_t = torch.cos(theta), torch.sin(theta)
    per_column, per_row = torch.stack([cos_t, sin_t, cos_t / lambd, sin_t, cos_t, sin_t / lambd]).view(
        2, 3, 1, 1, -1).unbind()
    x_cos, x_sin, alpha = (per_column * columns).unbind()  # each (1, kw, N): x cos, -x sin, 2 pi x cos / lambd
    y_sin, y_cos, beta = (per_row * rows).unbind()  # each (kh, 1, N): y sin, y cos, 2 pi y sin / lambd
    alpha = alpha + reduced_phase_offset(psi)
    cos_x, sin_x, cos_y, sin_y = torch.cos(alpha), torch.sin(alpha), torch.cos(beta), torch.sin(beta)
    x_rot, y_rot = x_cos + y_sin, x_sin + y_cos  # (kh, kw, N)
    if functorch_active() or torch.jit.is_tracing():  # replayed with autograd by TorchScript: no in-place
        a, b = x_rot / sigma, (y_rot / sigma) * gamma
        envelope = torch.exp(torch.addcmul(a * a, b, b) * -0.5)
        bank = torch.addcmul(cos_x * cos_y, sin_x, sin_y, value=-1) * envelope
    else:
        a, b = x_rot.div_(sigma), y_rot.div_(sigma).mul_(gamma)
        envelope = a.mul_(a).addcmul_(b, b).mul_(-0.5).exp_()
        # (out of place: torch.compile rewrites an in-place addcmul_ with value=-1, to other roundings)
        bank = torch.addcmul(cos_x * cos_y, sin_x, sin_y, value=-1).mul_(envelope)
    return bank.view(kh * kw, -1)


def gabor_kernel2d_forward(params, size):
    """Bank ``(N, kh, kw)`` from ``params = (theta, sigma, lambd, gamma, psi)``, each ``(N,)``: by the
    compiled kernel where :func:`gaborlayer._cpu_kernels.eligible`, else by PyTorch operations."""
    if _cpu_kernels.eligible(*params):
        return _cpu_kernels.bank2d(params, *size)[0]
    bank = _bank_terms2d(*params, *size)
    # Flattened first, so the bank gets standard strides even for 1 x 1 kernels (a (1, N)
    # transpose is "contiguous" with odd strides, which can steer F.conv2d to another kernel).
    return bank.t().reshape(-1).view(params[0].shape[0], *size)


def gabor_kernel2d_backward(grad, params, size, needs_input_grad):
    """The five parameter gradients ``(N,)`` (``None`` where not needed) from ``grad`` ``(N, kh, kw)``."""
    theta, sigma, lambd, gamma, psi = params
    need = needs_input_grad
    x_rot, y_rot, a, b, c, envelope, phase = _terms2d(theta, sigma, lambd, gamma, psi, *size)
    # Every product below starts from a factor that holds the envelope, so where it has
    # underflowed to 0 each term is 0 * finite = 0. a, b and c are finite wherever the envelope
    # is not 0; elsewhere a tiny sigma or a huge gamma can make them inf, and nan_to_num sets
    # those to 0 so that 0 * inf does not turn into NaN. (A mask with torch.where costs ten
    # times as much on a CPU.)
    a, b, c = (torch.nan_to_num(t, posinf=0.0, neginf=0.0) for t in (a, b, c))
    # (P, N) in the envelope's layout: reading the incoming gradient transposed here is
    # cheaper than a separate contiguous copy.
    grad_env = envelope * grad.reshape(grad.shape[0], -1).t()
    g_cos = grad_env * torch.cos(phase)  # grad * kernel
    g_sin = grad_env * torch.sin(phase)

    def total(t):
        return t.sum(dim=0)

    d_theta = d_sigma = d_lambd = d_gamma = d_psi = None
    if need[0] or need[1]:
        g_cos_a = g_cos * a
    if need[1] or need[3]:
        g_cos_bb = total((g_cos * b) * b)
    if need[0]:
        # dK/dtheta = K * a b (gamma - 1/gamma) - E sin(phase) * 2 pi y'/lambd, with a b / gamma
        # summed as a y'/sigma: 1/gamma overflows for a subnormal gamma, y'/sigma does not.
        d_theta = (total(g_cos_a * b) * gamma - total(g_cos_a * c)
                   - total(g_sin * y_rot) * (TWO_PI / lambd))
    if need[1]:
        # dK/dsigma = K (a^2 + b^2) / sigma
        d_sigma = (total(g_cos_a * a) + g_cos_bb) / sigma
    if need[2]:
        # dK/dlambd = E sin(phase) * 2 pi x' / lambd^2
        d_lambd = total(g_sin * x_rot) * (TWO_PI / (lambd * lambd))
    if need[3]:
        # dK/dgamma = -K b^2 / gamma
        d_gamma = -g_cos_bb / gamma
    if need[4]:
        # dK/dpsi = -E sin(phase)
        d_psi = -total(g_sin)
    return d_theta, d_sigma, d_lambd, d_gamma, d_psi


def _tangent_sum(terms, like):
    """``sum(dK/dp * t_p)`` over the ``(dK/dp, t_p)`` pairs of ``terms`` (each already
    broadcastable), or zeros shaped ``like`` when there are none."""
    out = None
    for derivative, tangent in terms:
        out = derivative * tangent if out is None else torch.addcmul(out, derivative, tangent)
    return torch.zeros_like(like) if out is None else out


def gabor_kernel2d_jvp(params, tangents, size):
    """The bank's tangent ``(N, kh, kw)``: ``sum_p dK/dp * t_p`` over the parameters whose tangent
    ``t_p`` (shape ``(N,)``) is not ``None``. Forward mode of :func:`gabor_kernel2d_forward`.

    Each ``dK/dp`` is the per-tap factor that :func:`gabor_kernel2d_backward` sums against the
    incoming gradient, with the same care: products start from the factor holding the envelope,
    ``a``, ``b``, ``c`` are ``nan_to_num``-ed, and per-filter factors (``gamma``, ``1/sigma``, the
    tangent) multiply last, so a tiny sigma or a huge gamma gives 0, not NaN.
    """
    theta, sigma, lambd, gamma, psi = params
    t_theta, t_sigma, t_lambd, t_gamma, t_psi = tangents
    x_rot, y_rot, a, b, c, envelope, phase = _terms2d(theta, sigma, lambd, gamma, psi, *size)
    a, b, c = (torch.nan_to_num(t, posinf=0.0, neginf=0.0) for t in (a, b, c))
    e_cos = envelope * torch.cos(phase)  # the kernel, (P, N)
    e_sin = envelope * torch.sin(phase)
    terms = []
    if t_theta is not None or t_sigma is not None:
        e_cos_a = e_cos * a
    if t_sigma is not None or t_gamma is not None:
        e_cos_bb = (e_cos * b) * b
    if t_theta is not None:
        # dK/dtheta = E cos(phase) a b gamma - E cos(phase) a c - E sin(phase) y' 2 pi / lambd
        terms.append(((e_cos_a * b) * gamma - e_cos_a * c - (e_sin * y_rot) * (TWO_PI / lambd), t_theta))
    if t_sigma is not None:
        # dK/dsigma = K (a^2 + b^2) / sigma
        terms.append((torch.addcmul(e_cos_bb, e_cos_a, a) / sigma, t_sigma))
    if t_lambd is not None:
        # dK/dlambd = E sin(phase) x' 2 pi / lambd^2
        terms.append(((e_sin * x_rot) * (TWO_PI / (lambd * lambd)), t_lambd))
    if t_gamma is not None:
        # dK/dgamma = -K b^2 / gamma
        terms.append((e_cos_bb / gamma, -t_gamma))
    if t_psi is not None:
        # dK/dpsi = -E sin(phase)
        terms.append((e_sin, -t_psi))
    # (P, N) -> (N, kh, kw), flattened first as in the forward, for standard strides.
    return _tangent_sum(terms, e_cos).t().reshape(-1).view(theta.shape[0], *size)


# -- the eager CPU path: a backward from six moments per filter -----------------------------------
# Every parameter gradient of the 2-D bank is a combination of six weighted sums per filter,
#     sum_p G K {x^2, xy, y^2}   and   sum_p G S {x, y, 1}
# over the taps p at pixel coordinates (x, y), with G the incoming gradient, K = E cos(phase) the
# bank and S = E sin(phase): dK/dtheta, dK/dsigma and dK/dgamma are K times quadratic forms in the
# rotated coordinates (x', y'), dK/dlambd and dK/dpsi are S times x' and 1, and a quadratic form in
# (x', y') is one in (x, y) with per-filter coefficients. So the backward is one pass over G, K and S
# that sums the six moments, and O(N) algebra: no transcendental function of the bank, no
# recomputation. The forward keeps S for it (one bank more than the parameters; K is the output).
# Rotating the moments into the filter's frame cancels (x'^2 = c^2 x^2 + 2cs xy + s^2 y^2 is small
# where x^2 and y^2 are not, for an elongated envelope): the products, moments and that algebra run
# in float64, where the cancellation costs a relative max(gamma, 1/gamma)^2 * 1e-16 of
# sum |G K| r^2, so the moments are used only for gamma within MOMENT_GAMMA_RANGE (and a sigma
# within MOMENT_SIGMA_RANGE, where 1/sigma is finite and no scaled coordinate overflows); outside it
# the Function keeps no S and its backward is the plain one. The bank with S and the moment
# gradients are each one loop compiled by numba (gaborlayer._cpu_kernels; where numba is missing,
# moments_pay is False and the plain Function runs). Under create_graph, torch.compile, fx,
# functorch, forward-mode AD and on non-CPU devices, GaborKernel2d takes its own path (the
# parameters alone saved, everything recomputed).
MOMENT_GAMMA_RANGE = (1 / 64, 64.0)
MOMENT_SIGMA_RANGE = (1e-3, 1e6)


@functools.lru_cache(maxsize=64)
def _tap_grids(kh: int, kw: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The column table ``(x, -x, 2 pi x)`` ``(3, 1, kw, 1)`` and the row table ``(y, y, 2 pi y)``
    ``(3, kh, 1, 1)`` of the pixel coordinates in ``dtype`` (see :func:`_bank_terms2d`). Cached per
    size, dtype and device; built outside inference mode (a cached inference tensor could not be
    saved for a backward later)."""
    with torch.inference_mode(False), torch.no_grad():
        return _coordinate_tables(kh, kw, dtype, device)


def _coordinate_tables(kh: int, kw: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    y, x = sampling_grid2d(kh, kw, torch.float64, device)
    x, y = x.view(kw), y.view(kh)
    return (torch.stack([x, -x, TWO_PI * x]).view(3, 1, kw, 1).to(dtype),
            torch.stack([y, y, TWO_PI * y]).view(3, kh, 1, 1).to(dtype))


def _tap_coordinates(kh: int, kw: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The column and row tables of :func:`_tap_grids` in ``like``'s dtype and device: cached for
    plain tensors; built afresh inside torch.compile and for tensor subclasses (a fake tensor must
    neither be cached nor meet a cached real one)."""
    if torch.compiler.is_compiling() or type(like) not in (torch.Tensor, torch.nn.Parameter) \
            or like.device.type == "meta":
        return _coordinate_tables(kh, kw, like.dtype, like.device)
    return _tap_grids(kh, kw, like.dtype, like.device)


def moments_pay(params: tuple[torch.Tensor, ...]) -> bool:
    """Whether the five tensors ``params`` are built through :class:`_GaborKernel2dMoments`: eagerly
    on CPU, in float32 or float64, with a gradient to build and none of the transforms that need the
    plain Function (see the comment above it). Reads no values: the range of gamma and sigma is
    checked inside the Function, which falls back to the plain backward outside it."""
    if not (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
        return False
    return params[0].numel() > 0 and not forward_ad_active() and _cpu_kernels.eager_cpu(*params)


def _read_stored(logs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, lambd, gamma)`` ``(3, ...)`` from the layer's stored ``(log_sigma,
    log_lambd_excess, log_gamma)`` ``(3, ...)``, as ``gaborlayer._storage`` reads them (``exp`` of the
    clamp, lambd above its floor), and the derivative of each value by its stored number (0 at and
    beyond the clamp's bounds, as hardtanh's backward). Differentiable."""
    exps = _bounded_exp(logs)
    floors = logs.new_tensor([0.0, LAMBD_FLOOR, 0.0]).view(3, *(1,) * (logs.dim() - 1))
    return exps + floors, torch.ops.aten.hardtanh_backward(exps, logs, -LOG_LIMIT, LOG_LIMIT)


class _MomentBody(torch.autograd.Function):
    """The 2-D bank with the moment backward (see above): ``(theta, sigma, lambd, gamma, psi)``, each
    of one shape ``S``, and ``kh, kw`` -> bank ``(*S, kh, kw)``. With ``stored=True`` the second to
    fourth inputs are a layer's stored ``(log_sigma, log_lambd_excess, log_gamma)``, read as the layer
    reads them (:func:`_read_stored`) inside the forward, and the backward returns their gradients:
    the layer's bank is then one Function call, with no autograd node per parameter transform.

    Eager only, called where :func:`moments_pay`. The forward is one compiled call
    (``_cpu_kernels.bank2d``), which also checks gamma and sigma against the moment ranges; inside
    them the Function keeps ``S (N, kh, kw)`` for the moment backward, outside them nothing beyond the
    parameters, and the backward is :func:`gabor_kernel2d_backward` (in torch operations, on the
    values :func:`_read_stored` reads: the same to a rounding). With ``create_graph=True`` the
    backward is that differentiable function on the saved inputs, so double backward is the plain
    one's. A forward with ``ctx`` (saving S, an intermediate, directly):
    the ``setup_context`` form would have to return S as a second, non-differentiable output, and
    that costs about 60 us more per forward and backward (a 5-input Function, 1 thread); this
    Function never runs under torch.compile or functorch, which need that form."""

    @staticmethod
    def forward(ctx, theta, sigma, lambd, gamma, psi, kh: int, kw: int, stored: bool = False):
        bank, sine, ctx.moments = _cpu_kernels.bank2d((theta, sigma, lambd, gamma, psi), kh, kw, stored=stored,
                                                      sine=True, ranges=MOMENT_SIGMA_RANGE + MOMENT_GAMMA_RANGE)
        ctx.save_for_backward(theta, sigma, lambd, gamma, psi, bank, sine if ctx.moments else None)
        ctx.size, ctx.stored = (kh, kw), stored
        return bank

    @staticmethod
    def backward(ctx, grad):
        *inputs, bank, sine = ctx.saved_tensors
        if ctx.moments and not torch.is_grad_enabled():  # the compiled kernel reads the stored parameters itself
            grads = _cpu_kernels.moment_gradients2d(grad, inputs, bank, sine, ctx.stored).unbind()
        else:  # outside the moment ranges, or create_graph (then differentiable: from the inputs)
            size = ctx.size
            params = [t.reshape(-1) for t in inputs]
            if ctx.stored:
                params[1:4], chain = _read_stored(torch.stack(params[1:4]))
            grads = list(gabor_kernel2d_backward(grad.reshape(-1, *size), params, size, (True,) * 5))
            if ctx.stored:
                grads[1:4] = chain * torch.stack(grads[1:4])
            grads = [g.view(inputs[0].shape) for g in grads]
        return (*(g if wanted else None for g, wanted in zip(grads, ctx.needs_input_grad)), None, None, None)


# Named GaborKernel2d (its graph node is GaborKernel2dBackward, as the plain path's): to a reader of
# the autograd graph it is the same Function; grad_fn._forward_cls tells the two apart.
_GaborKernel2dMoments = type("GaborKernel2d", (_MomentBody,), {
    "__module__": __name__, "__qualname__": "_GaborKernel2dMoments", "__doc__": _MomentBody.__doc__})


# -- forward mode, outside torch.compile --------------------------------------------------------
# Dynamo refuses to trace a torch.autograd.Function that defines ``jvp`` ("Unsupported custom jvp",
# torch 2.13), so a jvp on the Functions the package calls would break torch.compile(fullgraph=True)
# of every layer. Those Functions therefore have no jvp; eagerly, their ``apply`` runs a subclass
# that adds it (with ``ctx.save_for_forward``) and is otherwise the same Function: same forward,
# backward, vmap rule and name (its graph node is still ``GaborKernel2dBackward``). Dynamo traces
# ``Function.apply`` calls itself (forward and backward of the Function it names), never the
# ``apply`` override, and the override checks ``torch.compiler.is_compiling()`` as well.
_FUNCTION_APPLY = torch.autograd.Function.apply.__func__


class _ForwardModeInEager:
    """Mixin for the Functions below: ``apply`` runs ``cls._forward_mode`` (made by
    :func:`_with_forward_mode`) outside torch.compile and ``torch.fx`` tracing (whose proxies
    ``save_for_forward`` refuses)."""

    @classmethod
    def apply(cls, *args, **kwargs):
        if torch.compiler.is_compiling() or fx_tracing():
            return _FUNCTION_APPLY(cls, *args, **kwargs)
        return cls._forward_mode.apply(*args, **kwargs)


def _with_forward_mode(function, jvp, saved_for_forward):
    """Attach to ``function`` the subclass its ``apply`` runs eagerly: ``function`` plus the
    ``jvp`` staticmethod, with ``ctx.save_for_forward(*saved_for_forward(inputs, output))`` after
    ``function``'s own ``setup_context``; ``jvp`` reads those from ``ctx.saved_tensors``."""

    def setup_context(ctx, inputs, output):
        function.setup_context(ctx, inputs, output)
        ctx.save_for_forward(*saved_for_forward(inputs, output))

    function._forward_mode = type(function.__name__, (function,), {
        "__module__": function.__module__,
        "__qualname__": f"{function.__qualname__}._forward_mode",
        "__doc__": f"{function.__name__} with forward-mode AD (``jvp``), run by its ``apply`` outside torch.compile.",
        "setup_context": staticmethod(setup_context),
        "jvp": staticmethod(jvp),
        "apply": classmethod(_FUNCTION_APPLY),
    })
    return function


class QuadratureMagnitude(_ForwardModeInEager, torch.autograd.Function):
    """``sqrt(even^2 + odd^2)`` of ``pairs``, whose dimension ``axis`` (of size 2) holds each
    response's even and odd parts; the result drops that dimension. The gradient is
    ``(even, odd) / magnitude``, and 0 where the magnitude is 0 (the minimum of a norm: 0 is its
    subgradient there); ``torch.hypot``'s own backward divides by the magnitude and gives NaN at a
    zero response. Forward by ``hypot``, so tiny responses do not underflow; backward in
    differentiable ops, so double backward works.

    It takes the pairs in one tensor (the convolution's output, unflattened) rather than the two
    halves as separate views: the backward then writes the convolution's gradient in one pass,
    where two sliced views would each scatter into a zero-filled copy of the whole output."""

    generate_vmap_rule = True

    @staticmethod
    def forward(pairs, axis: int):
        return torch.hypot(pairs.select(axis, 0), pairs.select(axis, 1))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)
        ctx.axis = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        pairs, magnitude = ctx.saved_tensors
        magnitude, grad = magnitude.unsqueeze(ctx.axis), grad.unsqueeze(ctx.axis)
        if torch.is_grad_enabled():
            # create_graph=True: masks, so that the backward's own derivative is 0 (not NaN) at a
            # zero response too.
            nonzero = magnitude > 0
            return torch.where(nonzero, grad / torch.where(nonzero, magnitude, 1.0), 0.0) * pairs, None
        # The same values without boolean masks, which cost ~25 elementwise products each on a
        # CPU: |even|, |odd| <= magnitude, so the ratios are in [-1, 1], and 0/0 = NaN only at a
        # zero response, where the gradient is 0.
        return grad * torch.nan_to_num(pairs / magnitude, nan=0.0), None


def _quadrature_magnitude_jvp(ctx, tangent, _axis_tangent):
    """``d|z| = (even d_even + odd d_odd) / |z|``, and 0 where ``|z| = 0`` (as in backward)."""
    pairs, magnitude = ctx.saved_tensors
    if tangent is None:
        return torch.zeros_like(magnitude)
    magnitude = magnitude.unsqueeze(ctx.axis)
    if torch.is_grad_enabled():  # differentiable again (reverse over forward): masks, as in backward
        nonzero = magnitude > 0
        ratio = torch.where(nonzero, pairs / torch.where(nonzero, magnitude, 1.0), 0.0)
    else:
        ratio = torch.nan_to_num(pairs / magnitude, nan=0.0)
    return (ratio * tangent).sum(ctx.axis)


_with_forward_mode(QuadratureMagnitude, _quadrature_magnitude_jvp, lambda inputs, output: (inputs[0], output))


def _terms1d(sigma, lambd, psi, k):
    """``a = x/sigma``, the envelope and the phase, each ``(N, k)``."""
    x = sampling_grid1d(k, sigma.dtype, sigma.device)
    sigma, lambd, psi = (p[:, None] for p in (sigma, lambd, reduced_phase_offset(psi)))
    a = x / sigma
    envelope = torch.exp(-0.5 * (a * a))
    phase = TWO_PI * (x / lambd) + psi
    return x, a, envelope, phase


def gabor_kernel1d_forward(params, size):
    """Bank ``(N, k)`` from ``params = (sigma, lambd, psi)``, each ``(N,)``."""
    *_, envelope, phase = _terms1d(*params, *size)
    return envelope * torch.cos(phase)


def gabor_kernel1d_backward(grad, params, size, needs_input_grad):
    """The three parameter gradients ``(N,)`` (``None`` where not needed) from ``grad`` ``(N, k)``."""
    sigma, lambd, psi = params
    need = needs_input_grad
    x, a, envelope, phase = _terms1d(sigma, lambd, psi, *size)
    a = torch.nan_to_num(a, posinf=0.0, neginf=0.0)  # as in 2-D: products start from the envelope
    grad_env = grad * envelope
    g_cos = grad_env * torch.cos(phase)
    g_sin = grad_env * torch.sin(phase)
    d_sigma = d_lambd = d_psi = None
    if need[0]:
        # dK/dsigma = K a^2 / sigma
        d_sigma = ((g_cos * a) * a).sum(-1) / sigma
    if need[1]:
        # dK/dlambd = E sin(phase) * 2 pi x / lambd^2
        d_lambd = (g_sin * x).sum(-1) * (TWO_PI / (lambd * lambd))
    if need[2]:
        # dK/dpsi = -E sin(phase)
        d_psi = -g_sin.sum(-1)
    return d_sigma, d_lambd, d_psi


def gabor_kernel1d_jvp(params, tangents, size):
    """The bank's tangent ``(N, k)`` from tangents ``(N,)`` or ``None`` of ``(sigma, lambd, psi)``
    (as :func:`gabor_kernel2d_jvp`)."""
    sigma, lambd, psi = params
    t_sigma, t_lambd, t_psi = (None if t is None else t[:, None] for t in tangents)
    x, a, envelope, phase = _terms1d(sigma, lambd, psi, *size)
    a = torch.nan_to_num(a, posinf=0.0, neginf=0.0)
    e_cos = envelope * torch.cos(phase)
    e_sin = envelope * torch.sin(phase)
    terms = []
    if t_sigma is not None:
        # dK/dsigma = K a^2 / sigma
        terms.append((((e_cos * a) * a) / sigma[:, None], t_sigma))
    if t_lambd is not None:
        # dK/dlambd = E sin(phase) x 2 pi / lambd^2
        terms.append(((e_sin * x) * (TWO_PI / (lambd * lambd))[:, None], t_lambd))
    if t_psi is not None:
        # dK/dpsi = -E sin(phase)
        terms.append((e_sin, -t_psi))
    return _tangent_sum(terms, e_cos)


def _terms3d(theta, phi, sigma, lambd, gamma, psi, kd, kh, kw):
    """Shared intermediates of the 3-D bank, each broadcast to ``(N, kd, kh, kw)``.

    ``x_par = u . r`` is the coordinate along the wave direction
    ``u = (cos phi cos theta, cos phi sin theta, sin phi)``; ``y_1 = v_1 . r`` and
    ``y_2 = v_2 . r`` are the coordinates along two unit vectors completing an orthonormal
    basis, ``v_1 = (-sin theta, cos theta, 0)`` (the 2-D ``y'``) and
    ``v_2 = (-sin phi cos theta, -sin phi sin theta, cos phi)``, so that
    ``|r_perp|^2 = y_1^2 + y_2^2`` is a sum of squares (``|r|^2 - x_par^2`` can round below 0).
    ``y_1`` and ``y_2`` are also ``d x_par / d theta / cos phi`` and ``d x_par / d phi``.
    """
    z, y, x = sampling_grid3d(kd, kh, kw, theta.dtype, theta.device)
    psi = reduced_phase_offset(psi)
    theta, phi, sigma, lambd, gamma, psi = (p[:, None, None, None] for p in (theta, phi, sigma, lambd, gamma, psi))
    cos_t, sin_t = torch.cos(theta), torch.sin(theta)
    cos_p, sin_p = torch.cos(phi), torch.sin(phi)
    in_plane = x * cos_t + y * sin_t  # the 2-D x'
    x_par = in_plane * cos_p + z * sin_p
    y_1 = y * cos_t - x * sin_t  # the 2-D y'
    y_2 = z * cos_p - in_plane * sin_p
    a = x_par / sigma
    b_1 = gamma * y_1 / sigma
    b_2 = gamma * y_2 / sigma
    envelope = torch.exp(-0.5 * (a * a + b_1 * b_1 + b_2 * b_2))
    phase = TWO_PI * (x_par / lambd) + psi
    return x_par, y_1, y_2, a, b_1, b_2, envelope, phase


def gabor_kernel3d_forward(params, size):
    """Bank ``(N, kd, kh, kw)`` from ``params = (theta, phi, sigma, lambd, gamma, psi)``, each ``(N,)``."""
    *_, envelope, phase = _terms3d(*params, *size)
    return envelope * torch.cos(phase)


def gabor_kernel3d_backward(grad, params, size, needs_input_grad):
    """The six parameter gradients ``(N,)`` (``None`` where not needed) from ``grad`` ``(N, kd, kh, kw)``."""
    theta, phi, sigma, lambd, gamma, psi = params
    need = needs_input_grad
    x_par, y_1, y_2, a, b_1, b_2, envelope, phase = _terms3d(theta, phi, sigma, lambd, gamma, psi, *size)
    # As in 2-D: every product starts from the factor that holds the envelope, and infinities
    # (only where the envelope is 0) become 0.
    a, b_1, b_2 = (torch.nan_to_num(t, posinf=0.0, neginf=0.0) for t in (a, b_1, b_2))
    grad_env = grad * envelope
    g_cos = grad_env * torch.cos(phase)  # grad * kernel
    g_sin = grad_env * torch.sin(phase)
    sigma_ = sigma[:, None, None, None]

    def total(t):
        return t.sum(dim=(-3, -2, -1))

    if need[0] or need[1] or need[2]:
        g_cos_a = g_cos * a  # shared by both angles and sigma
    if need[2] or need[4]:
        g_cos_bb = total((g_cos * b_1) * b_1) + total((g_cos * b_2) * b_2)

    def d_angle(y_k, b_k):
        # dK/dangle for d x_par/d angle = y_k: K a (gamma b_k - y_k/sigma) - E sin(phase) 2 pi y_k/lambd
        # (the 2-D theta term, with y_k/sigma kept finite as a and b are, and no 1/gamma; see docs/nd.md)
        c_k = torch.nan_to_num(y_k / sigma_, posinf=0.0, neginf=0.0)
        return total(g_cos_a * b_k) * gamma - total(g_cos_a * c_k) - total(g_sin * y_k) * (TWO_PI / lambd)

    d_theta = d_phi = d_sigma = d_lambd = d_gamma = d_psi = None
    if need[0]:
        # d x_par/d theta = cos(phi) y_1
        d_theta = torch.cos(phi) * d_angle(y_1, b_1)
    if need[1]:
        # d x_par/d phi = y_2
        d_phi = d_angle(y_2, b_2)
    if need[2]:
        # dK/dsigma = K (a^2 + b_1^2 + b_2^2) / sigma
        d_sigma = (total(g_cos_a * a) + g_cos_bb) / sigma
    if need[3]:
        # dK/dlambd = E sin(phase) * 2 pi x_par / lambd^2
        d_lambd = total(g_sin * x_par) * (TWO_PI / (lambd * lambd))
    if need[4]:
        # dK/dgamma = -K (b_1^2 + b_2^2) / gamma
        d_gamma = -g_cos_bb / gamma
    if need[5]:
        # dK/dpsi = -E sin(phase)
        d_psi = -total(g_sin)
    return d_theta, d_phi, d_sigma, d_lambd, d_gamma, d_psi


def gabor_kernel3d_jvp(params, tangents, size):
    """The bank's tangent ``(N, kd, kh, kw)`` from tangents ``(N,)`` or ``None`` of
    ``(theta, phi, sigma, lambd, gamma, psi)`` (as :func:`gabor_kernel2d_jvp`)."""
    theta, phi, sigma, lambd, gamma, psi = params
    x_par, y_1, y_2, a, b_1, b_2, envelope, phase = _terms3d(theta, phi, sigma, lambd, gamma, psi, *size)
    a, b_1, b_2 = (torch.nan_to_num(t, posinf=0.0, neginf=0.0) for t in (a, b_1, b_2))
    t_theta, t_phi, t_sigma, t_lambd, t_gamma, t_psi = (None if t is None else t[:, None, None, None]
                                                        for t in tangents)
    sigma_, lambd_, gamma_ = (p[:, None, None, None] for p in (sigma, lambd, gamma))
    e_cos = envelope * torch.cos(phase)  # the kernel
    e_sin = envelope * torch.sin(phase)
    if t_theta is not None or t_phi is not None or t_sigma is not None:
        e_cos_a = e_cos * a
    if t_sigma is not None or t_gamma is not None:
        e_cos_bb = torch.addcmul((e_cos * b_1) * b_1, e_cos * b_2, b_2)

    def d_angle(y_k, b_k):
        # dK/dangle for d x_par/d angle = y_k, as in the backward
        c_k = torch.nan_to_num(y_k / sigma_, posinf=0.0, neginf=0.0)
        return (e_cos_a * b_k) * gamma_ - e_cos_a * c_k - (e_sin * y_k) * (TWO_PI / lambd_)

    terms = []
    if t_theta is not None:
        # d x_par/d theta = cos(phi) y_1
        terms.append((d_angle(y_1, b_1) * torch.cos(phi)[:, None, None, None], t_theta))
    if t_phi is not None:
        # d x_par/d phi = y_2
        terms.append((d_angle(y_2, b_2), t_phi))
    if t_sigma is not None:
        # dK/dsigma = K (a^2 + b_1^2 + b_2^2) / sigma
        terms.append((torch.addcmul(e_cos_bb, e_cos_a, a) / sigma_, t_sigma))
    if t_lambd is not None:
        # dK/dlambd = E sin(phase) x_par 2 pi / lambd^2
        terms.append(((e_sin * x_par) * (TWO_PI / (lambd_ * lambd_)), t_lambd))
    if t_gamma is not None:
        # dK/dgamma = -K (b_1^2 + b_2^2) / gamma
        terms.append((e_cos_bb / gamma_, -t_gamma))
    if t_psi is not None:
        # dK/dpsi = -E sin(phase)
        terms.append((e_sin, -t_psi))
    return _tangent_sum(terms, e_cos)


# The three Functions save only the parameter vectors (for backward, and for jvp, forward mode) and
# recompute the rest there. Their forwards spell out the arguments: torch.compile tells a forward
# without ctx (setup_context style) by its signature, which *args would hide. Forward mode is
# attached by _with_forward_mode (see there for why not as a jvp staticmethod); the size arguments
# are ints, and their tangents (None) are dropped before the jvp functions.
class GaborKernel1d(_ForwardModeInEager, torch.autograd.Function):
    """``(sigma, lambd, psi)`` of shape ``(N,)`` and ``k`` -> bank ``(N, k)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(sigma, lambd, psi, k: int):
        return gabor_kernel1d_forward((sigma, lambd, psi), (k,))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:3])
        ctx.size = inputs[3:]

    @staticmethod
    def backward(ctx, grad):
        return (*gabor_kernel1d_backward(grad, ctx.saved_tensors, ctx.size, ctx.needs_input_grad), None)


_with_forward_mode(GaborKernel1d, lambda ctx, *tangents: gabor_kernel1d_jvp(ctx.saved_tensors, tangents[:3], ctx.size),
                   lambda inputs, output: inputs[:3])


class GaborKernel2d(_ForwardModeInEager, torch.autograd.Function):
    """``(theta, sigma, lambd, gamma, psi)`` of shape ``(N,)`` and ``kh, kw`` -> bank ``(N, kh, kw)``.

    Eagerly on CPU, with a gradient to build, ``apply`` runs :class:`_GaborKernel2dMoments` (the
    backward from six moments per filter) where :func:`moments_pay`; everywhere else this Function.
    """

    generate_vmap_rule = True

    @classmethod
    def apply(cls, theta, sigma, lambd, gamma, psi, kh, kw):
        if moments_pay((theta, sigma, lambd, gamma, psi)):
            return _GaborKernel2dMoments.apply(theta, sigma, lambd, gamma, psi, kh, kw)
        return super().apply(theta, sigma, lambd, gamma, psi, kh, kw)

    @staticmethod
    def forward(theta, sigma, lambd, gamma, psi, kh: int, kw: int):
        return gabor_kernel2d_forward((theta, sigma, lambd, gamma, psi), (kh, kw))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:5])
        ctx.size = inputs[5:]

    @staticmethod
    def backward(ctx, grad):
        return (*gabor_kernel2d_backward(grad, ctx.saved_tensors, ctx.size, ctx.needs_input_grad), None, None)


_with_forward_mode(GaborKernel2d, lambda ctx, *tangents: gabor_kernel2d_jvp(ctx.saved_tensors, tangents[:5], ctx.size),
                   lambda inputs, output: inputs[:5])


class GaborKernel3d(_ForwardModeInEager, torch.autograd.Function):
    """``(theta, phi, sigma, lambd, gamma, psi)`` of shape ``(N,)`` and ``kd, kh, kw`` -> bank
    ``(N, kd, kh, kw)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(theta, phi, sigma, lambd, gamma, psi, kd: int, kh: int, kw: int):
        return gabor_kernel3d_forward((theta, phi, sigma, lambd, gamma, psi), (kd, kh, kw))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:6])
        ctx.size = inputs[6:]

    @staticmethod
    def backward(ctx, grad):
        return (*gabor_kernel3d_backward(grad, ctx.saved_tensors, ctx.size, ctx.needs_input_grad), None, None, None)


_with_forward_mode(GaborKernel3d, lambda ctx, *tangents: gabor_kernel3d_jvp(ctx.saved_tensors, tangents[:6], ctx.size),
                   lambda inputs, output: inputs[:6])
