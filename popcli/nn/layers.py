"""Subnet layers: a frozen random weight, a trainable score, and a straight-through top-k mask.

Forward uses ``w_eff = w * h(|s|)`` with ``h = 1`` on the top ``density`` fraction of |s| in the
layer (see ``topk.topk_mask``). Backward is straight-through on the ranked quantity |s|:
``grad_|s| = grad_{w_eff} * w``, hence ``grad_s = sign(s) * grad_{w_eff} * w`` (the reference
code applies its estimator to ``scores.abs()``; without the sign, negative scores train the
wrong way). ``w`` gets no gradient.
The mask is recomputed every training forward (scores move) and cached in eval mode until the
scores change. The effective weight itself is cached too wherever nothing can train it (a fixed
mask, or eval mode with no gradient to the scores): computed once when the weight, scores, mask
or density change and dropped on ``.train()``/``.eval()``, so an eval forward is a plain
conv/linear. Training on the CPU runs the same function in fused passes (``fused``), bit for
bit. ``torch.jit.trace`` and ``torch.export`` of an eval-mode model record the mask as graph ops
(``topk.capturing``); training mode and other methods' rules (biprop, signed supermask) refuse
in one line (bake those first). ``from_conv``/``to_conv`` (and the Linear pair) convert to and from torch layers.
A layer may carry a bias (``bias=True``): edge-popup masks weights only, so a bias is added as
it is; whether it trains, stays frozen or is dropped is the converter's policy (``subnetify``).
The paper's models have none.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ModelError
from . import cpu_kernels
from .fused import FusedStraightThroughMask
from .topk import ThresholdTracker, capturing, kept_count, topk_mask


class _StraightThroughMask(torch.autograd.Function):
    """w_eff = w * mask(|s|); d w_eff / d |s| := w (straight-through), so grad_s = sign(s) grad w."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, scores)
        return weight * mask  # mask: 0/1 in weight's dtype (~9x faster on CPU than torch.where)

    @staticmethod
    def backward(ctx, grad_effective: torch.Tensor):
        weight, scores = ctx.saved_tensors
        grad_scores = grad_effective * weight
        grad_scores.mul_(torch.sign(scores))
        return None, grad_scores, None


class _SampledMask(torch.autograd.Function):
    """Supermask (Zhou et al. 2019): w_eff = w * m, m ~ Bernoulli(sigmoid(s)) drawn outside;
    straight-through d m / d sigmoid(s) := 1, so grad_s = grad_w_eff * w * sigmoid'(s)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, scores)
        return weight * sample

    @staticmethod
    def backward(ctx, grad_effective: torch.Tensor):
        weight, scores = ctx.saved_tensors
        p = torch.sigmoid(scores)
        return None, grad_effective * weight * p * (1 - p), None


class SubnetMixin:
    """Shared state of the subnet layers: ``scores``, ``density`` and the mask cache.

    ``sampled`` switches a layer to Zhou et al.'s supermask: in training its forward multiplies
    by ``mask_sample`` (a Bernoulli(sigmoid(s)) draw that ``models.SupermaskSampler`` sets before
    each step); its found mask (``mask()``, used in eval and by artifacts) keeps the ``density``
    fraction of largest scores, i.e. of largest sigmoid(s), at the density edge-popup would keep.
    """

    weight: nn.Parameter
    scores: nn.Parameter
    density: float

    def _init_subnet(self, density: float) -> None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        self.weight.requires_grad_(False)
        self.scores = nn.Parameter(torch.empty_like(self.weight))
        self.density = float(density)
        self.mask_override: torch.Tensor | None = None  # set by global top-k before each forward
        self.register_buffer("fixed_mask", None, persistent=False)  # a loaded subnetwork's mask (fix_mask)
        self._mask_cache: dict = {}  # eval mode: {dtype: mask}; fixed masks: {(storage, device, dtype): mask}
        self._cache_key: tuple | None = None  # the scores' (version, storage, device) it is valid for
        self._tracker = ThresholdTracker()  # last training threshold: brackets the next selection
        self.sampled = False  # supermask mode (see the class docstring)
        self.rule = None  # another method's layer rule (popcli.methods: biprop, signed supermask); None: edge-popup
        self.mask_sample: torch.Tensor | None = None  # supermask: this step's Bernoulli draw
        self._weight_cache: tuple | None = None  # (key, w * mask, mask_override): see effective_weight
        nn.init.zeros_(self.scores)

    def train(self, mode: bool = True):
        self._weight_cache = None  # a cached effective weight is only for what follows; modes start afresh
        return super().train(mode)

    def reset_parameters(self) -> None:
        """Called by the torch constructor: zero weight, no global RNG. popcli's portable
        generator fills the weight (and a bias) afterwards (models.init_weights)."""
        nn.init.zeros_(self.weight)
        if getattr(self, "bias", None) is not None:
            nn.init.zeros_(self.bias)

    def reset_scores(self, generator: torch.Generator | None = None, center: float = 0.0) -> None:
        """Scores ~ center + U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (or the rule's bound), drawn on the
        CPU from ``generator``."""
        fan_in = self.weight[0].numel()
        bound = self.rule.score_bound(self.weight.shape) if self.rule is not None else 1.0 / math.sqrt(fan_in)
        values = torch.empty(self.scores.shape).uniform_(-bound, bound, generator=generator) + center
        with torch.no_grad():
            self.scores.copy_(values)

    def reset_scores_to_mask(self, mask: torch.Tensor, generator: torch.Generator | None = None) -> bool:
        """Trainable scores whose top-k is exactly ``mask`` (bool, the weight's shape), to continue a
        search from a found subnetwork: U(-b, b) from ``generator`` (b = 1/sqrt(fan_in)), and
        |s| + 2b where kept, so every kept s (>= 2b) exceeds every dropped |s| (<= b): the same
        mask by |s| (edge-popup) and by s (supermask's signed ranking).
        ``density`` becomes the kept fraction. False (nothing changed) when no density keeps
        exactly that many (an empty mask)."""
        kept, n = int(mask.sum()), mask.numel()
        if kept_count(n, kept / n) != kept:
            return False
        self.scores = nn.Parameter(torch.empty_like(self.weight))  # a fixed-mask layer holds an empty one
        self.reset_scores(generator)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(self.weight[0].numel())
            s = self.scores.detach()
            self.scores.copy_(torch.where(mask.to(s.device), s.abs() + 2 * bound, s))
        self.scores.requires_grad_(True)
        self.fixed_mask, self.density = None, kept / n
        self._mask_cache.clear()
        self._weight_cache = None
        return True

    def fix_mask(self, mask: torch.Tensor, kept: int | None = None) -> None:
        """Freeze this layer to ``mask`` (bool, the weight's shape; ``kept``: its count of ones,
        if known): what a loaded artifact is. The scores are dropped (an artifact has none); the
        mask moves with the module (a buffer) and ``density`` becomes the kept fraction."""
        if mask.shape != self.weight.shape or mask.dtype != torch.bool:
            raise ValueError(f"a fixed mask must be bool of shape {tuple(self.weight.shape)}")
        self.fixed_mask = mask
        self.scores = nn.Parameter(torch.empty(0, device=self.weight.device), requires_grad=False)
        self.density = (int(mask.sum()) if kept is None else kept) / mask.numel()
        self._mask_cache.clear()
        self._weight_cache = None

    def mask(self) -> torch.Tensor:
        """Boolean keep-mask of the weight's shape: the found subnetwork (cached in eval mode)."""
        return self._mask(torch.bool, sample=False)

    def _mask(self, dtype: torch.dtype, sample: bool = True) -> torch.Tensor:
        """The keep-mask as ``dtype``: recomputed in training (a supermask's forward uses its
        sample), cached while the scores do not change otherwise."""
        if self.mask_override is not None:
            return self.mask_override.to(dtype)
        if self.fixed_mask is not None:
            key = (self.fixed_mask.data_ptr(), self.fixed_mask.device, dtype)
            if key not in self._mask_cache:
                self._mask_cache.clear()
                self._mask_cache[key] = self.fixed_mask.to(dtype)
            return self._mask_cache[key]
        if self.training and self.sampled and sample:
            if self.mask_sample is None:
                raise RuntimeError("a supermask layer trains on a sampled mask; build it with popcli.models.build_model")
            return self.mask_sample.to(dtype)
        if self.training and not self.sampled:
            self._mask_cache.clear()
            return topk_mask(self.scores, self.density, dtype, self._tracker)
        key = (self.scores._version, self.scores.data_ptr(), self.scores.device, self.density)
        if self._cache_key != key:
            self._mask_cache.clear()
            self._cache_key = key
        if torch.bool not in self._mask_cache:
            self._mask_cache[torch.bool] = topk_mask(self.scores, self.density, signed=self.sampled)
        if dtype not in self._mask_cache:
            self._mask_cache[dtype] = self._mask_cache[torch.bool].to(dtype)
        return self._mask_cache[dtype]

    def _weight_key(self) -> tuple:
        """What the effective weight depends on: weight and scores (storage, version), density, mask."""
        w, s, fixed = self.weight, self.scores, self.fixed_mask
        return (w.data_ptr(), w._version, w.dtype, w.device, s.data_ptr(), s._version, self.density,
                id(self.mask_override), None if fixed is None else (id(fixed), fixed.data_ptr(), fixed._version))

    def _cached_weight(self) -> torch.Tensor:
        """w * mask computed once per ``_weight_key`` (no autograd graph; a normal tensor even
        when first computed under inference_mode, so it also serves later grad-enabled calls)."""
        key = self._weight_key()
        cache = self._weight_cache
        if cache is None or cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                if self.rule is not None:
                    value = self.rule.effective_weight(self)
                else:
                    value = self.weight * self._mask(self.weight.dtype)
            cache = self._weight_cache = (key, value, self.mask_override)  # holding the override pins its id
        return cache[1]

    @torch.compiler.disable  # data-dependent selection (and C kernels): torch.compile runs it eagerly
    def effective_weight(self) -> torch.Tensor:
        """w * mask, differentiable in the scores (straight-through); a rule's own product if it has
        one; cached where nothing trains it (a rule's product: only for a fixed mask, whose rule
        state is restored before the first forward)."""
        if capturing():
            return self._captured_weight()
        trains = torch.is_grad_enabled() and (self.scores.requires_grad or self.weight.requires_grad)
        if not trains and (self.fixed_mask is not None or (not self.training and self.rule is None)):
            return self._cached_weight()  # a loaded subnetwork, or eval without gradients to train
        if self.rule is not None:
            return self.rule.effective_weight(self)
        if self.fixed_mask is not None:
            return self.weight * self._mask(self.weight.dtype)
        if self.training and self.sampled:
            return _SampledMask.apply(self.weight, self.scores, self._mask(self.weight.dtype))
        if self.training and self.mask_override is None and cpu_kernels.usable(self.weight, self.scores):
            return FusedStraightThroughMask.apply(self.weight, self.scores, self.density, self._tracker)
        return _StraightThroughMask.apply(self.weight, self.scores, self._mask(self.weight.dtype))

    def _captured_weight(self) -> torch.Tensor:
        """w * mask in plain torch ops, no cache: what torch.jit.trace / torch.export record (eval
        mode, edge-popup and supermask layers; the same values as an eager eval forward)."""
        if self.training:
            raise ModelError("torch.jit.trace / torch.export record inference graphs of subnet layers: call "
                             "model.eval() first (training runs eagerly, or under torch.compile)")
        if self.rule is not None:
            raise ModelError(f"{self.rule.name} subnet layers do not trace; bake them first "
                             f"(popcli.load(path) in its default mode='infer', or popcli.nn.bake_subnets(model))")
        if self.mask_override is not None:
            mask = self.mask_override
        elif self.fixed_mask is not None:
            mask = self.fixed_mask
        else:
            mask = topk_mask(self.scores, self.density, signed=self.sampled)
        return self.weight * mask.to(self.weight.dtype)

    @torch.no_grad()
    def _baked_weight(self) -> torch.Tensor:
        """w * mask (a rule's own product for other methods), detached: what to_conv/to_linear hold."""
        if self.rule is not None:
            return self.rule.effective_weight(self).detach()
        return torch.where(self.mask(), self.weight.detach(), 0.0)

    def extra_repr(self) -> str:  # shown by print(model)
        return f"{super().extra_repr()}, density={self.density}"


class SubnetConv2d(SubnetMixin, nn.Conv2d):
    """Conv2d whose weight is frozen and masked by the top-k of a trainable score."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, density: float = 0.5, padding_mode: str = "zeros", bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias=bias, padding_mode=padding_mode)
        self._init_subnet(density)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, density: float, bias: bool = False) -> "SubnetConv2d":
        """Same geometry as ``conv`` (its bias kept only with ``bias``); weight and bias copied when
        ``conv`` has real data."""
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, density, conv.padding_mode, bias=bias and conv.bias is not None)
        _copy_from(layer, conv)
        return layer

    def to_conv(self) -> nn.Conv2d:
        """A plain Conv2d holding ``w * mask``: the found subnetwork, baked."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, bias=self.bias is not None, padding_mode=self.padding_mode)
        conv.weight.data.copy_(self._baked_weight())
        if self.bias is not None:
            conv.bias.data.copy_(self.bias.detach())
        return conv


class SubnetLinear(SubnetMixin, nn.Linear):
    """Linear whose weight is frozen and masked by the top-k of a trainable score."""

    def __init__(self, in_features: int, out_features: int, density: float = 0.5, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self._init_subnet(density)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, density: float, bias: bool = False) -> "SubnetLinear":
        layer = cls(linear.in_features, linear.out_features, density, bias=bias and linear.bias is not None)
        _copy_from(layer, linear)
        return layer

    def to_linear(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight.data.copy_(self._baked_weight())
        if self.bias is not None:
            linear.bias.data.copy_(self.bias.detach())
        return linear


def _copy_from(layer: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s weight (and bias, when both have one) into ``layer``, unless ``source`` is on meta."""
    if source.weight.device.type == "meta":
        return
    with torch.no_grad():
        layer.weight.copy_(source.weight)
        if layer.bias is not None:
            layer.bias.copy_(source.bias)


def NonAffineBatchNorm2d(num_features: int, **kwargs) -> nn.BatchNorm2d:
    """BatchNorm2d without gamma/beta, as in the paper: only data-derived running stats."""
    return nn.BatchNorm2d(num_features, affine=False, **kwargs)


def NonAffineBatchNorm1d(num_features: int, **kwargs) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(num_features, affine=False, **kwargs)


def is_subnet(module: nn.Module) -> bool:
    return isinstance(module, SubnetMixin)
