"""Image sets: robust decoding, named errors for bad files, fingerprints."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from promptblend.errors import BadImageError, ImageSetError, TruthError
from promptblend.imagesets import MAX_PIXELS, load_image, open_image_set


def _save(path, mode, size=(16, 12), **kw):
    rng = np.random.default_rng(0)
    if mode in ("I;16",):
        im = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
    im.save(path, **kw)
    return path


@pytest.mark.parametrize(
    "mode,ext", [("RGBA", "png"), ("LA", "png"), ("P", "png"), ("CMYK", "jpg"), ("I;16", "png"), ("L", "jpg"), ("1", "png"), ("RGB", "webp")]
)
def test_every_mode_decodes_to_rgb(tmp_path, mode, ext):
    p = _save(tmp_path / f"x.{ext}", mode)
    im = load_image(p)
    assert im.mode == "RGB" and im.size == (16, 12)


def test_sixteen_bit_keeps_brightness(tmp_path):
    arr = np.full((4, 4), 65535, np.uint16)
    Image.fromarray(arr).save(tmp_path / "w.png")
    assert np.asarray(load_image(tmp_path / "w.png")).min() == 255


def test_alpha_is_composited_on_white(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "t.png")
    assert np.asarray(load_image(tmp_path / "t.png")).min() == 255


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (20, 10), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    im.save(tmp_path / "o.jpg", exif=exif)
    assert load_image(tmp_path / "o.jpg").size == (10, 20)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.png", b"", "empty"),
        ("text.png", b"this is not an image at all", "cannot decode"),
        ("trunc.jpg", None, "cannot decode"),
    ],
)
def test_bad_files_raise_named_error(tmp_path, name, content, reason):
    p = tmp_path / name
    if content is None:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), "blue").save(buf, "JPEG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    p.write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as e:
        load_image(p)
    assert e.value.path == p and name in str(e.value)


def test_decompression_bomb_is_refused(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(p)  # 81 Mpx, tiny on disk
    assert p.stat().st_size < 200_000 and 9000 * 9000 > MAX_PIXELS
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(p)


def _folder(tmp_path, n=4):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(d / f"img{i}.png")
    return d


def test_bad_image_mid_set_named_or_skipped(tmp_path):
    d = _folder(tmp_path)
    (d / "img2.png").write_bytes(b"garbage")
    iset = open_image_set(d)
    assert iset.ids == ["img0", "img1", "img2", "img3"]
    with pytest.raises(BadImageError, match="img2.png"):
        iset.load(2)
    skipped = open_image_set(d, skip_bad=True)
    assert skipped.ids == ["img0", "img1", "img3"]
    assert [i for i, _ in skipped.skipped] == ["img2"]
    # ids and images still line up after the skip: no silent shift
    assert np.array_equal(np.asarray(skipped.load(2)), np.asarray(iset.load(3)))


def test_empty_missing_and_clashing_folders(tmp_path):
    with pytest.raises(ImageSetError, match="not found"):
        open_image_set(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageSetError, match="no images"):
        open_image_set(tmp_path / "empty")
    d = _folder(tmp_path)
    Image.new("RGB", (8, 8)).save(d / "img1.jpg")
    with pytest.raises(ImageSetError, match="share the id 'img1'"):
        open_image_set(d)


def test_fingerprint_tracks_content(tmp_path):
    d = _folder(tmp_path)
    a = open_image_set(d).fingerprint()
    assert a == open_image_set(d).fingerprint()
    Image.new("RGB", (8, 8), "green").save(d / "img1.png")
    assert open_image_set(d).fingerprint() != a
    assert open_image_set(d).fingerprint(fast=True) != open_image_set(d).fingerprint()


def test_prompts_csv_read_and_checked(tmp_path, kaggle_sample):
    iset = open_image_set(kaggle_sample / "images")
    assert len(iset) == 7 and iset.prompts is not None
    assert iset.prompt_list()[0] == iset.prompts[iset.ids[0]]
    d = _folder(tmp_path)
    (tmp_path / "p.csv").write_text("imgId,prompt\nimg0,a cat\n")
    with pytest.raises(TruthError, match="3 image ids have no prompt"):
        open_image_set(d, prompts_csv=tmp_path / "p.csv").prompt_list()
    (tmp_path / "bad.csv").write_text("id,text\nimg0,a\n")
    with pytest.raises(TruthError, match="no 'imgId' column"):
        open_image_set(d, prompts_csv=tmp_path / "bad.csv")


def test_real_drawbench_jpegs_decode(drawbench, copy_images):
    d = copy_images(drawbench / "images", n=5)
    iset = open_image_set(d)
    assert all(iset.load(i).size == (512, 512) for i in range(len(iset)))


def test_decode_image_bytes_like_files(tmp_path):
    from promptblend.imagesets import decode_image

    p = _save(tmp_path / "x.png", "RGBA")
    data = p.read_bytes()
    assert np.array_equal(np.asarray(decode_image(data, "shard.tar:x")), np.asarray(load_image(p)))
    with pytest.raises(BadImageError, match="shard.tar:x: image is empty"):
        decode_image(b"", "shard.tar:x")
    with pytest.raises(BadImageError, match="shard.tar:x: cannot decode"):
        decode_image(data[:40], "shard.tar:x")


def test_open_image_set_tells_folders_from_shards(tmp_path):
    from promptblend.imagesets.shards import ShardSet, write_shard

    (tmp_path / "imgs").mkdir()
    _save(tmp_path / "imgs" / "a.png", "RGB")
    assert type(open_image_set(tmp_path / "imgs")).__name__ == "FolderSet"
    write_shard(tmp_path / "tars" / "s-000000.tar", [{"__key__": "a", "png": (tmp_path / "imgs" / "a.png").read_bytes()}])
    shards = open_image_set(tmp_path / "tars")
    assert isinstance(shards, ShardSet) and shards.ids == ["a"] and shards.prompts is None
    assert open_image_set(shards) is shards
    with pytest.raises(ImageSetError, match="image set not found"):
        open_image_set(tmp_path / "nowhere")


def test_a_dangling_symlink_is_a_bad_image_not_silently_dropped(tmp_path):
    from PIL import Image as PILImage

    from promptblend.errors import BadImageError
    from promptblend.imagesets import open_image_set

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a", "b"):
        PILImage.new("RGB", (8, 8), "red").save(folder / f"{name}.png")
    (folder / "c.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(BadImageError, match="dangling symlink"):
        open_image_set(folder)
    kept = open_image_set(folder, skip_bad=True)
    assert kept.ids == ["a", "b"]
    assert [i for i, _ in kept.skipped] == ["c"]
