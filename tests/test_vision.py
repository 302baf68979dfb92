"""run's vision path (vision.c and the image prompt) against the golden outputs and tests/ref.py (float64 numpy,
PIL + OpenCV for preprocessing), never against our own earlier output.

- golden f32 files (both layouts): --dump-image-embeddings of img_wide / img_tall / img_resize within 1e-4 x max of
  emb_ref, and the printed grids; gen.txt: the prompt ids of img_tall + "What is in the picture?" and 16 greedy ids;
- preprocessing (--dump-pixels) against ref.preprocess (Pillow decodes, cv2.resize INTER_CUBIC on float32) on
  generated images: up/down-scales, odd sizes, RGBA, grey, grey+alpha, palette (with and without transparency),
  BMP/GIF/TGA/PPM/PGM, 1x1; JPEG separately (stb_image and libjpeg decode differently);
- the encoder output (a harness that includes run.c) and the projector output on our fixtures, f32 / q8 / q4 files,
  with measured bounds (the attention tasks of every kernel set: tests/test_kernels.c);
- two images in one prompt, images in --chat (/image), --tokens with -i;
- bad images: each one line naming the file, exit 1.
Run: /usr/bin/python3 tests/run_tests.py test_vision
"""
import functools, os, struct, subprocess, zlib

import numpy as np
from PIL import Image

import ref
import common
from common import BUILD, GOLDEN, REPO, build, converted, fixture, one_line_error, scratch, compile_harness

BOS, EOS, INST, END_INST = 1, 2, 3, 4
IMG, IMG_BREAK, IMG_END = 10, 12, 13
TIMEOUT = 120
run = common.run_text


# ---- helpers

def read_ids(text):
    return [int(t) for t in text.replace(",", " ").split()]


def rel_err(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def run_ok(*args, input=None):
    cmd = [build("run"), *map(str, args)]
    rc, out, err = run(cmd, input=input, timeout=TIMEOUT)
    assert rc == 0, f"{' '.join(cmd)}: exit {rc}: {err[-2000:]}"
    return out, err


@functools.lru_cache(maxsize=None)
def ref_model(ck):
    return ref.load(ck)


@functools.lru_cache(maxsize=None)
def ref_image(ck, path):
    """(embeddings [rows*cols, dim], rows, cols) from the float64 reference on the original checkpoint."""
    pixels, rows, cols = ref.preprocess(path)
    return ref.image_embeddings(ref_model(ck), pixels), rows, cols


def dump_embeddings(model, *images):
    """--dump-image-embeddings of one or more images: (list of (rows, cols), array [n_img_tokens, dim])."""
    f = os.path.join(scratch("emb"), "emb.f32")
    args = [a for p in images for a in ("-i", p)]
    out, err = run_ok(model, *args, "--dump-image-embeddings", f)
    grids = [tuple(map(int, l.split()[1].split("x"))) for l in out.splitlines() if l.startswith("grid ")]
    assert len(grids) == len(images), f"expected {len(images)} grid lines: {out!r}"
    assert err.count("vision: ") == len(images), f"expected one 'vision:' line per image: {err!r}"
    return grids, np.fromfile(f, "<f4").astype(np.float64)


def dump_pixels(model, path):
    f = os.path.join(scratch("pix"), "pixels.f32")
    out, _ = run_ok(model, "-i", path, "--dump-pixels", f)
    (rows, cols), = [tuple(map(int, l.split()[1].split("x"))) for l in out.splitlines() if l.startswith("grid ")]
    return np.fromfile(f, "<f4").astype(np.float64).reshape(3, rows * 28, cols * 28), rows, cols


def image_block(rows, cols):
    ids = ([IMG] * cols + [IMG_BREAK]) * rows
    ids[-1] = IMG_END
    return ids


def ref_logits_at(model, ids, slots):
    """ref.logits with image rows put at given positions (slots: {position: row}); ref.logits itself fills
    every id-10 position, which a generated [IMG] token would confuse."""
    c = model.cfg
    x = model.tok_emb[np.asarray(ids)].copy()
    for pos, row in slots.items():
        x[pos] = row
    angles = ref.rope_angles_1d(np.arange(len(ids)), c["rope_theta"], c["head_dim"])
    for layer in model.layers:
        h = ref.rmsnorm(x, layer["attn_norm"], c["norm_eps"])
        x = x + ref.attention(model, layer, h, angles, c["n_heads"], c["n_kv_heads"], c["head_dim"], causal=True)
        x = x + ref.feed_forward(layer, ref.rmsnorm(x, layer["ffn_norm"], c["norm_eps"]))
    return ref.rmsnorm(x, model.norm, c["norm_eps"]) @ model.output.T


# ---- test images, generated into tests/build (nothing binary is committed)

def smooth_rgb(w, h, seed):
    """Smooth gradients plus shapes plus some noise: like a photo (edges, flat parts), not pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([127 + 120 * np.sin(x / (3 + 7 * k) + y / (5 + 3 * k) + k) for k in range(3)], -1)
    img[(x - w / 3) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 4) ** 2] = (250, 30, 20)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def make_images():
    """{name: path} of lossless test images in several modes and formats."""
    d = os.path.join(BUILD, "vision-images")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(7)
    images = {}

    def save(name, image, **kw):
        path = os.path.join(d, name)
        image.save(path, **kw)
        images[name] = path

    save("up_odd.png", Image.fromarray(smooth_rgb(37, 23, 1)))                      # -> 56 x 28, upscale
    save("down.png", Image.fromarray(smooth_rgb(1700, 900, 2)))                     # -> 1540 x 840, downscale
    save("odd.png", Image.fromarray(smooth_rgb(333, 500, 3)))                       # -> 336 x 504
    save("square.png", Image.fromarray(smooth_rgb(84, 84, 4)))                      # no resize
    rgba = np.concatenate([smooth_rgb(150, 90, 5), rng.integers(0, 256, (90, 150, 1), dtype=np.uint8)], -1)
    rgba[:20, :20, 3] = 0                                                           # fully transparent corner
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("grey.png", Image.fromarray(smooth_rgb(64, 100, 6)[..., 0], "L"))
    la = np.stack([smooth_rgb(50, 50, 7)[..., 1], rng.integers(0, 256, (50, 50), dtype=np.uint8)], -1)
    save("grey_alpha.png", Image.fromarray(la, "LA"))
    palette = Image.fromarray(smooth_rgb(120, 80, 8)).quantize(64)
    save("palette.png", palette)
    save("palette_transparent.png", palette, transparency=3)
    save("format.bmp", Image.fromarray(smooth_rgb(70, 45, 9)))
    save("format.gif", Image.fromarray(smooth_rgb(66, 40, 10)).quantize(200))
    save("format.tga", Image.fromarray(smooth_rgb(30, 61, 11)))
    save("format.ppm", Image.fromarray(smooth_rgb(45, 29, 12)))
    save("format.pgm", Image.fromarray(smooth_rgb(29, 45, 13)[..., 2], "L"))
    save("one_pixel.png", Image.fromarray(np.array([[[200, 100, 50]]], dtype=np.uint8)))
    return images


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(w, h):
    """A PNG whose header says w x h, with one empty IDAT: the size check must refuse it before decoding."""
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b""))


# ---- golden: embeddings, grids, generation

def golden_model(layout="native"):
    return converted(os.path.join(GOLDEN, layout), "f32")


def test_golden_image_embeddings_f32():
    for layout in ("native", "hf"):
        for name in ("wide", "tall", "resize"):
            want_grid = tuple(map(int, open(os.path.join(GOLDEN, f"img_{name}.grid.txt")).read().split()))
            want = np.fromfile(os.path.join(GOLDEN, f"img_{name}.emb_ref.f32"), "<f4").astype(np.float64)
            (grid,), got = dump_embeddings(golden_model(layout), os.path.join(GOLDEN, f"img_{name}.png"))
            assert grid == want_grid, f"{name}: grid {grid}, expected {want_grid}"
            assert got.size == want.size == grid[0] * grid[1] * 256, f"{name}: {got.size} values"
            e = rel_err(got, want)
            print(f"    golden {layout} img_{name}: grid {grid[0]}x{grid[1]}, rel err vs emb_ref {e:.2e}")
            assert e <= 1e-4, f"{layout} img_{name}: max|diff| = {e:.3g} x max|emb_ref|"


def test_golden_pixels():
    got, rows, cols = dump_pixels(golden_model(), os.path.join(GOLDEN, "img_resize.png"))
    want = np.fromfile(os.path.join(GOLDEN, "img_resize.pixels_ref.f32"), "<f4").reshape(3, 140, 112)
    e = float(np.abs(got - want).max())
    print(f"    img_resize pixels: max abs diff {e:.2e} (normalized units)")
    assert (rows, cols) == (5, 4) and e <= 1e-4, f"img_resize pixels: {e:.3g}"


def test_golden_generation():
    gen = dict(l.split(" ", 1) for l in open(os.path.join(GOLDEN, "gen.txt")).read().splitlines())
    prompt, generated = read_ids(gen["prompt_ids"]), read_ids(gen["generated"])
    for layout in ("native", "hf"):
        f = os.path.join(scratch("gen"), "tokens.txt")
        run_ok(golden_model(layout), "-i", os.path.join(GOLDEN, gen["image"]), "-p", gen["text"], "-n", "16",
               "--temp", "0", "--dump-tokens", f)
        ids = read_ids(open(f).read())
        assert ids[:len(prompt)] == prompt, f"{layout}: prompt {ids[:len(prompt)]}\n  expected {prompt}"
        assert ids[len(prompt):] == generated, f"{layout}: generated {ids[len(prompt):]}\n  expected {generated}"


# ---- preprocessing against Pillow + OpenCV

# Measured 2025-11-25 over the images of make_images(): max |diff| 1.0e-6 in normalized units (float32
# rounding: our resize is OpenCV's algorithm in the same float arithmetic). The bound is 1e-3.
PIXEL_BOUND = 1e-3


def test_pixels_match_pillow_and_opencv():
    model = golden_model()
    worst = 0.0
    for name, path in make_images().items():
        got, rows, cols = dump_pixels(model, path)
        want, want_rows, want_cols = ref.preprocess(path)
        assert (rows, cols) == (want_rows, want_cols), f"{name}: grid {rows}x{cols}, expected {want_rows}x{want_cols}"
        assert got.shape == want.shape, f"{name}: {got.shape} vs {want.shape}"
        e = float(np.abs(got - want).max())
        worst = max(worst, e)
        assert e <= PIXEL_BOUND, f"{name}: max|diff| {e:.3g} > {PIXEL_BOUND}"
    print(f"    {len(make_images())} images: max |diff| {worst:.2e} (normalized units)")


# stb_image and libjpeg (Pillow) decode JPEG differently (IDCT rounding, chroma upsampling), so the pixels
# differ by a few levels. Measured 2025-11-25 on the image below (quality 90): 4:4:4 max 2.0 levels, mean
# 0.05; 4:2:0 max 3.0 levels, mean 0.11 (one level = 1/255/std = 0.0146 normalized units at most). Bounds:
# 3 levels and a mean of 0.15 for 4:4:4, 5 levels and a mean of 0.25 for 4:2:0.
LEVEL = 1 / 255 / min(ref.CLIP_STD)


def test_jpeg_decoding():
    model = golden_model()
    d = scratch("jpeg")
    for subsampling, max_levels, mean_levels in ((0, 3, 0.15), (2, 5, 0.25)):
        path = os.path.join(d, f"photo_{subsampling}.jpg")
        Image.fromarray(smooth_rgb(200, 150, 20)).save(path, quality=90, subsampling=subsampling)
        got, rows, cols = dump_pixels(model, path)
        want, want_rows, want_cols = ref.preprocess(path)
        assert (rows, cols) == (want_rows, want_cols)
        diff = np.abs(got - want) / LEVEL
        print(f"    JPEG subsampling {subsampling}: max {diff.max():.2f} levels, mean {diff.mean():.3f}")
        assert diff.max() <= max_levels and diff.mean() <= mean_levels, \
            f"JPEG {subsampling}: max {diff.max():.2f}, mean {diff.mean():.3f} levels"


def test_image_grid_rule():
    """Token grids of the size rule on images of many sizes (only the header matters, so blank PNGs)."""
    model = golden_model()
    d = scratch("grid")
    # MODEL.md §5.1 worked examples, sides near the cap and the half-to-even rounding of the downscale
    sizes = [(1920, 1080, 31, 55), (1024, 768, 28, 37), (500, 333, 12, 18), (10, 10, 1, 1), (1540, 1540, 55, 55),
             (3000, 200, 4, 55), (1541, 1, 1, 55), (28, 29, 2, 1), (56, 28, 1, 2), (4620, 2310, 28, 55),
             (3083, 2, 1, 55)]
    for w, h, rows, cols in sizes:
        assert ref.image_grid(w, h) == (rows, cols), (w, h)
        path = os.path.join(d, f"blank_{w}x{h}.png")
        Image.new("RGB", (w, h), (10, 20, 30)).save(path)
        _, got_rows, got_cols = dump_pixels(model, path)
        assert (got_rows, got_cols) == (rows, cols), f"{w}x{h}: grid {got_rows}x{got_cols}, expected {rows}x{cols}"


# ---- encoder and projector on our fixtures, f32 / q8 / q4

HARNESS_C = r"""
// Test harness for vision.c (written by tests/test_vision.py): run.c with its main renamed.
#define main run_main
#include "run.c"
#undef main

// encoder MODEL IMAGE OUT: the encoder's output features. (Its attention is checked against the scalar
// definition on every kernel set by tests/test_kernels.c.)
int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "encoder") == 0) {
        Model m;
        Image img;
        double flops = 0;
        if (model_load(&m, argv[2]) || image_load(&img, argv[3], &m.config)) { fprintf(stderr, "%s\n", error_msg); return 1; }
        size_t n = (size_t)img.pixel_rows / m.config.patch_size * (img.pixel_cols / m.config.patch_size) * m.config.vision_dim;
        float *x = malloc(n * sizeof(float));
        FILE *f = fopen(argv[4], "wb");
        if (vision_encoder(&m, &img, x, &flops) || fwrite(x, sizeof(float), n, f) != n || fclose(f)) return 1;
        return 0;
    }
    fprintf(stderr, "usage: harness encoder MODEL IMAGE OUT\n");
    return 2;
}
"""


@functools.lru_cache(maxsize=None)
def harness():
    return compile_harness("vision", HARNESS_C, "-fopenmp")


# The fixtures: the default export/fixture (vision 64 wide, head_dim 32: every vision matrix is q8 in a q4
# file, its rows of 64 do not split into 256-blocks), one shaped like Pixtral's heads (256 wide, head_dim 64,
# hidden 512: q4 matrices) and one whose head_dim 24 takes the scalar attention path.
WIDE = ("--vision-dim", "256", "--vision-heads", "4", "--vision-head-dim", "64", "--vision-hidden", "512")
ODD = ("--vision-dim", "48", "--vision-heads", "2", "--vision-head-dim", "24", "--vision-hidden", "96")
FIXTURES = {"fixture": (), "wide": WIDE, "odd": ODD}
IMAGES = ("square.png", "up_odd.png", "rgba.png", "odd.png")   # square, wide, wide with alpha, tall


def test_encoder_output_f32():
    for name, flags in FIXTURES.items():
        ck = os.path.join(fixture(*flags), "native")
        for image in IMAGES[:3]:
            path = make_images()[image]
            out = os.path.join(scratch("encoder"), "features.f32")
            rc, _, err = common.run([harness(), "encoder", converted(ck, "f32"), path, out], timeout=TIMEOUT)
            assert rc == 0, err
            pixels, _, _ = ref.preprocess(path)
            want, _, _ = ref.vision_encoder(ref_model(ck), pixels)
            got = np.fromfile(out, "<f4").astype(np.float64).reshape(want.shape)
            e = rel_err(got, want)
            assert e <= 1e-4, f"{name} {image}: encoder output {e:.3g} x max"


# rel err = max|diff| / max|ref| of the projector output against the float64 reference on the original
# checkpoint, worst over IMAGES. Measured 2025-11-25 (the same to 2 digits with the row-major kernels of
# commit 2861575 and with the 16-row-group SIMD kernels; f32 3.9e-7 with the latter):
#             f32       q8        q4
#   fixture   1.1e-6    2.5e-2    1.1e-1   (the vision matrices are q8 in the q4 file: rows of 64 and 128;
#                                           the projector's w_out, 256 x 256, is q4)
#   wide      1.4e-6    2.3e-2    2.2e-1   (q4 everywhere; relative RMS error 0.19 at worst)
#   odd       1.2e-6    1.7e-2    7.9e-2   (rows of 48 and 96 fall back to f16, q8 elsewhere)
# q8/q4 files round the weights (q8 ~0.5 %, q4 ~7 % relative per weight, test_quant) and every matmul
# input to q8 blocks; on these random weights the errors pass almost undamped through the layers, as in
# the text path (test_text: logits 3.8e-2 for q8, 0.30 for q4). Bounds: about 2x the measurements; f32 at
# the 1e-4.
PROJECTOR_BOUNDS = {"f32": 1e-4, "q8": 5e-2, "q4": 0.45}


def test_projector_output_all_types():
    for name, flags in FIXTURES.items():
        ck = os.path.join(fixture(*flags), "native")
        for type_ in ("f32", "q8", "q4"):
            worst = 0.0
            for image in IMAGES:
                want, rows, cols = ref_image(ck, make_images()[image])
                (grid,), got = dump_embeddings(converted(ck, type_), make_images()[image])
                assert grid == (rows, cols), f"{name} {image}: grid {grid}, expected {(rows, cols)}"
                worst = max(worst, rel_err(got.reshape(want.shape), want))
            print(f"    {name:8s} {type_}: rel err {worst:.2e}")
            assert worst <= PROJECTOR_BOUNDS[type_], f"{name} {type_}: {worst:.3g} > {PROJECTOR_BOUNDS[type_]}"


# ---- images in prompts

def test_two_images_in_one_prompt():
    ck = os.path.join(fixture(*WIDE), "native")
    model = converted(ck, "f32")
    a, b = make_images()["square.png"], make_images()["odd.png"]
    emb_a, ra, ca = ref_image(ck, a)
    emb_b, rb, cb = ref_image(ck, b)
    # --dump-image-embeddings of two images: both, in order; each image encoded alone (no attention across)
    grids, got = dump_embeddings(model, a, b)
    assert grids == [(ra, ca), (rb, cb)]
    assert rel_err(got.reshape(-1, emb_a.shape[1]), np.concatenate([emb_a, emb_b])) <= 1e-4
    # the prompt: both blocks, in order, before the text; logits against the reference
    d = scratch("two")
    lf, tf = os.path.join(d, "logits.f32"), os.path.join(d, "tokens.txt")
    out, _ = run_ok(model, "--tokenize", input="Compare them.")
    text = read_ids(out)
    run_ok(model, "-i", a, "-i", b, "-p", "Compare them.", "-n", "0", "--dump-logits", lf, "--dump-tokens", tf)
    ids = read_ids(open(tf).read())
    assert ids == [BOS, INST] + image_block(ra, ca) + image_block(rb, cb) + text + [END_INST], ids
    logits = np.fromfile(lf, "<f4").astype(np.float64).reshape(len(ids), -1)
    want = ref.logits(ref_model(ck), ids, np.concatenate([emb_a, emb_b]))
    e = rel_err(logits, want)
    print(f"    two images, {len(ids)} tokens: rel err of the logits {e:.2e}")
    assert e <= 1e-4, f"logits {e:.3g}"
    # --tokens with images: the [IMG] ids take the rows; their count must match
    again = os.path.join(d, "again.f32")
    run_ok(model, "-i", a, "-i", b, "--tokens", ",".join(map(str, ids)), "--dump-logits", again)
    assert rel_err(np.fromfile(again, "<f4").astype(np.float64).reshape(len(ids), -1), want) <= 1e-4
    rc, _, err = run([build("run"), model, "-i", a, "--tokens", ",".join(map(str, ids))], timeout=TIMEOUT)
    assert rc == 1 and "[IMG] tokens" in err.splitlines()[-1], err


def test_chat_images():
    ck = os.path.join(fixture(*WIDE), "native")
    model, m = converted(ck, "f32"), ref_model(ck)
    a, b, c = (make_images()[n] for n in ("square.png", "up_odd.png", "rgba.png"))
    stdin = f"/image {a}\nFirst?\n/image {b}\n/image  {c}  \nSecond?\nThird.\n"
    d = scratch("chat")
    lf, tf = os.path.join(d, "logits.f32"), os.path.join(d, "tokens.txt")
    _, err = run_ok(model, "--chat", "--temp", "0", "-n", "3", "--dump-logits", lf, "--dump-tokens", tf, input=stdin)
    assert err.count("vision: ") == 3, f"each image is encoded once: {err!r}"
    # expected ids, the replies and logits from the reference with the image rows at their positions
    ids, slots = [BOS], {}
    for msg, images in (("First?", [a]), ("Second?", [b, c]), ("Third.", [])):
        if ids[-1] != BOS and ids[-1] != EOS:
            ids.append(EOS)
        ids.append(INST)
        for path in images:
            emb, rows, cols = ref_image(ck, path)
            block = image_block(rows, cols)
            positions = [len(ids) + i for i, t in enumerate(block) if t == IMG]
            slots.update(zip(positions, emb))
            ids += block
        ids += read_ids(run_ok(model, "--tokenize", input=msg)[0]) + [END_INST]
        for _ in range(3):
            nxt = int(np.argmax(ref_logits_at(m, ids, slots)[-1]))
            ids.append(nxt)
            if nxt == EOS:
                break
    got = read_ids(open(tf).read())
    assert got == ids, f"--chat dumped {got}\n  expected {ids}"
    logits = np.fromfile(lf, "<f4").astype(np.float64).reshape(-1, m.cfg["vocab_size"])
    want = ref_logits_at(m, ids[:logits.shape[0]], slots)
    assert rel_err(logits, want) <= 1e-4, f"chat logits {rel_err(logits, want):.3g}"


def test_chat_with_command_line_image():
    """-i with --chat: the image goes with the first message."""
    ck = os.path.join(fixture(*WIDE), "native")
    model = converted(ck, "f32")
    a = make_images()["square.png"]
    f = os.path.join(scratch("chat-i"), "tokens.txt")
    run_ok(model, "--chat", "-i", a, "--temp", "0", "-n", "2", "--dump-tokens", f, input="Hi\nAgain\n")
    _, rows, cols = ref_image(ck, a)
    ids = read_ids(open(f).read())
    start = [BOS, INST] + image_block(rows, cols) + read_ids(run_ok(model, "--tokenize", input="Hi")[0]) + [END_INST]
    assert ids[:len(start)] == start and IMG not in ids[len(start):], ids


def test_one_pixel_image():
    """1x1 is a valid image for mistral-common (one cell, [IMG][IMG_END]), so it is for us."""
    ck = os.path.join(fixture(*WIDE), "native")
    want, rows, cols = ref_image(ck, make_images()["one_pixel.png"])
    (grid,), got = dump_embeddings(converted(ck, "f32"), make_images()["one_pixel.png"])
    assert grid == (rows, cols) == (1, 1)
    assert rel_err(got.reshape(want.shape), want) <= 1e-4


# ---- bad images and bad usage

def test_bad_images():
    model = golden_model()
    d = scratch("bad")
    huge, text, corrupt, thin = (os.path.join(d, n) for n in ("huge.png", "text.png", "corrupt.png", "thin.png"))
    open(huge, "wb").write(png_header_only(20000, 20000))
    open(text, "w").write("this is not an image\n")
    data = bytearray(open(make_images()["square.png"], "rb").read())
    data[60:] = bytes(len(data) - 60)  # zeros over the compressed data: the header still reads
    open(corrupt, "wb").write(bytes(data))
    Image.new("RGB", (16000, 1)).save(thin)
    cases = [(huge, "20000x20000"), (text, "not an image"), (corrupt, "cannot decode"), (thin, "too thin"),
             (os.path.join(d, "missing.png"), "No such file")]
    for path, words in cases:
        for args in (["--dump-image-embeddings", os.path.join(d, "out.f32")], ["-p", "hi", "-n", "1"]):
            rc, out, err = run([build("run"), model, "-i", path, *args], timeout=TIMEOUT)
            assert rc == 1, f"{path}: exit {rc}: {err}"
            line = one_line_error(err, path, words)
            assert line.startswith("run: "), line


def test_bad_usage():
    model = golden_model()
    for args in (["--dump-image-embeddings", "x.f32"], ["-i", "x.png", "--raw", "-p", "x"], ["-i"]):
        rc, _, err = run([build("run"), model, *args], timeout=TIMEOUT)
        assert rc == 2 and err.startswith("run: "), f"{args}: exit {rc}: {err[:200]}"
