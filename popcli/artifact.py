"""The artifact: a found subnetwork as one safetensors file, and its exact reconstruction.

The file holds the masks of all masked layers as one coded stream (``masks``, see ``codecs``),
the tensors a seed cannot regenerate (``state.<key>``: batch-norm statistics, trained weights of
dense layers) and string metadata describing everything else; the random weights themselves are regenerated
from the seed by ``rng.generate_weight`` and checked against per-layer SHA-256 digests. The byte
format is specified in docs/FORMAT.md. Writing is ``save``/``export``; reading is ``read``
(validated header, no model) and ``load`` (the model, every checksum verified). Every problem
with a file is an ``ArtifactError`` naming it; nothing here prints.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import __version__, artifact_extras, artifact_schema, codecs, preprocess, rng
from .artifact_schema import LayerRecord, strict_json
from .checkpoint import storage_error, write_atomic
from .errors import ArtifactError, OutputExists, PopcliError
from .loaded import fill_frozen, finish_load, frozen_records
from .methods import store as method_store
from .models import build_architecture, init_density, masked_layers
from .models.external import require_source, source_record as model_source_record
from .recipe import Recipe

FORMAT_NAME = "popcli-artifact"
FORMAT_VERSION = 2  # 2: true shapes of 0-d tensors in content_sha256, the recipe's seed as a string
MULTI_MASK_VERSION = 3  # 2 + several named masks over one seed (popcli.multimask); written for multi-mask files only
READABLE_VERSIONS = (1, 2, 3)
MASKS, STATE = "masks", "state."
_MAX_HEADER = 100 << 20  # a header larger than this is not one popcli wrote


@dataclass
class Artifact:
    """A validated artifact file: metadata, recipe, layer records and the raw tensors."""

    path: Path
    metadata: dict[str, str]
    recipe: Recipe
    data_info: dict[str, Any]  # {"shape": [C, H, W], "num_classes": K}
    layers: list[LayerRecord]
    tensors: dict[str, np.ndarray]
    file_bytes: int

    @property
    def codec(self) -> str:
        return self.metadata.get("mask_codec", "")

    @property
    def masked_weights(self) -> int:
        return sum(layer.numel for layer in self.layers)


# --------------------------------------------------------------------------- checksums


def _canonical(metadata: dict[str, str]) -> bytes:
    return json.dumps({k: v for k, v in metadata.items() if k != "content_sha256"}, sort_keys=True,
                      separators=(",", ":")).encode()


def content_sha256(metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over every tensor (sorted by name: name, dtype, shape, bytes) and the metadata.
    Format version 1 wrote the shape of a 0-d tensor as [1] (numpy's ascontiguousarray); 2 as []."""
    legacy = metadata.get("format_version") == "1"
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name]) if legacy else np.asarray(tensors[name], order="C")
        digest.update(f"{name}\n{array.dtype.str}\n{list(array.shape)}\n".encode())
        digest.update(array.tobytes())
    digest.update(_canonical(metadata))
    return digest.hexdigest()


# --------------------------------------------------------------------------- writing


def _state_tensors(model: nn.Module, frozen: list[str] = ()) -> dict[str, np.ndarray]:
    """Everything in the state dict a seed cannot regenerate: not masked weights, not scores, not ``frozen``."""
    skip = {f"{name}.{p}" if name else p for name, _ in masked_layers(model) for p in ("weight", "scores")}
    skip.update(frozen)
    return {STATE + key: value.detach().cpu().contiguous().numpy()
            for key, value in model.state_dict().items() if key not in skip}


def _masked_records(model: nn.Module, recipe: Recipe) -> tuple[list[LayerRecord], np.ndarray]:
    """Layer records and the concatenated flat masks; each weight is checked against a fresh regeneration."""
    records, masks = [], []
    for name, layer in masked_layers(model):
        weight = rng.generate_weight(recipe.seed, name, layer.weight.shape, recipe.model.init,
                                     init_density(recipe.search))
        if not torch.equal(layer.weight.detach().cpu(), weight):
            raise ArtifactError(f"layer {name!r} does not hold the seed's random weights, so a seed and a mask cannot "
                                f"describe it; export models built by popcli from their recipe")
        mask = layer.mask().detach().cpu().numpy().reshape(-1)
        records.append(LayerRecord(name, tuple(layer.weight.shape), int(np.count_nonzero(mask)),
                                   rng.weight_sha256(weight)))
        masks.append(mask)
    return records, np.concatenate(masks) if masks else np.zeros(0, dtype=np.bool_)


def check_output(path: Path, force: bool, option: str) -> None:
    """ArtifactError unless ``path`` can be written: its folder exists, and it does not (or ``force``).
    ``option`` names the command-line option that chose it, for the message. The final write is
    exclusive without ``force`` (checkpoint.write_atomic), so a writer that appears meanwhile still loses."""
    try:
        is_dir, exists, folder_ok = path.is_dir(), path.exists(), path.parent.is_dir()
    except OSError as err:  # a name too long for the filesystem, a symlink loop in the folders
        raise storage_error(path, err) from None
    if is_dir:
        raise OutputExists(f"{str(path)!r} is a folder; choose a file name for {option}")
    if exists and not force:
        raise OutputExists(f"{str(path)!r} already exists; pass --force to overwrite it or choose another {option} path")
    if not folder_ok:
        raise OutputExists(f"folder {str(path.parent)!r} does not exist; create it or choose another {option} path")


def save(model: nn.Module, path: str | Path, *, recipe: Recipe | None = None, data_info: dict[str, Any] | None = None,
         metrics: dict[str, Any] | None = None, codec: str = "auto", force: bool = False,
         checkpoint_bytes: int | None = None) -> Artifact:
    """Write ``model`` (built by popcli from ``recipe``) as an artifact at ``path``, atomically.

    ``data_info`` = {"shape": [C, H, W], "num_classes": K}; ``codec``: auto, packbits or rans.
    Without them, the model's own description (``popcli.create_model``/``subnetify``) is used;
    either way the recipe must build the model's layers (``library.description``).
    An existing file is kept unless ``force``. Returns the artifact as written (read back).
    """
    from .library import description
    from .models import refresh_global_masks

    try:
        recipe, data_info = description(model, recipe, data_info)
    except PopcliError as err:
        raise ArtifactError(str(err)) from None
    path = Path(path)
    check_output(path, force, "-o")
    model = model.eval()
    refresh_global_masks(model)
    records, bits = _masked_records(model, recipe)
    chosen, data = codecs.encode_best(bits, [r.numel for r in records], codec)
    frozen = frozen_records(model, recipe)  # regenerated from the seed at load: not stored
    state = _state_tensors(model, [r["name"] for r in frozen])
    tensors = {MASKS: data, **state} if records else state
    method_tensors, method_meta = method_store.encode(model, recipe.search.method, codec)  # biprop, signed supermask
    tensors.update(method_tensors)
    metadata = {
        "format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
        "generator": rng.GENERATOR_NAME, "generator_version": str(rng.GENERATOR_VERSION),
        "seed": str(recipe.seed), "arch": recipe.model.arch, "init": recipe.model.init,
        "method": recipe.search.method, "density": repr(recipe.search.density),
        "init_density": repr(init_density(recipe.search)), "mask_codec": chosen,
        "data": json.dumps({"shape": list(data_info["shape"]), "num_classes": int(data_info["num_classes"])},
                           separators=(",", ":")),
        "layers": json.dumps([r.to_json() for r in records], separators=(",", ":")),
        "recipe": json.dumps({**recipe.to_dict(), "seed": str(recipe.seed)}, separators=(",", ":")),  # exact in JS
        "metrics": _metrics_json(metrics or {}),
        "popcli_version": __version__, "torch_version": torch.__version__.split("+")[0], **method_meta,
    }
    if checkpoint_bytes is not None:
        metadata["checkpoint_bytes"] = str(checkpoint_bytes)
    source = model_source_record(recipe.model.arch)  # a user's model: where its code lives (models.external)
    if source is not None:
        metadata["model_source"] = json.dumps(source, separators=(",", ":"))
    if frozen:
        metadata["frozen"] = json.dumps(frozen, separators=(",", ":"))
    metadata["preprocessing"] = json.dumps(preprocess.data_config(recipe, data_info), separators=(",", ":"))
    metadata["content_sha256"] = content_sha256(metadata, tensors)
    from safetensors.numpy import save as safetensors_bytes

    write_atomic(path, safetensors_bytes(tensors, metadata=metadata), exclusive=not force)
    return read(path)


def _metrics_json(metrics: dict[str, Any]) -> str:
    """Strict JSON (no NaN/Infinity: a diverged loss is null); values JSON cannot hold become strings."""
    def finite(value: Any) -> Any:
        return None if isinstance(value, float) and not np.isfinite(value) else value
    return json.dumps({str(k): finite(v) for k, v in metrics.items()}, separators=(",", ":"), default=str,
                      allow_nan=False)


# --------------------------------------------------------------------------- reading


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts like safetensors (an artifact, or an error saying why not)."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(9)[8:9] == b"{"  # 8 bytes of header length, then the JSON header


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header JSON of ``path`` and the file size, with popcli's own checks."""
    if not path.is_file():
        raise ArtifactError(f"{str(path)!r} not found" if not path.exists() else f"{str(path)!r} is not a file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ArtifactError(f"{path}: {size} bytes is too short for a safetensors file (truncated?)")
        length = int.from_bytes(head, "little")
        if length > min(_MAX_HEADER, size - 8):
            from .sniff import not_an_artifact

            foreign = not_an_artifact(path)
            if foreign:
                raise ArtifactError(foreign)
            raise ArtifactError(f"{path}: not a safetensors file, or truncated (header length {length} does not fit "
                                f"in {size} bytes); re-export it")
        raw = f.read(length)
    try:
        header = strict_json(raw)  # duplicate keys would read differently here and in safetensors
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ArtifactError(f"{path}: the safetensors header is not valid JSON (corrupt file); re-export it") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: the safetensors header is not a JSON object (corrupt file); re-export it")
    return header, size


def _check_versions(path: Path, meta: dict[str, str]) -> None:
    if meta.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path}: a safetensors file but not a popcli artifact (no format={FORMAT_NAME} in "
                            f"its metadata); popcli loads files written by `popcli export`")
    for key, name, supported in (("format_version", FORMAT_NAME, max(READABLE_VERSIONS)),
                                 ("generator_version", rng.GENERATOR_NAME, rng.GENERATOR_VERSION)):
        text = meta.get(key, "")
        if not (text.isascii() and text.isdigit() and len(text) <= 9 and text == str(int(text))):  # canonical
            raise ArtifactError(f"{path}: {key} {text[:40]!r} is not a number (corrupt metadata)")
        version = int(text)
        if version > supported:
            raise ArtifactError(f"{path}: {name} version {version} is newer than this popcli's ({supported}); "
                                f"upgrade popcli (pip install -U popcli)")
        if version < 1:
            raise ArtifactError(f"{path}: {key} {version} is not a valid version (corrupt metadata)")
    if meta.get("generator") != rng.GENERATOR_NAME:
        raise ArtifactError(f"{path}: weight generator {meta.get('generator')!r} is unknown to this popcli "
                            f"(it has {rng.GENERATOR_NAME}); upgrade popcli")


def read(path: str | Path) -> Artifact:
    """Open and validate an artifact: versions, content checksum, every metadata entry
    (``artifact_schema``), the layer records against the architecture built on the meta device.
    Nothing is allocated from what the metadata claims."""
    path = Path(path)
    header, size = _header(path)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ArtifactError(f"{path}: a safetensors file but not a popcli artifact (no string __metadata__)")
    _check_versions(path, meta)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise ArtifactError(f"{path}: the tensor data is unreadable ({str(err).splitlines()[0][:120]}); the file is "
                            f"truncated or corrupt, re-export it") from None
    if content_sha256(meta, tensors) != meta.get("content_sha256"):
        raise ArtifactError(f"{path}: content checksum mismatch: the file was modified or corrupted after export; "
                            f"re-export it")
    header = artifact_schema.parse(path, meta, int(meta["format_version"]))
    artifact_schema.check_tensors(path, tensors)
    artifact_extras.check(path, meta, header.recipe.search.method, header.data_info, header.layers)
    art = Artifact(path, meta, header.recipe, header.data_info, header.layers, tensors, size)
    model = skeleton(art)
    _check_structure(model, art)  # before anything the layer records size is allocated
    _check_state(model, art)  # (a multi-mask file's first mask: the others' tensors are under "mask.")
    return art


def _json(path: Path, meta: dict[str, str], key: str) -> Any:
    try:
        return strict_json(meta[key])
    except KeyError:
        raise ArtifactError(f"{path}: metadata has no {key!r} (corrupt or incomplete artifact)") from None
    except (ValueError, RecursionError):
        raise ArtifactError(f"{path}: metadata {key!r} is not valid JSON (corrupt artifact)") from None


# --------------------------------------------------------------------------- reconstruction


def _data_info(art: Artifact) -> tuple[int, int, int]:
    """(in_channels, image_size (H, or (H, W) when not square), num_classes) from the metadata, checked."""
    try:
        (channels, height, width), classes = (int(d) for d in art.data_info["shape"]), int(art.data_info["num_classes"])
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"{art.path}: metadata 'data' is malformed (corrupt artifact)") from None
    if min(channels, height, width, classes) < 1:
        raise ArtifactError(f"{art.path}: metadata 'data' has a non-positive size (corrupt artifact)")
    return channels, (height if height == width else (height, width)), classes  # a builder's image_size


def masks(art: Artifact) -> list[np.ndarray]:
    """The decoded bool masks [numel] of the masked layers, kept counts checked."""
    if not art.layers:
        return []
    data = art.tensors.get(MASKS)
    if data is None or data.dtype != np.uint8 or data.ndim != 1:
        found = "no" if data is None else f"a {data.dtype} {list(data.shape)}"
        raise ArtifactError(f"{art.path}: {found} {MASKS!r} tensor, expected uint8 [bytes] (corrupt artifact)")
    sizes = [r.numel for r in art.layers]
    try:
        bits, ones = codecs.decode(data, sizes, [r.kept for r in art.layers], art.codec)
    except codecs.CodecError as err:
        raise ArtifactError(f"{art.path}: masks: {err}") from None
    for record, count in zip(art.layers, ones):
        if count != record.kept:
            raise ArtifactError(f"{art.path}: mask of layer {record.name!r} keeps {count} weights, the metadata says "
                                f"{record.kept} (corrupt artifact)")
    return np.split(bits, np.cumsum(sizes)[:-1])


def regenerate(art: Artifact, record: LayerRecord, threads: int | None = None) -> torch.Tensor:
    """The layer's random weight from the seed, verified against the stored SHA-256."""
    weight = rng.generate_weight(art.recipe.seed, record.name, record.shape, art.recipe.model.init,
                                 init_density(art.recipe.search), threads=threads)
    if rng.weight_sha256(weight) != record.sha256:
        raise ArtifactError(f"{art.path}: layer {record.name!r}: the weights regenerated from the seed do not match "
                            f"the stored checksum; this machine's generator differs from the one that wrote the file, "
                            f"please report it (torch {torch.__version__}, numpy {np.__version__})")
    return weight


def skeleton(art: Artifact) -> nn.Module:
    """The artifact's architecture on the meta device: structure only, nothing allocated."""
    channels, size, classes = _data_info(art)
    try:  # a user's model: its package must be importable here (one line naming it otherwise)
        require_source(art.recipe.model.arch, _json(art.path, art.metadata, "model_source")
                       if "model_source" in art.metadata else None)
    except PopcliError as err:
        raise ArtifactError(f"{art.path}: {err}") from None
    try:
        with torch.device("meta"):  # every tensor is filled later from the seed and the file
            return build_architecture(art.recipe.model, art.recipe.search, in_channels=channels, image_size=size,
                                      num_classes=classes)
    except PopcliError as err:  # already one line that names the fix
        raise ArtifactError(f"{art.path}: cannot build its model: {err}") from None
    except (ValueError, TypeError, RuntimeError, OverflowError, ZeroDivisionError) as err:
        raise ArtifactError(f"{art.path}: cannot build its model: {str(err).splitlines()[0][:160]}") from None


def _check_structure(model: nn.Module, art: Artifact) -> list[nn.Module]:
    """The model's subnet layers, checked to be the file's (names and shapes, in order)."""
    layers = masked_layers(model)
    found = [(name, tuple(layer.weight.shape)) for name, layer in layers]
    if found != [(r.name, r.shape) for r in art.layers]:
        raise ArtifactError(f"{art.path}: the masked layers of {art.recipe.model.arch!r} built by this popcli differ "
                            f"from the file's ({len(found)} vs {len(art.layers)} layers); was it written by another "
                            f"version of the architecture?")
    extra = {k for k in art.tensors if not k.startswith(STATE)} - ({MASKS} if art.layers else set())
    extra -= set(method_store.method_tensors())  # checked by method_store.restore
    if art.metadata.get("format_version") == str(MULTI_MASK_VERSION):  # the other masks' own: popcli.multimask
        extra = {k for k in extra if not k.startswith("mask.")}
    if extra:
        raise ArtifactError(f"{art.path}: unexpected tensor {sorted(extra)[0]!r} (corrupt artifact)")
    return [layer for _, layer in layers]


def _start(art: Artifact, pool: ThreadPoolExecutor) -> tuple[Future, list[Future]]:
    """Submit the mask decoding and each layer's regeneration + checksum (largest layers first).

    The C kernels, numpy and hashlib release the GIL, so the two workers run in parallel.
    Returns (future of the bool masks, futures of the verified weights in layer order).
    """
    decoded = pool.submit(masks, art)
    weights: dict[int, Future] = {}
    for i in sorted(range(len(art.layers)), key=lambda i: -art.layers[i].numel):
        weights[i] = pool.submit(regenerate, art, art.layers[i], 1)
    return decoded, [weights[i] for i in range(len(art.layers))]


def verify(art: Artifact) -> list[str]:
    """Decode every mask and regenerate every weight, as ``load`` does; the problems found."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        decoded, weights = _start(art, pool)
        problems = []
        for future in [decoded, *weights]:
            try:
                future.result()
            except ArtifactError as err:
                problems.append(str(err))
    return problems


def _build_and_fill(art: Artifact, pool: ThreadPoolExecutor) -> nn.Module:
    """The meta-built model with weights (seed) and masks (file) in its subnet layers; the
    workers decode and regenerate while this thread builds the structure."""
    model = skeleton(art)
    layers = _check_structure(model, art)
    decoded, weights = _start(art, pool)
    for layer, record, mask, weight in zip(layers, art.layers, decoded.result(), weights):
        layer.weight = nn.Parameter(weight.result(), requires_grad=False)
        layer.fix_mask(torch.from_numpy(mask).view(record.shape), record.kept)  # the file stores no scores
    method_store.restore(art.path, model, art.recipe.search.method, art.tensors, art.metadata)
    return model


def _fill_state(model: nn.Module, art: Artifact) -> None:
    """Batch-norm statistics and trained dense weights from the file; keys must match exactly."""
    stored = _check_state(model, art)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in stored.items()}, strict=False, assign=True)


def _check_state(model: nn.Module, art: Artifact) -> dict[str, np.ndarray]:
    """The file's ``state.`` tensors {model key: array}, checked: exactly the model's keys, shapes, dtypes."""
    skip = {f"{name}.{p}" if name else p for name, _ in masked_layers(model) for p in ("weight", "scores")}
    skip.update(fill_frozen(model, art))  # frozen biases / parameters: regenerated from the seed, checked
    wanted = {k: v for k, v in model.state_dict(keep_vars=True).items() if k not in skip}
    stored = {k[len(STATE):]: v for k, v in art.tensors.items() if k.startswith(STATE)}
    for key in sorted(set(wanted) ^ set(stored)):
        side = "missing from the file" if key in wanted else "unexpected in the file"
        raise ArtifactError(f"{art.path}: tensor {key!r} is {side} for {art.recipe.model.arch!r} (corrupt artifact, or "
                            f"written by another version of the architecture)")
    for key, value in stored.items():
        if tuple(value.shape) != tuple(wanted[key].shape) or torch.from_numpy(value.reshape(-1)[:0]).dtype != wanted[key].dtype:
            raise ArtifactError(f"{art.path}: tensor {key!r} is {value.dtype} {list(value.shape)}, the model needs "
                                f"{wanted[key].dtype} {list(wanted[key].shape)} (corrupt artifact)")
    return stored


def load(path: str | Path, device: str | torch.device = "cpu", mask: str | None = None, *, mode: str = "infer",
         fold_bn: bool = True) -> nn.Module:
    """The subnetwork of an artifact as an eval-mode model on ``device``, every checksum verified;
    ``mask``: which named mask of a multi-mask file (None: its first, popcli.multimask).

    ``mode="infer"`` (the default, for deployment): masked layers become plain frozen
    Conv2d/Linear holding ``w * mask`` and, with ``fold_bn``, batch norms are folded into them
    (``popcli.bake``'s fold), so a forward costs what the baked dense model's does; logits equal
    the searched model's bit for bit with ``fold_bn=False`` (or no batch norm), to float32
    rounding otherwise. ``mode="search"``: subnet layers whose trainable scores select exactly
    the stored mask (``layer.mask()``; see ``loaded.finish_load``), to continue a search or
    inspect masks; logits bit for bit. (Bit for bit: on the same device and torch version.)
    """
    if mode not in ("infer", "search"):
        raise ArtifactError(f"mode {mode!r}: use mode='infer' (plain layers, deployment) or mode='search' (subnet "
                            f"layers with scores)")
    from .multimask import select

    art = select(read(path), mask)
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        model = _build_and_fill(art, pool)
    finally:
        pool.shutdown(cancel_futures=True)
    _fill_state(model, art)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise ArtifactError(f"{art.path}: nothing in the file fills {left[0]!r} (corrupt artifact)")
    return finish_load(model, art, mode, fold_bn).to(device).eval()
