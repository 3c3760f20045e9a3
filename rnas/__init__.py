"""RNAS: randomized neural architecture search in a learned embedding."""
__version__ = "0.1.0"
