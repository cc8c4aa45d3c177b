#!/usr/bin/env bash
# The CUDA checks of README "On a GPU", in one call: AMP under real mixed precision, the monitor's
# per-step and per-epoch cost, and the defect preset against stock on one evaluation set (DQ_SET,
# default the photographed one) at DQ_EPOCHS (default 100) epochs, 3 seeds. Each part has its own
# time limit so that the later parts still run and whatever finished comes back. Part "ceiling" (not in the
# default PARTS): stock against the plan on CEIL_SETS (default "photo strip") for CEIL_S seconds each (default
# 330), all runs at once, what a GPU's budget does for the thin classes. Everything lands in $OUT (default runs/device-checks): summary.txt and one archive of the logs and results.json files.
#   OUT=dir bash benchmarks/device_checks.sh                      # on a CUDA machine
#   DEVICE=cpu SMOKE=1 OUT=dir bash benchmarks/device_checks.sh   # a minutes-long rehearsal on a CPU (fixed
#                                                                   tiny sizes: OVH_ARGS, DQ_EPOCHS ignored)
#   PARTS="dq" SEEDS="0 1" DQ_SET=surface DQ_EPOCHS=60 ...         # some parts only, fewer seeds
#   PARTS=ceiling CEIL_S=330 CEIL_SEEDS=0 ...                    # stock@time vs plan@time, one budget for both
#   OVH_ARGS="--images 320 --imgsz 640 --epochs 5 --repeats 3 --workers 8" ...  # a longer overhead comparison
set -u
OUT=${OUT:-runs/device-checks}
DEVICE=${DEVICE:-0}
PY=${PY:-python3}
export PYTHONPATH="plugin${PYTHONPATH:+:$PYTHONPATH}" YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
work=$(mktemp -d)
mkdir -p "$OUT" "$work/logs"
if [ -n "${SMOKE:-}" ]; then
  amp="--images 24 --imgsz 64 --epochs 1 --workers 0"; ovh="--images 32 --imgsz 64 --epochs 1 --repeats 1 --workers 0"
  dq="--images 40 --imgsz 64 --epochs 2 --workers 0"; ceil="--images 40 --imgsz 64 --workers 0"
else
  amp="--images 96 --imgsz 160 --epochs 3 --workers 2"; ovh=${OVH_ARGS:-"--images 320 --imgsz 640 --epochs 2 --repeats 2 --workers 8"}
  dq="--images 300 --imgsz 256 --epochs ${DQ_EPOCHS:-100} --workers 2 --threads 2"
  ceil="--images 300 --imgsz 256 --workers ${CEIL_WORKERS:-3} --threads 1"
fi
t_amp=${T_AMP:-120}; t_ovh=${T_OVH:-120}; t_dq=${T_DQ:-300}  # seconds per part
PARTS=${PARTS:-amp overhead dq}
SEEDS=${SEEDS:-0 1 2}
summary="$OUT/summary.txt"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
  $PY -c "import torch, ultralytics; print('torch', torch.__version__, 'ultralytics', ultralytics.__version__)"
  echo "parts: $PARTS; seeds: $SEEDS; limits (s): amp $t_amp, overhead $t_ovh, each dq run $t_dq"; } > "$summary"

if [[ " $PARTS " == *" amp "* ]]; then
echo "== AMP" >> "$summary"
timeout "$t_amp" $PY benchmarks/amp_check.py --device "$DEVICE" $amp --out "$work/amp" > "$work/logs/amp.log" 2>&1
echo "rc $?" >> "$summary"; grep -A40 "^no CUDA\|^NVIDIA\|, torch " "$work/logs/amp.log" | grep -v "^Speed\|^Results" >> "$summary"
fi

if [[ " $PARTS " == *" overhead "* ]]; then
echo "== overhead" >> "$summary"
timeout "$t_ovh" $PY benchmarks/overhead.py --device "$DEVICE" $ovh > "$work/logs/overhead.log" 2>&1
echo "rc $?" >> "$summary"; grep -A6 "^per-step on\|^torch threads" "$work/logs/overhead.log" >> "$summary"
fi

if [[ " $PARTS " == *" dq "* ]]; then
DQ_SET=${DQ_SET:-photo}
echo "== set $DQ_SET, stock vs preset, seeds $SEEDS, one process per run" >> "$summary"
for seed in $SEEDS; do
  for recipe in stock preset; do
    timeout "$t_dq" $PY benchmarks/defect_quality.py --sets "$DQ_SET" --recipes "$recipe" --seeds "$seed" --device "$DEVICE" \
      $dq --out "$work/dq-$recipe-$seed" > "$work/logs/dq-$recipe-$seed.log" 2>&1 &
  done
done
wait
grep -h "^\[$DQ_SET\] seed" "$work"/logs/dq-*.log >> "$summary"
ls "$work"/dq-*/results.json >/dev/null 2>&1 && $PY benchmarks/defect_quality.py --merge "$work"/dq-*/results.json >> "$summary" 2>&1
fi
if [[ " $PARTS " == *" ceiling "* ]]; then
CEIL_SETS=${CEIL_SETS:-photo strip}; CEIL_S=${CEIL_S:-$([ -n "${SMOKE:-}" ] && echo 20 || echo 330)}; CEIL_SEEDS=${CEIL_SEEDS:-0}
echo "== ceiling: sets $CEIL_SETS, stock@time vs plan@time, ${CEIL_S} s each, seeds $CEIL_SEEDS, all at once" >> "$summary"
# Each run builds its own copy of its set (seconds; the generators are seeded, so the copies are the same):
# Ultralytics writes its label cache beside the labels, and runs sharing one copy would race on it.
for set in $CEIL_SETS; do for seed in $CEIL_SEEDS; do for recipe in stock@time plan@time; do
  run="$work/ceil-$set-${recipe%@time}-$seed"
  timeout $((CEIL_S + 150)) $PY benchmarks/defect_quality.py --sets "$set" --recipes "$recipe" --seeds "$seed" \
    --time-s "$CEIL_S" --epochs 1000 --device "$DEVICE" $ceil --out "$run" > "$work/logs/ceil-$set-${recipe%@time}-$seed.log" 2>&1 &
done; done; done
wait
grep -h "^\[.*\] seed" "$work"/logs/ceil-*.log >> "$summary"
ls "$work"/ceil-*-*-*/results.json >/dev/null 2>&1 && $PY benchmarks/defect_quality.py --merge "$work"/ceil-*-*-*/results.json >> "$summary" 2>&1
for f in "$work"/ceil-*-*-*/results.json; do [ -f "$f" ] && mkdir -p "$work/results" && cp "$f" "$work/results/$(basename "$(dirname "$f")").json"; done
# CEIL_WEIGHTS=1: each run's last weights beside the summary, to study its boxes where there is no GPU
[ -n "${CEIL_WEIGHTS:-}" ] && for w in "$work"/ceil-*-*-*/runs/*/weights/last.pt; do
  cp "$w" "$OUT/$(basename "$(dirname "$(dirname "$w")")").pt"; done
fi

mkdir -p "$work/results" && for f in "$work"/dq-*/results.json; do [ -f "$f" ] && cp "$f" "$work/results/$(basename "$(dirname "$f")").json"; done
tar czf "$OUT/device-checks.tgz" -C "$work" logs results
cat "$summary"
