#!/usr/bin/env python3
"""Writes the parity fixtures of tests/fixtures/ (read by tests/test_parity.c).

One safetensors file per tiny config holds: the weights (mamba_ssm names, fp32), the input
bytes `x` and `targets` (B=2, L=17, stored as F32 integers), the expected `logits` (B, L, 256),
the mean cross-entropy `loss` (nats over B*L bytes), `grad.<name>` of the mean loss for every
parameter, the final recurrent states `state.conv` (n_layer, B, K-1, Di; oldest first) and
`state.ssm` (n_layer, B, Di, N), and `adamw.losses` (11): the loss on the same batch before each
of 10 AdamW steps (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on the matrices of
mb_tensor_table's mask, no clipping) and after the last. The config and provenance are in the
__metadata__.

Backends:
  ref  the independent module ref/mamba_ref.py in float64 (torch 1.13 is enough):
       the LayerNorm fixtures (HF has no LayerNorm Mamba).
  hf   Hugging Face transformers MambaForCausalLM on the CPU (its pure-PyTorch slow path),
       float32: the RMSNorm fixtures. Also cross-checks ref/mamba_ref.py against it.

  /usr/bin/python3 ref/make_fixtures.py --backend ref            # here
  python3 ref/make_fixtures.py --backend hf                      # GPU machine (transformers)
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mamba_ref as mr  # noqa: E402
import st  # noqa: E402

B, L, STEPS = 2, 17, 10
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.95), 1e-8, 0.1

# name -> (config, backend). Odd d_model, d_state 16 and 4, tied and untied, both norms.
FIXTURES = {
    "ln_untied_d12_n16": (mr.Cfg(12, 2, d_state=16, rms_norm=False, tie=False), "ref"),
    "ln_tied_d20_n4": (mr.Cfg(20, 2, d_state=4, rms_norm=False, tie=True), "ref"),
    "rms_tied_d12_n16": (mr.Cfg(12, 2, d_state=16, rms_norm=True, tie=True), "hf"),
    "rms_untied_d20_n4": (mr.Cfg(20, 2, d_state=4, rms_norm=True, tie=False), "hf"),
}


def batch(seed):
    g = np.random.default_rng(1000 + seed)
    text = np.frombuffer(b"Mamba reads bytes; \xe2\x9c\x93 every one of them.\n\x00\xff", np.uint8)
    seq = np.stack([text[:L + 1], g.integers(0, 256, L + 1)]).astype(np.int64)
    return seq[:, :L], seq[:, 1:]


def decay_groups(named):
    """Split (mamba_ssm name, param) pairs by the decay mask of mr.tensor_table."""
    return [{"params": [p for n, p, d in named if d], "weight_decay": WD},
            {"params": [p for n, p, d in named if not d], "weight_decay": 0.0}]


def run_ref(c, w, x, y, dtype=torch.float64):
    P = mr.params_from_numpy(w, dtype)
    xt, yt = torch.tensor(x), torch.tensor(y)
    logits, convs, ssms = mr.forward(c, P, xt)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c.vocab), yt.reshape(-1))
    loss.backward()
    out = {"logits": logits.detach(), "loss": loss.detach().reshape(1),
           "state.conv": torch.stack([t.detach() for t in convs]),
           "state.ssm": torch.stack([t.detach() for t in ssms])}
    for n in P:
        out["grad." + n] = P[n].grad.detach().clone()
    table = mr.tensor_table(c)
    opt = torch.optim.AdamW(decay_groups([(n, P[n], d) for n, _, d in table]), lr=LR,
                            betas=BETAS, eps=EPS)
    losses = []
    for step in range(STEPS + 1):
        opt.zero_grad()
        lo = torch.nn.functional.cross_entropy(mr.forward(c, P, xt)[0].reshape(-1, c.vocab),
                                               yt.reshape(-1))
        losses.append(lo.item())
        if step < STEPS:
            lo.backward()
            opt.step()
    out["adamw.losses"] = torch.tensor(losses)
    return out


def hf_name(n):
    return n.replace("backbone.embedding.", "backbone.embeddings.")


def hf_cache_states(cp, c):
    """Final states from the cache HF returns with use_cache=True: MambaCache (conv_states /
    ssm_states lists) or a cache of per-layer objects (transformers 5: DynamicCache.layers),
    whose tensor attributes are found by name. HF keeps the last K conv inputs (B, Di, K);
    ours are the last K-1, oldest first: (n_layer, B, K-1, Di)."""
    if hasattr(cp, "conv_states") and hasattr(cp, "ssm_states"):
        convs, ssms = list(cp.conv_states), list(cp.ssm_states)
        how = "%s.conv_states/ssm_states" % type(cp).__name__
    else:
        layers = getattr(cp, "layers", None)
        if layers is None:
            raise RuntimeError("cache %s has attributes %s" % (type(cp).__name__, sorted(vars(cp))))
        convs, ssms, how = [], [], None
        for lay in layers:
            ts = {}
            for k in dir(lay):
                v = getattr(lay, k, None) if not k.startswith("__") else None
                if torch.is_tensor(v):
                    ts[k] = v
            ck = [k for k in ts if "conv" in k]
            sk = [k for k in ts if "ssm" in k or "recurrent" in k]
            if len(ck) != 1 or len(sk) != 1:
                raise RuntimeError("cache layer %s holds %s; attributes %s" % (
                    type(lay).__name__, {k: tuple(v.shape) for k, v in ts.items()},
                    [k for k in dir(lay) if not k.startswith("__")]))
            convs.append(ts[ck[0]])
            ssms.append(ts[sk[0]])
            how = "%s.layers[i].%s/%s (%s)" % (type(cp).__name__, ck[0], sk[0], type(lay).__name__)
    if len(convs) != c.n_layer:
        raise RuntimeError("cache holds %d layers" % len(convs))
    k = c.d_conv
    out = []
    for t in convs:
        if tuple(t.shape[1:]) == (c.d_inner, k):
            t = t[:, :, 1:]
        elif tuple(t.shape[1:]) != (c.d_inner, k - 1):
            raise RuntimeError("conv state shape %s" % (tuple(t.shape),))
        out.append(t.transpose(1, 2))
    for t in ssms:
        if tuple(t.shape[1:]) != (c.d_inner, c.d_state):
            raise RuntimeError("ssm state shape %s" % (tuple(t.shape),))
    return torch.stack(out).float(), torch.stack(ssms).float(), how


def run_hf(c, w, x, y):
    import transformers
    from transformers import MambaConfig, MambaForCausalLM
    cfg = MambaConfig(vocab_size=c.vocab, hidden_size=c.d_model, state_size=c.d_state,
                      num_hidden_layers=c.n_layer, expand=c.expand, conv_kernel=c.d_conv,
                      time_step_rank=c.dt_rank, use_bias=False, use_conv_bias=True,
                      layer_norm_epsilon=c.eps, residual_in_fp32=True,
                      tie_word_embeddings=c.tie, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                      use_mambapy=False)
    model = MambaForCausalLM(cfg).float().eval()
    table = mr.tensor_table(c)
    named = {hf_name(n): model.get_parameter(hf_name(n)) for n, _, _ in table}
    uniq = {id(p) for p in model.parameters()}
    if len(uniq) != len(table) or {id(p) for p in named.values()} != uniq:
        raise SystemExit("HF parameters differ from mb_tensor_table: %s" % sorted(
            n for n, _ in model.named_parameters()))
    with torch.no_grad():
        for n, shape, _ in table:
            named[hf_name(n)].copy_(torch.from_numpy(w[n]))
    xt, yt = torch.tensor(x), torch.tensor(y)
    out = model(input_ids=xt, use_cache=False)
    logits = out.logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c.vocab), yt.reshape(-1))
    loss.backward()
    res = {"logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for n, _, _ in table:
        res["grad." + n] = named[hf_name(n)].grad.detach().clone()
    state_src = "HF cache"
    try:
        with torch.no_grad():
            o2 = model(input_ids=xt, use_cache=True)
            conv, ssm, how = hf_cache_states(o2.cache_params, c)
            print("  HF cache: %s" % how)
            res["state.conv"], res["state.ssm"] = conv, ssm
            if (o2.logits - logits).abs().max().item() > 1e-5:
                raise RuntimeError("HF logits with and without cache differ")
    except Exception as e:  # cache layout of another transformers version
        print("  HF cache states unavailable (%r): states from ref/mamba_ref.py" % e)
        r = run_ref(c, w, x, y)
        res["state.conv"], res["state.ssm"] = r["state.conv"], r["state.ssm"]
        state_src = "ref/mamba_ref.py float64"
    model.zero_grad()
    opt = torch.optim.AdamW(decay_groups([(n, named[hf_name(n)], d) for n, _, d in table]), lr=LR,
                            betas=BETAS, eps=EPS)
    losses = []
    for step in range(STEPS + 1):
        opt.zero_grad()
        lo = torch.nn.functional.cross_entropy(
            model(input_ids=xt, use_cache=False).logits.reshape(-1, c.vocab), yt.reshape(-1))
        losses.append(lo.item())
        if step < STEPS:
            lo.backward()
            opt.step()
    res["adamw.losses"] = torch.tensor(losses)
    src = "transformers %s MambaForCausalLM (slow path, CPU, float32; states: %s), torch %s" % (
        transformers.__version__, state_src, torch.__version__)
    return res, src


def compare(a, b):
    """Print the largest differences between two result dicts (HF vs ref cross-check)."""
    worst = 0.0
    for k in a:
        ta, tb = a[k].double(), b[k].double()
        scale = max(tb.abs().max().item(), 1e-30) if k.startswith("grad.") else 1.0
        e = (ta - tb).abs().max().item() / scale
        worst = max(worst, e) if k.startswith("grad.") else worst
        if not k.startswith("grad."):
            print("  %-14s max|diff| %.3g" % (k, e))
    print("  grads          max|diff|/max|ref| %.3g" % worst)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["ref", "hf"], required=True)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures"))
    ap.add_argument("--all", action="store_true",
                    help="with --backend ref: also write the HF configs from the ref module")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    for i, (name, (c, backend)) in enumerate(FIXTURES.items()):
        if backend != a.backend and not (a.all and a.backend == "ref"):
            continue
        w = mr.random_weights(c, seed=i + 1)
        x, y = batch(i)
        if a.backend == "hf":
            res, src = run_hf(c, w, x, y)
            print("%s: HF vs ref/mamba_ref.py (float64):" % name)
            compare(res, run_ref(c, w, x, y))
        else:
            res = run_ref(c, w, x, y)
            src = "ref/mamba_ref.py (float64), torch %s" % torch.__version__
        tensors = dict(w)
        tensors["x"] = x.astype(np.float32)
        tensors["targets"] = y.astype(np.float32)
        for k, v in res.items():
            tensors[k] = v.detach().double().numpy().astype(np.float32)
        meta = {k: str(v) for k, v in c.meta().items()}
        meta.update(source=src, batch=B, seq_len=L, adamw="lr %g betas %g,%g eps %g wd %g steps %d"
                    % (LR, BETAS[0], BETAS[1], EPS, WD, STEPS))
        path = os.path.join(a.out, name + ".safetensors")
        st.save(path, tensors, meta)
        print("%s: loss %.6f, adamw %.6f -> %.6f, %d bytes (%s)" % (
            name, res["loss"].item(), res["adamw.losses"][0].item(),
            res["adamw.losses"][-1].item(), os.path.getsize(path), src))


if __name__ == "__main__":
    main()
