"""SIDA: detection, localization and explanation (CVPR 2025), as the official code builds it;
and LISA (CVPR 2024), the same network without the detection head (``lisa``, a localizer).

``PLUGINS`` maps model names to lazy ``module:attr`` targets.
"""

PLUGINS: dict[str, str] = {
    "sida": "sida.detector:SidaDetector",
    "lisa": "sida.lisa:LisaLocalizer",
}
