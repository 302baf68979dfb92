"""run's command line: every flag does what it says, and every bad input ends in one clear line.

Sampling flags are checked against run's own dumped logits: each sampled token must lie in the candidate
set the flag defines for the logits row it was sampled from (--top-k, --top-p, --min-p), and --temp is
checked by maximum likelihood over a few hundred samples. Errors: exit 1 with one stderr line starting
with "run: " (usage errors: exit 2 and a usage message), never a signal, never a hang.
Run: /usr/bin/python3 tests/run_tests.py test_cli
"""
import functools, os, re, struct

import numpy as np

import common
from modelfile import ModelFile
from common import GOLDEN, build, converted, fixture, one_line_error, scratch

BOS, EOS, INST, END_INST = 1, 2, 3, 4
TIMEOUT = 30
GOLDEN_IDS = [int(t) for t in open(os.path.join(GOLDEN, "tokens.txt")).read().split(",")]
PROMPT_IDS = GOLDEN_IDS[:GOLDEN_IDS.index(END_INST) + 1]     # 36 ids: <s> [SYSTEM_PROMPT] .. [/INST]
VOCAB = 2048                                                   # golden and fixture


run = common.run_text


def csv(ids):
    return ",".join(map(str, ids))


def read_ids(text):
    return [int(t) for t in text.replace(",", " ").split()]


@functools.lru_cache(maxsize=None)
def model():
    return converted(os.path.join(fixture(), "native"), "f32")


def cmd(*args):
    return [build("run"), *args]


def run_ok(*args, input=None):
    rc, out, err = run(cmd(*args), input=input, timeout=TIMEOUT)
    assert rc == 0, f"run {' '.join(map(str, args))}: exit {rc}: {err[-2000:]}"
    return out, err


def session(*args, input=None, model_path=None):
    """(logits [n_fed, vocab], token ids, stdout, stderr) of ./run MODEL args."""
    d = scratch("cli")
    lf, tf = os.path.join(d, "logits.f32"), os.path.join(d, "tokens.txt")
    out, err = run_ok(model_path or model(), *args, "--dump-logits", lf, "--dump-tokens", tf, input=input)
    return np.fromfile(lf, "<f4").astype(np.float64).reshape(-1, VOCAB), read_ids(open(tf).read()), out, err


def generate(*args, n=40, prompt=PROMPT_IDS):
    """Generated ids (after prompt) and, for each, the logits row it was sampled from."""
    logits, tokens, _, _ = session("--tokens", csv(prompt), "-n", str(n), *args)
    assert tokens[:len(prompt)] == prompt
    gen = tokens[len(prompt):]
    assert len(gen) <= n
    rows = logits[len(prompt) - 1:len(prompt) - 1 + len(gen)]
    assert rows.shape[0] == len(gen), f"{logits.shape[0]} logits rows for {len(tokens)} tokens"
    return gen, rows


def greedy(n=40):
    return generate("--temp", "0", n=n)[0]


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


# ---- flags

def test_help_lists_every_flag():
    rc, out, err = run(cmd("--help"), timeout=TIMEOUT)
    assert rc == 0, f"--help: exit {rc}"
    text = out + err
    assert "usage" in text.lower()
    for flag in ["-p", "-s", "-n", "--temp", "--top-p", "--top-k", "--min-p", "--seed", "-t", "-c", "--chat", "--raw",
                 "--tokens", "--dump-logits", "--dump-tokens", "--tokenize", "--tokenizer"]:
        assert re.search(r"(^|[\s\[,])" + re.escape(flag) + r"($|[\s\],=])", text, re.M), f"--help does not mention {flag}"


def test_no_arguments_is_a_usage_error():
    rc, out, err = run(cmd(), timeout=TIMEOUT)
    assert rc == 2 and "usage" in (out + err).lower(), f"exit {rc}: {err}"


def test_temp_0_is_argmax():
    gen, rows = generate("--temp", "0")
    assert gen == [int(r.argmax()) for r in rows]
    assert len(gen) == 40 or gen[-1] == EOS


def test_tokens_mode_defaults_to_no_generation():
    logits, tokens, out, _ = session("--tokens", csv(GOLDEN_IDS))
    assert tokens == GOLDEN_IDS and logits.shape == (len(GOLDEN_IDS), VOCAB)
    assert out.strip() == "", f"nothing generated, yet stdout is {out!r}"


def test_n_limits_generated_tokens():
    for n in (1, 3):
        gen = greedy(n)
        assert 1 <= len(gen) <= n, f"-n {n} generated {len(gen)}"
    logits, tokens, out, _ = session("-p", "Hello", "-n", "0")
    assert tokens[-1] == END_INST and logits.shape[0] == len(tokens) and out.strip() == ""


def test_seed_reproducible_and_different_seeds_differ():
    a = generate("--temp", "1", "--seed", "42")[0]
    b = generate("--temp", "1", "--seed", "42")[0]
    assert a == b, "same seed, different samples"
    others = [generate("--temp", "1", "--seed", str(s))[0] for s in (1, 2, 3)]
    assert any(o != a for o in others), "--seed 1, 2, 3 and 42 all gave the same samples"
    assert a != greedy(), "--temp 1 gave exactly the greedy output"


def test_default_temperature_is_0_15():
    for seed in ("7", "8"):
        assert generate("--seed", seed)[0] == generate("--seed", seed, "--temp", "0.15")[0]


def test_temperature_is_applied():
    # Over ~200 samples the log-likelihood of the sampled ids is highest at the temperature they were
    # drawn with: T/2 and 2T must both score clearly lower (any wrong scaling of the logits fails).
    for temp in (0.5, 1.5):
        gen, rows = generate("--temp", str(temp), "--seed", "3", n=200)
        assert len(gen) >= 100, f"only {len(gen)} tokens sampled"
        idx = np.arange(len(gen))

        def loglik(t):
            return float(np.log(softmax(rows / t)[idx, gen]).sum())
        ll = {t: loglik(t) for t in (temp / 2, temp, temp * 2)}
        print(f"    --temp {temp}: log-likelihood at T/2, T, 2T: {ll[temp / 2]:.1f} {ll[temp]:.1f} {ll[temp * 2]:.1f}")
        assert ll[temp] > ll[temp / 2] and ll[temp] > ll[temp * 2], f"--temp {temp}: {ll}"


def test_top_k():
    assert generate("--temp", "1", "--top-k", "1", "--seed", "5")[0] == greedy()
    gen, rows = generate("--temp", "1", "--top-k", "3", "--seed", "5", n=100)
    ranks = [int((r > r[g]).sum()) for r, g in zip(rows, gen)]
    assert max(ranks) < 3, f"--top-k 3 sampled a token of rank {max(ranks)}"
    assert any(k > 0 for k in ranks), "--top-k 3 --temp 1 only ever took the top token"


def test_top_p():
    assert generate("--temp", "1", "--top-p", "1e-6", "--seed", "5")[0] == greedy()
    p_max = 0.5
    gen, rows = generate("--temp", "1", "--top-p", str(p_max), "--seed", "5", n=100)
    for r, g in zip(rows, gen):
        p = softmax(r)
        before = p[p > p[g]].sum()          # mass of the strictly more likely tokens
        assert before < p_max + 1e-5, f"--top-p {p_max} sampled a token with {before:.4f} of mass above it"


def test_min_p():
    assert generate("--temp", "1", "--min-p", "1", "--seed", "5")[0] == greedy()
    gen, rows = generate("--temp", "1", "--min-p", "0.2", "--seed", "5", n=100)
    for r, g in zip(rows, gen):
        p = softmax(r)
        assert p[g] >= 0.2 * p.max() * (1 - 1e-5), f"--min-p 0.2 sampled p = {p[g]:.4g} < 0.2 x {p.max():.4g}"


def test_threads_do_not_change_results():
    a, ta, _, _ = session("--tokens", csv(PROMPT_IDS), "-n", "16", "--temp", "0", "-t", "1")
    b, tb, _, _ = session("--tokens", csv(PROMPT_IDS), "-n", "16", "--temp", "0", "-t", "2")
    assert ta == tb, "-t 1 and -t 2 generate different tokens"
    assert np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(a)), "-t 1 and -t 2 give different logits"


def test_context_length():
    full, _, _, _ = session("--tokens", csv(GOLDEN_IDS))
    exact, _, _, _ = session("--tokens", csv(GOLDEN_IDS), "-c", str(len(GOLDEN_IDS)))
    assert np.max(np.abs(full - exact)) <= 1e-6 * np.max(np.abs(full)), "-c 48 changes the logits of a 48-token prompt"
    rc, _, err = run(cmd(model(), "--tokens", csv(GOLDEN_IDS), "-c", "16"), timeout=TIMEOUT)
    assert rc == 1, f"exit {rc}: {err}"
    line = one_line_error(err, "16", str(len(GOLDEN_IDS)))
    assert line.startswith("run: ")
    # generation that reaches the end of the cache stops cleanly (or reports it), never overruns it
    d = scratch("ctx")
    tf = os.path.join(d, "t.txt")
    rc, _, err = run(cmd(model(), "--tokens", csv(PROMPT_IDS), "-n", "30", "--temp", "0", "-c", "40",
                         "--dump-tokens", tf), timeout=TIMEOUT)
    assert rc in (0, 1), f"exit {rc}: {err}"
    if rc == 0:
        assert len(read_ids(open(tf).read())) <= 41, "generated past the end of a 40-token context"


def test_prompt_longer_than_context():
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    _, ids, _, _ = session("-p", text, "-n", "0")
    assert len(ids) > 16
    rc, _, err = run(cmd(model(), "-p", text, "-c", "16"), timeout=TIMEOUT)
    assert rc == 1, f"exit {rc}: {err}"
    assert one_line_error(err, "16", str(len(ids))).startswith("run: ")


def test_system_and_raw_change_the_prompt():
    t0 = session("-p", "Hi", "-n", "0")[1]
    t1 = session("-p", "Hi", "-s", "Sys", "-n", "0")[1]
    t2 = session("-p", "Hi", "--raw", "-n", "0")[1]
    assert t0[:2] == [BOS, INST] and t1[:2] == [BOS, 17] and t2[0] == BOS and INST not in t2
    assert t0[-1] == t1[-1] == END_INST


def test_empty_prompt_is_fine():
    logits, tokens, _, _ = session("-p", "", "-n", "0")
    assert tokens == [BOS, INST, END_INST] and logits.shape == (3, VOCAB)
    logits, tokens, _, _ = session("-p", "", "-n", "2", "--temp", "0")
    assert tokens[:3] == [BOS, INST, END_INST]


def test_tokenizer_flag_matches_model_tokenizer():
    tekken = os.path.join(fixture(), "native", "tekken.json")
    for text in ["Hello, world!", "  spaces\tand\nnewlines\n", "héllo wörld 你好 🙂", "12345 x=y+z; [INST]"]:
        a, _ = run_ok(model(), "--tokenize", input=text)
        b, _ = run_ok("--tokenizer", tekken, "--tokenize", input=text)
        assert read_ids(a) == read_ids(b) and read_ids(a), f"{text!r}: {a!r} vs {b!r}"


def test_stdout_is_the_text_and_stderr_the_statistics():
    d = scratch("stats")
    tf = os.path.join(d, "t.txt")
    rc, out, err = common.run(cmd(model(), "-p", "Hello", "-n", "8", "--temp", "0", "--dump-tokens", tf), input=b"",
                              timeout=TIMEOUT)
    err = err.decode("utf-8", "replace")
    assert rc == 0, err
    tokens = read_ids(open(tf).read())
    prompt = tokens[:tokens.index(END_INST) + 1]
    assert "tok/s" in err, f"no tok/s statistics on stderr: {err!r}"
    assert re.search(rf"\b{len(prompt)}\b", err), f"prompt token count {len(prompt)} not on stderr: {err!r}"
    # stdout: the bytes of the generated regular tokens (control tokens may be shown by name or not at all)
    mf = ModelFile(model())
    ns = mf.config["n_special"]
    gen = [t for t in tokens[len(prompt):] if t != EOS]
    plain = b"".join(mf.vocab[t - ns] for t in gen if t >= ns)
    named = b"".join(mf.vocab[t - ns] if t >= ns else mf.special[t].encode() for t in gen)
    candidates = {c.rstrip(b"\n") for c in (plain, named)}
    candidates |= {c.decode("utf-8", "replace").encode() for c in candidates}    # printed as U+FFFD
    assert out.rstrip(b"\n") in candidates, f"stdout {out!r} is not the generated text {plain!r}"


# ---- errors

def expect_error(args, codes=(1,), must=(), input=None):
    rc, out, err = run(cmd(*args), input=input, timeout=TIMEOUT)
    assert rc >= 0, f"run {args}: killed by signal {-rc}"
    assert rc in codes, f"run {args}: exit {rc}, expected {codes}: {err!r}"
    if rc == 2:
        assert "usage" in err.lower(), f"run {args}: usage error without a usage message: {err!r}"
        for s in must:
            assert s in err, f"run {args}: {s!r} not in {err!r}"
        return err
    line = one_line_error(err, *must)
    assert line.startswith("run: "), f"run {args}: error line {line!r} does not start with 'run: '"
    return line


def test_usage_errors():
    m = model()
    expect_error([m, "--frobnicate"], codes=(2,), must=["--frobnicate"])
    for flag in ["-p", "-s", "-n", "--temp", "--top-p", "--top-k", "--min-p", "--seed", "-t", "-c", "--tokens",
                 "--dump-logits", "--dump-tokens"]:
        expect_error([m, flag], codes=(2,), must=[flag])


def test_kernels_flag_errors():
    """--kernels with no name, a name run does not know, or a set this CPU cannot run (amx without AMX,
    avx-vnni on an older AVX2 CPU, the other architecture's): a usage error naming it, exit 2."""
    m = model()
    expect_error([m, "--kernels"], codes=(2,), must=["--kernels"])
    err = expect_error([m, "-p", "hi", "--kernels", "bogus"], codes=(2,), must=["--kernels bogus"])
    runs = err[err.index("this CPU runs:"):].split(";")[0].split()[3:]
    assert "scalar" in runs, f"--help does not list the scalar kernels: {err!r}"
    known = ["scalar", "avx2", "avx-vnni", "avx512", "avx512-vnni", "amx", "neon", "neon-dotprod"]
    for name in [k for k in known if k not in runs]:
        expect_error([m, "-p", "hi", "--kernels", name], codes=(2,), must=[f"--kernels {name}"])


def test_bad_numbers():
    m = model()
    # the contract's cases, then other values no sampler can use
    for flag, value in [("--temp", "-1"), ("--top-p", "2"), ("-n", "-5"), ("-c", "0"), ("-t", "0"),
                        ("--top-p", "-0.5"), ("--top-p", "0"), ("--top-k", "-1"), ("--min-p", "1.5"), ("--min-p", "-1"),
                        ("-n", "abc"), ("--temp", "1x"), ("--temp", "nan"), ("--seed", "x"), ("-t", "-2"), ("-c", "")]:
        line = expect_error([m, "-p", "hi", flag, value], codes=(1, 2))
        assert flag in line or (value and value in line), f"{flag} {value!r}: error names neither: {line!r}"
    for bad in ["1,abc", "1,,2", "1,99999", "1,-3", "x"]:
        expect_error([m, "--tokens", bad], codes=(1, 2))


def test_extreme_values_never_crash():
    m = model()
    for args in (["-c", "99999999999"], ["-c", "2000000000"], ["-n", "99999999999", "-c", "64"], ["-t", "100000"],
                 ["--tokens", ""], ["--seed", "18446744073709551615"], ["--top-k", "100000"]):
        rc, _, err = run(cmd(m, "-p", "hi", "-n", "1", *args) if args[0] != "--tokens" else cmd(m, *args))
        assert rc in (0, 1, 2), f"{args}: exit {rc}: {err}"
        if rc == 1:
            one_line_error(err)


def test_missing_and_bad_model_files():
    d = scratch("badmodel")
    missing = os.path.join(d, "nope.bin")
    expect_error([missing, "-p", "hi"], must=["nope.bin"])
    expect_error([os.path.join(fixture(), "native", "tekken.json"), "-p", "hi"], must=["tekken.json"])
    empty = os.path.join(d, "empty.bin")
    open(empty, "wb").close()
    expect_error([empty, "-p", "hi"], must=["empty.bin"])
    data = open(model(), "rb").read()
    for cut in (len(data) // 2, len(data) - 1, 100):
        p = os.path.join(d, f"cut{cut}.bin")
        open(p, "wb").write(data[:cut])
        expect_error([p, "-p", "hi"], must=[f"cut{cut}.bin"])
    p = os.path.join(d, "v1.bin")                                  # a file of an older format
    open(p, "wb").write(data[:8] + struct.pack("<I", 1) + data[12:])
    expect_error([p, "-p", "hi"], must=["version"])
    expect_error([d, "-p", "hi"])                                   # a directory


def test_invalid_utf8_prompt():
    m = model().encode()
    # Latin-1, junk, cut short, a UTF-16 surrogate, an overlong "/"
    for bad in [b"caf\xe9", b"\xff\xfe", b"ok \xc3", b"\xed\xa0\x80", b"\xc0\xaf"]:
        for flag in (b"-p", b"-s"):
            args = [m, flag, bad] + ([b"-p", b"x"] if flag == b"-s" else [])
            line = expect_error(args, input=b"")
            assert "utf" in line.lower(), f"{bad!r}: {line!r} does not say UTF-8"


def test_unwritable_dump_file():
    expect_error([model(), "--tokens", "1,2", "--dump-logits", "/nonexistent/dir/x.f32"], must=["/nonexistent/dir"])


def test_chat_edge_cases():
    for stdin in ["", "\n", "hi", "a\\\n"]:          # EOF at once, an empty line, no final newline, cut mid-message
        rc, _, err = run(cmd(model(), "--chat", "-n", "2", "--temp", "0"), input=stdin, timeout=TIMEOUT)
        assert rc == 0, f"--chat with stdin {stdin!r}: exit {rc}: {err}"


def test_chat_exit_command():
    # --help: "/exit or end of input quits"
    _, tokens, _, _ = session("--chat", "-n", "3", "--temp", "0", input="Hello\n/exit\nNever read\n")
    out, _ = run_ok(model(), "--tokenize", input="Hello")
    prompt = [BOS, INST] + read_ids(out) + [END_INST]
    assert tokens[:len(prompt)] == prompt and len(tokens) <= len(prompt) + 3, f"/exit did not end the chat: {tokens}"
