"""Losses of the method zoo. ``registry.py`` maps ``loss.name`` to its class, ``config.py`` holds
each loss's knobs and declares what it consumes and needs, ``base.py`` the interface; the losses
live in one module per family (ranking, pair-set, classification, proxy).

Kept import-light: the params schema imports ``config.py`` without pulling in torch."""
