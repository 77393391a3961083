#!/usr/bin/env bash
# train's edges found by a fresh-eyes review (session 36): signals the caller ignores stay
# ignored, a closed stderr pipe still leaves a checkpoint, --val naming --out is refused,
# --resume of a run still in progress says so, the validation sizes are kept across --resume,
# a data directory's special entries are noted, and a long path keeps the error's reason.
. "$(dirname "$0")/lib.sh"
data=$(corpus)
tr() { "$MB_CLI" train --data "$data" --preset tiny --ctx 32 --batch 2 --device cpu "$@"; }

# SIGHUP ignored by the caller (nohup): training goes on to its end; the same run with SIGHUP
# at its default stops with a checkpoint (exit 130), so the first check can fail
( trap '' HUP; exec "$MB_CLI" train --data "$data" --preset tiny --ctx 32 --batch 2 --device cpu \
  --steps 400 --quiet --out "$T/nh" >"$T/nh.out" 2>"$T/nh.err" ) &
pid=$!
for i in $(seq 1 240); do grep -q '"loss"' "$T/nh/metrics.jsonl" 2>/dev/null && break; sleep 0.25; done
kill -HUP $pid
wait $pid; rc=$?
check "SIGHUP ignored by the caller stays ignored: the run ends (rc $rc)" bash -c "[ $rc -eq 0 ] && grep -q '^val_bpb' '$T/nh.out' && ! grep -q interrupted '$T/nh.err'"
( exec "$MB_CLI" train --data "$data" --preset tiny --ctx 32 --batch 2 --device cpu --steps 100000 \
  --quiet --out "$T/hu" >/dev/null 2>"$T/hu.err" ) &
pid=$!
for i in $(seq 1 240); do grep -q '"loss"' "$T/hu/metrics.jsonl" 2>/dev/null && break; sleep 0.25; done
kill -HUP $pid
wait $pid; rc=$?
check "SIGHUP at its default: checkpoint and exit 130 (rc $rc)" bash -c "[ $rc -eq 130 ] && grep -q 'interrupted by signal 1' '$T/hu.err' && test -f '$T/hu/train_state.safetensors'"

# a pipe on stderr closed by its reader (| head): the run stops at the end of its step with a
# checkpoint (SIGPIPE as SIGINT), and --resume continues from it
tr --steps 100000 --out "$T/pp" 2>&1 >/dev/null | head -c 200 >/dev/null
rc=${PIPESTATUS[0]}
check "closed stderr pipe: the run stopped (rc $rc), a checkpoint written" bash -c "[ $rc -ne 0 ] && test -f '$T/pp/model.safetensors' && test -f '$T/pp/train_state.safetensors'"
tr --out "$T/pp" --resume --stop-after 2 --quiet >"$T/pp.out" 2>"$T/pp.err"; rc=$?
check "closed stderr pipe: --resume continues (rc $rc)" bash -c "[ $rc -eq 0 ] && grep -q 'resuming .* at step [1-9]' '$T/pp.err'"

# --val naming the --out directory (its data.pack, checkpoints and logs) is refused
for v in "$T/vo" "$T/vo/."; do
  tr --steps 1 --out "$T/vo" --val "$v" >/dev/null 2>"$T/vo.err"; rc=$?
  check "--val $v (the --out directory) refused" bash -c "[ $rc -ne 0 ] && grep -q -- '--val .* is the --out directory' '$T/vo.err' && [ ! -e '$T/vo/model.safetensors' ]"
done

# --resume of a run that holds its lock and has no checkpoint yet: named as in progress
mkdir -p "$T/lk"
if command -v flock >/dev/null; then
  exec 9>"$T/lk/.lock"
  flock -x 9 # this shell holds the lock, as a training run in progress does
  tr --out "$T/lk" --resume >/dev/null 2>"$T/lk.err"; rc=$?
  exec 9>&-
  check "--resume of a run in progress says so (rc $rc)" bash -c "[ $rc -ne 0 ] && grep -q 'in use by another training run' '$T/lk.err'"
fi
tr --out "$T/lk" --resume >/dev/null 2>"$T/lk2.err"; rc=$?
check "--resume with no checkpoint and no run: holds no checkpoint" bash -c "[ $rc -ne 0 ] && grep -q 'holds no checkpoint to resume' '$T/lk2.err'"

# --eval-bytes / --final-eval-bytes are the run's: kept across --resume, a differing one named
cat "$data"/*.c | head -c 6000 >"$T/val.txt"
tr --steps 20 --eval-every 5 --eval-bytes 700 --final-eval-bytes 900 --stop-after 10 --quiet \
  --val "$T/val.txt" --out "$T/eb" >/dev/null 2>&1
tr --out "$T/eb" --val "$T/val.txt" --resume --quiet >/dev/null 2>"$T/eb.err"; rc=$?
check "--resume keeps --eval-bytes (every periodic line scores the same bytes)" bash -c "[ $rc -eq 0 ] && [ \$(grep -v final '$T/eb/metrics.jsonl' | grep -o '\"val_bytes\":[0-9]*' | sort -u | wc -l) -eq 1 ] && [ \$(grep -c '\"val_bytes\"' '$T/eb/metrics.jsonl') -eq 5 ]"
p=$(grep -v final "$T/eb/metrics.jsonl" | grep -o '"val_bytes":[0-9]*' | head -1 | cut -d: -f2)
f=$(grep final "$T/eb/metrics.jsonl" | grep -o '"val_bytes":[0-9]*' | cut -d: -f2)
# (whole windows of ctx 32: up to 31 bytes over)
check "periodic scored ~700 bytes ($p), final ~900 ($f)" bash -c "[ '$p' -ge 700 ] && [ '$p' -lt 732 ] && [ '$f' -ge 900 ] && [ '$f' -lt 932 ]"
cp -r "$T/eb" "$T/eb_old"
tr --out "$T/eb" --val "$T/val.txt" --resume --steps 25 --eval-bytes 2000 --quiet >/dev/null 2>"$T/eb2.err"
check "--resume names a differing --eval-bytes as ignored" grep -q -- 'ignoring --eval-bytes 2000 (saved 700)' "$T/eb2.err"
# a train state of an older version, without eval_bytes (the key renamed, same length): the
# given --eval-bytes is used, without a note
python3 -c "import sys; p=sys.argv[1]; b=open(p,'rb').read(); assert b.count(b' eval_bytes=')==1; open(p,'wb').write(b.replace(b' eval_bytes=', b' xval_bytes='))" "$T/eb_old/train_state.safetensors"
tr --out "$T/eb_old" --val "$T/val.txt" --resume --steps 30 --eval-bytes 2000 --quiet >/dev/null 2>"$T/eb3.err"; rc=$?
check "older train state: the given --eval-bytes used (rc $rc)" bash -c "[ $rc -eq 0 ] && grep -q '\"step\":25,\"val_bpb\":[0-9.]*,\"val_bytes\":20[0-9][0-9]}' '$T/eb_old/metrics.jsonl' && ! grep -q ignoring '$T/eb3.err'"

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
tr --steps 1 --out "$T/lo" --data "$T/lng" >/dev/null 2>"$T/lo.err"; rc=$?
check "a long data path keeps the error's reason" bash -c "[ $rc -ne 0 ] && grep -q 'bad.jsonl: line 1: invalid JSON' '$T/lo.err'"
finish
