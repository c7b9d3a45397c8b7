# Issue 23's code-search encoders on a GPU machine (torch and numpy, no tree-sitter), from the repo root:
#   bash tools/device/train_search.sh SECONDS [PACKED]     (DEVICE=cpu CONFIG=tiny: a dry run on a CPU)
# PACKED (default .c23/search, carried) is what `anycode search-data pack` wrote here.  Trains the five
# variants (concat, sum, attention, structural, semantic) one after another, sharing SECONDS (the whole
# call, start and evaluation included), and writes three files: $OUT/search_eval.json (each variant's
# dev and test MRR and CoSQA figures, and the best by dev MRR), $OUT/search_best.pt (that variant's
# weights, fp16, without the tables PACKED holds: about 12 MiB) and $OUT/train_search.log.  Runs live
# in /tmp/runs23: a second call on a warm machine resumes each variant from its checkpoint.
set -u; T0=$(date +%s); SECS=${1:-570}; DATA=${2:-.c23/search}; mkdir -p /tmp/pkg23/anycode "$OUT" && cp anycode/__init__.py /tmp/pkg23/anycode/ && ln -sfn "$PWD/model" /tmp/pkg23/anycode/model && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader; PYTHONPATH=/tmp/pkg23 PYTHONUNBUFFERED=1 python3 -m anycode.model.search_train --data "$DATA" --out /tmp/runs23 --variants all --device "${DEVICE:-cuda}" --config "${CONFIG:-base}" --export "$OUT" --minutes "$(python3 -c "print(($SECS - 40 - $(date +%s) + $T0) / 60)")" 2>&1 | tee "$OUT/train_search.log"; ls -la "$OUT"; echo "done in $(( $(date +%s) - T0 ))s"
