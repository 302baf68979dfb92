# make            builds run and quantize (-O2, OpenMP)
# make OPENMP=    builds without OpenMP (single-threaded, same results)
# make test       runs every test (needs python3 with numpy, PIL and OpenCV: see README)
# make demo       makes a tiny random model, converts it and generates text with it
# make bench      speed on a full-size synthetic model (14 GB, made once); make bench-small: 4 layers
# make bench-llamacpp  llama.cpp (our peer) on the same shapes, alternating with run (npm registry once)

CC ?= cc
CFLAGS ?= -O2 -g
OPENMP ?= -fopenmp
WARN = -std=c11 -Wall -Wextra
LDLIBS = -lm
# a python3 that has numpy (the tests' reference implementation needs it)
PYTHON ?= $(shell for p in /usr/bin/python3 python3; do $$p -c 'import numpy' 2>/dev/null && echo $$p && break; done)

HEADERS = model.h quant.h json.h
# stb_image (images for the vision encoder) from the system: Debian's libstb-dev
STB_CFLAGS = $(shell pkg-config --cflags stb 2>/dev/null || echo -I/usr/include/stb)

all: run quantize

run: run.c vision.c $(HEADERS) unicode_table.h
	$(CC) $(CFLAGS) $(OPENMP) $(WARN) $(STB_CFLAGS) -o $@ run.c $(LDLIBS)

quantize: quantize.c $(HEADERS)
	$(CC) $(CFLAGS) $(OPENMP) $(WARN) -o $@ quantize.c $(LDLIBS)

export/fixture: export/fixture.c
	$(CC) $(CFLAGS) $(WARN) -o $@ export/fixture.c $(LDLIBS)

export/synthetic: export/synthetic.c $(HEADERS)
	$(CC) $(CFLAGS) $(WARN) -o $@ export/synthetic.c $(LDLIBS)

tools: export/fixture export/synthetic

tests/bench: tests/bench.c model.h
	$(CC) $(CFLAGS) $(OPENMP) $(WARN) -o $@ tests/bench.c $(LDLIBS)

# speed on a synthetic model of the real shapes (made once under weights/), see tests/bench.sh
bench: all tools tests/bench
	sh tests/bench.sh weights/synthetic-24b-q4.bin 40 24 "1024 768" "1540 1540"

bench-small: all tools tests/bench
	sh tests/bench.sh weights/synthetic-small-q4.bin 4 2 "1024 768"

# llama.cpp on the same shapes, alternating with run (needs npm's registry once), see tests/llamacpp.sh
bench-llamacpp: all tools
	PYTHON="$(PYTHON)" sh tests/llamacpp.sh

test: all tools
	@test -n "$(PYTHON)" || { echo "make test: no python3 with numpy found (apt-get install python3-numpy python3-pil python3-opencv)"; exit 1; }
	$(PYTHON) tests/run_tests.py

demo: all tools
	export/fixture weights/demo
	./quantize weights/demo/native weights/demo-q4.bin
	./run weights/demo-q4.bin -p "Tell me about the project." -n 40 --temp 0

clean:
	rm -f run quantize export/fixture export/synthetic tests/bench
	rm -rf tests/build

.PHONY: all tools test demo bench bench-small bench-llamacpp clean
