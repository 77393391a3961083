# Shared helpers for the CLI tests: $MB_CLI is the mambabyte program, $MB_SOURCE_DIR the repo.
set -uo pipefail
: "${MB_CLI:?set MB_CLI to the mambabyte program}"
: "${MB_SOURCE_DIR:?set MB_SOURCE_DIR to the repository root}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { # check "description" command...
  local d=$1; shift
  if "$@"; then ok "$d"; else bad "$d"; fi
}
finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
# A small real-text corpus that is always present: the project's own C sources.
corpus() {
  mkdir -p "$T/corpus"
  cp "$MB_SOURCE_DIR"/src/*.c "$MB_SOURCE_DIR"/src/cpu/*.c "$T/corpus/"
  echo "$T/corpus"
}
# ignored N: whether this shell was started with signal N ignored (bash can neither undo that
# nor let its children; signal tests then skip)
ignored() { awk -v n="$1" '/^SigIgn:/ { v = 0; h = "0123456789abcdef"
  for (i = 1; i <= length($2); i++) v = v * 16 + index(h, substr(tolower($2), i, 1)) - 1
  exit !(int(v / 2 ^ (n - 1)) % 2) }' /proc/$$/status 2>/dev/null; }
