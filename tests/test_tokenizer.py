"""Tests of the Tekken tokenizer in run.c (pre-tokenizer, BPE, streaming decoder), the tekken.json
reader and JSON parser of json.h, and unicode_table.h.

Test data: ../shared/tokenizer (tekken_o200k.json.gz and the 363 cases of cases.jsonl, see its
README) and ../shared/golden (tokens_text.txt with the fixture's native/tekken.json).

`./run --tokenizer FILE --tokenize` is tested on a sample of the cases, one process each (every
launch parses the 11 MB tekken.json). All the cases go through a small harness compiled from
run.c with its main renamed (HARNESS_C below), in one process: it calls print_token_ids, the
function behind --tokenize, and also exposes the decoder, the pre-tokenizer split, the special
token names and json_parse.

Run: python3 tests/run_tests.py tokenizer
Throughput (not a test): python3 tests/test_tokenizer.py --bench
"""
import functools
import gzip
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys

from common import BUILD, GOLDEN, REPO, SHARED, build, one_line_error, run, scratch, compile_harness

TOKENIZER_DATA = os.path.join(SHARED, "tokenizer")
PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
           r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
           r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BUILTIN_SPECIALS = ("<unk> <s> </s> [INST] [/INST] [AVAILABLE_TOOLS] [/AVAILABLE_TOOLS] [TOOL_RESULTS] "
                    "[/TOOL_RESULTS] [TOOL_CALLS] [IMG] <pad> [IMG_BREAK] [IMG_END] [PREFIX] [MIDDLE] [SUFFIX] "
                    "[SYSTEM_PROMPT] [/SYSTEM_PROMPT] [TOOL_CONTENT]").split()

HARNESS_C = r"""
// Test harness for the tokenizer of run.c (written by tests/test_tokenizer.py).
#define _POSIX_C_SOURCE 200809L
#define main run_main
#include "run.c"
#undef main
#include <time.h>

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }

// Records of a FILE: "<length in bytes>\n<the bytes>", one after the other.
static const char *next_record(const char *data, size_t size, size_t *pos, size_t *len)
{
    if (*pos >= size) return NULL;
    char *end;
    *len = strtoull(data + *pos, &end, 10);
    const char *text = end + 1;
    *pos = (size_t)(text - data) + *len;
    return text;
}

// encode: one line of ids per record, as --tokenize prints them (or "ERROR message").
static void encode_records(const Tokenizer *tok, const char *data, size_t size)
{
    char err[512];
    size_t pos = 0, len;
    for (const char *text; (text = next_record(data, size, &pos, &len));)
        if (print_token_ids(tok, text, len, stdout, err, sizeof err)) printf("ERROR %s\n", err);
}

// pieces: the byte lengths of the pre-tokenizer pieces of each record, one line each.
static void piece_records(const char *data, size_t size)
{
    size_t pos = 0, len;
    for (const char *text; (text = next_record(data, size, &pos, &len));) {
        uint8_t *flags = malloc(len + 1);
        uint32_t *offset = malloc((len + 1) * sizeof *offset);
        size_t n = text_char_flags((const uint8_t *)text, len, flags, offset);
        if (n == SIZE_MAX) printf("ERROR");
        else for (size_t c = 0; c < n;) {
            size_t e = c + piece_length(flags, c, n);
            printf(c ? " %u" : "%u", (unsigned)(offset[e] - offset[c]));
            c = e;
        }
        printf("\n");
        free(flags);
        free(offset);
    }
}

// decode: each line of FILE holds ids separated by spaces ("-" for none); prints the hex of the
// streamed text, then " PARTIAL" if some push gave an incomplete or invalid UTF-8 sequence,
// and BADID for every id decoder_push refused.
static void decode_lines(const Tokenizer *tok, char *data)
{
    char *out = malloc(tokenizer_max_decoded(tok)), *save, why[200];
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        TokenDecoder d = { {0}, 0 };
        int partial = 0, n;
        for (char *p = line, *q; *p; p = q) {
            long id = strtol(p, &q, 10);
            if (q == p) break;
            n = decoder_push(tok, &d, (int)id, out);
            if (n < 0) { printf("BADID"); continue; }
            if (utf8_validate(out, (size_t)n, why, sizeof why)) partial = 1;
            for (int i = 0; i < n; i++) printf("%02x", (unsigned char)out[i]);
        }
        n = decoder_flush(&d, out);
        for (int i = 0; i < n; i++) printf("%02x", (unsigned char)out[i]);
        printf(partial ? " PARTIAL\n" : "\n");
    }
    free(out);
}

int main(int argc, char **argv)
{
    char err[512], *data = NULL;
    size_t size = 0;
    if (argc < 3) { fprintf(stderr, "usage: harness MODE TEKKEN [FILE] | harness json FILE | harness pieces FILE\n"); return 2; }
    const char *mode = argv[1], *input = strcmp(mode, "json") == 0 || strcmp(mode, "pieces") == 0 ? argv[2] : argv[3];
    if (input && json_read_file(input, &data, &size)) { fprintf(stderr, "harness: cannot read %s\n", input); return 2; }
    if (strcmp(mode, "json") == 0) {   // "ok" or "error: <message>"
        Json root;
        if (json_parse(data, size, &root, err, sizeof err)) printf("error: %s\n", err);
        else printf("ok %d\n", (int)root.type);
        json_free(&root);
        free(data);
        return 0;
    }
    if (strcmp(mode, "pieces") == 0) { piece_records(data, size); free(data); return 0; }

    double t0 = now();
    TekkenFile tf;
    Tokenizer tok;
    if (load_tokenizer(argv[2], &tf, &tok, err, sizeof err)) { printf("ERROR %s\n", err); free(data); return 1; }
    double t1 = now();
    if (strcmp(mode, "encode") == 0) encode_records(&tok, data, size);
    else if (strcmp(mode, "decode") == 0) decode_lines(&tok, data);
    else if (strcmp(mode, "specials") == 0) {   // the names of all special ids, then some lookups
        for (int i = 0; i < tok.n_special; i++) printf("%s\n", tokenizer_special_name(&tok, i));
        printf("%d %d %d %d %d %s\n", tokenizer_special_id(&tok, "[INST]"), tokenizer_special_id(&tok, "</s>"),
               tokenizer_special_id(&tok, "[IMG]"), tokenizer_special_id(&tok, "nope"), tf.image_patch_size,
               tokenizer_special_name(&tok, tok.n_special) ? "bad" : "null");
    } else if (strcmp(mode, "bench") == 0) {   // encode FILE repeatedly for 2 s
        int *ids = malloc(size * sizeof *ids), n = 0, reps = 0;
        double t2 = now(), t3;
        do { n = tokenizer_encode(&tok, data, size, ids, (int)size); reps++; t3 = now(); } while (t3 - t2 < 2.0);
        printf("tekken.json load + tokenizer_init %.0f ms; %zu bytes -> %d tokens; encode %.1f MB/s (%d runs)\n",
               (t1 - t0) * 1e3, size, n, size * (double)reps / (t3 - t2) / 1e6, reps);
        free(ids);
    } else { fprintf(stderr, "harness: unknown mode %s\n", mode); return 2; }
    free(data);
    tokenizer_free(&tok);
    tekken_free(&tf);
    return 0;
}
"""


# ---------------------------------------------------------------------------------------------------
# helpers

@functools.lru_cache(maxsize=None)
def run_exe():
    return build("run")


@functools.lru_cache(maxsize=None)
def harness():
    """Compiles HARNESS_C against the current run.c; returns its path."""
    return compile_harness("tokenizer", HARNESS_C, "-Wno-unknown-pragmas")


@functools.lru_cache(maxsize=None)
def o200k():
    """tekken_o200k.json unpacked into tests/build (once)."""
    path = os.path.join(BUILD, "tokenizer", "tekken_o200k.json")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with gzip.open(os.path.join(TOKENIZER_DATA, "tekken_o200k.json.gz")) as src, open(path + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(path + ".part", path)
    return path


@functools.lru_cache(maxsize=None)
def cases():
    with open(os.path.join(TOKENIZER_DATA, "cases.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def records(texts):
    """Texts (str or bytes) in the harness's record format."""
    blobs = [t.encode() if isinstance(t, str) else t for t in texts]
    return b"".join(b"%d\n" % len(b) + b for b in blobs)


def harness_lines(mode, tekken, data, name):
    """Runs the harness on data (bytes) written to a file; returns its output lines."""
    path = os.path.join(scratch(name), "input")
    with open(path, "wb") as f:
        f.write(data)
    args = [harness(), mode] + ([tekken] if tekken else []) + [path]
    rc, out, err = run(args, input=b"")
    assert rc == 0, f"harness {mode} failed: {err.decode(errors='replace')}"
    return out.decode().split("\n")[:-1]


def tokenize(tekken, data):
    """./run --tokenizer tekken --tokenize with data (bytes) on stdin: (exit code, stdout, stderr) as text."""
    rc, out, err = run([run_exe(), "--tokenizer", tekken, "--tokenize"], input=data)
    return rc, out.decode(), err.decode(errors="replace")


def python_with_regex():
    """A python that has the `regex` module (for the pre-tokenizer comparison), or None."""
    if importlib.util.find_spec("regex"):
        return sys.executable
    if os.path.exists("/usr/bin/python3") and run(["/usr/bin/python3", "-c", "import regex"])[0] == 0:
        return "/usr/bin/python3"
    return None


def mismatch_report(rows):
    return "\n".join(rows[:10]) + (f"\n... and {len(rows) - 10} more" if len(rows) > 10 else "")


# ---------------------------------------------------------------------------------------------------
# encoding

def test_cases_all():
    """Every case of cases.jsonl, through print_token_ids (what --tokenize runs) in one process."""
    got = harness_lines("encode", o200k(), records(c["text"] for c in cases()), "cases")
    assert len(got) == len(cases()), f"{len(got)} output lines for {len(cases())} cases"
    bad = []
    for c, line in zip(cases(), got):
        ids = [int(x) for x in line.split()] if not line.startswith("ERROR") else line
        if ids != c["ids"]:
            first = next((i for i, (a, b) in enumerate(zip(ids, c["ids"])) if a != b), min(len(ids), len(c["ids"])))
            bad.append(f"{c['id']} ({c['category']}): first difference at token {first}: "
                       f"got {ids[first:first + 5]}, want {c['ids'][first:first + 5]}")
    assert not bad, f"{len(bad)} of {len(cases())} cases differ:\n" + mismatch_report(bad)


def test_cases_cli():
    """./run --tokenize on the first case of each category, the longest case and the empty text."""
    sample, seen = [], set()
    for c in cases():
        if c["category"] not in seen or c["text"] == "":
            sample.append(c)
            seen.add(c["category"])
    sample.append(max(cases(), key=lambda c: len(c["text"].encode())))
    bad = []
    for c in sample:
        rc, out, err = tokenize(o200k(), c["text"].encode())
        if rc != 0 or err or out != " ".join(map(str, c["ids"])) + "\n":
            bad.append(f"{c['id']}: exit {rc}, stderr {err!r}, stdout {out[:80]!r}")
    assert not bad, mismatch_report(bad)


def test_golden_fixture_text():
    """tokens_text.txt: line 1 encodes to the ids of line 2 with the fixture's tekken.json (keeps 1048 of 1120 entries)."""
    with open(os.path.join(GOLDEN, "tokens_text.txt"), encoding="utf-8") as f:
        text, ids = f.read().split("\n")[:2]
    for layout in ("native", "hf"):
        rc, out, err = tokenize(os.path.join(GOLDEN, layout, "tekken.json"), text.encode())
        assert rc == 0, err
        assert out.split() == ids.split(","), f"{layout}: got {out.strip()}, want {ids}"


def test_special_tokens_are_plain_text():
    """Text that spells a special token never gives a special id (MODEL.md section 10, pitfall 13)."""
    for tekken in (o200k(), os.path.join(GOLDEN, "native", "tekken.json")):
        for text in ("[INST]", "<s>[INST]Hello[/INST]</s>", "[IMG][IMG_BREAK]<SPECIAL_20><unk>", "<pad>"):
            rc, out, err = tokenize(tekken, text.encode())
            assert rc == 0, err
            assert all(int(x) >= 1000 for x in out.split()), f"{text!r} gave special ids: {out}"


def test_invalid_utf8():
    """Invalid UTF-8 on stdin: exit 1, nothing on stdout, one stderr line with the byte offset."""
    for data, offset, words in [
        (b"ab\xffc", 2, "0xff"),
        (b"abc\x80", 3, "continuation"),
        (b"caf\xc3", 3, "cut short"),
        (b"\xe2\x82", 0, "cut short"),
        (b"x\xc0\xafy", 1, "overlong"),
        (b"xy\xe0\x80\x80", 2, "overlong"),
        (b"\xed\xa0\x80", 0, "surrogate"),
        (b"ok \xf4\x90\x80\x80", 3, "U+10FFFF"),
        (b"\xc3(", 0, "continuation"),
        (b"\xe2\x82(abc", 0, "continuation"),
        ("Grüße".encode() + b"\xfe", 7, "0xfe"),
    ]:
        rc, out, err = tokenize(o200k(), data)
        assert rc == 1 and out == "", f"{data!r}: exit {rc}, stdout {out!r}"
        one_line_error(err, "stdin", f"byte {offset}", words)


# ---------------------------------------------------------------------------------------------------
# pre-tokenizer: the C alternatives against the regex itself

REGEX_PIECES = r"""
import sys, regex
rx = regex.compile(sys.argv[1])
data = open(sys.argv[2], "rb").read()
pos = 0
while pos < len(data):
    nl = data.index(b"\n", pos)
    n = int(data[pos:nl])
    text = data[nl + 1:nl + 1 + n].decode()
    pos = nl + 1 + n
    print(" ".join(str(len(p.encode())) for p in rx.findall(text)))
"""


def test_pretokenizer_matches_regex():
    """Random strings over tricky characters: piece boundaries equal the Python `regex` module's."""
    python = python_with_regex()
    if python is None:
        print("  (skipped: no python3 with the regex module)", end="")
        return
    alphabet = list("aZq ,./\r\n\t'-(_1") + [
        "\u00e9", "\u0301", "\u01c5", "\u02b0", "\u4e2d", "\u00a0", "\u2028", "\u3000", "\u0663", "\u2167",
        "\U0001F600", "\u00b2", "\u0085", "\ufeff", "\u200b", "\u1680", "\u0e31", "\u00aa", "\u01c4", "\u20dd"]
    rng = random.Random(7)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(6000)]
    for _ in range(2000):   # any code point (surrogates excluded): the Unicode tables themselves
        texts.append("".join(chr(rng.choice([rng.randint(0, 0x2FFF), rng.randint(0x3000, 0xD7FF),
                                             rng.randint(0xE000, 0x3FFFF), rng.randint(0xE0000, 0xE01FF)]))
                             for _ in range(rng.randint(1, 8))))
    data = records(texts)
    got = harness_lines("pieces", None, data, "pieces")
    path = os.path.join(scratch("regex"), "input")
    with open(path, "wb") as f:
        f.write(data)
    p = subprocess.run([python, "-c", REGEX_PIECES, PATTERN, path], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    want = p.stdout.split("\n")[:-1]
    bad = [f"{t!r} {[hex(ord(ch)) for ch in t]}: got {g!r}, regex {w!r}" for t, g, w in zip(texts, got, want) if g != w]
    assert len(got) == len(want) == len(texts), (len(got), len(want), len(texts))
    assert not bad, f"{len(bad)} of {len(texts)} splits differ:\n" + mismatch_report(bad)


def test_pretokenizer_examples():
    """The examples of MODEL.md section 7."""
    examples = {"Hello, how are you?": ["Hello", ",", " how", " are", " you", "?"], "HELLO world": ["HELLO", " world"],
                "  foo": [" ", " foo"], "x\n\n  y": ["x", "\n\n", " ", " y"], " 123": [" ", "1", "2", "3"],
                "(hi)": ["(hi", ")"], "[INST]": ["[INST", "]"], "": []}
    got = harness_lines("pieces", None, records(examples), "pieces")
    for (text, pieces), line in zip(examples.items(), got):
        assert line.split() == [str(len(p.encode())) for p in pieces], f"{text!r}: piece lengths {line}"


# ---------------------------------------------------------------------------------------------------
# decoding

def test_decode_cases_roundtrip():
    """Streaming the ids of every case (one push per id) gives back the text; no push ends mid-character."""
    lines = [" ".join(map(str, c["ids"])) or "-" for c in cases()]
    got = harness_lines("decode", o200k(), "\n".join(lines).encode() + b"\n", "decode")
    bad = [c["id"] for c, g in zip(cases(), got) if g != c["text"].encode().hex()]
    assert len(got) == len(cases()) and not bad, f"decoding differs: {bad[:10]}"


def test_decode_streaming_bytes():
    """Byte tokens (id 1000 + b) of random bytes, with special ids mixed in: the stream equals
    Python's bytes.decode("utf-8", errors="replace"); outputs never end in half a character."""
    rng = random.Random(3)
    pieces = [b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xc3\xa9", b"a", b"\x80", b"\xff", b"\xed\xa0\x80",
              b"\xf0\x9f", b"\xe2", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe0\x80"]
    streams = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))) for _ in range(3000)]
    lines, want = [], []
    for s in streams:
        ids = []
        for b in s:
            ids.append(1000 + b)
            if rng.random() < 0.2:
                ids.append(rng.choice([1, 2, 3, 10]))   # skipped, even inside a character
        lines.append(" ".join(map(str, ids)) or "-")
        want.append(s.decode("utf-8", errors="replace").encode().hex())
    got = harness_lines("decode", o200k(), "\n".join(lines).encode() + b"\n", "decode")
    bad = [f"{s!r}: got {g}, want {w}" for s, g, w in zip(streams, got, want) if g != w]
    assert len(got) == len(streams) and not bad, mismatch_report(bad)
    got = harness_lines("decode", o200k(), b"1000 -1 131072 1065\n", "decode")
    assert got == ["00BADIDBADID41"], got   # ids out of range are refused, the stream goes on


# ---------------------------------------------------------------------------------------------------
# tekken.json

def write_tekken(d, name, doc=None, raw=None):
    path = os.path.join(d, name)
    with open(path, "w" if raw is None or isinstance(raw, str) else "wb") as f:
        f.write(raw if raw is not None else json.dumps(doc))
    return path


def test_tekken_errors():
    """Broken tekken.json files: exit 1 and one stderr line naming the file and the problem."""
    with open(os.path.join(GOLDEN, "native", "tekken.json")) as f:
        text = f.read()
    base = json.loads(text)
    d = scratch("tekken")

    def variant(change):
        doc = json.loads(text)
        change(doc)
        return doc

    def set_bytes(i, b64):
        return lambda doc: doc["vocab"][i].update(token_bytes=b64)

    bad = {
        "missing.json": (None, "cannot read"),
        "truncated.json": (text[:5000], "invalid JSON: byte "),
        "trailing.json": (text + ",", "unexpected data after the JSON value"),
        "base64.json": (variant(set_bytes(300, "a$==")), "vocab entry 300"),
        "base64_len.json": (variant(set_bytes(301, "YWJ")), "vocab entry 301"),
        "base64_empty.json": (variant(set_bytes(302, "")), "vocab entry 302"),
        "pattern.json": (variant(lambda doc: doc["config"].update(pattern=r"\s+|\S+")), "unsupported pre-tokenizer pattern"),
        "few.json": (variant(lambda doc: doc.update(vocab=doc["vocab"][:1047])), "fewer than the 1048"),
        "rank.json": (variant(lambda doc: doc["vocab"][500].update(rank=501)), "vocab entry 500"),
        "bytes.json": (variant(set_bytes(65, "Qg==")), "ranks 0..255"),
        "duplicate.json": (variant(set_bytes(700, base["vocab"][699]["token_bytes"])), "rank 700 duplicates"),
        "no_config.json": (variant(lambda doc: doc.pop("config")), "\"config\""),
        "size.json": (variant(lambda doc: doc["config"].update(default_vocab_size="2048")), "default_vocab_size"),
        "special_rank.json": (variant(lambda doc: doc["special_tokens"][5].update(rank=6)), "special token 5"),
        "too_many_specials.json": (variant(lambda doc: doc["config"].update(default_num_special_tokens=999, default_vocab_size=2047)),
                                   "more than default_num_special_tokens"),
        "list.json": ("[1, 2]", "not a JSON object"),
        "empty.json": ("", "invalid JSON: byte 0"),
    }
    for name, (content, words) in bad.items():
        path = os.path.join(d, name)
        if content is not None:
            write_tekken(d, name, doc=None if isinstance(content, str) else content,
                         raw=content if isinstance(content, str) else None)
        rc, out, err = tokenize(path, b"hello")
        assert rc == 1 and out == "", f"{name}: exit {rc}, stdout {out!r}"
        one_line_error(err, path, words)
    rc, out, err = tokenize(d, b"hello")   # a directory
    assert rc == 1
    one_line_error(err, d, "cannot read")


def test_tekken_special_tokens():
    """Special names come from the file's list, else from the built-in list; gaps are <SPECIAL_i>."""
    with open(os.path.join(GOLDEN, "native", "tekken.json")) as f:
        base = json.load(f)
    d = scratch("specials")
    full = harness_lines("specials", os.path.join(GOLDEN, "native", "tekken.json"), b"", "specials")
    want = BUILTIN_SPECIALS + [f"<SPECIAL_{i}>" for i in range(20, 1000)]
    assert full[:1000] == want, [(i, a, b) for i, (a, b) in enumerate(zip(full, want)) if a != b][:5]
    assert full[1000] == "3 2 10 -1 14 null", full[1000]   # [INST], </s>, [IMG], unknown, image_patch_size

    absent = dict(base)
    absent.pop("special_tokens")
    absent.pop("multimodal")
    got = harness_lines("specials", write_tekken(d, "absent.json", absent), b"", "specials")
    assert got[:1000] == want and got[1000] == "3 2 10 -1 0 null", got[1000]

    short = dict(base, special_tokens=[{"rank": 0, "token_str": "<X>", "is_control": True},
                                       {"rank": 1, "token_str": "[INST]", "is_control": True}])
    got = harness_lines("specials", write_tekken(d, "short.json", short), b"", "specials")
    assert got[:3] == ["<X>", "[INST]", "<SPECIAL_2>"] and got[999] == "<SPECIAL_999>", got[:3]
    assert got[1000].startswith("1 -1 -1 -1"), got[1000]


# ---------------------------------------------------------------------------------------------------
# json.h

def test_json_parser():
    """json_parse accepts RFC 8259 JSON and rejects everything else with the offending byte offset."""
    good = ['{}', '[]', ' {"a": [1, -2.5e+3, 0, -0, 0.5E-2, true, false, null, "x"]} ', '"\\u00e9\\ud83d\\ude00\\n\\/"',
            '[' * 100 + ']' * 100, '{"a":1,"a":2}', '"\\u0000"', '"' + "é中😀" + '"', "1e999"]
    bad = [('', 0), ('  ', 2), ('{', 1), ('[1,]', 3), ('{"a":1,}', 7), ('[01]', 1), ('[1.]', 3), ('[-]', 2), ('[.5]', 1),
           ('tru', 0), ('nul', 0), ('[NaN]', 1), ('[Infinity]', 1), ('{a:1}', 1), ('{"a" 1}', 5), ('"abc', 0),
           ('"a\tb"', 2), ('"\\x"', 1), ('"\\u12g4"', 1), ('"\\ud800"', 1), ('"\\udc00"', 1), ('"\\ud800\\u0041"', 1),
           ('[1] x', 4), ('[1 2]', 3), ('\ufeff[]', 0), ('[' * 129 + ']' * 129, 128), ('["\\', 1)]
    inputs = [g.encode() for g in good] + [b.encode() for b, _ in bad] + [b'"\xff"', b'"\xc3"', b'"\xed\xa0\x80"', b'\x00']
    d = scratch("json")
    lines = []
    for i, data in enumerate(inputs):
        path = os.path.join(d, f"{i}.json")
        with open(path, "wb") as f:
            f.write(data)
        rc, out, err = run([harness(), "json", path], input=b"")
        assert rc == 0, err
        lines.append(out.decode().strip())
    for g, line in zip(good, lines):
        assert line.startswith("ok"), f"{g[:40]!r} refused: {line}"
    for (b, offset), line in zip(bad, lines[len(good):]):
        assert line.startswith(f"error: byte {offset}: "), f"{b[:40]!r}: {line}"
    for data, line in zip(inputs[len(good) + len(bad):], lines[len(good) + len(bad):]):
        assert line.startswith("error: byte"), f"{data!r}: {line}"


def test_json_random_input():
    """Random and truncated input: never a crash, every error a one-line message with an offset."""
    with open(os.path.join(GOLDEN, "hf", "config.json"), "rb") as f:
        config = f.read()
    rng = random.Random(5)
    d = scratch("jsonfuzz")
    for i in range(150):
        k = rng.random()
        if k < 0.4:
            data = config[:rng.randint(0, len(config))]
        elif k < 0.8:
            data = bytearray(config)
            for _ in range(rng.randint(1, 5)):
                data[rng.randrange(len(data))] = rng.choice(b'{}[]",:\\0123456789.eE-+tfn \x00\xff\xc3')
            data = bytes(data)
        else:
            data = bytes(rng.choice(b'{}[]",:\\01eE-+ tfnrul\x80') for _ in range(rng.randint(0, 60)))
        path = os.path.join(d, f"{i}.json")
        with open(path, "wb") as f:
            f.write(data)
        rc, out, err = run([harness(), "json", path], input=b"")
        line = out.decode()
        assert rc == 0 and line.count("\n") == 1 and (line.startswith("ok") or line.startswith("error: byte ")), (data, rc, line, err)
        try:
            json.loads(data.decode("utf-8"))
            python_ok = True
        except (ValueError, UnicodeDecodeError):
            python_ok = False
        if line.startswith("ok"):   # whatever we accept, Python accepts too
            assert python_ok, f"{data!r} accepted"


# ---------------------------------------------------------------------------------------------------
# unicode_table.h

def test_unicode_table_up_to_date():
    """unicode_table.h is what export/gen_unicode_table.py makes from the installed Unicode data."""
    if not os.path.exists("/usr/share/unicode/UnicodeData.txt"):
        print("  (skipped: /usr/share/unicode not installed)", end="")
        return
    p = subprocess.run([sys.executable, os.path.join(REPO, "export", "gen_unicode_table.py")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with open(os.path.join(REPO, "unicode_table.h")) as f:
        assert f.read() == p.stdout, "unicode_table.h is stale: python3 export/gen_unicode_table.py > unicode_table.h"


# ---------------------------------------------------------------------------------------------------

def bench():
    """Tokenizer throughput on ~1 MB of the case texts repeated, and the tekken.json load time."""
    blob = "".join(c["text"] for c in cases()).encode()
    data = blob * (1_000_000 // len(blob) + 1)
    print("\n".join(harness_lines("bench", o200k(), data, "bench")))


if __name__ == "__main__":
    if sys.argv[1:] == ["--bench"]:
        bench()
    else:
        print(__doc__)
