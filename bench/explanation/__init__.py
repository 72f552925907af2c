"""Explanation scoring: the SIDA-description slot parser, the position vocabulary, reference-based
text scores and the sentence embedder behind CSS. The streaming metric plugin that composes them
is :class:`bench.metrics.explanation.Explanation`; see docs/explanations.md.
"""
