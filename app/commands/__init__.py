"""Implementations of the ``vla`` subcommands (the parser lives in ``app.cli``)."""
