"""Driving the CLI in-process (typer's CliRunner) and checking its one-line errors: shared by the CLI tests."""

from typer.testing import CliRunner

from popcli.cli import get_app


def run(*args, env=None):
    """``popcli ARGS...`` in this process; the click Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(get_app(), [str(a) for a in args], env=env, catch_exceptions=False)


def one_line_error(result, code: int, fragment: str) -> None:
    """The command failed with ``code`` and one line on stderr holding ``fragment``, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
