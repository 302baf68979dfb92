#!/bin/sh
# make bench / make bench-small: our speed on a synthetic model with Mistral Small 3.1's shapes, next to
# this machine's yardsticks measured in the same run (read bandwidth, fp32 FMA peak).
#
#   tests/bench.sh MODEL_FILE LAYERS VISION_LAYERS "W H" ...   (image sizes to encode; THREADS=N to choose
#                                                              the thread count, default: physical cores)
#
# The model file is made once by export/synthetic and kept under weights/. Prints the measurements,
# then exactly one summary line:
#   bench: model=NAME threads=N prefill_tok_s=X decode_tok_s=Y decode_gb_s=Z mem_bw_gb_s=W
set -eu
model=$1
layers=$2
vision_layers=$3
shift 3
cores=$( (lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l) || sysctl -n hw.physicalcpu)
threads=${THREADS:-$cores}

[ -f "$model" ] || export/synthetic "$model" --layers "$layers" --vision-layers "$vision_layers"
# Into the page cache, read afresh (dd's nocache drops what is there), so decode reads memory, not the disk,
# and the file sits in 2 MiB pages where the kernel can (Linux 6.x, ext4/xfs), as run's first read leaves it;
# pages left by writing it may be smaller, and decode then runs ~9% slower.
dd if="$model" iflag=nocache count=0 status=none 2>/dev/null || true
cat "$model" > /dev/null

mem_bw=$(tests/bench membw "$threads")
file_bw=$(tests/bench filebw "$model" "$threads")
peak_flops=$(tests/bench flops "$threads")
bytes_per_token=$(tests/bench weight-bytes "$model")
echo "machine: read bandwidth $mem_bw GB/s (all of the model file's pages: $file_bw GB/s)," \
     "fp32 FMA peak $peak_flops GFLOP/s ($threads threads)"

# a 512-token prompt (PROMPT_TOKENS=N to change it), then 64 generated tokens
prompt=$(seq -s, 1000 $((999 + ${PROMPT_TOKENS:-512})))
stats=$(mktemp)
/usr/bin/time -f "peak RSS %M KB" ./run "$model" --tokens "$prompt" -n 64 --temp 0 -c 1024 -t "$threads" \
    2> "$stats" > /dev/null
grep -E "^prompt:|^peak RSS" "$stats"
prefill=$(sed -n 's/^prompt: [0-9]* tokens, \([0-9.]*\) tok\/s.*/\1/p' "$stats")
best() { echo "$@" | tr ' ' '\n' | sort -g | tail -n 1; }
decode_rate() { sed -n 's/.*generated: [0-9]* tokens, \([0-9.]*\) tok\/s.*/\1/p' "$1"; }
# Decoding streams the weights from memory, whose speed here varies with the machine's other tenants: the
# yardstick is the best of its passes before and after, and decode the best of three runs (the one above and
# two more of 64 tokens after a 4-token prompt).
runs=$(decode_rate "$stats")
for i in 1 2; do
    ./run "$model" --tokens 1000,1001,1002,1003 -n 64 --temp 0 -c 1024 -t "$threads" 2> "$stats" > /dev/null
    runs="$runs $(decode_rate "$stats")"
done
decode=$(best $runs)
echo "decode: $decode tok/s, the best of three runs of 64 tokens ($runs)"
# the yardsticks once more, so that they too are measured both before and after, and their best kept
mem_bw_after=$(tests/bench membw "$threads")
file_bw_after=$(tests/bench filebw "$model" "$threads")
echo "read bandwidth after decoding: $mem_bw_after GB/s (before: $mem_bw); all of the model file's pages:" \
     "$file_bw_after GB/s (before: $file_bw)"
mem_bw=$(best $mem_bw $mem_bw_after)
file_bw=$(best $file_bw $file_bw_after)
# The yardstick is the best figure: 2 GiB of fresh memory. Where reading a working set as big as the model's
# is slower than that (seen on a virtual machine), the second ratio says how close decoding comes to plain
# reads of the same pages.
decode_gb_s=$(awk "BEGIN { printf \"%.1f\", $bytes_per_token * $decode / 1e9 }")
echo "decode reads $(awk "BEGIN { printf \"%.2f\", $bytes_per_token / 1e9 }") GB of weights per token:" \
     "$decode_gb_s GB/s = $(awk "BEGIN { printf \"%.2f\", $decode_gb_s / $mem_bw }") x the read bandwidth," \
     "$(awk "BEGIN { printf \"%.2f\", $decode_gb_s / $file_bw }") x reading all of the model file's pages"

# the vision encoder, when the model has one, on the image sizes given
image=$(mktemp --suffix=.ppm)
for size in "$@"; do
    tests/bench image $size "$image"
    if ./run "$model" -i "$image" --dump-image-embeddings /dev/null -t "$threads" > /dev/null 2> "$stats"; then
        echo "vision $size: $(grep '^vision:' "$stats") (fp32 peak $peak_flops GFLOP/s)"
    else
        echo "vision $size: not measured ($(grep -m 1 "^run:" "$stats"))"
    fi
done
rm -f "$stats" "$image"

echo "bench: model=$(basename "$model" .bin) threads=$threads prefill_tok_s=$prefill decode_tok_s=$decode" \
     "decode_gb_s=$decode_gb_s mem_bw_gb_s=$mem_bw"
