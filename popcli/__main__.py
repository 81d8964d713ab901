"""``python -m popcli`` (also what torchrun launches)."""

from .cli import main

main()
