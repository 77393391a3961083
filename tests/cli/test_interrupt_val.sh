#!/usr/bin/env bash
# Ctrl-C during a long validation pass (step 0, a large --val, --eval-bytes 0): the pass stops
# at its next window, a step-0 checkpoint is written, exit status 130 within seconds, and the
# run resumes from it. A second signal ends the process at once with one line on stderr.
. "$(dirname "$0")/lib.sh"
# job control on: a script's background jobs otherwise start with SIGINT ignored, and train
# leaves a signal its caller ignores alone (as nohup users expect)
set -m
if ignored 2 || ignored 15; then
  echo "skip: this shell was started with SIGINT or SIGTERM ignored"
  finish
  exit
fi
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
  check "second signal: one line on stderr, saying what is on disk" \
    grep -Eq "^mambabyte: second signal: stopping now; (no checkpoint was written yet \($T/b holds none\)|the last checkpoint in $T/b \(step 0\) is intact)$" "$T/b.err"
else # (the first one finished before the second came: a slow machine could not race it)
  check "first signal alone: status 130" [ "$rc" -eq 130 ]
fi

# the second signal right after the first, before any checkpoint of a new run: the line says
# none was written (not "the previous one")
start_and_wait "$T/c"
kill -INT "$pid"
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rc=$?
check "second signal: killed at once (status $rc)" bash -c "[ $rc -eq 130 ] || [ $rc -eq 143 ]"
check "second signal before any checkpoint: says none was written" \
  grep -q "^mambabyte: second signal: stopping now; no checkpoint was written yet ($T/c holds none)$" "$T/c.err"
check "second signal before any checkpoint: no 'previous one'" bash -c "! grep -q 'previous' '$T/c.err'"
check "second signal before any checkpoint: none on disk" bash -c "[ ! -e '$T/c/model.safetensors' ]"
# resumed from a step-0 checkpoint: the second signal names it
"$MB_CLI" train "${args[@]}" --out "$T/d" >"$T/d.out" 2>"$T/d.err" &
pid=$!
for _ in $(seq 300); do grep -q '^model:' "$T/d.err" 2>/dev/null && break; sleep 0.1; done
sleep 1
kill -INT "$pid"
wait "$pid"
"$MB_CLI" train --device cpu --data "$data" --val "$T/val" --out "$T/d" --resume --quiet --eval-bytes 0 >"$T/d2.out" 2>"$T/d2.err" &
pid=$!
for _ in $(seq 300); do grep -q '^model:' "$T/d2.err" 2>/dev/null && break; sleep 0.1; done
sleep 1
kill -INT "$pid"
kill -TERM "$pid" 2>/dev/null
wait "$pid"
check "second signal after a resume: names the run's checkpoint" \
  grep -q "^mambabyte: second signal: stopping now; the last checkpoint in $T/d (step 0) is intact$" "$T/d2.err"
finish
