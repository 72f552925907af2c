"""The four plugin registries and the factories built on them.

Built-in plugins are registered lazily from each package's ``PLUGINS`` map; third-party
packages add plugins through the entry-point groups ``sida_bench.models``,
``sida_bench.datasets``, ``sida_bench.perturbations`` and ``sida_bench.metrics``.
"""

from __future__ import annotations

from typing import Any

from bench.datasets.base import Dataset
from bench.metrics.base import Metric
from bench.model import Detector, parse_model_name
from bench.perturbations.base import Perturbation
from bench.registry import Registry

MODELS: Registry[Detector] = Registry("model", Detector, "sida_bench.models")
DATASETS: Registry[Dataset] = Registry("dataset", Dataset, "sida_bench.datasets")
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation", Perturbation, "sida_bench.perturbations")
METRICS: Registry[Metric] = Registry("metric", Metric, "sida_bench.metrics")

REGISTRIES: dict[str, Registry[Any]] = {
    "models": MODELS,
    "datasets": DATASETS,
    "perturbations": PERTURBATIONS,
    "metrics": METRICS,
}


def _register_builtins() -> None:
    import baselines
    import bench.datasets
    import bench.metrics
    import bench.perturbations
    import sida

    for registry, plugins in (
        (MODELS, {**baselines.PLUGINS, **sida.PLUGINS}),
        (DATASETS, bench.datasets.PLUGINS),
        (PERTURBATIONS, bench.perturbations.PLUGINS),
        (METRICS, bench.metrics.PLUGINS),
    ):
        for name, target in plugins.items():
            registry.register_lazy(name, target)


_register_builtins()


def create_model(spec: str, **kwargs: Any) -> Detector:
    """Create a model from ``NAME[:CONFIG]`` and keyword arguments (weights, device, ...)."""
    name, config = parse_model_name(spec)
    cls = MODELS.get(name)
    return cls(config, **kwargs)


def create_dataset(name: str, **kwargs: Any) -> Dataset:
    return DATASETS.create(name, **kwargs)


def create_perturbation(name: str, **params: Any) -> Perturbation:
    return PERTURBATIONS.create(name, **params)


def create_metric(name: str, **kwargs: Any) -> Metric:
    return METRICS.create(name, **kwargs)
