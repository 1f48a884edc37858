"""The glyphs data set: fonts, determinism, no blank images, the render cache."""
import json
import os

import numpy as np
import pytest

from mtssad.data import load_dataset
from mtssad.data import glyphs

PER_FONT = len(glyphs.CHARS) * len(glyphs.SIZE_FRACTIONS) * glyphs.JITTERS  # 372
SUBSET = ("DejaVuSans.ttf", "cmr10.ttf")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return load_dataset("glyphs", tmp_path_factory.mktemp("glyphs"))


def test_every_font_present_with_its_share_and_ink(full):
    assert full.class_names == tuple(os.path.splitext(f)[0] for f in glyphs.FONT_FILES)
    assert full.channels == 1 and full.side == 32
    counts = np.bincount(np.concatenate([full.train_labels, full.test_labels]), minlength=full.n_classes)
    assert counts.tolist() == [PER_FONT] * len(glyphs.FONT_FILES)
    images = np.concatenate([full.train_images, full.test_images])
    ink = images.sum(axis=(1, 2, 3), dtype=np.int64) / 255
    assert ink.min() >= glyphs.MIN_INK
    assert np.median(images.max(axis=(1, 2, 3))) == 255  # white ink on black
    assert images[:, :, [0, -1]].mean() < 8 and images[:, :, :, [0, -1]].mean() < 8  # glyphs sit inside the canvas


def test_split_disjoint_and_stratified_over_font_and_char(tmp_path):
    images, font, char = glyphs.load_glyph_arrays(tmp_path, 16, 0, SUBSET)
    train, test = glyphs.stratified_split(font * 62 + char, 0.3, 0)
    assert not set(train) & set(test) and len(train) + len(test) == len(font)
    for idx in (train, test):  # every (font, character) pair on both sides
        assert len(set(zip(font[idx].tolist(), char[idx].tolist()))) == len(SUBSET) * 62


def test_render_is_deterministic_and_seeded():
    a, fa, ca = glyphs.render(16, 7, SUBSET)
    b, fb, cb = glyphs.render(16, 7, SUBSET)
    assert a.tobytes() == b.tobytes() and np.array_equal(fa, fb) and np.array_equal(ca, cb)
    other, _, _ = glyphs.render(16, 8, SUBSET)
    assert other.tobytes() != a.tobytes()
    alone, _, _ = glyphs.render(16, 7, SUBSET[1:])  # a font renders the same whatever else is rendered
    assert alone.tobytes() == a[PER_FONT:].tobytes()


def test_font_table_is_exactly_the_bundled_latin_fonts():
    bundled = sorted(p.name for p in glyphs.font_dir().glob("*.ttf"))
    latin = [f for f in bundled if not glyphs.latin_coverage(glyphs.font_dir() / f)]
    assert sorted(glyphs.FONT_FILES) == latin
    assert glyphs.latin_coverage(glyphs.font_dir() / "cmsy10.ttf")  # symbol fonts are rejected
    assert glyphs.latin_coverage(glyphs.font_dir() / "cmex10.ttf")


@pytest.fixture
def render_counter(monkeypatch):
    calls = []
    real = glyphs.render

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(glyphs, "render", counting)
    return calls


def test_cache_reused_then_rerendered_when_manifest_differs(tmp_path, render_counter):
    first = glyphs.load_glyph_arrays(tmp_path, 16, 0, SUBSET)
    npz, manifest = tmp_path / "glyphs-side16-seed0.npz", tmp_path / "glyphs-side16-seed0.json"
    stamp = npz.stat().st_mtime_ns
    second = glyphs.load_glyph_arrays(tmp_path, 16, 0, SUBSET)
    assert len(render_counter) == 1 and npz.stat().st_mtime_ns == stamp
    assert first[0].tobytes() == second[0].tobytes()
    recorded = json.loads(manifest.read_text())
    assert recorded["n_images"] == 2 * PER_FONT and recorded["fonts"][1]["file"] == "cmr10.ttf"
    recorded["matplotlib"] = "0.0-stale"
    manifest.write_text(json.dumps(recorded))
    third = glyphs.load_glyph_arrays(tmp_path, 16, 0, SUBSET)
    assert len(render_counter) == 2 and third[0].tobytes() == first[0].tobytes()
    assert json.loads(manifest.read_text())["matplotlib"] != "0.0-stale"
    glyphs.load_glyph_arrays(tmp_path, 16, 0, SUBSET[:1])  # a different font list: never mixed
    assert len(render_counter) == 3
    assert len(np.load(npz)["images"]) == PER_FONT


def test_npz_from_another_render_is_not_trusted(tmp_path, render_counter):
    glyphs.load_glyph_arrays(tmp_path / "a", 16, 0, SUBSET)
    swapped = SUBSET[::-1]  # same image count, other content
    glyphs.load_glyph_arrays(tmp_path / "b", 16, 0, swapped)
    # an .npz swapped in under a matching .json (e.g. a crash between the two writes)
    os.replace(tmp_path / "b" / "glyphs-side16-seed0.npz", tmp_path / "a" / "glyphs-side16-seed0.npz")
    images, font, _ = glyphs.load_glyph_arrays(tmp_path / "a", 16, 0, SUBSET)
    assert len(render_counter) == 3 and len(images) == 2 * PER_FONT
    expected, _, _ = glyphs.render(16, 0, SUBSET)
    assert images.tobytes() == expected.tobytes()


def test_cache_dir_rule(monkeypatch, tmp_path):
    assert glyphs.cache_dir(tmp_path) == tmp_path
    monkeypatch.setenv("MTSSAD_CACHE", str(tmp_path / "c"))
    assert glyphs.cache_dir(None) == tmp_path / "c" / "glyphs"
    monkeypatch.delenv("MTSSAD_CACHE")
    assert glyphs.cache_dir(None).parts[-3:] == (".cache", "mtssad", "glyphs")
