#!/usr/bin/env bash
# Runs the deterministic simulation (sim/): as many seeds as asked, or one
# seed with its whole trace.
#
#   scripts/sim.sh --seeds 20000            # seeds 0 to 19999
#   scripts/sim.sh --seeds 5000 --from 1e6  # seeds 1000000 to 1004999
#   scripts/sim.sh --seed 577               # one seed, its trace printed
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
usage() { echo "usage: scripts/sim.sh --seeds N [--from S] | --seed N" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) export RINGUP_SIM_SEEDS="${2:?}"; shift 2 ;;
    --from) export RINGUP_SIM_FIRST_SEED="$(python3 -c "print(int(float('${2:?}')))")"; shift 2 ;;
    --seed) export RINGUP_SIM_SEED="${2:?}"; shift 2 ;;
    *) usage ;;
  esac
done
[ -n "${RINGUP_SIM_SEEDS:-}${RINGUP_SIM_SEED:-}" ] || usage
exec cargo test --release -p ringup-sim --test seeds every_seed_keeps_every_promise -- --nocapture
