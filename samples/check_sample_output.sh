#!/bin/sh
# Runs a language sample and checks what ctest's PASS_REGULAR_EXPRESSION cannot check together:
# the exit status is 0, stdout matches STDOUT_REGEX and stderr matches STDERR_REGEX (extended
# regular expressions; "-" accepts anything, an empty stream included).
# usage: check_sample_output.sh STDOUT_REGEX STDERR_REGEX COMMAND [ARG...]
set -u
if [ $# -lt 3 ]; then
  echo "usage: $0 STDOUT_REGEX STDERR_REGEX COMMAND [ARG...]" >&2
  exit 2
fi
stdout_regex=$1
stderr_regex=$2
shift 2
out=$(mktemp) && err=$(mktemp) || exit 2
trap 'rm -f "$out" "$err"' EXIT
"$@" >"$out" 2>"$err"
status=$?
echo "--- stdout of $*"; cat "$out"
echo "--- stderr"; cat "$err"
failed=0
if [ "$status" -ne 0 ]; then
  echo "FAIL: exit status $status, expected 0"; failed=1
fi
if [ "$stdout_regex" != - ] && ! grep -Eq -- "$stdout_regex" "$out"; then
  echo "FAIL: stdout does not match /$stdout_regex/"; failed=1
fi
if [ "$stderr_regex" != - ] && ! grep -Eq -- "$stderr_regex" "$err"; then
  echo "FAIL: stderr does not match /$stderr_regex/"; failed=1
fi
[ "$failed" -eq 0 ] && echo "PASS"
exit "$failed"
