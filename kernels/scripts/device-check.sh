#!/bin/bash
# One prepared run of the fused kernels on a CUDA machine: correctness first, then timings, each
# command under its own timeout, a short table last. The binary comes built here (no Rust on the
# device): `CUDARC_CUDA_VERSION=13000 cargo build --release --bin mlagent`, stripped and gzipped to
# carry/mlagent.gz (carry/ is git-ignored). Results land in $OUT (or ./device-out).
#
#   bash kernels/scripts/device-check.sh     # at most 9.3 min (every command has a timeout)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-device-out}; mkdir -p "$OUT"
M=/tmp/mlagent; [ -x $M ] || { gzip -dc carry/mlagent.gz > $M && chmod +x $M; } || exit 1
NV=$(dirname "$(find /usr/local/cuda*/ -name 'libnvrtc.so*' 2>/dev/null | grep -v stubs | head -1)")
export LD_LIBRARY_PATH="$NV:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
T0=$(date +%s)
run() { local name=$1 to=$2; shift 2; local s=$(date +%s)
  timeout "$to" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"; local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - s ))s (at $(( $(date +%s) - T0 ))s)" | tee -a "$OUT/summary.txt"; }
C="kernels check --device cuda --batch 2 --heads 6 --kv-heads 2 --seq-len 200 --head-dim 128 --vocab 1003 --tokens 64 --format json"
# Correctness (kernels check runs the backward kernels): the tensor-core forward and backward (bf16)
# with its rescale path (rising keys); the register-tile kernels (mma.sync, forward and backward)
# with ldmatrix (f16; bf16 with 32 rows per plane) and with element reads (bf16); their logic with
# emulated products on CUDA (separates an MMA or ldmatrix fault from a logic fault).
run check_bf16 40 $M $C --dtype bf16
run check_bf16_rising 40 $M $C --dtype bf16 --causal --key-growth 12
run check_mma 40 env MLAGENT_ATTENTION=mma $M $C --dtype f16 --causal --key-growth 12
run check_mma_m32 40 env MLAGENT_ATTENTION=mma MLAGENT_MMA_ROWS=32 $M $C --dtype bf16 --causal --key-growth 12
run check_mma_direct 40 env MLAGENT_ATTENTION=mma-direct $M $C --dtype bf16 --causal
run check_mma_emulated 40 env MLAGENT_ATTENTION=mma-emulated $M $C --dtype bf16 --causal --key-growth 12
B="kernels bench --device cuda --dtype bf16 --op attention --seq-len 4096 --causal --format json"
# Timings: the forwards (tensor-core cmma; register-tile mma with 16 and 32 rows per plane), the
# first against the plain-ops reference in the same run; forward+backward with the tensor-core
# kernels, the register-tile kernels and training's default (closed-form) backward; the PPO loss
# with its memory.
run fwd_cmma 45 $M $B --baseline reference
run fwd_mma 45 env MLAGENT_ATTENTION=mma $M $B --no-baseline
run fwd_mma_m32 45 env MLAGENT_ATTENTION=mma MLAGENT_MMA_ROWS=32 $M $B --no-baseline
run fwdbwd_kernels 45 $M $B --bwd --no-baseline
run fwdbwd_mma 45 env MLAGENT_ATTENTION=mma $M $B --bwd --no-baseline
run fwdbwd_refbwd 45 $M $B --bwd --reference-bwd --no-baseline
run ppo 45 $M kernels bench --device cuda --dtype bf16 --op ppo --bwd --format json
echo; echo "| run | result |"; echo "|---|---|"
for f in check_bf16 check_bf16_rising check_mma check_mma_m32 check_mma_direct check_mma_emulated; do
  echo "| $f | $(tail -1 "$OUT/$f.out" | cut -c1-300) |"; done
for f in fwd_cmma fwd_mma fwd_mma_m32 fwdbwd_kernels fwdbwd_mma fwdbwd_refbwd ppo; do
  echo "| $f | $(tail -1 "$OUT/$f.out" | grep -o '"results":.*' | cut -c1-400) |"; done
cat "$OUT/summary.txt"
