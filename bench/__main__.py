"""`python -m bench --devices N`: one benchmark run (flags: `python -m bench --help`)."""

from bench.run import cli

cli()
