#!/bin/sh
# SPDX-License-Identifier: MIT
# valgrind_reloads.sh - make soak, part 2 (issue #15): batond under valgrind's memcheck with
# --track-fds=yes through RELOADS reloads of 4 example-httpd workers and a graceful stop.
# Passes when memcheck reports 0 errors (in batond and in each spawn's child until its execve()),
# nothing definitely, indirectly or possibly lost, and no fd of batond's own open at exit. Usage: tests/bench/valgrind_reloads.sh [BUILD]. Loopback only.
set -eu
BUILD=$(cd "${1:-build}" && pwd)
RELOADS=${RELOADS:-50}
command -v valgrind >/dev/null || { echo "valgrind_reloads: valgrind is not installed" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect,possible \
	--errors-for-leak-kinds=definite,indirect,possible --track-fds=yes \
	--log-file="$dir/vg.log" \
	"$BUILD/batond" -c "$dir/ctl.sock" -l 127.0.0.1:0 -n 4 --ready-timeout 120s \
	-- "$BUILD/example-httpd" 2>"$dir/batond.log" &
vg=$!
i=0
until "$BUILD/batonctl" -c "$dir/ctl.sock" status >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 600 ] || { echo "valgrind_reloads: batond did not start" >&2; kill $vg; exit 1; }
	sleep 0.1
done
n=0
while [ $n -lt "$RELOADS" ]; do
	"$BUILD/batonctl" -c "$dir/ctl.sock" reload >/dev/null 2>&1
	n=$((n + 1))
done
"$BUILD/batonctl" -c "$dir/ctl.sock" stop >/dev/null 2>&1
wait $vg || { echo "valgrind_reloads: batond exited $?" >&2; tail -20 "$dir/batond.log" >&2; exit 1; }
# Every process valgrind followed (batond, and each spawn's child until its execve()) counts.
errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$dir/vg.log" |
	awk '{ n += $1 } END { print n + 0 }')
# fds open at batond's exit that it did not inherit (the shell's, valgrind's log file).
fds=$(awk '/Open file descriptor/ { open = 1; next }
	open && /inherited from parent/ { open = 0; next }
	open && /^==[0-9]+== *$/ { n++; open = 0 }
	END { print n + 0 }' "$dir/vg.log")
lost=$(grep -E "(definitely|indirectly|possibly) lost: [1-9]" "$dir/vg.log" || true)
heap=$(grep -E "in use at exit" "$dir/vg.log" | sed 's/^==[0-9]*== *//')
echo "valgrind: $RELOADS reloads and a stop: $errors errors, $fds fds of batond's own open" \
	"at exit (besides stdio), ${lost:-nothing lost}; $heap"
if [ "$errors" != 0 ] || [ "$fds" != 0 ] || [ -n "$lost" ]; then
	cat "$dir/vg.log" >&2
	exit 1
fi
