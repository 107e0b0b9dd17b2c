#!/usr/bin/env bash
# Submit `rlpp train` to a running Ray cluster as a Ray job (docs/cluster.md).
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: launch/submit.sh [--address URL] [--no-wait] [--submission-id ID] [--pip SPEC]... CONFIG [key=value ...]

Runs `python -m rlpp.cli train CONFIG key=value ...` as a Ray job. The repository root is uploaded as
the job's working dir (less .git, .venv, runs, __pycache__, *.egg-info, .hypothesis, .pytest_cache,
benchmarks/results), so CONFIG must be a file inside it and outside those.

  --address URL        the cluster's job server (default: $RAY_ADDRESS, else http://127.0.0.1:8265)
  --no-wait            return once the job is submitted instead of streaming its logs
  --submission-id ID   the job's id (default: rlpp-YYYYmmdd-HHMMSS-RANDOM)
  --pip SPEC           a pip requirement installed for the job (repeatable), for clusters whose image
                       lacks rlpp's dependencies, e.g.
                       --pip 'rlpp[vllm,math] @ git+https://github.com/OWNER/rlpp@COMMIT'
  -h, --help           print this text

Exit status: 0 when the job SUCCEEDED (with --no-wait: once it is submitted); 1 when it FAILED, was
STOPPED or has not finished; 2 for a usage error.

Environment:
  RAY_BIN        the ray CLI to run (default: ray), e.g. .venv/bin/ray
  PYTHON         python used to build the runtime-env JSON (default: python3)
  RAY_AUTH_MODE  Ray 2.60 token authentication. A head started with RAY_AUTH_MODE=token, or while a
                 token exists in ~/.ray/auth_token, rejects clients that send none, and `ray job`
                 sends the token only when RAY_AUTH_MODE=token is set on this side too (token from
                 RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). This script never sets it.

On a multi-node cluster pass trainer.output_dir=/absolute/path/on/shared/storage (unless CONFIG sets
one): a relative run folder lands in each node's temporary copy of the working dir.
TXT
}

die() {
  echo "submit.sh: $*" >&2
  echo "Try 'launch/submit.sh --help'." >&2
  exit 2
}

need_value() { (($# >= 2)) || die "option $1 needs a value"; }

quoted() {
  local s
  s=$(printf '%q ' "$@")
  printf '%s' "${s% }"
}

address=${RAY_ADDRESS:-http://127.0.0.1:8265}
wait=1
submission_id=""
pips=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --address) need_value "$@"; address=$2; shift 2 ;;
    --address=*) address=${1#*=}; shift ;;
    --submission-id) need_value "$@"; submission_id=$2; shift 2 ;;
    --submission-id=*) submission_id=${1#*=}; shift ;;
    --pip) need_value "$@"; pips+=("$2"); shift 2 ;;
    --pip=*) pips+=("${1#*=}"); shift ;;
    --no-wait) wait=0; shift ;;
    --) shift; break ;;
    -*) die "unknown option: $1" ;;
    *) break ;;
  esac
done
(($#)) || die "missing CONFIG (a YAML file in the repository, e.g. configs/qwen2.5-math-1.5b.yaml)"
config=$1
shift
[[ -f $config ]] || die "config file not found: $config"
for kv in "$@"; do
  [[ $kv == *=* ]] || die "expected key=value after CONFIG, got: $kv"
done

ray_bin=${RAY_BIN:-ray}
py=${PYTHON:-python3}
command -v "$ray_bin" >/dev/null || die "ray CLI not found: $ray_bin (set RAY_BIN, e.g. RAY_BIN=.venv/bin/ray)"
command -v "$py" >/dev/null || die "python not found: $py (set PYTHON)"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
excludes=(.git .venv runs __pycache__ '*.egg-info' .hypothesis .pytest_cache benchmarks/results)

# The entrypoint runs in the uploaded copy of the repository, so CONFIG is named relative to its root;
# a file outside it, or under an excluded folder, would not be there.
rel_config=$("$py" - "$repo" "$config" "${excludes[@]}" <<'PY'
import fnmatch, os, sys
repo, config, excludes = sys.argv[1], sys.argv[2], sys.argv[3:]
rel = os.path.relpath(os.path.realpath(config), repo)
parts = rel.split(os.sep)
if parts[0] == os.pardir:
    sys.exit(f"submit.sh: config {config} is outside the repository {repo}, which is what gets uploaded; "
             "copy it under configs/")
for pattern in excludes:
    hit = ("/" in pattern and (rel == pattern or rel.startswith(pattern + "/"))) or \
          any(fnmatch.fnmatch(p, pattern) for p in parts[:-1])
    if hit:
        sys.exit(f"submit.sh: config {config} is under {pattern}, which is not uploaded; copy it under configs/")
print("/".join(parts))
PY
) || exit 2

runtime_env=$("$py" -c '
import json, sys
n = int(sys.argv[2])
env = {"working_dir": sys.argv[1], "excludes": sys.argv[3:3 + n], "env_vars": {"PYTHONUNBUFFERED": "1"}}
if sys.argv[3 + n:]:
    env["pip"] = sys.argv[3 + n:]
print(json.dumps(env))' "$repo" "${#excludes[@]}" "${excludes[@]}" ${pips[@]+"${pips[@]}"})

[[ -n $submission_id ]] || submission_id="rlpp-$(date +%Y%m%d-%H%M%S)-$RANDOM"
follow=$(quoted "$ray_bin" job logs -f --address "$address" "$submission_id")

output_dir_given=0
for kv in "$@"; do
  [[ $kv == trainer.output_dir=/* ]] && output_dir_given=1
done
if ((!output_dir_given)); then
  echo "submit.sh: note: with a relative trainer.output_dir the run folder is made inside the job's" \
    "temporary working dir; pass trainer.output_dir=/shared/path to keep it (docs/cluster.md)" >&2
fi

# `ray job submit` shell-quotes each entrypoint word itself (shlex.join), so they go as separate words.
entrypoint=(python -m rlpp.cli train "$rel_config" "$@")
submit=("$ray_bin" job submit --address "$address" --submission-id "$submission_id" --runtime-env-json "$runtime_env")
((wait)) || submit+=(--no-wait)
echo "submit.sh: job $submission_id -> $address: $(quoted "${entrypoint[@]}")"
echo "submit.sh: follow the logs with: $follow"

# Ctrl-C while logs stream stops only the streaming; say so rather than leave the job looking dead.
trap 'echo >&2; echo "submit.sh: stopped following; job $submission_id goes on. Follow: $follow" >&2; exit 130' INT
submit_rc=0
"${submit[@]}" -- "${entrypoint[@]}" || submit_rc=$?
trap - INT

if ((!wait)); then
  ((submit_rc == 0)) && echo "submit.sh: submitted $submission_id; follow the logs with: $follow"
  exit "$submit_rc"
fi

status_rc=0
status_out=$("$ray_bin" job status --address "$address" "$submission_id" 2>&1) || status_rc=$?
state=UNKNOWN
if ((status_rc == 0)); then
  # Ray prints "Job 'ID' succeeded" / "failed" / "was stopped" or "Status for job 'ID': RUNNING"; drop
  # the quoted id (it may contain those words), colour codes and the free-text status message.
  found=$(printf '%s\n' "${status_out//"'$submission_id'"/}" | sed $'s/\x1b\\[[0-9;]*m//g' \
    | grep -v '^Status message:' | grep -oiwE 'succeeded|failed|stopped|pending|running' | head -n1) || true
  [[ -n $found ]] && state=$(printf '%s' "$found" | tr '[:lower:]' '[:upper:]')
fi
echo "submit.sh: job $submission_id: $state"
case $state in
  SUCCEEDED) exit 0 ;;
  FAILED | STOPPED) echo "submit.sh: logs: $follow" >&2 ;;
  UNKNOWN) printf '%s\n' "$status_out" >&2 ;;
  *) echo "submit.sh: the job has not finished; follow it with: $follow" >&2 ;;
esac
((submit_rc != 0)) && exit "$submit_rc"
exit 1
