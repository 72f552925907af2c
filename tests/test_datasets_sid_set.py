"""sid_set (official folders): counts, labels, masks, per-sample errors, policies, sharding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.errors import UserError
from bench.plugins import create_dataset
from tests.data_fixtures import EXPECTED_ERRORS, H, W, write_sid_set_tree


@pytest.fixture()
def tree(tmp_path):
    return write_sid_set_tree(tmp_path / "sid")


def by_id(ds, **kw):
    return {s.id: s for s in ds.iter_samples(**kw)}


def test_counts_labels_and_errors(tree):
    ds = create_dataset("sid_set", root=tree, split="test")
    assert len(ds) == 14
    samples = by_id(ds)
    assert len(samples) == 14
    labels = {sid: s.label for sid, s in samples.items()}
    assert sorted(labels.values()) == [0] * 7 + [1] * 3 + [2] * 4
    assert {sid for sid, s in samples.items() if s.error} == EXPECTED_ERRORS
    assert "truncated" in samples["real/r_trunc"].error
    assert "zero-byte" in samples["real/r_zero"].error
    assert "colour channels" in samples["tampered/t_colourmask"].error
    for s in samples.values():
        assert s.meta["source"] == s.id.split("/")[0]
        assert Path(s.meta["path"]).relative_to(tree / "test").with_suffix("").as_posix() == s.id
        if not s.error:
            assert s.image.dtype == np.uint8 and s.meta["original_size"] == s.image.shape[:2]
    assert samples["real/r_exif"].image.shape == (W, H, 3)
    assert samples["real/r_16bit"].image[0, 0].tolist() == [100, 100, 100]
    problems = ds.describe()["problems"]
    assert problems["decode_errors"] == 3 and problems["mask_errors"] == 1


def test_masks_shapes_and_missing_mask_policies(tree):
    samples = by_id(create_dataset("sid_set", root=tree))
    ok = samples["tampered/t_ok"]
    assert ok.mask.shape == (H, W) and ok.mask.dtype == np.bool_ and ok.mask.sum() == (H // 4) * (W // 4 + 1)
    assert ok.meta["explanation"] == "The box was pasted."
    small = samples["tampered/t_small"]
    assert small.mask.shape == (H, W) and "masks_resized" in small.meta["problems"]
    assert samples["tampered/t_nomask"].mask is None and samples["tampered/t_nomask"].error is None
    assert samples["real/r_ok"].mask is None

    keep = create_dataset("sid_set", root=tree)
    list(keep)
    info = keep.describe()
    assert info["problems"]["masks_missing"] == 1 and info["problems"]["masks_resized"] == 1
    assert info["listing"]["tampered_without_mask"] == 1

    err = by_id(create_dataset("sid_set", root=tree, missing_mask="error", size_mismatch="error"))
    assert "no mask" in err["tampered/t_nomask"].error
    assert "differs from image size" in err["tampered/t_small"].error

    official = create_dataset("sid_set", root=tree, missing_mask="official")
    assert len(official) == 13 and "tampered/t_nomask" not in by_id(official)
    assert official.describe()["listing"]["tampered_without_mask_dropped"] == 1


def test_policies_are_described(tree):
    ds = create_dataset("sid_set", root=tree, binarize="official", size_mismatch="official", max_pixels=10**6)
    info = ds.describe()
    assert info["policies"]["mask"]["binarize"] == "official"
    assert info["policies"]["mask"]["size_mismatch"] == "official"
    assert info["policies"]["max_pixels"] == 10**6 and info["label_space"] == "ternary"


def test_shards_partition_by_position_and_skip_ids(tree):
    ds = create_dataset("sid_set", root=tree)
    order = [s.id for s in ds.iter_samples()]
    assert order == [s.id for s in create_dataset("sid_set", root=tree).iter_samples()]
    assert len(set(order)) == len(order)
    shards = [[s.id for s in ds.iter_samples(k, 3)] for k in range(3)]
    for k in range(3):
        assert shards[k] == order[k::3]
    skip = {"real/r_trunc", "tampered/t_ok"}
    fresh = create_dataset("sid_set", root=tree)
    kept = [s.id for s in fresh.iter_samples(skip_ids=skip)]
    assert kept == [i for i in order if i not in skip]
    assert fresh.describe()["problems"]["decode_errors"] == 2  # the skipped truncated file was never decoded
    with pytest.raises(UserError, match="shard"):
        next(ds.iter_samples(3, 3))


def test_duplicate_stems_keep_unique_ids(tree):
    (tree / "test" / "real" / "r_ok.png").write_bytes((tree / "test" / "full_synthetic" / "f_ok.png").read_bytes())
    ids = [s.id for s in create_dataset("sid_set", root=tree).iter_samples()]
    assert len(ids) == len(set(ids)) and {"real/r_ok.jpg", "real/r_ok.png"} <= set(ids)


def test_user_errors(tmp_path, tree):
    with pytest.raises(UserError, match="does not exist"):
        len(create_dataset("sid_set", root=tmp_path / "nope"))
    with pytest.raises(UserError, match="split 'train'"):
        len(create_dataset("sid_set", root=tree, split="train"))
    with pytest.raises(UserError, match="Unknown dataset option"):
        create_dataset("sid_set", root=tree, binarise="official")
    with pytest.raises(UserError, match="binarize"):
        create_dataset("sid_set", root=tree, binarize="gt128")
    with pytest.raises(UserError, match="needs a root"):
        create_dataset("sid_set")
