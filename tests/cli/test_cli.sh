#!/usr/bin/env bash
# The command-line contract: info, eval (windowed vs streamed), generate, and errors.
. "$(dirname "$0")/lib.sh"
data=$(corpus)
"$MB_CLI" train --data "$data" --preset tiny --ctx 128 --batch 4 --steps 30 --eval-every 10 \
  --eval-bytes 4096 --seed 3 --out "$T/m" >"$T/train.out" 2>"$T/train.err"
check "train exits 0" [ $? -eq 0 ]
check "train ends with val_bpb" grep -Eq "^val_bpb: [0-9.]+$" "$T/train.out"
check "progress lines name step/loss/bpb/lr/gnorm/bytes/ETA" \
  grep -Eq "step +30/30 \| loss [0-9.]+ \| bpb [0-9.]+ \| lr [0-9.e+-]+ \| gnorm [0-9.]+ \| [0-9.]+ kB/s \| ETA" "$T/train.err"
check "metrics log has 30 step lines" [ "$(grep -c '"loss"' "$T/m/metrics.jsonl")" -eq 30 ]
check "checkpoint files" test -f "$T/m/config.json" -a -f "$T/m/model.safetensors" -a -f "$T/m/train_state.safetensors"
check "training lowered the loss" awk -F'[:,]' '/"loss"/ {if (!n++) f=$4; l=$4} END {exit !(l < f - 0.5)}' "$T/m/metrics.jsonl"

# info: n_params equals the closed form for the tiny preset (d 64, 2 layers, LayerNorm, untied)
"$MB_CLI" info -m "$T/m" --json >"$T/info.json"
d=64; Di=128; N=16; K=4; R=4
expect=$(( 256*d*2 + 2*(2*d + 2*Di*d + Di*K + Di + (R+2*N)*Di + Di*R + Di + Di*N + Di + d*Di) + 2*d ))
check "info n_params = closed form ($expect)" grep -q "\"n_params\":[[:space:]]*$expect" "$T/info.json"
check "info state_bytes" grep -q "\"state_bytes\":[[:space:]]*$((2*Di*(K-1+N)*4))" "$T/info.json"
check "info --preset 972m" bash -c "'$MB_CLI' info --preset 972m | grep -q 'd_model  *1792'"

# eval: a short document scored in one window equals the streamed score over small windows
head -c 300 "$data/config.c" >"$T/short.txt"
w=$("$MB_CLI" eval -m "$T/m" "$T/short.txt" --ctx 1024 2>/dev/null | awk '/^bpb:/ {print $2, $4}')
s=$("$MB_CLI" eval -m "$T/m" "$T/short.txt" --ctx 37 --stream 2>/dev/null | awk '/^bpb:/ {print $2, $4}')
check "eval scores 299 bytes" [ "${w#* }" = 299 ]
check "streamed (ctx 37) equals one window ($w vs $s)" awk -v a="${w% *}" -v b="${s% *}" 'BEGIN {d=a-b; if (d<0) d=-d; exit !(d < 1e-4)}'
nw=$("$MB_CLI" eval -m "$T/m" "$T/short.txt" --ctx 37 2>/dev/null | awk '/^bpb:/ {print $2}')
check "windowed ctx 37 differs from full context" awk -v a="${w% *}" -v b="$nw" 'BEGIN {exit !(a != b)}'
check "eval --json" bash -c "'$MB_CLI' eval -m '$T/m' '$T/short.txt' --json 2>/dev/null | grep -q '\"bytes\": 299'"
# a ctx beyond the longest document is cut to it: reported, with the one asked for
"$MB_CLI" eval -m "$T/m" "$T/short.txt" --ctx 1024 --json >"$T/j1" 2>/dev/null
"$MB_CLI" eval -m "$T/m" "$T/short.txt" --ctx 1024 >/dev/null 2>"$T/j2"
"$MB_CLI" eval -m "$T/m" "$T/short.txt" --ctx 37 --json >"$T/j3" 2>/dev/null
check "eval --json: cut ctx 299 with ctx_requested 1024" grep -q '"ctx": 299, "ctx_requested": 1024,' "$T/j1"
check "eval: cut ctx reported in the text too" grep -q 'ctx 299 (requested 1024; cut to the longest document)' "$T/j2"
check "eval --json: no ctx_requested when ctx is used as given" bash -c "grep -q '\"ctx\": 37,' '$T/j3' && ! grep -q ctx_requested '$T/j3'"
"$MB_CLI" eval -m "$T/m" "$T/short.txt" --stream --batch 4 >"$T/o7b" 2>"$T/e7b"; rc=$?
check "eval --stream --batch refused, naming both" bash -c "[ $rc -eq 2 ] && grep -q -- '--batch and --stream' '$T/e7b' && [ ! -s '$T/o7b' ]"

# generate: temperature 0 is deterministic; a seed repeats its output
g1=$("$MB_CLI" generate -m "$T/m" -p "int " -n 40 --temp 0 --no-echo 2>/dev/null | od -An -tx1)
g2=$("$MB_CLI" generate -m "$T/m" -p "int " -n 40 --temp 0 --no-echo --seed 99 2>/dev/null | od -An -tx1)
check "temp 0 is deterministic" [ "$g1" = "$g2" ]
"$MB_CLI" generate -m "$T/m" -p "int " -n 4 --temp 0 --no-echo >/dev/null 2>"$T/g0"
"$MB_CLI" generate -m "$T/m" -p "int " -n 4 --seed 5 --no-echo >/dev/null 2>"$T/g5"
check "temp 0: greedy, no seed printed" bash -c "grep -q '^greedy decoding' '$T/g0' && ! grep -q '^seed' '$T/g0'"
check "temp > 0: the seed printed" grep -q '^seed 5$' "$T/g5"
s1=$("$MB_CLI" generate -m "$T/m" -p "int " -n 60 --seed 5 --no-echo 2>/dev/null | od -An -tx1)
s2=$("$MB_CLI" generate -m "$T/m" -p "int " -n 60 --seed 5 --no-echo 2>/dev/null | od -An -tx1)
s3=$("$MB_CLI" generate -m "$T/m" -p "int " -n 60 --seed 6 --no-echo --temp 1.5 2>/dev/null | od -An -tx1)
check "same seed, same bytes" [ "$s1" = "$s2" ]
check "other seed, other bytes" [ "$s1" != "$s3" ]
g3=$(printf 'int ' | "$MB_CLI" generate -m "$T/m" -f - -n 40 --temp 0 --no-echo 2>/dev/null | od -An -tx1)
check "-f - reads the prompt from standard input" [ "$g3" = "$g1" ]
n=$("$MB_CLI" generate -m "$T/m" -p "x" -n 100 --no-echo --seed 1 2>/dev/null | wc -c)
check "generate -n 100 --no-echo writes exactly 100 bytes" [ "$n" -eq 100 ]

# errors: non-zero exit and a message naming the culprit
"$MB_CLI" eval -m "$T/nope" "$T/short.txt" >/dev/null 2>"$T/e1"
check "missing checkpoint named" bash -c "[ $? -ne 0 ] && grep -q '$T/nope' '$T/e1'"
"$MB_CLI" train --data "$T/empty" --out "$T/x" --steps 1 >/dev/null 2>"$T/e2"; rc=$?
check "missing data path named" bash -c "[ $rc -ne 0 ] && grep -q '$T/empty' '$T/e2'"
: >"$T/empty.txt"
"$MB_CLI" train --data "$T/empty.txt" --out "$T/x" --steps 1 >/dev/null 2>"$T/e3"; rc=$?
check "empty input refused" bash -c "[ $rc -ne 0 ] && grep -q 'empty.txt' '$T/e3'"
"$MB_CLI" train --data "$T/short.txt" --out "$T/x" --steps 1 --ctx 4096 >/dev/null 2>"$T/e4"; rc=$?
check "document shorter than ctx refused with ctx named" bash -c "[ $rc -ne 0 ] && grep -q '4096' '$T/e4'"
"$MB_CLI" generate -m "$T/m" --top-p 1.5 >/dev/null 2>"$T/e5"; rc=$?
check "bad --top-p named" bash -c "[ $rc -ne 0 ] && grep -q -- '--top-p' '$T/e5'"
"$MB_CLI" train --data "$data" --out "$T/x" --steps 1 --ctx abc >/dev/null 2>"$T/e6"; rc=$?
check "bad --ctx named" bash -c "[ $rc -ne 0 ] && grep -q -- '--ctx' '$T/e6'"
printf 'x' >"$T/one.txt"
"$MB_CLI" eval -m "$T/m" "$T/one.txt" >"$T/o7" 2>"$T/e7"; rc=$?
check "eval of a 1-byte file is an error, not bpb 0" bash -c "[ $rc -ne 0 ] && grep -q 'one.txt' '$T/e7' && ! grep -q '^bpb' '$T/o7'"
"$MB_CLI" train --data "$data" --out "$T/m" --preset tiny --steps 1 >/dev/null 2>"$T/e8"; rc=$?
check "train refuses to overwrite a checkpoint without --resume/--force" bash -c "[ $rc -ne 0 ] && grep -q -- '--force' '$T/e8'"
"$MB_CLI" train --data "$data" --out "$T/m" --resume --force >/dev/null 2>"$T/e8b"; rc=$?
check "--resume with --force is a conflict" bash -c "[ $rc -eq 2 ] && grep -q -- 'conflict' '$T/e8b'"
"$MB_CLI" train --data "$data" --out "$T/x3" --steps 1 --lr 1e-3 --lr-min 0.5 >/dev/null 2>"$T/e8c"; rc=$?
check "--lr-min above --lr refused" bash -c "[ $rc -eq 2 ] && grep -q -- '--lr-min' '$T/e8c' && [ ! -e '$T/x3' ]"
check "--version prints the version" bash -c "'$MB_CLI' --version | grep -Eq '^mambabyte [0-9]+\.[0-9]+\.[0-9]+$'"
# --flag=value (GNU form) means --flag value; a value given to a flag that takes none is refused
s4=$("$MB_CLI" generate --model="$T/m" --prompt=--x=1 -n 60 --seed=5 --temp=0.9 --no-echo 2>/dev/null | od -An -tx1)
s5=$("$MB_CLI" generate -m "$T/m" -p --x=1 -n 60 --seed 5 --temp 0.9 --no-echo 2>/dev/null | od -An -tx1)
check "--flag=value equals --flag value (a value may itself hold '=')" bash -c "[ -n '$s4' ] && [ '$s4' = '$s5' ]"
e=$("$MB_CLI" eval -m "$T/m" "$T/short.txt" --ctx=1024 2>/dev/null | awk '/^bpb:/ {print $2, $4}')
check "eval --ctx=1024 equals --ctx 1024" [ "$e" = "$w" ]
e=$("$MB_CLI" eval -m "$T/m" "$T/short.txt" --ctx 37 --ctx 1024 2>/dev/null | awk '/^bpb:/ {print $2, $4}')
check "eval --ctx twice: the last wins" [ "$e" = "$w" ]
# '--' ends the options: a PATH / OUT_DIR may then start with '-'
cp "$T/short.txt" "$T/-dash.txt"
e=$(cd "$T" && "$MB_CLI" eval -m "$T/m" --ctx 1024 -- -dash.txt 2>/dev/null | awk '/^bpb:/ {print $2, $4}')
check "eval -- -dash.txt scores the file" [ "$e" = "$w" ]
(cd "$T" && "$MB_CLI" eval -m "$T/m" -dash.txt) >/dev/null 2>"$T/e8h"; rc=$?
check "eval -dash.txt without --: unknown argument" bash -c "[ $rc -eq 2 ] && grep -q \"unknown argument '-dash.txt'\" '$T/e8h'"
(cd "$T" && "$MB_CLI" eval -m "$T/m" -- -dash.txt --ctx) >/dev/null 2>"$T/e8i"; rc=$?
check "eval -- PATH --ctx: --ctx is a second PATH" bash -c "[ $rc -eq 2 ] && grep -q \"more than one PATH ('-dash.txt', '--ctx')\" '$T/e8i'"
(cd "$T" && "$MB_CLI" export -m "$T/m" --format mamba_ssm -- -out) >/dev/null 2>&1; rc=$?
check "export -- -out writes OUT_DIR -out" bash -c "[ $rc -eq 0 ] && [ -s '$T/-out/config.json' ] && [ -s '$T/-out/model.safetensors' ]"
"$MB_CLI" generate -m "$T/m" -n ' 5' >/dev/null 2>"$T/e8k"; rc=$?
check "-n ' 5': a leading blank refused as a trailing one is" bash -c "[ $rc -eq 2 ] && grep -q -- \"-n must be an integer .*got ' 5'\" '$T/e8k'"
"$MB_CLI" info --preset tiny --json=yes >/dev/null 2>"$T/e8e"; rc=$?
check "--json=yes: takes no value" bash -c "[ $rc -eq 2 ] && grep -q -- \"--json takes no value\" '$T/e8e'"
"$MB_CLI" train --data "$data" --out "$T/x4" --steps=1 --lr=abc >/dev/null 2>"$T/e8f"; rc=$?
check "--lr=abc named" bash -c "[ $rc -eq 2 ] && grep -q -- \"--lr must be a number.*'abc'\" '$T/e8f' && [ ! -e '$T/x4' ]"
"$MB_CLI" train --data "$data" --out "$T/m" --resume --steps 10 >/dev/null 2>"$T/e8g"; rc=$?
check "--resume --steps below the run's step refused" bash -c "[ $rc -ne 0 ] && grep -q -- '--steps 10 is below the run.s step 30' '$T/e8g'"
"$MB_CLI" eval -m "$T/short.txt" "$T/short.txt" >/dev/null 2>"$T/e8d"; rc=$?
check "-m of a text file: not a checkpoint" bash -c "[ $rc -ne 0 ] && grep -q 'not a checkpoint directory' '$T/e8d'"
"$MB_CLI" train --data "$data" --out "$T/x2" --steps 1 --val-fraction 0 >/dev/null 2>"$T/e9"; rc=$?
check "--val-fraction 0 without --val refused" bash -c "[ $rc -ne 0 ] && grep -q -- '--val' '$T/e9'"
: >"$T/afile"
"$MB_CLI" train --data "$data" --out "$T/afile" --steps 1 >/dev/null 2>"$T/e10"; rc=$?
check "--out that is a file named" bash -c "[ $rc -ne 0 ] && grep -q 'not a directory' '$T/e10'"
"$MB_CLI" export -m "$T/m" --format mamba_ssm "$T/afile" >/dev/null 2>"$T/e10b"; rc=$?
check "export OUT_DIR that is a file named" bash -c "[ $rc -ne 0 ] && grep -q 'OUT_DIR $T/afile exists and is not a directory' '$T/e10b' && [ ! -s '$T/afile' ]"
# an export that fails or is stopped leaves OUT_DIR as it was: a config.json that is a directory
# is refused before anything is written (it used to fail after model.safetensors had moved in)
"$MB_CLI" export -m "$T/m" --format mamba_ssm "$T/ex1" >/dev/null 2>&1
mkdir -p "$T/ex2/config.json" && cp "$T/ex1/model.safetensors" "$T/ex2/keep"
cp "$T/ex2/keep" "$T/ex2/model.safetensors"
"$MB_CLI" export -m "$T/m" --format mamba_ssm --dtype bf16 --force "$T/ex2" >/dev/null 2>"$T/e10g"; rc=$?
check "export over a config.json directory refused, model.safetensors untouched" bash -c "[ $rc -ne 0 ] && grep -q 'ex2/config.json exists and is a directory' '$T/e10g' && cmp -s '$T/ex2/keep' '$T/ex2/model.safetensors' && [ \$(ls -A '$T/ex2' | wc -l) -eq 3 ]"
# a signal once the export is staged (MB_DEBUG_EXPORT=signal raises SIGTERM just before the
# moves): OUT_DIR as it was - absent where the export would have made it, else its files intact
MB_DEBUG_EXPORT=signal "$MB_CLI" export -m "$T/m" --format mamba_ssm "$T/ex3" >/dev/null 2>&1; rc=$?
check "export stopped by SIGTERM: the OUT_DIR it made removed" bash -c "[ $rc -eq 143 ] && [ ! -e '$T/ex3' ]"
cp -r "$T/ex1" "$T/ex5"
MB_DEBUG_EXPORT=signal "$MB_CLI" export -m "$T/m" --format mamba_ssm --dtype bf16 --force "$T/ex5" >/dev/null 2>&1; rc=$?
check "export stopped by SIGTERM: an existing OUT_DIR unchanged, nothing left in it" bash -c "[ $rc -eq 143 ] && diff -r '$T/ex1' '$T/ex5'"
# SIGTERM ignored by the caller (as nohup does SIGHUP): still ignored, the export completes
(trap '' TERM; MB_DEBUG_EXPORT=signal "$MB_CLI" export -m "$T/m" --format mamba_ssm "$T/ex6" >/dev/null 2>&1); rc=$?
check "an ignored signal stays ignored during export" bash -c "[ $rc -eq 0 ] && [ -s '$T/ex6/config.json' ] && [ -s '$T/ex6/model.safetensors' ]"
# the config's move failing (MB_DEBUG_EXPORT=config-move): the previous model put back
MB_DEBUG_EXPORT=config-move "$MB_CLI" export -m "$T/m" --format mamba_ssm --dtype bf16 --force "$T/ex5" >/dev/null 2>"$T/e10i"; rc=$?
check "config move failing: both files as they were, the previous model put back" bash -c "[ $rc -eq 1 ] && grep -q 'the previous model.safetensors is put back' '$T/e10i' && diff -r '$T/ex1' '$T/ex5'"
MB_DEBUG_EXPORT=config-move "$MB_CLI" export -m "$T/m" --format mamba_ssm "$T/ex7" >/dev/null 2>&1; rc=$?
check "config move failing into a new OUT_DIR: nothing left" bash -c "[ $rc -eq 1 ] && [ ! -e '$T/ex7' ]"
# a staging directory left by a killed export (its process gone) is removed by the next export
mkdir -p "$T/ex4/.mambabyte-export.999999999" && : >"$T/ex4/.mambabyte-export.999999999/model.safetensors.tmp.999999999"
"$MB_CLI" export -m "$T/m" --format mamba_ssm "$T/ex4" >/dev/null 2>"$T/e10h"; rc=$?
check "a killed export's staging directory removed, with a note" bash -c "[ $rc -eq 0 ] && grep -q 'removing .*ex4/.mambabyte-export.999999999, left by an export that was killed' '$T/e10h' && [ \"\$(ls -A '$T/ex4' | tr '\n' ' ')\" = 'config.json model.safetensors ' ]"
# a corpus of identical documents: the held-out split keeps copies together, so none is held out
mkdir -p "$T/same" && for i in 1 2 3; do cat "$data"/*.c | head -c 3000 >"$T/same/f$i.txt"; done
"$MB_CLI" train --data "$T/same" --out "$T/same_o" --preset tiny --ctx 32 --steps 1 --device cpu --quiet >/dev/null 2>"$T/e10f"; rc=$?
check "identical documents only: the reason named" bash -c "[ $rc -ne 0 ] && grep -q 'has the same content, so none can be held out' '$T/e10f'"
# an empty path would be the root or the current directory once joined with a file name
(cd "$T" && "$MB_CLI" export -m "$T/m" --format mamba_ssm --force '' >/dev/null 2>"$T/e10c"); rc=$?
check "export with an empty OUT_DIR refused" bash -c "[ $rc -eq 2 ] && grep -q 'OUT_DIR needs a path, not an empty string' '$T/e10c' && [ ! -e '$T/config.json' ]"
"$MB_CLI" eval -m '' "$T/afile" >/dev/null 2>"$T/e10d"; rc=$?
check "eval -m '' refused" bash -c "[ $rc -eq 2 ] && grep -q -- '-m needs a path, not an empty string' '$T/e10d'"
"$MB_CLI" train --data= --out "$T/x" >/dev/null 2>"$T/e10e"; rc=$?
check "train --data= refused" bash -c "[ $rc -eq 2 ] && grep -q -- '--data needs a path, not an empty string' '$T/e10e'"
check "-m DIR/config.json means DIR" bash -c "'$MB_CLI' info -m '$T/m/config.json' | grep -q 'd_model  *64'"
"$MB_CLI" generate -m "$T/m" -f "$T" -n 3 >/dev/null 2>"$T/e11"; rc=$?
check "-f DIR named as a directory" bash -c "[ $rc -ne 0 ] && grep -q 'is a directory' '$T/e11'"
# a run's --out inside its --data directory is not read as data; --out = --data is refused
mkdir -p "$T/dd"
cat "$data"/* | head -c 3000 >"$T/dd/a.txt"
"$MB_CLI" train --data "$T/dd" --out "$T/dd/run" --preset tiny --ctx 32 --steps 1 --device cpu --quiet >/dev/null 2>"$T/e12"
"$MB_CLI" train --data "$T/dd" --out "$T/dd/run" --preset tiny --ctx 32 --steps 1 --device cpu --quiet --force >/dev/null 2>"$T/e13"
check "--out inside --data: the checkpoint is not training data" bash -c "grep -q '(new pack, 1 document)' '$T/e12' && grep -q ', 1 document)' '$T/e13'"
check "one document, one doc: singular" grep -q ': train 1 doc / ' "$T/e12"
# eval of a tree that holds the model's directory scores the data, not the checkpoint files
ed=$("$MB_CLI" eval -m "$T/dd/run" "$T/dd" --device cpu 2>"$T/e13b" | awk '/^bpb:/ {print $2, $4}')
ef=$("$MB_CLI" eval -m "$T/dd/run/config.json" "$T/dd/a.txt" --device cpu 2>/dev/null | awk '/^bpb:/ {print $2, $4}')
check "eval of --data with the run inside: same as the data file alone ($ed / $ef)" \
  bash -c "[ -n '$ed' ] && [ '$ed' = '$ef' ] && grep -q \"model's directory $T/dd/run inside\" '$T/e13b'"
# a --val corpus holding copies of training documents: warned with the count, kept
mkdir -p "$T/dv" "$T/vv" # (dd holds a run now)
cp "$T/dd/a.txt" "$T/dv/a.txt"
cp "$T/dd/a.txt" "$T/vv/copy.txt"
head -c 2000 "$data/config.c" >"$T/vv/other.txt"
"$MB_CLI" train --data "$T/dv" --val "$T/vv" --out "$T/vvrun" --preset tiny --ctx 32 --steps 1 --device cpu --quiet >/dev/null 2>"$T/e13c"; rc=$?
check "--val copies of training documents: warned with the count" bash -c "[ $rc -eq 0 ] && grep -q -- '--val $T/vv: 1 of its 2 documents is byte-identical to a --data document: it is not held out' '$T/e13c' && grep -q 'val 2 docs' '$T/e13c'"
"$MB_CLI" train --data "$T/dd" --out "$T/dd" --preset tiny --steps 1 --device cpu >/dev/null 2>"$T/e14"; rc=$?
check "--out = --data refused" bash -c "[ $rc -ne 0 ] && grep -q 'is the --data directory' '$T/e14'"
"$MB_CLI" train --data "$data" --out "$T/bf" --steps 1 --device cpu --precision bf16 >/dev/null 2>"$T/e15"; rc=$?
check "--precision bf16 on the CPU refused before any work" bash -c "[ $rc -eq 2 ] && grep -q 'needs --device cuda' '$T/e15' && [ ! -e '$T/bf/data.pack' ]"
"$MB_CLI" train --data "$data" --out "$T/rc" --steps 1 --device cpu --recompute on >/dev/null 2>"$T/e15b"; rc=$?
check "--recompute on on the CPU refused before any work" bash -c "[ $rc -eq 2 ] && grep -q -- '--recompute on needs --device cuda' '$T/e15b' && [ ! -e '$T/rc' ]"
"$MB_CLI" train --data "$T/dv" --out "$T/rc2" --preset tiny --ctx 32 --steps 1 --device cpu --quiet --recompute off >/dev/null 2>"$T/e15c"; rc=$?
check "--recompute off on the CPU accepted" [ "$rc" -eq 0 ]
"$MB_CLI" train --data "$data" --out "$T/gm" --steps 1 --device cpu --gpu-memory 40 >/dev/null 2>"$T/e15d"; rc=$?
check "--gpu-memory on the CPU refused before any work" bash -c "[ $rc -eq 2 ] && grep -q -- '--gpu-memory needs --device cuda' '$T/e15d' && [ ! -e '$T/gm' ]"
for v in 0 -3 abc 12x; do
  "$MB_CLI" train --data "$data" --out "$T/gm" --steps 1 --gpu-memory "$v" >/dev/null 2>"$T/e15e"; rc=$?
  check "--gpu-memory $v refused with a message" bash -c "[ $rc -eq 2 ] && grep -q -- \"--gpu-memory must be a positive number of GiB, not '$v'\" '$T/e15e'"
done
# Ctrl-C (SIGINT) during training: the step finishes, a checkpoint is written, exit 130;
# --resume continues from it
# (job control on: a script's background jobs otherwise start with SIGINT ignored, which train
# leaves alone; where this shell itself was started with SIGINT ignored, the checks are skipped)
if ! ignored 2; then
  set -m
  "$MB_CLI" train --data "$data" --out "$T/int" --preset tiny --ctx 32 --steps 100000 --device cpu \
    >/dev/null 2>"$T/e16" &
  pid=$!
  set +m
  for i in $(seq 1 240); do grep -q '"loss"' "$T/int/metrics.jsonl" 2>/dev/null && break; sleep 0.5; done
  kill -INT $pid
  wait $pid; rc=$?
  check "SIGINT: exit 130 with a checkpoint and a message" bash -c "[ $rc -eq 130 ] && grep -q 'interrupted by signal 2' '$T/e16' && test -f '$T/int/train_state.safetensors'"
  at=$(sed -n 's/.*interrupted (signal 2) at step \([0-9]*\).*/\1/p' "$T/e16")
  "$MB_CLI" train --data "$data" --out "$T/int" --resume --steps $((at + 2)) --device cpu >"$T/o17" 2>"$T/e17"; rc=$?
  check "SIGINT: --resume continues at the saved step ($at)" bash -c "[ $rc -eq 0 ] && grep -q 'resuming .* at step $at of' '$T/e17' && grep -q '^val_bpb' '$T/o17'"
fi
# output lost on a full device: an error, not exit 0
if [ -w /dev/full ]; then
  "$MB_CLI" info -m "$T/m" >/dev/full 2>"$T/e18"; rc=$?
  check "info to a full device: exit 1 naming stdout" bash -c "[ $rc -eq 1 ] && grep -q stdout '$T/e18'"
  "$MB_CLI" generate -m "$T/m" -n 50 --device cpu >/dev/full 2>"$T/e19"; rc=$?
  check "generate to a full device stops, naming stdout" bash -c "[ $rc -ne 0 ] && grep -q 'writing to stdout' '$T/e19'"
fi
# a FIFO where a checkpoint file belongs is refused at once (opening it for reading would wait)
mkdir -p "$T/fifo"
cp "$T/m/config.json" "$T/fifo/"
mkfifo "$T/fifo/model.safetensors"
timeout 30 "$MB_CLI" info -m "$T/fifo" >/dev/null 2>"$T/e20"; rc=$?
check "FIFO as model.safetensors refused, no hang" bash -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'not a regular file' '$T/e20'"
# --val problems are named as --val
"$MB_CLI" train --data "$data" --val "$T/nope.txt" --out "$T/x3" --steps 1 --device cpu >/dev/null 2>"$T/e21"; rc=$?
check "missing --val named as --val" bash -c "[ $rc -ne 0 ] && grep -q -- '--val: .*nope.txt' '$T/e21'"
# either-or flags both ways are refused before any work; a value flag twice takes the last
"$MB_CLI" train --data "$data" --out "$T/x4" --steps 1 --rms-norm --layer-norm >/dev/null 2>"$T/e22"; rc=$?
check "--rms-norm with --layer-norm refused" bash -c "[ $rc -eq 2 ] && grep -q 'conflict' '$T/e22' && [ ! -e '$T/x4' ]"
"$MB_CLI" train --data "$T/nope" --data "$T/dv" --out "$T/nope2" --out "$T/x5" --preset tiny --ctx 32 --steps 1 --device cpu --quiet >/dev/null 2>"$T/e23"; rc=$?
check "--data and --out twice: the last wins" bash -c "[ $rc -eq 0 ] && grep -q '^data: $T/dv ' '$T/e23' && [ -f '$T/x5/model.safetensors' ] && [ ! -e '$T/nope2' ]"
"$MB_CLI" train --data "$data" --val "$T/short.txt" --val-fraction 0.1 --out "$T/x4" --steps 1 >/dev/null 2>"$T/e24"; rc=$?
check "--val with --val-fraction refused" bash -c "[ $rc -eq 2 ] && grep -q -- '--val-fraction conflict' '$T/e24'"
for c in train eval generate info; do
  check "$c --help" bash -c "'$MB_CLI' $c --help | grep -q usage"
done
# a usage line that lists the options names every option the help describes
for c in eval info export; do
  h=$("$MB_CLI" $c --help)
  usage=$(printf '%s\n' "$h" | sed '/^$/q')
  missing=""
  for f in $(printf '%s\n' "$h" | sed -n 's/^  \(-[-a-z]*\) .*/\1/p'); do
    case "$usage" in *" $f "* | *"[$f "* | *"[$f]"* | *"($f "*) ;; *) missing="$missing $f" ;; esac
  done
  check "$c usage line names every option (missing:$missing)" [ -z "$missing" ]
done
# eval --max-bytes: the documents scored are counted apart from those in PATH
nd=$(ls "$data" | wc -l)
"$MB_CLI" eval -m "$T/m" "$data" --ctx 64 --max-bytes 100 --json >"$T/mb.json" 2>/dev/null
"$MB_CLI" eval -m "$T/m" "$data" --ctx 64 --max-bytes 100 --stream --json >"$T/mbs.json" 2>/dev/null
"$MB_CLI" eval -m "$T/m" "$data" --ctx 64 --max-bytes 100 >/dev/null 2>"$T/mb.err"
"$MB_CLI" eval -m "$T/m" "$data" --ctx 64 --json >"$T/all.json" 2>/dev/null
check "eval --max-bytes --json: documents $nd, documents_scored 1" \
  bash -c "grep -q '\"documents\": $nd, \"documents_scored\": 1,' '$T/mb.json' && grep -q '\"documents\": $nd, \"documents_scored\": 1,' '$T/mbs.json'"
check "eval without --max-bytes: every document scored" grep -q "\"documents\": $nd, \"documents_scored\": $nd," "$T/all.json"
check "eval --max-bytes: the text names the scored count" grep -q "^$nd documents (1 scored), ctx 64" "$T/mb.err"
# counts of one are singular
"$MB_CLI" eval -m "$T/m" "$T/short.txt" >/dev/null 2>"$T/one.err"
check "eval of one document: '1 document'" grep -q "^1 document, ctx" "$T/one.err"
"$MB_CLI" generate -m "$T/m" -p "x" -n 1 --no-echo --seed 1 --device cpu >/dev/null 2>"$T/g1.err"
check "generate: '1 byte'" grep -q "^prompt 1 byte in .*; generated 1 byte in" "$T/g1.err"
"$MB_CLI" train --data "$T/dv" --out "$T/one_step" --preset tiny --ctx 32 --steps 1 --eval-every 0 --device cpu --quiet >/dev/null 2>"$T/t1.err"
check "train: 'trained 1 step'" grep -q "^trained 1 step (" "$T/t1.err"

# --out holding an earlier run's files (or the user's) but no model: refused without --force,
# the files left as they were; with --force the run replaces them
mkdir -p "$T/prior"
printf '{"my": "settings"}' >"$T/prior/config.json"
"$MB_CLI" train --data "$T/dv" --out "$T/prior" --preset tiny --ctx 32 --steps 1 --eval-every 0 --device cpu --quiet >/dev/null 2>"$T/pr.err"; rc=$?
check "train: --out with a config.json but no model refused, naming it" \
  bash -c "[ $rc -ne 0 ] && grep -q 'holds config.json (and no model.safetensors)' '$T/pr.err' && grep -q -- '--force' '$T/pr.err'"
check "train: the refused --out's config.json is untouched" grep -q '"my": "settings"' "$T/prior/config.json"
"$MB_CLI" train --data "$T/dv" --out "$T/prior" --preset tiny --ctx 32 --steps 1 --eval-every 0 --device cpu --quiet --force >/dev/null 2>&1
check "train --force replaces them" bash -c "[ -f '$T/prior/model.safetensors' ] && ! grep -q '\"my\"' '$T/prior/config.json'"

# a run directory inside --data (another run's --out) is skipped, with a note: its data pack
# and checkpoint are not training data
mkdir -p "$T/rd"
cp "$MB_SOURCE_DIR"/src/common.c "$MB_SOURCE_DIR"/src/config.c "$MB_SOURCE_DIR"/src/params.c "$T/rd/"
"$MB_CLI" train --data "$T/rd" --out "$T/rd/runs/a" --preset tiny --ctx 32 --steps 1 --eval-every 0 --device cpu --quiet --format bytes >/dev/null 2>"$T/rd1.err"
"$MB_CLI" train --data "$T/rd" --out "$T/rd/runs/b" --preset tiny --ctx 32 --steps 1 --eval-every 0 --device cpu --quiet --format bytes >/dev/null 2>"$T/rd2.err"
check "train: another run's --out inside --data skipped, with a note" \
  bash -c "grep -q 'runs/a skipped: a mambabyte run directory' '$T/rd2.err' && grep -q '(new pack, 3 documents)' '$T/rd2.err'"
# a directory whose only content was skipped as run / model directories says so, not "empty"
"$MB_CLI" eval -m "$T/rd/runs/a" "$T/rd/runs" >/dev/null 2>"$T/rd3.err"; rc=$?
check "eval of a directory holding only run directories: the skip named, not 'empty'" \
  bash -c "[ $rc -ne 0 ] && grep -q 'runs has no documents: no regular, non-hidden files besides 2 directories skipped as mambabyte run or model directories' '$T/rd3.err'"
# finite weights whose forward pass overflows (lm_head all 3e38): eval and generate stop with an
# error naming it, instead of bpb -nan (not JSON) or NUL bytes with exit status 0
mkdir -p "$T/ovf" && cp "$T/m/config.json" "$T/ovf/"
python3 -c "
import json, struct, sys
b = bytearray(open(sys.argv[1], 'rb').read()); n = struct.unpack('<Q', b[:8])[0]
s, e = json.loads(b[8:8 + n])['lm_head.weight']['data_offsets']
b[8 + n + s:8 + n + e] = struct.pack('<f', 3e38) * ((e - s) // 4)
open(sys.argv[2], 'wb').write(b)" "$T/m/model.safetensors" "$T/ovf/model.safetensors"
"$MB_CLI" eval -m "$T/ovf" "$T/short.txt" --json --device cpu >"$T/ovf.o1" 2>"$T/ovf.e1"; rc=$?
check "eval: non-finite loss is an error, not bpb -nan" \
  bash -c "[ $rc -ne 0 ] && grep -q 'not finite' '$T/ovf.e1' && [ ! -s '$T/ovf.o1' ]"
"$MB_CLI" eval -m "$T/ovf" "$T/short.txt" --stream --ctx 37 --device cpu >"$T/ovf.o2" 2>"$T/ovf.e2"; rc=$?
check "eval --stream: the same" bash -c "[ $rc -ne 0 ] && grep -q 'not finite' '$T/ovf.e2' && ! grep -q '^bpb' '$T/ovf.o2'"
"$MB_CLI" generate -m "$T/ovf" -n 20 --seed 1 --no-echo --device cpu >"$T/ovf.o3" 2>"$T/ovf.e3"; rc=$?
check "generate: non-finite logits are an error, no bytes drawn from them" \
  bash -c "[ $rc -ne 0 ] && grep -q 'non-finite logits' '$T/ovf.e3' && grep -q '$T/ovf' '$T/ovf.e3' && [ ! -s '$T/ovf.o3' ]"
# batch x ctx over the 2^30 positions one step holds: named as such, not "out of memory"
cat "$MB_SOURCE_DIR"/src/*.c "$MB_SOURCE_DIR"/src/cpu/*.c >"$T/big.txt"
"$MB_CLI" train --data "$T/big.txt" --out "$T/big" --preset tiny --ctx 16385 --batch 65536 --steps 1 --device cpu >/dev/null 2>"$T/big.err"; rc=$?
check "train: batch x ctx over 2^30 refused with the limit named" \
  bash -c "[ $rc -ne 0 ] && grep -q '2^30' '$T/big.err' && ! grep -q 'out of memory' '$T/big.err'"
finish
