#!/usr/bin/env bash
# Set up (including Debian's chromium for the browser tests), then run every test:
# unit (library), nodes, end-to-end on a real ComfyUI server, browser.
#
#   bash scripts/test.sh                 # all of tests/
#   bash scripts/test.sh tests/e2e -x    # arguments go to pytest
#
# Exit status: pytest's; "no tests collected" (pytest's 5) counts as a failure.
# Screenshots, console logs and the server's log land in test-artifacts/.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
bash "$REPO/scripts/setup.sh" --browser || { echo "test.sh: setup failed" >&2; exit 1; }
cd "$REPO"
rm -rf test-artifacts
# The tests write checkpoints and ComfyUI folders to the temp dir (~2.5 GiB at peak): say so
# up front rather than failing hundreds of tests with "No space left on device".
TMP="${TMPDIR:-/tmp}"
FREE_KIB=$(df -Pk "$TMP" | awk 'NR==2 {print $4}')
if [ -n "$FREE_KIB" ] && [ "$FREE_KIB" -lt $((3 * 1024 * 1024)) ]; then
    echo "test.sh: only $((FREE_KIB / 1024)) MiB free in $TMP; the tests need about 3 GiB there" \
         "(free some space, or point TMPDIR at a roomier disk)" >&2
    exit 1
fi
if [ "$#" -eq 0 ]; then
    set -- tests
fi
START=$(date +%s)
"$VENV/bin/python" -m pytest -q -rfEs -p no:cacheprovider "$@"
rc=$?
echo "test.sh: pytest exited $rc after $(( $(date +%s) - START ))s"
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$rc"
