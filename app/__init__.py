"""The ``vla`` command line (``app.cli``) and its commands (``app.commands``): the top layer.

Nothing in ``sim``, ``tokenizers_mm``, ``vla``, ``methods``, ``offline_rl`` or ``benchmarks``
imports it (``tests/test_layers.py``)."""
