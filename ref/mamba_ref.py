"""A small, independent PyTorch implementation of the MambaByte model, written from
shared/spec/model.md (the mamba_ssm `MambaLMHeadModel` with a sequential selective scan, as
`selective_scan_ref`). Parameters live in a dict keyed by the mamba_ssm tensor names, so a
mamba_ssm-layout checkpoint loads directly. Works with torch 1.13 (Debian) and 2.x.

Used for: the LayerNorm parity fixtures (make_fixtures.py), a cross-check of the Hugging Face
fixtures, and loading our mamba_ssm export where mamba_ssm itself is not installed
(hf_roundtrip.py)."""
import json
import math

import numpy as np
import torch
import torch.nn.functional as F


class Cfg:
    def __init__(self, d_model, n_layer, d_state=16, d_conv=4, expand=2, dt_rank=0,
                 rms_norm=False, tie=False, eps=1e-5, vocab=256):
        self.d_model, self.n_layer, self.d_state, self.d_conv = d_model, n_layer, d_state, d_conv
        self.expand, self.rms_norm, self.tie, self.eps, self.vocab = expand, rms_norm, tie, eps, vocab
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank if dt_rank else math.ceil(d_model / 16)

    @staticmethod
    def from_mamba_ssm_json(path):
        """config.json in the mamba_ssm flavour (models/config_mamba.py)."""
        with open(path) as f:
            j = json.load(f)
        s = j.get("ssm_cfg", {}) or {}
        r = s.get("dt_rank", "auto")
        return Cfg(j["d_model"], j["n_layer"], s.get("d_state", 16), s.get("d_conv", 4),
                   s.get("expand", 2), 0 if r == "auto" else int(r), bool(j.get("rms_norm", True)),
                   bool(j.get("tie_embeddings", True)), 1e-5, j["vocab_size"])

    def meta(self):
        return {"d_model": self.d_model, "n_layer": self.n_layer, "d_state": self.d_state,
                "d_conv": self.d_conv, "expand": self.expand, "dt_rank": self.dt_rank,
                "d_inner": self.d_inner, "rms_norm": int(self.rms_norm),
                "tie_embeddings": int(self.tie), "norm_eps": self.eps, "vocab_size": self.vocab}


def tensor_table(c):
    """[(name, shape, weight_decay)] in the order of mb_tensor_table (src/params.c): the
    AdamW decay mask is 1 for in_proj, conv1d.weight, x_proj, dt_proj.weight, out_proj and an
    untied lm_head; 0 for the embedding, norms, biases, A_log and D."""
    d, di, n, k, r, v = c.d_model, c.d_inner, c.d_state, c.d_conv, c.dt_rank, c.vocab
    t = [("backbone.embedding.weight", (v, d), 0)]
    for i in range(c.n_layer):
        p = "backbone.layers.%d." % i
        t.append((p + "norm.weight", (d,), 0))
        if not c.rms_norm:
            t.append((p + "norm.bias", (d,), 0))
        t += [(p + "mixer.in_proj.weight", (2 * di, d), 1),
              (p + "mixer.conv1d.weight", (di, 1, k), 1),
              (p + "mixer.conv1d.bias", (di,), 0),
              (p + "mixer.x_proj.weight", (r + 2 * n, di), 1),
              (p + "mixer.dt_proj.weight", (di, r), 1),
              (p + "mixer.dt_proj.bias", (di,), 0),
              (p + "mixer.A_log", (di, n), 0),
              (p + "mixer.D", (di,), 0),
              (p + "mixer.out_proj.weight", (d, di), 1)]
    t.append(("backbone.norm_f.weight", (d,), 0))
    if not c.rms_norm:
        t.append(("backbone.norm_f.bias", (d,), 0))
    if not c.tie:
        t.append(("lm_head.weight", (v, d), 1))
    return t


def random_weights(c, seed):
    """Weights (numpy float32) with every parameter away from its trivial init, so that each
    one shapes the logits: norms 1 + noise with bias, A_log log(n+1) + noise, D 1 + noise,
    dt_proj.bias the inverse softplus of a log-uniform dt in [1e-3, 1e-1] (mamba_ssm)."""
    g = np.random.default_rng(seed)
    d, di, n, k, r = c.d_model, c.d_inner, c.d_state, c.d_conv, c.dt_rank
    u = lambda shape, b: g.uniform(-b, b, size=shape)  # noqa: E731
    w = {}
    for name, shape, _ in tensor_table(c):
        if name.endswith("embedding.weight"):
            a = g.normal(0.0, 0.3, shape)
        elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
            a = 1.0 + 0.2 * g.normal(size=shape)
        elif name.endswith("norm.bias") or name.endswith("norm_f.bias"):
            a = 0.1 * g.normal(size=shape)
        elif "in_proj" in name:
            a = u(shape, 1 / math.sqrt(d))
        elif "conv1d" in name:
            a = u(shape, 1 / math.sqrt(k))
        elif "x_proj" in name:
            a = u(shape, 1 / math.sqrt(di))
        elif "dt_proj.weight" in name:
            a = u(shape, r ** -0.5)
        elif "dt_proj.bias" in name:
            dt = np.exp(g.uniform(math.log(1e-3), math.log(1e-1), shape)).clip(min=1e-4)
            a = dt + np.log(-np.expm1(-dt))
        elif name.endswith("A_log"):
            a = np.log(np.tile(np.arange(1, n + 1, dtype=np.float64), (di, 1))) + 0.1 * g.normal(size=shape)
        elif name.endswith(".D"):
            a = 1.0 + 0.2 * g.normal(size=shape)
        elif "out_proj" in name:
            a = u(shape, 1 / math.sqrt(di))
        elif name == "lm_head.weight":
            a = u(shape, 1 / math.sqrt(d))
        else:
            raise KeyError(name)
        w[name] = np.asarray(a, dtype=np.float32)
    return w


def softplus(v):
    """mamba_ssm / torch softplus: v above 20 passes through."""
    return torch.where(v > 20, v, torch.log1p(torch.exp(torch.clamp(v, max=20))))


def norm(c, h, w, b):
    if c.rms_norm:
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + c.eps) * w
    mu = h.mean(-1, keepdim=True)
    var = (h - mu).pow(2).mean(-1, keepdim=True)
    return (h - mu) * torch.rsqrt(var + c.eps) * w + b


def mixer(c, P, p, u):
    """u (B, L, d) -> (out (B, L, d), conv window (B, K-1, Di) oldest first, ssm (B, Di, N))."""
    Bsz, L, _ = u.shape
    di, n, k, r = c.d_inner, c.d_state, c.d_conv, c.dt_rank
    xz = u @ P[p + "in_proj.weight"].t()                      # (B, L, 2Di)
    x, z = xz[..., :di], xz[..., di:]
    xpad = torch.cat([x.new_zeros(Bsz, k - 1, di), x], dim=1)  # zeros before t = 0
    cw = P[p + "conv1d.weight"].reshape(di, k)
    xc = P[p + "conv1d.bias"] + sum(cw[:, j] * xpad[:, j:j + L] for j in range(k))
    window = xpad[:, L:L + k - 1]                               # last K-1 conv inputs
    xs = xc * torch.sigmoid(xc)                                 # SiLU
    dbc = xs @ P[p + "x_proj.weight"].t()                       # (B, L, R+2N)
    dt_low, Bm, Cm = dbc[..., :r], dbc[..., r:r + n], dbc[..., r + n:]
    delta = softplus(dt_low @ P[p + "dt_proj.weight"].t() + P[p + "dt_proj.bias"])  # (B, L, Di)
    A = -torch.exp(P[p + "A_log"])                              # (Di, N)
    s = u.new_zeros(Bsz, di, n)
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, t, :, None] * A)                # ZOH for A
        dBx = delta[:, t, :, None] * Bm[:, t, None, :] * xs[:, t, :, None]  # delta*B*x
        s = dA * s + dBx
        ys.append((s * Cm[:, t, None, :]).sum(-1) + P[p + "D"] * xs[:, t])
    y = torch.stack(ys, dim=1) * (z * torch.sigmoid(z))
    return y @ P[p + "out_proj.weight"].t(), window, s


def forward(c, P, x):
    """x (B, L) long -> logits (B, L, V), [conv windows per layer], [ssm states per layer]."""
    h = P["backbone.embedding.weight"][x]
    residual = None
    convs, ssms = [], []
    for i in range(c.n_layer):
        p = "backbone.layers.%d." % i
        residual = h if residual is None else h + residual
        u = norm(c, residual, P[p + "norm.weight"], P.get(p + "norm.bias"))
        h, cw, s = mixer(c, P, p + "mixer.", u)
        convs.append(cw)
        ssms.append(s)
    hf = norm(c, h + residual, P["backbone.norm_f.weight"], P.get("backbone.norm_f.bias"))
    head = P["backbone.embedding.weight"] if c.tie else P["lm_head.weight"]
    return hf @ head.t(), convs, ssms


def params_from_numpy(w, dtype=torch.float64):
    return {k: torch.tensor(np.asarray(v), dtype=dtype, requires_grad=True) for k, v in w.items()}
