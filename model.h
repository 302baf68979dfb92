// model.h: the model file format shared by quantize.c (writer), run.c and vision.c (readers)
// and the tools in export/. README.md has the same layout as a table.
//
// A model file is little-endian and made of four parts:
//
//   FileHeader    magic, version, where the other parts are, the model Config
//   tokenizer     the Tekken vocabulary, special tokens and pre-tokenizer pattern
//   directory     one TensorInfo per tensor: name, type, shape, offset, size
//   tensor data   each tensor starts at a multiple of 64 bytes, so mmap gives aligned pointers
//
// Tensor names are the native (consolidated.safetensors) names of MODEL.md §2.1, and the q/k
// projection rows are in the native interleaved-pair RoPE order, whichever layout was converted.
#ifndef MODEL_H
#define MODEL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MODEL_MAGIC "MS31RUN"    // 8 bytes with its NUL
#define MODEL_VERSION 2          // 2: q8 and q4 matrices in 16-row groups (quant.h)
#define TENSOR_ALIGN 64
#define MAX_TENSOR_NAME 80

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the model file is little-endian and read in place: big-endian hosts are not supported"
#endif

// Errors in the programs travel up as a non-zero return with the message in error_msg (fail()
// returns -1); main prints it as one line. Helpers never exit.
static char error_msg[1024];

static inline int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_msg, sizeof error_msg, fmt, ap);
    va_end(ap);
    return -1;
}

// Every hyperparameter of the model. 4-byte fields only, so the struct has no padding.
typedef struct {
    // text decoder
    int32_t dim;                 // model width (5120)
    int32_t n_layers;            // decoder layers (40)
    int32_t n_heads;             // query heads (32)
    int32_t n_kv_heads;          // key/value heads (8); query head a uses kv head a / (n_heads / n_kv_heads)
    int32_t head_dim;            // 128, not dim / n_heads
    int32_t hidden_dim;          // feed-forward width (32768)
    int32_t vocab_size;          // rows of tok_embeddings and output (131072)
    int32_t max_seq_len;         // longest context the model was trained for (131072)
    float rope_theta;            // 1e9
    float norm_eps;              // RMSNorm epsilon (1e-5)
    // vision encoder (Pixtral); all zero when the checkpoint has no vision part
    int32_t vision_dim;          // 1024
    int32_t vision_layers;       // 24
    int32_t vision_heads;        // 16
    int32_t vision_head_dim;     // 64
    int32_t vision_hidden_dim;   // 4096
    int32_t num_channels;        // 3 (RGB)
    int32_t patch_size;          // 14 pixels
    int32_t max_image_size;      // 1540 pixels, longest side
    int32_t spatial_merge_size;  // 2: the projector merges 2x2 patches into one image token
    float vision_rope_theta;     // 1e4
    float vision_norm_eps;       // 1e-5
    // token ids
    int32_t n_special;           // ids below this are special tokens (1000)
    int32_t bos_id;              // <s>
    int32_t eos_id;              // </s>
    int32_t image_token_id;      // [IMG]: replaced by one projected image embedding
    int32_t image_break_id;      // [IMG_BREAK]: ends each row of image tokens
    int32_t image_end_id;        // [IMG_END]: ends the image
} Config;

typedef struct {
    char magic[8];               // MODEL_MAGIC
    uint32_t version;            // MODEL_VERSION
    uint32_t n_tensors;          // entries in the directory
    uint64_t tokenizer_offset;   // byte offset of the tokenizer part
    uint64_t tokenizer_bytes;
    uint64_t directory_offset;   // byte offset of TensorInfo[n_tensors]
    uint64_t file_bytes;         // total file size: a shorter file is truncated
    Config config;
} FileHeader;

// The tokenizer part, at tokenizer_offset:
//   TokenizerHeader
//   uint32 vocab_offsets[n_vocab + 1]      regular token of rank r = vocab_bytes[off[r] .. off[r+1])
//   uint32 special_offsets[n_special + 1]  special token i's text = special_bytes[off[i] .. off[i+1])
//   char   pattern[pattern_bytes]          Tekken's pre-tokenizer regex (not NUL-terminated)
//   uint8  vocab_bytes[vocab_offsets[n_vocab]]
//   char   special_bytes[special_offsets[n_special]]
// Token id = rank + n_special for regular tokens, id = i for special tokens.
typedef struct {
    uint32_t n_vocab;            // regular tokens (vocab_size - n_special)
    uint32_t n_special;
    uint32_t pattern_bytes;
    uint32_t reserved;           // 0
} TokenizerHeader;

typedef enum {
    TYPE_F32 = 0,                // float
    TYPE_F16 = 1,                // IEEE half
    TYPE_Q8 = 2,                 // BlockQ8 (quant.h): 32 weights, fp16 scale, 8.5 bits/weight; in 16-row groups
    TYPE_Q4 = 3,                 // BlockQ4 (quant.h): 256 weights, 4.5 bits/weight; in 16-row groups
} TensorType;

typedef struct {
    char name[MAX_TENSOR_NAME];  // NUL-padded native name, e.g. "layers.0.attention.wq.weight"
    uint32_t type;               // TensorType
    uint32_t n_dims;             // 1..4
    uint32_t shape[4];           // row-major, unused dims are 1; a matrix is [rows = out][cols = in]
    uint64_t offset;             // from the start of the file, a multiple of TENSOR_ALIGN
    uint64_t bytes;
    uint64_t reserved;           // 0
} TensorInfo;

_Static_assert(sizeof(Config) == 108, "Config is 27 four-byte fields");
_Static_assert(sizeof(FileHeader) == 160, "FileHeader: 48 bytes, Config, 4 bytes of padding");
_Static_assert(sizeof(TensorInfo) == 128, "TensorInfo is 128 bytes");

// Bytes of `n` weights in a type (n a multiple of the block size for q8 and q4).
static inline uint64_t type_bytes(uint32_t type, uint64_t n) {
    switch (type) {
    case TYPE_F32: return 4 * n;
    case TYPE_F16: return 2 * n;
    case TYPE_Q8: return n / 32 * 34;
    case TYPE_Q4: return n / 256 * 144;
    }
    return 0;
}

static inline const char *type_name(uint32_t type) {
    static const char *names[] = {"f32", "f16", "q8", "q4"};
    return type < 4 ? names[type] : "?";
}

// Sizes that the forward pass divides by or allocates from must be sane before anything trusts them.
// Returns 0, or 1 with the reason in err.
static inline int config_check(const Config *c, char *err, size_t size) {
    const char *why = NULL;
    if (c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
        c->hidden_dim <= 0 || c->vocab_size <= 0 || c->max_seq_len <= 0 || c->dim > 65536 || c->n_layers > 1024 ||
        c->n_heads > 1024 || c->head_dim > 1024 || c->hidden_dim > (1 << 20) || c->vocab_size > (1 << 24))
        why = "a text size is out of range";
    else if (c->n_heads % c->n_kv_heads) why = "n_heads is not a multiple of n_kv_heads";
    else if (c->head_dim % 2) why = "head_dim must be even for RoPE";
    else if (!(c->rope_theta > 0) || !(c->norm_eps > 0)) why = "rope_theta and norm_eps must be positive";
    else if (c->vision_layers < 0 || c->vision_layers > 1024) why = "vision_layers is out of range";
    else if (c->vision_layers && (c->vision_dim <= 0 || c->vision_heads <= 0 || c->vision_head_dim <= 0 ||
                                  c->vision_hidden_dim <= 0 || c->patch_size <= 0 || c->max_image_size <= 0 ||
                                  c->spatial_merge_size <= 0 || c->num_channels <= 0 || c->vision_dim > 65536 ||
                                  c->vision_hidden_dim > (1 << 20) || c->patch_size > 1024 ||
                                  c->max_image_size > 65536 || c->num_channels > 16 || c->spatial_merge_size > 16))
        why = "a vision size is out of range";
    else if (c->vision_layers && c->vision_head_dim % 4) why = "vision head_dim must be a multiple of 4 for 2D RoPE";
    else if (c->n_special < 0 || c->n_special > c->vocab_size) why = "n_special is out of range";
    if (why) snprintf(err, size, "config: %s", why);
    return why != NULL;
}

// ---- the tensors a model has, with their shapes, from the Config alone (MODEL.md §2.1)
// The converter uses this list to find and check tensors, the readers to check the file.

typedef struct {
    char name[MAX_TENSOR_NAME];
    uint32_t n_dims;
    uint32_t shape[4];
} TensorSpec;

static inline void spec_set(TensorSpec *s, const char *name, uint32_t n_dims, uint32_t d0, uint32_t d1, uint32_t d2,
                     uint32_t d3) {
    memset(s, 0, sizeof *s);  // the name is written to files NUL-padded
    snprintf(s->name, sizeof s->name, "%s", name);
    s->n_dims = n_dims;
    s->shape[0] = d0; s->shape[1] = d1; s->shape[2] = d2; s->shape[3] = d3;
}

// Fills `out` (room for model_tensor_count(c) entries) and returns the count.
static inline int model_tensor_specs(const Config *c, TensorSpec *out) {
    int n = 0;
    char name[MAX_TENSOR_NAME];
    uint32_t q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    spec_set(&out[n++], "tok_embeddings.weight", 2, c->vocab_size, c->dim, 1, 1);
    for (int l = 0; l < c->n_layers; l++) {
        struct { const char *suffix; uint32_t rows, cols; } layer[] = {
            {"attention_norm.weight", c->dim, 0},        {"attention.wq.weight", q_dim, c->dim},
            {"attention.wk.weight", kv_dim, c->dim},     {"attention.wv.weight", kv_dim, c->dim},
            {"attention.wo.weight", c->dim, q_dim},      {"ffn_norm.weight", c->dim, 0},
            {"feed_forward.w1.weight", c->hidden_dim, c->dim}, {"feed_forward.w2.weight", c->dim, c->hidden_dim},
            {"feed_forward.w3.weight", c->hidden_dim, c->dim},
        };
        for (int i = 0; i < 9; i++) {
            snprintf(name, sizeof name, "layers.%d.%s", l, layer[i].suffix);
            spec_set(&out[n++], name, layer[i].cols ? 2 : 1, layer[i].rows, layer[i].cols ? layer[i].cols : 1, 1, 1);
        }
    }
    spec_set(&out[n++], "norm.weight", 1, c->dim, 1, 1, 1);
    spec_set(&out[n++], "output.weight", 2, c->vocab_size, c->dim, 1, 1);
    if (c->vision_layers == 0) return n;

    uint32_t vd = c->vision_dim, vq = c->vision_heads * c->vision_head_dim, merge2 = c->spatial_merge_size * c->spatial_merge_size;
    spec_set(&out[n++], "vision_encoder.patch_conv.weight", 4, vd, c->num_channels, c->patch_size, c->patch_size);
    spec_set(&out[n++], "vision_encoder.ln_pre.weight", 1, vd, 1, 1, 1);
    for (int l = 0; l < c->vision_layers; l++) {
        struct { const char *suffix; uint32_t rows, cols; } layer[] = {
            {"attention_norm.weight", vd, 0},                  {"attention.wq.weight", vq, vd},
            {"attention.wk.weight", vq, vd},                   {"attention.wv.weight", vq, vd},
            {"attention.wo.weight", vd, vq},                   {"ffn_norm.weight", vd, 0},
            {"feed_forward.w1.weight", c->vision_hidden_dim, vd}, {"feed_forward.w2.weight", vd, c->vision_hidden_dim},
            {"feed_forward.w3.weight", c->vision_hidden_dim, vd},
        };
        for (int i = 0; i < 9; i++) {
            snprintf(name, sizeof name, "vision_encoder.transformer.layers.%d.%s", l, layer[i].suffix);
            spec_set(&out[n++], name, layer[i].cols ? 2 : 1, layer[i].rows, layer[i].cols ? layer[i].cols : 1, 1, 1);
        }
    }
    spec_set(&out[n++], "pre_mm_projector_norm.weight", 1, vd, 1, 1, 1);
    spec_set(&out[n++], "patch_merger.merging_layer.weight", 2, vd, vd * merge2, 1, 1);
    spec_set(&out[n++], "vision_language_adapter.w_in.weight", 2, c->dim, vd, 1, 1);
    spec_set(&out[n++], "vision_language_adapter.w_out.weight", 2, c->dim, c->dim, 1, 1);
    return n;
}

static inline int model_tensor_count(const Config *c) {
    return 3 + 9 * c->n_layers + (c->vision_layers ? 6 + 9 * c->vision_layers : 0);
}

static inline uint64_t spec_elements(const TensorSpec *s) {
    return (uint64_t)s->shape[0] * s->shape[1] * s->shape[2] * s->shape[3];
}

// ---- writing a model file (quantize.c, export/synthetic.c)

// The type a tensor is stored in when the big matrices are asked to be `wanted`. Norms stay f32; so
// does the patch convolution (588-long rows, MODEL.md §9) except in f16 files. In q4 files the output
// head is q8: it decides every logit (README has the numbers). A matrix whose rows do not split into
// q4 blocks (256) is q8, and one whose rows do not split into q8 blocks (32) is f16. q8 and q4 matrices are
// stored in groups of 16 rows (quant.h), so a matrix whose row count is not a multiple of 16 is f16 too.
static inline uint32_t storage_type(const TensorSpec *s, uint32_t wanted) {
    uint64_t rows = s->shape[0], cols = s->shape[1];
    if (s->n_dims == 1 || wanted == TYPE_F32) return TYPE_F32;
    if (strstr(s->name, "patch_conv")) return wanted == TYPE_F16 ? TYPE_F16 : TYPE_F32;
    if (wanted == TYPE_Q4 && strcmp(s->name, "output.weight") == 0) wanted = TYPE_Q8;
    if (wanted == TYPE_Q4 && (cols % 256 != 0 || rows % 16 != 0)) wanted = TYPE_Q8;
    if (wanted == TYPE_Q8 && (cols % 32 != 0 || rows % 16 != 0)) wanted = TYPE_F16;
    return wanted;
}

static inline uint64_t align_up(uint64_t x) { return (x + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN; }

// Writes zeros up to `offset` (a tensor's start, or the end of the file). 0 ok, -1 on a write error.
static inline int write_padding(FILE *f, uint64_t offset) {
    static const uint8_t zeros[TENSOR_ALIGN];
    long pos = ftell(f);
    if (pos < 0 || (uint64_t)pos > offset) return -1;
    return fwrite(zeros, 1, offset - pos, f) == offset - pos ? 0 : -1;
}

// Lays out and writes everything before the tensor data: the header (config, counts and sizes in h
// are set by the caller; offsets here), the tokenizer part, and the directory (names, types and
// shapes set by the caller; offsets and sizes here). The caller then writes each tensor at
// dir[i].offset and pads to h->file_bytes. 0 ok, -1 on a write error.
static inline int write_model_head(FILE *f, FileHeader *h, TensorInfo *dir, const TokenizerHeader *th,
                            const uint32_t *vocab_offsets, const uint8_t *vocab_bytes,
                            const uint32_t *special_offsets, const char *special_bytes, const char *pattern) {
    memcpy(h->magic, MODEL_MAGIC, 8);
    h->version = MODEL_VERSION;
    h->tokenizer_offset = align_up(sizeof(FileHeader));
    h->tokenizer_bytes = sizeof *th + 4ull * (th->n_vocab + 1) + 4ull * (th->n_special + 1) + th->pattern_bytes +
                         vocab_offsets[th->n_vocab] + special_offsets[th->n_special];
    h->directory_offset = align_up(h->tokenizer_offset + h->tokenizer_bytes);
    uint64_t offset = align_up(h->directory_offset + h->n_tensors * sizeof(TensorInfo));
    for (uint32_t i = 0; i < h->n_tensors; i++) {
        uint64_t elements = (uint64_t)dir[i].shape[0] * dir[i].shape[1] * dir[i].shape[2] * dir[i].shape[3];
        dir[i].bytes = type_bytes(dir[i].type, elements);
        dir[i].offset = offset;
        offset = align_up(offset + dir[i].bytes);
    }
    h->file_bytes = offset;
    int ok = fwrite(h, sizeof *h, 1, f) == 1 && write_padding(f, h->tokenizer_offset) == 0 &&
             fwrite(th, sizeof *th, 1, f) == 1 &&
             fwrite(vocab_offsets, 4, th->n_vocab + 1, f) == th->n_vocab + 1 &&
             fwrite(special_offsets, 4, th->n_special + 1, f) == th->n_special + 1 &&
             fwrite(pattern, 1, th->pattern_bytes, f) == th->pattern_bytes &&
             fwrite(vocab_bytes, 1, vocab_offsets[th->n_vocab], f) == vocab_offsets[th->n_vocab] &&
             fwrite(special_bytes, 1, special_offsets[th->n_special], f) == special_offsets[th->n_special] &&
             write_padding(f, h->directory_offset) == 0 && fwrite(dir, sizeof *dir, h->n_tensors, f) == h->n_tensors;
    return ok ? 0 : -1;
}

#endif
