"""``popcli.save``: a searched model written as an artifact, only what a seed cannot regenerate.

``save(model, path)`` checks that the recipe describes the model (``models.factory.description``),
that every masked weight is the seed's draw, then writes the masks of all masked layers as one
coded stream (``codecs``), the tensors a seed cannot regenerate (``state.<key>``: batch-norm
statistics, trained dense weights), the method's own state (``methods.store``) and the header
entries of docs/FORMAT.md, sealed with ``content_sha256`` and written atomically, never over an
existing file without ``force``. It returns the file read back (``reader.read``). Nothing prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .. import codecs, rng
from ..errors import ArtifactError, PopcliError
from ..methods import iterand, store as method_store
from ..methods import subspace as method_subspace
from ..models import init_density, masked_layers, refresh_global_masks
from ..models.external import source_record
from ..models.factory import description
from ..recipe import Recipe
from ..storage.atomic import check_output, write_atomic
from ..storage.strict_json import COMPACT, compact, dumps
from ..version import __version__
from . import preprocess, redraws
from .container import FORMAT_NAME, FORMAT_VERSION, MASKS, STATE, Artifact, seal
from .frozen import frozen_records
from .reader import read
from .schema import LayerRecord


def _state_tensors(model: nn.Module, frozen: list[str] = ()) -> dict[str, np.ndarray]:
    """Everything in the state dict a seed cannot regenerate: not masked weights, not scores, not ``frozen``."""
    skip = {f"{name}.{p}" if name else p for name, _ in masked_layers(model) for p in ("weight", "scores")}
    skip.update(frozen)
    skip.add(method_subspace.Z_PARAM)  # the subspace method's z: its own entry (methods.store)
    return {STATE + key: value.detach().cpu().contiguous().numpy()
            for key, value in model.state_dict().items() if key not in skip}


def _masked_records(model: nn.Module, recipe: Recipe) -> tuple[list[LayerRecord], list[np.ndarray], list[torch.Tensor]]:
    """Layer records, flat masks and draw-0 weights; each weight is checked against a fresh
    regeneration (with IteRand, of the draw its counter says: ``methods.iterand``)."""
    records, masks, bases = [], [], []
    for name, layer in masked_layers(model):
        weight = rng.generate_weight(recipe.seed, name, layer.weight.shape, recipe.model.init,
                                     init_density(recipe.search))
        draws = iterand.draws_of(layer)
        held = weight if draws is None else rng.redrawn_weight(recipe.seed, name, layer.weight.shape,
                                                                recipe.model.init, init_density(recipe.search), draws)
        if not torch.equal(layer.weight.detach().cpu(), held):
            raise ArtifactError(f"layer {name!r} does not hold the seed's random weights, so a seed and a mask cannot "
                                f"describe it; export models built by popcli from their recipe")
        mask = layer.mask().detach().cpu().numpy().reshape(-1)
        records.append(LayerRecord(name, tuple(layer.weight.shape), int(np.count_nonzero(mask)),
                                   rng.weight_sha256(weight)))
        masks.append(mask)
        bases.append(weight)
    return records, masks, bases


def _metadata(recipe: Recipe, data_info: dict[str, Any], records: list[LayerRecord], codec: str,
              metrics: dict[str, Any]) -> dict[str, str]:
    """The required header entries (docs/FORMAT.md, "Metadata"), strings only."""
    return {
        "format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
        "generator": rng.GENERATOR_NAME, "generator_version": str(rng.GENERATOR_VERSION),
        "seed": str(recipe.seed), "arch": recipe.model.arch, "init": recipe.model.init,
        "method": recipe.search.method, "density": repr(recipe.search.density),
        "init_density": repr(init_density(recipe.search)), "mask_codec": codec,
        "data": compact({"shape": list(data_info["shape"]), "num_classes": int(data_info["num_classes"])}),
        "layers": compact([r.to_json() for r in records]),
        "recipe": compact({**recipe.to_dict(), "seed": str(recipe.seed)}),  # the seed exact in JavaScript too
        # strict JSON (a diverged loss is null); values JSON cannot hold become strings
        "metrics": dumps({str(k): v for k, v in metrics.items()}, separators=COMPACT),
        "popcli_version": __version__, "torch_version": torch.__version__.split("+")[0],
    }


def save(model: nn.Module, path: str | Path, *, recipe: Recipe | None = None, data_info: dict[str, Any] | None = None,
         metrics: dict[str, Any] | None = None, codec: str = "auto", force: bool = False,
         checkpoint_bytes: int | None = None) -> Artifact:
    """Write ``model`` (built by popcli from ``recipe``) as an artifact at ``path``, atomically.

    ``data_info`` = {"shape": [C, H, W], "num_classes": K}; ``codec``: auto, packbits or rans.
    Without them, the model's own description (``popcli.create_model``/``subnetify``) is used;
    either way the recipe must build the model's layers (``models.factory.description``).
    An existing file is kept unless ``force``. Returns the artifact as written (read back).
    """
    try:
        recipe, data_info = description(model, recipe, data_info)
    except PopcliError as err:
        raise ArtifactError(str(err)) from None
    path = Path(path)
    check_output(path, force, "-o")
    model = model.eval()
    refresh_global_masks(model)
    records, masks, bases = _masked_records(model, recipe)
    bits = np.concatenate(masks) if masks else np.zeros(0, dtype=np.bool_)
    chosen, data = codecs.encode_best(bits, [r.numel for r in records], codec)
    frozen = frozen_records(model, recipe)  # regenerated from the seed at load: not stored
    state = _state_tensors(model, [r["name"] for r in frozen])
    tensors = {MASKS: data, **state} if records else state
    method_tensors, method_meta = method_store.encode(model, recipe.search.method, codec)  # biprop, signed supermask
    tensors.update(method_tensors)
    draw_tensors, draw_meta = redraws.encode(masked_layers(model), masks, bases, recipe, init_density(recipe.search),
                                             codec)  # IteRand: which draw each kept weight holds
    tensors.update(draw_tensors)
    metadata = {**_metadata(recipe, data_info, records, chosen, metrics or {}), **method_meta, **draw_meta}
    if checkpoint_bytes is not None:
        metadata["checkpoint_bytes"] = str(checkpoint_bytes)
    source = source_record(recipe.model.arch)  # a user's model: where its code lives (models.external)
    if source is not None:
        metadata["model_source"] = compact(source)
    if frozen:
        metadata["frozen"] = compact(frozen)
    metadata["preprocessing"] = compact(preprocess.data_config(recipe, data_info))
    write_atomic(path, seal(metadata, tensors), exclusive=not force)
    return read(path)


def write_sealed(path: Path, metadata: dict[str, str], tensors: dict[str, np.ndarray], *, force: bool) -> Artifact:
    """Seal and write a file whose entries are made elsewhere (a multi-mask file); read back."""
    write_atomic(path, seal(metadata, tensors), exclusive=not force)
    return read(path)
