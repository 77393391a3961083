#!/usr/bin/env bash
# --force and --resume at the edges: the metrics log stays with the checkpoint it belongs to
# (metrics.jsonl.prev), --val added or dropped on resume, the note on ignored options, --resume
# where no checkpoint is, the metrics rewrite on resume, plurals of one, and errno in messages.
. "$(dirname "$0")/lib.sh"
data=$(corpus)
tiny=(--device cpu --data "$data" --preset tiny --ctx 64 --batch 4 --eval-every 0 --eval-bytes 2048
      --final-eval-bytes 2048 --quiet)
res=(--device cpu --data "$data" --resume --quiet --eval-bytes 2048 --final-eval-bytes 2048)
steps() { grep -o '"step":[0-9]*,"loss":[0-9.]*' "$1" | tr '\n' ' '; }

# 1. a --force run that stops before its first checkpoint (here a NaN at step 3) leaves the old
# checkpoint, and the old log as metrics.jsonl.prev; --resume puts that log back
"$MB_CLI" train "${tiny[@]}" --steps 7 --out "$T/fo" >/dev/null 2>"$T/fo1.err" || { cat "$T/fo1.err"; bad "first run"; }
steps "$T/fo/metrics.jsonl" >"$T/fo.old"
MB_DEBUG_NAN_AT_STEP=3 "$MB_CLI" train "${tiny[@]}" --steps 20 --seed 9 --force --out "$T/fo" >/dev/null 2>"$T/fo2.err"
check "--force run stopped before its checkpoint: the old log kept as metrics.jsonl.prev" \
  bash -c "[ \"\$(cat '$T/fo.old')\" = \"\$(grep -o '\"step\":[0-9]*,\"loss\":[0-9.]*' '$T/fo/metrics.jsonl.prev' | tr '\n' ' ')\" ]"
check "--force run: metrics.jsonl holds the new run's steps 1 2" \
  bash -c "[ \"\$(grep -o '\"step\":[0-9]*,\"loss\"' '$T/fo/metrics.jsonl' | tr -dc '0-9\n' | tr '\n' ' ')\" = '1 2 ' ]"
# a second interrupted --force run keeps the .prev (it is still the checkpoint's log)
MB_DEBUG_NAN_AT_STEP=2 "$MB_CLI" train "${tiny[@]}" --steps 20 --seed 11 --force --out "$T/fo" >/dev/null 2>"$T/fo3.err"
"$MB_CLI" train "${res[@]}" --steps 9 --out "$T/fo" >/dev/null 2>"$T/fo4.err"; rc=$?
check "--resume after the interrupted --force runs: exit 0, a note on the restored log" \
  bash -c "[ $rc -eq 0 ] && grep -q '^note: $T/fo/metrics.jsonl restored from $T/fo/metrics.jsonl.prev' '$T/fo4.err'"
check "--resume: the earlier run's steps 1..7, then 8 9; no .prev left" \
  bash -c "[ \"\$(grep -o '\"step\":[0-9]*,\"loss\":[0-9.]*' '$T/fo/metrics.jsonl' | head -7 | tr '\n' ' ')\" = \"\$(cat '$T/fo.old')\" ] &&
           [ \"\$(grep -o '\"step\":[0-9]*,\"loss\"' '$T/fo/metrics.jsonl' | tr -dc '0-9\n' | tr '\n' ' ')\" = '1 2 3 4 5 6 7 8 9 ' ] &&
           [ ! -e '$T/fo/metrics.jsonl.prev' ]"
# a --force run that writes its checkpoint: the old log is gone with the old checkpoint
"$MB_CLI" train "${tiny[@]}" --steps 3 --seed 9 --force --out "$T/fo" >/dev/null 2>"$T/fo5.err"
check "--force run that checkpoints: no .prev, only its own steps 1..3" \
  bash -c "[ ! -e '$T/fo/metrics.jsonl.prev' ] && [ \"\$(grep -o '\"step\":[0-9]*,\"loss\"' '$T/fo/metrics.jsonl' | tr -dc '0-9\n' | tr '\n' ' ')\" = '1 2 3 ' ]"
# a --force run killed between its first checkpoint and the removal of the .prev: --resume
# keeps that run's log (it goes with the checkpoint on disk) and drops the earlier one
"$MB_CLI" train "${tiny[@]}" --steps 4 --out "$T/kw" >/dev/null 2>&1
MB_DEBUG_KILL_AFTER_CKPT=1 "$MB_CLI" train "${tiny[@]}" --steps 3 --seed 9 --force --out "$T/kw" >/dev/null 2>&1
steps "$T/kw/metrics.jsonl" >"$T/kw.new"
check "--force run killed after its first checkpoint: .prev still there, its own steps 1..3 logged" \
  bash -c "[ -e '$T/kw/metrics.jsonl.prev' ] && [ \"\$(grep -o '\"step\":[0-9]*,\"loss\"' '$T/kw/metrics.jsonl' | tr -dc '0-9\n' | tr '\n' ' ')\" = '1 2 3 ' ]"
"$MB_CLI" train "${res[@]}" --steps 5 --out "$T/kw" >/dev/null 2>"$T/kw.err"; rc=$?
check "--resume after it: exit 0, the .prev (and its record) removed with a note" \
  bash -c "[ $rc -eq 0 ] && grep -q '^note: $T/kw/metrics.jsonl.prev removed' '$T/kw.err' && [ ! -e '$T/kw/metrics.jsonl.prev' ] && [ ! -e '$T/kw/metrics.jsonl.prev.ckpt' ]"
check "--resume after it: the killed run's steps 1..3 (its losses), then 4 5" \
  bash -c "[ \"\$(grep -o '\"step\":[0-9]*,\"loss\":[0-9.]*' '$T/kw/metrics.jsonl' | head -3 | tr '\n' ' ')\" = \"\$(cat '$T/kw.new')\" ] &&
           [ \"\$(grep -o '\"step\":[0-9]*,\"loss\"' '$T/kw/metrics.jsonl' | tr -dc '0-9\n' | tr '\n' ' ')\" = '1 2 3 4 5 ' ]"
# a .prev left by a killed run is stale for the next --force run too: that run keeps the log of
# the checkpoint on disk instead
"$MB_CLI" train "${tiny[@]}" --steps 4 --out "$T/kx" >/dev/null 2>&1
MB_DEBUG_KILL_AFTER_CKPT=1 "$MB_CLI" train "${tiny[@]}" --steps 3 --seed 9 --force --out "$T/kx" >/dev/null 2>&1
steps "$T/kx/metrics.jsonl" >"$T/kx.new"
MB_DEBUG_NAN_AT_STEP=2 "$MB_CLI" train "${tiny[@]}" --steps 20 --seed 11 --force --out "$T/kx" >/dev/null 2>&1
check "--force over a stale .prev: the checkpoint's log (the killed run's steps 1..3) kept as .prev" \
  bash -c "[ \"\$(cat '$T/kx.new')\" = \"\$(grep -o '\"step\":[0-9]*,\"loss\":[0-9.]*' '$T/kx/metrics.jsonl.prev' | tr '\n' ' ')\" ]"

# a fresh run where no checkpoint is: no .prev made
MB_DEBUG_NAN_AT_STEP=2 "$MB_CLI" train "${tiny[@]}" --steps 20 --out "$T/fresh" >/dev/null 2>&1
check "fresh run without an earlier checkpoint: no .prev" bash -c "[ -e '$T/fresh/metrics.jsonl' ] && [ ! -e '$T/fresh/metrics.jsonl.prev' ]"

# 2. --val dropped or added on resume: the training split changed, the sampler starts a new
# epoch, and the run goes on
mkdir -p "$T/val" && head -c 6000 "$MB_SOURCE_DIR/src/train/data.c" >"$T/val/v.txt"
"$MB_CLI" train "${tiny[@]}" --val "$T/val" --steps 20 --stop-after 5 --out "$T/d3" >/dev/null 2>&1
"$MB_CLI" train "${res[@]}" --stop-after 2 --out "$T/d3" >/dev/null 2>"$T/d3.err"; rc=$?
check "--val dropped on resume: the run goes on to step 7" \
  bash -c "[ $rc -eq 0 ] && grep -q 'trained to step 7' '$T/d3.err' && ! grep -q 'train sampler state' '$T/d3.err'"
check "--val dropped: warned, and the sampler's new epoch noted" \
  bash -c "grep -q 'warning: --val is not given, but this run was started with one' '$T/d3.err' && grep -q '^note: the data sampler starts a new epoch over the new training split' '$T/d3.err'"
"$MB_CLI" train "${tiny[@]}" --steps 20 --stop-after 5 --out "$T/d4" >/dev/null 2>&1
"$MB_CLI" train "${res[@]}" --val "$T/val" --stop-after 2 --out "$T/d4" >/dev/null 2>"$T/d4.err"; rc=$?
check "--val added on resume: the run goes on to step 7, new epoch noted" \
  bash -c "[ $rc -eq 0 ] && grep -q 'trained to step 7' '$T/d4.err' && grep -q 'warning: --val is given, but this run was started without one' '$T/d4.err' && grep -q '^note: the data sampler starts a new epoch over the new training split' '$T/d4.err'"

# 3./4. the note on ignored options: --dt-rank as given (0 = auto for the saved d_model);
# floating values with the digits that tell them apart
"$MB_CLI" train "${res[@]}" --stop-after 1 --dt-rank 0 --out "$T/d4" >/dev/null 2>"$T/n1.err"
check "--dt-rank 0 (auto) on resume, saved dt_rank = auto: no note" bash -c "! grep -q ignoring '$T/n1.err'"
"$MB_CLI" train "${res[@]}" --stop-after 1 --dt-rank 3 --lr 0.00040000001 --clip 1 --out "$T/d4" >/dev/null 2>"$T/n2.err"
check "note: --dt-rank as given, --lr with the digits that differ, not --clip (equal)" \
  grep -q "ignoring --dt-rank 3 (saved dt_rank 4), --lr 0.00040000001 (saved 0.0004)$" "$T/n2.err"
"$MB_CLI" train "${tiny[@]}" --dt-rank 3 --steps 2 --out "$T/r3" >/dev/null 2>&1
"$MB_CLI" train "${res[@]}" --dt-rank 0 --out "$T/r3" >/dev/null 2>"$T/n3.err"
check "--dt-rank 0 on a run saved with dt_rank 3: named as given" grep -q "ignoring --dt-rank 0 (saved dt_rank 3)$" "$T/n3.err"

# 5. --resume where no checkpoint is: said so, nothing created
"$MB_CLI" train "${res[@]}" --out "$T/deep/a/b" >/dev/null 2>"$T/r5.err"; rc=$?
check "--resume, no such --out: 'holds no checkpoint to resume', no directory made" \
  bash -c "[ $rc -ne 0 ] && grep -q '^mambabyte train: $T/deep/a/b holds no checkpoint to resume$' '$T/r5.err' && [ ! -e '$T/deep' ]"
mkdir "$T/empty"
"$MB_CLI" train "${res[@]}" --out "$T/empty" >/dev/null 2>"$T/r6.err"; rc=$?
check "--resume, an empty --out: said so, no .lock made" \
  bash -c "[ $rc -ne 0 ] && grep -q 'empty holds no checkpoint to resume$' '$T/r6.err' && [ -z \"\$(ls -A '$T/empty')\" ]"

# 6. the metrics rewrite on resume: none when nothing is dropped; the mode kept; a symlink's
# target rewritten, the link kept
M6="$T/d4/metrics.jsonl"
python3 -c "import sys; p=sys.argv[1]; l=[x for x in open(p) if '\"final\"' not in x]; open(p,'w').writelines(l)" "$M6"
ino=$(stat -c %i "$M6")
"$MB_CLI" train "${res[@]}" --stop-after 1 --out "$T/d4" >/dev/null 2>&1
check "resume with nothing to drop: metrics.jsonl not rewritten (same inode)" [ "$(stat -c %i "$M6")" = "$ino" ]
chmod 604 "$M6"
"$MB_CLI" train "${res[@]}" --stop-after 1 --out "$T/d4" >/dev/null 2>&1 # (drops the final line)
check "rewritten metrics.jsonl keeps its mode 604" bash -c "[ \"\$(stat -c %a '$M6')\" = 604 ] && [ \"\$(stat -c %i '$M6')\" != '$ino' ]"
mv "$M6" "$T/real.jsonl" && ln -s ../real.jsonl "$M6"
echo '{"step":99,"loss":1,"marker":"later"}' >>"$T/real.jsonl"
"$MB_CLI" train "${res[@]}" --stop-after 1 --out "$T/d4" >/dev/null 2>&1
check "symlinked metrics.jsonl: the link stays, its target rewritten" \
  bash -c "[ -L '$M6' ] && ! grep -q marker '$T/real.jsonl' && grep -q '\"step\":12,\"loss\"' '$T/real.jsonl'"

# 8. errno named: train's stdout on a full device; metrics.jsonl that is a directory
rm "$M6" && mkdir "$M6"
"$MB_CLI" train "${res[@]}" --stop-after 1 --out "$T/d4" >/dev/null 2>"$T/m8.err"; rc=$?
check "metrics.jsonl a directory: the reason named" \
  bash -c "[ $rc -ne 0 ] && grep -q 'cannot read $M6: Is a directory' '$T/m8.err'"
if [ -w /dev/full ]; then
  "$MB_CLI" train "${tiny[@]}" --steps 2 --out "$T/full" >/dev/full 2>"$T/full.err"; rc=$?
  check "train to a full device: exit 1 naming the errno" \
    bash -c "[ $rc -eq 1 ] && grep -q 'writing the output to stdout failed: No space left on device' '$T/full.err'"
fi

# 7. counts of one
printf x >"$T/one.txt"
"$MB_CLI" train --device cpu --data "$T/one.txt" --out "$T/z4" --preset tiny --ctx 64 --steps 3 >/dev/null 2>"$T/z4.err"
check "one 1-byte training document: singular" \
  bash -c "grep -q 'the training document does not have ctx + 1 = 65 bytes (ctx 64; it has 1 byte)' '$T/z4.err' && ! grep -q '1 bytes\|1 documents' '$T/z4.err'"
echo '{"text":""}' >"$T/e1.jsonl"
"$MB_CLI" eval -m "$T/fo" "$T/e1.jsonl" --device cpu >/dev/null 2>"$T/e1.err"
check "eval of one empty document: '1 document, 0 bytes'" grep -q "is empty (1 document, 0 bytes)" "$T/e1.err"
echo '{"text":"x"}' >"$T/e2.jsonl"
"$MB_CLI" eval -m "$T/fo" "$T/e2.jsonl" --device cpu >/dev/null 2>"$T/e2.err"
check "eval of one 1-byte document: 'the document is shorter'" grep -q "no byte to score (the document is shorter than 2 bytes" "$T/e2.err"
mkdir -p "$T/sm" && cp "$T/fo/config.json" "$T/sm/" && head -c 1 "$T/fo/model.safetensors" >"$T/sm/model.safetensors"
"$MB_CLI" info -m "$T/sm" >/dev/null 2>"$T/sm.err"
check "a 1-byte model file: '1 byte is too short'" grep -q "1 byte is too short for a safetensors file" "$T/sm.err"
finish
