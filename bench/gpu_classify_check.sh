#!/usr/bin/env bash
# On the lent GPU machine: classify's CUDA path, and the classify throughput bench on its CPU
# (a Xeon with native bfloat16, unlike the 2-core dev VM). Writes under $OUT (default bench/results).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep -E "Model name|^CPU\(s\)";
  python3 -c "import torch, torchvision, typer; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, 'typer', typer.__version__, 'cpu bf16',
torch.ops.mkldnn._is_mkldnn_bf16_supported())"; } 2>&1 | tee "$OUT/classify_machine.txt"

for device in cuda cpu; do
    python3 -m cvtool classify sample_images/photos -m resnet18 --weights none --device "$device" \
        --precision fp32 --format jsonl -q > "$OUT/classify_$device.jsonl"
    echo "classify --device $device: exit $?" | tee -a "$OUT/classify_machine.txt"
done
python3 -m cvtool classify sample_images/photos -m resnet18 --weights none --device cuda \
    --precision bf16 -o "$OUT/cuda_run" --format csv -q > /dev/null
echo "classify --device cuda --precision bf16: exit $?" | tee -a "$OUT/classify_machine.txt"
python3 - "$OUT" <<'PY' | tee -a "$OUT/classify_machine.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
cuda, cpu = ([json.loads(x) for x in (out / f"classify_{d}.jsonl").read_text().splitlines()]
             for d in ("cuda", "cpu"))
same = sum(a["predictions"][0]["index"] == b["predictions"][0]["index"] for a, b in zip(cuda, cpu))
diff = max(abs(a["predictions"][0]["score"] - b["predictions"][0]["score"]) for a, b in zip(cuda, cpu))
print(f"cuda vs cpu fp32: top-1 equal {same}/{len(cpu)}, max top-1 score difference {diff:.2e}")
print("run.json device:", json.loads((out / "cuda_run" / "run.json").read_text())["device_name"])
PY
python3 bench/classify_throughput.py --images 64 --repeats 2 --threads 16 2>&1 \
    | tee "$OUT/classify_throughput_xeon.txt"
