"""quantize: both layouts, exactness of each type, and every kind of bad input."""
import base64, filecmp, json, os, shutil, signal, struct, subprocess, time

import numpy as np

import ref
from common import GOLDEN, build, converted, fixture, one_line_error, run, scratch
from modelfile import ModelFile, ungroup_q8

TYPES = ["f32", "f16", "q8", "q4"]


def checkpoints():
    return [GOLDEN, fixture()]


def test_layouts_convert_to_identical_files():
    for ck in checkpoints():
        for t in TYPES:
            hf, native = converted(os.path.join(ck, "hf"), t), converted(os.path.join(ck, "native"), t)
            assert filecmp.cmp(hf, native, shallow=False), f"{ck} --type {t}: hf and native files differ"


def source_tensors(ck):
    """Native source tensors of a checkpoint (native names, interleaved q/k rows) as float64."""
    return ref.read_safetensors(os.path.join(ck, "native", "consolidated.safetensors"))


def test_config_and_tokenizer_are_copied():
    for ck in checkpoints():
        m = ModelFile(converted(os.path.join(ck, "native"), "f32"))
        params = json.load(open(os.path.join(ck, "native", "params.json")))
        hf = json.load(open(os.path.join(ck, "hf", "config.json")))
        c = m.config
        assert (c["dim"], c["n_layers"], c["n_heads"], c["n_kv_heads"], c["head_dim"], c["hidden_dim"]) == (
            params["dim"], params["n_layers"], params["n_heads"], params["n_kv_heads"], params["head_dim"],
            params["hidden_dim"])
        assert c["vocab_size"] == params["vocab_size"] and c["rope_theta"] == params["rope_theta"]
        assert c["max_seq_len"] == hf["text_config"]["max_position_embeddings"]
        v = params["vision_encoder"]
        assert (c["vision_dim"], c["vision_layers"], c["vision_heads"], c["vision_hidden_dim"], c["patch_size"]) == (
            v["hidden_size"], v["num_hidden_layers"], v["num_attention_heads"], v["intermediate_size"], v["patch_size"])
        assert c["vision_head_dim"] == hf["vision_config"]["head_dim"]
        assert (c["image_token_id"], c["image_break_id"], c["image_end_id"]) == (10, 12, 13)
        tk = json.load(open(os.path.join(ck, "native", "tekken.json")))
        kept = tk["config"]["default_vocab_size"] - tk["config"]["default_num_special_tokens"]
        assert m.vocab == [base64.b64decode(e["token_bytes"]) for e in tk["vocab"][:kept]]
        assert m.special[:20] == [s["token_str"] for s in tk["special_tokens"][:20]]
        assert m.pattern == tk["config"]["pattern"]


def test_f32_is_exact():
    for ck in checkpoints():
        m = ModelFile(converted(os.path.join(ck, "native"), "f32"))
        src = source_tensors(ck)
        assert set(src) == set(m.tensors)
        for name, w in src.items():
            assert np.array_equal(m.tensor(name), w), name


def test_f16_exact_where_representable():
    for ck in checkpoints():
        m = ModelFile(converted(os.path.join(ck, "native"), "f16"))
        for name, w in source_tensors(ck).items():
            got = m.tensor(name)
            if m.tensors[name]["type"] == "f32":
                assert np.array_equal(got, w), name
                continue
            ok = np.float16(w).astype(np.float64) == w
            assert np.array_equal(got[ok], w[ok]), name
            # the others (f16 subnormals or overflow) round to the nearest f16
            assert np.array_equal(got[~ok], np.float16(w[~ok]).astype(np.float64)), name


def test_q8_within_half_a_step():
    for ck in checkpoints():
        m = ModelFile(converted(os.path.join(ck, "native"), "q8"))
        for name, w in source_tensors(ck).items():
            if m.tensors[name]["type"] != "q8":
                continue
            rows = m.tensors[name]["shape"][0]  # stored in 16-row groups: back to one row after another
            raw = np.frombuffer(ungroup_q8(m.raw(name), rows, w.size // rows), np.uint8).reshape(-1, 34)
            d = raw[:, :2].copy().view("<f2").astype(np.float64)      # (blocks, 1)
            err = np.abs(m.tensor(name).reshape(-1, 32) - w.reshape(-1, 32))
            # rounding to the nearest level: half a step, plus the fp16 rounding of the scale at |q| = 127
            bound = 0.5 * d + 127 * d * 2.0 ** -11
            assert (err <= bound + 1e-12).all(), f"{name}: q8 error above half a step"
            assert np.sqrt((err ** 2).sum() / (w ** 2).sum()) < 0.01, name


def test_q4_error_per_tensor():
    # Gaussian-like random weights: q4 lands near QUANT.md's 0.07 (tests/test_quant.c checks the families)
    for ck in checkpoints():
        m = ModelFile(converted(os.path.join(ck, "native"), "q4"))
        for name, w in source_tensors(ck).items():
            t = m.tensors[name]["type"]
            rel = np.sqrt(((m.tensor(name) - w) ** 2).sum() / (w ** 2).sum())
            limit = {"q4": 0.08, "q8": 0.01, "f32": 0.0, "f16": 1e-3}[t]
            assert rel <= limit, f"{name} ({t}): relative RMS error {rel:.4f} > {limit}"
        assert m.tensors["output.weight"]["type"] == "q8"
        assert m.tensors["vision_encoder.patch_conv.weight"]["type"] == "f32"


def test_summary_and_progress_are_printed():
    src = os.path.join(fixture(), "native")
    out = os.path.join(scratch("summary"), "m.bin")
    rc, _, err = run([build("quantize"), src, out])
    assert rc == 0, err
    assert "100%" in err and "ETA" in err
    assert "bits/weight" in err and "rel RMS err" in err and "peak RSS" in err
    row = [l for l in err.splitlines() if l.startswith("feed_forward.w1 ")][0].split()
    assert row[1] == "q4" and float(row[3]) == 4.5 and 0.03 < float(row[4]) < 0.08, row


# ---- bad input: one clear line naming the file, exit 1, no output file

def copy_checkpoint(layout="native"):
    d = scratch("bad")
    shutil.copytree(os.path.join(GOLDEN, layout), os.path.join(d, "ck"))
    return os.path.join(d, "ck"), os.path.join(d, "out.bin")


def expect_failure(src, out, *must_contain):
    rc, _, err = run([build("quantize"), src, out])
    assert rc == 1, f"exit {rc}: {err}"
    line = one_line_error(err, *must_contain)
    assert not os.path.exists(out), "an output file was left behind"
    assert not [f for f in os.listdir(os.path.dirname(out)) if ".tmp" in f], "a temporary file was left behind"
    return line


def read_header(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_safetensors(path, header, body, header_len=None):
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h) if header_len is None else header_len) + h + body)


def edit_header(path, edit):
    header, body = read_header(path)
    edit(header)
    write_safetensors(path, header, body)


def test_missing_folder_and_files():
    d = scratch("missing")
    expect_failure(os.path.join(d, "nope"), os.path.join(d, "out.bin"), "nope")
    expect_failure(d, os.path.join(d, "out.bin"), "neither params.json")
    ck, out = copy_checkpoint()
    os.remove(os.path.join(ck, "consolidated.safetensors"))
    expect_failure(ck, out, "consolidated.safetensors")
    ck, out = copy_checkpoint()
    os.remove(os.path.join(ck, "tekken.json"))
    expect_failure(ck, out, "tekken.json")
    ck, out = copy_checkpoint("hf")
    os.remove(os.path.join(ck, "model-00002-of-00002.safetensors"))
    expect_failure(ck, out, "model-00002-of-00002.safetensors")
    ck, out = copy_checkpoint()  # unreadable: a directory where the file should be
    os.remove(os.path.join(ck, "consolidated.safetensors"))
    os.mkdir(os.path.join(ck, "consolidated.safetensors"))
    expect_failure(ck, out, "consolidated.safetensors", "not a regular file")


def test_impossible_config():
    for value, why in (("0", "out of range"), ("3", "not a multiple of n_kv_heads"), ("1e12", "not a valid size")):
        ck, out = copy_checkpoint()
        p = os.path.join(ck, "params.json")
        text = open(p).read().replace('"n_heads": 4', '"n_heads": ' + value)
        open(p, "w").write(text)
        expect_failure(ck, out, "params.json", why)


def test_truncated_safetensors():
    ck, out = copy_checkpoint()
    path = os.path.join(ck, "consolidated.safetensors")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    expect_failure(ck, out, "consolidated.safetensors", "outside the data area")
    open(path, "wb").write(data[:5])
    expect_failure(ck, out, "consolidated.safetensors", "truncated")


def test_lying_header_length():
    ck, out = copy_checkpoint()
    path = os.path.join(ck, "consolidated.safetensors")
    header, body = read_header(path)
    write_safetensors(path, header, body, header_len=1 << 40)
    expect_failure(ck, out, "consolidated.safetensors", "header length")
    write_safetensors(path, header, body, header_len=100)  # cuts the JSON short
    expect_failure(ck, out, "consolidated.safetensors", "malformed header JSON")


def test_overlapping_and_wrong_size_offsets():
    ck, out = copy_checkpoint()
    path = os.path.join(ck, "consolidated.safetensors")

    def overlap(h):
        h["norm.weight"]["data_offsets"] = list(h["output.weight"]["data_offsets"])
        h["norm.weight"]["data_offsets"][1] = h["norm.weight"]["data_offsets"][0] + 512
    edit_header(path, overlap)
    expect_failure(ck, out, "consolidated.safetensors", "overlap")

    ck, out = copy_checkpoint()
    path = os.path.join(ck, "consolidated.safetensors")
    edit_header(path, lambda h: h["norm.weight"]["data_offsets"].__setitem__(1, h["norm.weight"]["data_offsets"][1] - 2))
    expect_failure(ck, out, "consolidated.safetensors", "norm.weight", "shape needs")


def test_unknown_dtype():
    ck, out = copy_checkpoint()
    edit_header(os.path.join(ck, "consolidated.safetensors"), lambda h: h["norm.weight"].__setitem__("dtype", "I8"))
    expect_failure(ck, out, "consolidated.safetensors", "norm.weight", "unsupported dtype I8")


def test_missing_tensor():
    ck, out = copy_checkpoint()
    edit_header(os.path.join(ck, "consolidated.safetensors"), lambda h: h.pop("layers.1.feed_forward.w3.weight"))
    expect_failure(ck, out, "missing tensor layers.1.feed_forward.w3.weight")
    ck, out = copy_checkpoint("hf")
    index = json.load(open(os.path.join(ck, "model.safetensors.index.json")))["weight_map"]
    name = "language_model.model.layers.0.self_attn.q_proj.weight"
    edit_header(os.path.join(ck, index[name]), lambda h: h.pop(name))
    expect_failure(ck, out, name)


def test_shape_disagrees_with_config():
    ck, out = copy_checkpoint()
    p = os.path.join(ck, "params.json")
    params = json.load(open(p))
    params["hidden_dim"] = 768
    json.dump(params, open(p, "w"))
    expect_failure(ck, out, "consolidated.safetensors", "feed_forward.w1.weight", "[640, 256]", "[768, 256]")


def test_malformed_json():
    ck, out = copy_checkpoint()
    p = os.path.join(ck, "params.json")
    open(p, "w").write(open(p).read()[:-3])
    expect_failure(ck, out, "params.json", "malformed JSON")
    ck, out = copy_checkpoint("hf")
    open(os.path.join(ck, "model.safetensors.index.json"), "w").write('{"weight_map": {"a": 1,}}')
    expect_failure(ck, out, "model.safetensors.index.json")


def test_bad_tekken():
    ck, out = copy_checkpoint()
    p = os.path.join(ck, "tekken.json")
    tk = json.load(open(p))
    tk["vocab"][300]["token_bytes"] = "not base64!"
    json.dump(tk, open(p, "w"))
    expect_failure(ck, out, "tekken.json", "300")
    ck, out = copy_checkpoint()
    p = os.path.join(ck, "tekken.json")
    tk = json.load(open(p))
    tk["config"]["pattern"] = r"\s+|\S+"
    json.dump(tk, open(p, "w"))
    expect_failure(ck, out, "tekken.json", "pattern")


def test_bad_arguments():
    rc, _, err = run([build("quantize")])
    assert rc == 2 and "usage" in err
    rc, _, err = run([build("quantize"), GOLDEN, "x.bin", "--type", "q3"])
    assert rc == 2 and "q3" in err


def test_interrupted_run_leaves_nothing():
    # A checkpoint big enough that the conversion runs for a few seconds.
    src = os.path.join(fixture("--dim", "1024", "--hidden", "4096", "--layers", "4", "--heads", "8",
                               "--head-dim", "128", "--kv-heads", "2", "--vocab-size", "8192"), "native")
    d = scratch("interrupt")
    out = os.path.join(d, "out.bin")
    p = subprocess.Popen([build("quantize"), src, out], stderr=subprocess.PIPE, text=True)
    while not [f for f in os.listdir(d) if ".tmp" in f] and p.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    assert p.returncode != 0, "conversion finished before the interrupt; make the checkpoint bigger"
    assert os.listdir(d) == [], f"left behind: {os.listdir(d)}"


# ---- other sources: F32 and F16 tensors, the newer HF names, tensors the model does not use

NEW_PREFIXES = [("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
                ("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector.")]


def rewrite_hf(dtype, extra_tensor=False):
    """A copy of the golden HF checkpoint with every tensor stored as dtype ("F32" or "F16") under the
    names transformers >= 4.52 writes (model.language_model.*, lm_head.*, model.vision_tower.*, ...)."""
    d = scratch("rewrite")
    src = os.path.join(GOLDEN, "hf")
    shutil.copytree(src, os.path.join(d, "hf"))
    ck = os.path.join(d, "hf")
    index = json.load(open(os.path.join(src, "model.safetensors.index.json")))
    rename = lambda n: next((new + n[len(old):] for old, new in NEW_PREFIXES if n.startswith(old)), n)
    for shard in sorted(set(index["weight_map"].values())):
        tensors = ref.read_safetensors(os.path.join(src, shard))
        header, body, offset = {}, b"", 0
        for name, w in tensors.items():
            raw = (w.astype("<f4") if dtype == "F32" else w.astype("<f2")).tobytes()
            header[rename(name)] = {"dtype": dtype, "shape": list(w.shape), "data_offsets": [offset, offset + len(raw)]}
            body, offset = body + raw, offset + len(raw)
        if extra_tensor and shard == sorted(set(index["weight_map"].values()))[0]:
            header["model.language_model.rotary_emb.inv_freq"] = {"dtype": "F32", "shape": [2], "data_offsets": [offset, offset + 8]}
            body += b"\0" * 8
        write_safetensors(os.path.join(ck, shard), header, body)
    index["weight_map"] = {rename(n): s for n, s in index["weight_map"].items()}
    json.dump(index, open(os.path.join(ck, "model.safetensors.index.json"), "w"))
    return ck


def test_f32_source_and_new_hf_names_give_the_same_file():
    ck = rewrite_hf("F32")
    out = os.path.join(os.path.dirname(ck), "out.bin")
    for t in TYPES:
        rc, _, err = run([build("quantize"), ck, out, "--type", t])
        assert rc == 0, err
        assert filecmp.cmp(out, converted(os.path.join(GOLDEN, "native"), t), shallow=False), f"--type {t}"


def test_f16_source():
    ck = rewrite_hf("F16")
    out = os.path.join(os.path.dirname(ck), "out.bin")
    rc, _, err = run([build("quantize"), ck, out, "--type", "f32"])
    assert rc == 0, err
    m = ModelFile(out)
    for name, w in source_tensors(GOLDEN).items():
        assert np.array_equal(m.tensor(name), np.float16(w).astype(np.float64)), name


def test_unused_tensors_are_reported_and_skipped():
    ck = rewrite_hf("F32", extra_tensor=True)
    out = os.path.join(os.path.dirname(ck), "out.bin")
    rc, _, err = run([build("quantize"), ck, out, "--type", "f32"])
    assert rc == 0, err
    assert "skipping unused tensor model.language_model.rotary_emb.inv_freq" in err
    assert filecmp.cmp(out, converted(os.path.join(GOLDEN, "native"), "f32"), shallow=False)
