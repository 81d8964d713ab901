"""The compression baselines of the size-accuracy frontier (benchmarks/frontier.py).

What a practitioner would ship instead of seed + mask, built with plain PyTorch:

- ``mlp(spec)``: an ordinary MLP (Linear with biases, optional affine BatchNorm1d, ReLU),
  trained normally with ``train`` (SGD + Nesterov, cosine schedule, as popcli's dense runs).
- ``prune_global(model, density)``: global L1 magnitude pruning (``torch.nn.utils.prune``) of
  every Linear weight down to ``density`` kept; called repeatedly with fine-tuning in between it
  is iterative pruning. ``finalize_pruning`` makes the masks permanent (zeros in the weights).
- ``save_sparse_int8`` / ``load_sparse_int8``: the "Deep Compression" file: per Linear layer
  the kept positions (a packed bitmap or varint gaps, whichever compresses smaller) and int8
  values with one float32 scale per layer, biases and BN tensors as float32, the whole file
  compressed with lzma (xz). ``quantize_int8(model)`` is the model that file holds (the weights
  rounded to int8 and scaled back), so a loaded file gives the same logits bit for bit.

Nothing here prints or seeds the global RNG (``torch_generator`` draws every initial weight).
"""

from __future__ import annotations

import json
import lzma
import math
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune

from popcli.storage.atomic import atomic_write
from popcli.errors import PopcliError
from popcli.rng import torch_generator

MAGIC = b"SPQ8"  # sparse int8 file, version 1 (inside the xz stream)
VERSION = 1


class BaselineError(PopcliError):
    """A baseline file that cannot be read."""


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class MLPSpec:
    """784 -> hidden... -> classes; BN (affine) after each hidden Linear when ``batchnorm``."""

    in_features: int = 784
    hidden: list[int] = field(default_factory=lambda: [300, 100])
    classes: int = 10
    batchnorm: bool = False


def mlp(spec: MLPSpec, seed: int = 0) -> nn.Sequential:
    """The plain model; weights drawn from torch's default Linear init with a seeded generator."""
    layers: list[nn.Module] = [nn.Flatten()]
    sizes = [spec.in_features, *spec.hidden]
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if spec.batchnorm:
            layers.append(nn.BatchNorm1d(fan_out))
        layers.append(nn.ReLU())
    layers.append(nn.Linear(sizes[-1], spec.classes))
    model = nn.Sequential(*layers)
    gen = torch_generator(seed, "baseline_init")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):  # torch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                bound = 1.0 / math.sqrt(module.in_features)
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) * 2 * bound - bound)
                module.bias.copy_(torch.rand(module.bias.shape, generator=gen) * 2 * bound - bound)
    return model


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def weight_count(model: nn.Module) -> int:
    """Linear weights (what density is a fraction of), biases not included."""
    return sum(m.weight.numel() for m in linear_layers(model))


def nonzero_weights(model: nn.Module) -> int:
    return sum(int(m.weight.detach().count_nonzero()) for m in linear_layers(model))


def small_hidden(target_params: int, in_features: int = 784, classes: int = 10) -> int:
    """Width h of a one-hidden-layer MLP with about ``target_params`` parameters (biases included):
    (in + 1) h + (h + 1) classes = target."""
    return max(1, round((target_params - classes) / (in_features + 1 + classes)))


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 5.0
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_steps: int | None = None  # cap (the frontier's tiny setting)


def train(model: nn.Module, loader, cfg: TrainConfig, start_epoch: int = 0, distiller=None) -> int:
    """SGD (Nesterov) with a cosine schedule from cfg.lr to 0 over the run; the steps taken.

    ``loader`` is a popcli train loader (``batches(epoch)`` is a function of seed and epoch);
    ``start_epoch`` offsets the data order so fine-tuning rounds see fresh shuffles.
    ``distiller``: a ``popcli.engine.distill.Distiller`` built over this loader (the teacher's
    cached logits): the loss is its distillation loss instead of plain cross-entropy, as a
    popcli search with ``search.distill_teacher`` trains.
    """
    total = int(round(cfg.epochs * len(loader)))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                          momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
    model.train()
    step, epoch = 0, start_epoch
    while step < total:
        batches = (loader.indexed_batches(epoch) if distiller is not None
                   else ((x, y, None) for x, y in loader.batches(epoch)))
        for x, y, idx in batches:
            if step >= total:
                break
            for group in opt.param_groups:
                group["lr"] = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * step / total))
            logits = model(x)
            loss = F.cross_entropy(logits, y) if distiller is None else distiller.loss(logits, y, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        epoch += 1
    model.eval()
    return step


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
    return correct / max(1, len(y))


# --------------------------------------------------------------------------- magnitude pruning


def prune_global(model: nn.Module, density: float) -> None:
    """Global L1 pruning of all Linear weights to ``density`` of them kept (in place; masks stay
    as torch.nn.utils.prune hooks, so fine-tuning keeps pruned weights at zero)."""
    layers = linear_layers(model)
    total = sum(m.weight.numel() for m in layers)
    # the current weights from their parameters: a pruned layer's ``weight`` attribute is only
    # refreshed by a forward pass, so after load_state_dict or an optimizer step it is stale
    current = {m: (m.weight_orig * m.weight_mask if prune.is_pruned(m) else m.weight).detach() for m in layers}
    remaining = sum(int(w.count_nonzero()) for w in current.values())
    target = max(1, round(density * total))
    if target >= remaining:
        return
    # the amount applies to the still-unpruned weights (PruningContainer), so this is iterative
    prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured,
                              importance_scores={(m, "weight"): w for m, w in current.items()},
                              amount=remaining - target)


def finalize_pruning(model: nn.Module) -> nn.Module:
    """Fold the pruning masks into the weights (zeros) and drop the hooks."""
    for m in linear_layers(model):
        if prune.is_pruned(m):
            prune.remove(m, "weight")
    return model


# --------------------------------------------------------------------------- int8 + sparse file


def _int8(weight: torch.Tensor) -> tuple[np.ndarray, np.float32]:
    """Symmetric per-tensor int8: (q [same shape] int8, scale) with weight ~= q * scale."""
    w = weight.detach().cpu().numpy().astype(np.float32)
    peak = float(np.abs(w).max())
    scale = np.float32(peak / 127.0 if peak > 0 else 1.0)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def _dequantize(q: np.ndarray, scale: np.float32) -> torch.Tensor:
    return torch.from_numpy(q.astype(np.float32) * np.float32(scale))


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with pruning folded in: ``weight_orig * weight_mask`` as ``weight``."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("weight_mask"):
            continue
        if key.endswith("weight_orig"):
            key, value = key[:-len("_orig")], value * model.state_dict()[key[:-len("orig")] + "mask"]
        state[key] = value.detach().clone()
    return state


def quantize_int8(model: nn.Module, spec: MLPSpec) -> nn.Module:
    """A fresh ``mlp(spec)`` holding ``model``'s tensors (pruning folded in) with every Linear weight
    replaced by its int8 values times the layer's scale: exactly what ``load_sparse_int8`` rebuilds."""
    quantized = mlp(spec)
    quantized.load_state_dict(plain_state(model))
    with torch.no_grad():
        for m in linear_layers(quantized):
            m.weight.copy_(_dequantize(*_int8(m.weight)))
    return quantized.eval()


def _varint(values: np.ndarray) -> bytes:
    """LEB128 of non-negative integers (7 bits per byte, high bit = more)."""
    out = bytearray()
    for v in values.tolist():
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _unvarint(data: bytes, count: int) -> tuple[np.ndarray, int]:
    values, value, shift, pos = [], 0, 0, 0
    while len(values) < count:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            values.append(value)
            value, shift = 0, 0
    return np.asarray(values, dtype=np.int64), pos


def _positions(flat_kept: np.ndarray, index: str) -> bytes:
    """The kept positions of one layer: packed bitmap, or gaps between kept indices as varints."""
    if index == "bitmap":
        return np.packbits(flat_kept).tobytes()
    where = np.flatnonzero(flat_kept)
    return _varint(np.diff(where, prepend=-1) - 1)


def _payload(model: nn.Module, spec: MLPSpec, index: str) -> bytes:
    layers, blobs = [], []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            q, scale = _int8(module.weight)
            flat = q.reshape(-1)
            kept = flat != 0
            positions = _positions(kept, index)
            blobs += [positions, flat[kept].tobytes()]
            layers.append({"name": name, "shape": list(q.shape), "kept": int(kept.sum()), "scale": float(scale),
                           "index_bytes": len(positions)})
    dense = []
    for key, tensor in model.state_dict().items():
        if key.endswith(".weight") and isinstance(model.get_submodule(key.rsplit(".", 1)[0]), nn.Linear):
            continue
        if tensor.dtype.is_floating_point:
            array = tensor.detach().cpu().numpy().astype("<f4")
            dense.append({"key": key, "shape": list(array.shape)})
            blobs.append(array.tobytes())
    header = json.dumps({"spec": asdict(spec), "index": index, "layers": layers, "dense": dense},
                        separators=(",", ":")).encode()
    return MAGIC + struct.pack("<BI", VERSION, len(header)) + header + b"".join(blobs)


def _compress(payload: bytes) -> bytes:
    """xz at its strongest preset (9e), the dictionary cut to the payload's size: the same ratio
    without preset 9's 674 MiB of encoder memory."""
    dict_size = max(1 << 16, 1 << (len(payload) - 1).bit_length())
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": min(dict_size, 64 << 20)}]
    return lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)


def save_sparse_int8(model: nn.Module, spec: MLPSpec, path: str | Path) -> int:
    """Write the Deep-Compression file of ``model`` (an ``mlp(spec)``, pruned or not); its bytes.
    Both position encodings are tried; the smaller compressed file is written."""
    quantized = quantize_int8(model, spec)
    data = min((_compress(_payload(quantized, spec, index)) for index in ("bitmap", "gaps")), key=len)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
    return len(data)


def _read_layer(data: bytes, pos: int, meta: dict, index: str) -> tuple[torch.Tensor, int]:
    numel = int(np.prod(meta["shape"]))
    positions = data[pos:pos + meta["index_bytes"]]
    pos += meta["index_bytes"]
    if index == "bitmap":
        kept = np.unpackbits(np.frombuffer(positions, np.uint8), count=numel).astype(bool)
    else:
        gaps, _ = _unvarint(positions, meta["kept"])
        kept = np.zeros(numel, dtype=bool)
        kept[np.cumsum(gaps + 1) - 1] = True
    values = np.frombuffer(data, np.int8, count=meta["kept"], offset=pos)
    q = np.zeros(numel, dtype=np.int8)
    q[kept] = values
    return _dequantize(q.reshape(meta["shape"]), np.float32(meta["scale"])), pos + meta["kept"]


def load_sparse_int8(path: str | Path) -> tuple[nn.Module, MLPSpec]:
    """The model a ``save_sparse_int8`` file holds (eval mode) and its spec."""
    try:
        data = lzma.decompress(Path(path).read_bytes())
        if data[:4] != MAGIC or data[4] != VERSION:
            raise ValueError("not a sparse int8 file of version 1")
        (header_len,) = struct.unpack_from("<I", data, 5)
        header = json.loads(data[9:9 + header_len])
        spec = MLPSpec(**header["spec"])
        model, pos = mlp(spec), 9 + header_len
        state = model.state_dict()
        for meta in header["layers"]:
            state[meta["name"] + ".weight"], pos = _read_layer(data, pos, meta, header["index"])
        for meta in header["dense"]:
            count = int(np.prod(meta["shape"]))
            state[meta["key"]] = torch.from_numpy(np.frombuffer(data, "<f4", count, pos).copy()).reshape(meta["shape"])
            pos += 4 * count
        model.load_state_dict(state)
    except (OSError, lzma.LZMAError, ValueError, KeyError, TypeError, struct.error, RuntimeError) as err:
        raise BaselineError(f"{path}: cannot read this sparse int8 file ({err.__class__.__name__}: "
                            f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None
    return model.eval(), spec


def iter_batches(loader, limit: int | None = None) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Eval batches of a popcli loader, stopping after ``limit`` samples."""
    seen = 0
    for x, y in loader.batches():
        if limit is not None and seen >= limit:
            return
        yield x, y
        seen += len(y)
