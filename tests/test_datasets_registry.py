"""Every built-in dataset plugin loads, carries its registry name, and describes itself as JSON."""

from __future__ import annotations

import json

import pytest

import bench.sidmini
from bench.datasets import PLUGINS
from bench.datasets.base import Dataset
from bench.plugins import DATASETS, create_dataset
from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return build_sid_mini(tmp_path_factory.mktemp("reg") / "mini", per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_loads_with_its_name(name):
    cls = DATASETS.get(name)
    assert issubclass(cls, Dataset) and cls.name == name


@pytest.mark.parametrize("name, sub", [("sid_mini", "sid_set"), ("sid_set", "sid_set"),
                                       ("sid_set_parquet", "parquet"), ("dmimage_mini", ""), ("dmimage", "dmimage")])
def test_describe_is_json_and_len_matches_iteration(mini, name, sub):
    ds = create_dataset(name, root=mini / sub if sub else mini, split="test")
    samples = list(ds)
    assert len(samples) == len(ds) > 0
    info = json.loads(json.dumps(ds.describe()))
    assert info["name"] == name and info["problems"]["decode_errors"] == 0
    for s in samples:
        assert {"source", "path", "original_size"} <= set(s.meta)
        if ds.label_space.value == "binary":
            assert "group" in s.meta


def test_mini_datasets_default_to_the_cached_build(mini, monkeypatch):
    from bench.datasets import mini as mini_module

    calls = []
    monkeypatch.setattr(bench.sidmini, "ensure_sid_mini", lambda: calls.append(1) or mini)
    mini_module._default_build.cache_clear()
    try:
        assert len(create_dataset("sid_mini", split="validation")) == 3 * SMALL_PER_CLASS["validation"]
        assert len(create_dataset("dmimage_mini")) == 3 * SMALL_PER_CLASS["test"]
        assert len(calls) == 1  # the cached build is checked (every file hashed) once per process
    finally:
        mini_module._default_build.cache_clear()
