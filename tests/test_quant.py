"""Builds tests/test_quant.c, the checks of the number formats in quant.h, and runs it.

The C program prints one line per check and exits non-zero if any fails; this wrapper lets
run_tests.py include it. Uses $CC if set, else cc.
"""
import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def test_quant_formats():
    cc = os.environ.get("CC", "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "test_quant")
        cmd = cc + ["-O2", "-std=c11", "-I" + REPO, os.path.join(HERE, "test_quant.c"), "-o", exe, "-lm"]
        build = subprocess.run(cmd, capture_output=True, text=True)
        if build.returncode != 0:
            raise AssertionError(f"build failed: {' '.join(cmd)}\n{build.stderr[-3000:]}")
        run = subprocess.run([exe], capture_output=True, text=True, timeout=900)
        if run.returncode != 0:
            lines = (run.stdout + run.stderr).splitlines()
            failed = [line for line in lines if line.startswith("FAIL")]
            raise AssertionError("test_quant exited with %d\n%s\n--- last lines ---\n%s"
                                 % (run.returncode, "\n".join(failed), "\n".join(lines[-15:])))
