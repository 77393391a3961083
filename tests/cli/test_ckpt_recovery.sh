#!/usr/bin/env bash
# A kill between the two renames of a checkpoint (new model, old train state, the new train
# state left as train_state.safetensors.tmp.PID) is completed on --resume, and leftover
# temporary files are removed; without a matching temporary the error says what to do. A stop
# on a non-finite loss names the checkpoint of this run that is actually on disk.
. "$(dirname "$0")/lib.sh"
data=$(corpus)
args=(--device cpu --data "$data" --preset tiny --d-model 32 --ctx 32 --batch 2 --steps 20
      --eval-every 0 --eval-bytes 1024 --seed 3 --quiet)
res=(--device cpu --data "$data" --resume --quiet --eval-every 0 --eval-bytes 1024)
ST=train_state.safetensors

# reference: 4 steps straight (same 20-step schedule)
"$MB_CLI" train "${args[@]}" --out "$T/ref" --stop-after 4 >/dev/null 2>"$T/ref.err" || { cat "$T/ref.err"; bad "reference run"; }
# step 2, save its train state, resume to step 3
"$MB_CLI" train "${args[@]}" --out "$T/r" --stop-after 2 >/dev/null 2>"$T/r1.err" || { cat "$T/r1.err"; bad "run to step 2"; }
cp "$T/r/$ST" "$T/st2"
"$MB_CLI" train "${res[@]}" --out "$T/r" --stop-after 1 >/dev/null 2>"$T/r2.err" || { cat "$T/r2.err"; bad "resume to step 3"; }
cp -r "$T/r" "$T/neg"
cp -r "$T/r" "$T/first"
# simulate the kill: step-3 model, step-2 train state, step-3 train state as a temporary; plus
# a torn temporary train state and a stale temporary model of other killed runs
mv "$T/r/$ST" "$T/r/$ST.tmp.12345"
cp "$T/st2" "$T/r/$ST"
head -c 100 "$T/r/$ST.tmp.12345" >"$T/r/$ST.tmp.777"
head -c 5000 "$T/r/model.safetensors" >"$T/r/model.safetensors.tmp.4242"
"$MB_CLI" train "${res[@]}" --out "$T/r" --stop-after 1 >/dev/null 2>"$T/r3.err"
rc=$?
check "interrupted checkpoint: resume succeeds" [ "$rc" -eq 0 ]
[ "$rc" -eq 0 ] || cat "$T/r3.err"
check "note names step 3 and the temporary file" \
  grep -q "completed the interrupted checkpoint at step 3 from .*$ST.tmp.12345" "$T/r3.err"
check "resumed at step 3" grep -q "at step 3 of 20" "$T/r3.err"
check "temporary files removed" bash -c "! ls '$T/r' | grep -q '\.tmp\.'"
check "completed run is bit-identical to the straight one" cmp "$T/ref/model.safetensors" "$T/r/model.safetensors"

# the first checkpoint interrupted: the new model, no train state yet
mv "$T/first/$ST" "$T/first/$ST.tmp.555"
"$MB_CLI" train "${res[@]}" --out "$T/first" --stop-after 1 >/dev/null 2>"$T/f.err"
check "missing train state completed from its temporary" \
  bash -c "[ $? -eq 0 ] && grep -q 'at step 3 of 20' '$T/f.err' && ! ls '$T/first' | grep -q '\.tmp\.'"

# negative: no temporary train state matches the model
cp "$T/st2" "$T/neg/$ST"
cp "$T/st2" "$T/neg/$ST.tmp.999"
cp "$T/neg/model.safetensors" "$T/neg.model"
"$MB_CLI" train "${res[@]}" --out "$T/neg" --stop-after 1 >/dev/null 2>"$T/neg.err"
rc=$?
check "no matching temporary: resume fails" [ "$rc" -ne 0 ]
check "error says it cannot resume and what to do" \
  grep -q "written with other weights than .*cannot resume exactly: start again with --force" "$T/neg.err"
check "nothing rolled forward, model unchanged" \
  bash -c "! grep -q 'completed the interrupted' '$T/neg.err' && cmp -s '$T/neg.model' '$T/neg/model.safetensors'"

# NaN messages name the checkpoint on disk for this run
MB_DEBUG_NAN_AT_STEP=5 "$MB_CLI" train "${args[@]}" --out "$T/n0" >/dev/null 2>"$T/n0.err"
rc=$?
check "NaN before any checkpoint: exit non-zero" [ "$rc" -ne 0 ]
check "NaN before any checkpoint: says none written" \
  bash -c "grep -q 'step 5: non-finite loss' '$T/n0.err' && grep -q 'no checkpoint was written yet' '$T/n0.err' && ! grep -q 'intact' '$T/n0.err'"
MB_DEBUG_NAN_AT_STEP=5 "$MB_CLI" train "${args[@]}" --ckpt-every 3 --out "$T/n3" >/dev/null 2>"$T/n3.err"
rc=$?
check "NaN after a checkpoint: names step 3" \
  bash -c "[ $rc -ne 0 ] && grep -q 'the last checkpoint in .* (step 3) is intact' '$T/n3.err'"
MB_DEBUG_NAN_AT_STEP=5 "$MB_CLI" train "${res[@]}" --out "$T/n3" >/dev/null 2>"$T/n3r.err"
rc=$?
check "NaN after resuming from step 3: names step 3" \
  bash -c "[ $rc -ne 0 ] && grep -q '(step 3) is intact' '$T/n3r.err'"
MB_DEBUG_NAN_AT_STEP=2 "$MB_CLI" train "${args[@]}" --force --out "$T/n3" >/dev/null 2>"$T/nf.err"
rc=$?
check "NaN after --force over an earlier run: says the checkpoint is the earlier run's" \
  bash -c "[ $rc -ne 0 ] && grep -q 'no checkpoint of this run was written yet' '$T/nf.err'"
finish
