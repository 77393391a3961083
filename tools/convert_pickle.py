#!/usr/bin/env python3
"""Convert a PyTorch pickle checkpoint of a mamba_ssm MambaLMHeadModel (such as the released
MambaByte models, JunxiongWang/MambaByte_*: `pytorch_model.bin` + `config.json`, LayerNorm,
untied head, every key possibly prefixed `module.` by DDP) into a directory mambabyte loads:
OUT_DIR/model.safetensors + OUT_DIR/config.json (mamba_ssm flavour).

  python3 tools/convert_pickle.py SRC OUT_DIR [--config config.json] [--dtype f32|keep] [--force]

SRC is the pickle file or the folder holding pytorch_model.bin (and config.json).
- Keys: a leading `module.` (DDP) or `_orig_mod.` (torch.compile) is stripped; the mamba_ssm
  names are kept (`backbone.embedding.weight`, `backbone.layers.i.mixer.*`, `lm_head.weight`).
  Any other key, a missing tensor or a wrong shape is an error naming the tensor.
- Layers are counted from the keys: where config.json's n_layer disagrees (a released config
  says 56 for 48 layers of weights), the written config.json carries the counted number and a
  note is printed.
- --dtype f32 (default) stores fp32; keep stores each tensor's own dtype (f32, f16 or bf16).
- A tied config (tie_embeddings true) drops lm_head.weight when it equals the embedding and
  refuses one that differs.
Loading uses torch.load(weights_only=True) where torch supports it (no code runs from the
pickle); --unsafe-pickle allows a full unpickle for checkpoints that need it (trusted files
only). Needs torch and numpy only; the safetensors writer is built in. Exit 0 on success,
1 on error (message on stderr), 2 on bad usage.
"""
import argparse
import itertools
import json
import math
import os
import re
import struct
import sys
import tempfile

PREFIXES = ("module.", "_orig_mod.")
LAYER_RE = re.compile(r"^backbone\.layers\.(\d+)\.")
MAMBA_SSM_KEYS = {"d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx",
                  "attn_cfg", "rms_norm", "residual_in_fp32", "fused_add_norm",
                  "pad_vocab_size_multiple", "tie_embeddings"}


class ConvertError(Exception):
    pass


def load_state_dict(path, unsafe):
    import torch
    try:
        try:  # mmap (torch >= 2.1, zip format): the tensors are paged in as they are written
            obj = torch.load(path, map_location="cpu", weights_only=not unsafe, mmap=True)
        except (TypeError, RuntimeError, ValueError):
            obj = torch.load(path, map_location="cpu", weights_only=not unsafe)
    except TypeError:  # torch without weights_only (< 1.13)
        if not unsafe:
            raise ConvertError("%s: this torch (%s) cannot load pickles safely (no weights_only); "
                               "pass --unsafe-pickle if you trust the file" % (path, torch.__version__))
        obj = torch.load(path, map_location="cpu")
    except Exception as e:
        raise ConvertError("%s: cannot load the pickle: %s%s" % (
            path, e, "" if unsafe else " (a checkpoint with Python objects needs --unsafe-pickle; "
            "trusted files only)"))
    # Some trainers wrap the weights: {"model": {...}} / {"state_dict": {...}}.
    for k in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and k in obj and isinstance(obj[k], dict) and not torch.is_tensor(obj[k]):
            obj = obj[k]
    if not isinstance(obj, dict) or not obj:
        raise ConvertError("%s: expected a state dict of tensors, found %s" % (path, type(obj).__name__))
    return obj


def strip_prefixes(sd, path):
    out, stripped = {}, set()
    for k, v in sd.items():
        for p in PREFIXES:
            while k.startswith(p):
                k = k[len(p):]
                stripped.add(p)
        if k in out:
            raise ConvertError("%s: key %s appears twice once prefixes are stripped" % (path, k))
        out[k] = v
    return out, stripped


def expected_table(cfg, n_layer, d_model, rms_norm, tie):
    """(name, shape) of MambaLMHeadModel for these sizes (model.md, mb_tensor_table order)."""
    s = cfg.get("ssm_cfg") or {}
    n, k, e = s.get("d_state", 16), s.get("d_conv", 4), s.get("expand", 2)
    r = s.get("dt_rank", "auto")
    r = math.ceil(d_model / 16) if r == "auto" else int(r)
    di, v = e * d_model, cfg["vocab_size"]
    m = cfg.get("pad_vocab_size_multiple", 8) or 1
    v = v + (-v) % m
    t = [("backbone.embedding.weight", (v, d_model))]
    for i in range(n_layer):
        p = "backbone.layers.%d." % i
        t.append((p + "norm.weight", (d_model,)))
        if not rms_norm:
            t.append((p + "norm.bias", (d_model,)))
        t += [(p + "mixer.in_proj.weight", (2 * di, d_model)), (p + "mixer.conv1d.weight", (di, 1, k)),
              (p + "mixer.conv1d.bias", (di,)), (p + "mixer.x_proj.weight", (r + 2 * n, di)),
              (p + "mixer.dt_proj.weight", (di, r)), (p + "mixer.dt_proj.bias", (di,)),
              (p + "mixer.A_log", (di, n)), (p + "mixer.D", (di,)),
              (p + "mixer.out_proj.weight", (d_model, di))]
    t.append(("backbone.norm_f.weight", (d_model,)))
    if not rms_norm:
        t.append(("backbone.norm_f.bias", (d_model,)))
    if not tie:
        t.append(("lm_head.weight", (v, d_model)))
    return t


def out_dtype(t, dtype):
    """safetensors dtype name a tensor is written as."""
    import torch
    if dtype == "keep" and t.dtype == torch.bfloat16:
        return "BF16"
    if dtype == "keep" and t.dtype == torch.float16:
        return "F16"
    return "F32"


def tensor_bytes(t, dt):
    """torch tensor -> little-endian bytes of safetensors dtype dt."""
    import torch
    t = t.detach().cpu().contiguous()
    if dt == "BF16":
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if dt == "F16":
        return t.numpy().astype("<f2").tobytes()
    return t.to(torch.float32).numpy().astype("<f4").tobytes()


def atomic_write(path, chunks):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_safetensors(path, named, dtype):
    """Header first (sizes known from the shapes), then one tensor at a time, so the peak memory
    is the checkpoint plus one tensor; written to a temporary file and renamed into place."""
    size = {"F32": 4, "F16": 2, "BF16": 2}
    header = {"__metadata__": {"format": "pt", "converted_by": "tools/convert_pickle.py"}}
    off = 0
    for name, t in named:
        dt = out_dtype(t, dtype)
        n = size[dt] * t.numel()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    atomic_write(path, itertools.chain([struct.pack("<Q", len(h)), h],
                                       (tensor_bytes(t, header[name]["dtype"]) for name, t in named)))


def convert(src, out, config=None, dtype="f32", force=False, unsafe=False, log=print):
    import torch
    pkl = os.path.join(src, "pytorch_model.bin") if os.path.isdir(src) else src
    if config is None:
        config = os.path.join(os.path.dirname(os.path.abspath(pkl)), "config.json")
    if not os.path.isfile(pkl):
        raise ConvertError("%s: no such file" % pkl)
    try:
        with open(config) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ConvertError("%s: cannot read the config: %s" % (config, e))
    if not isinstance(cfg, dict):
        raise ConvertError("%s: not a JSON object" % config)
    if cfg.get("model_type") == "mamba" or "hidden_size" in cfg:
        raise ConvertError("%s: a Hugging Face config; this tool converts mamba_ssm pickles "
                           "(mambabyte loads HF safetensors checkpoints directly)" % config)
    for k in ("d_model", "n_layer", "vocab_size"):
        if k not in cfg:
            raise ConvertError("%s: field %s missing" % (config, k))
    unknown = sorted(set(cfg) - MAMBA_SSM_KEYS)
    if unknown:
        raise ConvertError("%s: unknown field(s) %s for a mamba_ssm MambaConfig" % (config, ", ".join(unknown)))
    sd, stripped = strip_prefixes(load_state_dict(pkl, unsafe), pkl)
    if stripped:
        log("stripped key prefix %s" % ", ".join(sorted(stripped)))
    bad = [k for k, v in sd.items() if not torch.is_tensor(v)]
    if bad:
        raise ConvertError("%s: entry %s is not a tensor" % (pkl, bad[0]))
    layers = {int(m.group(1)) for m in map(LAYER_RE.match, sd) if m}
    n_layer = len(layers)
    if layers != set(range(n_layer)):
        raise ConvertError("%s: layer indices are not 0..%d: %s" % (pkl, n_layer - 1, sorted(layers)))
    if n_layer != cfg["n_layer"]:
        log("note: %s says n_layer %d but the weights hold %d layers; writing n_layer %d"
            % (config, cfg["n_layer"], n_layer, n_layer))
    emb = sd.get("backbone.embedding.weight")
    if emb is None:
        raise ConvertError("%s: tensor backbone.embedding.weight missing" % pkl)
    d_model = int(emb.shape[1])
    if d_model != cfg["d_model"]:
        raise ConvertError("%s: backbone.embedding.weight has d_model %d but %s says %d"
                           % (pkl, d_model, config, cfg["d_model"]))
    rms = bool(cfg.get("rms_norm", True))
    tie = bool(cfg.get("tie_embeddings", True))
    if tie and "lm_head.weight" in sd:
        if torch.equal(sd["lm_head.weight"], emb):
            del sd["lm_head.weight"]
        else:
            raise ConvertError("%s: config %s ties the embeddings but lm_head.weight differs from "
                               "backbone.embedding.weight" % (pkl, config))
    table = expected_table(cfg, n_layer, d_model, rms, tie)
    names = {n for n, _ in table}
    missing = [n for n, _ in table if n not in sd]
    extra = sorted(set(sd) - names)
    if missing:
        raise ConvertError("%s: tensor %s missing (%d missing in all)" % (pkl, missing[0], len(missing)))
    if extra:
        raise ConvertError("%s: unexpected tensor %s (%d unexpected in all; rms_norm=%s, "
                           "tie_embeddings=%s in %s)" % (pkl, extra[0], len(extra), rms, tie, config))
    for n, shape in table:
        if tuple(sd[n].shape) != tuple(shape):
            raise ConvertError("%s: tensor %s has shape %s, the config implies %s"
                               % (pkl, n, tuple(sd[n].shape), tuple(shape)))
        if not torch.isfinite(sd[n].float()).all():
            raise ConvertError("%s: tensor %s holds NaN or inf" % (pkl, n))
    os.makedirs(out, exist_ok=True)
    st_path, cfg_path = os.path.join(out, "model.safetensors"), os.path.join(out, "config.json")
    if not force and (os.path.exists(st_path) or os.path.exists(cfg_path)):
        raise ConvertError("%s already holds model.safetensors or config.json (use --force)" % out)
    write_safetensors(st_path, [(n, sd[n]) for n, _ in table], dtype)
    cfg = dict(cfg, n_layer=n_layer)
    atomic_write(cfg_path, [(json.dumps(cfg, indent=2) + "\n").encode()])
    n_par = sum(sd[n].numel() for n, _ in table)
    log("wrote %s and %s: %d tensors, %d parameters, %d layers, d_model %d, %s, %s head"
        % (st_path, cfg_path, len(table), n_par, n_layer, d_model,
           "RMSNorm" if rms else "LayerNorm", "tied" if tie else "untied"))
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="pytorch_model.bin, or the folder holding it")
    ap.add_argument("out", help="output folder (model.safetensors + config.json)")
    ap.add_argument("--config", help="config.json (default: beside the pickle)")
    ap.add_argument("--dtype", choices=["f32", "keep"], default="f32")
    ap.add_argument("--force", action="store_true", help="overwrite files in OUT")
    ap.add_argument("--unsafe-pickle", action="store_true",
                    help="full unpickle (runs code from the file: trusted files only)")
    a = ap.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("convert_pickle: PyTorch is needed to read pickles (pip install torch, or Debian "
              "python3-torch)", file=sys.stderr)
        return 1
    try:
        convert(a.src, a.out, a.config, a.dtype, a.force, a.unsafe_pickle)
    except ConvertError as e:
        print("convert_pickle: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
