"""`laddertune features`: frozen-encoder grid features to HDF5 and back, and VL-T5 / VL-Adapter files as they are."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from laddertune.cli.main import main
from laddertune.vision.features import FeatureStore, encode_images, load_encoder


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny random CLIP vision model (32 px, 8 px patches: a 4x4 grid of 16-d features) saved to a folder."""
    path = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    CLIPVisionModel(cfg).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    return path


@pytest.fixture
def image_dir(tmp_path):
    path = tmp_path / "images"
    path.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (40 + 10 * i, 30), colour).save(path / f"img{i}.png")
    (path / "notes.txt").write_text("not an image")
    return path


def test_round_trip_matches_the_encoder(encoder_dir, image_dir, tmp_path):
    out = tmp_path / "feats.h5"
    assert main(["features", "--images", str(image_dir), "--output", str(out), "--encoder", str(encoder_dir),
                 "--pool", "2", "--batch-size", "2"]) == 0  # fmt: skip
    model, processor = load_encoder(str(encoder_dir))
    with FeatureStore(out) as store:
        assert sorted(store.ids()) == ["img0", "img1", "img2"]
        feats, boxes = store["img2"]
        expected = encode_images(
            model, processor, [Image.open(image_dir / "img2.png").convert("RGB")], pool=2
        )[0]
        torch.testing.assert_close(feats, expected)
        assert feats.shape == (4, 16)  # 4x4 ViT grid max-pooled to 2x2
        torch.testing.assert_close(boxes[3], torch.tensor([0.5, 0.5, 1.0, 1.0]))
    # Pooling is a max over grid cells: the 2x2 pool's first cell is the max of the 4x4 grid's top-left 2x2.
    full = encode_images(model, processor, [Image.open(image_dir / "img2.png").convert("RGB")], pool=None)[0]
    torch.testing.assert_close(expected[0], full[[0, 1, 4, 5]].max(0).values)


def test_vl_t5_layout_loads_as_is(tmp_path):
    """A file written as VL-T5 / VL-Adapter write theirs: pixel boxes with img_h/img_w, or grid features alone."""
    path = tmp_path / "vl_adapter.h5"
    feats = np.random.default_rng(0).standard_normal((36, 2048)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["COCO_val2014_000000000042/features"] = feats
        f["COCO_val2014_000000000042/boxes"] = np.array([[0, 0, 320, 240]] * 36, dtype=np.float32)
        f["COCO_val2014_000000000042/img_w"], f["COCO_val2014_000000000042/img_h"] = 640, 480
        f["grid_only/features"] = feats
    with FeatureStore(path) as store:
        got, boxes = store["COCO_val2014_000000000042"]
        np.testing.assert_array_equal(got.numpy(), feats)
        torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 0.5, 0.5]))
        _, grid = store["grid_only"]
        torch.testing.assert_close(grid[7], torch.tensor([1 / 6, 1 / 6, 2 / 6, 2 / 6]))


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, encoder_dir):
    out = tmp_path / "f.h5"
    assert main(["features", "--images", str(tmp_path / "missing"), "--output", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: no image folder")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    assert main(["features", "--images", str(bad), "--output", str(out), "--encoder", str(encoder_dir)]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob(".*partial")) == []
    assert main(["features", "--images", str(bad), "--output", str(out), "--encoder", str(tmp_path)]) == 2
    assert "cannot load vision encoder" in capsys.readouterr().err
