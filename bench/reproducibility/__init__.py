"""Reproducing the demo's numbers on another machine: a tolerance derived from the sample size
(:mod:`.tolerance`) and the demo's qualitative claims checked with stated margins (:mod:`.claims`).

Exact equality holds only for reruns on the same machine: the tiny models train for seconds, so a
last-bit difference in a CPU kernel (AVX-512 vs AVX2, another oneDNN or BLAS build) flips some
predictions and moves a percentage computed on a few dozen images by whole points.
"""
