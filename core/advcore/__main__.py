"""`python -m advcore`: the same command line as the `advcore` executable."""

from .cli.app import main

main()
