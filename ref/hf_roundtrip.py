#!/usr/bin/env python3
"""Round trip of our exports through the PyTorch ecosystem (run where transformers is: the GPU
machine; CPU is enough).

For each case NAME in {untied, tied} the folder DIR (made by `mambabyte train` / `export` /
`mb_dump_logits`, see docs/interop.md) holds:
  hf_NAME/        `mambabyte export --format hf`            (fp32)
  hf_bf16_NAME/   `mambabyte export --format hf --dtype bf16`
  ssm_NAME/       `mambabyte export --format mamba_ssm`
  ours_NAME.safetensors       our logits (mb_forward) of the source checkpoint on input.bin
  ours_bf16_NAME.safetensors  our logits of hf_bf16_NAME (read back by mambabyte)
Checks, each max |logits - ours| <= 1e-4:
  1. MambaForCausalLM.from_pretrained(hf_NAME) (float32, its pure-PyTorch path)
  2. MambaForCausalLM.from_pretrained(hf_bf16_NAME) upcast to float32, against ours on the
     same bf16-rounded weights
  3. the mamba_ssm export in mamba_ssm's MambaLMHeadModel when installed, else in
     ref/mamba_ref.py (a PyTorch re-implementation of MambaLMHeadModel), after checking its
     config.json and tensor names are exactly what MambaLMHeadModel expects.
Exit status 1 if any check fails.

  python3 ref/hf_roundtrip.py DIR
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mamba_ref as mr  # noqa: E402
import st  # noqa: E402

TOL = 1e-4


def load_ours(path):
    t, meta = st.load(path)
    return (torch.from_numpy(t["x"]).long(), torch.from_numpy(t["logits"]).double(),
            float(t["loss"][0]))


def hf_logits(d, x):
    from transformers import MambaForCausalLM
    try:
        m = MambaForCausalLM.from_pretrained(d, dtype=torch.float32)
    except TypeError:
        m = MambaForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        return m(input_ids=x, use_cache=False).logits.double(), m


def report(what, got, ours, loss_ours, x):
    y = x[:, 1:]
    e = (got - ours).abs().max().item()
    lo = torch.nn.functional.cross_entropy(got[:, :-1].reshape(-1, 256), y.reshape(-1)).item()
    lo_ours = torch.nn.functional.cross_entropy(ours[:, :-1].reshape(-1, 256), y.reshape(-1)).item()
    ok = e <= TOL
    print("%-58s max|logits diff| %.3g  loss %.6f vs ours %.6f  %s" % (
        what, e, lo, lo_ours, "OK" if ok else "FAIL"))
    return ok


def main():
    d = sys.argv[1]
    import transformers
    print("torch %s, transformers %s" % (torch.__version__, transformers.__version__))
    ok = True
    for v in ("untied", "tied"):
        x, ours, loss = load_ours(os.path.join(d, "ours_%s.safetensors" % v))
        got, m = hf_logits(os.path.join(d, "hf_" + v), x)
        n_par = sum(p.numel() for p in m.parameters())
        tied = m.lm_head.weight.data_ptr() == m.backbone.embeddings.weight.data_ptr()
        print("[%s] from_pretrained: %d parameters, lm_head tied: %s, mixer path: %s" % (
            v, n_par, tied, "slow (pure PyTorch)" if not torch.cuda.is_available() or
            next(m.parameters()).device.type == "cpu" else "cuda"))
        ok &= tied == (v == "tied")
        ok &= report("[%s] HF from_pretrained(hf export, f32)" % v, got, ours, loss, x)
        xb, ours_b, loss_b = load_ours(os.path.join(d, "ours_bf16_%s.safetensors" % v))
        got_b, _ = hf_logits(os.path.join(d, "hf_bf16_" + v), xb)
        ok &= report("[%s] HF from_pretrained(hf export, bf16)" % v, got_b, ours_b, loss_b, xb)
        print("[%s]   (bf16 rounding moves the logits by %.3g: the check above is not vacuous)"
              % (v, (ours_b - ours).abs().max().item()))
        sd = os.path.join(d, "ssm_" + v)
        with open(os.path.join(sd, "config.json")) as f:
            cj = json.load(f)
        try:
            from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel  # noqa: F401
            have_ssm = True
        except Exception:
            have_ssm = False
        c = mr.Cfg.from_mamba_ssm_json(os.path.join(sd, "config.json"))
        w, _ = st.load(os.path.join(sd, "model.safetensors"))
        names = [n for n, _, _ in mr.tensor_table(c)]
        if sorted(w) != sorted(names):
            print("[%s] mamba_ssm export: tensor names differ: %s" % (v, sorted(set(w) ^ set(names))))
            ok = False
            continue
        for n, shape, _ in mr.tensor_table(c):
            if tuple(w[n].shape) != tuple(shape):
                print("[%s] %s has shape %s, MambaLMHeadModel wants %s" % (v, n, w[n].shape, shape))
                ok = False
        if have_ssm:
            from mamba_ssm.models.config_mamba import MambaConfig as SsmCfg
            from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
            mm = MambaLMHeadModel(SsmCfg(**cj)).float().eval()
            mm.load_state_dict({k: torch.from_numpy(a) for k, a in w.items()}, strict=False)
            with torch.no_grad():
                got_s = mm(x).logits.double()
            ok &= report("[%s] mamba_ssm MambaLMHeadModel(ssm export)" % v, got_s, ours, loss, x)
        else:
            P = mr.params_from_numpy(w, torch.float64)
            with torch.no_grad():
                got_s = mr.forward(c, P, x)[0]
            ok &= report("[%s] ref/mamba_ref.py MambaLMHeadModel (ssm export; mamba_ssm "
                         "absent)" % v, got_s, ours, loss, x)
        print("[%s] mamba_ssm config.json keys: %s" % (v, ", ".join(sorted(cj))))
    print("ROUNDTRIP", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
