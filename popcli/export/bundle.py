"""``popcli export --mask NAME=RUN ...``: several search runs over one seed -> one multi-mask
artifact (format version 3, ``artifact.multimask``).

``write(specs, out)`` exports every run to a temporary single-mask artifact (in the system's
temporary folder: the output folder may be read-only, which is then one error at the end), has
``multimask.combine`` check that they share the seed, model, method, dense layers, data shape
and weight checksums and make one file of them, writes it atomically and verifies every mask
of the written file. Nothing here prints.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .. import artifact
from ..artifact import multimask
from ..artifact.structure import skeleton
from ..artifact.verification import verify
from ..artifact.writer import write_sealed
from ..errors import ArtifactError
from ..storage.atomic import check_output
from .run import export_run


def write(specs: list[str], out: str | Path, *, codec: str = "auto", force: bool = False,
          trust_code: bool = False) -> artifact.Artifact:
    """One artifact holding the masks of several runs (``NAME=RUN`` each), verified as written;
    ``trust_code``: the runs' recipes may name a builder outside the trust rule (``models.trust``)."""
    out = Path(out)
    check_output(out, force, "-o")
    pairs = multimask.parse_specs(specs)
    with tempfile.TemporaryDirectory() as tmp:
        arts = []
        for i, (name, run) in enumerate(pairs):
            export_run(run, Path(tmp) / f"{i}.safetensors", codec, False, trust_code)
            arts.append(artifact.read(Path(tmp) / f"{i}.safetensors"))
        metadata, tensors = multimask.combine([name for name, _ in pairs], arts)
    written = write_sealed(out, metadata, tensors, force=force)
    problems = verify(written, skeleton).problems  # the runs' model was built above: its code is trusted
    if problems:
        raise ArtifactError(f"{out}: the written file does not verify: {problems[0]}")
    return written
