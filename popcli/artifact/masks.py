"""An artifact's masks decoded and its random weights regenerated, each checked against the file.

``decode(art)`` decodes the coded mask stream into one bool array per masked layer (kept counts
checked); ``regenerate(art, record)`` draws a layer's weight from the seed (``rng``) and checks its
SHA-256. ``verify`` runs both in a thread pool (the C kernels, numpy and hashlib release the
GIL, so they run in parallel). Nothing here builds a model or prints.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import codecs, rng
from ..errors import ArtifactError
from ..models import init_density
from .container import MASKS, Artifact
from .schema import LayerRecord


def decode(art: Artifact) -> list[np.ndarray]:
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
