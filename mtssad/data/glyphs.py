"""glyphs: the 62 ASCII letters and digits rendered in the TrueType fonts matplotlib ships.

A fine-grained set whose class is the font (file stem, e.g. "DejaVuSans-Bold"). Each font
gives 62 characters x len(SIZE_FRACTIONS) sizes x JITTERS seeded position jitters
(= 372 images), white ink on black, 1 channel, drawn at max(side, 32) and bilinearly
reduced when side < 32 (tiny font sizes draw blank or broken glyphs). The fonts are the
FONT_FILES table below; each must map every character to its real Latin glyph
(`latin_coverage`): the symbol fonts cmsy10/cmex10, the STIX size/non-unicode variants,
the Display subsets and LastResort fail that check and are left out. cmmi10 passes (math
italic letters, old-style digits). A listed font missing a character, or a glyph that
renders blank, is an error, never silently skipped.

Rendered once per (side, seed) and cached as `glyphs-side{S}-seed{K}.npz` plus a
manifest `.json` in the cache dir: root if given, else $MTSSAD_CACHE/glyphs, else
~/.cache/mtssad/glyphs. The manifest (font files with sizes and sha256, matplotlib,
Pillow and FreeType versions, seed, side, render parameters, image count) is also stored
inside the .npz; a cache whose manifest differs from what would be rendered now is
re-rendered and replaced atomically (temporary file + os.replace), never mixed; an
unwritable cache dir only warns.
Train/test: seeded split stratified over (font, character), test_fraction of each.
"""
from __future__ import annotations

import hashlib
import json
import os
import string
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

from .base import DataError, ImageDataset, LoaderArgs
from .imageops import resize
from .registry import register_dataset
from .splits import stratified_split

CHARS = string.digits + string.ascii_uppercase + string.ascii_lowercase  # 62 classes of glyph
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf", "cmmi10.ttf",
)  # fmt: skip
MIN_DRAW_SIDE = 32  # smaller sides are drawn at this side, then resized
SIZE_FRACTIONS = (0.5, 0.65, 0.8)  # font size in pixels = round(fraction * drawing side)
JITTERS = 2  # renders per (character, size), each at its own seeded offset
MAX_SHIFT_FRACTION = 1 / 16  # offsets are uniform in [-s, s] px, s = max(1, round(drawing side / 16))
MIN_INK = 2.0  # total ink (sum / 255, in full-pixel units) a glyph must have: catches blank renders
FORMAT_VERSION = 1  # bump when the rendering code changes what it draws
_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def cache_dir(root: Path | None) -> Path:
    if root is not None:
        return root
    if os.environ.get("MTSSAD_CACHE"):
        return Path(os.environ["MTSSAD_CACHE"]) / "glyphs"
    return Path.home() / ".cache" / "mtssad" / "glyphs"


def latin_coverage(path: Path) -> list[str]:
    """The characters of CHARS the font does NOT map to their Latin glyph (by glyph name)."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(path))
    cmap = font.get_charmap()
    bad = []
    for ch in CHARS:
        expected = _DIGIT_NAMES[int(ch)] if ch.isdigit() else ch
        name = font.get_glyph_name(cmap[ord(ch)]) if ord(ch) in cmap else ""
        if name not in (expected, expected + "oldstyle"):
            bad.append(ch)
    return bad


def expected_manifest(side: int, seed: int, fonts: tuple[str, ...] = FONT_FILES) -> dict:
    """What a render for (side, seed) would record now; DataError if a font is missing."""
    import matplotlib
    import PIL
    from PIL import features

    entries = []
    for fname in fonts:
        path = font_dir() / fname
        if not path.is_file():
            raise DataError(f"glyphs: expected font {path} (matplotlib package data); it is missing")
        data = path.read_bytes()
        entries.append({"file": fname, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return {
        "format": FORMAT_VERSION,
        "fonts": entries,
        "matplotlib": matplotlib.__version__,
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
        "seed": seed,
        "side": side,
        "chars": CHARS,
        "size_fractions": list(SIZE_FRACTIONS),
        "jitters": JITTERS,
        "min_draw_side": MIN_DRAW_SIDE,
        "max_shift_fraction": MAX_SHIFT_FRACTION,
        "n_images": len(fonts) * len(CHARS) * len(SIZE_FRACTIONS) * JITTERS,
    }


def render(side: int, seed: int, fonts: tuple[str, ...] = FONT_FILES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, 1, side, side) uint8, font index (N,), char index (N,)); deterministic in (side, seed)."""
    from PIL import Image, ImageDraw, ImageFont

    draw = max(side, MIN_DRAW_SIDE)  # drawing side
    shift = max(1, round(draw * MAX_SHIFT_FRACTION))
    images, font_idx, char_idx = [], [], []
    for f, fname in enumerate(fonts):
        path = font_dir() / fname
        missing = latin_coverage(path)
        if missing:
            raise DataError(f"glyphs: font {path} lacks Latin glyphs for {''.join(missing)!r}")
        stem = Path(fname).stem
        rng = np.random.default_rng([seed, zlib.crc32(stem.encode())])  # per font: subsets render alike
        for frac in SIZE_FRACTIONS:
            font = ImageFont.truetype(str(path), round(frac * draw))
            for c, ch in enumerate(CHARS):
                left, top, right, bottom = font.getbbox(ch)
                for dx, dy in rng.integers(-shift, shift + 1, size=(JITTERS, 2)):
                    canvas = Image.new("L", (draw, draw), 0)
                    x = (draw - (right - left)) / 2 - left + dx  # centre the ink box, then jitter
                    y = (draw - (bottom - top)) / 2 - top + dy
                    ImageDraw.Draw(canvas).text((round(x), round(y)), ch, font=font, fill=255)
                    arr = np.asarray(canvas, dtype=np.uint8)
                    if arr.sum(dtype=np.int64) / 255 < MIN_INK:
                        raise DataError(f"glyphs: {stem} {ch!r} at {frac * draw:.0f}px rendered blank")
                    images.append(arr)
                    font_idx.append(f)
                    char_idx.append(c)
    stacked = resize(np.stack(images)[:, None], side)  # (N, 1, side, side)
    if (stacked.max(axis=(1, 2, 3)) == 0).any():
        raise DataError(f"glyphs: a glyph vanished when resized to side {side}")
    return stacked, np.array(font_idx, dtype=np.int64), np.array(char_idx, dtype=np.int64)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a shared cache should be readable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_cache(npz_path: Path, manifest: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The cached arrays if the .npz exists and its embedded manifest equals `manifest`, else None."""
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            if json.loads(str(z["manifest"])) != manifest:
                return None
            images, font_idx, char_idx = z["images"], z["font"], z["char"]
    except (OSError, ValueError, KeyError, EOFError, zlib.error):  # absent or unreadable: re-render
        return None
    if len(images) != manifest["n_images"]:
        return None
    return images, font_idx, char_idx


def load_glyph_arrays(cache: Path, side: int, seed: int, fonts: tuple[str, ...] = FONT_FILES):
    """(images, font index, char index), from the cache when its manifest matches, else rendered and cached."""
    manifest = expected_manifest(side, seed, fonts)
    stem = f"glyphs-side{side}-seed{seed}"
    npz_path, json_path = cache / f"{stem}.npz", cache / f"{stem}.json"
    cached = _read_cache(npz_path, manifest) if json_path.is_file() else None
    try:
        if cached is not None and json.loads(json_path.read_text()) == manifest:
            return cached
    except (OSError, ValueError):  # unreadable manifest: re-render
        pass
    images, font_idx, char_idx = render(side, seed, fonts)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        text = json.dumps(manifest, indent=1, sort_keys=True)
        _atomic_write(npz_path, lambda f: np.savez_compressed(
            f, images=images, font=font_idx, char=char_idx, manifest=np.array(text)))
        _atomic_write(json_path, lambda f: f.write(text.encode()))
    except OSError as err:  # e.g. a read-only home on a worker: the render is still good
        warnings.warn(f"glyphs: cannot write the cache in {cache} ({err}); using the fresh render", stacklevel=2)
    return images, font_idx, char_idx


@register_dataset("glyphs")
def load_glyphs(args: LoaderArgs) -> ImageDataset:
    images, font_idx, char_idx = load_glyph_arrays(cache_dir(args.root), args.side, args.seed)
    train, test = stratified_split(font_idx * len(CHARS) + char_idx, args.test_fraction, args.seed)
    return ImageDataset.from_split(args.name, images, font_idx, train, test, [Path(f).stem for f in FONT_FILES])
