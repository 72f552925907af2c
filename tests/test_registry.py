import importlib.metadata
import sys
import textwrap

import pytest

from bench.registry import Registry, RegistryError, UnknownNameError


class Base:
    pass


class Impl(Base):
    def __init__(self, value: int = 1) -> None:
        self.value = value


def test_decorator_registration_and_create():
    reg: Registry[Base] = Registry("thing", Base)
    reg.register("impl")(Impl)
    assert reg.get("impl") is Impl
    obj = reg.create("impl", value=7)
    assert isinstance(obj, Impl) and obj.value == 7
    assert reg.names() == ["impl"]


def test_duplicate_name_is_refused():
    reg: Registry[Base] = Registry("thing", Base)
    reg.register("impl", Impl)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("impl", Impl)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register_lazy("impl", "somewhere:Impl")


def test_wrong_type_is_refused():
    reg: Registry[Base] = Registry("thing", Base)

    class NotABase:
        pass

    with pytest.raises(RegistryError, match="expected a subclass of"):
        reg.register("bad", NotABase)
    assert "bad" not in reg


def test_lazy_entry_imports_only_when_used(tmp_path, monkeypatch):
    mod = tmp_path / "lazy_plugin_mod.py"
    mod.write_text(textwrap.dedent("""
        from tests.test_registry import Base
        class LazyImpl(Base):
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[Base] = Registry("thing", Base)
    reg.register_lazy("lazy", "lazy_plugin_mod:LazyImpl")
    assert reg.names() == ["lazy"]
    assert "lazy_plugin_mod" not in sys.modules
    cls = reg.get("lazy")
    assert cls.__name__ == "LazyImpl"
    assert "lazy_plugin_mod" in sys.modules


def test_lazy_entry_with_wrong_type_fails_on_load(tmp_path, monkeypatch):
    (tmp_path / "lazy_bad_mod.py").write_text("class NotBase:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[Base] = Registry("thing", Base)
    reg.register_lazy("bad", "lazy_bad_mod:NotBase")
    with pytest.raises(RegistryError, match="expected a subclass"):
        reg.get("bad")


def test_unknown_name_suggests_closest():
    reg: Registry[Base] = Registry("model", Base)
    for name in ("cnnspot", "univfd", "npr"):
        reg.register_lazy(name, f"x:{name}")
    with pytest.raises(UnknownNameError) as info:
        reg.get("cnnsopt")
    msg = str(info.value)
    assert "Unknown model 'cnnsopt'" in msg
    assert "Did you mean 'cnnspot'?" in msg
    assert "Available: cnnspot, npr, univfd" in msg


def test_unknown_name_without_close_match_lists_available():
    reg: Registry[Base] = Registry("model", Base)
    reg.register_lazy("cnnspot", "x:y")
    msg = str(pytest.raises(UnknownNameError, reg.get, "zzzzzz").value)
    assert "Did you mean" not in msg and "Available: cnnspot" in msg


def test_freeze_refuses_registration():
    reg: Registry[Base] = Registry("thing", Base)
    reg.freeze()
    with pytest.raises(RegistryError, match="frozen"):
        reg.register("impl", Impl)


def test_bad_lazy_target_format():
    reg: Registry[Base] = Registry("thing", Base)
    with pytest.raises(RegistryError, match="module:attr"):
        reg.register_lazy("x", "no_colon_here")


def test_entry_points_are_discovered(tmp_path, monkeypatch):
    dist = tmp_path / "fake_plugin_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[test_group.things]\nfrom_ep = ep_plugin_mod:EpImpl\n")
    (tmp_path / "ep_plugin_mod.py").write_text("from tests.test_registry import Base\nclass EpImpl(Base):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    reg: Registry[Base] = Registry("thing", Base, entry_point_group="test_group.things")
    entries = reg.entries()
    assert [e.name for e in entries] == ["from_ep"]
    assert entries[0].source == "entry point fake-plugin-pkg"
    assert "ep_plugin_mod" not in sys.modules
    assert reg.get("from_ep").__name__ == "EpImpl"
    assert importlib.metadata.version("fake-plugin-pkg") == "1.0"
