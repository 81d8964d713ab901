"""The seeded artifact fuzzer (tests/artifact_fuzz.py): >= 300 hostile files per run, never a
traceback, never a model other than the one the file's metadata describes (for every mask of a
multi-mask file), inspect and load never disagreeing, no module a header names ever imported;
and `popcli inspect` on a sample of them through the CLI: one line, a non-zero exit, no traceback."""

import os
import random
from collections import Counter

import pytest
from typer.testing import CliRunner

import popcli
from popcli.cli import get_app
from popcli.errors import PopcliError

from artifact_fuzz import make_bases, mutants, run

app = get_app()

PER_BASE = 80  # x 7 base artifacts (fc + BN / rans, conv2 + dense last / packbits, dense fc, signed supermask, biprop,
# subspace, a two-mask fc + BN file, and fc searched with IteRand: its draws entry)
SEED = int(os.environ.get("POPCLI_FUZZ_SEED", "0"))  # another seed explores other mutations


def test_fuzzed_artifacts_fail_cleanly_or_load_the_described_model(tmp_path):
    counts, results = run(make_bases(tmp_path), PER_BASE, SEED, tmp_path)
    bad = [f"{verdict} {kind} {path.name}: {detail}" for kind, verdict, detail, path in results
           if verdict in ("wrong", "traceback")]
    print(f"\nfuzzed {len(results)} (seed {SEED}): " + ", ".join(f"{k} {counts[k]}" for k in ("error", "ok", "wrong",
                                                                                             "traceback")))
    assert len(results) >= 300
    assert not bad, "\n".join(bad[:20])
    kinds = Counter(kind for kind, *_ in results)
    assert min(kinds[k] for k in ("flip", "truncate", "json", "meta-string", "tensor", "issue-json", "builder",
                                  "mask-json", "mask-tensor", "mask-names", "iterand")) > 0
    assert all(verdict == "error" for kind, verdict, *_ in results if kind in ("builder", "mask-tensor", "mask-names",
                                                                               "iterand"))
    assert counts["ok"] > 0 and counts["error"] > 0  # harmless edits load; the others are refused


def test_cli_inspect_on_fuzzed_artifacts(tmp_path):
    """Through the CLI: refused files give one `error:` line and a non-zero exit; no traceback ever."""
    bases = make_bases(tmp_path)
    rnd = random.Random(SEED)
    sample = [m for base_index, base in enumerate(bases)
              for m in rnd.sample(mutants(base, rnd, 20, tmp_path, f"c{base_index}"), 6)]
    runner = CliRunner()
    refused = 0
    for kind, path in sample:
        result = runner.invoke(app, ["inspect", str(path)])
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
            f"{kind} {path.name}: {result.exception!r}"
        try:
            popcli.artifact.read(path)
        except PopcliError:
            refused += 1
            lines = result.stderr.strip().splitlines()
            assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (kind, result.stderr)
        else:
            assert result.exit_code in (0, 1) and "Traceback" not in result.stderr
    assert refused >= len(sample) // 2
    # (tests/test_artifact_schema.py runs `python -m popcli inspect` as a real process too)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_more_fuzzing_seeds(tmp_path, seed):
    counts, results = run(make_bases(tmp_path), PER_BASE, seed, tmp_path)
    assert counts["wrong"] == 0 and counts["traceback"] == 0, [r[:3] for r in results if r[1] in ("wrong", "traceback")]
