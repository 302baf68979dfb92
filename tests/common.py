"""Shared helpers for the tests: paths, building, running programs, fixtures."""
import functools, os, shutil, subprocess, tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared"))
GOLDEN = os.path.join(SHARED, "golden")
BUILD = os.path.join(REPO, "tests", "build")   # scratch space of a test run (git-ignored)
os.makedirs(BUILD, exist_ok=True)


@functools.lru_cache(maxsize=None)
def stb_cflags():
    """The compiler flags that find the system's stb_image.h (run.c includes vision.c, which uses it), as the
    Makefile gets them: pkg-config, else Debian's /usr/include/stb."""
    p = subprocess.run(["pkg-config", "--cflags", "stb"], capture_output=True, text=True) \
        if shutil.which("pkg-config") else None
    return p.stdout.split() if p and p.returncode == 0 else ["-I/usr/include/stb"]


def compile_harness(name, source, *flags):
    """Compiles a C test harness (source text that #includes run.c, say) into tests/build/NAME/; returns its path."""
    d = os.path.join(BUILD, name)
    os.makedirs(d, exist_ok=True)
    src, exe = os.path.join(d, "harness.c"), os.path.join(d, "harness")
    with open(src, "w") as f:
        f.write(source)
    cc = os.environ.get("CC", "cc")
    p = subprocess.run([cc, "-O2", "-std=c11", "-Wall", "-Wno-unused-function", *flags, "-I", REPO, *stb_cflags(),
                        "-o", exe, src, "-lm"], capture_output=True, text=True)
    assert p.returncode == 0, f"{name} harness does not compile:\n{p.stderr}"
    return exe


@functools.lru_cache(maxsize=None)
def build(target):
    """Builds a Makefile target once per test run and returns its path."""
    subprocess.run(["make", "-s", "-C", REPO, target], check=True)
    return os.path.join(REPO, target)


def run(args, input=None, timeout=600):
    """Runs a program; returns (exit code, stdout, stderr) as text (bytes if input is bytes)."""
    text = not isinstance(input, bytes)
    p = subprocess.run(args, input=input, capture_output=True, text=text, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def run_text(args, input=None, timeout=600):
    """run, for programs whose output may hold any bytes (a random model's generated tokens can spell
    U+FFFD): feeds bytes, decodes stdout and stderr with U+FFFD for invalid sequences."""
    if isinstance(input, str):
        input = input.encode()
    rc, out, err = run(args, input=b"" if input is None else input, timeout=timeout)
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def scratch(name):
    """A fresh folder under tests/build for one test."""
    d = tempfile.mkdtemp(prefix=name + "-", dir=BUILD)
    return d


@functools.lru_cache(maxsize=None)
def fixture(*flags):
    """Tiny random checkpoint in both layouts made by export/fixture; returns its folder (hf/, native/)."""
    exe = build("export/fixture")
    out = os.path.join(BUILD, "fixture" + "".join(f.replace("-", "_") for f in flags))
    if not os.path.exists(os.path.join(out, "native", "params.json")):
        subprocess.run([exe, out, *flags], check=True, capture_output=True)
    return out


@functools.lru_cache(maxsize=None)
def converted(src, type_):
    """src (a checkpoint folder) converted with --type type_; returns the model file path."""
    exe = build("quantize")
    tag = src.replace(REPO, "").replace(SHARED, "shared").strip("/").replace("/", "_")
    out = os.path.join(BUILD, f"{tag}-{type_}.bin")
    rc, _, err = run([exe, src, out, "--type", type_])
    assert rc == 0, err
    return out


def one_line_error(err, *must_contain):
    """stderr is exactly one line that names what it must."""
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    for s in must_contain:
        assert s in lines[0], f"{s!r} not in error line {lines[0]!r}"
    return lines[0]
