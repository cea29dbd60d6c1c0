#!/bin/bash
# One prepared run of the fused kernels on a CUDA machine: correctness first, then timings (each
# against the previous build where carry/mlagent-old.gz exists, in the same run), each command under
# its own timeout and the whole under a deadline, a short table last. The binary comes built here
# (no Rust on the device): `CUDARC_CUDA_VERSION=13000 cargo build --release --bin mlagent`,
# stripped and gzipped to carry/mlagent.gz (carry/ is git-ignored). Every output lands in one
# archive, $OUT/device-check.tgz (the device tool brings back at most 8 files).
#
#   bash kernels/scripts/device-check.sh     # at most DEADLINE (default 240) s plus one command
#   SET=sweep …     timings over sequence lengths;  SET=profile …  checks, forward+backward against
#                   the previous binary, CubeCL's per-kernel profile and Nsight Compute (PLANES=1 also
#                   times 2 and 8 warps per backward cube; DQ32=1 times and profiles the dQ kernel
#                   with 32 rows per warp; FUSED=1 profiles the fused backward; WIDE=1 times and
#                   profiles the wide dK/dV kernel, FA2's warp layout, with 8 and 4 warps, and its
#                   fused form, FA2's single backward kernel: MLAGENT_MMA_BWD=wide-fused)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-device-out}; mkdir -p "$OUT"; W=$(mktemp -d); DEADLINE=${DEADLINE:-240}
# Unpacked on every run: a machine still warm from an earlier call keeps that call's binaries.
M=/tmp/mlagent; { gzip -dc carry/mlagent.gz > $M && chmod +x $M; } || exit 1
O=/tmp/mlagent-old; rm -f $O; [ -e carry/mlagent-old.gz ] && { gzip -dc carry/mlagent-old.gz > $O && chmod +x $O; }
NV=$(dirname "$(find /usr/local/cuda*/ -name 'libnvrtc.so*' 2>/dev/null | grep -v stubs | head -1)")
export LD_LIBRARY_PATH="$NV:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$W/card.txt"
T0=$(date +%s); NAMES=()
run() { local name=$1 to=$2; shift 2; local s=$(date +%s); NAMES+=("$name")
  if [ $(( s - T0 )) -gt "$DEADLINE" ]; then echo "$name skipped (deadline)" | tee -a "$W/summary.txt"; return; fi
  for a in "$@"; do [ "$a" = "$O" ] && [ ! -x $O ] && { echo "$name skipped (no old binary)" | tee -a "$W/summary.txt"; return; }; done
  timeout "$to" "$@" > "$W/$name.out" 2> "$W/$name.err"; local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - s ))s (at $(( $(date +%s) - T0 ))s)" | tee -a "$W/summary.txt"; }
B="kernels bench --device cuda --dtype bf16 --op attention --format json"
# Per-kernel device times: CubeCL's profiler times every launch on its own (synchronised, so only
# for the split between kernels) and writes a summary per sync; the last one is printed at the end.
PROFILE="env CUBECL_DEBUG_LOG=$W/profile.log CUBECL_DEBUG_OPTION=profile"
NCU=$(command -v ncu || find /usr/local /opt -name ncu -type f 2>/dev/null | head -1)
# Correctness (kernels check runs the backward kernels too): the defaults (mma kernels, 32 rows per
# warp, cp.async tiles, split backward with per-head dK/dV shares) in bf16; the fused backward
# (opt-in); no GQA (dK/dV written directly); GQA 7 at head dim 64, not causal, off the tile grid.
checks() {
  local C="kernels check --device cuda --batch 2 --heads 6 --kv-heads 2 --seq-len 200 --head-dim 128 --vocab 1003 --tokens 64 --format json"
  run check_default 30 $M $C --dtype bf16 --causal --key-growth 12
  run check_fused 30 env MLAGENT_MMA_BWD=fused $M $C --dtype bf16 --causal --key-growth 12
  run check_dq32 30 env MLAGENT_MMA_DQ_ROWS=32 $M $C --dtype bf16 --causal --key-growth 12
  run check_wide 30 env MLAGENT_MMA_BWD=wide $M $C --dtype bf16 --causal --key-growth 12
  run check_wide_gqa7 30 env MLAGENT_MMA_BWD=wide $M kernels check --device cuda --batch 2 --heads 7 --kv-heads 1 --seq-len 77 --head-dim 64 --vocab 1003 --tokens 64 --dtype f16 --format json
  run check_widefused 30 env MLAGENT_MMA_BWD=wide-fused $M $C --dtype bf16 --causal --key-growth 12
  run check_widefused_gqa7 30 env MLAGENT_MMA_BWD=wide-fused $M kernels check --device cuda --batch 2 --heads 7 --kv-heads 1 --seq-len 77 --head-dim 64 --vocab 1003 --tokens 64 --dtype f16 --format json
  run check_mha 30 $M ${C/--kv-heads 2/--kv-heads 6} --dtype bf16 --causal --key-growth 12
  run check_gqa7 30 $M kernels check --device cuda --batch 2 --heads 7 --kv-heads 1 --seq-len 77 --head-dim 64 --vocab 1003 --tokens 64 --dtype f16 --format json
}
if [ "${SET:-full}" = profile ]; then
  # Where the backward's time goes: the checks, forward+backward against the previous
  # binary (interleaved), CubeCL's per-kernel split, and Nsight Compute on the three register-tile
  # kernels where it exists and may read the counters.
  checks
  S="--seq-len 4096 --causal --no-baseline"
  # DQ32=1: also the dQ kernel with 32 rows per warp (MLAGENT_MMA_DQ_ROWS=32), interleaved, and
  # under Nsight Compute.
  for i in 1 2; do
    run fwdbwd_new_$i 30 $M $B $S --bwd
    run fwdbwd_old_$i 30 $O $B $S --bwd
    [ -n "${DQ32:-}" ] && run fwdbwd_dq32_$i 30 env MLAGENT_MMA_DQ_ROWS=32 $M $B $S --bwd
    [ -n "${WIDE:-}" ] && run fwdbwd_wide_$i 30 env MLAGENT_MMA_BWD=wide $M $B $S --bwd
    [ -n "${WIDE:-}" ] && run fwdbwd_widefused_$i 30 env MLAGENT_MMA_BWD=wide-fused $M $B $S --bwd
  done
  if [ -n "${WIDE:-}" ]; then
    run fwdbwd_wide_p4 30 env MLAGENT_MMA_BWD=wide MLAGENT_MMA_BWD_PLANES=4 $M $B $S --bwd
    run fwdbwd_8192_wide 30 env MLAGENT_MMA_BWD=wide $M $B --seq-len 8192 --causal --no-baseline --bwd
    run fwdbwd_8192_widefused 30 env MLAGENT_MMA_BWD=wide-fused $M $B --seq-len 8192 --causal --no-baseline --bwd
    [ -n "${DQ32:-}" ] && run fwdbwd_wide_dq32 30 env MLAGENT_MMA_BWD=wide MLAGENT_MMA_DQ_ROWS=32 $M $B $S --bwd
    run profile_wide 40 env MLAGENT_MMA_BWD=wide CUBECL_DEBUG_LOG=$W/profile_wide.log CUBECL_DEBUG_OPTION=profile $M $B $S --bwd --warmup 1 --repeats 3
    run profile_widefused 40 env MLAGENT_MMA_BWD=wide-fused CUBECL_DEBUG_LOG=$W/profile_widefused.log CUBECL_DEBUG_OPTION=profile $M $B $S --bwd --warmup 1 --repeats 3
  fi
  [ -n "${DQ32:-}" ] && run fwdbwd_8192_dq32 30 env MLAGENT_MMA_DQ_ROWS=32 $M $B --seq-len 8192 --causal --no-baseline --bwd
  # Warps per backward cube (PLANES=1): 8 (128 rows, one cube per SM by registers) and 2 (four).
  if [ -n "${PLANES:-}" ]; then
    run fwdbwd_p8 30 env MLAGENT_MMA_BWD_PLANES=8 $M $B $S --bwd
    run fwdbwd_p2 30 env MLAGENT_MMA_BWD_PLANES=2 $M $B $S --bwd
  fi
  run fwdbwd_8192 30 $M $B --seq-len 8192 --causal --no-baseline --bwd
  run fwd_new 30 $M $B $S
  run profile_fwdbwd 40 $PROFILE $M $B $S --bwd --warmup 1 --repeats 3
  if [ -n "$NCU" ]; then
    K='regex:flash_(fwd|dq|dkv)_mma'
    [ -x $O ] && run ncu_old_dq 60 $NCU -k 'regex:flash_dq_mma' --launch-count 1 --section SpeedOfLight \
      --metrics 'regex:smsp__average_warps_issue_stalled_(long|short)_scoreboard_per_issue_active\.ratio' $O $B $S --bwd --warmup 0 --repeats 1
    run ncu_sections 90 $NCU -k "$K" --launch-count 3 --section SpeedOfLight --section Occupancy \
      --section LaunchStats --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
      --section MemoryWorkloadAnalysis $M $B $S --bwd --warmup 0 --repeats 1
    run ncu_stalls 60 $NCU -k "$K" --launch-count 3 --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
      $M $B $S --bwd --warmup 0 --repeats 1
    [ -n "${DQ32:-}" ] && run ncu_dq32 60 env MLAGENT_MMA_DQ_ROWS=32 $NCU -k 'regex:flash_dq_mma' --launch-count 1 --section SpeedOfLight \
      --section Occupancy --section LaunchStats --metrics 'regex:smsp__average_warps_issue_stalled_(long|short)_scoreboard_per_issue_active\.ratio|smsp__average_warps_issue_stalled_(barrier|wait|mio_throttle)_per_issue_active\.ratio' \
      $M $B $S --bwd --warmup 0 --repeats 1
    # FUSED=1: the fused backward (one kernel, dQ by atomic adds; five products instead of seven, yet
    # slower when timed) under the same sections, and its machine code with the stall samples of
    # each instruction (the hottest printed last).
    [ -n "${WIDE:-}" ] && run ncu_wide 60 env MLAGENT_MMA_BWD=wide $NCU -k 'regex:flash_dkv_wide' --launch-count 1 --section SpeedOfLight \
      --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
      --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' $M $B $S --bwd --warmup 0 --repeats 1
    [ -n "${WIDE:-}" ] && run ncu_widefused 60 env MLAGENT_MMA_BWD=wide-fused $NCU -k 'regex:flash_dkv_wide' --launch-count 1 --section SpeedOfLight \
      --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
      --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' $M $B $S --bwd --warmup 0 --repeats 1
    if [ -n "${FUSED:-}" ]; then
      run ncu_fused 60 env MLAGENT_MMA_BWD=fused $NCU -k 'regex:flash_dkv_mma' --launch-count 1 --section SpeedOfLight \
        --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
        --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' $M $B $S --bwd --warmup 0 --repeats 1
      run ncu_fused_sass 90 env MLAGENT_MMA_BWD=fused $NCU -k 'regex:flash_dkv_mma' --launch-count 1 --section SourceCounters \
        --section WarpStateStats --page source --print-source sass --csv $M $B $S --bwd --warmup 0 --repeats 1
    fi
  else echo "no ncu" | tee -a "$W/summary.txt"; fi
elif [ "${SET:-full}" = sweep ]; then
  # Timings only (the kernels as checked by a full run): the forward over sequence lengths, to
  # separate each call's fixed cost (synchronised "ms") from the device's time ("queued ms").
  for s in 256 1024 2048 4096 8192; do run fwd_$s 30 $M $B --seq-len $s --causal --no-baseline; done
  run fwd_noncausal 30 $M $B --seq-len 4096 --no-baseline
  for s in 1024 4096 8192; do run fwdbwd_$s 30 $M $B --seq-len $s --causal --bwd --no-baseline; done
  run fwdbwd_fused 30 env MLAGENT_MMA_BWD=fused $M $B --seq-len 4096 --causal --bwd --no-baseline
  run ppo_bwd 60 $M kernels bench --device cuda --dtype bf16 --op ppo --bwd --no-baseline --format json
  run profile_fwdbwd 40 $PROFILE $M $B --seq-len 4096 --causal --bwd --no-baseline --warmup 1 --repeats 3
else
  checks
  S="--seq-len 4096 --causal --no-baseline"
  # Timings at issue 3's shape (B 1, 28/4 heads, D 128, bf16), each against the previous binary
  # (carry/mlagent-old.gz), interleaved twice: the grid order and the dK/dV cubes of one head.
  for i in 1 2; do
    run fwd_new_$i 30 $M $B $S
    run fwd_old_$i 30 $O $B $S
  done
  for i in 1 2; do
    run fwdbwd_new_$i 30 $M $B $S --bwd
    run fwdbwd_old_$i 30 $O $B $S --bwd
  done
  run fwdbwd_fused 30 env MLAGENT_MMA_BWD=fused $M $B $S --bwd
  run fwd_8192 30 $M $B --seq-len 8192 --causal --no-baseline
  run fwd_8192_old 30 $O $B --seq-len 8192 --causal --no-baseline
  run fwdbwd_8192 30 $M $B --seq-len 8192 --causal --bwd --no-baseline
  run fwdbwd_8192_old 30 $O $B --seq-len 8192 --causal --bwd --no-baseline
  run fwdbwd_fused_8192 30 env MLAGENT_MMA_BWD=fused $M $B --seq-len 8192 --causal --bwd --no-baseline
  run fwd_noncausal 30 $M $B --seq-len 4096 --no-baseline
  run fwdbwd_noncausal 30 $M $B --seq-len 4096 --bwd --no-baseline
  run fwdbwd_mha 30 $M ${B/--op attention/--op attention --kv-heads 28} $S --bwd
  run profile_fwdbwd 40 $PROFILE $M $B $S --bwd --warmup 1 --repeats 3
fi
tar czf "$OUT/device-check.tgz" -C "$W" .
for f in "$W"/*.err; do [ -s "$f" ] && { echo "-- $(basename "$f")"; grep -v 'WARN\|^$' "$f" | tail -3 | cut -c1-300; }; done
echo; echo "| run | result |"; echo "|---|---|"
for f in "${NAMES[@]}"; do [ -e "$W/$f.out" ] || continue
  case $f in check_*) r=$(tail -1 "$W/$f.out" | cut -c1-260);;
    *) r=$(tail -1 "$W/$f.out" | grep -o '"results":\[[^]]*\]' | grep -o '"\(TFLOP/s\|GB/s\|ms\|queued_ms\|TFLOP/s queued\|GB/s queued\)":[^,]*' | tr '\n' ' ' | cut -c1-260);; esac
  echo "| $f | $r |"; done
[ -s "$W/profile.log" ] && { echo "-- per-kernel times, forward+backward at 4096 (the last profile summary)"
  tac "$W/profile.log" | sed -n '1,/| Name /p' | tac | grep '^|' | cut -c1-120 | head -16; }
for p in wide widefused; do [ -s "$W/profile_$p.log" ] && { echo "-- per-kernel times, MLAGENT_MMA_BWD=${p/widefused/wide-fused}"
  tac "$W/profile_$p.log" | sed -n '1,/| Name /p' | tac | grep '^|' | cut -c1-120 | head -16; }; done
for f in ncu_sections ncu_stalls ncu_old_dq ncu_dq32 ncu_wide ncu_widefused ncu_fused; do [ -s "$W/$f.out" ] || continue; echo "-- $f"
  grep -E 'flash_|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Compute \(SM\) Thr|Memory Throughput|Warp Cycles Per Issued|Issued Ipc|No Eligible|Block Limit|Shared Memory Config|stalled_[a-z_]+_per_issue_active|Dynamic Shared|Static Shared|L1/TEX Hit|Bank' "$W/$f.out" \
    | grep -v '^==' | sed 's/  */ /g' | awk '$NF != "0" || /flash_/' | cut -c1-110 | head -90; done
# The fused kernel's 25 instructions with the most stall samples (column 3 of ncu's source page
# holds them in the versions seen so far; the header line names the columns).
[ -s "$W/ncu_fused_sass.out" ] && { echo "-- ncu_fused_sass: columns"; grep -m1 '"Address"' "$W/ncu_fused_sass.out" | cut -c1-300
  grep '^"0x\|^"[0-9]' "$W/ncu_fused_sass.out" | awk -F'","' '{gsub(/"/,"",$3); print $3 "\t" $2}' | sort -g | tail -25 | cut -c1-140; }
cat "$W/card.txt" "$W/summary.txt"
