"""Perturbation plugins. ``PLUGINS`` maps registry names to lazy ``module:attr`` targets."""

PLUGINS: dict[str, str] = {
    "jpeg": "bench.perturbations.compression:Jpeg",
    "webp": "bench.perturbations.compression:Webp",
    "png": "bench.perturbations.compression:Png",
    "resize": "bench.perturbations.geometric:Resize",
    "crop": "bench.perturbations.geometric:Crop",
    "gaussian_noise": "bench.perturbations.filters:GaussianNoise",
    "gaussian_blur": "bench.perturbations.filters:GaussianBlur",
    "chain": "bench.perturbations.chain:Chain",
}
