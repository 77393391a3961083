/* mb_dump_logits CKPT INPUT OUT.safetensors: run our CPU forward (mb_forward) of the checkpoint
 * CKPT over the bytes of the file INPUT (one sequence; the last byte is only a target) and
 * write `logits` (1, L, 256), `x` (1, L) and `loss` (mean cross-entropy, nats) as F32 to
 * OUT.safetensors. Used by ref/hf_roundtrip.py to compare our numbers with Hugging Face
 * transformers / a PyTorch model reading our export. Exit 0 on success, 1 on error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "mambabyte.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: mb_dump_logits CKPT INPUT OUT.safetensors\n");
        return 2;
    }
    FILE *fp = fopen(argv[2], "rb");
    if (!fp) {
        perror(argv[2]);
        return 1;
    }
    static uint8_t buf[1 << 16];
    int64_t n = (int64_t)fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    if (n < 2) {
        fprintf(stderr, "%s: need at least 2 bytes\n", argv[2]);
        return 1;
    }
    int64_t L = n - 1;
    mb_model m;
    if (mb_checkpoint_load(argv[1], &m, NULL)) {
        fprintf(stderr, "%s\n", mb_last_error());
        return 1;
    }
    mb_acts *a = mb_acts_create(&m.cfg, 1, L);
    float *logits = malloc((size_t)L * MB_VOCAB * sizeof(float));
    float *xf = malloc((size_t)L * sizeof(float));
    if (!a || !logits || !xf) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    float loss = mb_forward(&m, a, buf, buf + 1, logits);
    for (int64_t i = 0; i < L; i++)
        xf[i] = buf[i];
    mb_st_wtensor t[3] = {
        {"logits", 3, {1, L, MB_VOCAB}, logits}, {"x", 2, {1, L}, xf}, {"loss", 1, {1}, &loss}};
    const char *meta[] = {"source", "mambabyte mb_forward (CPU, fp32)"};
    int rc = mb_st_write(argv[3], t, 3, meta, 1, MB_DT_F32);
    if (rc)
        fprintf(stderr, "%s\n", mb_last_error());
    else
        printf("%s: L=%lld loss %.6f\n", argv[3], (long long)L, (double)loss);
    free(logits);
    free(xf);
    mb_acts_free(a);
    mb_model_free(&m);
    return rc ? 1 : 0;
}
