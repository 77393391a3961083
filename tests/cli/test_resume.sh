#!/usr/bin/env bash
# 20 training steps straight equal 10 steps, save, a new process, --resume, 10 steps: bit for
# bit. A NaN stops the run naming the step and leaves the last checkpoint intact.
. "$(dirname "$0")/lib.sh"
data=$(corpus)
args=(--device cpu --data "$data" --preset tiny --d-model 32 --ctx 64 --batch 4 --steps 20 --eval-every 0
      --eval-bytes 2048 --seed 7 --quiet)
"$MB_CLI" train "${args[@]}" --out "$T/a" >"$T/a.out" 2>"$T/a.err" || { cat "$T/a.err"; bad "straight run"; }
"$MB_CLI" train "${args[@]}" --out "$T/b" --stop-after 10 >/dev/null 2>"$T/b1.err" || { cat "$T/b1.err"; bad "first half"; }
"$MB_CLI" train --device cpu --data "$data" --out "$T/b" --resume --quiet --eval-every 0 --eval-bytes 2048 >"$T/b.out" 2>"$T/b2.err" || { cat "$T/b2.err"; bad "resumed half"; }
check "resumed run reports step 10" grep -q "at step 10 of 20" "$T/b2.err"
check "model bit-identical after resume" cmp "$T/a/model.safetensors" "$T/b/model.safetensors"
check "same final val_bpb" diff <(grep val_bpb "$T/a.out") <(grep val_bpb "$T/b.out")
check "metrics: one line per step 1..20 after resume" \
  bash -c "[ \"\$(grep -o '\"step\":[0-9]*,\"loss\"' '$T/b/metrics.jsonl' | sort -u | wc -l)\" -eq 20 ] && [ \"\$(grep -c '\"loss\"' '$T/b/metrics.jsonl')\" -eq 20 ]"
check "config.json identical" cmp "$T/a/config.json" "$T/b/config.json"
# validation every 5 steps: a run stopped at step 10 (the loop skips the validation of a run's
# last step) and resumed logs the same validation lines as the straight run, none twice
"$MB_CLI" train "${args[@]}" --eval-every 5 --out "$T/e" >/dev/null 2>"$T/e.err" || { cat "$T/e.err"; bad "straight run, eval every 5"; }
"$MB_CLI" train "${args[@]}" --eval-every 5 --out "$T/f" --stop-after 10 >/dev/null 2>"$T/f1.err" || { cat "$T/f1.err"; bad "first half, eval every 5"; }
"$MB_CLI" train --device cpu --data "$data" --out "$T/f" --resume --quiet --eval-every 5 --eval-bytes 2048 >/dev/null 2>"$T/f2.err" || { cat "$T/f2.err"; bad "resumed half, eval every 5"; }
check "resumed run logs the straight run's validation lines (steps 0 5 10 15, final 20)" \
  bash -c "diff <(grep val_bpb '$T/e/metrics.jsonl') <(grep val_bpb '$T/f/metrics.jsonl') && [ \"\$(grep -c val_bpb '$T/f/metrics.jsonl')\" -eq 5 ]"
check "the step-10 validation is scored on resume" grep -q "^step 10: val_bpb" "$T/f2.err"
"$MB_CLI" train --device cpu --data "$data" --out "$T/f" --resume --quiet --eval-every 5 --eval-bytes 2048 >/dev/null 2>"$T/f3.err"
check "resumed at its end: no periodic validation added" \
  bash -c "diff <(grep val_bpb '$T/e/metrics.jsonl') <(grep val_bpb '$T/f/metrics.jsonl')"
# control: a different seed must give different weights (the comparison can fail)
"$MB_CLI" train "${args[@]/--seed/--seed}" --seed 8 --out "$T/c" >/dev/null 2>&1
check "different seed differs" bash -c "! cmp -s '$T/a/model.safetensors' '$T/c/model.safetensors'"

# NaN at step 5 with checkpoints every 3 steps: exit non-zero, step named, step-3 checkpoint
MB_DEBUG_NAN_AT_STEP=5 "$MB_CLI" train "${args[@]}" --ckpt-every 3 --out "$T/n" >/dev/null 2>"$T/n.err"
rc=$?
check "NaN run exits non-zero" [ "$rc" -ne 0 ]
check "NaN error names step 5" grep -q "step 5: non-finite loss" "$T/n.err"
"$MB_CLI" info -m "$T/n" >/dev/null 2>&1
check "last checkpoint still loads" [ $? -eq 0 ]
"$MB_CLI" train --device cpu --data "$data" --out "$T/n" --resume --quiet --eval-every 0 --eval-bytes 2048 --stop-after 1 >/dev/null 2>"$T/n2.err"
check "last checkpoint is step 3" grep -q "at step 3 of 20" "$T/n2.err"

# a corrupt number in the train state's metadata ("step": "20" -> "2x", same length) is refused
# naming the field, not read as step 2
cp -r "$T/b" "$T/m"
python3 -c "import sys; p=sys.argv[1]; b=open(p,'rb').read(); n=b.count(b'\"step\":\"20\"'); assert n==1, n; open(p,'wb').write(b.replace(b'\"step\":\"20\"', b'\"step\":\"2x\"'))" "$T/m/train_state.safetensors"
"$MB_CLI" train --device cpu --data "$data" --out "$T/m" --resume --steps 22 --quiet >/dev/null 2>"$T/m.err"
rc=$?
check "corrupt metadata step refused, naming the field" \
  bash -c "[ $rc -ne 0 ] && grep -q \"metadata 'step' is not a non-negative number ('2x')\" '$T/m.err'"

# AdamW's moments in a hand-edited train state: a negative exp_avg_sq (before, the update's sqrt
# gave NaN a step later) or a NaN exp_avg is refused on load, naming the tensor and element
poke_moment() { # poke_moment FILE TENSOR INDEX VALUE: one f32 element of a tensor, in place
  python3 - "$@" <<'PY'
import json, struct, sys
p, name, i, v = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
b = bytearray(open(p, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
t = json.loads(b[8:8 + n])[name]
assert t['dtype'] == 'F32'
off = 8 + n + t['data_offsets'][0] + 4 * i
b[off:off + 4] = struct.pack('<f', v)
open(p, 'wb').write(b)
PY
}
for c in "adamw.exp_avg_sq 5 -1 adamw.exp_avg_sq: negative value (-1) at flat index 5" \
         "adamw.exp_avg 7 nan adamw.exp_avg: non-finite value (NaN) at flat index 7"; do
  set -- $c
  rm -rf "$T/mo" && cp -r "$T/b" "$T/mo"
  poke_moment "$T/mo/train_state.safetensors" "$1" "$2" "$3"
  "$MB_CLI" train --device cpu --data "$data" --out "$T/mo" --resume --steps 22 --quiet >/dev/null 2>"$T/mo.err"; rc=$?
  shift 3
  check "train state: $1 $2 $3 refused on load, named" bash -c "[ $rc -ne 0 ] && grep -qF -- '$*' '$T/mo.err'"
done

# the settings in a train state's metadata within train's option limits: a hand-edited lr=-1
# (trained on, to val_bpb ~6000), beta2=-1 or accum=1e9 (a step that never ended) is refused,
# naming the file and key
edit_meta() { # edit_meta FILE FIELD KEY VALUE: KEY=... within metadata FIELD set to VALUE
  python3 - "$@" <<'PY'
import json, re, struct, sys
p, field, key, val = sys.argv[1:5]
b = open(p, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
h['__metadata__'][field] = re.sub(r'(^| )' + key + r'=[^ ]*', r'\g<1>' + key + '=' + val, h['__metadata__'][field])
t = json.dumps(h, separators=(',', ':')).encode()
t += b' ' * (-len(t) % 8)
open(p, 'wb').write(struct.pack('<Q', len(t)) + t + b[8 + n:])
PY
}
for c in "optim lr -1" "optim beta2 -1" "data accum 1000000000" "optim lr_min 11"; do
  set -- $c
  rm -rf "$T/me" && cp -r "$T/b" "$T/me"
  edit_meta "$T/me/train_state.safetensors" "$1" "$2" "$3"
  "$MB_CLI" train --device cpu --data "$data" --out "$T/me" --resume --steps 22 --quiet >/dev/null 2>"$T/me.err"; rc=$?
  check "train state: $1 $2=$3 refused, file and key named" bash -c "[ $rc -ne 0 ] && grep -q \"me/train_state.safetensors: metadata '$1': $2=$3 is outside\" '$T/me.err'"
done
rm -rf "$T/me" && cp -r "$T/b" "$T/me" && edit_meta "$T/me/train_state.safetensors" optim lr 0.002
"$MB_CLI" train --device cpu --data "$data" --out "$T/me" --resume --steps 22 --quiet >/dev/null 2>"$T/me.err"; rc=$?
check "train state: an edited lr within range resumes (the edit itself is sound)" [ $rc -eq 0 ]

# --eval-every is saved with the run: a resume without it validates on the run's cadence (every
# 4 steps here, not the default 100); options equal to the saved ones draw no note
"$MB_CLI" train "${args[@]}" --eval-every 4 --out "$T/g" --stop-after 6 >/dev/null 2>"$T/g1.err" || { cat "$T/g1.err"; bad "eval every 4, first part"; }
cp -r "$T/g" "$T/h"
"$MB_CLI" train --device cpu --data "$data" --out "$T/g" --resume --quiet --eval-bytes 2048 --stop-after 3 \
  --ctx 64 --seed 7 >/dev/null 2>"$T/g2.err" || { cat "$T/g2.err"; bad "eval every 4, resumed"; }
check "resumed without --eval-every: validation at step 8 (saved cadence 4)" grep -q "^step 8: val_bpb" "$T/g2.err"
check "resumed with --ctx/--seed equal to the saved ones: no note" bash -c "! grep -q 'ignoring' '$T/g2.err'"
# given values that differ are named with the saved ones, after the checkpoint has loaded
"$MB_CLI" train --device cpu --data "$data" --out "$T/g" --resume --quiet --eval-bytes 2048 --stop-after 4 \
  --ctx 64 --batch 8 --eval-every 5 >/dev/null 2>"$T/g3.err" || { cat "$T/g3.err"; bad "eval every 4, resumed again"; }
check "differing options named with the saved values (not --ctx, which is equal)" \
  grep -q "^mambabyte train: --resume continues with the run's saved settings; ignoring --batch 8 (saved 4), --eval-every 5 (saved 4)$" "$T/g3.err"
check "the note comes after the resuming line" \
  bash -c "[ \$(grep -n '^resuming' '$T/g3.err' | cut -d: -f1) -lt \$(grep -n 'ignoring' '$T/g3.err' | cut -d: -f1) ]"
check "--eval-every 5 ignored: validation at step 12, none at 10" \
  bash -c "grep -q '^step 12: val_bpb' '$T/g3.err' && ! grep -q '^step 10: val_bpb' '$T/g3.err'"
# a train state written before eval_every was saved: the given (or default) value is used
python3 -c "import sys; p=sys.argv[1]; b=open(p,'rb').read(); assert b.count(b'\"eval\":\"eval_every=4 ')==1; open(p,'wb').write(b.replace(b'\"eval\":\"eval_every=4 ', b'\"xval\":\"eval_every=4 '))" "$T/h/train_state.safetensors"
"$MB_CLI" train --device cpu --data "$data" --out "$T/h" --resume --quiet --eval-bytes 2048 --stop-after 4 \
  --eval-every 3 >/dev/null 2>"$T/h2.err"; rc=$?
check "train state without eval_every: loads, the given --eval-every 3 is used, no note" \
  bash -c "[ $rc -eq 0 ] && grep -q '^step 9: val_bpb' '$T/h2.err' && ! grep -q '^step 8: val_bpb' '$T/h2.err' && ! grep -q ignoring '$T/h2.err'"
# no note before an error: --resume where no checkpoint is
"$MB_CLI" train --device cpu --data "$data" --out "$T/none" --resume --ctx 128 >/dev/null 2>"$T/none.err"; rc=$?
check "--resume without a checkpoint: an error and no note" \
  bash -c "[ $rc -ne 0 ] && grep -q '$T/none' '$T/none.err' && ! grep -q ignoring '$T/none.err'"

# metrics.jsonl on resume: records after the checkpoint's step and lines that are not records
# (other text, a torn last line) are dropped; the file is replaced whole (no temporary left)
"$MB_CLI" train "${args[@]}" --out "$T/k" --stop-after 5 >/dev/null 2>"$T/k1.err" || { cat "$T/k1.err"; bad "metrics run, first part"; }
printf '{"step":9,"loss":9.5,"marker":"later"}\nnot json at all\n{"step": 7, "loss": 1, "marker": "later"}\n{"step":"3","marker":"text step"}\n{"step":2,"loss":' >>"$T/k/metrics.jsonl"
"$MB_CLI" train --device cpu --data "$data" --out "$T/k" --resume --quiet --eval-every 0 --eval-bytes 2048 --stop-after 2 >/dev/null 2>"$T/k2.err" || { cat "$T/k2.err"; bad "metrics run, resumed"; }
check "metrics after resume: no line of a later step, no foreign or torn line" \
  bash -c "! grep -q -e marker -e 'not json' '$T/k/metrics.jsonl' && python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' '$T/k/metrics.jsonl'"
check "metrics after resume: steps 1..7 once each" \
  bash -c "[ \"\$(grep -o '\"step\":[0-9]*,\"loss\"' '$T/k/metrics.jsonl' | tr -dc '0-9\n' | tr '\n' ' ')\" = '1 2 3 4 5 6 7 ' ]"
check "metrics: the dropped lines noted" grep -q "metrics.jsonl: dropped 3 lines that are not a metrics record" "$T/k2.err"
check "metrics: no temporary file left" bash -c "! ls '$T/k' | grep -q 'metrics.jsonl.tmp'"
finish
