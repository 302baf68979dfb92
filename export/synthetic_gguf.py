"""A GGUF file with Mistral Small 3.1's text shapes and random weights, for timing llama.cpp (our peer) on
the same machine as `make bench` (tests/llamacpp.sh). Its outputs mean nothing.

    python3 export/synthetic_gguf.py OUT.gguf [LAYERS]      (needs numpy)

What llama-quantize's Q4_0 makes: every matrix Q4_0 except the output head (Q6_K), f32 norms, and the
"llama" architecture, which llama.cpp runs Mistral's text decoder as. The vocabulary is a placeholder (SPM
style, with the byte tokens llama.cpp looks for); timing feeds token ids, not text. GGUF v3: a header, the
metadata as typed key/value pairs, each tensor's name, shape (innermost dimension first), type and offset,
then the tensors, each on a 32-byte boundary.
"""
import os
import struct
import sys

import numpy as np

DIM, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 5120, 32768, 32, 8, 128, 131072
F32, Q4_0, Q6_K = 0, 2, 14  # ggml types
U32, FLOAT32, STRING, ARRAY, INT32 = 4, 6, 8, 9, 5  # GGUF value types
rng = np.random.default_rng(0)


def string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def metadata(layers):
    pairs = []

    def add(key, kind, value):
        pairs.append(string(key) + struct.pack("<I", kind) + value)

    def u32(key, v):
        add(key, U32, struct.pack("<I", v))

    def array(key, kind, n, data):
        add(key, ARRAY, struct.pack("<IQ", kind, n) + data)

    add("general.architecture", STRING, string("llama"))
    add("general.name", STRING, string("synthetic-24b"))
    u32("general.file_type", 2)  # mostly Q4_0
    for key, v in [("context_length", 131072), ("embedding_length", DIM), ("block_count", layers),
                   ("feed_forward_length", HIDDEN), ("rope.dimension_count", HEAD_DIM),
                   ("attention.head_count", HEADS), ("attention.head_count_kv", KV_HEADS),
                   ("attention.key_length", HEAD_DIM), ("attention.value_length", HEAD_DIM), ("vocab_size", VOCAB)]:
        u32("llama." + key, v)
    add("llama.attention.layer_norm_rms_epsilon", FLOAT32, struct.pack("<f", 1e-5))
    add("llama.rope.freq_base", FLOAT32, struct.pack("<f", 1e9))
    add("tokenizer.ggml.model", STRING, string("llama"))
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)]
    tokens += ["\u2581t%d" % i for i in range(VOCAB - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (VOCAB - 259)  # unknown, control, byte, normal
    array("tokenizer.ggml.tokens", STRING, VOCAB, b"".join(string(t) for t in tokens))
    array("tokenizer.ggml.scores", FLOAT32, VOCAB, np.zeros(VOCAB, "<f4").tobytes())
    array("tokenizer.ggml.token_type", INT32, VOCAB, np.array(types, "<i4").tobytes())
    u32("tokenizer.ggml.bos_token_id", 1)
    u32("tokenizer.ggml.eos_token_id", 2)
    u32("tokenizer.ggml.unknown_token_id", 0)
    return pairs


def tensors(layers):
    out = [("token_embd.weight", [DIM, VOCAB], Q4_0), ("output_norm.weight", [DIM], F32),
           ("output.weight", [DIM, VOCAB], Q6_K)]
    for i in range(layers):
        p = "blk.%d." % i
        out += [(p + "attn_norm.weight", [DIM], F32), (p + "attn_q.weight", [DIM, HEADS * HEAD_DIM], Q4_0),
                (p + "attn_k.weight", [DIM, KV_HEADS * HEAD_DIM], Q4_0),
                (p + "attn_v.weight", [DIM, KV_HEADS * HEAD_DIM], Q4_0),
                (p + "attn_output.weight", [HEADS * HEAD_DIM, DIM], Q4_0), (p + "ffn_norm.weight", [DIM], F32),
                (p + "ffn_gate.weight", [DIM, HIDDEN], Q4_0), (p + "ffn_up.weight", [DIM, HIDDEN], Q4_0),
                (p + "ffn_down.weight", [HIDDEN, DIM], Q4_0)]
    return out


def nbytes(shape, kind):
    n = int(np.prod(shape))
    return {F32: n * 4, Q4_0: n // 32 * 18, Q6_K: n // 256 * 210}[kind]


def random_data(shape, kind):
    """Random levels, with scales that keep activations near unit size (rows of `cols` weights)."""
    cols, n = shape[0], int(np.prod(shape))
    if kind == F32:
        return np.ones(n, "<f4").tobytes()
    if kind == Q4_0:  # blocks of 32: an f16 scale, then 16 bytes of 4-bit levels
        blocks = np.frombuffer(rng.bytes(n // 32 * 18), np.uint8).reshape(-1, 18).copy()
        blocks[:, :2] = np.frombuffer(np.float16(0.1 / cols ** 0.5).tobytes(), np.uint8)
        return blocks.tobytes()
    # Q6_K, blocks of 256: 128 bytes of low 4 bits, 64 of high 2 bits, 16 int8 scales, an f16 scale
    blocks = np.frombuffer(rng.bytes(n // 256 * 210), np.uint8).reshape(-1, 210).copy()
    blocks[:, 192:208] = 8
    blocks[:, 208:] = np.frombuffer(np.float16(0.01 / cols ** 0.5).tobytes(), np.uint8)
    return blocks.tobytes()


def main():
    path, layers = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
    pairs, table = metadata(layers), tensors(layers)
    infos, offset = [], 0
    for name, shape, kind in table:
        infos.append(string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
                     + struct.pack("<IQ", kind, offset))
        offset += -(-nbytes(shape, kind) // 32) * 32
    made = {}  # layers share their matrices' bytes: the timing does not care, and it is 40x quicker
    with open(path + ".tmp", "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(table), len(pairs)) + b"".join(pairs) + b"".join(infos))
        f.write(b"\0" * (-f.tell() % 32))
        for name, shape, kind in table:
            key = (tuple(shape), kind)
            if key not in made:
                made[key] = random_data(shape, kind)
            f.write(made[key] + b"\0" * (-len(made[key]) % 32))
    os.replace(path + ".tmp", path)
    print("%s: %d layers, %.2f GB of tensors" % (path, layers, offset / 1e9))


if __name__ == "__main__":
    main()
