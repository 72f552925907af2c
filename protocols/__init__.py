"""Bundled protocol files (YAML), installed as package data."""
