#!/usr/bin/env bash
# The Python tools the conformance test drives, in a virtual environment
# outside the clone (reused by every clone on this machine): schemathesis,
# which generates requests from docs/openapi.yaml and checks every answer
# against it, and prometheus_client, whose strict OpenMetrics parser reads
# GET /metrics. Installs what is missing, then prints the environment's
# directory.
#
#   scripts/py-tools.sh
#
# Override the directory with RINGUP_PY_ENV.
set -euo pipefail
env_dir="${RINGUP_PY_ENV:-$HOME/.cache/ringup-py}"
# Pinned: a newer schemathesis may check more, which should be a change of ours.
pins=(schemathesis==4.32.5 prometheus_client==0.26.0)

# The newest Python 3 installed. On CPython 3.11.7 hypothesis (under
# schemathesis) fails with "AST constructor recursion depth mismatch" while
# it describes a strategy, so 3.12 or later is taken where there is one,
# also from pyenv when it is not the active version.
pick_python() {
  local py
  for py in python3.13 python3.12 "$HOME"/.pyenv/versions/3.13*/bin/python3 \
    "$HOME"/.pyenv/versions/3.12*/bin/python3 python3; do
    if "$py" -c 'import venv' >/dev/null 2>&1; then
      echo "$py"
      return 0
    fi
  done
  return 1
}

version_of() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }

have_pins() {
  [ -x "$env_dir/bin/python" ] || return 1
  [ "$(version_of "$env_dir/bin/python")" = "$(version_of "$python")" ] || return 1
  local frozen
  frozen=$("$env_dir/bin/python" -m pip freeze 2>/dev/null) || return 1
  for pin in "${pins[@]}"; do
    grep -qix "$pin" <<<"$frozen" || return 1
  done
}

python=$(pick_python) || {
  echo "error: no Python 3 with venv is installed (Debian: apt-get install python3-venv)" >&2
  exit 1
}
if ! have_pins; then
  echo "== installing ${pins[*]} into $env_dir (Python $(version_of "$python"))" >&2
  "$python" -m venv --clear "$env_dir" >&2
  "$env_dir/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}" >&2
fi
echo "$env_dir"
