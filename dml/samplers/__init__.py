"""Batch samplers. ``registry.py`` maps ``sampler.name`` to its class, ``config.py`` holds each
sampler's knobs, ``basic.py`` the label-only samplers, ``embedded.py`` the samplers that choose
batches from the embeddings in ``storage.py``. (Kept import-light: the params schema imports
``config.py`` without pulling in the implementations.)"""
