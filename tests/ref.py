#!/usr/bin/python3
"""Independent float64 numpy reference for Mistral Small 3.1 (text decoder, Pixtral encoder, projector).

Written from docs/MODEL.md (the section numbers below refer to it), not from our C code, and reading the
ORIGINAL checkpoint, never our converted file. Both official layouts are supported and detected from the
directory's contents:

  hf      config.json + model.safetensors.index.json + shards; q/k rows in rotate-half order, so RoPE
          rotates the pairs (i, i + hd/2) of each head (§3).
  native  params.json + consolidated.safetensors; q/k rows in interleaved order, so RoPE rotates the
          pairs (2i, 2i + 1) (§3, §4).

Each layout keeps its own weights and its own RoPE; nothing converts one into the other. The two paths
must agree to ~1e-12, which catches a converter (or a reader) that permutes q/k the wrong way.

API (all arrays float64):
  load(path) -> Model
  logits(model, token_ids, image_embeds=None) -> [n, vocab]    causal, positions 0..n-1, no BOS added
  generate_greedy(model, prompt_ids, n, image_embeds=None) -> list of n ids (argmax, no stop)
  preprocess(image_path) -> (pixels [3, H, W], grid_rows, grid_cols)          §5.1
  image_embeddings(model, pixels) -> [rows*cols, text_dim]                    §5.2, §5.3
  image_tokens(rows, cols) -> list of ids                                     §6
  image_prompt(image_token_block, text_ids) -> ids of "<s>[INST]" image text "[/INST]"

Debugging CLI (dumps are little-endian float32, row-major):
  /usr/bin/python3 tests/ref.py CKPT --tokens 1,2,3 --dump-logits FILE
  /usr/bin/python3 tests/ref.py CKPT --image IMG --dump-image-embeddings FILE [--dump-pixels FILE]
  /usr/bin/python3 tests/ref.py CKPT --image IMG --tokens TEXT_IDS --generate 16
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

IMG, IMG_BREAK, IMG_END = 10, 12, 13          # §6
BOS, INST, END_INST = 1, 3, 4                 # §7
PATCH, MERGE, MAX_IMAGE_SIZE = 14, 2, 1540    # §5.1 (tekken.json "multimodal")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_EPS = 1e-5                             # hard-coded in the reference (§1)


# ---------------------------------------------------------------------------------------------------
# safetensors (§2): u64 LE header length, JSON header, raw little-endian row-major data

def read_safetensors(path):
    """Returns {name: float64 array} for every tensor of one .safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        shape = info["shape"]
        count = int(np.prod(shape)) if shape else 1
        raw = data[base + begin:base + end]
        dtype = info["dtype"]
        if dtype == "BF16":
            assert len(raw) == 2 * count, name
            bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
            arr = bits.view("<f4")
        elif dtype == "F16":
            assert len(raw) == 2 * count, name
            arr = np.frombuffer(raw, "<f2")
        elif dtype == "F32":
            assert len(raw) == 4 * count, name
            arr = np.frombuffer(raw, "<f4")
        else:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dtype}")
        out[name] = arr.astype(np.float64).reshape(shape)
    return out


# ---------------------------------------------------------------------------------------------------
# checkpoint: config + weights (§1, §2.1)

class Model:
    """layout: "hf" or "native"; cfg: hyperparameters under our names; the weights as attributes.

    Text:   tok_emb [vocab, dim], norm [dim], output [vocab, dim], layers: list of dicts with
            attn_norm, wq [H*hd, dim], wk [KV*hd, dim], wv [KV*hd, dim], wo [dim, H*hd],
            ffn_norm, w1 [hidden, dim], w3 [hidden, dim], w2 [dim, hidden].
    Vision (None if absent): dict with patch_conv [D, 3, 14, 14], ln_pre [D], layers (same keys as
            text), pre_mm_norm [D], merging [D, 4D], w_in [dim, D], w_out [dim, dim].
    wq/wk rows are in the layout's own order (rotate-half for hf, interleaved for native).
    """


TEXT_LAYER_NAMES = {  # our key: (native suffix, HF suffix) under layers.N.
    "attn_norm": ("attention_norm", "input_layernorm"),
    "wq": ("attention.wq", "self_attn.q_proj"),
    "wk": ("attention.wk", "self_attn.k_proj"),
    "wv": ("attention.wv", "self_attn.v_proj"),
    "wo": ("attention.wo", "self_attn.o_proj"),
    "ffn_norm": ("ffn_norm", "post_attention_layernorm"),
    "w1": ("feed_forward.w1", "mlp.gate_proj"),
    "w3": ("feed_forward.w3", "mlp.up_proj"),
    "w2": ("feed_forward.w2", "mlp.down_proj"),
}
VISION_LAYER_NAMES = {
    "attn_norm": ("attention_norm", "attention_norm"),
    "wq": ("attention.wq", "attention.q_proj"),
    "wk": ("attention.wk", "attention.k_proj"),
    "wv": ("attention.wv", "attention.v_proj"),
    "wo": ("attention.wo", "attention.o_proj"),
    "ffn_norm": ("ffn_norm", "ffn_norm"),
    "w1": ("feed_forward.w1", "feed_forward.gate_proj"),
    "w3": ("feed_forward.w3", "feed_forward.up_proj"),
    "w2": ("feed_forward.w2", "feed_forward.down_proj"),
}


def _config(path, layout):
    if layout == "native":
        p = json.load(open(os.path.join(path, "params.json")))
        cfg = dict(dim=p["dim"], n_layers=p["n_layers"], n_heads=p["n_heads"], n_kv_heads=p["n_kv_heads"],
                   head_dim=p.get("head_dim", p["dim"] // p["n_heads"]), hidden_dim=p["hidden_dim"],
                   norm_eps=p["norm_eps"], rope_theta=p.get("rope_theta", 1e6), vocab_size=p["vocab_size"])
        v = p.get("vision_encoder")
        if v:
            cfg["vision"] = dict(dim=v["hidden_size"], n_layers=v["num_hidden_layers"],
                                 n_heads=v["num_attention_heads"], hidden_dim=v["intermediate_size"],
                                 rope_theta=v["rope_theta"], patch_size=v["patch_size"],
                                 image_size=v.get("max_image_size", v.get("image_size")),
                                 merge=v.get("spatial_merge_size", 1))
    else:
        c = json.load(open(os.path.join(path, "config.json")))
        t = c["text_config"]
        cfg = dict(dim=t["hidden_size"], n_layers=t["num_hidden_layers"], n_heads=t["num_attention_heads"],
                   n_kv_heads=t["num_key_value_heads"],
                   head_dim=t.get("head_dim") or t["hidden_size"] // t["num_attention_heads"],
                   hidden_dim=t["intermediate_size"], norm_eps=t["rms_norm_eps"], rope_theta=t["rope_theta"],
                   vocab_size=t["vocab_size"])
        v = c.get("vision_config")
        if v:
            cfg["vision"] = dict(dim=v["hidden_size"], n_layers=v["num_hidden_layers"],
                                 n_heads=v["num_attention_heads"], hidden_dim=v["intermediate_size"],
                                 rope_theta=v["rope_theta"], patch_size=v["patch_size"],
                                 image_size=v["image_size"], merge=c.get("spatial_merge_size", 1))
    if "vision" in cfg:
        v = cfg["vision"]
        v["head_dim"] = v["dim"] // v["n_heads"]   # Pixtral: hidden_size / heads (§5.2)
    return cfg


def load(path):
    """Loads a checkpoint directory in either layout (auto-detected) as float64 arrays."""
    m = Model()
    if os.path.exists(os.path.join(path, "params.json")):
        m.layout = "native"
        w = read_safetensors(os.path.join(path, "consolidated.safetensors"))
    elif os.path.exists(os.path.join(path, "config.json")):
        m.layout = "hf"
        index = json.load(open(os.path.join(path, "model.safetensors.index.json")))
        w = {}
        for shard in sorted(set(index["weight_map"].values())):
            w.update(read_safetensors(os.path.join(path, shard)))
        missing = set(index["weight_map"]) - set(w)
        if missing:
            raise ValueError(f"index lists tensors missing from the shards: {sorted(missing)[:5]}")
    else:
        raise ValueError(f"{path}: neither params.json (native) nor config.json (HF)")
    m.cfg = _config(path, m.layout)
    used = set()

    def take(name):
        used.add(name)
        return w[name]

    if m.layout == "native":
        text, lm_head, vis, proj = "", "output.weight", "vision_encoder.", ""
        names = {"emb": "tok_embeddings.weight", "norm": "norm.weight", "pre_mm_norm": "pre_mm_projector_norm.weight",
                 "merging": "patch_merger.merging_layer.weight", "w_in": "vision_language_adapter.w_in.weight",
                 "w_out": "vision_language_adapter.w_out.weight"}
        k = 0
    else:
        # transformers 4.50 names (language_model.model.*) or the >= 4.52 re-save (model.language_model.*)
        new = "model.language_model.embed_tokens.weight" in w
        text = "model.language_model." if new else "language_model.model."
        lm_head = "lm_head.weight" if new else "language_model.lm_head.weight"
        vis = "model.vision_tower." if new else "vision_tower."
        proj = "model.multi_modal_projector." if new else "multi_modal_projector."
        names = {"emb": text + "embed_tokens.weight", "norm": text + "norm.weight",
                 "pre_mm_norm": proj + "norm.weight", "merging": proj + "patch_merger.merging_layer.weight",
                 "w_in": proj + "linear_1.weight", "w_out": proj + "linear_2.weight"}
        k = 1
    c = m.cfg
    m.tok_emb = take(names["emb"])
    m.norm = take(names["norm"])
    m.output = take(lm_head)
    m.layers = [{key: take(f"{text}layers.{l}.{pair[k]}.weight") for key, pair in TEXT_LAYER_NAMES.items()}
                for l in range(c["n_layers"])]
    assert m.tok_emb.shape == (c["vocab_size"], c["dim"])
    assert m.layers[0]["wq"].shape == (c["n_heads"] * c["head_dim"], c["dim"])
    assert m.layers[0]["wk"].shape == (c["n_kv_heads"] * c["head_dim"], c["dim"])
    m.vision = None
    if "vision" in c and (vis + "patch_conv.weight") in w:
        vc = c["vision"]
        m.vision = dict(
            patch_conv=take(vis + "patch_conv.weight"),
            ln_pre=take(vis + "ln_pre.weight"),
            layers=[{key: take(f"{vis}transformer.layers.{l}.{pair[k]}.weight")
                     for key, pair in VISION_LAYER_NAMES.items()} for l in range(vc["n_layers"])],
            pre_mm_norm=take(names["pre_mm_norm"]),
            merging=take(names["merging"]),
            w_in=take(names["w_in"]),
            w_out=take(names["w_out"]))
        assert m.vision["patch_conv"].shape == (vc["dim"], 3, vc["patch_size"], vc["patch_size"])
    unused = set(w) - used
    if unused:
        raise ValueError(f"unexpected tensors in checkpoint: {sorted(unused)[:5]}")
    return m


# ---------------------------------------------------------------------------------------------------
# building blocks

def rmsnorm(x, weight, eps):
    """x [..., d]: w * x / sqrt(mean(x^2) + eps)  (no +1 offset, no mean subtraction, §4)."""
    return weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def silu(x):
    return x / (1.0 + np.exp(-x))


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_erf(x):
    """Exact GELU 0.5 x (1 + erf(x / sqrt 2)) (§5.3)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def softmax(s, axis=-1):
    s = s - np.max(s, axis=axis, keepdims=True)
    e = np.exp(s)
    return e / np.sum(e, axis=axis, keepdims=True)


def inv_freq_f32(theta, head_dim):
    """1 / theta^(2i/hd), i < hd/2, evaluated like torch in float32 (§4)."""
    exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)      # fp32 division
    power = (np.float64(theta) ** exponent.astype(np.float64)).astype(np.float32)      # fp32 pow
    return (1.0 / power.astype(np.float64)).astype(np.float32)                         # fp32 reciprocal


def rope_angles_1d(positions, theta, head_dim):
    """[n, hd/2] angles: fp32(pos) * inv_freq_f32 rounded once to fp32, returned as float64 (§4)."""
    pos = np.asarray(positions, dtype=np.float32)
    return np.outer(pos, inv_freq_f32(theta, head_dim)).astype(np.float32).astype(np.float64)


def rope_interleaved(x, angles):
    """Native: rotate pairs (2i, 2i+1) of every head. x [n, heads, hd], angles [n, hd/2]."""
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2] = a * cos - b * sin
    y[..., 1::2] = a * sin + b * cos
    return y


def rope_rotate_half(x, angles):
    """HF: x*cos + rotate_half(x)*sin with cos/sin = cat(angles, angles), i.e. pairs (i, i + hd/2)."""
    cos = np.cos(np.concatenate([angles, angles], axis=-1))[:, None, :]
    sin = np.sin(np.concatenate([angles, angles], axis=-1))[:, None, :]
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def apply_rope(model, x, angles):
    return rope_rotate_half(x, angles) if model.layout == "hf" else rope_interleaved(x, angles)


def attention(model, layer, h, angles, n_heads, n_kv_heads, head_dim, causal):
    """h [n, d] (already normalized) -> wo . concat(heads) [n, d]."""
    n = h.shape[0]
    q = (h @ layer["wq"].T).reshape(n, n_heads, head_dim)
    k = (h @ layer["wk"].T).reshape(n, n_kv_heads, head_dim)
    v = (h @ layer["wv"].T).reshape(n, n_kv_heads, head_dim)
    q, k = apply_rope(model, q, angles), apply_rope(model, k, angles)
    group = n_heads // n_kv_heads                   # kv head g serves q heads g*group .. (§4: a / group)
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(head_dim)
    if causal:
        s = np.where(np.tril(np.ones((n, n), dtype=bool))[None], s, -np.inf)
    o = np.einsum("hqk,khd->qhd", softmax(s), v).reshape(n, n_heads * head_dim)
    return o @ layer["wo"].T


def feed_forward(layer, h):
    """w2(silu(w1(h)) * w3(h))"""
    return (silu(h @ layer["w1"].T) * (h @ layer["w3"].T)) @ layer["w2"].T


# ---------------------------------------------------------------------------------------------------
# text decoder (§4)

def embed(model, token_ids, image_embeds=None):
    """[n, dim] input rows: token embeddings, with image_embeds rows substituted in order at id 10 (§6)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    x = model.tok_emb[ids].copy()
    slots = np.nonzero(ids == IMG)[0]
    if image_embeds is not None:
        image_embeds = np.asarray(image_embeds, dtype=np.float64)
        if len(slots) != image_embeds.shape[0]:
            raise ValueError(f"{len(slots)} [IMG] tokens but {image_embeds.shape[0]} image embedding rows")
        x[slots] = image_embeds
    return x


def logits(model, token_ids, image_embeds=None):
    """Causal forward over token_ids at positions 0..n-1 (no BOS added): logits [n, vocab]."""
    c = model.cfg
    x = embed(model, token_ids, image_embeds)
    angles = rope_angles_1d(np.arange(len(token_ids)), c["rope_theta"], c["head_dim"])
    for layer in model.layers:
        h = rmsnorm(x, layer["attn_norm"], c["norm_eps"])
        x = x + attention(model, layer, h, angles, c["n_heads"], c["n_kv_heads"], c["head_dim"], causal=True)
        h = rmsnorm(x, layer["ffn_norm"], c["norm_eps"])
        x = x + feed_forward(layer, h)
    return rmsnorm(x, model.norm, c["norm_eps"]) @ model.output.T


def generate_greedy(model, prompt_ids, n, image_embeds=None):
    """n argmax steps after prompt_ids (no stop condition); recomputes the whole sequence each step."""
    ids = list(prompt_ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(logits(model, ids, image_embeds)[-1]))
        out.append(nxt)
        ids.append(nxt)
    return out


# ---------------------------------------------------------------------------------------------------
# image preprocessing (§5.1), as mistral-common does it

def image_grid(width, height):
    """(rows, cols) of merged tokens for an original image of width x height (§5.1 step 2)."""
    ratio = max(height / MAX_IMAGE_SIZE, width / MAX_IMAGE_SIZE)
    if ratio > 1:
        width, height = round(width / ratio), round(height / ratio)   # Python round: half to even
    cell = PATCH * MERGE
    rows, cols = (height - 1) // cell + 1, (width - 1) // cell + 1
    if rows <= 0 or cols <= 0:
        raise ValueError("image too thin: a side rounds to 0 tokens")
    return rows, cols


def to_rgb(image):
    """uint8 [H, W, 3]: RGB unchanged, anything else composited on white (§5.1 step 3)."""
    if image.mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.int64)
    src, a = rgba[..., :3], rgba[..., 3:4]
    out = (2 * (src * a + 255 * (255 - a)) + 255) // 510     # floor((src*a + 255*(255-a)) / 255 + 0.5)
    return out.astype(np.uint8)


def preprocess(image_path):
    """(pixels [3, H, W] float64 normalized, grid_rows, grid_cols)."""
    from PIL import Image
    import cv2
    image = Image.open(image_path)
    rows, cols = image_grid(*image.size)
    rgb = to_rgb(image)
    cell = PATCH * MERGE
    resized = cv2.resize(rgb.astype(np.float32), (cols * cell, rows * cell), interpolation=cv2.INTER_CUBIC)
    # float64 as MODEL.md §5.1 says; mistral-common's `np_image / 255.0` actually runs in float32 (cv2's
    # output dtype) before the float64 mean/std step: a difference of <= 1 fp32 ulp (~6e-8).
    pixels = (resized.astype(np.float64) / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    return pixels.transpose(2, 0, 1).copy(), rows, cols


# ---------------------------------------------------------------------------------------------------
# Pixtral vision encoder (§5.2) and projector (§5.3)

def rope_angles_2d(rows_p, cols_p, theta, head_dim):
    """[rows_p*cols_p, hd/2] angles for patches in row-major order: height uses the even-indexed
    frequencies, width the odd-indexed ones, height pairs first (§5.2). fp32 like the reference."""
    freqs = inv_freq_f32(theta, head_dim)                               # hd/2 frequencies
    py, px = np.meshgrid(np.arange(rows_p), np.arange(cols_p), indexing="ij")
    ah = np.outer(py.ravel().astype(np.float32), freqs[0::2]).astype(np.float32)
    aw = np.outer(px.ravel().astype(np.float32), freqs[1::2]).astype(np.float32)
    return np.concatenate([ah, aw], axis=1).astype(np.float64)


def vision_encoder(model, pixels):
    """pixels [3, H, W] -> [H/14 * W/14, D], patches row-major, after the last layer (no final norm)."""
    v, vc = model.vision, model.cfg["vision"]
    p = vc["patch_size"]
    _, height, width = pixels.shape
    rows_p, cols_p = height // p, width // p
    patches = pixels.reshape(3, rows_p, p, cols_p, p).transpose(1, 3, 0, 2, 4).reshape(rows_p * cols_p, 3 * p * p)
    x = patches @ v["patch_conv"].reshape(vc["dim"], -1).T             # conv, stride = kernel, no bias
    x = rmsnorm(x, v["ln_pre"], VISION_EPS)
    angles = rope_angles_2d(rows_p, cols_p, vc["rope_theta"], vc["head_dim"])
    for layer in v["layers"]:
        h = rmsnorm(x, layer["attn_norm"], VISION_EPS)
        x = x + attention(model, layer, h, angles, vc["n_heads"], vc["n_heads"], vc["head_dim"], causal=False)
        h = rmsnorm(x, layer["ffn_norm"], VISION_EPS)
        x = x + feed_forward(layer, h)
    return x, rows_p, cols_p


def image_embeddings(model, pixels):
    """pixels [3, H, W] -> [rows*cols, text_dim], one row per [IMG] token (merged grid, row-major)."""
    v = model.vision
    z, rows_p, cols_p = vision_encoder(model, pixels)
    z = rmsnorm(z, v["pre_mm_norm"], VISION_EPS)
    d = z.shape[1]
    rows, cols = rows_p // MERGE, cols_p // MERGE
    # u[R*cols + C][c*4 + ki*2 + kj] = z[(2R+ki)*cols_p + (2C+kj)][c]: channel-major 2x2 merge
    u = z.reshape(rows, MERGE, cols, MERGE, d).transpose(0, 2, 4, 1, 3).reshape(rows * cols, d * MERGE * MERGE)
    m = u @ v["merging"].T
    return gelu_erf(m @ v["w_in"].T) @ v["w_out"].T


# ---------------------------------------------------------------------------------------------------
# prompt layout (§6, §8)

def image_tokens(rows, cols):
    """([IMG] x cols, [IMG_BREAK]) x rows, the last [IMG_BREAK] replaced by [IMG_END]."""
    ids = ([IMG] * cols + [IMG_BREAK]) * rows
    ids[-1] = IMG_END
    return ids


def image_prompt(image_ids, text_ids):
    """<s>[INST] image block, text [/INST] (no system prompt; the image goes first)."""
    return [BOS, INST] + list(image_ids) + list(text_ids) + [END_INST]


# ---------------------------------------------------------------------------------------------------
# command line

def main(argv):
    ap = argparse.ArgumentParser(description="float64 numpy reference for Mistral Small 3.1")
    ap.add_argument("checkpoint", help="directory in HF or native layout")
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--dump-logits", metavar="FILE", help="write logits [n, vocab] as float32")
    ap.add_argument("--image", help="image file")
    ap.add_argument("--dump-image-embeddings", metavar="FILE", help="write [rows*cols, dim] as float32")
    ap.add_argument("--dump-pixels", metavar="FILE", help="write normalized pixels [3, H, W] as float32")
    ap.add_argument("--generate", type=int, metavar="N",
                    help="greedy N ids after <s>[INST] image text-ids [/INST] (or after --tokens alone)")
    args = ap.parse_args(argv)
    model = load(args.checkpoint)
    print(f"layout {model.layout}, cfg {json.dumps(model.cfg)}")
    ids = [int(t) for t in args.tokens.split(",")] if args.tokens else []
    emb = None
    if args.image:
        pixels, rows, cols = preprocess(args.image)
        print(f"grid {rows}x{cols}")
        if args.dump_pixels:
            pixels.astype("<f4").tofile(args.dump_pixels)
        emb = image_embeddings(model, pixels)
        if args.dump_image_embeddings:
            emb.astype("<f4").tofile(args.dump_image_embeddings)
    if args.dump_logits:
        logits(model, ids).astype("<f4").tofile(args.dump_logits)
    if args.generate:
        prompt = image_prompt(image_tokens(rows, cols), ids) if args.image else ids
        print("prompt_ids", ",".join(map(str, prompt)))
        print("generated", ",".join(map(str, generate_greedy(model, prompt, args.generate, emb))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
