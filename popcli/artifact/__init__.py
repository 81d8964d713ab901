"""The artifact: a found subnetwork as one safetensors file, and its exact reconstruction.

The file holds the masks of all masked layers as one coded stream (``masks``, see ``codecs``),
the tensors a seed cannot regenerate (``state.<key>``: batch-norm statistics, trained weights of
dense layers) and string metadata describing everything else; the random weights themselves are
regenerated from the seed and checked against per-layer SHA-256 digests. docs/FORMAT.md is the
byte format. One pipeline reads it, with no back-and-forth:

    container.read_raw   open: header JSON, versions, tensors, content checksum
    reader.read          parse every entry once into a typed Header (schema, extras, multimask:
                         every mask's entries as strictly as the first's); no model is built
    structure            the model to check and fill: the recipe's (trust rule) or the caller's
    verification.verify  every mask: its view (multimask.select), tensors, masks decoded and
                         weights regenerated (masks, two threads), method state, structure
    rebuild.load         fill the model with one mask's weights, masks, signs, stored tensors
    finish.finish_load   infer mode (plain layers, batch norm folded) or search mode

``writer.save`` writes one; ``report.inspect`` describes one (the same verification, never
importing a model's code); ``preprocess`` is what travels with it for deployment; ``tasks``
picks the mask of a multi-mask file whose task a batch is. Other packages take the ``Artifact``
and its ``Header``, never the raw
metadata strings. Imports ``storage``, ``codecs``, ``rng``, ``nn``, ``methods``, ``recipe``,
``models`` and ``data.facts``. Every problem with a file is an ``ArtifactError`` naming it;
nothing here prints.
"""

from .container import (FORMAT_NAME, FORMAT_VERSION, MASKS, MULTI_MASK_VERSION, STATE, Artifact, Header, content_sha256,
                        is_safetensors)
from .verification import problems as verify
from .multimask import select
from .reader import read
from .rebuild import load
from .report import inspect
from .schema import LayerRecord
from .writer import save

__all__ = ["Artifact", "FORMAT_NAME", "FORMAT_VERSION", "Header", "LayerRecord", "MASKS", "MULTI_MASK_VERSION",
           "STATE", "content_sha256", "inspect", "is_safetensors", "load", "read", "save", "select", "verify"]
