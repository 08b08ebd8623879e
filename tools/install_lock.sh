#!/usr/bin/env bash
# Install requirements.lock into a venv with several pip processes at once, then byte-compile it.
#
# Why: one `pip install -r requirements.lock` fetches and unpacks ~7 GB (torch's CUDA build, its
# nvidia-* libraries, ~150 packages) one wheel after another on one core: ~140 s on a 2-core
# machine, then ~65 s of compileall. The lock pins every package, so no resolution is needed
# (--no-deps) and disjoint groups install side by side (~85 s); compileall skips the test suites
# that packages ship and pip itself, which no process of ours imports (~45 s).
# Usage: tools/install_lock.sh VENV LOCK [EXTRA_REQUIREMENT ...]
set -euo pipefail
venv=$1
lock=$2
shift 2
pip=("$venv/bin/pip" install -q --disable-pip-version-check --no-compile --no-deps)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

heavy='^(nvidia-|cuda-|torch==|torchvision==|triton==)'
grep -E '^(nvidia-|cuda-)' "$lock" >"$work/cuda" || true
grep -E '^(torch==|torchvision==|triton==)' "$lock" >"$work/torch" || true
{ grep -v -E "$heavy" "$lock" | grep -v -E '^\s*(#|$)'; printf '%s\n' "$@"; } >"$work/rest"
# The ~150 small packages cost pip more per package than per byte: three processes share them.
for i in 0 1 2; do awk -v i="$i" 'NR % 3 == i' "$work/rest" >"$work/rest$i"; done

jobs=()
for group in cuda torch rest0 rest1 rest2; do
  if [ -s "$work/$group" ]; then "${pip[@]}" -r "$work/$group" & jobs+=($!); fi
done
status=0
for job in "${jobs[@]}"; do wait "$job" || status=$?; done
if [ "$status" != 0 ]; then echo "install_lock.sh: pip failed (exit $status)" >&2; exit "$status"; fi

# .pyc files matter where PYTHONDONTWRITEBYTECODE is set (as on CI machines): without them every
# process recompiles what it imports. The exit code is ignored: some packages ship files for other
# Python versions.
"$venv/bin/python" -m compileall -q -j 0 -x 'site-packages/(pip/|.*/tests?/)' "$venv/lib" >/dev/null 2>&1 || true
