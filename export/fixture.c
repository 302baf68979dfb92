/* fixture.c: writes a tiny random Mistral Small 3.1 checkpoint (Mistral3ForConditionalGeneration: Mistral
 * text decoder, Pixtral vision encoder, patch-merger projector) in BOTH official layouts from the same
 * random weights, plus a real Tekken v7 tokenizer file. No Python, no network: `make demo` builds this,
 * generates a fixture, converts it and runs it.
 *
 *   cc -O2 -std=c11 export/fixture.c -o export/fixture -lm
 *   export/fixture OUTDIR [--seed N] [--dim 256] [--layers 2] [--heads 4] [--kv-heads 2] [--head-dim 64]
 *                         [--hidden 768] [--vocab-size 2048] [--extra-vocab 16] [--rope-theta 1e9]
 *                         [--vision-dim 64] [--vision-layers 2] [--vision-heads 2] [--vision-head-dim 32]
 *                         [--vision-hidden 128] [--vision-rope-theta 1e4]
 *
 * Output (see docs/MODEL.md §2 for the layouts, §3 for the q/k permutation, §7 for tekken.json):
 *   OUTDIR/native/  params.json, consolidated.safetensors (native names, interleaved q/k rows),
 *                   tekken.json, SYSTEM_PROMPT.txt
 *   OUTDIR/hf/      config.json, model.safetensors.index.json, model-0000{1,2}-of-00002.safetensors
 *                   (names language_model.model.*, language_model.lm_head.weight, vision_tower.*,
 *                   multi_modal_projector.*; q/k rows permuted for rotate-half RoPE exactly as
 *                   transformers' convert_mistral3_weights_to_hf.py permute_for_rope does), tekken.json
 *
 * Every tensor is BF16 (round-to-nearest-even), no biases, exactly the tensor set of MODEL.md §2.1. The
 * defaults keep the reduction dimension of every text matrix a multiple of 256 (dim 256, heads x head_dim
 * = 256, hidden 768), which the q4 format needs. The weights come from a fixed-seed PRNG (xoshiro256**),
 * so the same flags always give byte-identical files.
 *
 * tekken.json: 1000 special tokens, then a regular vocabulary whose ranks 0..255 are the single bytes and
 * whose other entries come from a small byte-level BPE trained on the paragraph in TRAINING_TEXT (pieces
 * split like Tekken's pre-tokenizer, restricted to what that text contains). It lists --extra-vocab more
 * entries than default_vocab_size - 1000, as the released file does, so a reader must truncate.
 *
 * Errors (bad flag, cannot create or write a file): one line on stderr, exit status 1. Every file is
 * written under a temporary name and renamed into place.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// ----------------------------------------------------------------------------------------------------
// configuration

typedef struct {
    uint64_t seed;
    int dim;          // text model width (params.json dim, config.json hidden_size)
    int n_layers;     // text decoder layers
    int n_heads;      // query heads
    int n_kv_heads;   // key/value heads (GQA)
    int head_dim;     // per-head width; n_heads*head_dim need not equal dim
    int hidden_dim;   // SwiGLU feed-forward width
    int vocab_size;   // 1000 special + (vocab_size - 1000) regular tokens
    int extra_vocab;  // tekken.json entries listed beyond default_vocab_size - 1000
    double rope_theta;
    int v_dim;        // vision width (hidden_size)
    int v_layers;
    int v_heads;
    int v_head_dim;   // must equal v_dim / v_heads (Pixtral derives it)
    int v_hidden;     // vision feed-forward width
    double v_rope_theta;
} Config;

#define N_SPECIAL 1000
#define PATCH 14
#define MERGE 2
#define IMAGE_SIZE 1540
#define NORM_EPS "1e-05"

static char err_msg[512];  // the one-line error main prints; set by fail()

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return -1;
}

// ----------------------------------------------------------------------------------------------------
// PRNG: xoshiro256** seeded by splitmix64, normals by Box-Muller

typedef struct {
    uint64_t s[4];
    int has_spare;
    double spare;
} Rng;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void rng_seed(Rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
    r->has_spare = 0;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return result;
}

static double rng_uniform(Rng *r) {  // (0, 1]
    return ((double)(rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

static double rng_normal(Rng *r) {
    if (r->has_spare) { r->has_spare = 0; return r->spare; }
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1)), ang = 6.283185307179586 * u2;
    r->spare = rad * sin(ang);
    r->has_spare = 1;
    return rad * cos(ang);
}

static uint16_t f32_to_bf16(float f) {  // round to nearest even
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((bits >> 16) | 0x40);  // NaN stays NaN
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

// ----------------------------------------------------------------------------------------------------
// the tensor set (MODEL.md §2.1), values generated in native order

typedef struct {
    char native[128];
    char hf[160];
    int ndim;
    int64_t shape[4];
    int64_t numel;
    int rope_heads;    // > 0: q/k matrix whose HF rows are permuted with this many heads (§3)
    uint16_t *data;    // BF16, native row order
} Tensor;

typedef struct {
    Tensor *t;
    int n, cap;
} TensorList;

enum { INIT_NORMAL, INIT_NORM_WEIGHT };

static Tensor *add_tensor(TensorList *tl, Rng *rng, const char *native, const char *hf, int ndim,
                          const int64_t *shape, int init, double std, int rope_heads) {
    if (tl->n == tl->cap) {
        int cap = tl->cap ? 2 * tl->cap : 64;
        Tensor *t = realloc(tl->t, (size_t)cap * sizeof *t);
        if (!t) { fail("out of memory"); return NULL; }
        tl->t = t;
        tl->cap = cap;
    }
    Tensor *t = &tl->t[tl->n];
    memset(t, 0, sizeof *t);
    snprintf(t->native, sizeof t->native, "%s", native);
    snprintf(t->hf, sizeof t->hf, "%s", hf);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) { t->shape[i] = shape[i]; t->numel *= shape[i]; }
    t->rope_heads = rope_heads;
    t->data = malloc((size_t)t->numel * sizeof *t->data);
    if (!t->data) { fail("out of memory for %s", native); return NULL; }
    for (int64_t i = 0; i < t->numel; i++) {
        double v = init == INIT_NORM_WEIGHT ? 1.0 + 0.1 * rng_normal(rng) : std * rng_normal(rng);
        t->data[i] = f32_to_bf16((float)v);
    }
    tl->n++;
    return t;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define MATRIX(nat, hf, rows, cols, std, rope) \
    add_tensor(tl, rng, nat, hf, 2, SHAPE(rows, cols), INIT_NORMAL, std, rope)
#define NORMW(nat, hf, n) add_tensor(tl, rng, nat, hf, 1, SHAPE(n), INIT_NORM_WEIGHT, 0.0, 0)

// Weight scales: matrices std 1/sqrt(fan_in) so activations stay O(1); the lm_head 2/sqrt(dim) gives
// logits of std ~2 (max ~8), like the golden fixture; token embeddings std 0.02 and a small patch
// convolution, so the first RMSNorm's and ln_pre's eps matter; norm weights 1 + 0.1 N(0,1).
static int make_tensors(const Config *c, TensorList *tl) {
    Rng rng_state, *rng = &rng_state;
    rng_seed(rng, c->seed);
    char a[128], b[160];
    double s_dim = 1.0 / sqrt(c->dim), s_attn = 1.0 / sqrt((double)c->n_heads * c->head_dim);
    double s_hid = 1.0 / sqrt(c->hidden_dim);
    int64_t q_rows = (int64_t)c->n_heads * c->head_dim, kv_rows = (int64_t)c->n_kv_heads * c->head_dim;
#define T(x) if (!(x)) return -1
    T(add_tensor(tl, rng, "tok_embeddings.weight", "language_model.model.embed_tokens.weight", 2,
                 SHAPE(c->vocab_size, c->dim), INIT_NORMAL, 0.02, 0));
    for (int l = 0; l < c->n_layers; l++) {
        const char *hp = "language_model.model.layers";
#define NAMES(nat, hf) (snprintf(a, sizeof a, "layers.%d.%s.weight", l, nat), \
                        snprintf(b, sizeof b, "%s.%d.%s.weight", hp, l, hf))
        NAMES("attention_norm", "input_layernorm");          T(NORMW(a, b, c->dim));
        NAMES("attention.wq", "self_attn.q_proj");           T(MATRIX(a, b, q_rows, c->dim, s_dim, c->n_heads));
        NAMES("attention.wk", "self_attn.k_proj");           T(MATRIX(a, b, kv_rows, c->dim, s_dim, c->n_kv_heads));
        NAMES("attention.wv", "self_attn.v_proj");           T(MATRIX(a, b, kv_rows, c->dim, s_dim, 0));
        NAMES("attention.wo", "self_attn.o_proj");           T(MATRIX(a, b, c->dim, q_rows, s_attn, 0));
        NAMES("ffn_norm", "post_attention_layernorm");       T(NORMW(a, b, c->dim));
        NAMES("feed_forward.w1", "mlp.gate_proj");           T(MATRIX(a, b, c->hidden_dim, c->dim, s_dim, 0));
        NAMES("feed_forward.w3", "mlp.up_proj");             T(MATRIX(a, b, c->hidden_dim, c->dim, s_dim, 0));
        NAMES("feed_forward.w2", "mlp.down_proj");           T(MATRIX(a, b, c->dim, c->hidden_dim, s_hid, 0));
#undef NAMES
    }
    T(NORMW("norm.weight", "language_model.model.norm.weight", c->dim));
    T(MATRIX("output.weight", "language_model.lm_head.weight", c->vocab_size, c->dim, 2.0 * s_dim, 0));

    int vd = c->v_dim;
    double sv = 1.0 / sqrt(vd), sv_hid = 1.0 / sqrt(c->v_hidden), s_patch = 0.03 / sqrt(3.0 * PATCH * PATCH);
    T(add_tensor(tl, rng, "vision_encoder.patch_conv.weight", "vision_tower.patch_conv.weight", 4,
                 SHAPE(vd, 3, PATCH, PATCH), INIT_NORMAL, s_patch, 0));
    T(NORMW("vision_encoder.ln_pre.weight", "vision_tower.ln_pre.weight", vd));
    for (int l = 0; l < c->v_layers; l++) {
#define NAMES(nat, hf) (snprintf(a, sizeof a, "vision_encoder.transformer.layers.%d.%s.weight", l, nat), \
                        snprintf(b, sizeof b, "vision_tower.transformer.layers.%d.%s.weight", l, hf))
        NAMES("attention_norm", "attention_norm");            T(NORMW(a, b, vd));
        NAMES("attention.wq", "attention.q_proj");            T(MATRIX(a, b, vd, vd, sv, c->v_heads));
        NAMES("attention.wk", "attention.k_proj");            T(MATRIX(a, b, vd, vd, sv, c->v_heads));
        NAMES("attention.wv", "attention.v_proj");            T(MATRIX(a, b, vd, vd, sv, 0));
        NAMES("attention.wo", "attention.o_proj");            T(MATRIX(a, b, vd, vd, sv, 0));
        NAMES("ffn_norm", "ffn_norm");                        T(NORMW(a, b, vd));
        NAMES("feed_forward.w1", "feed_forward.gate_proj");   T(MATRIX(a, b, c->v_hidden, vd, sv, 0));
        NAMES("feed_forward.w3", "feed_forward.up_proj");     T(MATRIX(a, b, c->v_hidden, vd, sv, 0));
        NAMES("feed_forward.w2", "feed_forward.down_proj");   T(MATRIX(a, b, vd, c->v_hidden, sv_hid, 0));
#undef NAMES
    }
    T(NORMW("pre_mm_projector_norm.weight", "multi_modal_projector.norm.weight", vd));
    T(MATRIX("patch_merger.merging_layer.weight", "multi_modal_projector.patch_merger.merging_layer.weight",
             vd, 4 * vd, 1.0 / sqrt(4.0 * vd), 0));
    T(MATRIX("vision_language_adapter.w_in.weight", "multi_modal_projector.linear_1.weight", c->dim, vd, sv, 0));
    T(MATRIX("vision_language_adapter.w_out.weight", "multi_modal_projector.linear_2.weight", c->dim, c->dim,
             s_dim, 0));
#undef T
    return 0;
}

// ----------------------------------------------------------------------------------------------------
// growable text buffer and atomic file writes

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} Buf;

static void buf_add(Buf *b, const void *data, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void buf_printf(Buf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof tmp) { b->oom = 1; return; }
    buf_add(b, tmp, (size_t)n);
}

// JSON string literal, escaped as Python's json.dumps(ensure_ascii=False) does
static void buf_json_string(Buf *b, const uint8_t *s, size_t n) {
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = s[i];
        switch (ch) {
        case '"': buf_add(b, "\\\"", 2); break;
        case '\\': buf_add(b, "\\\\", 2); break;
        case '\n': buf_add(b, "\\n", 2); break;
        case '\r': buf_add(b, "\\r", 2); break;
        case '\t': buf_add(b, "\\t", 2); break;
        case '\b': buf_add(b, "\\b", 2); break;
        case '\f': buf_add(b, "\\f", 2); break;
        default:
            if (ch < 0x20) buf_printf(b, "\\u%04x", ch);
            else buf_add(b, &ch, 1);
        }
    }
    buf_add(b, "\"", 1);
}

// double as Python's repr() writes it: shortest round-trip form, ".0" on integral values
static void buf_double(Buf *b, double v) {
    char tmp[64];
    if (v == floor(v) && fabs(v) < 1e16) { buf_printf(b, "%.1f", v); return; }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    buf_printf(b, "%s", tmp);
}

typedef struct {
    FILE *f;
    char path[4096], tmp[4200];
} OutFile;

static int out_open(OutFile *o, const char *dir, const char *name) {
    snprintf(o->path, sizeof o->path, "%s/%s", dir, name);
    snprintf(o->tmp, sizeof o->tmp, "%s/.%s.tmp", dir, name);
    o->f = fopen(o->tmp, "wb");
    if (!o->f) return fail("cannot create %s: %s", o->tmp, strerror(errno));
    return 0;
}

static int out_write(OutFile *o, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, o->f) != n) return fail("cannot write %s: %s", o->tmp, strerror(errno));
    return 0;
}

static int out_close(OutFile *o, int ok) {  // ok: rename into place; else discard
    int bad = fclose(o->f) != 0;
    o->f = NULL;
    if (ok && bad) { remove(o->tmp); return fail("cannot write %s: %s", o->tmp, strerror(errno)); }
    if (!ok) { remove(o->tmp); return -1; }
    if (rename(o->tmp, o->path) != 0) {
        remove(o->tmp);
        return fail("cannot rename %s to %s: %s", o->tmp, o->path, strerror(errno));
    }
    return 0;
}

static int write_buf(const char *dir, const char *name, Buf *b) {
    if (b->oom) return fail("out of memory writing %s", name);
    OutFile o;
    if (out_open(&o, dir, name)) return -1;
    int rc = out_write(&o, b->p, b->n);
    return out_close(&o, rc == 0);
}

static int make_dirs(const char *path) {  // mkdir -p
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp) return fail("bad output directory '%s'", path);
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != 0) continue;
        char saved = tmp[i];
        tmp[i] = 0;
        struct stat st;
        if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
            return fail("cannot create directory %s: %s", tmp, strerror(errno));
        if (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode)) return fail("%s is not a directory", tmp);
        tmp[i] = saved;
    }
    return 0;
}

// ----------------------------------------------------------------------------------------------------
// safetensors writer (MODEL.md §2): u64 LE header length, JSON header padded with spaces to 8 bytes,
// then the raw little-endian data in header order

// HF rows of a q/k matrix: row h*hd + t*hd/2 + i holds native row h*hd + 2*i + t (§3)
static int64_t hf_source_row(const Tensor *t, int64_t hf_row) {
    int64_t hd = t->shape[0] / t->rope_heads, h = hf_row / hd, r = hf_row % hd;
    int64_t tt = r / (hd / 2), i = r % (hd / 2);
    return h * hd + 2 * i + tt;
}

static int write_safetensors(const char *dir, const char *name, Tensor **ts, int n, int hf) {
    Buf h = {0};
    buf_add(&h, "{", 1);
    if (hf) buf_printf(&h, "\"__metadata__\":{\"format\":\"pt\"},");
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const Tensor *t = ts[i];
        const char *tname = hf ? t->hf : t->native;
        buf_json_string(&h, (const uint8_t *)tname, strlen(tname));
        buf_printf(&h, ":{\"dtype\":\"BF16\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) buf_printf(&h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        uint64_t bytes = (uint64_t)t->numel * 2;
        buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}%s", (unsigned long long)offset,
                   (unsigned long long)(offset + bytes), i + 1 < n ? "," : "");
        offset += bytes;
    }
    buf_add(&h, "}", 1);
    while (!h.oom && h.n % 8) buf_add(&h, " ", 1);
    if (h.oom) { free(h.p); return fail("out of memory"); }

    OutFile o;
    if (out_open(&o, dir, name)) { free(h.p); return -1; }
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    int rc = out_write(&o, len, 8);
    if (!rc) rc = out_write(&o, h.p, h.n);
    free(h.p);
    uint8_t *row = NULL;
    for (int i = 0; i < n && !rc; i++) {  // row by row, little-endian regardless of host
        const Tensor *t = ts[i];
        int64_t cols = t->numel / t->shape[0];
        uint8_t *r2 = realloc(row, (size_t)cols * 2);
        if (!r2) { rc = fail("out of memory"); break; }
        row = r2;
        for (int64_t r = 0; r < t->shape[0] && !rc; r++) {
            const uint16_t *src = t->data + (hf && t->rope_heads ? hf_source_row(t, r) : r) * cols;
            for (int64_t j = 0; j < cols; j++) { row[2 * j] = (uint8_t)(src[j] & 0xFF); row[2 * j + 1] = (uint8_t)(src[j] >> 8); }
            rc = out_write(&o, row, (size_t)cols * 2);
        }
    }
    free(row);
    return out_close(&o, rc == 0);
}

// ----------------------------------------------------------------------------------------------------
// config files, shaped like the golden fixture's

static int write_params_json(const char *dir, const Config *c) {
    Buf b = {0};
    buf_printf(&b, "{\n    \"dim\": %d,\n    \"n_layers\": %d,\n    \"head_dim\": %d,\n    \"hidden_dim\": %d,\n"
               "    \"n_heads\": %d,\n    \"n_kv_heads\": %d,\n    \"rope_theta\": ",
               c->dim, c->n_layers, c->head_dim, c->hidden_dim, c->n_heads, c->n_kv_heads);
    buf_double(&b, c->rope_theta);
    buf_printf(&b, ",\n    \"norm_eps\": " NORM_EPS ",\n    \"vocab_size\": %d,\n    \"vision_encoder\": {\n"
               "        \"hidden_size\": %d,\n        \"num_channels\": 3,\n        \"max_image_size\": %d,\n"
               "        \"patch_size\": %d,\n        \"rope_theta\": ",
               c->vocab_size, c->v_dim, IMAGE_SIZE, PATCH);
    buf_double(&b, c->v_rope_theta);
    buf_printf(&b, ",\n        \"intermediate_size\": %d,\n        \"num_hidden_layers\": %d,\n"
               "        \"num_attention_heads\": %d,\n        \"adapter_bias\": false,\n"
               "        \"mm_projector_id\": \"patch_merge\",\n        \"spatial_merge_size\": %d,\n"
               "        \"add_pre_mm_projector_layer_norm\": true,\n        \"image_token_id\": 10,\n"
               "        \"image_break_token_id\": 12,\n        \"image_end_token_id\": 13,\n"
               "        \"image_size\": %d\n    }\n}\n",
               c->v_hidden, c->v_layers, c->v_heads, MERGE, IMAGE_SIZE);
    int rc = write_buf(dir, "params.json", &b);
    free(b.p);
    return rc;
}

static int write_config_json(const char *dir, const Config *c) {
    Buf b = {0};
    buf_printf(&b, "{\n  \"architectures\": [\n    \"Mistral3ForConditionalGeneration\"\n  ],\n"
               "  \"image_token_index\": 10,\n  \"model_type\": \"mistral3\",\n"
               "  \"multimodal_projector_bias\": false,\n  \"projector_hidden_act\": \"gelu\",\n"
               "  \"spatial_merge_size\": %d,\n  \"text_config\": {\n    \"attention_dropout\": 0.0,\n"
               "    \"head_dim\": %d,\n    \"hidden_act\": \"silu\",\n    \"hidden_size\": %d,\n"
               "    \"initializer_range\": 0.02,\n    \"intermediate_size\": %d,\n"
               "    \"max_position_embeddings\": 131072,\n    \"model_type\": \"mistral\",\n"
               "    \"num_attention_heads\": %d,\n    \"num_hidden_layers\": %d,\n"
               "    \"num_key_value_heads\": %d,\n    \"rms_norm_eps\": " NORM_EPS ",\n    \"rope_theta\": ",
               MERGE, c->head_dim, c->dim, c->hidden_dim, c->n_heads, c->n_layers, c->n_kv_heads);
    buf_double(&b, c->rope_theta);
    buf_printf(&b, ",\n    \"sliding_window\": null,\n    \"use_cache\": true,\n    \"vocab_size\": %d\n  },\n"
               "  \"torch_dtype\": \"bfloat16\",\n  \"transformers_version\": \"4.50.0.dev0\",\n"
               "  \"vision_config\": {\n    \"attention_dropout\": 0.0,\n    \"head_dim\": %d,\n"
               "    \"hidden_act\": \"silu\",\n    \"hidden_size\": %d,\n    \"image_size\": %d,\n"
               "    \"initializer_range\": 0.02,\n    \"intermediate_size\": %d,\n"
               "    \"model_type\": \"pixtral\",\n    \"num_attention_heads\": %d,\n    \"num_channels\": 3,\n"
               "    \"num_hidden_layers\": %d,\n    \"patch_size\": %d,\n    \"rope_theta\": ",
               c->vocab_size, c->v_head_dim, c->v_dim, IMAGE_SIZE, c->v_hidden, c->v_heads, c->v_layers, PATCH);
    buf_double(&b, c->v_rope_theta);
    buf_printf(&b, "\n  },\n  \"vision_feature_layer\": -1\n}\n");
    int rc = write_buf(dir, "config.json", &b);
    free(b.p);
    return rc;
}

static int cmp_hf_name(const void *a, const void *b) {
    return strcmp((*(Tensor *const *)a)->hf, (*(Tensor *const *)b)->hf);
}

// two shards split at half the bytes, in native tensor order, plus the index (weight_map sorted by name)
static int write_hf_weights(const char *dir, TensorList *tl) {
    Tensor **ts = malloc((size_t)tl->n * sizeof *ts);
    if (!ts) return fail("out of memory");
    uint64_t total = 0, acc = 0;
    for (int i = 0; i < tl->n; i++) { ts[i] = &tl->t[i]; total += (uint64_t)tl->t[i].numel * 2; }
    int split = 0;  // tensors [0, split) go to shard 1, at least one in each shard
    while (split < tl->n - 1 && (split == 0 || acc + (uint64_t)ts[split]->numel * 2 <= total / 2)) {
        acc += (uint64_t)ts[split]->numel * 2;
        split++;
    }
    const char *shard[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    int rc = write_safetensors(dir, shard[0], ts, split, 1);
    if (!rc) rc = write_safetensors(dir, shard[1], ts + split, tl->n - split, 1);
    if (rc) { free(ts); return rc; }
    Tensor **sorted = malloc((size_t)tl->n * sizeof *sorted);
    if (!sorted) { free(ts); return fail("out of memory"); }
    memcpy(sorted, ts, (size_t)tl->n * sizeof *sorted);
    qsort(sorted, (size_t)tl->n, sizeof *sorted, cmp_hf_name);
    Buf b = {0};
    buf_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {\n",
               (unsigned long long)total);
    for (int i = 0; i < tl->n; i++) {
        int in_first = (int)(sorted[i] - tl->t) < split;  // ts[i] == &tl->t[i]
        buf_printf(&b, "    ");
        buf_json_string(&b, (const uint8_t *)sorted[i]->hf, strlen(sorted[i]->hf));
        buf_printf(&b, ": \"%s\"%s\n", shard[in_first ? 0 : 1], i + 1 < tl->n ? "," : "");
    }
    buf_printf(&b, "  }\n}\n");
    rc = write_buf(dir, "model.safetensors.index.json", &b);
    free(b.p);
    free(sorted);
    free(ts);
    return rc;
}

// ----------------------------------------------------------------------------------------------------
// Tekken vocabulary: byte-level BPE trained on TRAINING_TEXT

static const char TRAINING_TEXT[] =
    "This project is a small program, written in plain C in the style of llama2.c, that runs Mistral Small 3.1 "
    "on an ordinary computer without a graphics card. It reads the weights that Mistral released, converts them "
    "once into a single file that can be mapped into memory, and then generates text one token at a time. The "
    "model has forty layers, thirty-two query heads that share eight key and value heads, and a vocabulary of "
    "131072 tokens. Each layer normalizes its input, applies attention with rotary position embeddings, and then "
    "a gated feed-forward network; the residual stream carries everything from one layer to the next.\n\n"
    "The same model can also look at pictures. An image is decoded, resized so that both of its sides are "
    "multiples of twenty-eight pixels, and cut into patches of fourteen by fourteen pixels. A vision encoder with "
    "twenty-four layers turns every patch into a vector, neighbouring patches are merged two by two, and a small "
    "projector maps the result into the space of the text model, where each merged patch takes the place of an "
    "image token in the prompt. Rows of patches are separated by break tokens, and an end token closes the "
    "image.\n\n"
    "Testing matters more than speed. Every part of the program is compared with an independent reference "
    "written in Python, and with the outputs of other implementations, on tiny random checkpoints such as this "
    "one. The tokenizer must split the text exactly as the original does: digits one by one, words with their "
    "leading space, punctuation in short runs, and new lines on their own. When two numbers disagree, the tests "
    "should say where, by how much, and which side is believed to be right.\n\n"
    "Quantization makes the model smaller and faster: weights are stored in blocks of 256 values with a shared "
    "scale, and the matrix multiplications read them directly. The file format is documented in the README, with "
    "a table of every tensor, its shape and its type, so that another program could read it without looking at "
    "our code. Errors are reported with one clear line, and the program never crashes on a bad file.\n\n"
    "Memory is the other constraint. A twenty-four billion parameter model needs about forty-eight gigabytes in "
    "bfloat16, so the converter can also write smaller quantized files, and the key-value cache grows with every "
    "token of context. Threads split each matrix by rows; nothing else is shared between them. Benchmarks report "
    "tokens per second for prompt processing and for generation separately, because the first is limited by "
    "arithmetic and the second by memory bandwidth. Reproducible builds, deterministic sampling with a fixed "
    "seed, and careful handling of unusual inputs (empty prompts, huge images, invalid UTF-8, truncated "
    "downloads) are part of the job, not an afterthought.\n\n"
    "Some words from other languages keep the tokenizer honest: caf\xc3\xa9, na\xc3\xafve, Z\xc3\xbcrich, "
    "gar\xc3\xa7on, \xc3\xa9l\xc3\xa8ve, \xc3\xa0 bient\xc3\xb4t, stra\xc3\x9f" "e, \xce\xb1\xce\xb2\xce\xb3, "
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e, and numbers like 3.14159, 2025-03-17 or 1,000,000. "
    "The quick brown fox jumps over the lazy dog; THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!\n";

typedef struct {
    uint8_t **tok;   // token bytes, indexed by rank
    int *len;
    int n, cap;
    int *slot;       // open-addressing hash set of ranks keyed by bytes; -1 = empty
    int slot_cap;    // power of two
} Vocab;

static uint64_t hash_bytes(const uint8_t *s, int n) {  // FNV-1a
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ull; }
    return h;
}

static int vocab_find(const Vocab *v, const uint8_t *s, int n) {
    uint64_t i = hash_bytes(s, n) & (uint64_t)(v->slot_cap - 1);
    for (;; i = (i + 1) & (uint64_t)(v->slot_cap - 1)) {
        int r = v->slot[i];
        if (r < 0) return -1;
        if (v->len[r] == n && memcmp(v->tok[r], s, (size_t)n) == 0) return r;
    }
}

static int vocab_add(Vocab *v, const uint8_t *s, int n) {  // returns the new rank, or -1 (out of memory)
    if (v->n == v->cap) return -1;  // capacity is fixed up front
    uint8_t *copy = malloc((size_t)n);
    if (!copy) return -1;
    memcpy(copy, s, (size_t)n);
    int r = v->n++;
    v->tok[r] = copy;
    v->len[r] = n;
    uint64_t i = hash_bytes(s, n) & (uint64_t)(v->slot_cap - 1);
    while (v->slot[i] >= 0) i = (i + 1) & (uint64_t)(v->slot_cap - 1);
    v->slot[i] = r;
    return r;
}

// byte classes for the ASCII-and-lowercase subset of Tekken's pre-tokenizer (MODEL.md §7): bytes >= 0x80
// count as lowercase letters, which is what the non-ASCII letters of TRAINING_TEXT are
static int is_upper(int ch) { return ch >= 'A' && ch <= 'Z'; }
static int is_lower(int ch) { return (ch >= 'a' && ch <= 'z') || ch >= 0x80; }
static int is_letter(int ch) { return is_upper(ch) || is_lower(ch); }
static int is_digit(int ch) { return ch >= '0' && ch <= '9'; }
static int is_space(int ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f'; }
static int is_crlf(int ch) { return ch == '\r' || ch == '\n'; }
static int is_prefix(int ch) { return ch && !is_crlf(ch) && !is_letter(ch) && !is_digit(ch); }  // [^\r\n\p{L}\p{N}]

static int piece_length(const uint8_t *s, int i, int n) {
    int j = i;
    if (is_letter(s[i]) || (is_prefix(s[i]) && i + 1 < n && is_letter(s[i + 1]))) {  // A1/A2: P? U* W* (>= 1 letter)
        j = is_letter(s[i]) ? i : i + 1;
        while (j < n && is_upper(s[j])) j++;
        while (j < n && is_lower(s[j])) j++;
        return j - i;
    }
    if (is_digit(s[i])) return 1;                                                   // A3: one digit
    int k = i + (s[i] == ' ');
    if (k < n && !is_space(s[k]) && !is_letter(s[k]) && !is_digit(s[k])) {           // A4
        while (k < n && !is_space(s[k]) && !is_letter(s[k]) && !is_digit(s[k])) k++;
        while (k < n && (is_crlf(s[k]) || s[k] == '/')) k++;
        return k - i;
    }
    int end = i, last_crlf = -1;                                                    // whitespace run
    while (end < n && is_space(s[end])) { if (is_crlf(s[end])) last_crlf = end; end++; }
    if (last_crlf >= 0) return last_crlf + 1 - i;                                   // A5
    if (end == n || end - i == 1) return end - i;                                   // A6 at end / A7
    return end - i - 1;                                                             // A6
}

typedef struct {
    int *ids;
    int n, count;
} Word;

static int train_vocab(Vocab *v, int target) {
    // unique pieces with their counts
    const uint8_t *text = (const uint8_t *)TRAINING_TEXT;
    int n = (int)strlen(TRAINING_TEXT), n_words = 0;
    Word *words = calloc((size_t)n, sizeof *words);
    int *pair_key_a = NULL, *pair_key_b = NULL;
    long *pair_count = NULL;
    int rc = -1;
    if (!words) goto done;
    for (int i = 0; i < n;) {
        int len = piece_length(text, i, n), w;
        for (w = 0; w < n_words; w++) {
            if (words[w].n != len) continue;
            int same = 1;
            for (int j = 0; j < len && same; j++) same = words[w].ids[j] == text[i + j];
            if (same) break;
        }
        if (w == n_words) {
            words[w].ids = malloc((size_t)len * sizeof(int));
            if (!words[w].ids) goto done;
            for (int j = 0; j < len; j++) words[w].ids[j] = text[i + j];
            words[w].n = len;
            n_words++;
        }
        words[w].count++;
        i += len;
    }
    // merge the most frequent adjacent pair (ties: lowest ranks) until no pair is left
    int table = 1;
    while (table < 4 * n) table *= 2;
    pair_key_a = malloc((size_t)table * sizeof(int));
    pair_key_b = malloc((size_t)table * sizeof(int));
    pair_count = malloc((size_t)table * sizeof(long));
    uint8_t *merged = malloc((size_t)n + 1);
    if (!pair_key_a || !pair_key_b || !pair_count || !merged) { free(merged); goto done; }
    while (v->n < target) {
        for (int i = 0; i < table; i++) pair_count[i] = 0;
        int best = -1;
        for (int w = 0; w < n_words; w++) {
            for (int j = 0; j + 1 < words[w].n; j++) {
                int a = words[w].ids[j], b = words[w].ids[j + 1];
                uint32_t i = (uint32_t)(((uint64_t)a * 2654435761u) ^ ((uint64_t)b * 40503u)) & (uint32_t)(table - 1);
                while (pair_count[i] && (pair_key_a[i] != a || pair_key_b[i] != b)) i = (i + 1) & (uint32_t)(table - 1);
                pair_key_a[i] = a;
                pair_key_b[i] = b;
                pair_count[i] += words[w].count;
                if (best < 0 || pair_count[i] > pair_count[best] ||
                    (pair_count[i] == pair_count[best] &&
                     (a < pair_key_a[best] || (a == pair_key_a[best] && b < pair_key_b[best]))))
                    best = (int)i;
            }
        }
        if (best < 0) break;  // every piece is a single token
        int a = pair_key_a[best], b = pair_key_b[best];
        int la = v->len[a], lb = v->len[b];
        memcpy(merged, v->tok[a], (size_t)la);
        memcpy(merged + la, v->tok[b], (size_t)lb);
        int r = vocab_find(v, merged, la + lb);
        if (r < 0 && (r = vocab_add(v, merged, la + lb)) < 0) { free(merged); goto done; }
        for (int w = 0; w < n_words; w++) {
            int out = 0;
            for (int j = 0; j < words[w].n; j++) {
                if (j + 1 < words[w].n && words[w].ids[j] == a && words[w].ids[j + 1] == b) {
                    words[w].ids[out++] = r;
                    j++;
                } else {
                    words[w].ids[out++] = words[w].ids[j];
                }
            }
            words[w].n = out;
        }
    }
    // the text is exhausted: extend existing tokens by one common letter until the target is reached
    static const char letters[] = "etaoinshrdlucmfwypvbgkjqxz";
    int base = 256, li = 0;
    while (v->n < target) {
        int la = v->len[base];
        uint8_t *cand = malloc((size_t)la + 1);
        if (!cand) { free(merged); goto done; }
        memcpy(cand, v->tok[base], (size_t)la);
        cand[la] = (uint8_t)letters[li];
        int ok = vocab_find(v, cand, la + 1) >= 0 || vocab_add(v, cand, la + 1) >= 0;
        free(cand);
        if (!ok) { free(merged); goto done; }
        if (letters[++li] == 0) { li = 0; base++; }
    }
    free(merged);
    rc = 0;
done:
    if (words) for (int w = 0; w < n_words; w++) free(words[w].ids);
    free(words);
    free(pair_key_a);
    free(pair_key_b);
    free(pair_count);
    if (rc) fail("out of memory training the vocabulary");
    return rc;
}

static int utf8_valid(const uint8_t *s, int n) {  // strict, as Python's bytes.decode("utf-8")
    for (int i = 0; i < n;) {
        uint8_t c = s[i];
        int len;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n) return 0;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += len;
    }
    return 1;
}

static void buf_base64(Buf *b, const uint8_t *s, int n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < n; i += 3) {
        uint32_t x = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        char out[4] = {tab[x >> 18], tab[(x >> 12) & 63], i + 1 < n ? tab[(x >> 6) & 63] : '=', i + 2 < n ? tab[x & 63] : '='};
        buf_add(b, out, 4);
    }
}

static const char *SPECIAL_NAMES[] = {
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
    "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"};

// Tekken's pre-tokenizer regex (MODEL.md §7), byte-identical to the golden tekken.json's "pattern"
static const char TEKKEN_PATTERN[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?"
    "[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static int build_tekken(const Config *c, Buf *b) {
    int n_regular = c->vocab_size - N_SPECIAL, n_listed = n_regular + c->extra_vocab;
    Vocab v = {0};
    v.cap = n_listed;
    v.slot_cap = 1;
    while (v.slot_cap < 2 * n_listed) v.slot_cap *= 2;
    v.tok = calloc((size_t)v.cap, sizeof *v.tok);
    v.len = calloc((size_t)v.cap, sizeof *v.len);
    v.slot = malloc((size_t)v.slot_cap * sizeof *v.slot);
    int rc = -1;
    if (!v.tok || !v.len || !v.slot) { fail("out of memory"); goto done; }
    for (int i = 0; i < v.slot_cap; i++) v.slot[i] = -1;
    for (int i = 0; i < 256; i++) { uint8_t ch = (uint8_t)i; if (vocab_add(&v, &ch, 1) < 0) { fail("out of memory"); goto done; } }
    if (train_vocab(&v, n_listed)) goto done;

    buf_printf(b, "{\n  \"config\": {\n    \"pattern\": ");
    buf_json_string(b, (const uint8_t *)TEKKEN_PATTERN, strlen(TEKKEN_PATTERN));
    buf_printf(b, ",\n    \"num_vocab_tokens\": %d,\n    \"default_vocab_size\": %d,\n"
               "    \"default_num_special_tokens\": %d,\n    \"version\": \"v7\"\n  },\n  \"vocab\": [\n",
               n_listed, c->vocab_size, N_SPECIAL);
    for (int r = 0; r < v.n; r++) {
        buf_printf(b, "    {\n      \"rank\": %d,\n      \"token_bytes\": \"", r);
        buf_base64(b, v.tok[r], v.len[r]);
        buf_printf(b, "\",\n      \"token_str\": ");
        if (utf8_valid(v.tok[r], v.len[r])) buf_json_string(b, v.tok[r], (size_t)v.len[r]);
        else buf_printf(b, "null");
        buf_printf(b, "\n    }%s\n", r + 1 < v.n ? "," : "");
    }
    buf_printf(b, "  ],\n  \"special_tokens\": [\n");
    for (int r = 0; r < N_SPECIAL; r++) {
        char name[32];
        if (r < 20) snprintf(name, sizeof name, "%s", SPECIAL_NAMES[r]);
        else snprintf(name, sizeof name, "<SPECIAL_%d>", r);
        buf_printf(b, "    {\n      \"rank\": %d,\n      \"token_str\": \"%s\",\n      \"is_control\": true\n    }%s\n",
                   r, name, r + 1 < N_SPECIAL ? "," : "");
    }
    buf_printf(b, "  ],\n  \"multimodal\": {\n    \"image_patch_size\": %d,\n    \"max_image_size\": %d,\n"
               "    \"spatial_merge_size\": %d\n  }\n}", PATCH, IMAGE_SIZE, MERGE);
    if (b->oom) { fail("out of memory"); goto done; }
    rc = 0;
done:
    if (v.tok) for (int i = 0; i < v.n; i++) free(v.tok[i]);
    free(v.tok);
    free(v.len);
    free(v.slot);
    return rc;
}

// ----------------------------------------------------------------------------------------------------
// command line

static void usage(FILE *f) {
    fprintf(f,
            "usage: fixture OUTDIR [--seed N] [--dim 256] [--layers 2] [--heads 4] [--kv-heads 2] [--head-dim 64]\n"
            "                      [--hidden 768] [--vocab-size 2048] [--extra-vocab 16] [--rope-theta 1e9]\n"
            "                      [--vision-dim 64] [--vision-layers 2] [--vision-heads 2] [--vision-head-dim 32]\n"
            "                      [--vision-hidden 128] [--vision-rope-theta 1e4]\n"
            "Writes a random Mistral Small 3.1 checkpoint to OUTDIR/hf and OUTDIR/native (same weights).\n");
}

static int parse_args(int argc, char **argv, Config *c, const char **outdir) {
    *c = (Config){.seed = 1234, .dim = 256, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64,
                  .hidden_dim = 768, .vocab_size = 2048, .extra_vocab = 16, .rope_theta = 1e9, .v_dim = 64,
                  .v_layers = 2, .v_heads = 2, .v_head_dim = 32, .v_hidden = 128, .v_rope_theta = 1e4};
    struct { const char *flag; int *val; int min; } ints[] = {
        {"--dim", &c->dim, 1}, {"--layers", &c->n_layers, 1}, {"--heads", &c->n_heads, 1},
        {"--kv-heads", &c->n_kv_heads, 1}, {"--head-dim", &c->head_dim, 2}, {"--hidden", &c->hidden_dim, 1},
        {"--vocab-size", &c->vocab_size, N_SPECIAL + 256}, {"--extra-vocab", &c->extra_vocab, 0},
        {"--vision-dim", &c->v_dim, 1}, {"--vision-layers", &c->v_layers, 1}, {"--vision-heads", &c->v_heads, 1},
        {"--vision-head-dim", &c->v_head_dim, 4}, {"--vision-hidden", &c->v_hidden, 1}};
    *outdir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == 0) {
            if (*outdir) return fail("more than one output directory: '%s' and '%s'", *outdir, a);
            *outdir = a;
            continue;
        }
        if (i + 1 >= argc) return fail("flag %s needs a value", a);
        const char *val = argv[++i];
        char *end;
        errno = 0;
        if (strcmp(a, "--seed") == 0) {
            unsigned long long s = strtoull(val, &end, 10);
            if (errno || *end || val[0] == '-' || !val[0]) return fail("bad value for --seed: '%s'", val);
            c->seed = s;
            continue;
        }
        if (strcmp(a, "--rope-theta") == 0 || strcmp(a, "--vision-rope-theta") == 0) {
            double d = strtod(val, &end);
            if (errno || *end || !val[0] || !(d > 1.0) || !isfinite(d)) return fail("bad value for %s: '%s'", a, val);
            *(a[2] == 'r' ? &c->rope_theta : &c->v_rope_theta) = d;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof ints / sizeof ints[0]; k++) if (strcmp(a, ints[k].flag) == 0) break;
        if (k == sizeof ints / sizeof ints[0]) return fail("unknown flag %s (try --help)", a);
        long x = strtol(val, &end, 10);
        if (errno || *end || !val[0] || x < ints[k].min || x > (1L << 24))
            return fail("bad value for %s: '%s' (an integer >= %d)", a, val, ints[k].min);
        *ints[k].val = (int)x;
    }
    if (!*outdir) return fail("missing output directory (usage: fixture OUTDIR [flags], or --help)");
    if (c->head_dim % 2) return fail("--head-dim must be even (RoPE rotates pairs)");
    if (c->n_heads % c->n_kv_heads) return fail("--heads must be a multiple of --kv-heads");
    if (c->v_head_dim % 4) return fail("--vision-head-dim must be a multiple of 4 (2D RoPE)");
    if (c->v_dim != c->v_heads * c->v_head_dim)
        return fail("--vision-dim must equal --vision-heads x --vision-head-dim (Pixtral derives head_dim)");
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { usage(stdout); return 0; }
    Config c;
    const char *outdir;
    TensorList tl = {0};
    Buf tekken = {0}, sys = {0};
    char hf_dir[4096], native_dir[4096];
    int rc = parse_args(argc, argv, &c, &outdir);
    if (!rc && (strlen(outdir) > 4000)) rc = fail("output directory name too long");
    if (!rc) {
        snprintf(hf_dir, sizeof hf_dir, "%s/hf", outdir);
        snprintf(native_dir, sizeof native_dir, "%s/native", outdir);
        rc = make_dirs(hf_dir);
    }
    if (!rc) rc = make_dirs(native_dir);
    if (!rc) rc = make_tensors(&c, &tl);
    if (!rc) rc = build_tekken(&c, &tekken);
    if (!rc) {  // native: one file, every tensor
        Tensor **ts = malloc((size_t)tl.n * sizeof *ts);
        if (!ts) rc = fail("out of memory");
        for (int i = 0; !rc && i < tl.n; i++) ts[i] = &tl.t[i];
        if (!rc) rc = write_safetensors(native_dir, "consolidated.safetensors", ts, tl.n, 0);
        free(ts);
    }
    if (!rc) rc = write_params_json(native_dir, &c);
    if (!rc) rc = write_buf(native_dir, "tekken.json", &tekken);
    if (!rc) {
        buf_printf(&sys, "You are a tiny random test model made by export/fixture. Your answers are meaningless.\n");
        rc = write_buf(native_dir, "SYSTEM_PROMPT.txt", &sys);
    }
    if (!rc) rc = write_hf_weights(hf_dir, &tl);
    if (!rc) rc = write_config_json(hf_dir, &c);
    if (!rc) rc = write_buf(hf_dir, "tekken.json", &tekken);
    for (int i = 0; i < tl.n; i++) free(tl.t[i].data);
    free(tl.t);
    free(tekken.p);
    free(sys.p);
    if (rc) {
        fprintf(stderr, "fixture: %s\n", err_msg[0] ? err_msg : "failed");
        return 1;
    }
    printf("fixture: wrote %s/hf and %s/native (%d tensors, dim %d, %d layers, vocab %d)\n", outdir, outdir,
           tl.n, c.dim, c.n_layers, c.vocab_size);
    return 0;
}
