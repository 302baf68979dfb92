#!/bin/sh
# make bench-llamacpp: llama.cpp, our peer, on the same machine and shapes as `make bench`, in the same
# minutes as our run (the machines we measure on drift by the hour). Not part of make test or make bench:
# it installs node-llama-cpp (prebuilt llama.cpp libraries with a CPU variant for each x86 level, AMX tiles
# included, chosen at run time) from npm's registry under weights/llamacpp/, and makes a GGUF with random
# Q4_0 weights in the 24B text shapes (export/synthetic_gguf.py, numpy; 13.4 GB, made once under weights/).
#
#   tests/llamacpp.sh [ROUNDS]     (THREADS=N as for bench.sh; PROMPT_TOKENS=N, default 128; PYTHON=...)
#
# Each round runs llama.cpp, then run on weights/synthetic-24b-q4.bin with the same prompt length and 64
# generated tokens, each reading its file into the page cache first (both do not fit in 24 GiB at once).
set -eu
rounds=${1:-2}
cores=$( (lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l) || sysctl -n hw.physicalcpu)
threads=${THREADS:-$cores}
prompt_tokens=${PROMPT_TOKENS:-128}
python=${PYTHON:-python3}  # make passes the one it found with numpy
"$python" -c 'import numpy' 2> /dev/null ||
    { echo "llamacpp.sh: $python cannot import numpy (Debian: python3-numpy; PYTHON=... picks another)" >&2; exit 1; }
command -v npm > /dev/null || { echo "llamacpp.sh: needs node and npm" >&2; exit 1; }
gguf=weights/synthetic-24b-q4_0.gguf
model=weights/synthetic-24b-q4.bin

[ -f "$model" ] || export/synthetic "$model" --layers 40 --vision-layers 24
[ -f "$gguf" ] || "$python" export/synthetic_gguf.py "$gguf" 40
if [ ! -d weights/llamacpp/node_modules/node-llama-cpp ]; then
    mkdir -p weights/llamacpp
    (cd weights/llamacpp && echo '{"private": true}' > package.json &&
     npm install --no-audit --no-fund --ignore-scripts node-llama-cpp@3.22.1 > /dev/null)
fi
cp tests/llamacpp.mjs weights/llamacpp/  # beside its node_modules, where node looks for the import

prompt=$(seq -s, 1000 $((999 + prompt_tokens)))
for i in $(seq "$rounds"); do
    cat "$gguf" > /dev/null
    echo "llama.cpp: $(node weights/llamacpp/llamacpp.mjs "$gguf" "$threads" "$prompt_tokens" 64 | grep '^prompt')"
    cat "$model" > /dev/null
    echo "run:       $(./run "$model" --tokens "$prompt" -n 64 --temp 0 -c 1024 -t "$threads" 2>&1 > /dev/null |
                       grep '^prompt' | sed 's/ | time to first.*//')"
done
