#!/usr/bin/env bash
# The run's data pack carries a content hash: a damaged body (header intact) is rebuilt from the
# input, and the resumed run is still bit-exact. A resume on changed --data / --val warns (and
# continues); an unchanged resume does not.
. "$(dirname "$0")/lib.sh"
data=$(corpus)
mkdir -p "$T/val" && head -c 6000 "$MB_SOURCE_DIR/src/train/data.c" >"$T/val/v.txt"
args=(--device cpu --data "$data" --val "$T/val" --preset tiny --d-model 32 --ctx 64 --batch 4 --steps 12
      --eval-every 0 --eval-bytes 2048 --seed 7 --quiet)
resume=(--device cpu --data "$data" --val "$T/val" --resume --quiet --eval-every 0 --eval-bytes 2048)
"$MB_CLI" train "${args[@]}" --out "$T/a" >"$T/a.out" 2>"$T/a.err" || { cat "$T/a.err"; bad "straight run"; }
"$MB_CLI" train "${args[@]}" --out "$T/b" --stop-after 6 >/dev/null 2>"$T/b1.err" || { cat "$T/b1.err"; bad "first half"; }
check "train state records the data hashes" grep -aq "train=[0-9a-f]\{16\} val=[0-9a-f]\{16\}" "$T/b/train_state.safetensors"

# damage both packs' bodies, headers intact
for p in data.pack val.pack; do
  python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[1000:-100]=b'Z'*(len(b)-1100); open(sys.argv[1],'wb').write(b)" "$T/b/$p"
done
"$MB_CLI" train "${resume[@]}" --out "$T/b" >"$T/b.out" 2>"$T/b2.err" || { cat "$T/b2.err"; bad "resume on damaged packs"; }
check "damaged data.pack noticed" grep -q "cached pack is damaged (pack $T/b/data.pack: content hash mismatch" "$T/b2.err"
check "damaged val.pack noticed" grep -q "cached pack is damaged (pack $T/b/val.pack: content hash mismatch" "$T/b2.err"
check "no data-change warning after a rebuild of the same data" bash -c "! grep -q warning '$T/b2.err'"
check "resume over rebuilt packs is bit-exact" cmp "$T/a/model.safetensors" "$T/b/model.safetensors"
check "same final val_bpb" diff <(grep val_bpb "$T/a.out") <(grep val_bpb "$T/b.out")

# an unchanged resume (cached packs) warns about nothing
"$MB_CLI" train "${resume[@]}" --out "$T/b" --steps 13 >/dev/null 2>"$T/b3.err" || { cat "$T/b3.err"; bad "plain resume"; }
check "plain resume: no warning, cached pack" bash -c "! grep -qi 'warning\|damaged' '$T/b3.err' && grep -q 'cached pack' '$T/b3.err'"

# more --data: a warning naming --data; the run continues (new sampler epoch)
cp "$MB_SOURCE_DIR"/src/train/*.c "$data/"
"$MB_CLI" train "${resume[@]}" --out "$T/b" --steps 15 >/dev/null 2>"$T/b4.err" || { cat "$T/b4.err"; bad "resume on more data"; }
check "changed --data warned" grep -q "warning: --data $data differs from the data this run was trained on" "$T/b4.err"
check "changed --data: not an exact continuation" grep -q "no longer an exact continuation" "$T/b4.err"
check "changed --data: no --val warning" bash -c "! grep -q 'warning: --val' '$T/b4.err'"
check "changed --data: trained to step 15" grep -q "trained to step 15" "$T/b4.err"

# another --val: a warning naming --val
echo "some other validation text, long enough to be scored" >"$T/val/v.txt"
"$MB_CLI" train "${resume[@]}" --out "$T/b" --steps 16 >/dev/null 2>"$T/b5.err" || { cat "$T/b5.err"; bad "resume on other val"; }
check "changed --val warned" grep -q "warning: --val $T/val differs from the validation data" "$T/b5.err"
check "changed --val: no --data warning" bash -c "! grep -q 'warning: --data' '$T/b5.err'"
finish
