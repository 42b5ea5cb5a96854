"""Batch miners. ``registry.py`` maps ``miner.name`` to its class, ``config.py`` holds each
miner's knobs and declares the tuple shape it produces, ``base.py`` the shared mining steps
(the tuple types are ground floor, ``dml/tuples.py``, shared with the losses).

Kept import-light: the params schema imports ``config.py`` without pulling in torch."""
