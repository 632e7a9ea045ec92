"""`python -m dcgan.export`, the same as `dcgan-export`."""

from dcgan.export.cli import run

run()
