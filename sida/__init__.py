"""SIDA: detection, localization and explanation (CVPR 2025), as the official code builds it.

``PLUGINS`` maps model names to lazy ``module:attr`` targets.
"""

PLUGINS: dict[str, str] = {
    "sida": "sida.detector:SidaDetector",
}
