"""Implementations of the ``vla`` subcommands (the parser lives in ``vla.cli``)."""
