"""Metric plugins. ``PLUGINS`` maps registry names to lazy ``module:attr`` targets."""

PLUGINS: dict[str, str] = {
    "ternary_detection": "bench.metrics.detection:TernaryDetection",
    "binary_detection": "bench.metrics.detection:BinaryDetection",
    "localization": "bench.metrics.localization:Localization",
    "sida_legacy": "bench.metrics.legacy:SidaLegacy",
    "explanation": "bench.metrics.explanation:Explanation",
}
