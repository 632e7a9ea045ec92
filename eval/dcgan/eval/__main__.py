"""`python -m dcgan.eval`: the dcgan-eval command."""

from dcgan.eval.cli import main

main()
