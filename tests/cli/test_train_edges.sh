#!/usr/bin/env bash
# train's edges found by a fresh-eyes review (session 36): signals the caller ignores stay
# ignored, a closed stderr pipe still leaves a checkpoint, --val naming --out is refused,
# --resume of a run still in progress says so, the validation sizes are kept across --resume,
# a data directory's special entries are noted, and a long path keeps the error's reason.
. "$(dirname "$0")/lib.sh"
data=$(corpus)
trn() { "$MB_CLI" train --data "$data" --preset tiny --ctx 32 --batch 2 --device cpu "$@"; }

wait_loss() { for _ in $(seq 1 240); do grep -q '"loss"' "$1/metrics.jsonl" 2>/dev/null && return; sleep 0.25; done; }
# (runs below end by --time-limit at the latest, should a signal not arrive)
long=(--data "$data" --preset tiny --ctx 32 --batch 2 --device cpu --time-limit 300)

if ignored 1 || ignored 15; then
  echo "skip: this shell ignores SIGHUP or SIGTERM"
else
  # SIGHUP ignored by the caller (nohup): the run goes on; SIGTERM then stops it with a
  # checkpoint. The same run with SIGHUP at its default stops at the SIGHUP.
  ( trap '' HUP; exec "$MB_CLI" train "${long[@]}" --quiet --out "$T/nh" >/dev/null 2>"$T/nh.err" ) &
  pid=$!
  wait_loss "$T/nh"
  kill -HUP $pid
  sleep 1
  kill -0 $pid 2>/dev/null; alive=$?
  kill -TERM $pid
  wait $pid; rc=$?
  check "SIGHUP ignored by the caller stays ignored (alive after it: $alive; rc $rc)" bash -c "[ $alive -eq 0 ] && [ $rc -eq 130 ] && grep -q 'interrupted by signal 15' '$T/nh.err'"
  ( exec "$MB_CLI" train "${long[@]}" --quiet --out "$T/hu" >/dev/null 2>"$T/hu.err" ) &
  pid=$!
  wait_loss "$T/hu"
  kill -HUP $pid
  wait $pid; rc=$?
  check "SIGHUP at its default: checkpoint and exit 130 (rc $rc)" bash -c "[ $rc -eq 130 ] && grep -q 'interrupted by signal 1' '$T/hu.err' && test -f '$T/hu/train_state.safetensors'"
fi

if ignored 13; then
  echo "skip: this shell ignores SIGPIPE"
else
  # a pipe on stderr closed by its reader after the first step line: the run stops at the end
  # of its step with a checkpoint (SIGPIPE as SIGINT), and --resume continues from it
  "$MB_CLI" train "${long[@]}" --out "$T/pp" 2>&1 >/dev/null | grep -q -m1 'loss'
  rc=${PIPESTATUS[0]}
  check "closed stderr pipe: the run stopped (rc $rc), a checkpoint written" bash -c "[ $rc -ne 0 ] && test -f '$T/pp/model.safetensors' && test -f '$T/pp/train_state.safetensors'"
  trn --out "$T/pp" --resume --stop-after 2 --quiet >"$T/pp.out" 2>"$T/pp.err"; rc=$?
  check "closed stderr pipe: --resume continues (rc $rc)" bash -c "[ $rc -eq 0 ] && grep -q 'resuming .* at step [1-9]' '$T/pp.err'"
fi

# --val naming the --out directory (its data.pack, checkpoints and logs) is refused
for v in "$T/vo" "$T/vo/."; do
  trn --steps 1 --out "$T/vo" --val "$v" >/dev/null 2>"$T/vo.err"; rc=$?
  check "--val $v (the --out directory) refused" bash -c "[ $rc -ne 0 ] && grep -q -- '--val .* is the --out directory' '$T/vo.err' && [ ! -e '$T/vo/model.safetensors' ]"
done

# --resume of a run that holds its lock and has no checkpoint yet: named as in progress
mkdir -p "$T/lk"
if command -v flock >/dev/null; then
  exec 9>"$T/lk/.lock"
  flock -x 9 # this shell holds the lock, as a training run in progress does
  trn --out "$T/lk" --resume >/dev/null 2>"$T/lk.err"; rc=$?
  exec 9>&-
  check "--resume of a run in progress says so (rc $rc)" bash -c "[ $rc -ne 0 ] && grep -q 'in use by another training run' '$T/lk.err'"
fi
trn --out "$T/lk" --resume >/dev/null 2>"$T/lk2.err"; rc=$?
check "--resume with no checkpoint and no run: holds no checkpoint" bash -c "[ $rc -ne 0 ] && grep -q 'holds no checkpoint to resume' '$T/lk2.err'"

# --eval-bytes / --final-eval-bytes are saved with the run: kept across --resume; given with
# --resume, the given value replaces the saved one, with a note
cat "$data"/*.c | head -c 6000 >"$T/val.txt"
trn --steps 20 --eval-every 5 --eval-bytes 700 --final-eval-bytes 900 --stop-after 10 --quiet \
  --val "$T/val.txt" --out "$T/eb" >/dev/null 2>&1
cp -r "$T/eb" "$T/eb_old"
trn --out "$T/eb" --val "$T/val.txt" --resume --quiet >/dev/null 2>"$T/eb.err"; rc=$?
check "--resume keeps --eval-bytes (every periodic line scores the same bytes)" bash -c "[ $rc -eq 0 ] && [ \$(grep -v final '$T/eb/metrics.jsonl' | grep -o '\"val_bytes\":[0-9]*' | sort -u | wc -l) -eq 1 ] && [ \$(grep -c '\"val_bytes\"' '$T/eb/metrics.jsonl') -eq 5 ]"
p=$(grep -v final "$T/eb/metrics.jsonl" | grep -o '"val_bytes":[0-9]*' | head -1 | cut -d: -f2)
f=$(grep final "$T/eb/metrics.jsonl" | grep -o '"val_bytes":[0-9]*' | cut -d: -f2)
# (whole windows of ctx 32: up to 31 bytes over)
check "periodic scored ~700 bytes ($p), final ~900 ($f)" bash -c "[ '$p' -ge 700 ] && [ '$p' -lt 732 ] && [ '$f' -ge 900 ] && [ '$f' -lt 932 ]"
trn --out "$T/eb" --val "$T/val.txt" --resume --steps 30 --eval-bytes 2000 --quiet >/dev/null 2>"$T/eb2.err"; rc=$?
check "--resume --eval-bytes 2000 replaces the saved 700, with a note (rc $rc)" bash -c "[ $rc -eq 0 ] && grep -q 'note: eval_bytes 2000 as given (the run saved 700)' '$T/eb2.err' && grep -q '\"step\":25,\"val_bpb\":[0-9.]*,\"val_bytes\":20[0-9][0-9]}' '$T/eb/metrics.jsonl' && ! grep -q ignoring '$T/eb2.err'"
# a train state of an older version, without eval_bytes (the key renamed, same length): its
# saved final_eval_bytes kept, the given --eval-bytes used without a note
python3 -c "import sys; p=sys.argv[1]; b=open(p,'rb').read(); assert b.count(b' eval_bytes=')==1; open(p,'wb').write(b.replace(b' eval_bytes=', b' xval_bytes='))" "$T/eb_old/train_state.safetensors"
trn --out "$T/eb_old" --val "$T/val.txt" --resume --steps 30 --eval-bytes 2000 --quiet >/dev/null 2>"$T/eb3.err"; rc=$?
check "older train state: the given --eval-bytes used, no note (rc $rc)" bash -c "[ $rc -eq 0 ] && grep -q '\"step\":25,\"val_bpb\":[0-9.]*,\"val_bytes\":20[0-9][0-9]}' '$T/eb_old/metrics.jsonl' && grep -q '\"val_bytes\":9[0-9][0-9],\"final\"' '$T/eb_old/metrics.jsonl' && ! grep -q 'note: eval_bytes' '$T/eb3.err'"


# a --time-limit run stopped before its length was estimated (under 3 steps; here by
# --stop-after 2): --resume goes on with the length its limit gives, not "complete at step 2"
trn --time-limit 60 --stop-after 2 --quiet --out "$T/tl" >/dev/null 2>&1
trn --out "$T/tl" --resume --stop-after 1 >/dev/null 2>"$T/tl.err"; rc=$?
n=$(sed -n 's/^resuming .* at step 2 of \([0-9]*\) .*/\1/p' "$T/tl.err")
check "--time-limit run stopped at step 2: --resume trains on (of ${n:-?}; rc $rc)" bash -c "[ $rc -eq 0 ] && [ '${n:-0}' -gt 3 ] && ! grep -q 'this run is complete' '$T/tl.err' && grep -q '\"step\":3,\"loss\"' '$T/tl/metrics.jsonl'"

# a data directory's FIFOs and dangling links are skipped with a note
mkdir -p "$T/sp"
cp "$data"/*.c "$T/sp/"
mkfifo "$T/sp/fifo"
ln -s "$T/nowhere" "$T/sp/dangling"
timeout 120 "$MB_CLI" train --data "$T/sp" --preset tiny --ctx 32 --batch 2 --steps 1 --device cpu \
  --quiet --out "$T/spo" >/dev/null 2>"$T/sp.err"; rc=$?
check "special entries of a data directory noted (rc $rc)" bash -c "[ $rc -eq 0 ] && grep -q 'note: data directory .*: 2 entries skipped that are not a regular file or directory' '$T/sp.err'"

# a long path (~820 bytes) keeps the reason after it
lp="$T/lng/$(printf 'd%.0s' $(seq 200))/$(printf 'e%.0s' $(seq 200))/$(printf 'f%.0s' $(seq 200))/$(printf 'g%.0s' $(seq 200))"
mkdir -p "$lp"
echo 'not json' >"$lp/bad.jsonl"
trn --steps 1 --out "$T/lo" --data "$T/lng" >/dev/null 2>"$T/lo.err"; rc=$?
check "a long data path keeps the error's reason" bash -c "[ $rc -ne 0 ] && grep -q 'bad.jsonl: line 1: invalid JSON' '$T/lo.err'"
finish
