"""dmimage, genimage, synthbuster and manifest layouts; DMImage operations.csv processing."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from PIL import Image

from bench.datasets.dmimage import Operation, apply_operations, generator_info, process_image, read_operations
from bench.errors import UserError
from bench.plugins import create_dataset
from tests.data_fixtures import box_mask, grey_mask, png_bytes, rgb, truncated_jpeg


def write(path, data=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(rgb(len(str(path)))) if data is None else data)
    return path


def test_dmimage_labels_groups_and_aliases(tmp_path):
    for rel in ("real_coco_valid/a.png", "real_imagenet_valid/b.png", "progan_lsun/c.png",
                "stylegan3_r_ffhqu_256x256/d.png", "latent-diffusion_text2img_valid/e.png",
                "dalle-mini_valid/f.png", "dalle_2/g.png", "mystery_gen/h.png"):
        write(tmp_path / rel)
    write(tmp_path / "progan_lsun" / "broken.jpg", truncated_jpeg())
    ds = create_dataset("dmimage", root=tmp_path)
    samples = {s.id: s for s in ds}
    assert len(ds) == 9 and ds.label_space.value == "binary"
    got = {sid: (s.label, s.meta["group"], s.meta["generator"]) for sid, s in samples.items()}
    assert got["real_coco_valid/a"] == (0, "real", "real_coco_valid")
    assert got["real_imagenet_valid/b"][:2] == (0, "real")
    assert got["progan_lsun/c"] == (1, "gan", "ProGAN")
    assert got["stylegan3_r_ffhqu_256x256/d"] == (1, "gan", "StyleGAN3")
    assert got["latent-diffusion_text2img_valid/e"] == (1, "diffusion", "Latent Diffusion")
    assert got["dalle-mini_valid/f"][2] == "DALL·E Mini" and got["dalle_2/g"][2] == "DALL·E 2"
    assert got["mystery_gen/h"] == (1, "other", "mystery_gen")
    assert samples["progan_lsun/broken"].error and samples["progan_lsun/broken"].label == 1
    assert samples["dalle_2/g"].meta["source"] == "dalle_2"
    assert generator_info("stylegan2_ffhq_256x256") == ("StyleGAN2", "gan")


def test_operations_csv_crop_resize_jpeg(tmp_path):
    raw = tmp_path / "raw"
    big = rgb(1, 400, 500)
    write(raw / "real_ucid" / "u1.tif", png_bytes(big))  # CSV names .png; the file on disk is .tif
    write(raw / "dalle_2" / "x.png", png_bytes(rgb(2, 180, 180)))
    csv_path = tmp_path / "operations.csv"
    csv_path.write_text("src,cropsize,x1,y1,qf\nreal_ucid/u1.png,300,10,20,75\ndalle_2/x.png,160,5,6,90\n"
                        "real_coco_valid/missing.png,200,0,0,80\n")
    ops = read_operations(csv_path)
    assert ops[0] == Operation("real_ucid/u1.png", 300, 10, 20, 75)
    report = apply_operations(csv_path, raw, tmp_path / "out")
    assert report == {"rows": 3, "written": 2, "missing": ["real_coco_valid/missing.png"]}
    out = Image.open(tmp_path / "out" / "real_ucid" / "u1.jpg")
    assert out.size == (200, 200) and out.format == "JPEG"

    def reference(arr, box, resample, q):
        buf = io.BytesIO()
        Image.fromarray(arr).crop(box).resize((200, 200), resample).save(buf, "JPEG", quality=q)
        return buf.getvalue()

    written = (tmp_path / "out" / "real_ucid" / "u1.jpg").read_bytes()
    assert written == reference(big, (10, 20, 310, 320), Image.Resampling.LANCZOS, 75)
    assert written != reference(big, (10, 20, 310, 320), Image.Resampling.BICUBIC, 75)
    small = process_image(Image.open(raw / "dalle_2" / "x.png"), ops[1])
    assert small == reference(rgb(2, 180, 180), (5, 6, 165, 166), Image.Resampling.BICUBIC, 90)
    bad = tmp_path / "bad.csv"
    bad.write_text("src,cropsize,x1,y1,qf\na.png,big,0,0,80\n")
    with pytest.raises(UserError, match="bad.csv:2"):
        read_operations(bad)


def test_genimage_layout(tmp_path):
    write(tmp_path / "imagenet_ai_0419_sdv4" / "val" / "ai" / "1_sdv4_1.PNG")
    write(tmp_path / "imagenet_ai_0419_sdv4" / "val" / "nature" / "n1.JPEG")
    write(tmp_path / "imagenet_ai_0419_sdv4" / "train" / "ai" / "t.png")
    write(tmp_path / "imagenet_glide" / "val" / "Ai" / "g.png")
    ds = create_dataset("genimage", root=tmp_path, split="val")
    got = {s.id: (s.label, s.meta["generator"], s.meta["group"]) for s in ds}
    assert got == {
        "imagenet_ai_0419_sdv4/nature/n1": (0, "Stable Diffusion V1.4", "real"),
        "imagenet_ai_0419_sdv4/ai/1_sdv4_1": (1, "Stable Diffusion V1.4", "imagenet_ai_0419_sdv4"),
        "imagenet_glide/ai/g": (1, "GLIDE", "imagenet_glide"),
    }
    assert len(create_dataset("genimage", root=tmp_path, split="train")) == 1
    assert len(create_dataset("genimage", root=tmp_path, split="test")) == 3  # alias of val
    with pytest.raises(UserError, match="no images"):
        len(create_dataset("genimage", root=tmp_path / "imagenet_glide"))


def test_synthbuster_with_raise_reals_matched_by_stem(tmp_path):
    fake = tmp_path / "synthbuster"
    for gen in ("dalle3", "midjourney-v5"):
        write(fake / gen / "r000da54ft.png")
        write(fake / gen / "r111.png")
    (fake / "prompts.csv").write_text("image name (matching Raise-1k),Prompt\nr000da54ft,a cat\n")
    reals = tmp_path / "raise"
    write(reals / "sub" / "r000da54ft.tif", png_bytes(rgb(9)))
    write(reals / "r999.png")
    alone = create_dataset("synthbuster", root=fake)
    assert len(alone) == 4 and {s.label for s in alone} == {1}
    ds = create_dataset("synthbuster", root=fake, real_root=reals)
    samples = {s.id: s for s in ds}
    assert len(ds) == 5 and samples["raise/r000da54ft"].label == 0
    assert samples["dalle3/r111"].meta["group"] == "dalle3" and samples["raise/r000da54ft"].meta["group"] == "real"
    assert ds.describe()["listing"] == {"reals_unmatched": 1, "fakes_without_real": 1}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_formats(tmp_path, fmt):
    write(tmp_path / "imgs" / "a.png")
    write(tmp_path / "imgs" / "b.png")
    write(tmp_path / "imgs" / "t.png", png_bytes(rgb(3)))
    write(tmp_path / "masks" / "t.png", grey_mask(box_mask()))
    rows = [
        {"path": "imgs/a.png", "label": "real", "mask_path": "", "split": "test", "source": "cam"},
        {"path": "imgs/b.png", "label": "1", "mask_path": "", "split": "test", "source": "gen"},
        {"path": "imgs/t.png", "label": "tampered", "mask_path": "masks/t.png", "split": "test", "source": ""},
        {"path": "imgs/a.png", "label": "0", "mask_path": "", "split": "train", "source": ""},
    ]
    path = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    ds = create_dataset("manifest", root=path, split="test")
    samples = list(ds)
    assert ds.label_space.value == "ternary" and len(ds) == 3
    assert [(s.id, s.label, s.meta["source"]) for s in samples] == [
        ("imgs/a", 0, "cam"), ("imgs/b", 1, "gen"), ("imgs/t", 2, "imgs")]
    assert samples[2].mask is not None and samples[2].mask.sum() == box_mask().astype(bool).sum()
    assert len(create_dataset("manifest", root=path, split="train")) == 1


def test_manifest_binary_and_errors(tmp_path):
    write(tmp_path / "x.png")
    path = tmp_path / "m.csv"
    path.write_text("path,label\nx.png,fake\nmissing.png,real\n")
    ds = create_dataset("manifest", root=path)
    samples = list(ds)
    assert ds.label_space.value == "binary" and [s.label for s in samples] == [1, 0]
    assert samples[1].error and "not found" in samples[1].error
    path.write_text("path,label\nx.png,maybe\n")
    with pytest.raises(UserError, match="label 'maybe'"):
        create_dataset("manifest", root=path)
    path.write_text("path,label\nx.png,1\nx.png,0\n")
    with pytest.raises(UserError, match="duplicate ids"):
        create_dataset("manifest", root=path)
    path.write_text("file,label\nx.png,1\n")
    with pytest.raises(UserError, match="missing required column 'path'"):
        create_dataset("manifest", root=path)
