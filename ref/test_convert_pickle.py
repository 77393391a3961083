#!/usr/bin/env python3
"""ctest convert_pickle: tools/convert_pickle.py on synthetic pickles laid out like the released
MambaByte checkpoints (JunxiongWang/MambaByte_*: pytorch_model.bin of a DDP-wrapped
MambaLMHeadModel, every key prefixed `module.`, LayerNorm, untied head, residual_in_fp32, and
a config.json whose n_layer disagrees with the layers in the weights), then mambabyte reads the
result:
  1. fp32 pickle -> `mambabyte info -m OUT --json` reports the counted layers, LayerNorm, untied;
     the converted tensors equal the pickle's bit for bit; `mambabyte eval` gives the bits per
     byte of ref/mamba_ref.py (float64) on the same document within 1e-4, windowed and
     --stream; `mambabyte generate --temp 0` produces bytes.
  2. bf16 pickle, --dtype keep -> BF16 safetensors, eval within 1e-4 of the reference on the
     bf16 weights.
  3. errors: a missing tensor, a tied config with a differing lm_head, an existing OUT without
     --force, each a non-zero exit with a message naming the tensor / file.
Exits 77 (ctest SKIP_RETURN_CODE) when torch cannot be imported (CI has no torch). Needs
MB_CLI (the mambabyte binary)."""
import json
import math
import os
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError:
    print("SKIP: torch is not importable by %s" % sys.executable)
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import convert_pickle  # noqa: E402
import mamba_ref as mr  # noqa: E402
import st  # noqa: E402

CLI = os.environ.get("MB_CLI") or os.path.join(HERE, "..", "build", "mambabyte")
TOOL = os.path.join(HERE, "..", "tools", "convert_pickle.py")
FAILS = []


def check(ok, what):
    print("%s: %s" % ("ok" if ok else "FAIL", what))
    if not ok:
        FAILS.append(what)


def run(args, expect_rc=0):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.raw = p.stdout
    p.stdout = p.stdout.decode("utf-8", "replace")
    p.stderr = p.stderr.decode("utf-8", "replace")
    if expect_rc is not None and p.returncode != expect_rc:
        print("command %s: rc %d\nstdout: %s\nstderr: %s" % (args, p.returncode, p.stdout, p.stderr))
    return p


def released_like(tmp, name, c, cfg_n_layer, dtype=torch.float32, seed=3):
    """A folder with pytorch_model.bin (module.-prefixed keys) and a config.json in the released
    format (only expand in ssm_cfg when d_state/d_conv are the defaults)."""
    d = os.path.join(tmp, name)
    os.makedirs(d)
    w = mr.random_weights(c, seed)
    sd = {"module." + k: torch.from_numpy(v).to(dtype) for k, v in w.items()}
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    cfg = {"d_model": c.d_model, "n_layer": cfg_n_layer, "vocab_size": 256,
           "ssm_cfg": {"expand": 2} if c.d_state == 16 else {"expand": 2, "d_state": c.d_state},
           "rms_norm": c.rms_norm, "residual_in_fp32": True, "fused_add_norm": True,
           "pad_vocab_size_multiple": 8, "tie_embeddings": c.tie}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d, {k[len("module."):]: v for k, v in sd.items()}


def ref_bpb(c, sd, doc):
    P = {k: v.double() for k, v in sd.items()}
    x = torch.tensor(list(doc), dtype=torch.long)[None]
    with torch.no_grad():
        logits = mr.forward(c, P, x[:, :-1])[0]
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1))
    return ce.item() / math.log(2)


def ref_greedy(c, sd, prompt, n):
    P = {k: v.double() for k, v in sd.items()}
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = mr.forward(c, P, torch.tensor(seq, dtype=torch.long)[None])[0]
            seq.append(int(logits[0, -1].argmax()))
    return bytes(seq[len(prompt):])


def eval_bpb(out, docf, *extra):
    p = run([CLI, "eval", "-m", out, docf, "--ctx", "512", "--json"] + list(extra))
    if p.returncode:
        return float("nan")
    return float(json.loads(p.stdout)["bpb"])


def main():
    if not os.path.exists(CLI):
        print("mambabyte binary not found at %s (set MB_CLI)" % CLI)
        return 1
    tmp = tempfile.mkdtemp(prefix="mb_convert_")
    doc = (b"It was the best of times, it was the worst of times; bytes \xe2\x9c\x93 \x00\xff and "
           b"a second line.\n" * 3)[:300]
    docf = os.path.join(tmp, "doc.txt")
    with open(docf, "wb") as f:
        f.write(doc)

    # 1. fp32, LayerNorm, untied, 3 layers of weights but config n_layer 5
    c = mr.Cfg(20, 3, d_state=16, rms_norm=False, tie=False)
    src, sd = released_like(tmp, "released", c, cfg_n_layer=5)
    out = os.path.join(tmp, "converted")
    p = run([sys.executable, TOOL, src, out])
    check(p.returncode == 0 and "weights hold 3 layers" in p.stdout and "module." in p.stdout,
          "convert fp32 pickle (module. prefix, n_layer 5 in config vs 3 in weights)")
    p = run([CLI, "info", "-m", out, "--json"])
    info = json.loads(p.stdout) if p.returncode == 0 else {}
    check(info.get("n_layer") == 3 and info.get("rms_norm") is False and
          info.get("tie_embeddings") is False and info.get("d_model") == 20 and
          info.get("d_state") == 16 and info.get("dt_rank") == 2,
          "mambabyte info: %s" % {k: info.get(k) for k in ("n_layer", "d_model", "rms_norm",
                                                          "tie_embeddings", "format")})
    w, meta = st.load(os.path.join(out, "model.safetensors"))
    same = sorted(w) == sorted(sd) and all(
        (torch.from_numpy(w[k]) == sd[k]).all().item() for k in sd)
    check(same, "converted tensors equal the pickle's (names without module., bit for bit)")
    ref = ref_bpb(c, sd, doc)
    ours = eval_bpb(out, docf)
    ours_s = eval_bpb(out, docf, "--stream")
    check(abs(ours - ref) <= 1e-4, "eval bpb %.6f vs reference %.6f" % (ours, ref))
    check(abs(ours_s - ref) <= 1e-4, "eval --stream bpb %.6f vs reference %.6f" % (ours_s, ref))
    p = run([CLI, "generate", "-m", out, "-p", "It was", "-n", "24", "--temp", "0", "--no-echo"])
    greedy = ref_greedy(c, sd, b"It was", 24)
    check(p.returncode == 0 and p.raw[:24] == greedy,
          "mambabyte generate -n 24 --temp 0 = reference greedy decoding: %r vs %r"
          % (p.raw[:24], greedy))

    # 2. bf16 pickle kept as BF16
    src16, sd16 = released_like(tmp, "released_bf16", c, cfg_n_layer=3, dtype=torch.bfloat16, seed=4)
    out16 = os.path.join(tmp, "converted_bf16")
    p = run([sys.executable, TOOL, os.path.join(src16, "pytorch_model.bin"), out16, "--dtype", "keep"])
    check(p.returncode == 0, "convert bf16 pickle with --dtype keep")
    with open(os.path.join(out16, "model.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        hdr = json.loads(f.read(n))
    check(all(v["dtype"] == "BF16" for k, v in hdr.items() if k != "__metadata__"),
          "bf16 tensors stored as BF16")
    p = run([CLI, "info", "-m", out16, "--json"])
    check(p.returncode == 0 and json.loads(p.stdout).get("n_layer") == 3,
          "mambabyte info on the BF16 conversion")
    ref16 = ref_bpb(c, {k: v.float() for k, v in sd16.items()}, doc)
    ours16 = eval_bpb(out16, docf)
    check(abs(ours16 - ref16) <= 1e-4, "bf16 eval bpb %.6f vs reference %.6f" % (ours16, ref16))

    # 3. errors
    bad = {k: v for k, v in sd.items() if k != "backbone.layers.1.mixer.A_log"}
    bd = os.path.join(tmp, "missing")
    os.makedirs(bd)
    torch.save({"module." + k: v for k, v in bad.items()}, os.path.join(bd, "pytorch_model.bin"))
    with open(os.path.join(bd, "config.json"), "w") as f:
        json.dump({"d_model": 20, "n_layer": 3, "vocab_size": 256, "ssm_cfg": {"expand": 2},
                   "rms_norm": False, "tie_embeddings": False}, f)
    p = run([sys.executable, TOOL, bd, os.path.join(tmp, "o1")], expect_rc=None)
    check(p.returncode == 1 and "backbone.layers.1.mixer.A_log" in p.stderr,
          "missing tensor refused: %s" % p.stderr.strip())
    with open(os.path.join(bd, "config.json"), "w") as f:
        json.dump({"d_model": 20, "n_layer": 3, "vocab_size": 256, "rms_norm": False,
                   "tie_embeddings": True}, f)
    torch.save({"module." + k: v for k, v in sd.items()}, os.path.join(bd, "pytorch_model.bin"))
    p = run([sys.executable, TOOL, bd, os.path.join(tmp, "o2")], expect_rc=None)
    check(p.returncode == 1 and "lm_head.weight differs" in p.stderr,
          "tied config with a differing lm_head refused: %s" % p.stderr.strip())
    p = run([sys.executable, TOOL, src, out], expect_rc=None)
    check(p.returncode == 1 and "--force" in p.stderr, "existing OUT refused without --force")

    if FAILS:
        print("FAILED: %s" % "; ".join(FAILS))
        return 1
    import shutil
    shutil.rmtree(tmp)
    print("all convert_pickle checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
