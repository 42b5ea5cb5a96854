"""Batch samplers. ``registry.py`` maps ``sampler.name`` to its class, ``config.py`` holds each
sampler's knobs, ``basic.py`` the samplers. (Kept import-light: the params schema imports
``config.py`` without pulling in the implementations.)"""
