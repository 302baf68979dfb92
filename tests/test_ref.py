"""Validates tests/ref.py (the float64 numpy reference) against the golden fixture in ../shared/golden, and
export/fixture.c (the random-checkpoint writer) against ref.py.

Golden checks (tolerances from golden/README.md "Recommended checks"): logits of tokens.txt from either
layout within 1e-4 x max|logits.f32| of llama.cpp's with the same argmax, the two layouts within 1e-12 of
each other; image grids and embeddings (<= 1e-4 x max|emb_ref|); img_resize's pixels (<= 1e-4 abs); the
prompt and the 16 greedy ids of gen.txt. Fixture checks: the HF and native files export/fixture writes
hold the same weights (q/k rows permuted as transformers' permute_for_rope does), so ref.py gives the same
logits and image embeddings from both (1e-10 relative); tekken.json is a well-formed Tekken v7 file.
Run: /usr/bin/python3 tests/run_tests.py ref
"""
import atexit
import base64
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

try:
    import numpy as np
    import ref
    IMPORT_ERROR = None
except ImportError as e:  # the pyenv python3 has no numpy; fail the tests, not the driver
    IMPORT_ERROR = e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "..", "shared", "golden")
IMAGES = ("wide", "tall", "resize")


def need_numpy():
    if IMPORT_ERROR is not None:
        raise RuntimeError(f"{IMPORT_ERROR}: run the tests with /usr/bin/python3 (numpy, PIL, cv2)")


def rel_err(a, b):
    """max|a - b| / max|b| (b is the reference)."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def read_ids(text):
    return [int(t) for t in text.strip().split(",")]


@functools.lru_cache(maxsize=None)
def golden_model(layout):
    need_numpy()
    return ref.load(os.path.join(GOLDEN, layout))


@functools.lru_cache(maxsize=None)
def golden_pixels(name):
    need_numpy()
    return ref.preprocess(os.path.join(GOLDEN, f"img_{name}.png"))


# ---------------------------------------------------------------------------------------------------
# golden fixture

def test_golden_fixture_intact():
    sums = json.load(open(os.path.join(GOLDEN, "agreement.json")))["files_sha256"]
    assert len(sums) >= 20, f"only {len(sums)} files listed"
    bad = [f for f, s in sums.items() if hashlib.sha256(open(os.path.join(GOLDEN, f), "rb").read()).hexdigest() != s]
    assert not bad, f"sha256 mismatch: {bad}"


def test_golden_logits():
    need_numpy()
    ids = read_ids(open(os.path.join(GOLDEN, "tokens.txt")).read())
    want = np.fromfile(os.path.join(GOLDEN, "logits.f32"), "<f4").reshape(len(ids), -1).astype(np.float64)
    got = {}
    for layout in ("hf", "native"):
        got[layout] = ref.logits(golden_model(layout), ids)
        assert got[layout].shape == want.shape, (layout, got[layout].shape)
        err = rel_err(got[layout], want)
        assert err <= 1e-4, f"{layout}: logits rel error {err:.3g} vs llama.cpp"
        assert np.array_equal(got[layout].argmax(1), want.argmax(1)), f"{layout}: argmax differs"
    between = rel_err(got["hf"], got["native"])
    assert between <= 1e-12, f"hf vs native logits rel {between:.3g}"


def test_golden_image_embeddings():
    need_numpy()
    for name in IMAGES:
        pixels, rows, cols = golden_pixels(name)
        want_grid = tuple(map(int, open(os.path.join(GOLDEN, f"img_{name}.grid.txt")).read().split()))
        assert (rows, cols) == want_grid, f"{name}: grid {rows}x{cols}, want {want_grid}"
        assert pixels.shape == (3, rows * 28, cols * 28), (name, pixels.shape)
        want = np.fromfile(os.path.join(GOLDEN, f"img_{name}.emb_ref.f32"), "<f4").reshape(rows * cols, -1)
        got = {layout: ref.image_embeddings(golden_model(layout), pixels) for layout in ("hf", "native")}
        for layout, emb in got.items():
            err = rel_err(emb, want.astype(np.float64))
            assert err <= 1e-4, f"{name} {layout}: embeddings rel error {err:.3g}"
        between = rel_err(got["hf"], got["native"])
        assert between <= 1e-12, f"{name}: hf vs native embeddings rel {between:.3g}"


def test_golden_pixels():
    need_numpy()
    pixels, _, _ = golden_pixels("resize")
    want = np.fromfile(os.path.join(GOLDEN, "img_resize.pixels_ref.f32"), "<f4").reshape(3, 140, 112)
    assert pixels.shape == want.shape, pixels.shape
    err = float(np.max(np.abs(pixels - want)))
    assert err <= 1e-4, f"img_resize pixels max abs error {err:.3g}"


def test_golden_generation():
    need_numpy()
    gen = dict(line.split(" ", 1) for line in open(os.path.join(GOLDEN, "gen.txt")).read().splitlines())
    pixels, rows, cols = golden_pixels(gen["image"][len("img_"):-len(".png")])
    prompt = ref.image_prompt(ref.image_tokens(rows, cols), read_ids(gen["text_ids"]))
    assert prompt == read_ids(gen["prompt_ids"]), f"prompt {prompt}"
    model = golden_model("native")
    got = ref.generate_greedy(model, prompt, 16, ref.image_embeddings(model, pixels))
    assert got == read_ids(gen["generated"]), f"generated {got}"


def rewrite_safetensors(src, dst, rename, dtype_of):
    """Copies a .safetensors file with renamed tensors, re-encoded as dtype_of(new_name) (BF16/F16/F32)."""
    tensors = ref.read_safetensors(src)
    header, chunks, offset = {}, [], 0
    for name, arr in tensors.items():
        new, dtype = rename(name), dtype_of(rename(name))
        if dtype == "BF16":
            raw = (arr.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()   # exact: values are bf16
        else:
            raw = arr.astype("<f2" if dtype == "F16" else "<f4").tobytes()
        header[new] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(dst, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob + b"".join(chunks))


def test_ref_reads_new_hf_prefixes_and_dtypes():
    """transformers >= 4.52 names (model.language_model.*, lm_head.weight, ...), F32 and F16 tensors."""
    need_numpy()
    def rename(name):
        if name == "language_model.lm_head.weight":
            return "lm_head.weight"
        if name.startswith("language_model.model."):
            return "model.language_model." + name[len("language_model.model."):]
        return "model." + name   # vision_tower.*, multi_modal_projector.*
    def dtype_of(name):           # norms are exact in F16 (bf16 values near 1), others exact in F32
        return "F16" if name.endswith("norm.weight") else "F32" if "layers.0." in name else "BF16"
    out = tempfile.mkdtemp(prefix="newhf_", dir=scratch_dir())
    src = os.path.join(GOLDEN, "hf")
    index = json.load(open(os.path.join(src, "model.safetensors.index.json")))
    for shard in sorted(set(index["weight_map"].values())):
        rewrite_safetensors(os.path.join(src, shard), os.path.join(out, shard), rename, dtype_of)
    index["weight_map"] = {rename(k): v for k, v in index["weight_map"].items()}
    json.dump(index, open(os.path.join(out, "model.safetensors.index.json"), "w"))
    shutil.copy(os.path.join(src, "config.json"), out)
    model = ref.load(out)
    ids = read_ids(open(os.path.join(GOLDEN, "tokens.txt")).read())[:12]
    err = rel_err(ref.logits(model, ids), ref.logits(golden_model("hf"), ids))
    assert err == 0.0, f"renamed/re-typed checkpoint gives other logits (rel {err:.3g})"
    pixels, _, _ = golden_pixels("wide")
    assert np.array_equal(ref.image_embeddings(model, pixels), ref.image_embeddings(golden_model("hf"), pixels))


def test_image_grid_worked_examples():
    need_numpy()
    # MODEL.md §5.1 worked examples, (w, h) -> (rows, cols), and §11's short image blocks
    for (w, h), grid in {(1920, 1080): (31, 55), (1024, 768): (28, 37), (500, 333): (12, 18), (10, 10): (1, 1),
                         (4000, 3000): (42, 55), (1540, 1540): (55, 55), (3000, 200): (4, 55)}.items():
        assert ref.image_grid(w, h) == grid, ((w, h), ref.image_grid(w, h))
    assert ref.image_tokens(*ref.image_grid(10, 10)) == [10, 13]
    assert ref.image_tokens(*ref.image_grid(56, 28)) == [10, 10, 13]
    assert ref.image_tokens(*ref.image_grid(28, 56)) == [10, 12, 10, 13]


# ---------------------------------------------------------------------------------------------------
# export/fixture.c

@functools.lru_cache(maxsize=None)
def scratch_dir():
    """One temp dir for this run's binary and fixtures, removed at exit (never writes into the repo)."""
    tmp = tempfile.mkdtemp(prefix="test_ref_")
    atexit.register(shutil.rmtree, tmp, True)
    return tmp


@functools.lru_cache(maxsize=None)
def fixture_binary():
    """Compiles export/fixture.c into the scratch dir; returns its path."""
    tmp = scratch_dir()
    exe = os.path.join(tmp, "fixture")
    cc = os.environ.get("CC", "cc")
    r = subprocess.run([cc, "-O2", "-std=c11", "-Wall", "-Wextra", os.path.join(REPO, "export", "fixture.c"),
                        "-o", exe, "-lm"], capture_output=True, text=True)
    assert r.returncode == 0, f"compiling export/fixture.c failed:\n{r.stderr}"
    assert "warning" not in r.stderr, f"export/fixture.c warnings:\n{r.stderr}"
    return exe


@functools.lru_cache(maxsize=None)
def fixture_dir(*flags):
    out = tempfile.mkdtemp(prefix="fixture_", dir=scratch_dir())
    r = subprocess.run([fixture_binary(), out, *flags], capture_output=True, text=True)
    assert r.returncode == 0, f"export/fixture {' '.join(flags)} failed: {r.stderr}"
    return out


def test_fixture_layouts_agree():
    need_numpy()
    out = fixture_dir()
    hf, native = ref.load(os.path.join(out, "hf")), ref.load(os.path.join(out, "native"))
    c = native.cfg
    assert (c["dim"], c["n_layers"], c["n_heads"], c["n_kv_heads"], c["head_dim"], c["hidden_dim"],
            c["vocab_size"]) == (256, 2, 4, 2, 64, 768, 2048), c
    assert hf.cfg == native.cfg, (hf.cfg, native.cfg)
    sequences = [[1, 3, 1100, 1200, 1300, 1500, 1700, 1900, 2047, 4],
                 [1, 17, 1050, 18, 3, 10, 12, 13, 1000, 1255, 1256, 2000, 4, 2],
                 list(range(1000, 1064))]
    for ids in sequences:
        a, b = ref.logits(hf, ids), ref.logits(native, ids)
        err = rel_err(a, b)
        assert err <= 1e-10, f"fixture logits hf vs native rel {err:.3g} for {ids[:6]}..."
        top = float(np.max(np.abs(b)))
        assert 1.0 < top < 100.0, f"random model logits out of range: max|logit| {top:.3g}"
    for name in ("wide", "tall"):
        pixels, _, _ = golden_pixels(name)
        a, b = ref.image_embeddings(hf, pixels), ref.image_embeddings(native, pixels)
        err = rel_err(a, b)
        assert err <= 1e-10, f"fixture image embeddings hf vs native rel {err:.3g} ({name})"
        assert np.all(np.isfinite(b)) and 0.1 < np.max(np.abs(b)) < 100.0


def permute_for_rope(w, n_heads):
    """transformers convert_mistral3_weights_to_hf.py: view(n_heads, hd/2, 2, in).transpose(1, 2)."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def check_permutation(ckpt):
    """HF q/k == permute_for_rope(native q/k); every other tensor bit-identical."""
    hf, native = ref.load(os.path.join(ckpt, "hf")), ref.load(os.path.join(ckpt, "native"))
    c, vc = native.cfg, native.cfg["vision"]
    for layers, heads in ((zip(hf.layers, native.layers), {"wq": c["n_heads"], "wk": c["n_kv_heads"]}),
                          (zip(hf.vision["layers"], native.vision["layers"]), {"wq": vc["n_heads"], "wk": vc["n_heads"]})):
        for lh, ln in layers:
            for key in lh:
                want = permute_for_rope(ln[key], heads[key]) if key in heads else ln[key]
                assert np.array_equal(lh[key], want), f"{ckpt}: {key} differs between layouts"
    for key in ("tok_emb", "norm", "output"):
        assert np.array_equal(getattr(hf, key), getattr(native, key)), key
    for key in ("patch_conv", "ln_pre", "pre_mm_norm", "merging", "w_in", "w_out"):
        assert np.array_equal(hf.vision[key], native.vision[key]), key


def test_fixture_permutation():
    need_numpy()
    check_permutation(GOLDEN)   # the golden files obey the same rule
    check_permutation(fixture_dir())
    check_permutation(fixture_dir("--seed", "5", "--heads", "8", "--kv-heads", "2", "--head-dim", "32",
                                  "--vision-dim", "96", "--vision-heads", "3", "--vision-head-dim", "32",
                                  "--layers", "1", "--vision-layers", "1", "--vocab-size", "1300"))


def test_fixture_files():
    need_numpy()
    out = fixture_dir()
    hf_dir, native_dir = os.path.join(out, "hf"), os.path.join(out, "native")
    assert sorted(os.listdir(native_dir)) == ["SYSTEM_PROMPT.txt", "consolidated.safetensors", "params.json",
                                              "tekken.json"], os.listdir(native_dir)
    assert sorted(os.listdir(hf_dir)) == ["config.json", "model-00001-of-00002.safetensors",
                                          "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                                          "tekken.json"], os.listdir(hf_dir)
    # same keys as the golden configs (values differ)
    def keys(d):
        return {k: keys(v) if isinstance(v, dict) else None for k, v in d.items()}
    for layout, name in (("hf", "config.json"), ("native", "params.json")):
        mine, gold = json.load(open(os.path.join(out, layout, name))), json.load(open(os.path.join(GOLDEN, layout, name)))
        assert keys(mine) == keys(gold), f"{name}: keys differ from the golden file"
    # tensor set: MODEL.md §2.1 scaled down, all BF16, index matches the shards
    index = json.load(open(os.path.join(hf_dir, "model.safetensors.index.json")))
    total, names = 0, set()
    for shard in sorted(set(index["weight_map"].values())):
        with open(os.path.join(hf_dir, shard), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            assert info["dtype"] == "BF16", name
            assert index["weight_map"][name] == shard, name
            total += info["data_offsets"][1] - info["data_offsets"][0]
            names.add(name)
    assert names == set(index["weight_map"]) and total == index["metadata"]["total_size"]
    assert len(names) == 3 + 2 * 9 + 2 + 2 * 9 + 4, len(names)
    # deterministic: the same flags give the same bytes, another seed other weights
    again = fixture_dir("--seed", "1234")
    other = fixture_dir("--seed", "99")
    def digest(d, f):
        return hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
    assert digest(out, "native/consolidated.safetensors") == digest(again, "native/consolidated.safetensors")
    assert digest(out, "native/consolidated.safetensors") != digest(other, "native/consolidated.safetensors")
    assert digest(out, "native/tekken.json") == digest(other, "native/tekken.json")


def test_fixture_tekken():
    out = fixture_dir()
    text = open(os.path.join(out, "native", "tekken.json"), encoding="utf-8").read()
    assert text == open(os.path.join(out, "hf", "tekken.json"), encoding="utf-8").read()
    tk = json.loads(text)
    gold = json.load(open(os.path.join(GOLDEN, "native", "tekken.json")))
    cfg = tk["config"]
    assert cfg["pattern"] == gold["config"]["pattern"], "pattern differs from Tekken's"
    assert (cfg["version"], cfg["default_vocab_size"], cfg["default_num_special_tokens"]) == ("v7", 2048, 1000)
    vocab = tk["vocab"]
    assert cfg["num_vocab_tokens"] == len(vocab) > cfg["default_vocab_size"] - cfg["default_num_special_tokens"]
    assert [v["rank"] for v in vocab] == list(range(len(vocab)))
    token_bytes = [base64.b64decode(v["token_bytes"]) for v in vocab]
    assert token_bytes[:256] == [bytes([b]) for b in range(256)], "ranks 0..255 must be the single bytes"
    assert len(set(token_bytes)) == len(token_bytes), "duplicate tokens"
    n_null = 0
    for b, v in zip(token_bytes, vocab):
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError:
            s = None
        assert v["token_str"] == s, (v, s)
        n_null += s is None
    assert n_null > 128, "expected partial UTF-8 tokens beyond the single bytes 0x80..0xFF"
    assert tk["special_tokens"] == gold["special_tokens"]
    assert tk["multimodal"] == {"image_patch_size": 14, "max_image_size": 1540, "spatial_merge_size": 2}


def test_fixture_errors():
    exe = fixture_binary()
    tmp = tempfile.mkdtemp(prefix="errors_", dir=scratch_dir())
    blocker = os.path.join(tmp, "file")
    open(blocker, "w").close()
    for args in ([], [tmp + "/a", "--dim", "x"], [tmp + "/a", "--bogus", "1"], [blocker + "/sub"],
                 [tmp + "/a", "--heads", "3"], [tmp + "/a", "--vision-dim", "60"], [tmp + "/a", "--seed"]):
        r = subprocess.run([exe, *args], capture_output=True, text=True)
        assert r.returncode == 1, (args, r.returncode)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("fixture: "), (args, r.stderr)
    assert not os.path.exists(tmp + "/a"), "a rejected command created its output directory"
