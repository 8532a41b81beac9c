#!/usr/bin/env bash
# Checks the C layout (.clang-format) of what a change touched, and nothing else: the
# C files changed against BASE (committed or not; a new file once git add-ed), and in
# them only the changed lines (clang-format-diff line ranges). The tree was never
# reformatted as a whole, so the untouched lines of a changed file are not flagged.
#
#   scripts/format-check.sh [BASE]        print the reformatting wanted; exit 1 if any
#   scripts/format-check.sh --fix [BASE]  apply it to the changed lines in place
#
# BASE defaults to the merge base with origin/main (else main, else HEAD).
set -euo pipefail

fix=0
if [[ ${1:-} == --fix ]]; then
  fix=1
  shift
fi
if [[ ${1:-} == -h || ${1:-} == --help || $# -gt 1 ]]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -gt 1 ]] && exit 2
  exit 0
fi

cd "$(git rev-parse --show-toplevel)"

base=${1:-}
if [[ -z $base ]]; then
  for ref in origin/main main; do
    if git rev-parse --verify -q "$ref^{commit}" >/dev/null; then
      base=$(git merge-base HEAD "$ref")
      break
    fi
  done
  base=${base:-HEAD}
fi
git rev-parse --verify -q "$base^{commit}" >/dev/null || { echo "format-check: unknown revision '$base'" >&2; exit 2; }
short=$(git rev-parse --short "$base")

pick() { for b in "$@"; do command -v "$b" >/dev/null 2>&1 && { echo "$b"; return; }; done; }
clang_format=$(pick clang-format-14 clang-format)
format_diff=$(pick clang-format-diff-14 clang-format-diff)
if [[ -z $clang_format || -z $format_diff ]]; then
  echo "format-check: needs clang-format and clang-format-diff (Debian: apt-get install clang-format)" >&2
  exit 2
fi

# Changed, not deleted, C sources and headers (fuzz corpus entries are data, not C).
mapfile -t files < <(git diff --name-only --diff-filter=d "$base" -- '*.c' '*.h')
if [[ ${#files[@]} -eq 0 ]]; then
  echo "format-check: no C file changed since $short"
  exit 0
fi

args=(-p1 -binary "$clang_format" -style file)
if [[ $fix -eq 1 ]]; then
  git diff -U0 --no-color "$base" -- "${files[@]}" | "$format_diff" "${args[@]}" -i
  echo "format-check: reformatted the changed lines of ${#files[@]} file(s)"
  exit 0
fi

out=$(git diff -U0 --no-color "$base" -- "${files[@]}" | "$format_diff" "${args[@]}")
if [[ -n $out ]]; then
  printf '%s\n' "$out"
  echo "format-check: the changed lines above do not follow .clang-format (scripts/format-check.sh --fix $short applies it)" >&2
  exit 1
fi
echo "format-check: ${#files[@]} changed C file(s) since $short follow .clang-format"
