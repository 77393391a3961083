#!/usr/bin/env python3
"""Writes the libFuzzer seed corpus of tests/fuzz/corpus/ (safetensors and config.json):
valid files of each dtype and flavour, and one example of each kind of malformed input that
the readers must reject. Deterministic; numpy only. Run: python3 ref/make_fuzz_corpus.py"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz", "corpus")


def raw_st(header, data=b"", pad=True):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def main():
    sd = os.path.join(ROOT, "safetensors")
    cd = os.path.join(ROOT, "config")
    os.makedirs(sd, exist_ok=True)
    os.makedirs(cd, exist_ok=True)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.standard_normal((4,)).astype(np.float32)
    st.save(os.path.join(sd, "valid_f32"), {"a": a, "b": b}, {"format": "pt"})
    st.save(os.path.join(sd, "valid_f16"), {"a": a, "b": b}, None, dtype="F16")
    st.save(os.path.join(sd, "valid_bf16"), {"a": a, "b": b}, {"k": "v", "x": "y"}, dtype="BF16")
    st.save(os.path.join(sd, "scalar_and_empty"),
            {"s": np.float32(1.5).reshape(()), "e": np.zeros((0, 3), np.float32)})
    # A whole tiny mamba_ssm checkpoint (d_model 4, 1 layer, d_state 2, K 2, R 1).
    d, di, n, k, r = 4, 8, 2, 2, 1
    t = {"backbone.embedding.weight": rng.standard_normal((256, d)),
         "backbone.layers.0.norm.weight": np.ones(d),
         "backbone.layers.0.norm.bias": np.zeros(d),
         "backbone.layers.0.mixer.in_proj.weight": rng.standard_normal((2 * di, d)),
         "backbone.layers.0.mixer.conv1d.weight": rng.standard_normal((di, 1, k)),
         "backbone.layers.0.mixer.conv1d.bias": rng.standard_normal(di),
         "backbone.layers.0.mixer.x_proj.weight": rng.standard_normal((r + 2 * n, di)),
         "backbone.layers.0.mixer.dt_proj.weight": rng.standard_normal((di, r)),
         "backbone.layers.0.mixer.dt_proj.bias": rng.standard_normal(di),
         "backbone.layers.0.mixer.A_log": np.log(np.tile(np.arange(1, n + 1), (di, 1))),
         "backbone.layers.0.mixer.D": np.ones(di),
         "backbone.layers.0.mixer.out_proj.weight": rng.standard_normal((d, di)),
         "backbone.norm_f.weight": np.ones(d), "backbone.norm_f.bias": np.zeros(d),
         "lm_head.weight": rng.standard_normal((256, d))}
    st.save(os.path.join(sd, "tiny_checkpoint"), {kk: v.astype(np.float32) for kk, v in t.items()},
            {"format": "pt"})
    t32 = {kk: v.astype(np.float32) for kk, v in t.items()}
    st.save(os.path.join(sd, "tiny_checkpoint_module"), {"module." + kk: v for kk, v in t32.items()})
    st.save(os.path.join(sd, "tiny_checkpoint_hf"),
            {kk.replace("embedding.", "embeddings."): v for kk, v in t32.items()})
    st.save(os.path.join(sd, "tiny_checkpoint_bf16"), t32, dtype="BF16")
    st.save(os.path.join(sd, "bad_tiny_checkpoint_missing"),
            {kk: v for kk, v in t32.items() if not kk.endswith("A_log")})
    st.save(os.path.join(sd, "bad_tiny_checkpoint_layer1"),
            dict(t32, **{kk.replace("layers.0", "layers.1"): v for kk, v in t32.items() if "layers.0" in kk}))
    nan = dict(t32)
    nan["backbone.layers.0.mixer.D"] = nan["backbone.layers.0.mixer.D"].copy()
    nan["backbone.layers.0.mixer.D"][3] = np.nan
    st.save(os.path.join(sd, "bad_tiny_checkpoint_nan"), nan)
    f4 = np.arange(4, dtype=np.float32).tobytes()
    bad = {
        "empty": b"",
        "len_only": struct.pack("<Q", 16),
        "mid_header": raw_st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})[:20],
        "mid_data": raw_st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, f4)[:-5],
        "header_beyond_file": struct.pack("<Q", 1 << 40) + b"{}",
        "offsets_out_of_range": raw_st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}, f4),
        "overlap": raw_st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, f4),
        "gap": raw_st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                       "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, f4[:12]),
        "unknown_dtype": raw_st({"a": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 16]}}, f4),
        "i64_dtype": raw_st({"a": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}, f4),
        "shape_mismatch": raw_st({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, f4),
        "negative_shape": raw_st({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, f4),
        "huge_shape": raw_st({"a": {"dtype": "F32", "shape": [1 << 62, 4], "data_offsets": [0, 16]}}, f4),
        "nan_value": raw_st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                            struct.pack("<ff", 1.0, float("nan"))),
        "inf_bf16": raw_st({"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}},
                           struct.pack("<HH", 0x3F80, 0x7F80)),
        "bad_metadata": raw_st({"__metadata__": {"k": 3}}),
        "not_json": struct.pack("<Q", 8) + b"{{{{{{{{",
        "duplicate_key": struct.pack("<Q", 96) + (
            b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
            b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}').ljust(96) + f4[:8],
    }
    for name, blob in bad.items():
        with open(os.path.join(sd, "bad_" + name), "wb") as f:
            f.write(blob)

    released = {"d_model": 1792, "n_layer": 48, "vocab_size": 256, "ssm_cfg": {"expand": 2},
                "rms_norm": False, "residual_in_fp32": True, "fused_add_norm": True,
                "pad_vocab_size_multiple": 8, "tie_embeddings": False}
    full = {"d_model": 20, "n_layer": 2, "vocab_size": 256,
            "ssm_cfg": {"d_state": 4, "d_conv": 4, "expand": 2, "dt_rank": "auto", "dt_min": 0.001,
                        "dt_max": 0.1, "dt_init_floor": 1e-4},
            "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
            "pad_vocab_size_multiple": 8, "tie_embeddings": True}
    hf = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "vocab_size": 256,
          "hidden_size": 12, "state_size": 16, "num_hidden_layers": 2, "layer_norm_epsilon": 1e-5,
          "expand": 2, "conv_kernel": 4, "use_bias": False, "use_conv_bias": True,
          "hidden_act": "silu", "initializer_range": 0.1, "time_step_rank": "auto",
          "time_step_scale": 1.0, "time_step_min": 0.001, "time_step_max": 0.1,
          "time_step_init_scheme": "random", "time_step_floor": 1e-4,
          "rescale_prenorm_residual": False, "residual_in_fp32": True,
          "tie_word_embeddings": True, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0,
          "use_cache": True, "torch_dtype": "float32"}
    cfgs = {
        "released_972m": released,
        "released_353m": dict(released, d_model=1024),
        "mamba_ssm_full": full,
        "hf_full": hf,
        "hf_minimal": {"model_type": "mamba", "hidden_size": 8, "num_hidden_layers": 1,
                       "vocab_size": 256},
        "bad_misspelled": dict(released, n_layers=48),
        "bad_missing_d_model": {k: v for k, v in released.items() if k != "d_model"},
        "bad_vocab": dict(released, vocab_size=50277),
        "bad_types": dict(released, d_model="1792"),
        "bad_hf_misspelled": dict(hf, hiden_size=12),
        "bad_mamba2": dict(full, ssm_cfg={"layer": "Mamba2"}),
        "bad_attn": dict(full, attn_layer_idx=[1]),
    }
    for name, c in cfgs.items():
        with open(os.path.join(cd, name + ".json"), "w") as f:
            json.dump(c, f, indent=1)
    with open(os.path.join(cd, "bad_truncated.json"), "w") as f:
        f.write(json.dumps(released)[:40])
    with open(os.path.join(cd, "bad_nested.json"), "w") as f:
        f.write("[" * 64 + "]" * 64)


if __name__ == "__main__":
    main()
