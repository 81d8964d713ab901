"""Refuse recipes that cannot fit in memory, before anything is allocated.

``check_data`` sizes a synthetic dataset from its recipe (it is generated in memory);
``check_model`` builds the model's structure on the ``meta`` device (shapes only, no storage),
runs one meta forward at the training batch size to see every layer's output, and estimates:

    weights, scores, buffers      4 bytes each
    trainable ones (scores)       + 4 (gradient) + 4 (SGD momentum) or 8 (Adam moments)
    masked layers                 + 8 per weight (the mask and w * mask kept for the backward)
    activations (training)        batch x sum of the layers' outputs (in-place ones not) x 4 bytes
                                  (what autograd keeps for the backward; 2 bytes under CUDA AMP)
    activations (evaluation)      eval batch x the largest layer output x 2 (its input and output)
                                  (the larger of the two counts)

and refuses with the figures when that exceeds the memory available (CPU: MemAvailable +
SwapFree; CUDA: the device's free memory). The same meta pass refuses batch norm layers that
would see a single value per channel (a batch of one image into BatchNorm1d). Set
``POPCLI_SKIP_MEMORY_CHECK=1`` to skip the estimate (not the batch-norm check).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn

from ..errors import RecipeError
from ..recipe import DataConfig, Recipe

FLOAT_BYTES = 4


def human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory that can be allocated now on ``device``, or None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        fields = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines() if ":" in line)
        return (int(fields["MemAvailable"].split()[0]) + int(fields.get("SwapFree", "0 kB").split()[0])) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def _skip() -> bool:
    return os.environ.get("POPCLI_SKIP_MEMORY_CHECK", "") not in ("", "0")


def check_data(cfg: DataConfig) -> None:
    """A synthetic dataset is generated in memory: refuse one that cannot fit."""
    if cfg.dataset != "synthetic" or _skip():
        return
    image = math.prod(int(d) for d in cfg.shape)
    need = (cfg.train_size + cfg.test_size + cfg.num_classes) * image * FLOAT_BYTES
    have = available_bytes("cpu")
    if have is not None and need > have:
        raise RecipeError(f"the synthetic dataset needs about {human(need)} of memory ({cfg.train_size + cfg.test_size} "
                          f"images of shape {list(cfg.shape)}) but {human(have)} is available; lower data.shape, "
                          "data.train_size or data.test_size")


def _trace(model: nn.Module, batch: int, shape: tuple[int, ...]) -> tuple[int, int, list[tuple[str, int]]]:
    """(sum and largest of the leaf modules' output elements, both 0 if the model cannot run on
    the meta device; [(BN name, values per channel)] of the BN layers reached) of one meta
    forward at ``batch``."""
    outputs, norms = [0, 0], []
    names = {module: name for name, module in model.named_modules()}

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor) and not getattr(module, "inplace", False):  # in place: no new storage
            outputs[0] += output.numel()
            outputs[1] = max(outputs[1], output.numel())

    def norm_input(module, inputs):  # before the forward: torch itself raises on one value per channel
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() >= 2:
            norms.append((names[module], inputs[0].numel() // max(1, inputs[0].shape[1])))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    handles += [m.register_forward_pre_hook(norm_input) for m in leaves if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        with torch.no_grad():
            model.train()(torch.empty(batch, *shape, device="meta"))
    except Exception:  # noqa: BLE001  (an op without a meta kernel, or BN on one value: no activation figure)
        outputs[:] = [0, 0]
    finally:
        for handle in handles:
            handle.remove()
    return outputs[0], outputs[1], norms


def _state_bytes(model: nn.Module, optimizer: str) -> int:
    slots = 2 if optimizer == "adam" else 1
    total = sum(b.numel() for b in model.buffers()) * FLOAT_BYTES
    for p in model.parameters():
        total += p.numel() * FLOAT_BYTES * (1 + (1 + slots if p.requires_grad else 0))
    for m in model.modules():
        scores = getattr(m, "scores", None)
        if isinstance(scores, torch.Tensor) and isinstance(getattr(m, "weight", None), torch.Tensor):
            total += 2 * m.weight.numel() * FLOAT_BYTES  # the mask and w * mask, per training step
    return total


def check_model(recipe: Recipe, shape: tuple[int, int, int], num_classes: int, train_batch: int,
                device: torch.device | str = "cpu") -> dict[str, int]:
    """Refuse (RecipeError) a model whose training cannot fit in memory, or whose batch norm
    would see one value per channel; the estimate {"state_bytes", "activation_bytes"}."""
    from ..models import build_architecture, input_size

    with torch.device("meta"):
        model = build_architecture(recipe.model, recipe.search, in_channels=shape[0], image_size=input_size(shape),
                                   num_classes=num_classes)
    outputs, largest, norms = _trace(model, train_batch, shape)  # no trace: weights only
    single = [name for name, values in norms if values < 2]
    if single:
        raise RecipeError(f"batch norm layer {single[0]!r} would see one value per channel at a training batch of "
                          f"{train_batch}; raise data.batch_size (and data.train_size) to at least 2, or set "
                          "model.batchnorm=false")
    act_bytes = 2 if recipe.search.amp and torch.device(device).type == "cuda" else FLOAT_BYTES  # AMP: half
    train_acts = outputs * act_bytes
    eval_acts = 2 * largest // max(1, train_batch) * recipe.data.eval_batch_size * act_bytes  # two layers alive
    state, acts = _state_bytes(model, recipe.search.optimizer), max(train_acts, eval_acts)
    batch = f"training batch {train_batch}" if train_acts >= eval_acts else f"eval batch {recipe.data.eval_batch_size}"
    have = None if _skip() else available_bytes(device)
    if have is not None and state + acts > have:
        raise RecipeError(f"this model needs about {human(state + acts)} of memory to train ({human(state)} of weights, "
                          f"scores and optimizer state + {human(acts)} of activations at {batch}) but "
                          f"{human(have)} is available on {torch.device(device).type}; lower model.width, model.hidden, "
                          "data.batch_size or the input size (or set POPCLI_SKIP_MEMORY_CHECK=1)")
    return {"state_bytes": state, "activation_bytes": acts}
