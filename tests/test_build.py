"""The other builds a user may make: without OpenMP, with clang (with and without OpenMP); `make demo`,
the newcomer's first command; and what `make bench-llamacpp` says when its tools are missing. (tests/test_kernels.py builds the kernel tests these ways and for arm64.)"""
import os, shutil, subprocess, sys

import numpy as np

from common import BUILD, GOLDEN, REPO, build, converted, run, scratch, stb_cflags

TOKENS = open(os.path.join(GOLDEN, "tokens.txt")).read().strip()


def build_variant(name, cc, flags, program="run"):
    """Builds run (or quantize) into tests/build/NAME/ with the given compiler and flags."""
    out = os.path.join(BUILD, name)
    os.makedirs(out, exist_ok=True)
    exe = os.path.join(out, program)
    cmd = [cc, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", *flags, "-I" + REPO, *stb_cflags(),
           os.path.join(REPO, program + ".c"), "-o", exe, "-lm"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr}"
    return exe


def logits(exe, model):
    f = os.path.join(scratch("variant"), "logits.f32")
    rc, _, err = run([exe, model, "--tokens", TOKENS, "--dump-logits", f])
    assert rc == 0, err
    return np.fromfile(f, "<f4").reshape(48, -1)


def check_variant(exe):
    golden = np.fromfile(os.path.join(GOLDEN, "logits.f32"), "<f4").reshape(48, -1)
    got = logits(exe, converted(os.path.join(GOLDEN, "native"), "f32"))
    assert np.abs(got - golden).max() <= 1e-4 * np.abs(golden).max(), "f32 logits vs llama.cpp's"
    # q4: the same arithmetic in the same order as the default build, up to float contraction choices
    model = converted(os.path.join(GOLDEN, "native"), "q4")
    want = logits(build("run"), model)
    assert np.abs(logits(exe, model) - want).max() <= 1e-5 * np.abs(want).max(), "q4 logits vs the default build"


def test_build_without_openmp():
    check_variant(build_variant("no-openmp", "cc", ["-Wno-unknown-pragmas"]))
    quantize = build_variant("no-openmp", "cc", ["-Wno-unknown-pragmas"], "quantize")
    out = os.path.join(scratch("no-openmp"), "q4.bin")
    rc, _, err = run([quantize, os.path.join(GOLDEN, "native"), out])
    assert rc == 0, err
    assert open(out, "rb").read() == open(converted(os.path.join(GOLDEN, "native"), "q4"), "rb").read(), \
        "quantize without OpenMP wrote a different file"


def test_build_with_clang():
    if not shutil.which("clang"):
        raise AssertionError("clang is not installed (apt-get install clang)")
    check_variant(build_variant("clang", "clang", ["-Wno-source-uses-openmp", "-Wno-unknown-pragmas"]))


def test_build_with_clang_and_openmp():
    if not shutil.which("clang"):
        raise AssertionError("clang is not installed (apt-get install clang)")
    check_variant(build_variant("clang-openmp", "clang", ["-fopenmp"]))


def test_make_demo():
    p = subprocess.run(["make", "-s", "-C", REPO, "demo"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "generated: 40 tokens" in p.stderr, p.stderr[-2000:]
    assert os.path.exists(os.path.join(REPO, "weights", "demo-q4.bin"))


def test_bench_llamacpp_without_its_tools():
    """tests/llamacpp.sh without numpy or without npm: one line, exit 1, before installing or writing anything."""
    script, gguf = os.path.join(REPO, "tests", "llamacpp.sh"), os.path.join(REPO, "weights", "synthetic-24b-q4_0.gguf")
    had_gguf = os.path.exists(gguf)
    p = subprocess.run(["sh", script, "0"], cwd=REPO, env={**os.environ, "PYTHON": "false"}, capture_output=True,
                       text=True)
    assert (p.returncode, p.stderr) == (1, "llamacpp.sh: false cannot import numpy (Debian: python3-numpy; "
                                           "PYTHON=... picks another)\n"), p.stderr
    tools = scratch("no-npm")  # a PATH with what the script runs before its checks, and no npm
    for tool in ["lscpu", "grep", "sort", "wc"]:
        os.symlink(shutil.which(tool), os.path.join(tools, tool))
    p = subprocess.run(["/bin/sh", script, "0"], cwd=REPO, env={"PATH": tools, "PYTHON": sys.executable},
                       capture_output=True, text=True)
    assert (p.returncode, p.stderr) == (1, "llamacpp.sh: needs node and npm\n"), p.stderr
    assert os.path.exists(gguf) == had_gguf, "wrote a GGUF although it stopped"
