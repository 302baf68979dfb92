#!/usr/bin/env python3
"""Test driver for `make test`: runs every function named test_* in tests/test_*.py.

A test passes when it returns, fails when it raises. Each test prints one line; the run ends
with `N passed, N failed`. Usage: run_tests.py [substring ...] to run only matching tests.
"""
import importlib.util, os, sys, time, traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main():
    wanted = sys.argv[1:]
    passed = failed = 0
    for fname in sorted(os.listdir(HERE)):
        if not (fname.startswith("test_") and fname.endswith(".py")):
            continue
        spec = importlib.util.spec_from_file_location(fname[:-3], os.path.join(HERE, fname))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name in [n for n in vars(module) if n.startswith("test_") and callable(getattr(module, n))]:
            full = f"{fname[:-3]}.{name}"
            if wanted and not any(w in full for w in wanted):
                continue
            t0 = time.time()
            try:
                getattr(module, name)()
                passed += 1
                print(f"ok   {full} ({time.time() - t0:.1f}s)", flush=True)
            except Exception as e:
                failed += 1
                print(f"FAIL {full}: {e}", flush=True)
                traceback.print_exc(limit=3)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
