#!/usr/bin/env bash
# Ctrl-C during a long validation pass (step 0, a large --val, --eval-bytes 0): the pass stops
# at its next window, a step-0 checkpoint is written, exit status 130 within seconds, and the
# run resumes from it. A second signal ends the process at once with one line on stderr.
. "$(dirname "$0")/lib.sh"
data=$(corpus)
mkdir -p "$T/val"
for i in $(seq 40); do cat "$data"/*.c; done >"$T/val/big.txt" # several MB: minutes to score
args=(--device cpu --data "$data" --val "$T/val" --preset tiny --d-model 32 --ctx 256 --batch 8
      --steps 4 --eval-bytes 0 --seed 7 --quiet)
start_and_wait() { # start_and_wait DIR: training in the background, returns once validation runs
  "$MB_CLI" train "${args[@]}" --out "$1" >"$1.out" 2>"$1.err" &
  pid=$!
  for _ in $(seq 300); do grep -q '^model:' "$1.err" 2>/dev/null && break; sleep 0.1; done
  sleep 1
}
start_and_wait "$T/a"
t0=$(date +%s%N)
kill -INT "$pid"
wait "$pid"
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
check "interrupted validation exits 130 (got $rc)" [ "$rc" -eq 130 ]
check "stopped within 5 s (took $ms ms)" [ "$ms" -lt 5000 ]
check "step-0 checkpoint written" grep -q "interrupted (signal 2) at step 0: checkpoint saved" "$T/a.err"
check "no val_bpb for the interrupted pass" bash -c "! grep -q 'val_bpb' '$T/a.err' '$T/a.out'"
"$MB_CLI" train --device cpu --data "$data" --val "$T/val" --out "$T/a" --resume --quiet --eval-bytes 2048 \
  --final-eval-bytes 2048 >/dev/null 2>"$T/a2.err"
check "resumes from step 0" bash -c "[ $? -eq 0 ] && grep -q 'at step 0 of 4' '$T/a2.err'"

# second signal: the default action, one line on stderr, no new checkpoint
start_and_wait "$T/b"
kill -INT "$pid"
sleep 0.05
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
if grep -q "second signal" "$T/b.err"; then
  check "second signal: killed by SIGINT (status $rc)" [ "$rc" -eq 130 ]
  check "second signal: one line on stderr" grep -q "^mambabyte: second signal: stopping now; the checkpoint on disk is the previous one$" "$T/b.err"
else # (the first one finished before the second came: a slow machine could not race it)
  check "first signal alone: status 130" [ "$rc" -eq 130 ]
fi
finish
