"""Linear-response blocks for mixtures of conjugate likelihoods.

A :class:`~fg_influence.graph.factors_conjugate.ConjugateLikelihoodFactor`
with an assignment sends component k of each of its parameter variables the
message sum_i r_ik T(x_i), with T(x_i) the site's natural-parameter
statistics. Its E-step logit of component k is <T(x_i), E_q[S(theta_k)]> +
ln h(x_i), and E_q[S] is the gradient of the log-partition A of q. So every
such factor has the structure the linear-response correction needs
(``J = V H``, see :mod:`fg_influence.influence.linear_response`) with

* coordinates g = scale * eta + offset, a fixed affine map of the natural
  parameters eta chosen per family so that every constraint of the family
  that is linear in g becomes a lower bound;
* features f_i = scale * T(x_i), the site statistics in those coordinates;
* mu = grad_g A, whose pairing with f_i is the E-step logit, and the
  Hessian H = d mu / d g, symmetric positive definite.

Coordinates of each family, per batch element (one Poisson rate, one
Bernoulli probability, one column's Dirichlet, one Normal-Gamma):

==============  ==========================================  =======================
family          coordinates                                 site statistics
==============  ==========================================  =======================
Gamma           (shape, rate)                               (x, 1)
Beta            (a, b)                                      (x, 1 - x)
Dirichlet       concentration alpha                         one-hot of x
NormalGamma     (P m, upper(P), 2 rate + m^T P m, 2 shape)  (y x, upper(x x^T), y^2, 1)
==============  ==========================================  =======================

with P the Normal-Gamma's precision of w relative to tau, parameterised by
its upper triangle (``numpy.triu_indices`` order) so that a unit step in an
off-diagonal coordinate moves P_ab and P_ba. The diagonal Gaussian factor
is the Normal-Gamma with D = 1 per column, whose design is the constant 1.
Each global variable's block holds, per component, every batch element's
coordinates in turn (element-major).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, polygamma

from ..families import Beta, Dirichlet, Gamma, NormalGamma
from ..graph.factors_conjugate import ConjugateLikelihoodFactor
from ..inference.posterior import Posterior
from .linear_response import PREDICTIVE_SHARE_TOL, ResponseBlock, register_response

#: Relative step of the central differences in :func:`numerical_hessian`.
#: After Richardson extrapolation the truncation error is of order step^4
#: and the rounding error of order eps / step, about 1e-11 relative.
NUMERICAL_HESSIAN_STEP = 1e-5


@dataclass(frozen=True)
class FamilyCoordinates:
    """The affine map g = scale * eta + offset of one exponential family, per natural parameter.

    Attributes
    ----------
    family : type
        The :class:`~fg_influence.families.ExponentialFamily` subclass.
    names : tuple of str
        Name of each natural parameter's coordinates.
    scales : tuple of float
        Nonzero scale of each natural parameter.
    offsets : callable
        ``offsets(fitted)`` returns each natural parameter's offset (a float).
    lower_bounds : tuple of float or None
        Bound that every coordinate of each natural parameter must exceed
        (for a symmetric matrix: its diagonal), or None.
    hessian : callable or None
        ``hessian(family)`` returns d mu / d g per batch element, shape
        batch + (q, q); None means :func:`numerical_hessian`.
    proper : callable or None
        ``proper(coordinate_map, elements)`` returns, shape
        ``elements.shape[:-1]``, whether element coordinates are inside the
        family beyond the lower bounds; None means the bounds suffice.
    """

    family: type
    names: tuple[str, ...]
    scales: tuple[float, ...]
    offsets: Callable
    lower_bounds: tuple[float | None, ...]
    hessian: Callable | None = None
    proper: Callable | None = None


class CoordinateMap:
    """Coordinates of a batch of one family with batch shape (K,) + rest, per component.

    Each component's block flattens the E = prod(rest) batch elements, each
    with q coordinates, into Q = E q coordinates (element-major).
    ``elements`` arrays have shape (..., K, E, q).
    """

    def __init__(self, spec: FamilyCoordinates, fitted):
        self.spec = spec
        self.fitted = fitted
        natural = fitted.natural_params()
        self.event_ndims = tuple(type(fitted).event_ndims)
        self.event_shapes = tuple(p.shape[p.ndim - nd:] for p, nd in zip(natural, self.event_ndims))
        self.batch_shape = fitted.batch_shape
        self.rest_shape = self.batch_shape[1:]
        self.n_elements = int(np.prod(self.rest_shape, dtype=int))
        self.part_sizes = tuple(_event_size(shape, nd) for shape, nd in zip(self.event_shapes, self.event_ndims))
        self.q = sum(self.part_sizes)
        self.offsets = tuple(float(o) for o in spec.offsets(fitted))

    @property
    def size(self) -> int:
        """Coordinates Q per component."""
        return self.n_elements * self.q

    def names(self, variable: str) -> tuple[str, ...]:
        """Name of each of the Q coordinates of a component's block."""
        out = []
        for element in np.ndindex(*self.rest_shape):
            for name, shape, nd in zip(self.spec.names, self.event_shapes, self.event_ndims):
                for index in _event_indices(shape, nd):
                    label = ",".join(str(i) for i in (*element, *index))
                    out.append(f"{variable}.{name}[{label}]" if label else f"{variable}.{name}")
        return tuple(out)

    # Natural parameters <-> coordinates

    def _flatten(self, arrays, factors, offsets, double_off_diagonal=False) -> np.ndarray:
        """Stack arrays of shape lead + rest + event into lead + (E, q), scaled and shifted."""
        parts = []
        for array, nd, shape, factor, offset in zip(arrays, self.event_ndims, self.event_shapes, factors, offsets):
            array = np.asarray(array, dtype=float)
            lead = array.shape[: array.ndim - nd - len(self.rest_shape)]
            array = array.reshape(lead + (self.n_elements,) + shape)
            if nd == 0:
                part = array[..., None]
            elif nd == 1:
                part = array
            else:
                rows, cols = np.triu_indices(shape[0])
                part = array[..., rows, cols]
                if double_off_diagonal:
                    part = part * np.where(rows == cols, 1.0, 2.0)
            parts.append(factor * part + offset)
        return np.concatenate(parts, axis=-1)

    def elements(self, natural) -> np.ndarray:
        """Map natural parameters with batch shape lead + (K,) + rest to coordinates lead + (K, E, q)."""
        return self._flatten(natural, self.spec.scales, self.offsets)

    def natural(self, elements: np.ndarray) -> tuple[np.ndarray, ...]:
        """Map coordinates lead + (K, E, q) to natural parameters with batch shape lead + (K,) + rest."""
        lead = elements.shape[:-2]
        out, start = [], 0
        for size, nd, shape, scale, offset in zip(self.part_sizes, self.event_ndims, self.event_shapes,
                                                  self.spec.scales, self.offsets):
            part = (elements[..., start:start + size] - offset) / scale
            start += size
            if nd == 0:
                value = part[..., 0]
            elif nd == 1:
                value = part
            else:
                rows, cols = np.triu_indices(shape[0])
                value = np.zeros(part.shape[:-1] + shape)
                value[..., rows, cols] = part
                value[..., cols, rows] = part
            out.append(value.reshape(lead + self.rest_shape + shape))
        return tuple(out)

    def family(self, elements: np.ndarray):
        """Build the family object of coordinates lead + (K, E, q); raise ValueError if they are improper."""
        return self.spec.family.from_natural(*self.natural(elements))

    def features(self, site_statistics) -> np.ndarray:
        """Map the factor's site statistics T(x_i) to these coordinates (without offsets), shape (n, Q)."""
        flat = self._flatten(site_statistics, self.spec.scales, (0.0,) * len(self.spec.scales))
        return flat.reshape(flat.shape[0], self.size)

    def mean(self, family) -> np.ndarray:
        """Compute mu = grad_g A of a family with batch lead + (K,) + rest, shape lead + (K, E, q)."""
        factors = tuple(1.0 / s for s in self.spec.scales)
        return self._flatten(family.expected_stats(), factors, (0.0,) * len(factors), double_off_diagonal=True)

    def element_hessian(self, family) -> np.ndarray:
        """Compute d mu / d g per element of a family with batch (K,) + rest, shape (K, E, q, q)."""
        if self.spec.hessian is None:
            hessian = numerical_hessian(self, family)
        else:
            hessian = self.spec.hessian(family)
        return hessian.reshape((family.batch_shape[0], self.n_elements, self.q, self.q))

    def block_hessian(self, family) -> np.ndarray:
        """Compute d mu / d g per component, block-diagonal over the elements, shape (K, Q, Q)."""
        per_element = self.element_hessian(family)
        k_count = per_element.shape[0]
        out = np.zeros((k_count, self.n_elements, self.q, self.n_elements, self.q))
        for element in range(self.n_elements):
            out[:, element, :, element, :] = per_element[:, element]
        return out.reshape(k_count, self.size, self.size)

    # Constraints

    def element_bounds(self) -> dict[int, float]:
        """Map each bounded position within an element's q coordinates to its lower bound."""
        bounds, start = {}, 0
        for size, nd, shape, bound in zip(self.part_sizes, self.event_ndims, self.event_shapes,
                                          self.spec.lower_bounds):
            if bound is not None:
                if nd == 2:
                    rows, cols = np.triu_indices(shape[0])
                    positions = np.flatnonzero(rows == cols)
                else:
                    positions = np.arange(size)
                for position in positions:
                    bounds[start + int(position)] = float(bound)
            start += size
        return bounds

    def bound_positions(self) -> dict[int, float]:
        """Map each bounded position within a component's block of Q coordinates to its lower bound."""
        within = self.element_bounds()
        return {element * self.q + position: bound
                for element in range(self.n_elements) for position, bound in within.items()}

    def is_proper(self, elements: np.ndarray) -> np.ndarray:
        """Check whether each element's coordinates lie inside the family, shape ``elements.shape[:-1]``."""
        ok = np.all(np.isfinite(elements), axis=-1)
        for position, bound in self.element_bounds().items():
            ok &= elements[..., position] > bound
        if self.spec.proper is not None:
            # Elements already out of bounds get a proper stand-in, so the
            # family's own check gets only valid input.
            stand_in = self.elements(self.fitted.natural_params())[0, 0]
            ok &= self.spec.proper(self, np.where(ok[..., None], elements, stand_in))
        return ok


def _event_size(shape, ndim) -> int:
    if ndim == 2:
        return shape[0] * (shape[0] + 1) // 2
    return int(np.prod(shape, dtype=int))


def _event_indices(shape, ndim):
    if ndim == 0:
        return [()]
    if ndim == 1:
        return [(i,) for i in range(shape[0])]
    rows, cols = np.triu_indices(shape[0])
    return list(zip(rows.tolist(), cols.tolist()))
# Hessians d mu / d g per batch element, in the coordinates of the table above.


def _gamma_hessian(family: Gamma) -> np.ndarray:
    # mu = (psi(a) - ln b, -a / b) in (shape a, rate b).
    a, b = family.shape, family.rate
    out = np.empty(a.shape + (2, 2))
    out[..., 0, 0] = polygamma(1, a)
    out[..., 0, 1] = out[..., 1, 0] = -1.0 / b
    out[..., 1, 1] = a / b**2
    return out


def _beta_hessian(family: Beta) -> np.ndarray:
    # mu = (psi(a) - psi(a + b), psi(b) - psi(a + b)).
    a, b = family.a, family.b
    total = polygamma(1, a + b)
    out = np.empty(a.shape + (2, 2))
    out[..., 0, 0] = polygamma(1, a) - total
    out[..., 0, 1] = out[..., 1, 0] = -total
    out[..., 1, 1] = polygamma(1, b) - total
    return out


def _dirichlet_hessian(family: Dirichlet) -> np.ndarray:
    # mu = psi(alpha) - psi(sum alpha), so H = diag(psi'(alpha)) - psi'(sum alpha) 1 1^T.
    alpha = family.concentration
    n_categories = alpha.shape[-1]
    out = -polygamma(1, alpha.sum(axis=-1))[..., None, None] * np.ones((n_categories, n_categories))
    out += polygamma(1, alpha)[..., None] * np.eye(n_categories)
    return out


def _normal_gamma_hessian(family: NormalGamma) -> np.ndarray:
    """d mu / d g for Normal-Gamma coordinates (t, upper(P), psi, nu), shape batch + (q, q).

    With t = P m, psi = 2 rate + m^T P m, nu = 2 shape, Sigma = P^-1 and
    tau = shape / rate = E[tau], the log-partition is A = -ln|P| / 2 +
    ln Gamma(shape) - shape ln(rate) + const, with rate = (psi - t^T Sigma t) / 2,
    and its gradient is mu = (tau m, upper part of -(Sigma + tau m m^T) / 2
    with off-diagonal entries doubled, -tau / 2, E[ln tau] / 2). The
    differentials along a direction (dt, dP, dpsi, dnu) are

        dm    = Sigma (dt - dP m)
        drate = (dpsi - 2 m^T dt + m^T dP m) / 2
        dtau  = dnu / (2 rate) - shape drate / rate^2
        d mu_t   = dtau m + tau dm
        d mu_P   = Sigma dP Sigma / 2 - (dtau m m^T + tau (dm m^T + m dm^T)) / 2
        d mu_psi = -dtau / 2
        d mu_nu  = (psi'(shape) dnu / 2 - drate / rate) / 2

    evaluated along each coordinate direction.
    """
    d = family.dim
    batch = family.batch_shape
    m = family.mean.reshape(-1, d)
    precision = family.precision.reshape(-1, d, d)
    shape, rate = family.shape.reshape(-1), family.rate.reshape(-1)
    rows, cols = np.triu_indices(d)
    n_upper = rows.size
    q = d + n_upper + 2

    # Coordinate directions (the identity), split into the parts of each coordinate.
    directions = np.eye(q)
    dt = directions[:, :d]
    dp = np.zeros((q, d, d))
    dp[:, rows, cols] = directions[:, d:d + n_upper]
    dp[:, cols, rows] = directions[:, d:d + n_upper]
    dpsi = directions[:, d + n_upper]
    dnu = directions[:, -1]

    sigma = np.linalg.inv(precision)
    tau = shape / rate
    dm = np.einsum("bij,bpj->bpi", sigma, dt[None] - np.einsum("pij,bj->bpi", dp, m))
    drate = 0.5 * (dpsi[None] - 2.0 * m @ dt.T + np.einsum("bi,pij,bj->bp", m, dp, m))
    dtau = 0.5 * dnu[None] / rate[:, None] - shape[:, None] * drate / rate[:, None] ** 2

    d_t = dtau[..., None] * m[:, None, :] + tau[:, None, None] * dm
    outer = m[:, :, None] * m[:, None, :]
    dm_outer = dm[..., :, None] * m[:, None, None, :]
    d_gradient_p = (0.5 * np.einsum("bij,pjk,bkl->bpil", sigma, dp, sigma)
                    - 0.5 * (dtau[..., None, None] * outer[:, None]
                             + tau[:, None, None, None] * (dm_outer + np.swapaxes(dm_outer, -1, -2))))
    d_p = d_gradient_p[..., rows, cols] * np.where(rows == cols, 1.0, 2.0)
    d_psi = -0.5 * dtau
    d_nu = 0.5 * (0.5 * polygamma(1, shape)[:, None] * dnu[None] - drate / rate[:, None])

    # Row p of each stack is the derivative along direction p; transpose to d mu / d g.
    stacked = np.concatenate([d_t, d_p, d_psi[..., None], d_nu[..., None]], axis=2)
    return np.swapaxes(stacked, 1, 2).reshape(batch + (q, q))


def _normal_gamma_proper(coordinate_map: CoordinateMap, elements: np.ndarray) -> np.ndarray:
    """Check that P is positive definite and rate = (psi - t^T P^-1 t) / 2 is positive."""
    d = coordinate_map.event_shapes[0][0]
    rows, cols = np.triu_indices(d)
    upper = elements[..., d:d + rows.size]
    precision = np.zeros(elements.shape[:-1] + (d, d))
    precision[..., rows, cols] = upper
    precision[..., cols, rows] = upper
    positive = np.linalg.eigvalsh(precision)[..., 0] > 0.0
    safe = np.where(positive[..., None, None], precision, np.eye(d))
    t = elements[..., :d]
    quadratic = np.einsum("...i,...i->...", t, np.linalg.solve(safe, t[..., None])[..., 0])
    return positive & (elements[..., d + rows.size] - quadratic > 0.0)


#: Coordinates of each family a conjugate likelihood may use, keyed by family class.
FAMILY_COORDINATES: dict[type, FamilyCoordinates] = {
    Gamma: FamilyCoordinates(Gamma, ("shape", "rate"), (1.0, -1.0), lambda fitted: (1.0, 0.0),
                             (0.0, 0.0), _gamma_hessian),
    Beta: FamilyCoordinates(Beta, ("a", "b"), (1.0, 1.0), lambda fitted: (1.0, 1.0), (0.0, 0.0), _beta_hessian),
    Dirichlet: FamilyCoordinates(Dirichlet, ("concentration",), (1.0,), lambda fitted: (1.0,), (0.0,),
                                 _dirichlet_hessian),
    # nu = 2 eta4 + 2 - D = 2 shape, because eta4 = shape - 1 + D / 2.
    # NOTE: the all-site pass flags improper sites by the lower bounds only.
    # A corrected Normal-Gamma with positive psi and diag(P) but rate <= 0 or
    # an indefinite P is not flagged there, and its shifts are reported as 0.
    NormalGamma: FamilyCoordinates(NormalGamma, ("t", "precision", "psi", "nu"), (1.0, -2.0, -2.0, 2.0),
                                   lambda fitted: (0.0, 0.0, 0.0, 2.0 - fitted.dim), (None, 0.0, 0.0, 0.0),
                                   _normal_gamma_hessian, _normal_gamma_proper),
}


def numerical_hessian(coordinate_map: CoordinateMap, family) -> np.ndarray:
    """d mu / d g per element from central differences of the expected statistics, shape (K, E, q, q).

    Coordinate j of every element steps by h = NUMERICAL_HESSIAN_STEP
    (|g_j| + 1) at once (elements are independent), and Richardson
    extrapolation (4 D(h / 2) - D(h)) / 3 of the central differences D
    cancels their h^2 error. On 75 random small mixtures the result agreed
    with the analytic Hessians of this module to 6e-9 relative to
    sqrt(H_ii H_jj). It is symmetrised.

    NOTE: a coordinate within one step of its bound leaves the family, and
    the family's ValueError is raised.
    """
    elements = coordinate_map.elements(family.natural_params())
    q = coordinate_map.q

    def central_differences(steps):
        out = np.empty(elements.shape + (q,))
        for j in range(q):
            step = np.zeros_like(elements)
            step[..., j] = steps[..., j]
            plus = coordinate_map.mean(coordinate_map.family(elements + step))
            minus = coordinate_map.mean(coordinate_map.family(elements - step))
            out[..., j] = (plus - minus) / (2.0 * steps[..., j, None])
        return out

    steps = NUMERICAL_HESSIAN_STEP * (np.abs(elements) + 1.0)
    out = (4.0 * central_differences(0.5 * steps) - central_differences(steps)) / 3.0
    return 0.5 * (out + np.swapaxes(out, -1, -2))


# The provider.


def _unsupported(factor, message: str) -> NotImplementedError:
    return NotImplementedError(
        f"the linear-response correction is not available for factor {factor.name!r} of type "
        f"{type(factor).__name__}: {message}. Use method='division'"
    )


@register_response(ConjugateLikelihoodFactor)
def _conjugate_block(factor: ConjugateLikelihoodFactor, posterior: Posterior, variable: str) -> ResponseBlock:
    """Build the ResponseBlock of parameter variable ``variable`` of a conjugate likelihood with an assignment."""
    if factor.assignment is None:
        raise _unsupported(factor, "it has no assignment, so nothing responds and division is exact")
    if variable not in factor.params:
        raise ValueError(f"variable must be one of the parameters {factor.params} of factor {factor.name!r}, "
                         f"got {variable!r}")

    fitted = posterior.globals[variable]
    spec = FAMILY_COORDINATES.get(type(fitted))
    if spec is None:
        supported = sorted(c.__name__ for c in FAMILY_COORDINATES)
        raise _unsupported(
            factor, f"its parameter {variable!r} has family {type(fitted).__name__}, which has no "
            f"coordinates registered in fg_influence.influence.linear_response_conjugate."
            f"FAMILY_COORDINATES (supported: {supported})")

    builder = _ConjugateBlockBuilder(factor, posterior, variable, spec)
    hessian = builder.map.block_hessian(builder.fitted)
    if not _positive_definite(hessian):
        raise _unsupported(
            factor, f"the Hessian of the log-partition of {variable!r} is not positive definite, so "
            f"some of its coordinates do not move its expected statistics. Two causes are usual: a "
            f"column far from the origin compared with its spread (such as a year near 2008 with a "
            f"standard deviation below 1), whose curvature is lost to rounding, so centre and scale "
            f"it; or a Dirichlet over a single category, which is a point mass, so drop that column")
    return builder.block(hessian)


def _positive_definite(hessian: np.ndarray) -> bool:
    """Tell whether every matrix of a batch (K, Q, Q) is positive definite, judged at unit diagonal.

    Data in units of 1e4 give coordinates whose Hessian entries span many
    orders of magnitude, and unscaled eigenvalues would be lost to rounding.
    """
    diagonal = np.diagonal(hessian, axis1=1, axis2=2)
    if not np.all(diagonal > 0.0):
        return False
    scale = 1.0 / np.sqrt(diagonal)
    scaled = hessian * scale[:, :, None] * scale[:, None, :]
    return bool(np.all(np.linalg.eigvalsh(scaled)[:, 0] > 1e-12))


class _ConjugateBlockBuilder:
    """The closures of one conjugate parameter variable's ResponseBlock, sharing the fitted state."""

    def __init__(self, factor, posterior, variable, spec):
        self.factor = factor
        self.posterior = posterior
        self.variable = variable
        self.index = factor.params.index(variable)
        self.fitted = posterior.globals[variable]
        self.map = CoordinateMap(spec, self.fitted)
        self.X = posterior.data[factor.observed]
        self.resp = np.asarray(posterior.locals[factor.assignment], dtype=float)
        self.n_categories = self.resp.shape[1]
        self.fitted_elements = self.map.elements(self.fitted.natural_params())
        self.coordinates = self.fitted_elements.reshape(self.n_categories, self.map.size)
        self.fitted_shifts = factor.shift_quantities(self.fitted, self.index)

    def features(self, sites) -> np.ndarray:
        sites = np.asarray(sites, dtype=np.int64).reshape(-1)
        return self.map.features(self.factor.site_statistics(self.X[sites], self.index))

    def _elements(self, coords: np.ndarray) -> np.ndarray:
        return coords.reshape(coords.shape[:-1] + (self.map.n_elements, self.map.q))

    def families(self, coords: np.ndarray, improper: np.ndarray):
        """Build the family of coordinates (n, K, Q), flagging improper sites and giving them the fitted values."""
        elements = self._elements(coords)
        bad = ~self.map.is_proper(elements).all(axis=(1, 2))
        safe = np.where(bad[:, None, None, None], self.fitted_elements[None], elements)
        try:
            family = self.map.family(safe)
        except ValueError:
            # Rounding at the boundary of the family: find the sites one by one.
            for site in range(safe.shape[0]):
                try:
                    self.map.family(safe[site])
                except ValueError:
                    bad[site] = True
                    safe[site] = self.fitted_elements
            family = self.map.family(safe)
        improper |= bad
        return family, bad

    def shift_values(self, family, bad) -> dict[str, np.ndarray]:
        out = {}
        for quantity, value in self.factor.shift_quantities(family, self.index).items():
            shift = value - self.fitted_shifts[quantity][None]
            shift[bad] = 0.0
            out[f"{self.variable}.{quantity}"] = shift
        return out

    def summarize(self, corrected, sites, improper):
        sites = np.asarray(sites, dtype=np.int64).reshape(-1)
        family, bad = self.families(np.asarray(corrected, dtype=float), improper)
        kl = self.fitted.kl(family).reshape(sites.size, -1).sum(axis=1)
        kl[bad] = 0.0

        # log p(x_i | theta_k) = A(eta' + T(x_i)) - A(eta') + ln h(x_i); ln h counts once per factor.
        statistics = self.factor.site_statistics(self.X[sites], self.index)
        natural = family.natural_params()
        with_x = type(family).from_natural(*(p + s[:, None] for p, s in zip(natural, statistics)))
        gain = with_x.log_partition() - family.log_partition()
        log_density = gain.reshape(sites.size, self.n_categories, -1).sum(axis=2)
        if self.index == 0:
            log_density += self.factor.log_base_measure(self.X[sites])[:, None]
        return {"kl": kl, "log_density": log_density, "shifts": self.shift_values(family, bad)}

    def divided(self, sites) -> tuple[np.ndarray, np.ndarray]:
        """Compute the divided coordinates g - r_ik f_i, shape (n, K, Q), and the features f_i."""
        f = self.features(sites)
        return self.coordinates[None] - self.resp[sites][:, :, None] * f[:, None, :], f

    def shifts(self, sites, response, improper):
        divided, _ = self.divided(sites)
        family, bad = self.families(divided + response, improper)
        return self.shift_values(family, bad)

    def predictive_correction(self, sites, weights, term, response):
        # d/dg_k of ln sum_l w_l p_l(x_i | g_l) at the divided posterior is
        # w_ik (mu(g_k + f_i) - mu(g_k)), because ln p_k = A(g_k + f_i) - A(g_k) + ln h.
        divided, f = self.divided(sites)
        scratch = np.zeros(divided.shape[0], dtype=bool)
        family, bad = self.families(divided, scratch)
        with_x, bad_x = self.families(divided + f[:, None, :], scratch)
        gap = (self.map.mean(with_x) - self.map.mean(family)).reshape(divided.shape)
        change = np.einsum("nkq,nkq->nk", gap, response)
        shares = np.where(weights > PREDICTIVE_SHARE_TOL, weights, 0.0)
        out = (shares * change).sum(axis=1)
        out[bad | bad_x] = 0.0
        return out

    def predictive_weights(self, improper):
        """Compute each component's share of the divided predictive density at x_i, shape (N, K); 0 if improper."""
        flags = np.array(improper, dtype=bool)
        components = self.factor.component_log_predictive(self.posterior, self.X, self.resp, flags)
        alpha = self.posterior.globals[self.factor.categorical_factor(self.posterior).weights].concentration
        divided = alpha[None, :] - self.resp
        flags |= np.any(divided <= 0.0, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_shares = np.log(np.where(divided > 0.0, divided, 1.0)) + components
        log_shares -= logsumexp(log_shares, axis=1, keepdims=True)
        shares = np.exp(log_shares)
        shares[flags] = 0.0
        return shares

    def block(self, hessian: np.ndarray) -> ResponseBlock:
        cmap = self.map
        prior = self.posterior.graph.variables[self.variable].prior
        return ResponseBlock(
            variable=self.variable,
            names=cmap.names(self.variable),
            size=cmap.size,
            features=self.features,
            coordinates=self.coordinates.copy(),
            prior_coordinates=cmap.elements(prior.natural_params()).reshape(self.n_categories, cmap.size),
            hessian=hessian,
            to_posterior=lambda coords: cmap.family(self._elements(np.asarray(coords, dtype=float))),
            summarize=self.summarize,
            shifts=self.shifts,
            shift_coordinates=tuple(range(cmap.size)),
            shift_names=tuple(f"{self.variable}.{quantity}" for quantity in self.fitted_shifts),
            predictive_correction=self.predictive_correction,
            lower_bounds=cmap.bound_positions(),
            predictive_weights=self.predictive_weights,
        )
