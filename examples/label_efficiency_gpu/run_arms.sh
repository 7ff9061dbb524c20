#!/usr/bin/env bash
# The five arms x datasets x seeds of the label-efficiency study on one 8-GPU node, one run after another.
# Each run writes runs/<dataset>/<arm>_seed<k>/metrics.jsonl; collect.py turns them into label_efficiency.json,
# study.md and the plots. Environment: MODEL (default Qwen/Qwen2.5-Math-1.5B), DATASETS ("gsm8k math"),
# ARMS (all five), SEEDS ("0 1 2"), OUT (label_efficiency_gpu_out); extra arguments go to every run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
MODEL=${MODEL:-Qwen/Qwen2.5-Math-1.5B}
DATASETS=${DATASETS:-gsm8k math}
ARMS=${ARMS:-full_gold self_only random_20 lowest_20 coact_20}
SEEDS=${SEEDS:-0 1 2}
OUT=$(realpath -m "${OUT:-label_efficiency_gpu_out}")

declare -A POLICY=(
    [full_gold]="coact.router.policy=gold_all coact.router.oracle_share_per_step=1.0"
    [self_only]="coact.router.policy=self_only"
    [random_20]="coact.router.policy=random coact.router.oracle_share_per_step=0.2"
    [lowest_20]="coact.router.policy=lowest_agreement coact.router.oracle_share_per_step=0.2"
    [coact_20]="coact.router.policy=coact coact.router.oracle_share_per_step=0.2"
)

for dataset in $DATASETS; do
    data="$OUT/data/$dataset"
    if [ ! -f "$data/train.parquet" ]; then
        case $dataset in
            gsm8k) coact-verl prepare --dataset gsm8k --src "${GSM8K_SRC:-openai/gsm8k}" --out "$data" --max-train 6700 ;;
            math) coact-verl prepare --dataset math --src "${MATH_SRC:-DigitalLearningGmbH/MATH-lighteval}" \
                      --eval-src "${MATH500_SRC:-HuggingFaceH4/MATH-500}" --out "$data" --max-train 6700 ;;
            *) echo "unknown dataset $dataset (gsm8k or math)" >&2; exit 2 ;;
        esac
    fi
    task=$([ "$dataset" = math ] && echo math || echo gsm8k)
    for seed in $SEEDS; do
        for arm in $ARMS; do
            run="$OUT/runs/$dataset/${arm}_seed$seed"
            if [ -f "$run/done" ]; then continue; fi
            mkdir -p "$run" && rm -f "$run"/oracle.sqlite* "$run/metrics.jsonl"
            # shellcheck disable=SC2086
            VERL_FILE_LOGGER_PATH="$run/metrics.jsonl" python3 -m verl.trainer.main_ppo \
                --config-path "$here" --config-name label_efficiency_gpu \
                actor_rollout_ref.model.path="$MODEL" \
                data.train_files="$data/train.parquet" data.val_files="$data/test.parquet" data.seed="$seed" \
                coact.consistency.task="$task" coact.router.seed="$seed" \
                coact.oracle.gold_path="$data/train_gold.parquet" coact.oracle.db_path="$run/oracle.sqlite" \
                trainer.default_local_dir="$run/checkpoints" trainer.experiment_name="${dataset}_${arm}_seed$seed" \
                ${POLICY[$arm]} "$@" 2>&1 | tee "$run/train.log"
            touch "$run/done"
        done
    done
done
python3 "$here/collect.py" "$OUT"
