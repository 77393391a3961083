/* libFuzzer target for the config.json parser (src/io/config_json.h): parse the input; when it
 * is accepted, serialise the config in both flavours and parse each back, which must succeed
 * and give the same sizes (round trip; HF only for RMSNorm configs, as HF has no LayerNorm). Seed
 * corpus: tests/fuzz/corpus/config. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/config_json.h"
#include "mambabyte.h"

static void same_or_abort(const mb_config *a, const mb_config *b) {
    if (a->d_model != b->d_model || a->n_layer != b->n_layer || a->d_state != b->d_state ||
        a->d_conv != b->d_conv || a->expand != b->expand || a->dt_rank != b->dt_rank ||
        a->d_inner != b->d_inner || a->rms_norm != b->rms_norm ||
        a->tie_embeddings != b->tie_embeddings)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mb_config c;
    mb_config_flavour fl;
    if (mb_config_json_parse((const char *)data, (int64_t)size, "fuzz.json", &c, &fl) != 0) {
        if (!mb_last_error()[0]) abort(); /* every failure must say why */
        return 0;
    }
    for (int k = 0; k < 2; k++) {
        mb_config_flavour want = k ? MB_CFG_HF : MB_CFG_MAMBA_SSM;
        if (want == MB_CFG_HF && !c.rms_norm) continue; /* HF Mamba is RMSNorm only */
        char *s = mb_config_json_string(&c, want);
        if (!s) return 0; /* out of memory only */
        mb_config back;
        mb_config_flavour got;
        if (mb_config_json_parse(s, (int64_t)strlen(s), "roundtrip.json", &back, &got) != 0)
            abort();
        if (got != want) abort();
        same_or_abort(&c, &back);
        free(s);
    }
    return 0;
}
