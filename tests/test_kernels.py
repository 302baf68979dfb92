"""run.c's matmul and attention kernels (section "neural net blocks") and vision.c's attention tasks against
their scalar definitions, on every instruction set this machine can run or emulate:

- tests/test_kernels.c, built natively (x86: AVX2, AVX-512, AVX-512 VNNI, AMX; those the CPU lacks are
  named and skipped), and with clang without OpenMP;
- the same program for arm64 (NEON, NEON with sdot), cross-compiled with Debian's aarch64-linux-gnu-gcc for
  plain ARMv8-A (the dot-product kernels chosen at run time) and for ARMv8.2-A+dotprod, run under
  qemu-aarch64: `-cpu max` has the dot product, `-cpu cortex-a72` has not;
- end to end, every kernel set through ./run --kernels on the golden model (f32 against llama.cpp's logits,
  q8/q4 against the scalar kernels), and the arm64 build of run under qemu against the native one.

Without the cross compiler or qemu the arm64 tests print SKIP and pass (.ci/run installs them:
apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user).
Run: python3 tests/run_tests.py test_kernels
"""
import functools, os, re, shutil, subprocess

import numpy as np

from common import BUILD, GOLDEN, REPO, build, converted, run, scratch

CROSS = "aarch64-linux-gnu-gcc"
QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
STB = "-I/usr/include/stb"
TOKENS = open(os.path.join(GOLDEN, "tokens.txt")).read().strip()
ENV = dict(os.environ, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="passive")  # two threads even on one core


def compile_c(cc, flags, source, name):
    out = os.path.join(BUILD, "kernels", name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cmd = [cc, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", *flags, "-I" + REPO, STB, source, "-o", out, "-lm"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr[-3000:]}"
    return out


def kernel_test_program(cc, flags, name):
    return compile_c(cc, ["-Wno-unused-function", *flags], os.path.join(REPO, "tests", "test_kernels.c"), name)


def run_kernel_tests(cmd, expect_sets, expect_skips=()):
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    out = p.stdout
    for line in out.splitlines():
        if line.startswith("skip") or line.startswith("FAIL"):
            print("    " + line)
    failed = [l for l in out.splitlines() if l.startswith("FAIL")]
    assert p.returncode == 0 and not failed, f"{' '.join(cmd)}: exit {p.returncode}\n" + "\n".join(failed[:20]) + p.stderr
    ran = sorted(set(re.findall(r"^ok   (\S+)", out, re.M)))
    for s in expect_sets:
        assert s in ran, f"{' '.join(cmd)}: kernel set {s} did not run (ran {ran})"
    for s in expect_skips:
        assert f"skip {s}:" in out, f"{' '.join(cmd)}: expected {s} to be skipped"
    print(f"    {' '.join(os.path.basename(c) for c in cmd[-2:])}: {', '.join(ran)} agree with scalar")
    return ran


def cpu_flags():
    try:
        return set(re.search(r"^flags\s*:(.*)$", open("/proc/cpuinfo").read(), re.M).group(1).split())
    except (OSError, AttributeError):
        return set()


def x86_sets():
    """The kernel sets this x86 CPU runs, from /proc/cpuinfo (independently of run.c's detection)."""
    f = cpu_flags()
    sets = ["scalar"]
    if {"avx2", "fma", "f16c"} <= f:
        sets.append("avx2")
        if "avx_vnni" in f:
            sets.append("avx-vnni")
        if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= f:
            sets.append("avx512")
            if "avx512_vnni" in f:
                sets.append("avx512-vnni")
                if {"amx_tile", "amx_bf16", "avx512_bf16"} <= f:
                    sets.append("amx")
    return sets


def is_x86():
    return os.uname().machine in ("x86_64", "amd64")


def test_kernels_native():
    exe = kernel_test_program(os.environ.get("CC", "cc"), ["-fopenmp"], "test_kernels")
    expect = x86_sets() if is_x86() else ["scalar"]
    skips = [s for s in ("avx2", "avx512", "avx512-vnni", "amx") if s not in expect] if is_x86() else []
    for s in skips:
        print(f"    this CPU lacks {s}: its kernels are not tested here")
    run_kernel_tests([exe], expect, skips)


def test_kernels_clang_without_openmp():
    if not shutil.which("clang"):
        raise AssertionError("clang is not installed (apt-get install clang)")
    exe = kernel_test_program("clang", ["-Wno-unknown-pragmas"], "test_kernels-clang")
    run_kernel_tests([exe], x86_sets() if is_x86() else ["scalar"])


def arm64_tools():
    missing = [t for t in (CROSS, QEMU[0]) if not shutil.which(t)]
    if missing or not os.path.isdir(QEMU[2]):
        print(f"    SKIP: {', '.join(missing) or QEMU[2]} missing (apt-get install gcc-aarch64-linux-gnu "
              "libc6-dev-arm64-cross qemu-user): the arm64 kernels are not tested")
        return False
    return True


def test_kernels_arm64_under_qemu():
    if not arm64_tools():
        return
    plain = kernel_test_program(CROSS, ["-fopenmp", "-march=armv8-a"], "test_kernels-armv8-a")
    dot = kernel_test_program(CROSS, ["-fopenmp", "-march=armv8.2-a+dotprod"], "test_kernels-armv8.2-a+dotprod")
    run_kernel_tests([*QEMU, "-cpu", "max", plain], ["scalar", "neon", "neon-dotprod"])
    run_kernel_tests([*QEMU, "-cpu", "cortex-a72", plain], ["scalar", "neon"], ["neon-dotprod"])
    run_kernel_tests([*QEMU, "-cpu", "max", dot], ["scalar", "neon", "neon-dotprod"])


# ---- end to end

def logits(cmd, model, *args):
    f = os.path.join(scratch("kernels"), "logits.f32")
    p = subprocess.run([*cmd, model, "--tokens", TOKENS, "--dump-logits", f, *args], capture_output=True, text=True,
                       env=ENV, timeout=600)
    assert p.returncode == 0, f"{' '.join(cmd)} {model}: {p.stderr[-2000:]}"
    return np.fromfile(f, "<f4").astype(np.float64).reshape(48, -1)


def image_embeddings(cmd, model, image, *args):
    f = os.path.join(scratch("kernels"), "embeddings.f32")
    p = subprocess.run([*cmd, model, "-i", image, "--dump-image-embeddings", f, *args], capture_output=True,
                       text=True, env=ENV, timeout=600)
    assert p.returncode == 0, f"{' '.join(cmd)} {model} -i {image}: {p.stderr[-2000:]}"
    return np.fromfile(f, "<f4").astype(np.float64)


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


GOLDEN_LOGITS = np.fromfile(os.path.join(GOLDEN, "logits.f32"), "<f4").astype(np.float64).reshape(48, -1)
# As test_text: the quantized kernels differ from scalar by float rounding only, but where that puts an
# activation on the other side of a q8 rounding boundary, one level flips and these random models move
# their logits by up to ~2e-2; a wrong kernel is far off everywhere.
LOOSE = 3e-2
# AMX multiplies these 48-token batches with bf16 activations instead of int8 ones: on these models the two
# roundings move the logits apart by ~2.4e-2 (test_text checks AMX against a float64 pass in bf16).
AMX_LOOSE = 5e-2


@functools.lru_cache(maxsize=None)
def golden(type_):
    return converted(os.path.join(GOLDEN, "native"), type_)


def check_sets(cmd, sets):
    """Every kernel set of `sets` on the golden model: f32 within 1e-4 of llama.cpp, q8/q4 within LOOSE of
    scalar (amx: AMX_LOOSE); the f32 image embeddings within 1e-4 of the float64 reference. avx512 and
    avx512-vnni differ only in their integer products, which give the same sums: the same logits, bit for bit;
    so do avx2 and avx-vnni (other sets sum the f32 parts, attention, in other orders)."""
    for type_ in ("f32", "q8", "q4"):
        want = logits(cmd, golden(type_), "--kernels", "scalar")
        if type_ == "f32":
            assert rel(want, GOLDEN_LOGITS) <= 1e-4, f"scalar f32 vs llama.cpp: {rel(want, GOLDEN_LOGITS):.2e}"
        got = {}
        for s in sets:
            if s == "scalar":
                continue
            got[s] = logits(cmd, golden(type_), "--kernels", s)
            e = rel(got[s], GOLDEN_LOGITS if type_ == "f32" else want)
            print(f"    {os.path.basename(cmd[-1])} {s:12s} {type_}: rel err {e:.2e} vs "
                  f"{'llama.cpp' if type_ == 'f32' else 'scalar'}")
            assert e <= (1e-4 if type_ == "f32" else AMX_LOOSE if s == "amx" else LOOSE), f"{s} {type_}: {e:.3g}"
        for twins in (("avx512", "avx512-vnni"), ("avx2", "avx-vnni")):
            same = [s for s in twins if s in got]
            for s in same[1:]:
                assert np.array_equal(got[same[0]], got[s]), f"{type_}: {same[0]} and {s} differ"
    # the image embeddings of the f32 file (each set's vision attention, head_dim 32) against the float64 reference
    want = np.fromfile(os.path.join(GOLDEN, "img_wide.emb_ref.f32"), "<f4").astype(np.float64)
    for s in sets:
        e = rel(image_embeddings(cmd, golden("f32"), os.path.join(GOLDEN, "img_wide.png"), "--kernels", s), want)
        print(f"    {os.path.basename(cmd[-1])} {s:12s} image embeddings: rel err {e:.2e} vs the float64 reference")
        assert e <= 1e-4, f"{s} image embeddings: {e:.3g}"


def test_every_kernel_set_end_to_end():
    check_sets([build("run")], x86_sets() if is_x86() else ["scalar"])


def test_arm64_run_under_qemu():
    """run.c for arm64 (plain ARMv8-A, sdot chosen at run time) under qemu: every set on the golden model,
    and its q4 logits near the native scalar ones (within LOOSE: the f32 parts sum in other orders)."""
    if not arm64_tools():
        return
    exe = compile_c(CROSS, ["-fopenmp", "-march=armv8-a"], os.path.join(REPO, "run.c"), "run-arm64")
    qemu_run = [*QEMU, "-cpu", "max", exe]
    check_sets(qemu_run, ["scalar", "neon", "neon-dotprod"])
    native = logits([build("run")], golden("q4"), "--kernels", "scalar")
    arm = logits(qemu_run, golden("q4"))
    e = rel(arm, native)
    print(f"    arm64 neon-dotprod q4 vs native scalar: rel diff {e:.2e}")
    assert e <= LOOSE, f"arm64 q4 logits differ from the native build's by {e:.3g}"
