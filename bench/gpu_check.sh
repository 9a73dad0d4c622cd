#!/usr/bin/env bash
# benchmark-device's whole suite on a CUDA machine: JSON, chart and log under $OUT.
#
#   OUT=bench/results bash bench/gpu_check.sh            # on the GPU machine (OUT defaults here)
#   MATMUL_SIZES=64 CONV_SIZES=tiny BATCHES=1 bash bench/gpu_check.sh --quick   # smoke test
#
# matmul and conv2d run as two invocations, so a time limit that stops the second still
# leaves the first's results; their JSON documents are then merged into one.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
    --format=csv 2>&1; "$PY" -c "import torch; print('torch', torch.__version__)"; } \
    > "$OUT/machine.txt"
cat "$OUT/machine.txt"

cmd=("$PY" -m cvtool benchmark-device)

status=0
for op in matmul conv2d; do
    sizes=$([ "$op" = matmul ] && echo "${MATMUL_SIZES:-square,layers}" \
            || echo "${CONV_SIZES:-resnet50,mobilenet_v2}")
    "${cmd[@]}" --ops "$op" --sizes "$op=$sizes" --batch-sizes "${BATCHES:-1,32}" \
        --devices cpu,cuda --thread-counts 1,all --flush-l2 --warmup 2 --max-time 1.0 \
        --format json --save-json "$OUT/$op.json" --plot "$OUT/$op.png" \
        --fail-below "$op:cuda:*:speedup=1" "$@" > /dev/null 2>> "$OUT/log.txt"
    code=$?
    echo "$op: exit $code" | tee -a "$OUT/log.txt"
    [ "$code" -gt "$status" ] && status=$code
done

"$PY" bench/matmul_vs_torch_benchmark.py > "$OUT/agreement.json" 2>> "$OUT/log.txt"
echo "torch.utils.benchmark agreement: exit $?" | tee -a "$OUT/log.txt"

# One document: the first's environment and devices, every result, the summaries rebuilt.
"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from cvtool.devicebench.report import summary, to_json
from cvtool.writers import write_bytes
from cvtool.devicebench.runner import BenchResult
out = Path(sys.argv[1])
parts = [json.loads((out / f"{op}.json").read_text()) for op in ("matmul", "conv2d")
         if (out / f"{op}.json").exists()]
merged = {**parts[0], "results": [r for p in parts for r in p["results"]],
          "gate": [g for p in parts for g in p["gate"]]}
options = merged["environment"]["options"]
for key in ("ops", "cases", "fail_below"):
    options[key] = [v for p in parts for v in p["environment"]["options"][key]]
merged["summary"] = summary([BenchResult(**r) for r in merged["results"]])
write_bytes(out / "benchmark-device.json", to_json(merged).encode())
for row in merged["summary"]:
    print(json.dumps(row))
PY
rm -f "$OUT/matmul.json" "$OUT/conv2d.json"
exit "$status"
