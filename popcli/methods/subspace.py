"""Random-subspace training (Li et al. 2018, "Measuring the Intrinsic Dimension of Objective
Landscapes", arXiv:1804.08838; PRANC, Nooralinejad et al. 2023, arXiv:2206.08464): the weights
of all masked layers, flattened and concatenated in layer order (D numbers), are

    w = w0 + P z,        P = the first D rows of [V_0; V_1; ...; V_{nb-1}] / sqrt(D)

with w0 the model's usual portable random weights (``rng.generate_weight``), z in R^d the only
trained numbers (``search.subspace_dim``) and P a D x d Fastfood projection (Le, Sarlos & Smola
2013) that is never materialised. Each block V_b (n x n, n = the smallest power of two >= max(d,
2), z zero-padded to n) is

    V_b x = R_b * H (G_b * (H (B_b * x))[perm_b]),   R_b = S_b / (||G_b|| * sqrt(n))

H the unnormalised Walsh-Hadamard matrix (``fwht``), B_b a +-1 diagonal, perm_b a permutation
(``u[perm_b][i] = u[perm_b[i]]``), G_b a Gaussian diagonal and S_b chi-distributed row norms, so
the entries of V_b are ~N(0, 1) and P's columns have unit norm in expectation (Li et al.'s
normalisation). The random parts come from ``rng.fastfood_parts`` (portable, keyed by the seed),
and every step is one exactly rounded float32 operation, so P z has the same bits on any machine.
The projection is global over all masked layers (Li et al.'s choice: the optimizer decides how
the d directions are shared between layers), not per layer.

``attach(model, seed, dim, dtype)`` registers z on the root (``Z_PARAM``, zeros: training starts
at w0) and gives each layer's ``SubspaceRule`` the shared ``Subspace``; P z is computed once per
forward (a forward pre-hook drops the previous one). With ``dtype="float16"`` the forward uses z
rounded to float16 (straight-through), so a float16 artifact stores exactly what the model uses.
Only density 1.0 is supported (no mask is trained): ``recipe.schema`` refuses others.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from .. import rng

PROJECTION = rng.FASTFOOD_NAME
Z_PARAM = "popcli_subspace_z"  # the root's parameter holding z (in state_dict: checkpoints resume it)
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def block_size(dim: int) -> int:
    """n: the smallest power of two >= max(dim, 2)."""
    return 1 << max(1, (int(dim) - 1).bit_length())


def _fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform along the last dim (a power of two n): for h = 1, 2,
    ..., n/2, every pair (x_j, x_{j+h}) with j mod 2h < h becomes (x_j + x_{j+h}, x_j - x_{j+h})."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        pairs = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, n)
        h *= 2
    return x


class _WalshHadamard(torch.autograd.Function):
    """y = H x along the last dim; H is symmetric, so grad_x = H grad_y (O(n log n) both ways)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return _fwht(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _fwht(grad)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Differentiable unnormalised Walsh-Hadamard transform along the last dim (a power of two)."""
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(f"the Walsh-Hadamard transform needs a power-of-two length, got {n}")
    return _WalshHadamard.apply(x)


class Fastfood:
    """The D x d projection P of ``seed`` (see the module docstring), applied without forming it."""

    def __init__(self, seed: int, total: int, dim: int):
        if total < 1 or dim < 1:
            raise ValueError(f"a subspace needs D >= 1 weights and d >= 1 dims, got D={total}, d={dim}")
        self.total, self.dim, self.block = int(total), int(dim), block_size(dim)
        self.n_blocks = -(-self.total // self.block)
        signs, perm, gauss, chi = rng.fastfood_parts(seed, self.n_blocks, self.block)
        sumsq = np.cumsum(gauss.astype(np.float64) ** 2, axis=1)[:, -1:]  # sequential: the same sum everywhere
        denom = np.sqrt(sumsq) * math.sqrt(self.block) * math.sqrt(self.total)
        scale = (chi / denom).astype(np.float32)  # R_b / sqrt(D): float64, rounded once
        self._cpu = tuple(torch.from_numpy(a) for a in (signs, perm, gauss, scale))
        self._parts: dict[torch.device, tuple] = {}

    def parts(self, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        """(B, perm, G, R / sqrt(D)), each [n_blocks, n], on ``device`` (float64: for gradcheck)."""
        key = (device, dtype)
        if key not in self._parts:
            self._parts[key] = tuple(t.to(device) if t.dtype == torch.int64 else t.to(device, dtype) for t in self._cpu)
        return self._parts[key]

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """P z: float32 [D] (differentiable in z, a float32 [d]; a float64 z computes in float64)."""
        if z.shape != (self.dim,):
            raise ValueError(f"z must have shape [{self.dim}], got {list(z.shape)}")
        dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
        signs, perm, gauss, scale = self.parts(z.device, dtype)
        x = torch.nn.functional.pad(z.to(dtype), (0, self.block - self.dim))
        u = fwht(signs * x)  # [n_blocks, n]: B_b x then H, every block at once
        u = torch.gather(u, 1, perm) * gauss
        return (fwht(u) * scale).reshape(-1)[:self.total]

    def matrix(self) -> torch.Tensor:
        """P itself, float32 [D, d] (column j = P e_j): for tests on small sizes only."""
        eye = torch.eye(self.dim, dtype=torch.float32)
        return torch.stack([self(eye[j]) for j in range(self.dim)], dim=1)


def used_z(z: torch.Tensor, dtype: str) -> torch.Tensor:
    """The z the model uses: z itself (float32), or z rounded to float16 with a straight-through
    gradient (the float16 values are what an artifact stores)."""
    if dtype == "float32":
        return z
    rounded = z.detach().to(DTYPES[dtype]).to(z.dtype)
    return z + (rounded - z.detach()) if z.requires_grad and torch.is_grad_enabled() else rounded


class Subspace:
    """What the subspace layers of one model share: the projection, their offsets in w, z's owner."""

    def __init__(self, root: nn.Module, seed: int, shapes: list[tuple[int, ...]], dim: int, dtype: str):
        self.root, self.dtype, self.shapes = root, dtype, [tuple(int(s) for s in shape) for shape in shapes]
        sizes = [math.prod(shape) for shape in self.shapes]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        self.projection = Fastfood(seed, self.offsets[-1], dim)
        self._cache: tuple | None = None

    def __getstate__(self) -> dict:  # copies (deepcopy, pickling) drop the cached P z and its graph
        return {**self.__dict__, "_cache": None}

    @property
    def z(self) -> nn.Parameter:
        return getattr(self.root, Z_PARAM)

    def reset(self, *_args) -> None:
        """Forward pre-hook: the next delta is computed afresh (z moved, or a new graph is needed)."""
        self._cache = None

    def full_delta(self) -> torch.Tensor:
        """P z for the current z, float32 [D]; computed once per forward (and per z version)."""
        z = self.z
        key = (z._version, z.data_ptr(), z.device, torch.is_grad_enabled())
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.projection(used_z(z, self.dtype)))
        return self._cache[1]

    def delta(self, index: int) -> torch.Tensor:
        """Layer ``index``'s share of P z, its weight's shape."""
        start, stop = self.offsets[index], self.offsets[index + 1]
        return self.full_delta()[start:stop].view(self.shapes[index])

    def weights(self, base: list[torch.Tensor]) -> list[torch.Tensor]:
        """w0 + P z per layer for the layers' portable weights ``base`` (no model needed)."""
        return [w0 + self.delta(i).to(w0.device) for i, w0 in enumerate(base)]


class SubspaceRule:
    """The layer rule of the subspace method (``SubnetMixin.rule``): w_eff = w0 + (P z)[layer]."""

    name = "subspace"

    def __init__(self) -> None:
        self.subspace: Subspace | None = None
        self.index = 0

    def score_bound(self, shape) -> float:  # the scores are not trained (density 1.0); edge-popup's bound
        return 1.0 / math.sqrt(math.prod(shape[1:]))

    def effective_weight(self, layer) -> torch.Tensor:
        if self.subspace is None:
            raise RuntimeError("a subspace layer needs its projection: build the model with popcli.models.build_model "
                               "(or popcli.methods.subspace.attach)")
        return layer.weight + self.subspace.delta(self.index).to(layer.weight.dtype)


def _layers(model: nn.Module) -> list:
    from ..nn import SubnetMixin

    layers = [m for m in model.modules() if isinstance(m, SubnetMixin)]
    if not layers or not all(isinstance(layer.rule, SubspaceRule) for layer in layers):
        raise ValueError("a subspace model needs subnet layers with the subspace rule (methods.configure)")
    return layers


def add_coordinates(model: nn.Module, dim: int) -> None:
    """Register z (zeros [dim], float32, on the layers' device: meta for a skeleton) as ``Z_PARAM``
    on the root: part of the architecture (``state_dict``, what a recipe describes)."""
    device = _layers(model)[0].weight.device
    model.register_parameter(Z_PARAM, nn.Parameter(torch.zeros(int(dim), dtype=torch.float32, device=device)))


def attach(model: nn.Module, seed: int, dim: int, dtype: str = "float32",
           z: torch.Tensor | None = None) -> Subspace:
    """Make ``model``'s subspace layers (rules set by ``configure``) share one Fastfood subspace of
    ``seed``: z (the root's ``Z_PARAM``, registered with zeros when missing; ``z``: these values)
    , the scores frozen, the per-forward reset hook installed. Returns the ``Subspace``."""
    layers = _layers(model)
    if dtype not in DTYPES:
        raise ValueError(f"subspace dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if z is not None or not isinstance(getattr(model, Z_PARAM, None), nn.Parameter):
        values = torch.zeros(dim, dtype=torch.float32) if z is None else z.detach().to(torch.float32).reshape(-1)
        model.register_parameter(Z_PARAM, nn.Parameter(values.to(layers[0].weight.device).clone()))
    subspace = Subspace(model, seed, [tuple(layer.weight.shape) for layer in layers], dim, dtype)
    for i, layer in enumerate(layers):
        layer.rule.subspace, layer.rule.index = subspace, i
        layer.scores.requires_grad_(False)
    model._popcli_subspace = subspace  # a plain attribute: not in state_dict
    model.register_forward_pre_hook(subspace.reset)
    return subspace


def stored_z(model: nn.Module, dtype: str) -> np.ndarray:
    """z as the artifact stores it: exactly the values the model uses, as ``dtype`` ([d])."""
    z = getattr(model, Z_PARAM).detach().cpu()
    return z.to(DTYPES[dtype]).contiguous().numpy()


def effective_weights(seed: int, base: list[torch.Tensor], z: torch.Tensor, dtype: str) -> list[torch.Tensor]:
    """w0 + P z per layer from the portable weights ``base`` (float32, layer order) and z, without
    a model: what ``methods.store.check`` hashes and compares with the file's checksum."""
    projection = Fastfood(seed, sum(w.numel() for w in base), int(z.numel()))
    with torch.no_grad():
        delta = projection(used_z(z.to(torch.float32).reshape(-1), dtype))
    out, start = [], 0
    for w0 in base:
        out.append(w0 + delta[start:start + w0.numel()].view(w0.shape))
        start += w0.numel()
    return out


def weights_sha256(weights: list[torch.Tensor]) -> str:
    """SHA-256 of the effective weights' float32 little-endian bytes, layers concatenated in order."""
    import hashlib

    digest = hashlib.sha256()
    for w in weights:
        digest.update(w.detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes())
    return digest.hexdigest()
