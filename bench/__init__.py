"""SIDA-Bench: a harness for detecting, localizing and explaining deepfakes in social-media images."""

__version__ = "0.1.0"
