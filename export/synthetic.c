// synthetic.c: writes a model file with Mistral Small 3.1's real shapes and random weights, directly
// in our format (no 48 GB checkpoint needed). For benchmarks and memory tests: the numbers it
// computes mean nothing, but every matrix has the size and type a converted q4 file has.
//
//   make export/synthetic
//   export/synthetic weights/synthetic-24b-q4.bin                # all 40 layers: about 14 GB
//   export/synthetic weights/synthetic-4l-q4.bin --layers 4      # the real layer shapes, 4 layers
//
// The weights are random q4/q8 blocks whose values have a standard deviation near 0.02, norms are 1.
// The tokenizer holds the real special tokens, the 256 byte tokens and filler tokens (not Tekken's
// vocabulary, which is not ours to ship), with Tekken's pattern.

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "../json.h"
#include "../model.h"
#include "../quant.h"

static uint64_t next_random(uint64_t *s) {  // xorshift64*
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

// Mistral Small 3.1's configuration (MODEL.md §1).
static Config real_config(int layers, int vision_layers) {
    Config c = {
        .dim = 5120, .n_layers = layers, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128, .hidden_dim = 32768,
        .vocab_size = 131072, .max_seq_len = 131072, .rope_theta = 1e9f, .norm_eps = 1e-5f,
        .vision_dim = 1024, .vision_layers = vision_layers, .vision_heads = 16, .vision_head_dim = 64,
        .vision_hidden_dim = 4096, .num_channels = 3, .patch_size = 14, .max_image_size = 1540,
        .spatial_merge_size = 2, .vision_rope_theta = 1e4f, .vision_norm_eps = 1e-5f,
        .n_special = 1000, .bos_id = 1, .eos_id = 2, .image_token_id = 10, .image_break_id = 12, .image_end_id = 13,
    };
    return c;
}

// Fills `bytes` of tensor data of one type with random blocks (norms: ones).
static void random_fill(uint8_t *out, uint32_t type, uint64_t n, int is_norm, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    if (type == TYPE_F32) {
        for (uint64_t i = 0; i < n; i++) {
            float v = is_norm ? 1.0f : ((int64_t)(next_random(&s) >> 40) - (1 << 23)) * (0.035f / (1 << 23));
            memcpy(out + 4 * i, &v, 4);
        }
    } else if (type == TYPE_F16) {
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = f32_to_fp16(((int64_t)(next_random(&s) >> 40) - (1 << 23)) * (0.035f / (1 << 23)));
            memcpy(out + 2 * i, &h, 2);
        }
    } else if (type == TYPE_Q8) {
        // 16-row groups (quant.h); every row is alike, so the group blocks are filled directly
        BlockQ8x16 *b = (BlockQ8x16 *)out;
        for (uint64_t i = 0; i < n / (QK8 * QROWS); i++) {
            for (int r = 0; r < QROWS; r++) b[i].d[r] = f32_to_fp16(0.02f / 73.0f);  // uniform int8: sd about 73
            for (int j = 0; j < QK8 * QROWS; j += 8) {
                uint64_t r = next_random(&s);
                memcpy(&b[i].q[j], &r, 8);
            }
        }
    } else {
        // w = d*sc*q - dmin*mn with q uniform in 0..15 (sd 4.6), sc and mn in 32..63, dmin = 7.5 d
        BlockQ4x16 *b = (BlockQ4x16 *)out;
        for (uint64_t i = 0; i < n / (QK4 * QROWS); i++) {
            for (int r = 0; r < QROWS; r++) {
                b[i].d[r] = f32_to_fp16(0.02f / 4.6f / 48.0f);
                b[i].dmin[r] = f32_to_fp16(7.5f * 0.02f / 4.6f / 48.0f);
                int v[16];
                for (int j = 0; j < 8; j++) v[j] = v[8 + j] = 32 + (int)(next_random(&s) >> 59);
                q4_pack_scales(v, b[i].scales[r]);
            }
            for (int j = 0; j < 128 * QROWS; j += 8) {
                uint64_t r = next_random(&s);
                memcpy(&b[i].qs[j], &r, 8);
            }
        }
    }
}

// Special tokens as mistral-common names them, then regular tokens: the 256 bytes, then fillers
// "\xff<rank>" (never produced from valid UTF-8 text, so tokenization stays byte-level and valid).
static int write_synthetic(const char *path, int layers, int vision_layers) {
    Config c = real_config(layers, vision_layers);
    int n = model_tensor_count(&c);
    TensorSpec *specs = malloc(n * sizeof *specs);
    TensorInfo *dir = calloc(n, sizeof *dir);
    uint32_t n_vocab = c.vocab_size - c.n_special, n_special = c.n_special;
    uint32_t *vocab_off = malloc(4ull * (n_vocab + 1)), *special_off = malloc(4ull * (n_special + 1));
    uint8_t *vocab = malloc(8ull * n_vocab);
    char *special = malloc(16ull * n_special);
    if (!specs || !dir || !vocab_off || !special_off || !vocab || !special) return fprintf(stderr, "out of memory\n"), 1;
    model_tensor_specs(&c, specs);
    for (int i = 0; i < n; i++) {
        memcpy(dir[i].name, specs[i].name, MAX_TENSOR_NAME);
        dir[i].type = storage_type(&specs[i], TYPE_Q4);
        dir[i].n_dims = specs[i].n_dims;
        memcpy(dir[i].shape, specs[i].shape, sizeof dir[i].shape);
    }
    uint32_t len = 0;
    for (uint32_t r = 0; r < n_vocab; r++) {
        vocab_off[r] = len;
        if (r < 256) vocab[len++] = (uint8_t)r;
        else len += sprintf((char *)vocab + len, "\xff%u", r);
    }
    vocab_off[n_vocab] = len;
    len = 0;
    for (uint32_t i = 0; i < n_special; i++) {
        special_off[i] = len;
        if (i < 20) len += sprintf(special + len, "%s", TEKKEN_BUILTIN_SPECIALS[i]);
        else len += sprintf(special + len, "<SPECIAL_%u>", i);
    }
    special_off[n_special] = len;

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return fprintf(stderr, "synthetic: %s: %s\n", tmp, strerror(errno)), 1;
    FileHeader h = {.n_tensors = n, .config = c};
    TokenizerHeader th = {n_vocab, n_special, strlen(TEKKEN_PATTERN), 0};
    int rc = write_model_head(f, &h, dir, &th, vocab_off, vocab, special_off, special, TEKKEN_PATTERN);
    fprintf(stderr, "%s: %d layers, %d vision layers, %.2f GB\n", path, layers, vision_layers, h.file_bytes / 1e9);
    size_t cap = 0;
    uint8_t *buf = NULL;
    for (int i = 0; i < n && rc == 0; i++) {
        if (dir[i].bytes > cap) {
            free(buf);
            buf = malloc(cap = dir[i].bytes);
            if (!buf) { rc = -1; break; }
        }
        random_fill(buf, dir[i].type, spec_elements(&specs[i]), specs[i].n_dims == 1, (uint64_t)i + 1);
        rc = write_padding(f, dir[i].offset) || fwrite(buf, 1, dir[i].bytes, f) != dir[i].bytes ? -1 : 0;
    }
    if (rc == 0) rc = write_padding(f, h.file_bytes);
    if (fclose(f) != 0) rc = -1;
    if (rc == 0 && rename(tmp, path) != 0) rc = -1;
    if (rc) {
        fprintf(stderr, "synthetic: %s: write failed: %s\n", path, strerror(errno));
        unlink(tmp);
    }
    free(buf); free(specs); free(dir); free(vocab_off); free(special_off); free(vocab); free(special);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int layers = 40, vision_layers = 24;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--layers") == 0 && i + 1 < argc) layers = atoi(argv[++i]);
        else if (strcmp(argv[i], "--vision-layers") == 0 && i + 1 < argc) vision_layers = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !path) path = argv[i];
        else path = NULL, i = argc;
    }
    if (!path || layers < 1 || layers > 40 || vision_layers < 0 || vision_layers > 24) {
        fprintf(stderr, "usage: synthetic OUTPUT_FILE [--layers 1..40] [--vision-layers 0..24]\n");
        return 2;
    }
    return write_synthetic(path, layers, vision_layers);
}
