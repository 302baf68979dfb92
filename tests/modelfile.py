"""Reads our model file format with numpy, written from the README's format table (not from model.h).

Used by the tests to check what quantize wrote: header, config, tokenizer, tensor directory, and
every tensor dequantized to float64.
"""
import struct

import numpy as np

CONFIG_FIELDS = [
    ("dim", "i"), ("n_layers", "i"), ("n_heads", "i"), ("n_kv_heads", "i"), ("head_dim", "i"),
    ("hidden_dim", "i"), ("vocab_size", "i"), ("max_seq_len", "i"), ("rope_theta", "f"), ("norm_eps", "f"),
    ("vision_dim", "i"), ("vision_layers", "i"), ("vision_heads", "i"), ("vision_head_dim", "i"),
    ("vision_hidden_dim", "i"), ("num_channels", "i"), ("patch_size", "i"), ("max_image_size", "i"),
    ("spatial_merge_size", "i"), ("vision_rope_theta", "f"), ("vision_norm_eps", "f"),
    ("n_special", "i"), ("bos_id", "i"), ("eos_id", "i"), ("image_token_id", "i"), ("image_break_id", "i"),
    ("image_end_id", "i"),
]
TYPES = {0: "f32", 1: "f16", 2: "q8", 3: "q4"}


class ModelFile:
    def __init__(self, path):
        self.path = path
        self.buf = open(path, "rb").read()
        b = self.buf
        magic, self.version, n_tensors, tok_off, tok_bytes, dir_off, file_bytes = struct.unpack_from("<8sII4Q", b, 0)
        assert magic == b"MS31RUN\0", f"bad magic {magic!r}"
        assert file_bytes == len(b), "file size disagrees with header"
        fmt = "<" + "".join(t for _, t in CONFIG_FIELDS)
        self.config = dict(zip([n for n, _ in CONFIG_FIELDS], struct.unpack_from(fmt, b, 48)))
        # tokenizer
        n_vocab, n_special, pattern_bytes, _ = struct.unpack_from("<4I", b, tok_off)
        p = tok_off + 16
        vocab_off = np.frombuffer(b, "<u4", n_vocab + 1, p); p += 4 * (n_vocab + 1)
        special_off = np.frombuffer(b, "<u4", n_special + 1, p); p += 4 * (n_special + 1)
        self.pattern = b[p:p + pattern_bytes].decode(); p += pattern_bytes
        vocab_blob = b[p:p + int(vocab_off[-1])]; p += int(vocab_off[-1])
        special_blob = b[p:p + int(special_off[-1])]; p += int(special_off[-1])
        assert p <= tok_off + tok_bytes
        self.vocab = [vocab_blob[vocab_off[i]:vocab_off[i + 1]] for i in range(n_vocab)]
        self.special = [special_blob[special_off[i]:special_off[i + 1]].decode() for i in range(n_special)]
        # directory
        self.tensors = {}
        for i in range(n_tensors):
            e = struct.unpack_from("<80sII4IQQ", b, dir_off + 128 * i)
            name = e[0].rstrip(b"\0").decode()
            self.tensors[name] = dict(type=TYPES[e[1]], shape=tuple(e[3:3 + e[2]]), offset=e[7], bytes=e[8])
            assert e[7] % 64 == 0 and e[7] + e[8] <= len(b)

    def raw(self, name):
        t = self.tensors[name]
        return self.buf[t["offset"]:t["offset"] + t["bytes"]]

    def tensor(self, name):
        """The tensor dequantized to float64, in its shape."""
        t = self.tensors[name]
        raw = self.raw(name)
        n = int(np.prod(t["shape"]))
        if t["type"] == "f32":
            x = np.frombuffer(raw, "<f4").astype(np.float64)
        elif t["type"] == "f16":
            x = np.frombuffer(raw, "<f2").astype(np.float64)
        elif t["type"] == "q8":
            x = dequantize_q8(ungroup_q8(raw, t["shape"][0], n // t["shape"][0]), n)
        else:
            x = dequantize_q4(ungroup_q4(raw, t["shape"][0], n // t["shape"][0]), n)
        return x.reshape(t["shape"])


def ungroup_q8(raw, rows, cols):
    """q8 matrices are stored in groups of 16 rows: group G = cols/32 blocks of 544 bytes, block b holding
    block b of rows 16G..16G+15: their 16 fp16 scales, then 8 lines of 64 bytes, line g = weights 4g..4g+3
    of each of the 16 rows. Returns the rows' blocks one row after another (34 bytes each)."""
    nb = cols // 32
    blk = np.frombuffer(raw, np.uint8).reshape(rows // 16, nb, 544)
    d = blk[:, :, :32].reshape(-1, nb, 16, 2).transpose(0, 2, 1, 3)
    q = blk[:, :, 32:].reshape(-1, nb, 8, 16, 4).transpose(0, 3, 1, 2, 4).reshape(-1, 16, nb, 32)
    return np.concatenate([d, q], axis=3).tobytes()


def ungroup_q4(raw, rows, cols):
    """q4 matrices are stored in groups of 16 rows: group G = cols/256 blocks of 2304 bytes, block b holding
    block b of rows 16G..16G+15: their 16 d, 16 dmin (fp16), 16 x 12 scale bytes, then 32 lines of 64 bytes,
    line w = bytes 4w..4w+3 of each row's 128 level bytes. Returns the rows' 144-byte blocks in row order."""
    nb = cols // 256
    blk = np.frombuffer(raw, np.uint8).reshape(rows // 16, nb, 2304)
    d = blk[:, :, :32].reshape(-1, nb, 16, 2).transpose(0, 2, 1, 3)
    dmin = blk[:, :, 32:64].reshape(-1, nb, 16, 2).transpose(0, 2, 1, 3)
    scales = blk[:, :, 64:256].reshape(-1, nb, 16, 12).transpose(0, 2, 1, 3)
    qs = blk[:, :, 256:].reshape(-1, nb, 32, 16, 4).transpose(0, 3, 1, 2, 4).reshape(-1, 16, nb, 128)
    return np.concatenate([d, dmin, scales, qs], axis=3).tobytes()


def dequantize_q8(raw, n):
    """Blocks of 34 bytes: fp16 d, 32 x int8 q; value = d * q."""
    blocks = np.frombuffer(raw, np.uint8).reshape(n // 32, 34)
    d = blocks[:, :2].copy().view("<f2").astype(np.float64)
    q = blocks[:, 2:].view(np.int8).astype(np.float64)
    return (d * q).reshape(-1)


def dequantize_q4(raw, n):
    """Blocks of 144 bytes: fp16 d, fp16 dmin, 12 bytes of sixteen 6-bit values (8 scales, 8 mins) as a
    little-endian bit stream, 128 bytes of 4-bit levels: byte 32k+i holds weight 64k+i in its low nibble
    and weight 64k+32+i in its high nibble. w[32j+i] = d*sc[j]*q - dmin*mn[j]."""
    blocks = np.frombuffer(raw, np.uint8).reshape(n // 256, 144)
    d = blocks[:, 0:2].copy().view("<f2").astype(np.float64)
    dmin = blocks[:, 2:4].copy().view("<f2").astype(np.float64)
    packed = blocks[:, 4:16].astype(np.uint32).reshape(-1, 4, 3)
    groups = packed[:, :, 0] | packed[:, :, 1] << 8 | packed[:, :, 2] << 16          # (blocks, 4) of 24 bits
    six = np.stack([(groups >> (6 * k)) & 63 for k in range(4)], axis=2).reshape(-1, 16).astype(np.float64)
    sc, mn = six[:, :8], six[:, 8:]
    qs = blocks[:, 16:].reshape(-1, 4, 32)
    q = np.stack([qs & 15, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.float64)  # (blocks, sub-block, 32)
    w = (d * sc)[:, :, None] * q - (dmin * mn)[:, :, None]
    return w.reshape(-1)
