"""Luminate: see what neural networks see."""

__version__ = "0.1.0"
