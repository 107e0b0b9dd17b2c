#!/usr/bin/env bash
# A Ray cluster on a Slurm allocation, then `rlpp train` submitted to it as a Ray job. From the
# repository root, with the environment that has rlpp's dependencies active (sbatch passes it on):
#   sbatch launch/slurm.sh [CONFIG] [key=value ...]        (CONFIG: configs/qwen2.5-math-1.5b.yaml)
#   sbatch --nodes=3 --gpus-per-node=8 launch/slurm.sh CONFIG   (the lines below fit the default config,
#                                                          3 GPUs on one node; sbatch's flags override them)
# The repository and the environment must be on storage every node sees; the run folder defaults to
# $SLURM_SUBMIT_DIR/runs/<config name> (pass trainer.output_dir=/shared/path to choose another).
# Token auth (Ray 2.60): export RAY_AUTH_MODE=token (or =disabled) before sbatch; with it unset and a
# token in ~/.ray/auth_token, the head would demand a token that workers and the job client don't send.
#SBATCH --job-name=rlpp
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=3
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

# sbatch runs a spooled copy of this script, so its own path says nothing about the repository.
repo=${SLURM_SUBMIT_DIR:-$PWD}
cd "$repo"
[[ -x launch/submit.sh ]] || { echo "slurm.sh: submit from the rlpp repository root ($repo has no launch/submit.sh)" >&2; exit 2; }
CONFIG=${1:-configs/qwen2.5-math-1.5b.yaml}
if (($#)); then shift; fi
overrides=("$@")
ray_bin=${RAY_BIN:-ray}
py=${PYTHON:-python3}
port=6379
wait_s=${RLPP_RAY_WAIT_S:-600}

if [[ -z ${RAY_AUTH_MODE:-} && (-n ${RAY_AUTH_TOKEN:-} || -n ${RAY_AUTH_TOKEN_PATH:-} || -f $HOME/.ray/auth_token) ]]; then
  echo "slurm.sh: a Ray auth token exists but RAY_AUTH_MODE is unset; export RAY_AUTH_MODE=token (or =disabled)" >&2
  exit 2
fi
if [[ ${RAY_AUTH_MODE:-} == token ]]; then
  "$ray_bin" get-auth-token --generate >/dev/null  # once, in the home every node shares
fi

has_output_dir=0
for kv in ${overrides[@]+"${overrides[@]}"}; do
  [[ $kv == trainer.output_dir=* ]] && has_output_dir=1
done
((has_output_dir)) || overrides+=("trainer.output_dir=$repo/runs/$(basename "$CONFIG" .yaml)")

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{print $1}')
# One step per node holding all of its CPUs and GPUs; Ray counts what the step can see.
step=(srun --nodes=1 --ntasks=1 --cpus-per-task="${SLURM_CPUS_ON_NODE:-1}")
gpus=${SLURM_GPUS_PER_NODE:-0}
gpus=${gpus##*:}  # "a100:8" -> 8
if ((gpus > 0)); then step+=(--gpus-per-task="$gpus"); fi

trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
echo "slurm.sh: Ray head on $head_node ($head_ip), ${#nodes[@]} node(s)"
"${step[@]}" -w "$head_node" "$ray_bin" start --head --node-ip-address="$head_ip" --port=$port \
  --dashboard-host=0.0.0.0 --block &

wait_for_nodes() {
  "$py" - "$head_ip:$port" "$1" "$wait_s" <<'PY'
import sys, time
import ray
address, want, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
while True:  # the head may not be listening yet
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        break
    except Exception as e:
        if time.monotonic() > deadline:
            sys.exit(f"slurm.sh: no Ray head at {address} after {limit:.0f} s: {e}")
        time.sleep(5)
while (alive := sum(n["Alive"] for n in ray.nodes())) < want:
    if time.monotonic() > deadline:
        sys.exit(f"slurm.sh: {alive} of {want} Ray nodes joined after {limit:.0f} s")
    time.sleep(5)
print(f"slurm.sh: {alive} Ray node(s) up: {ray.cluster_resources()}")
PY
}

wait_for_nodes 1
for node in "${nodes[@]:1}"; do
  "${step[@]}" -w "$node" "$ray_bin" start --address="$head_ip:$port" --block &
done
wait_for_nodes "${#nodes[@]}"

# The job server comes up after the GCS; submitting before it answers would fail the run for nothing.
deadline=$((SECONDS + wait_s))
until "$ray_bin" job list --address "http://$head_ip:8265" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || { echo "slurm.sh: the Ray job server at $head_ip:8265 did not answer" >&2; exit 1; }
  sleep 5
done

rc=0
launch/submit.sh --address "http://$head_ip:8265" "$CONFIG" "${overrides[@]}" || rc=$?
exit "$rc"
