/* run.c: Mistral Small 3.1 (24B) on a CPU, in one C file you can read top to bottom.

    make
    ./quantize ~/models/Mistral-Small-3.1-24B-Instruct-2503 weights/mistral-small-3.1-q4.bin
    ./run weights/mistral-small-3.1-q4.bin -p "Why is the sky blue?"

The sections follow the data: the model file (mapped, checked, viewed as weights) -> the Tekken
tokenizer (text <-> token ids) -> the neural-net blocks (matmul, rmsnorm, RoPE) -> the transformer
(a batch of tokens through 40 layers, with a KV cache) -> vision (vision.c, included: image -> [IMG]
embeddings) -> the sampler -> generation (prompt format, streaming, chat) -> the command line. MODEL.md
(shared docs) is the specification; model.h is the file format; quant.h the q4/q8/f16 number formats and
their dot products.

    ./run weights/mistral-small-3.1-q4.bin -i photo.jpg -p "What is in this picture?"
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "json.h"            // JSON parser and the tekken.json reader (for --tokenizer)
#include "model.h"           // the model file format
#include "quant.h"           // q4, q8, f16: quantize, dequantize, dot products
#include "unicode_table.h"   // Unicode general categories and White_Space, as sorted ranges

// ----------------------------------------------------------------------------
// the model file: mapped read-only, checked before anything is used (model.h has the layout)

// A weight matrix as stored in the file: row r holds the weights of output r.
typedef struct {
    const void *data;
    uint32_t type;               // TensorType
    int rows, cols;
} Tensor;

typedef struct {
    const float *attention_norm; // (dim)
    Tensor wq;                   // (n_heads * head_dim, dim), rows in interleaved-pair RoPE order
    Tensor wk;                   // (n_kv_heads * head_dim, dim), same order
    Tensor wv;                   // (n_kv_heads * head_dim, dim)
    Tensor wo;                   // (dim, n_heads * head_dim)
    const float *ffn_norm;       // (dim)
    Tensor w1;                   // (hidden_dim, dim) gate
    Tensor w2;                   // (dim, hidden_dim) down
    Tensor w3;                   // (hidden_dim, dim) up
} LayerWeights;

// The Pixtral vision encoder and the projector (vision.c), present when config.vision_layers > 0.
// D = vision_dim (1024), m = spatial_merge_size (2).
typedef struct {
    Tensor patch_conv;           // (D, 3 * patch_size * patch_size): one row of 588 per output channel
    const float *ln_pre;         // (D)
    LayerWeights *layers;        // (vision_layers) the same tensors as a text layer: wq..wo (D, D),
                                 // w1 and w3 (vision_hidden_dim, D), w2 (D, vision_hidden_dim)
    const float *pre_mm_norm;    // (D)
    Tensor merging;              // (D, D * m * m) patch merger
    Tensor w_in;                 // (dim, D)
    Tensor w_out;                // (dim, dim)
} VisionWeights;

typedef struct {
    Tensor tok_embeddings;       // (vocab_size, dim)
    LayerWeights *layers;        // (n_layers)
    const float *norm;           // (dim)
    Tensor output;               // (vocab_size, dim)
    VisionWeights vision;        // all zero when the model has no vision encoder
} Weights;

// The tokenizer part of the file (model.h), used in place; the tokenizer section builds on it.
typedef struct {
    int n_vocab, n_special;
    const uint32_t *vocab_offsets;   // (n_vocab + 1) regular token of rank r = vocab_bytes[off[r] .. off[r+1])
    const uint8_t *vocab_bytes;
    const uint32_t *special_offsets; // (n_special + 1) name of special token i
    const char *special_bytes;
} TokenizerPart;

typedef struct {
    Config config;
    Weights weights;
    TokenizerPart vocab;
    const TensorInfo *tensors;   // the directory, inside the mapping
    int n_tensors;
    void *map;                   // the whole file, mapped read-only
    size_t map_bytes;
} Model;

static const TensorInfo *find_tensor(const Model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strncmp(m->tensors[i].name, name, MAX_TENSOR_NAME) == 0) return &m->tensors[i];
    return NULL;
}

static Tensor tensor_view(const Model *m, const char *name) {
    const TensorInfo *t = find_tensor(m, name);  // present: model_load checked every name
    // a matrix: row r holds the weights of output r; the patch convolution [1024, 3, 14, 14] has rows of 588
    Tensor w = {(const uint8_t *)m->map + t->offset, t->type, (int)t->shape[0],
                (int)(t->shape[1] * t->shape[2] * t->shape[3])};
    return w;
}

static const float *norm_view(const Model *m, const char *name) { return tensor_view(m, name).data; }

// The 9 tensors of a layer named PREFIX.N.*: text layers are "layers.N.*", vision layers
// "vision_encoder.transformer.layers.N.*".
static void load_layer(const Model *m, const char *prefix, int layer, LayerWeights *lw) {
    char name[MAX_TENSOR_NAME];
#define LAYER_TENSOR(suffix) (snprintf(name, sizeof name, "%s.%d.%s", prefix, layer, suffix), tensor_view(m, name))
    lw->attention_norm = LAYER_TENSOR("attention_norm.weight").data;
    lw->wq = LAYER_TENSOR("attention.wq.weight");
    lw->wk = LAYER_TENSOR("attention.wk.weight");
    lw->wv = LAYER_TENSOR("attention.wv.weight");
    lw->wo = LAYER_TENSOR("attention.wo.weight");
    lw->ffn_norm = LAYER_TENSOR("ffn_norm.weight").data;
    lw->w1 = LAYER_TENSOR("feed_forward.w1.weight");
    lw->w2 = LAYER_TENSOR("feed_forward.w2.weight");
    lw->w3 = LAYER_TENSOR("feed_forward.w3.weight");
#undef LAYER_TENSOR
}

// Every tensor the config implies must be in the directory, with that shape, inside the file, in a
// type whose blocks fit its rows; norms must be f32 (they are read as float arrays).
static int check_directory(const Model *m, const char *path) {
    const Config *c = &m->config;
    int n = model_tensor_count(c);
    if (m->n_tensors != n) return fail("%s: %d tensors, the config implies %d", path, m->n_tensors, n);
    TensorSpec *specs = malloc(n * sizeof *specs);
    if (!specs) return fail("out of memory");
    model_tensor_specs(c, specs);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const TensorSpec *s = &specs[i];
        const TensorInfo *t = find_tensor(m, s->name);
        uint64_t elements = spec_elements(s), cols = elements / s->shape[0];
        if (!t) { rc = fail("%s: tensor %s missing", path, s->name); break; }
        if (t->n_dims != s->n_dims || memcmp(t->shape, s->shape, sizeof t->shape) != 0)
            rc = fail("%s: tensor %s has the wrong shape", path, s->name);
        else if (t->type > TYPE_Q4 || (s->n_dims == 1 && t->type != TYPE_F32))
            rc = fail("%s: tensor %s has type %u, not allowed here", path, s->name, t->type);
        else if ((t->type == TYPE_Q8 && cols % 32) || (t->type == TYPE_Q4 && cols % 256))
            rc = fail("%s: tensor %s: rows of %llu do not split into %s blocks", path, s->name,
                      (unsigned long long)cols, type_name(t->type));
        else if (t->bytes != type_bytes(t->type, elements) || t->offset % TENSOR_ALIGN ||
                 t->offset > m->map_bytes || t->bytes > m->map_bytes - t->offset)
            rc = fail("%s: tensor %s lies outside the file or has the wrong size", path, s->name);
    }
    free(specs);
    return rc;
}

// The tokenizer part: offsets must be monotonic and inside their byte arrays, and all inside the file.
static int load_tokenizer_part(Model *m, const FileHeader *h, const char *path) {
    const Config *c = &m->config;
    if (h->tokenizer_offset > m->map_bytes || h->tokenizer_bytes > m->map_bytes - h->tokenizer_offset ||
        h->tokenizer_bytes < sizeof(TokenizerHeader) || h->tokenizer_offset % 4)
        return fail("%s: tokenizer part lies outside the file", path);
    const uint8_t *p = (const uint8_t *)m->map + h->tokenizer_offset, *end = p + h->tokenizer_bytes;
    TokenizerHeader th;
    memcpy(&th, p, sizeof th);
    if ((int64_t)th.n_vocab + th.n_special != c->vocab_size || (int)th.n_special != c->n_special)
        return fail("%s: tokenizer has %u + %u tokens, the config %d (%d special)", path, th.n_vocab, th.n_special,
                    c->vocab_size, c->n_special);
    const uint32_t *vocab_off = (const uint32_t *)(p + sizeof th), *special_off = vocab_off + th.n_vocab + 1;
    const char *pattern = (const char *)(special_off + th.n_special + 1);
    if ((const uint8_t *)pattern > end || th.pattern_bytes > (uint64_t)(end - (const uint8_t *)pattern))
        return fail("%s: tokenizer part is truncated", path);
    const uint8_t *vocab_bytes = (const uint8_t *)pattern + th.pattern_bytes;
    for (uint32_t i = 0; i < th.n_vocab; i++)
        if (vocab_off[i] > vocab_off[i + 1]) return fail("%s: tokenizer offsets are not increasing", path);
    for (uint32_t i = 0; i < th.n_special; i++)
        if (special_off[i] > special_off[i + 1]) return fail("%s: tokenizer offsets are not increasing", path);
    if (vocab_off[0] != 0 || special_off[0] != 0 ||
        (uint64_t)vocab_off[th.n_vocab] + special_off[th.n_special] > (uint64_t)(end - vocab_bytes))
        return fail("%s: tokenizer part is truncated", path);
    if (th.pattern_bytes != strlen(TEKKEN_PATTERN) || memcmp(pattern, TEKKEN_PATTERN, th.pattern_bytes) != 0)
        return fail("%s: unsupported pre-tokenizer pattern (this program implements Tekken's)", path);
    TokenizerPart v = {(int)th.n_vocab, (int)th.n_special, vocab_off, vocab_bytes, special_off,
                       (const char *)vocab_bytes + vocab_off[th.n_vocab]};
    m->vocab = v;
    return 0;
}

static int model_load(Model *m, const char *path) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fail("%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); return fail("%s: not a regular file", path); }
    m->map_bytes = (size_t)st.st_size;
    if (m->map_bytes < sizeof(FileHeader)) { close(fd); return fail("%s: too short to be a model file", path); }
    m->map = mmap(NULL, m->map_bytes, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m->map == MAP_FAILED) { m->map = NULL; return fail("%s: cannot map: %s", path, strerror(errno)); }
#ifdef MADV_HUGEPAGE
    // Pages of 2 MiB where the kernel keeps the file so (Linux 6.x, ext4/xfs: large folios read in on first
    // touch): decoding streams the whole file per token, and fewer, larger pages read faster.
    madvise(m->map, m->map_bytes, MADV_HUGEPAGE);
#endif
    FileHeader h;
    memcpy(&h, m->map, sizeof h);
    if (memcmp(h.magic, MODEL_MAGIC, 8) != 0) return fail("%s: not a model file (bad magic); convert a checkpoint with ./quantize", path);
    if (h.version != MODEL_VERSION)
        return fail("%s: model file version %u, this program reads version %d; convert again with this ./quantize", path,
                    h.version, MODEL_VERSION);
    if (h.file_bytes != m->map_bytes)
        return fail("%s: file is %zu bytes but its header says %llu (truncated or damaged)", path, m->map_bytes,
                    (unsigned long long)h.file_bytes);
    m->config = h.config;
    char err[256];
    if (config_check(&m->config, err, sizeof err)) return fail("%s: %s", path, err);
    uint64_t dir_bytes = (uint64_t)h.n_tensors * sizeof(TensorInfo);
    if (h.directory_offset % 8 || h.directory_offset > m->map_bytes || dir_bytes > m->map_bytes - h.directory_offset)
        return fail("%s: tensor directory lies outside the file", path);
    m->tensors = (const TensorInfo *)((const uint8_t *)m->map + h.directory_offset);
    m->n_tensors = (int)h.n_tensors;
    if (check_directory(m, path) || load_tokenizer_part(m, &h, path)) return -1;

    const Config *c = &m->config;
    Weights *w = &m->weights;
    w->tok_embeddings = tensor_view(m, "tok_embeddings.weight");
    w->norm = norm_view(m, "norm.weight");
    w->output = tensor_view(m, "output.weight");
    w->layers = calloc(c->n_layers, sizeof *w->layers);
    if (!w->layers) return fail("out of memory");
    for (int l = 0; l < c->n_layers; l++) load_layer(m, "layers", l, &w->layers[l]);
    if (c->vision_layers > 0) {
        VisionWeights *v = &w->vision;
        v->patch_conv = tensor_view(m, "vision_encoder.patch_conv.weight");
        v->ln_pre = norm_view(m, "vision_encoder.ln_pre.weight");
        v->pre_mm_norm = norm_view(m, "pre_mm_projector_norm.weight");
        v->merging = tensor_view(m, "patch_merger.merging_layer.weight");
        v->w_in = tensor_view(m, "vision_language_adapter.w_in.weight");
        v->w_out = tensor_view(m, "vision_language_adapter.w_out.weight");
        v->layers = calloc(c->vision_layers, sizeof *v->layers);
        if (!v->layers) return fail("out of memory");
        for (int l = 0; l < c->vision_layers; l++) load_layer(m, "vision_encoder.transformer.layers", l, &v->layers[l]);
    }
    return 0;
}

static void model_free(Model *m) {
    free(m->weights.vision.layers);
    free(m->weights.layers);
    if (m->map) munmap(m->map, m->map_bytes);
}

// ----------------------------------------------------------------------------
// the Tekken tokenizer: text <-> token ids
//
// Encoding a text (tiktoken's encode_ordinary, as mistral-common drives it):
//   1. the pre-tokenizer splits the text into pieces with Tekken's regex (implemented below in C);
//   2. each piece, as UTF-8 bytes, becomes one token if it is in the vocab, else it is byte-pair
//      merged: starting from single bytes, repeatedly merge the adjacent pair whose concatenation
//      has the lowest rank (leftmost on ties), until no adjacent pair is in the vocab;
//   3. token id = rank + n_special. Ids below n_special are control tokens ("<s>", "[INST]", ...):
//      plain text never produces them, even text that spells them.
// Decoding concatenates the bytes of the tokens and reads them as UTF-8, invalid sequences
// becoming U+FFFD (like Python's errors="replace").

typedef struct {
    uint32_t hash;   // hash_bytes of the token: compared first, so most misses never touch the vocab bytes
    int32_t rank;    // -1 marks an empty slot
} TokenSlot;

typedef struct {
    int n_vocab;                    // regular tokens: rank r has id r + n_special
    int n_special;                  // ids 0..n_special-1 are control tokens
    const uint32_t *vocab_offsets;  // (n_vocab+1) bytes of rank r = vocab_bytes[vocab_offsets[r] .. vocab_offsets[r+1]); not owned
    const uint8_t *vocab_bytes;     // not owned: the arrays must outlive the Tokenizer
    char **special_names;           // (n_special) NUL-terminated: "<unk>", "<s>", "</s>", "[INST]", ...
    char *special_text;             // storage of the special names
    TokenSlot *table;               // (table_mask+1) hash table: token bytes -> rank
    uint32_t table_mask;            // table size - 1, a power of two
    int max_token_len;              // longest token in bytes
} Tokenizer;

void tokenizer_free(Tokenizer *t) {
    free(t->special_names);
    free(t->special_text);
    free(t->table);
    memset(t, 0, sizeof *t);
}

// FNV-1a: simple, and good enough for short byte strings.
static uint32_t hash_bytes(const uint8_t *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

// Rank of the token whose bytes are s[0..n), or -1 if no token has exactly these bytes.
static int vocab_rank(const Tokenizer *t, const uint8_t *s, size_t n) {
    uint32_t h = hash_bytes(s, n);
    for (uint32_t slot = h & t->table_mask;; slot = (slot + 1) & t->table_mask) {
        int32_t r = t->table[slot].rank;
        if (r < 0) return -1;
        if (t->table[slot].hash != h) continue;
        uint32_t start = t->vocab_offsets[r], len = t->vocab_offsets[r + 1] - start;
        if (len == n && memcmp(t->vocab_bytes + start, s, n) == 0) return r;
    }
}

// Builds a tokenizer over vocab and special-token arrays laid out as in TekkenFile (json.h), which
// is also how the model file stores them. The vocab arrays are used in place; the special names are
// copied. Returns 0, or -1 with a one-line message in err (empty tokens, duplicate tokens, ranks
// 0..255 not the single bytes: the BPE relies on all three).
int tokenizer_init(Tokenizer *t, int n_vocab, int n_special,
                   const uint32_t *vocab_offsets, const uint8_t *vocab_bytes,
                   const uint32_t *special_offsets, const char *special_bytes, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    if (n_vocab < 256 || n_vocab > (1 << 28) || n_special < 0 || n_special > (1 << 28)) {
        snprintf(err, errlen, "tokenizer: bad sizes (%d tokens, %d special)", n_vocab, n_special);
        return -1;
    }
    t->n_vocab = n_vocab;
    t->n_special = n_special;
    t->vocab_offsets = vocab_offsets;
    t->vocab_bytes = vocab_bytes;

    for (int i = 0; i < n_special; i++)
        if (special_offsets[i + 1] < special_offsets[i]) {
            snprintf(err, errlen, "tokenizer: special token offsets not in order at id %d", i);
            return -1;
        }
    // Special names: one NUL-terminated copy each, so they can be handed out as C strings.
    size_t special_len = special_offsets[n_special] - special_offsets[0];
    t->special_names = malloc(((size_t)n_special + 1) * sizeof *t->special_names);
    t->special_text = malloc(special_len + (size_t)n_special + 1);
    // Hash table at most half full, so that probe sequences stay short.
    uint32_t size = 1;
    while (size < 2 * (uint32_t)n_vocab) size *= 2;
    t->table_mask = size - 1;
    t->table = malloc(size * sizeof *t->table);
    if (!t->special_names || !t->special_text || !t->table) {
        tokenizer_free(t);
        snprintf(err, errlen, "tokenizer: out of memory");
        return -1;
    }
    char *name = t->special_text;
    for (int i = 0; i < n_special; i++) {
        size_t len = special_offsets[i + 1] - special_offsets[i];
        memcpy(name, special_bytes + special_offsets[i], len);
        name[len] = '\0';
        t->special_names[i] = name;
        name += len + 1;
    }

    for (uint32_t i = 0; i < size; i++) t->table[i] = (TokenSlot){ 0, -1 };
    for (int r = 0; r < n_vocab; r++) {
        const uint8_t *s = vocab_bytes + vocab_offsets[r];
        uint32_t len = vocab_offsets[r + 1] - vocab_offsets[r];
        const char *problem = len == 0 || vocab_offsets[r + 1] < vocab_offsets[r] ? "is empty (or its offsets run backwards)"
                            : r < 256 && (len != 1 || s[0] != r) ? "is not the single byte equal to its rank"
                            : vocab_rank(t, s, len) >= 0 ? "duplicates an earlier token" : NULL;
        if (problem) {
            snprintf(err, errlen, "tokenizer: token of rank %d %s", r, problem);
            tokenizer_free(t);
            return -1;
        }
        uint32_t h = hash_bytes(s, len), slot = h & t->table_mask;
        while (t->table[slot].rank >= 0) slot = (slot + 1) & t->table_mask;
        t->table[slot] = (TokenSlot){ h, r };
        if ((int)len > t->max_token_len) t->max_token_len = (int)len;
    }
    return 0;
}

// Id of the special token with this name ("[INST]" -> 3), or -1.
int tokenizer_special_id(const Tokenizer *t, const char *name) {
    for (int i = 0; i < t->n_special; i++)
        if (strcmp(t->special_names[i], name) == 0) return i;
    return -1;
}

// Name of special id `id` ("<s>" for 1), or NULL if id is not a special id.
const char *tokenizer_special_name(const Tokenizer *t, int id) {
    return id >= 0 && id < t->n_special ? t->special_names[id] : NULL;
}

// ---- tokenizer: UTF-8

// Looks at the UTF-8 sequence at s[0..n), n >= 1. Returns its length (1..4) if it is one valid
// character (RFC 3629: no overlong forms, surrogates or code points above U+10FFFF), storing the
// code point in *cp. Otherwise returns -k, where k >= 1 is the length of its maximal subpart (the
// longest prefix that could still begin a valid character): Unicode's recommended unit for one
// U+FFFD, which Python's errors="replace" follows. *truncated is set when that prefix was cut short
// by the end of s (more bytes might still complete it).
static int utf8_decode(const uint8_t *s, size_t n, uint32_t *cp, int *truncated) {
    uint8_t c = s[0], lo = 0x80, hi = 0xBF;   // lo..hi: the allowed range of the second byte
    int need;
    *truncated = 0;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { need = 2; *cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { need = 3; *cp = c & 0x0F; lo = c == 0xE0 ? 0xA0 : 0x80; hi = c == 0xED ? 0x9F : 0xBF; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 4; *cp = c & 0x07; lo = c == 0xF0 ? 0x90 : 0x80; hi = c == 0xF4 ? 0x8F : 0xBF; }
    else return -1;   // a continuation byte, C0/C1 (always overlong) or F5..FF (beyond U+10FFFF)
    for (int k = 1; k < need; k++) {
        if ((size_t)k >= n) { *truncated = 1; return -k; }
        if (s[k] < (k == 1 ? lo : 0x80) || s[k] > (k == 1 ? hi : 0xBF)) return -k;
        *cp = *cp << 6 | (s[k] & 0x3F);
    }
    return need;
}

// Checks that text[0..n) is valid UTF-8: 0 if so, else -1 with "invalid UTF-8 at byte N: <what>"
// about the first problem in err.
static int utf8_validate(const char *text, size_t n, char *err, size_t errlen) {
    const uint8_t *s = (const uint8_t *)text;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int truncated, len = utf8_decode(s + i, n - i, &cp, &truncated);
        if (len > 0) { i += (size_t)len; continue; }
        uint8_t c = s[i], d = i + 1 < n ? s[i + 1] : 0;   // the lead byte and the one after it
        int d_continues = d >= 0x80 && d <= 0xBF;
        int k = snprintf(err, errlen, "invalid UTF-8 at byte %zu: ", i);
        char *msg = err + (k > 0 && (size_t)k < errlen ? k : 0);
        size_t room = errlen - (size_t)(msg - err);
        if (truncated) snprintf(msg, room, "character cut short by the end of the input (lead byte 0x%02x)", c);
        else if (c >= 0x80 && c <= 0xBF) snprintf(msg, room, "unexpected continuation byte 0x%02x", c);
        else if (c == 0xC0 || c == 0xC1 || (c == 0xE0 && d_continues && d < 0xA0) || (c == 0xF0 && d_continues && d < 0x90))
            snprintf(msg, room, "overlong encoding (lead byte 0x%02x)", c);
        else if (c == 0xED && d_continues && d >= 0xA0) snprintf(msg, room, "UTF-16 surrogate encoded in UTF-8");
        else if (c >= 0xF8) snprintf(msg, room, "byte 0x%02x, which never occurs in UTF-8", c);
        else if (c >= 0xF5 || (c == 0xF4 && d_continues && d >= 0x90)) snprintf(msg, room, "code point above U+10FFFF");
        else snprintf(msg, room, "lead byte 0x%02x not followed by enough continuation bytes", c);
        return -1;
    }
    return 0;
}

// ---- tokenizer: pre-tokenizer
//
// Tekken's pattern, seven alternatives tried in order at each position (the first that matches
// wins, as in the backtracking regex engine tiktoken uses):
//   A1  [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+   P? U* W+
//   A2  [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*   P? U+ W*
//   A3  \p{N}                        one digit (or other number char) per piece
//   A4   ?[^\s\p{L}\p{N}]+[\r\n/]*   punctuation and symbols, with one leading space
//   A5  \s*[\r\n]+                   whitespace up to its last line break
//   A6  \s+(?!\S)                    whitespace except the last char before a non-space
//   A7  \s+
// with U = uppercase-ish letters and marks, W = lowercase-ish letters and marks (Lm, Lo and M are
// in both), P = any character but CR, LF, letters and numbers. Each character of the text is first
// given a set of CH_ flags, and each alternative is a small function of those flags that returns
// the length of its match in characters (0: no match). Every character starts some match (a letter
// A1 or A2, a number A3, whitespace A7, anything else A4), so the pieces cover the text.

enum {
    CH_U       = 1 << 0,   // Lu Lt Lm Lo M
    CH_W       = 1 << 1,   // Ll Lm Lo M
    CH_LETTER  = 1 << 2,   // L*
    CH_NUMBER  = 1 << 3,   // N*
    CH_SPACE   = 1 << 4,   // White_Space, what \s matches
    CH_NEWLINE = 1 << 5,   // \r or \n
    CH_SLASH   = 1 << 6,   // '/'
    CH_BLANK   = 1 << 7,   // ' ', the optional space of A4
};

// Unicode class (UNI_*) of a code point: binary search for the last range starting at or before it.
static int unicode_class(uint32_t cp) {
    if (cp < 256) return UNICODE_LATIN1[cp];
    int lo = 0, hi = UNICODE_N_RANGES - 1;   // invariant: range lo starts at or before cp
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (UNICODE_RANGES[mid] >> 8 <= cp) lo = mid;
        else hi = mid - 1;
    }
    return UNICODE_RANGES[lo] & 0xFF;
}

static uint8_t char_flags(uint32_t cp) {
    static const uint8_t flags_of_class[] = {
        [UNI_OTHER] = 0,
        [UNI_LU] = CH_LETTER | CH_U,        [UNI_LT] = CH_LETTER | CH_U,
        [UNI_LL] = CH_LETTER | CH_W,
        [UNI_LM] = CH_LETTER | CH_U | CH_W, [UNI_LO] = CH_LETTER | CH_U | CH_W,
        [UNI_M] = CH_U | CH_W,
        [UNI_N] = CH_NUMBER,
        [UNI_SPACE] = CH_SPACE,
    };
    uint8_t f = flags_of_class[unicode_class(cp)];
    if (cp == '\r' || cp == '\n') f |= CH_NEWLINE;
    if (cp == '/') f |= CH_SLASH;
    if (cp == ' ') f |= CH_BLANK;
    return f;
}

// Number of characters from i on (before n) that have any of the flags in `mask`.
static size_t run_with(const uint8_t *flags, size_t i, size_t n, uint8_t mask) {
    size_t k = 0;
    while (i + k < n && (flags[i + k] & mask)) k++;
    return k;
}

// Number of characters from i on (before n) that have none of the flags in `mask`.
static size_t run_without(const uint8_t *flags, size_t i, size_t n, uint8_t mask) {
    size_t k = 0;
    while (i + k < n && !(flags[i + k] & mask)) k++;
    return k;
}

// P = [^\r\n\p{L}\p{N}], the optional first character of A1 and A2 (a space, punctuation, a mark...).
static int is_prefix_char(uint8_t f) { return !(f & (CH_NEWLINE | CH_LETTER | CH_NUMBER)); }

// A1 after its prefix, U* W+ at i: the greedy U* gives back one character at a time until a W
// follows it (backtracking); then W+ takes all the W there are.
static size_t a1_body(const uint8_t *flags, size_t i, size_t n) {
    size_t k = run_with(flags, i, n, CH_U);
    for (;; k--) {
        if (i + k < n && (flags[i + k] & CH_W)) return k + run_with(flags, i + k, n, CH_W);
        if (k == 0) return 0;
    }
}

// A2 after its prefix, U+ W* at i: no backtracking needed, W* always matches.
static size_t a2_body(const uint8_t *flags, size_t i, size_t n) {
    size_t k = run_with(flags, i, n, CH_U);
    return k ? k + run_with(flags, i + k, n, CH_W) : 0;
}

// A1 and A2: the greedy P? first tries to take one character, then none.
static size_t match_with_prefix(const uint8_t *flags, size_t i, size_t n,
                         size_t (*body)(const uint8_t *, size_t, size_t)) {
    if (is_prefix_char(flags[i])) {
        size_t m = body(flags, i + 1, n);
        if (m) return 1 + m;
    }
    return body(flags, i, n);
}

// A4 ` ?[^\s\p{L}\p{N}]+[\r\n/]*`. Without its optional space it cannot match at a space either
// (a space is \s), so only the greedy choice needs trying.
static size_t match_punctuation(const uint8_t *flags, size_t i, size_t n) {
    size_t p = i + ((flags[i] & CH_BLANK) ? 1 : 0);
    size_t k = run_without(flags, p, n, CH_SPACE | CH_LETTER | CH_NUMBER);
    return k ? (p - i) + k + run_with(flags, p + k, n, CH_NEWLINE | CH_SLASH) : 0;
}

// Decodes the UTF-8 text s[0..len) (len < 2^32) into the flags of each character and the byte
// offset where it starts, offset[n] = len; both arrays need room for len + 1 entries. Returns the
// number of characters n, or SIZE_MAX if the text is not valid UTF-8.
static size_t text_char_flags(const uint8_t *s, size_t len, uint8_t *flags, uint32_t *offset) {
    size_t n = 0;
    for (size_t i = 0; i < len; n++) {
        uint32_t cp;
        int truncated, k = utf8_decode(s + i, len - i, &cp, &truncated);
        if (k <= 0) return SIZE_MAX;
        flags[n] = char_flags(cp);
        offset[n] = (uint32_t)i;
        i += (size_t)k;
    }
    offset[n] = (uint32_t)len;
    return n;
}

// Length in characters (>= 1) of the piece starting at character i < n.
static size_t piece_length(const uint8_t *flags, size_t i, size_t n) {
    size_t m;
    if ((m = match_with_prefix(flags, i, n, a1_body))) return m;   // A1
    if ((m = match_with_prefix(flags, i, n, a2_body))) return m;   // A2
    if (flags[i] & CH_NUMBER) return 1;                            // A3
    if ((m = match_punctuation(flags, i, n))) return m;            // A4
    size_t s = run_with(flags, i, n, CH_SPACE);
    for (size_t k = s; k > 0; k--)                                 // A5: up to the last \r or \n
        if (flags[i + k - 1] & CH_NEWLINE) return k;
    if (i + s == n) return s;                                      // A6 at the end of the text
    if (s >= 2) return s - 1;                                      // A6: leave one space to the next piece
    return s ? s : 1;   // A7, s == 1 here (never 0: what no other alternative takes is whitespace)
}

// ---- tokenizer: byte-pair merge
//
// A piece of n bytes starts as n parts of one byte. The live parts form a linked list, each known
// by the byte index where it starts. pair_rank[i] is the rank of part i joined with the next part
// (-1 if that is not a token, or part i is the last or no longer exists). A min-heap holds
// candidate merges as (rank << 32 | start), so the smallest entry is the lowest rank and, among
// equal ranks, the leftmost pair. Merging changes the pairs on both sides; their new ranks are
// pushed, and entries that no longer match pair_rank[] are skipped when popped (lazy deletion).
// Each merge costs O(log n), a piece O(n log n).

typedef struct {
    int cap;            // bytes the arrays below have room for
    int *next, *prev;   // (cap) linked list of live parts, by start byte; next of the last is n
    int *pair_rank;     // (cap)
    int *part_rank;     // (cap) rank of the token each live part is
    int *ranks;         // (cap) the result: ranks of the final parts, in order
    uint64_t *heap;     // (3 * cap) each merge pushes at most two entries after the first n - 1
} BpeScratch;

static void bpe_scratch_free(BpeScratch *b) {
    free(b->next); free(b->prev); free(b->pair_rank); free(b->part_rank); free(b->ranks); free(b->heap);
    memset(b, 0, sizeof *b);
}

static int bpe_scratch_reserve(BpeScratch *b, int n) {
    if (n <= b->cap) return 0;
    bpe_scratch_free(b);
    size_t cap = (size_t)n;
    b->next = malloc(cap * sizeof(int)); b->prev = malloc(cap * sizeof(int));
    b->pair_rank = malloc(cap * sizeof(int)); b->part_rank = malloc(cap * sizeof(int));
    b->ranks = malloc(cap * sizeof(int)); b->heap = malloc(3 * cap * sizeof(uint64_t));
    if (!b->next || !b->prev || !b->pair_rank || !b->part_rank || !b->ranks || !b->heap) { bpe_scratch_free(b); return -1; }
    b->cap = n;
    return 0;
}

static void heap_push(uint64_t *heap, int *size, uint64_t v) {
    int i = (*size)++;
    while (i > 0 && heap[(i - 1) / 2] > v) { heap[i] = heap[(i - 1) / 2]; i = (i - 1) / 2; }
    heap[i] = v;
}

static uint64_t heap_pop(uint64_t *heap, int *size) {
    uint64_t top = heap[0], last = heap[--*size];
    int i = 0, n = *size;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap[c + 1] < heap[c]) c++;
        if (heap[c] >= last) break;
        heap[i] = heap[c];
        i = c;
    }
    if (n > 0) heap[i] = last;
    return top;
}

// Rank of the token made of part i and the part after it, or -1.
static int rank_of_pair(const Tokenizer *t, const uint8_t *piece, int n, const int *next, int i) {
    if (i < 0 || next[i] >= n) return -1;
    int end = next[next[i]];
    return vocab_rank(t, piece + i, (size_t)(end - i));
}

// Byte-pair merges the n bytes of piece (n >= 2, b has room for n) into tokens; their ranks go
// to b->ranks. Returns how many.
static int bpe_merge(const Tokenizer *t, const uint8_t *piece, int n, BpeScratch *b) {
    int *next = b->next, *prev = b->prev, *pair_rank = b->pair_rank, heap_size = 0;
    for (int i = 0; i < n; i++) { next[i] = i + 1; prev[i] = i - 1; b->part_rank[i] = piece[i]; }   // rank of byte c is c
    for (int i = 0; i < n; i++) {
        pair_rank[i] = rank_of_pair(t, piece, n, next, i);
        if (pair_rank[i] >= 0) heap_push(b->heap, &heap_size, (uint64_t)pair_rank[i] << 32 | (uint32_t)i);
    }
    while (heap_size > 0) {
        uint64_t top = heap_pop(b->heap, &heap_size);
        int i = (int)(uint32_t)top, rank = (int)(top >> 32);
        if (pair_rank[i] != rank) continue;   // stale: part i changed or was merged away since
        int j = next[i];                       // merge part j into part i
        next[i] = next[j];
        if (next[j] < n) prev[next[j]] = i;
        pair_rank[j] = -1;
        b->part_rank[i] = rank;
        pair_rank[i] = rank_of_pair(t, piece, n, next, i);
        if (pair_rank[i] >= 0) heap_push(b->heap, &heap_size, (uint64_t)pair_rank[i] << 32 | (uint32_t)i);
        int p = prev[i];
        if (p >= 0) {
            pair_rank[p] = rank_of_pair(t, piece, n, next, p);
            if (pair_rank[p] >= 0) heap_push(b->heap, &heap_size, (uint64_t)pair_rank[p] << 32 | (uint32_t)p);
        }
    }
    int count = 0;
    for (int i = 0; i < n; i = next[i]) b->ranks[count++] = b->part_rank[i];
    return count;
}

// ---- tokenizer: encode

// Tokenizes text[0..len) (UTF-8, as plain text: never produces special ids) into ids. A text of
// len bytes gives at most len ids. Returns the number of ids, or -1 if the text is not valid
// UTF-8 (see utf8_validate), more than max_ids ids would be needed, or memory ran out.
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int *ids, int max_ids) {
    const uint8_t *s = (const uint8_t *)text;
    if (len > INT32_MAX) return -1;
    // Pre-tokenizer input: flags of each character, and the byte where it starts (offset[n] = len).
    uint8_t *flags = malloc(len + 1);
    uint32_t *offset = malloc((len + 1) * sizeof *offset);
    BpeScratch scratch = { 0 };
    int count = -1;
    if (!flags || !offset) goto done;
    size_t n = text_char_flags(s, len, flags, offset);
    if (n == SIZE_MAX) goto done;

    count = 0;
    for (size_t c = 0; c < n;) {
        size_t end = c + piece_length(flags, c, n);
        const uint8_t *piece = s + offset[c];
        int piece_len = (int)(offset[end] - offset[c]);
        c = end;
        int whole = vocab_rank(t, piece, (size_t)piece_len);
        if (whole >= 0) {   // most pieces are a single token
            if (count >= max_ids) { count = -1; goto done; }
            ids[count++] = whole + t->n_special;
            continue;
        }
        // piece_len >= 2 here: single bytes are tokens.
        if (bpe_scratch_reserve(&scratch, piece_len)) { count = -1; goto done; }
        int got = bpe_merge(t, piece, piece_len, &scratch);
        if (got > max_ids - count) { count = -1; goto done; }
        for (int k = 0; k < got; k++) ids[count++] = scratch.ranks[k] + t->n_special;
    }
done:
    free(flags);
    free(offset);
    bpe_scratch_free(&scratch);
    return count;
}

// ---- tokenizer: decode
//
// Streaming: feed ids one at a time, get back the text that is complete so far. A character whose
// UTF-8 bytes are split across tokens is held back until its last byte arrives, so output never
// ends in half a character. Invalid sequences become U+FFFD, one per maximal subpart, exactly as
// Python's bytes.decode("utf-8", errors="replace") does on the whole byte string; this is what
// mistral-common's decode returns. Special ids are skipped (mistral-common's IGNORE policy).

typedef struct {
    uint8_t held[3];   // the start of a character whose remaining bytes have not arrived yet
    int n_held;
} TokenDecoder;

static const char REPLACEMENT_CHAR[] = "\xEF\xBF\xBD";   // U+FFFD

// Bytes one decoder_push or decoder_flush can write at most: every input byte (the held ones
// included) may become a 3-byte U+FFFD.
size_t tokenizer_max_decoded(const Tokenizer *t) { return 3 * ((size_t)t->max_token_len + 3); }

// Decodes s[0..n) into out, returns the bytes written; an incomplete character at the end is
// moved into d->held instead.
static size_t decode_bytes(TokenDecoder *d, const uint8_t *s, size_t n, char *out) {
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int truncated, k = utf8_decode(s + i, n - i, &cp, &truncated);
        if (k > 0) { memcpy(out + w, s + i, (size_t)k); w += (size_t)k; i += (size_t)k; continue; }
        if (truncated) { memcpy(d->held, s + i, n - i); d->n_held = (int)(n - i); break; }
        memcpy(out + w, REPLACEMENT_CHAR, 3);
        w += 3;
        i += (size_t)-k;
    }
    return w;
}

// Appends the text of token `id` to out (room for tokenizer_max_decoded(t) bytes). Returns the
// number of bytes written (0 for special ids and while a character is incomplete), or -1 if id is
// not a valid id.
int decoder_push(const Tokenizer *t, TokenDecoder *d, int id, char *out) {
    if (id < 0 || id >= t->n_special + t->n_vocab) return -1;
    if (id < t->n_special) return 0;
    const uint8_t *s = t->vocab_bytes + t->vocab_offsets[id - t->n_special];
    size_t n = t->vocab_offsets[id - t->n_special + 1] - t->vocab_offsets[id - t->n_special], w = 0;
    if (d->n_held > 0) {
        // Finish the held character with the first bytes of this token. The held bytes are a valid
        // start, so whatever utf8_decode consumes covers all of them, plus some of the new ones.
        uint8_t joined[6];
        size_t held = (size_t)d->n_held, take = n < 3 ? n : 3;
        memcpy(joined, d->held, held);
        memcpy(joined + held, s, take);
        d->n_held = 0;
        uint32_t cp;
        int truncated, k = utf8_decode(joined, held + take, &cp, &truncated);
        if (truncated) return (int)decode_bytes(d, joined, held + take, out);   // still incomplete: hold it all
        size_t consumed = (size_t)(k > 0 ? k : -k);
        if (k > 0) memcpy(out, joined, consumed);   // the completed character
        else memcpy(out, REPLACEMENT_CHAR, 3);      // or one U+FFFD for its broken start
        w = k > 0 ? consumed : 3;
        s += consumed - held;
        n -= consumed - held;
    }
    return (int)(w + decode_bytes(d, s, n, out + w));
}

// Ends a stream: a character still incomplete becomes one U+FFFD. Returns the bytes written.
int decoder_flush(TokenDecoder *d, char *out) {
    if (d->n_held == 0) return 0;
    d->n_held = 0;
    memcpy(out, REPLACEMENT_CHAR, 3);
    return 3;
}

// ----------------------------------------------------------------------------
// neural net blocks; matmul is where the time goes

// matmul multiplies a batch of activation vectors by a weight matrix as the file stores it. The plain C
// kernels below ("scalar") are its definition. Faster kernels for x86 (AVX2, AVX-512, AVX-512 VNNI) and
// arm64 (NEON, NEON with the dot-product instructions) compute the same sums in the same order; AMX tiles
// multiply batches of 16 tokens or more in bf16 instead (see there). One set is chosen once from the CPU's
// features (kernels_for_cpu, or --kernels) and tests/test_kernels.py checks each against the scalar one.
// x86 kernels are compiled with __attribute__((target)), so a plain -O2 build runs on any x86-64.
// Attention's dot products and activation quantization are in the sets too.
//
// q8 and q4 weights are multiplied with activations quantized to int8 blocks of 32 (QuantizedActs), as
// integer dot products. The weights are stored in groups of 16 rows whose 64-byte lines hold 4 consecutive
// weights of each of the 16 rows (quant.h). One instruction multiplies such a line by 4 activation bytes
// repeated in every 32-bit lane and adds each row's 4 products into its lane: x86 vpdpbusd (AVX2 takes
// vpmaddubsw + vpmaddwd) gives 16 rows of one token in one register, NEON sdot 4 rows. A line loaded once
// serves every token of a tile from registers, with no shuffles. At the end of each block of 32 the lanes
// are converted to float and scaled, as the weight and activation scales change from block to block:
//
//   q8, row r, block b:         out += (d_r · dx_b) · Σ_i q_ri xq_i
//   q4, row r, sub-block j:     out += (d_r·sc_rj · dx_j) · Σ_i q_ri xq_i  −  (dmin_r·mn_rj) · (dx_j · Σ_i xq_i)
//
// with exact integer sums Σ, block after block in column order; the SIMD kernels do each += as one fused
// multiply-add (so all of them give the same bits), the scalar ones round twice. f16 and f32 weights are
// plain rows multiplied with the float activations.

// One row of a weight matrix as floats (an embedding lookup).
static void dequantize_row(const Tensor *w, int row, float *out) {
    int cols = w->cols, r = row % QROWS;
    const uint8_t *p = (const uint8_t *)w->data;
    switch (w->type) {
    case TYPE_F32: memcpy(out, p + (size_t)row * cols * 4, cols * sizeof(float)); break;
    case TYPE_F16:
        for (int i = 0; i < cols; i++) out[i] = fp16_to_f32(((const uint16_t *)p)[(size_t)row * cols + i]);
        break;
    case TYPE_Q8:
        for (int b = 0; b < cols / QK8; b++) {
            BlockQ8 blk;
            q8x16_get_row((const BlockQ8x16 *)p + (size_t)(row / QROWS) * (cols / QK8) + b, r, &blk);
            dequantize_q8(&blk, out + b * QK8, QK8);
        }
        break;
    case TYPE_Q4:
        for (int b = 0; b < cols / QK4; b++) {
            BlockQ4 blk;
            q4x16_get_row((const BlockQ4x16 *)p + (size_t)(row / QROWS) * (cols / QK4) + b, r, &blk);
            dequantize_q4(&blk, out + b * QK4, QK4);
        }
        break;
    }
}

// Activations quantized for the q8 and q4 kernels (quant.h's quantize_activation_block), token by token.
typedef struct {
    int cols;                    // values per token
    int8_t *q;                   // (n, cols) levels, each token's in a row of its own, xstride bytes apart
    float *d;                    // (n, cols / 32) scale of each block; rows bstride apart
    float *dsum;                 // (n, cols / 32) d · Σ levels of the block: what q4's minimums multiply
    int32_t *sum;                // (n, cols / 32) Σ levels (x86 VNNI q8 adds 128 to make the weights unsigned)
    uint16_t *xb;                // AMX, batches of 16 or more: the activations as bf16 in tiles of 16 tokens x
                                 // 32 columns (1 KiB), tokens 16T.. columns 32i.. at xb + 512(T·cols/32 + i)
    int xstride, bstride;        // cols + 64 and cols/32 + 16: rows a power of two apart would all map to the
                                 // same few cache sets, and a tile reads 8 or 16 of them at once
} QuantizedActs;

// A tile: the 16 rows of one group times nt tokens (nt = 1, 2, 4, 8, or 1..32 for AMX), over nb blocks (q8:
// 32 columns, q4: 256). The kernels keep a tile's sums in registers.
typedef struct {
    const void *w;               // the group's first block: BlockQ8x16 or BlockQ4x16
    const void *w2;              // another group's first block, which the tile also covers (its results at
                                 // out2), if the kernel set takes pairs; else NULL
    int nb;
    const float *scales;         // q4: 256 floats per block from the kernel set's q4_scales, those of the second
                                 // group's blocks after them (NULL: the kernel makes them itself, if the set's
                                 // q4_own_scales)
    const uint16_t *wb, *wb2;    // AMX: the blocks widened to bf16 (q4_bf16, q8_bf16), else NULL; and those of
                                 // another group, which the tile also covers (results at out2), or NULL
    const int8_t *xq;            // levels of token 0 from the first block's columns; token t at + t·xstride
    const uint16_t *xb;          // AMX: the bf16 tile of tokens 0..15 and the first block's first 32 columns;
    int xbstride;                //   the next 16 tokens' xbstride values on
    const float *dx, *dsum;      // token 0's scales and d·Σ from the first block; token t at + t·bstride
    const int32_t *sum;          // token 0's Σ levels, likewise
    int xstride, bstride;
    float *out;                  // token 0's 16 results; token t's at + t·ostride
    float *out2;                 // the same for the second group (w2, wb2)
    int ostride;
    int load;                    // add to what out holds (a later range of columns), else start from 0
    int prefetch;                // fetch the weights this many bytes ahead while going (streaming); or 0
} Tile;

typedef void TileKernel(const Tile *p, int nt);

// The part of tile p (of two groups) from its token t0 on.
static inline Tile tile_from_token(const Tile *p, int t0) {
    Tile part = *p;
    part.xq += (size_t)t0 * p->xstride;
    part.dx += (size_t)t0 * p->bstride, part.dsum += (size_t)t0 * p->bstride, part.sum += (size_t)t0 * p->bstride;
    part.out += (size_t)t0 * p->ostride, part.out2 += (size_t)t0 * p->ostride;
    return part;
}

// The scales of a q4 group block as floats, lane r = row r: out[16j + r] = d_r·sc_rj (j = 0..7, times `odd`
// for odd j) and out[128 + 16j + r] = dmin_r·mn_rj. The products are exact (11 by 6 significant bits).
typedef void ScalesKernel(const BlockQ4x16 *blk, float odd, float *out);
// f32/f16 weights: out[t][r] for rows [r0, r1) and the n tokens of x (n, w->cols); out is (n, w->rows).
typedef void RowKernel(const Tensor *w, int r0, int r1, const float *x, int n, float *out);
// Attention of one token to `len` keys, for the nq query heads of one kv head (q: nq rows of d):
// scores s[a·ld + j] = scale · q_a · key_j, and out_a (nq rows of d) += Σ_j p[a·ld + j] · value_j. Keys and
// values are rows of d, `stride` floats apart (the KV cache).
typedef void ScoresKernel(const float *q, int nq, int d, const float *keys, size_t stride, int len, float scale,
                          float *s, size_t ld);
typedef void MixKernel(const float *p, size_t ld, int nq, int d, const float *values, size_t stride, int len,
                       float *out);
// AMX: n activations as bf16, each 32 at out + 512i (one row of a tile); a group block of weights widened
// to bf16, 512 values per 32 columns (the q4 one with its scales from q4_scales).
typedef void ActsBF16Kernel(const float *x, int n, uint16_t *out);
typedef void Q4BF16Kernel(const BlockQ4x16 *blk, const float *scales, uint16_t *out);
typedef void Q8BF16Kernel(const BlockQ8x16 *blk, uint16_t *out);
// nb blocks of 32 activations x -> their levels q (32 each), scales d and sums of levels, exactly as
// quant.h's quantize_activation_block (the SIMD versions do the same IEEE operations).
typedef void QuantizeKernel(const float *x, int nb, int8_t *q, float *d, int32_t *sum);

typedef struct {
    const char *name;            // as --help shows it
    TileKernel *q4, *q8;
    ScalesKernel *q4_scales;
    float q4_odd;                // what q4_scales multiplies odd sub-blocks' scales by
    RowKernel *f16, *f32;
    ScoresKernel *scores;
    MixKernel *mix;
    QuantizeKernel *quantize;
    int q4_own_scales;           // tiles of up to this many tokens may come without scales: the q4 kernel then
                                 // makes each block's itself
    int pairs;                   // its q4 and q8 kernels take a second group (Tile.w2) in tiles of one token,
                                 // and its q4 kernel in tiles over a few blocks (the prompt's)
    ActsBF16Kernel *acts_bf16;   // AMX, for batches of 16 tokens or more; else NULL
    Q4BF16Kernel *q4_bf16;
    Q8BF16Kernel *q8_bf16;
} Kernels;

static inline int32_t load_i32(const int8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

// Token t of x into a (its d·Σ from the kernel's scales and sums).
static void quantize_token(const Kernels *k, const QuantizedActs *a, int t, const float *x) {
    int nb = a->cols / QK8;
    size_t first = (size_t)t * a->bstride;
    k->quantize(x, nb, a->q + (size_t)t * a->xstride, a->d + first, a->sum + first);
    for (int b = 0; b < nb; b++) a->dsum[first + b] = a->d[first + b] * (float)a->sum[first + b];
}

// Streaming weights from memory, the hardware prefetcher stops at each 4 KiB page and the loads of a
// compute-heavy loop do not run far enough ahead: the kernels ask for the lines `ahead` bytes on, one as they
// use a line (i = 0..7 of the block's part k), and a ninth per eight (a q4 block is 36 lines, a q8 one 8.5):
// spread out, not in bursts, which would stall the loads waiting for fill buffers. With ahead = 0 they touch
// lines in cache: cheaper than a branch.
// Each prefetch that misses holds a fill buffer until its line comes (there are ~16 per core), so going
// further ahead does not help: on the 24B model's decode 3 KiB did best (2.49 tok/s; 2 KiB 2.48, 4 KiB 2.44,
// 6 KiB 2.39). The weights go to L2, where those of bigger tiles, which later tiles read again, outlive the
// activations streaming through L1. One token's tiles (decoding, `once`) read their weights once: on AMD
// CPUs (stream_nta) they ask for them non-temporally, into L1 but not L2 (Zen 5: decode 8% faster); on an
// Intel Xeon that made decode 2.7x slower (0.81 tok/s against 2.2), so everywhere else into L2 too. `once`
// is a constant in every kernel, so that branch is gone once it is inlined.
#define PREFETCH_AHEAD 3072  // bytes
static int stream_nta;      // set by main: this is an AMD CPU
static inline void prefetch_lines(const void *block, int ahead, int once, int k, int i) {
    const char *line = (const char *)block + ahead + 64 * (9 * k + i);
    if (once && stream_nta) {
        __builtin_prefetch(line, 0, 0);
        if (i == 7) __builtin_prefetch(line + 64, 0, 0);
    } else {
        __builtin_prefetch(line, 0, 2);
        if (i == 7) __builtin_prefetch(line + 64, 0, 2);
    }
}

// ---- the definitions: scalar kernels

static void q4_scales_scalar(const BlockQ4x16 *blk, float odd, float *out) {
    for (int r = 0; r < QROWS; r++) {
        int v[16];
        q4_unpack_scales(blk->scales[r], v);
        float d = fp16_to_f32(blk->d[r]), dmin = fp16_to_f32(blk->dmin[r]);
        for (int j = 0; j < 8; j++) {
            out[16 * j + r] = d * (float)v[j] * (j % 2 ? odd : 1.0f);
            out[128 + 16 * j + r] = dmin * (float)v[8 + j];
        }
    }
}

// Line 8k + i of a q4 group block holds weights 4i..4i+3 of sub-block 2k (low nibbles) and of sub-block
// 2k+1 (high nibbles) of each of the 16 rows, so sub-block j is in lines 8(j/2) .. 8(j/2)+7. Byte e of a
// line meets activation e % 4 of the line's 4, which xs repeats 16 times; the products add up in part[e]
// (at most 8·15·127: 16 bits hold it), row r's sum is part[4r .. 4r+3]. Plain loops over whole lines, which
// compilers turn into SIMD code.
static void q4_tile_scalar(const Tile *p, int nt) {
    for (int t = 0; t < nt; t++) {
        const int8_t *xq = p->xq + (size_t)t * p->xstride;
        const float *dx = p->dx + (size_t)t * p->bstride, *dsum = p->dsum + (size_t)t * p->bstride;
        float *out = p->out + (size_t)t * p->ostride, acc[QROWS];
        for (int r = 0; r < QROWS; r++) acc[r] = p->load ? out[r] : 0.0f;
        for (int b = 0; b < p->nb; b++) {
            const BlockQ4x16 *blk = (const BlockQ4x16 *)p->w + b;
            const float *sc = p->scales + 256 * b, *mn = sc + 128;
            for (int j = 0; j < 8; j++) {
                int16_t part[64] = {0};
                int shift = 4 * (j % 2);
                for (int line = 0; line < 8; line++) {
                    const uint8_t *q = blk->qs + 64 * (8 * (j / 2) + line);
                    int32_t x4, xs[16];
                    memcpy(&x4, xq + QK4 * b + 32 * j + 4 * line, 4);
                    for (int e = 0; e < 16; e++) xs[e] = x4;
                    const int8_t *x = (const int8_t *)xs;
                    for (int e = 0; e < 64; e++) part[e] += ((q[e] >> shift) & 15) * x[e];
                }
                for (int r = 0; r < QROWS; r++) {
                    int32_t isum = part[4 * r] + part[4 * r + 1] + part[4 * r + 2] + part[4 * r + 3];
                    acc[r] += (float)isum * (sc[16 * j + r] * dx[8 * b + j]);
                    acc[r] -= mn[16 * j + r] * dsum[8 * b + j];
                }
            }
        }
        for (int r = 0; r < QROWS; r++) out[r] = acc[r];
    }
}

// Line i of a q8 group block holds weights 4i..4i+3 of each row; sums as in q4_tile_scalar (in 32 bits).
static void q8_tile_scalar(const Tile *p, int nt) {
    for (int t = 0; t < nt; t++) {
        const int8_t *xq = p->xq + (size_t)t * p->xstride;
        const float *dx = p->dx + (size_t)t * p->bstride;
        float *out = p->out + (size_t)t * p->ostride, acc[QROWS];
        for (int r = 0; r < QROWS; r++) acc[r] = p->load ? out[r] : 0.0f;
        for (int b = 0; b < p->nb; b++) {
            const BlockQ8x16 *blk = (const BlockQ8x16 *)p->w + b;
            int32_t part[64] = {0};
            for (int line = 0; line < 8; line++) {
                const int8_t *q = blk->q + 64 * line;
                int32_t x4, xs[16];
                memcpy(&x4, xq + QK8 * b + 4 * line, 4);
                for (int e = 0; e < 16; e++) xs[e] = x4;
                const int8_t *x = (const int8_t *)xs;
                for (int e = 0; e < 64; e++) part[e] += q[e] * x[e];
            }
            for (int r = 0; r < QROWS; r++) {
                int32_t isum = part[4 * r] + part[4 * r + 1] + part[4 * r + 2] + part[4 * r + 3];
                acc[r] += (float)isum * (fp16_to_f32(blk->d[r]) * dx[b]);
            }
        }
        for (int r = 0; r < QROWS; r++) out[r] = acc[r];
    }
}

static void f32_rows_scalar(const Tensor *w, int r0, int r1, const float *x, int n, float *out) {
    for (int r = r0; r < r1; r++) {
        const float *row = (const float *)w->data + (size_t)r * w->cols;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * w->cols;
            float sum = 0.0f;
            for (int i = 0; i < w->cols; i++) sum += row[i] * xt[i];
            out[(size_t)t * w->rows + r] = sum;
        }
    }
}

static void f16_rows_scalar(const Tensor *w, int r0, int r1, const float *x, int n, float *out) {
    for (int r = r0; r < r1; r++)
        for (int t = 0; t < n; t++)
            out[(size_t)t * w->rows + r] = dot_f16_f32((const uint16_t *)w->data + (size_t)r * w->cols,
                                                       x + (size_t)t * w->cols, w->cols);
}

static void scores_scalar(const float *q, int nq, int d, const float *keys, size_t stride, int len, float scale,
                          float *s, size_t ld) {
    for (int j = 0; j < len; j++)
        for (int a = 0; a < nq; a++) {
            float dot = 0.0f;
            for (int i = 0; i < d; i++) dot += q[a * d + i] * keys[j * stride + i];
            s[a * ld + j] = dot * scale;
        }
}

static void mix_scalar(const float *p, size_t ld, int nq, int d, const float *values, size_t stride, int len,
                       float *out) {
    for (int j = 0; j < len; j++)
        for (int a = 0; a < nq; a++)
            for (int i = 0; i < d; i++) out[a * d + i] += p[a * ld + j] * values[j * stride + i];
}

static void quantize_scalar(const float *x, int nb, int8_t *q, float *d, int32_t *sum) {
    for (int b = 0; b < nb; b++) {
        d[b] = quantize_activation_block(x + QK8 * b, q + QK8 * b);
        sum[b] = 0;
        for (int i = 0; i < QK8; i++) sum[b] += q[QK8 * b + i];
    }
}

static const Kernels kernels_scalar = {"scalar", q4_tile_scalar, q8_tile_scalar, q4_scales_scalar, 1.0f,
                                       f16_rows_scalar, f32_rows_scalar, scores_scalar, mix_scalar, quantize_scalar, 0,
                                       0, NULL, NULL, NULL};

// ---- x86: AVX2, AVX-VNNI, AVX-512, AVX-512 VNNI
//
// Each kernel is an always-inline body for a fixed number of tokens nt (so that its sums stay in registers)
// and a function that picks the body for the tile's nt. Its loops over tokens are unrolled (`#pragma GCC
// unroll N`, which clang reads too) with N their largest trip count: clang leaves a loop rolled, its sums in
// memory, when N is larger (its AVX2 prompt kernels ran at half speed with N = 8 on loops of 4 tokens).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#define HAVE_X86_KERNELS
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TARGET_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define TARGET_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")))
#define TARGET_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
#define INLINE inline __attribute__((always_inline))
// gcc's last scheduling pass gathers a kernel's prefetches into bursts, which then wait for fill buffers:
// kept where the code puts them (as clang does), the VNNI kernels decode 4% faster (2.61 tok/s, not 2.51).
#if defined(__clang__)
#define KEEP_ORDER
#else
#define KEEP_ORDER __attribute__((optimize("no-schedule-insns2")))
#endif

// q4_scales_scalar for 16 rows at once. Row r's 12 packed bytes are dwords 3r, 3r+1, 3r+2 of the 192:
// permutes gather dword k of every row into lane r of w[k] (q4_scale_words), and six-bit value v (bits
// 6v..6v+5 of the row's 96) is a shift and a mask away, but for the two that straddle dwords (v = 5, 10).
typedef struct { __m512i w[3]; __m512 d, d_odd, dmin; } Q4Scales512;

TARGET_AVX512 static INLINE Q4Scales512 q4_scale_words(const BlockQ4x16 *blk, float odd) {
    Q4Scales512 s;
    s.d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk->d));
    s.d_odd = _mm512_mul_ps(s.d, _mm512_set1_ps(odd));
    s.dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk->dmin));
    const uint8_t *bytes = blk->scales[0];
    __m512i z0 = _mm512_loadu_si512(bytes), z1 = _mm512_loadu_si512(bytes + 64), z2 = _mm512_loadu_si512(bytes + 128);
    #pragma GCC unroll 3
    for (int k = 0; k < 3; k++) {
        __m512i index = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4,
                                                                              3, 2, 1, 0), _mm512_set1_epi32(3)),
                                         _mm512_set1_epi32(k));                 // dword 3r + k: in z0 z1 (< 32) or z2
        s.w[k] = _mm512_permutex2var_epi32(z0, index, z1);
        s.w[k] = _mm512_mask_permutexvar_epi32(s.w[k], _mm512_cmpge_epi32_mask(index, _mm512_set1_epi32(32)), index, z2);
    }
    return s;
}

// Value v of the 16 rows, as q4_scales_scalar's out[16v ..] (v < 8: scales, d·sc or for odd v d·odd·sc;
// then minimums dmin·mn).
TARGET_AVX512 static INLINE __m512 q4_scale_value(const Q4Scales512 *s, int v) {
    int bit = 6 * v, k = bit / 32, shift = bit % 32;
    __m512i value = _mm512_srli_epi32(s->w[k], shift);
    if (shift > 26) value = _mm512_or_si512(value, _mm512_slli_epi32(s->w[k + 1], 32 - shift));
    value = _mm512_and_si512(value, _mm512_set1_epi32(63));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(value), v >= 8 ? s->dmin : v % 2 ? s->d_odd : s->d);
}

TARGET_AVX512 static void q4_scales_avx512(const BlockQ4x16 *blk, float odd, float *out) {
    Q4Scales512 s = q4_scale_words(blk, odd);
    #pragma GCC unroll 16
    for (int v = 0; v < 16; v++) _mm512_storeu_ps(out + 16 * v, q4_scale_value(&s, v));
}

// The same with AVX2, 8 rows (half h of the group) at a time. Row r's three dwords are dwords 3r, 3r+1,
// 3r+2 of the half's 96 bytes (a, b, c: 8 dwords each): dword 3r + k lies in a, b or c and is picked from
// each by a permute, then blended. Values as in q4_scale_value.
TARGET_AVX2 static void q4_scales_avx2(const BlockQ4x16 *blk, float odd, float *out) {
    const __m256i three_r = _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21);
    for (int h = 0; h < 2; h++) {
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk->d + 8 * h)));
        __m256 d_odd = _mm256_mul_ps(d, _mm256_set1_ps(odd));
        __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk->dmin + 8 * h)));
        const __m256i *dwords = (const __m256i *)blk->scales[8 * h];
        __m256i a = _mm256_loadu_si256(dwords), b = _mm256_loadu_si256(dwords + 1), c = _mm256_loadu_si256(dwords + 2);
        __m256i w[3];
        for (int k = 0; k < 3; k++) {
            __m256i index = _mm256_add_epi32(three_r, _mm256_set1_epi32(k));  // 3r + k: 0..23
            __m256i in_b = _mm256_cmpgt_epi32(index, _mm256_set1_epi32(7));
            __m256i in_c = _mm256_cmpgt_epi32(index, _mm256_set1_epi32(15));
            __m256i a_or_b = _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(a, index),
                                                _mm256_permutevar8x32_epi32(b, index), in_b);
            w[k] = _mm256_blendv_epi8(a_or_b, _mm256_permutevar8x32_epi32(c, index), in_c);
        }
        #pragma GCC unroll 16
        for (int v = 0; v < 16; v++) {
            int bit = 6 * v, k = bit / 32, shift = bit % 32;
            __m256i value = _mm256_srli_epi32(w[k], shift);
            if (shift > 26) value = _mm256_or_si256(value, _mm256_slli_epi32(w[k + 1], 32 - shift));
            value = _mm256_and_si256(value, _mm256_set1_epi32(63));
            __m256 scale = v >= 8 ? dmin : v % 2 ? d_odd : d;
            _mm256_storeu_ps(out + 16 * v + 8 * h, _mm256_mul_ps(_mm256_cvtepi32_ps(value), scale));
        }
    }
}

// The float part of a q4 sub-block for one token, 16 lanes = 16 rows: acc += isum·(sc·dx) − mn·dsum.
TARGET_AVX512 static INLINE __m512 q4_accumulate512(__m512 acc, __m512i isum, __m512 sc, __m512 mn, float dx, float dsum) {
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(sc, _mm512_set1_ps(dx)), acc);
    return _mm512_fnmadd_ps(mn, _mm512_set1_ps(dsum), acc);
}

// A tile's sums for group h (out, or out2 for the second) and token t in acc[h·nt + t]: what out holds if
// p->load, else 0; and back.
TARGET_AVX512 static INLINE void tile_sums_load512(const Tile *p, const int nt, const int ng, __m512 *acc) {
    #pragma GCC unroll 2
    for (int h = 0; h < ng; h++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            acc[h * nt + t] = p->load ? _mm512_loadu_ps((h ? p->out2 : p->out) + t * p->ostride) : _mm512_setzero_ps();
}

TARGET_AVX512 static INLINE void tile_sums_store512(const Tile *p, const int nt, const int ng, const __m512 *acc) {
    #pragma GCC unroll 2
    for (int h = 0; h < ng; h++)
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++) _mm512_storeu_ps((h ? p->out2 : p->out) + t * p->ostride, acc[h * nt + t]);
}

// q4 with AVX-512 VNNI. Line i of sub-blocks 2k, 2k+1 gives two vpdpbusd operands: v & 0x0F (sub-block 2k)
// and v & 0xF0, the levels of 2k+1 times 16 (q4_odd = 1/16 divides their scales). vpdpbusd multiplies one
// by 4 activation bytes broadcast to every lane: lane r += the 4 products of row r.
// Decoding, a tile of one token may take a second group too (p->w2, ng = 2): its rows share each broadcast,
// and two streams from memory keep more lines in flight than one.
TARGET_VNNI static INLINE void q4_tile_vnni_n(const Tile *p, const int nt, const int ng) {
    __m512 acc[8];  // group h, token t: acc[h·nt + t]
    tile_sums_load512(p, nt, ng, acc);
    const __m512i low = _mm512_set1_epi8(0x0F), high = _mm512_set1_epi8((char)0xF0);
    const int chains = nt <= 2 && ng == 1 ? 2 : 1;  // independent sums per sub-block: few need more in flight
    for (int b = 0; b < p->nb; b++) {
        const BlockQ4x16 *blk[2];
        const float *sc[2];  // the block's scales of group h, then its minimums (sc[h] + 128), if given
        #pragma GCC unroll 2
        for (int h = 0; h < ng; h++) {
            blk[h] = (const BlockQ4x16 *)(h ? p->w2 : p->w) + b;
            sc[h] = p->scales ? p->scales + 256 * (h * p->nb + b) : NULL;
        }
        Q4Scales512 own[2] = {0};  // no scales given (decoding): the block's, in registers, just before its levels
        #pragma GCC unroll 2
        for (int h = 0; h < ng; h++)
            if (!sc[h]) own[h] = q4_scale_words(blk[h], 1.0f / 16);
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m512i even[8][2], odd[8][2];
            #pragma GCC unroll 8
            for (int s = 0; s < nt * ng; s++) even[s][0] = odd[s][0] = even[s][1] = odd[s][1] = _mm512_setzero_si512();
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                __m512i lo[2], hi16[2];
                #pragma GCC unroll 2
                for (int h = 0; h < ng; h++) {
                    __m512i v = _mm512_loadu_si512(blk[h]->qs + 64 * (8 * k + i));
                    prefetch_lines(blk[h], p->prefetch, nt == 1, k, i);
                    lo[h] = _mm512_and_si512(v, low), hi16[h] = _mm512_and_si512(v, high);
                }
                #pragma GCC unroll 8
                for (int t = 0; t < nt; t++) {
                    const int8_t *x = p->xq + t * p->xstride + QK4 * b + 64 * k + 4 * i;
                    __m512i x_even = _mm512_set1_epi32(load_i32(x)), x_odd = _mm512_set1_epi32(load_i32(x + 32));
                    int c = i % chains;
                    #pragma GCC unroll 2
                    for (int h = 0; h < ng; h++) {
                        even[h * nt + t][c] = _mm512_dpbusd_epi32(even[h * nt + t][c], lo[h], x_even);
                        odd[h * nt + t][c] = _mm512_dpbusd_epi32(odd[h * nt + t][c], hi16[h], x_odd);
                    }
                }
            }
            #pragma GCC unroll 2
            for (int h = 0; h < ng; h++) {
                __m512 sc0 = sc[h] ? _mm512_loadu_ps(sc[h] + 32 * k) : q4_scale_value(&own[h], 2 * k);
                __m512 sc1 = sc[h] ? _mm512_loadu_ps(sc[h] + 32 * k + 16) : q4_scale_value(&own[h], 2 * k + 1);
                __m512 mn0 = sc[h] ? _mm512_loadu_ps(sc[h] + 128 + 32 * k) : q4_scale_value(&own[h], 8 + 2 * k);
                __m512 mn1 = sc[h] ? _mm512_loadu_ps(sc[h] + 128 + 32 * k + 16) : q4_scale_value(&own[h], 9 + 2 * k);
                #pragma GCC unroll 8
                for (int t = 0; t < nt; t++) {
                    int j = t * p->bstride + 8 * b + 2 * k, s = h * nt + t;
                    __m512i e = chains == 2 ? _mm512_add_epi32(even[s][0], even[s][1]) : even[s][0];
                    __m512i o = chains == 2 ? _mm512_add_epi32(odd[s][0], odd[s][1]) : odd[s][0];
                    acc[s] = q4_accumulate512(acc[s], e, sc0, mn0, p->dx[j], p->dsum[j]);
                    acc[s] = q4_accumulate512(acc[s], o, sc1, mn1, p->dx[j + 1], p->dsum[j + 1]);
                }
            }
        }
    }
    tile_sums_store512(p, nt, ng, acc);
}

// The same for the prompt: nt tokens (2 or 4) of two groups, the blocks' scales given, one sub-block j at a
// time: its 8 lines each loaded and masked once per group, times a broadcast of each token's 4 bytes that
// serves both groups. On the prompt, broadcasts, not multiplies, are what limit vpdpbusd: with half as many
// per product, prefill of the 24B model ran 12-25% faster than with 8 tokens of one group (AMD Zen 5). The
// sums are added in the same order as above: the same bits.
TARGET_VNNI static INLINE void q4_tile_vnni_pair(const Tile *p, const int nt) {
    __m512 acc[8];  // group h, token t: acc[h·nt + t]
    tile_sums_load512(p, nt, 2, acc);
    for (int b = 0; b < p->nb; b++) {
        const BlockQ4x16 *blk[2] = {(const BlockQ4x16 *)p->w + b, (const BlockQ4x16 *)p->w2 + b};
        const float *sc[2] = {p->scales + 256 * b, p->scales + 256 * (p->nb + b)};
        #pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const __m512i mask = _mm512_set1_epi8(j % 2 ? (char)0xF0 : 0x0F);
            __m512i isum[8];
            #pragma GCC unroll 8
            for (int s = 0; s < 2 * nt; s++) isum[s] = _mm512_setzero_si512();
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                __m512i v[2];
                #pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    v[h] = _mm512_and_si512(_mm512_loadu_si512(blk[h]->qs + 64 * (8 * (j / 2) + i)), mask);
                    if (j % 2 == 0) prefetch_lines(blk[h], p->prefetch, 0, j / 2, i);
                }
                #pragma GCC unroll 4
                for (int t = 0; t < nt; t++) {
                    __m512i x = _mm512_set1_epi32(load_i32(p->xq + t * p->xstride + QK4 * b + 32 * j + 4 * i));
                    #pragma GCC unroll 2
                    for (int h = 0; h < 2; h++) isum[h * nt + t] = _mm512_dpbusd_epi32(isum[h * nt + t], v[h], x);
                }
            }
            #pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m512 scj = _mm512_loadu_ps(sc[h] + 16 * j), mnj = _mm512_loadu_ps(sc[h] + 128 + 16 * j);
                #pragma GCC unroll 4
                for (int t = 0; t < nt; t++) {
                    int jx = t * p->bstride + 8 * b + j, s = h * nt + t;
                    acc[s] = q4_accumulate512(acc[s], isum[s], scj, mnj, p->dx[jx], p->dsum[jx]);
                }
            }
        }
    }
    tile_sums_store512(p, nt, 2, acc);
}

// q4 with AVX-512BW: vpmaddubsw adds pairs of products into 16-bit lanes. The 8 lines of a sub-block add
// up to at most 8·2·15·127 = 30480, so they are summed in 16 bits and widened once (vpmaddwd with ones);
// high nibbles are shifted down (times 16 they would overflow).
TARGET_AVX512 static INLINE void q4_tile_avx512_n(const Tile *p, const int nt) {
    __m512 acc[8];
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t] = p->load ? _mm512_loadu_ps(p->out + t * p->ostride) : _mm512_setzero_ps();
    const __m512i low = _mm512_set1_epi8(0x0F), ones = _mm512_set1_epi16(1);
    for (int b = 0; b < p->nb; b++) {
        const BlockQ4x16 *blk = (const BlockQ4x16 *)p->w + b;
        const float *sc = p->scales + 256 * b, *mn = sc + 128;
        for (int j = 0; j < 8; j++) {
            __m512i pairs[8];
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) pairs[t] = _mm512_setzero_si512();
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                __m512i v = _mm512_loadu_si512(blk->qs + 64 * (8 * (j / 2) + i));
                if (j % 2 == 0) prefetch_lines(blk, p->prefetch, nt == 1, j / 2, i);
                __m512i q = _mm512_and_si512(j % 2 ? _mm512_srli_epi16(v, 4) : v, low);
                #pragma GCC unroll 8
                for (int t = 0; t < nt; t++) {
                    __m512i x = _mm512_set1_epi32(load_i32(p->xq + t * p->xstride + QK4 * b + 32 * j + 4 * i));
                    pairs[t] = _mm512_add_epi16(pairs[t], _mm512_maddubs_epi16(q, x));
                }
            }
            __m512 scj = _mm512_loadu_ps(sc + 16 * j), mnj = _mm512_loadu_ps(mn + 16 * j);
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                int jx = t * p->bstride + 8 * b + j;
                acc[t] = q4_accumulate512(acc[t], _mm512_madd_epi16(pairs[t], ones), scj, mnj, p->dx[jx], p->dsum[jx]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(p->out + t * p->ostride, acc[t]);
}

// q8 with AVX-512 VNNI: vpdpbusd takes unsigned weights, so v ^ 0x80 = v + 128 goes in and the sum starts
// at −128·Σ levels of the token's block. Decoding, a tile of one token may take a second group (p->w2, ng = 2),
// as the q4 kernel does.
TARGET_VNNI static INLINE void q8_tile_vnni_n(const Tile *p, const int nt, const int ng) {
    __m512 acc[8];  // group h, token t: acc[h·nt + t]
    tile_sums_load512(p, nt, ng, acc);
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int b = 0; b < p->nb; b++) {
        const BlockQ8x16 *blk[2];
        #pragma GCC unroll 2
        for (int h = 0; h < ng; h++) blk[h] = (const BlockQ8x16 *)(h ? p->w2 : p->w) + b;
        __m512i isum[8];
        #pragma GCC unroll 2
        for (int h = 0; h < ng; h++)
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) isum[h * nt + t] = _mm512_set1_epi32(-128 * p->sum[t * p->bstride + b]);
        for (int i = 0; i < 8; i++) {
            __m512i u[2];
            #pragma GCC unroll 2
            for (int h = 0; h < ng; h++) {
                prefetch_lines(blk[h], p->prefetch, nt == 1, 0, i);
                u[h] = _mm512_xor_si512(_mm512_loadu_si512(blk[h]->q + 64 * i), bias);
            }
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                __m512i x = _mm512_set1_epi32(load_i32(p->xq + t * p->xstride + QK8 * b + 4 * i));
                #pragma GCC unroll 2
                for (int h = 0; h < ng; h++) isum[h * nt + t] = _mm512_dpbusd_epi32(isum[h * nt + t], u[h], x);
            }
        }
        #pragma GCC unroll 2
        for (int h = 0; h < ng; h++) {
            __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk[h]->d));
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(p->dx[t * p->bstride + b]));
                acc[h * nt + t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[h * nt + t]), scale, acc[h * nt + t]);
            }
        }
    }
    tile_sums_store512(p, nt, ng, acc);
}

// q8 with AVX-512BW: vpmaddubsw needs one unsigned operand: |w| times x with w's sign (x negated where w < 0).
// Two products of 127·127 fit 16 bits, the next line's would not: widened every line.
TARGET_AVX512 static INLINE void q8_tile_avx512_n(const Tile *p, const int nt) {
    __m512 acc[8];
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t] = p->load ? _mm512_loadu_ps(p->out + t * p->ostride) : _mm512_setzero_ps();
    const __m512i ones = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
    for (int b = 0; b < p->nb; b++) {
        const BlockQ8x16 *blk = (const BlockQ8x16 *)p->w + b;
        __m512i isum[8];
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++) isum[t] = zero;
        #pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            prefetch_lines(blk, p->prefetch, nt == 1, 0, i);
            __m512i v = _mm512_loadu_si512(blk->q + 64 * i), a = _mm512_abs_epi8(v);
            __mmask64 negative = _mm512_movepi8_mask(v);
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                __m512i x = _mm512_set1_epi32(load_i32(p->xq + t * p->xstride + QK8 * b + 4 * i));
                __m512i pairs = _mm512_maddubs_epi16(a, _mm512_mask_sub_epi8(x, negative, zero, x));
                isum[t] = _mm512_add_epi32(isum[t], _mm512_madd_epi16(pairs, ones));
            }
        }
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk->d));
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++)
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(d, _mm512_set1_ps(p->dx[t * p->bstride + b])),
                                     acc[t]);
    }
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(p->out + t * p->ostride, acc[t]);
}

// The AVX2 kernels multiply 32 weight bytes (unsigned) by 32 activation bytes (signed) and add each 4
// products into a 32-bit lane in one of two ways, given to them as two functions (resolved when inlined):
// AVX2's vpmaddubsw adds pairs of products into 16-bit lanes, which hold the sums of up to 8 lines of q4
// levels (8·2·15·127 < 2^15) or of 1 line of q8 ones, then widens them (vpmaddwd with ones); AVX-VNNI's
// vpdpbusd (Alder Lake and later, Zen 5) adds all four into 32 bits at once: nothing to widen. The integer
// sums, and so the results, are the same. AVX2 adds with saturation (vpaddsw), which never saturates here:
// with a plain add, which gcc may reorder, it computed a whole sub-block's products before adding any and
// spilled them to the stack (prefill 15-20% slower).
typedef __m256i Dot256(__m256i sums, __m256i w, __m256i x);
typedef __m256i Widen256(__m256i sums);
TARGET_AVX2 static INLINE __m256i dot_avx2(__m256i sums, __m256i w, __m256i x) {
    return _mm256_adds_epi16(sums, _mm256_maddubs_epi16(w, x));
}
TARGET_AVX2 static INLINE __m256i widen_avx2(__m256i sums) { return _mm256_madd_epi16(sums, _mm256_set1_epi16(1)); }
TARGET_AVXVNNI static INLINE __m256i dot_avxvnni(__m256i sums, __m256i w, __m256i x) {
    return _mm256_dpbusd_avx_epi32(sums, w, x);
}
TARGET_AVXVNNI static INLINE __m256i widen_avxvnni(__m256i sums) { return sums; }

// q4 with AVX2: as the AVX-512BW kernel, 8 rows (half h of a line) by nt tokens (up to 4: 16 registers),
// from token t0. Sub-blocks 2k and 2k+1 take the low and the high nibbles of the same 8 lines, one after the
// other. `fetch`: this tile asks for the next weights (the first tile over them; a constant, as are h, nt).
TARGET_AVX2 static INLINE void q4_tile_avx2_n(const Tile *p, const int h, int t0, const int nt, const int fetch,
                                              Dot256 *dot, Widen256 *widen) {
    __m256 acc[4];
    float *out = p->out + t0 * p->ostride + 8 * h;
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) acc[t] = p->load ? _mm256_loadu_ps(out + t * p->ostride) : _mm256_setzero_ps();
    const __m256i low = _mm256_set1_epi8(0x0F);
    const int8_t *xq = p->xq + t0 * p->xstride;
    const float *dx = p->dx + t0 * p->bstride, *dsum = p->dsum + t0 * p->bstride;
    for (int b = 0; b < p->nb; b++) {
        const BlockQ4x16 *blk = (const BlockQ4x16 *)p->w + b;
        const float *sc = p->scales + 256 * b + 8 * h, *mn = sc + 128;
        for (int k = 0; k < 4; k++) {
            const uint8_t *line = blk->qs + 64 * 8 * k + 32 * h;
            #pragma GCC unroll 2
            for (int odd = 0; odd < 2; odd++) {
                int j = 2 * k + odd;
                __m256i pairs[4];
                #pragma GCC unroll 4
                for (int t = 0; t < nt; t++) pairs[t] = _mm256_setzero_si256();
                #pragma GCC unroll 8
                for (int i = 0; i < 8; i++) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(line + 64 * i));
                    if (fetch && !odd) prefetch_lines(blk, p->prefetch, 0, k, i);
                    __m256i q = _mm256_and_si256(odd ? _mm256_srli_epi16(v, 4) : v, low);
                    #pragma GCC unroll 4
                    for (int t = 0; t < nt; t++) {
                        __m256i x = _mm256_set1_epi32(load_i32(xq + t * p->xstride + QK4 * b + 32 * j + 4 * i));
                        pairs[t] = dot(pairs[t], q, x);
                    }
                }
                __m256 scj = _mm256_loadu_ps(sc + 16 * j), mnj = _mm256_loadu_ps(mn + 16 * j);
                #pragma GCC unroll 4
                for (int t = 0; t < nt; t++) {
                    int jx = t * p->bstride + 8 * b + j;
                    __m256 isum = _mm256_cvtepi32_ps(widen(pairs[t]));
                    acc[t] = _mm256_fmadd_ps(isum, _mm256_mul_ps(scj, _mm256_set1_ps(dx[jx])), acc[t]);
                    acc[t] = _mm256_fnmadd_ps(mnj, _mm256_set1_ps(dsum[jx]), acc[t]);
                }
            }
        }
    }
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) _mm256_storeu_ps(out + t * p->ostride, acc[t]);
}

// q4 with AVX2, one token (decoding): both halves of each line, and its low and high nibbles (sub-blocks 2k
// and 2k+1) from one load. A tile without scales makes each block's into L1 just before its levels.
TARGET_AVX2 static INLINE void q4_tile_avx2_one(const Tile *p, Dot256 *dot, Widen256 *widen) {
    __m256 acc[2];
    for (int h = 0; h < 2; h++) acc[h] = p->load ? _mm256_loadu_ps(p->out + 8 * h) : _mm256_setzero_ps();
    const __m256i low = _mm256_set1_epi8(0x0F);
    _Alignas(32) float own[256];
    for (int b = 0; b < p->nb; b++) {
        const BlockQ4x16 *blk = (const BlockQ4x16 *)p->w + b;
        if (!p->scales) q4_scales_avx2(blk, 1.0f, own);
        const float *sc = p->scales ? p->scales + 256 * b : own, *mn = sc + 128;
        for (int k = 0; k < 4; k++) {
            __m256i even[2], odd[2];
            for (int h = 0; h < 2; h++) even[h] = odd[h] = _mm256_setzero_si256();
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                prefetch_lines(blk, p->prefetch, 1, k, i);
                const int8_t *x = p->xq + QK4 * b + 64 * k + 4 * i;
                __m256i x_even = _mm256_set1_epi32(load_i32(x)), x_odd = _mm256_set1_epi32(load_i32(x + 32));
                #pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(blk->qs + 64 * (8 * k + i) + 32 * h));
                    __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                    even[h] = dot(even[h], lo, x_even);
                    odd[h] = dot(odd[h], hi, x_odd);
                }
            }
            int j = 8 * b + 2 * k;
            #pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256 sc0 = _mm256_loadu_ps(sc + 32 * k + 8 * h), sc1 = _mm256_loadu_ps(sc + 32 * k + 16 + 8 * h);
                __m256 mn0 = _mm256_loadu_ps(mn + 32 * k + 8 * h), mn1 = _mm256_loadu_ps(mn + 32 * k + 16 + 8 * h);
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(widen(even[h])), _mm256_mul_ps(sc0, _mm256_set1_ps(p->dx[j])),
                                         acc[h]);
                acc[h] = _mm256_fnmadd_ps(mn0, _mm256_set1_ps(p->dsum[j]), acc[h]);
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(widen(odd[h])), _mm256_mul_ps(sc1, _mm256_set1_ps(p->dx[j + 1])),
                                         acc[h]);
                acc[h] = _mm256_fnmadd_ps(mn1, _mm256_set1_ps(p->dsum[j + 1]), acc[h]);
            }
        }
    }
    for (int h = 0; h < 2; h++) _mm256_storeu_ps(p->out + 8 * h, acc[h]);
}

// q8 with AVX2: |w| times x with w's sign (vpsignb), widened every line.
TARGET_AVX2 static INLINE void q8_tile_avx2_n(const Tile *p, int h, int t0, const int nt, Dot256 *dot, Widen256 *widen) {
    __m256 acc[4];
    float *out = p->out + t0 * p->ostride + 8 * h;
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) acc[t] = p->load ? _mm256_loadu_ps(out + t * p->ostride) : _mm256_setzero_ps();
    for (int b = 0; b < p->nb; b++) {
        const BlockQ8x16 *blk = (const BlockQ8x16 *)p->w + b;
        __m256i isum[4];
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++) isum[t] = _mm256_setzero_si256();
        #pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            if (h == 0 && t0 == 0) prefetch_lines(blk, p->prefetch, nt == 1, 0, i);
            __m256i v = _mm256_loadu_si256((const __m256i *)(blk->q + 64 * i + 32 * h)), a = _mm256_abs_epi8(v);
            #pragma GCC unroll 4
            for (int t = 0; t < nt; t++) {
                __m256i x = _mm256_set1_epi32(load_i32(p->xq + (t0 + t) * p->xstride + QK8 * b + 4 * i));
                __m256i line = dot(_mm256_setzero_si256(), a, _mm256_sign_epi8(x, v));
                isum[t] = _mm256_add_epi32(isum[t], widen(line));
            }
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(blk->d + 8 * h)));
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            __m256 dx = _mm256_set1_ps(p->dx[(t0 + t) * p->bstride + b]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(d, dx), acc[t]);
        }
    }
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) _mm256_storeu_ps(out + t * p->ostride, acc[t]);
}

// Tiles of several tokens and two groups (the prompt): at most 4 tokens at a time (8 sums in registers).
KEEP_ORDER TARGET_VNNI static void q4_tile_vnni(const Tile *p, int nt) {
    if (p->w2 && nt > 1) {
        for (int t0 = 0; t0 < nt; t0 += 4) {
            Tile part = tile_from_token(p, t0);
            nt == 2 ? q4_tile_vnni_pair(&part, 2) : q4_tile_vnni_pair(&part, 4);
        }
        return;
    }
    switch (nt) {
    case 8: q4_tile_vnni_n(p, 8, 1); break;
    case 4: q4_tile_vnni_n(p, 4, 1); break;
    case 2: q4_tile_vnni_n(p, 2, 1); break;
    default: p->w2 ? q4_tile_vnni_n(p, 1, 2) : q4_tile_vnni_n(p, 1, 1); break;
    }
}

KEEP_ORDER TARGET_VNNI static void q8_tile_vnni(const Tile *p, int nt) {
    switch (nt) {
    case 8: q8_tile_vnni_n(p, 8, 1); break;
    case 4: q8_tile_vnni_n(p, 4, 1); break;
    case 2: q8_tile_vnni_n(p, 2, 1); break;
    default: p->w2 ? q8_tile_vnni_n(p, 1, 2) : q8_tile_vnni_n(p, 1, 1); break;
    }
}

TARGET_AVX512 static void q4_tile_avx512(const Tile *p, int nt) {
    switch (nt) {
    case 8: q4_tile_avx512_n(p, 8); break;
    case 4: q4_tile_avx512_n(p, 4); break;
    case 2: q4_tile_avx512_n(p, 2); break;
    default: q4_tile_avx512_n(p, 1); break;
    }
}

TARGET_AVX512 static void q8_tile_avx512(const Tile *p, int nt) {
    switch (nt) {
    case 8: q8_tile_avx512_n(p, 8); break;
    case 4: q8_tile_avx512_n(p, 4); break;
    case 2: q8_tile_avx512_n(p, 2); break;
    default: q8_tile_avx512_n(p, 1); break;
    }
}

TARGET_AVX2 static INLINE void q4_tile_avx2_all(const Tile *p, int nt, Dot256 *dot, Widen256 *widen) {
    if (nt == 1) {
        q4_tile_avx2_one(p, dot, widen);
        return;
    }
    #pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {  // nt = 2, 4 or 8
        if (nt == 2) q4_tile_avx2_n(p, h, 0, 2, h == 0, dot, widen);
        else q4_tile_avx2_n(p, h, 0, 4, h == 0, dot, widen);
        if (nt == 8) q4_tile_avx2_n(p, h, 4, 4, 0, dot, widen);
    }
}

TARGET_AVX2 static INLINE void q8_tile_avx2_all(const Tile *p, int nt, Dot256 *dot, Widen256 *widen) {
    for (int h = 0; h < 2; h++)
        for (int t = 0; t < nt; t += 4) {
            switch (nt - t < 4 ? nt - t : 4) {
            case 4: q8_tile_avx2_n(p, h, t, 4, dot, widen); break;
            case 2: q8_tile_avx2_n(p, h, t, 2, dot, widen); break;
            default: q8_tile_avx2_n(p, h, t, 1, dot, widen); break;
            }
        }
}

TARGET_AVX2 static void q4_tile_avx2(const Tile *p, int nt) { q4_tile_avx2_all(p, nt, dot_avx2, widen_avx2); }
TARGET_AVX2 static void q8_tile_avx2(const Tile *p, int nt) { q8_tile_avx2_all(p, nt, dot_avx2, widen_avx2); }
TARGET_AVXVNNI static void q4_tile_avxvnni(const Tile *p, int nt) { q4_tile_avx2_all(p, nt, dot_avxvnni, widen_avxvnni); }
TARGET_AVXVNNI static void q8_tile_avxvnni(const Tile *p, int nt) { q8_tile_avx2_all(p, nt, dot_avxvnni, widen_avxvnni); }

// f32 and f16 rows: per row and token, two 16-lane partial sums over columns 32c..32c+31, a masked tail,
// then a fixed reduction: the same order whatever the number of tokens. One row by up to 4 tokens at a time.
TARGET_AVX512 static INLINE __m512 load_weights512(const void *row, int f16, int i, __mmask16 m) {
    if (f16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i));
    return _mm512_maskz_loadu_ps(m, (const float *)row + i);
}

TARGET_AVX512 static INLINE void float_rows_avx512_n(const Tensor *w, int r, const float *x, int t0, float *out, int f16,
                                                     const int nt) {
    int cols = w->cols;
    const void *row = (const uint8_t *)w->data + (size_t)r * cols * (f16 ? 2 : 4);
    __m512 acc0[4], acc1[4];
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) acc0[t] = acc1[t] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= cols; i += 32) {
        __m512 w0 = load_weights512(row, f16, i, 0xFFFF), w1 = load_weights512(row, f16, i + 16, 0xFFFF);
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            const float *xt = x + (size_t)(t0 + t) * cols + i;
            acc0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xt), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xt + 16), acc1[t]);
        }
    }
    for (; i < cols; i += 16) {
        __mmask16 m = cols - i >= 16 ? 0xFFFF : (__mmask16)((1u << (cols - i)) - 1);
        __m512 w0 = load_weights512(row, f16, i, m);
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            acc0[t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + (size_t)(t0 + t) * cols + i), acc0[t]);
    }
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) out[(size_t)(t0 + t) * w->rows + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
}

TARGET_AVX512 static void float_rows_avx512(const Tensor *w, int r0, int r1, const float *x, int n, float *out, int f16) {
    for (int r = r0; r < r1; r++)
        for (int t = 0; t < n; t += 4) {
            switch (n - t < 4 ? n - t : 4) {
            case 4: float_rows_avx512_n(w, r, x, t, out, f16, 4); break;
            case 3: float_rows_avx512_n(w, r, x, t, out, f16, 3); break;
            case 2: float_rows_avx512_n(w, r, x, t, out, f16, 2); break;
            default: float_rows_avx512_n(w, r, x, t, out, f16, 1); break;
            }
        }
}

TARGET_AVX512 static void f32_rows_avx512(const Tensor *w, int r0, int r1, const float *x, int n, float *out) {
    float_rows_avx512(w, r0, r1, x, n, out, 0);
}

TARGET_AVX512 static void f16_rows_avx512(const Tensor *w, int r0, int r1, const float *x, int n, float *out) {
    float_rows_avx512(w, r0, r1, x, n, out, 1);
}

// The sum and the largest of a vector's 8 lanes.
TARGET_AVX2 static INLINE float sum8_avx2(__m256 v) {
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s4, _mm_movehdup_ps(s4)));
}

TARGET_AVX2 static INLINE float max8_avx2(__m256 v) {
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
}

// AVX2: two 8-lane partial sums over columns 16c..16c+15, a scalar tail added after the reduction.
TARGET_AVX2 static INLINE __m256 load_weights256(const void *row, int f16, int i) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    return _mm256_loadu_ps((const float *)row + i);
}

TARGET_AVX2 static INLINE void float_rows_avx2_n(const Tensor *w, int r, const float *x, int t0, float *out, int f16,
                                                 const int nt) {
    int cols = w->cols;
    const void *row = (const uint8_t *)w->data + (size_t)r * cols * (f16 ? 2 : 4);
    __m256 acc0[4], acc1[4];
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) acc0[t] = acc1[t] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= cols; i += 16) {
        __m256 w0 = load_weights256(row, f16, i), w1 = load_weights256(row, f16, i + 8);
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            const float *xt = x + (size_t)(t0 + t) * cols + i;
            acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt), acc0[t]);
            acc1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + 8), acc1[t]);
        }
    }
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
        float sum = sum8_avx2(_mm256_add_ps(acc0[t], acc1[t]));
        const float *xt = x + (size_t)(t0 + t) * cols;
        for (int k = i; k < cols; k++)
            sum += (f16 ? fp16_to_f32(((const uint16_t *)row)[k]) : ((const float *)row)[k]) * xt[k];
        out[(size_t)(t0 + t) * w->rows + r] = sum;
    }
}

TARGET_AVX2 static void float_rows_avx2(const Tensor *w, int r0, int r1, const float *x, int n, float *out, int f16) {
    for (int r = r0; r < r1; r++)
        for (int t = 0; t < n; t += 4) {
            switch (n - t < 4 ? n - t : 4) {
            case 4: float_rows_avx2_n(w, r, x, t, out, f16, 4); break;
            case 3: float_rows_avx2_n(w, r, x, t, out, f16, 3); break;
            case 2: float_rows_avx2_n(w, r, x, t, out, f16, 2); break;
            default: float_rows_avx2_n(w, r, x, t, out, f16, 1); break;
            }
        }
}

TARGET_AVX2 static void f32_rows_avx2(const Tensor *w, int r0, int r1, const float *x, int n, float *out) {
    float_rows_avx2(w, r0, r1, x, n, out, 0);
}

TARGET_AVX2 static void f16_rows_avx2(const Tensor *w, int r0, int r1, const float *x, int n, float *out) {
    float_rows_avx2(w, r0, r1, x, n, out, 1);
}

// Attention: dot products as two 16-lane partial sums and a masked tail.
TARGET_AVX512 static void scores_avx512(const float *q, int nq, int d, const float *keys, size_t stride, int len,
                                        float scale, float *s, size_t ld) {
    for (int j = 0; j < len; j++) {
        const float *key = keys + j * stride;
        for (int i = 0; i < d; i += 16) _mm_prefetch((const char *)(key + 8 * stride + i), _MM_HINT_T0);
        for (int a = 0; a < nq; a++) {
            __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
            int i = 0;
            for (; i + 32 <= d; i += 32) {
                acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + a * d + i), _mm512_loadu_ps(key + i), acc0);
                acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + a * d + i + 16), _mm512_loadu_ps(key + i + 16), acc1);
            }
            for (; i < d; i += 16) {
                __mmask16 m = d - i >= 16 ? 0xFFFF : (__mmask16)((1u << (d - i)) - 1);
                acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + a * d + i), _mm512_maskz_loadu_ps(m, key + i), acc0);
            }
            s[a * ld + j] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) * scale;
        }
    }
}

// Mixing values, each output column's sums stay in registers over all the keys: 32 columns of up to 4
// heads at a time (adding into `out` through memory, masked stores would stall the next masked loads).
TARGET_AVX512 static void mix_avx512(const float *p, size_t ld, int nq, int d, const float *values, size_t stride,
                                     int len, float *out) {
    for (int a0 = 0; a0 < nq; a0 += 4) {
        for (int i = 0; i < d; i += 32) {
            __mmask16 m0 = d - i >= 16 ? 0xFFFF : (__mmask16)((1u << (d - i)) - 1);
            __mmask16 m1 = d - i >= 32 ? 0xFFFF : d - i <= 16 ? 0 : (__mmask16)((1u << (d - i - 16)) - 1);
            __m512 acc[4][2];
            #pragma GCC unroll 4
            for (int a = 0; a < 4; a++) {
                float *o = out + (a0 + a) * d + i;
                acc[a][0] = a0 + a < nq ? _mm512_maskz_loadu_ps(m0, o) : _mm512_setzero_ps();
                acc[a][1] = a0 + a < nq ? _mm512_maskz_loadu_ps(m1, o + 16) : _mm512_setzero_ps();
            }
            for (int j = 0; j < len; j++) {
                const float *value = values + j * stride + i;
                for (int c = 0; c < d && i == 0; c += 16) _mm_prefetch((const char *)(value + 8 * stride + c), _MM_HINT_T0);
                __m512 v0 = _mm512_maskz_loadu_ps(m0, value), v1 = _mm512_maskz_loadu_ps(m1, value + 16);
                #pragma GCC unroll 4
                for (int a = 0; a < 4; a++) {  // (heads past nq add 0: no branch, the sums stay in registers)
                    __m512 pj = _mm512_set1_ps(a0 + a < nq ? p[(a0 + a) * ld + j] : 0.0f);
                    acc[a][0] = _mm512_fmadd_ps(pj, v0, acc[a][0]);
                    acc[a][1] = _mm512_fmadd_ps(pj, v1, acc[a][1]);
                }
            }
            #pragma GCC unroll 4
            for (int a = 0; a < 4; a++) {
                if (a0 + a >= nq) continue;
                _mm512_mask_storeu_ps(out + (a0 + a) * d + i, m0, acc[a][0]);
                _mm512_mask_storeu_ps(out + (a0 + a) * d + i + 16, m1, acc[a][1]);
            }
        }
    }
}

// AVX2: two 8-lane partial sums and a scalar tail.
TARGET_AVX2 static void scores_avx2(const float *q, int nq, int d, const float *keys, size_t stride, int len,
                                    float scale, float *s, size_t ld) {
    for (int j = 0; j < len; j++) {
        const float *key = keys + j * stride;
        for (int a = 0; a < nq; a++) {
            const float *qa = q + a * d;
            __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
            int i = 0;
            for (; i + 16 <= d; i += 16) {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(qa + i), _mm256_loadu_ps(key + i), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(qa + i + 8), _mm256_loadu_ps(key + i + 8), acc1);
            }
            float dot = sum8_avx2(_mm256_add_ps(acc0, acc1));
            for (; i < d; i++) dot += qa[i] * key[i];
            s[a * ld + j] = dot * scale;
        }
    }
}

TARGET_AVX2 static void mix_avx2(const float *p, size_t ld, int nq, int d, const float *values, size_t stride,
                                 int len, float *out) {
    for (int j = 0; j < len; j++) {
        const float *value = values + j * stride;
        for (int a = 0; a < nq; a++) {
            float pj = p[a * ld + j], *o = out + a * d;
            int i = 0;
            for (; i + 8 <= d; i += 8)
                _mm256_storeu_ps(o + i, _mm256_fmadd_ps(_mm256_set1_ps(pj), _mm256_loadu_ps(value + i), _mm256_loadu_ps(o + i)));
            for (; i < d; i++) o[i] += pj * value[i];
        }
    }
}

// Activations: quantize_activation_block's operations lane by lane. The clamps keep its NaN behaviour
// (vminps/vmaxps return the second operand if one is NaN: the scalar "v < 127 ? v : 127" gives 127), and
// v + copysign(0.5, v) rounds as "v >= 0 ? v + 0.5 : v - 0.5" does (-0 included: both truncate to 0).
TARGET_AVX512 static void quantize_avx512(const float *x, int nb, int8_t *q, float *d, int32_t *sum) {
    const __m512 top = _mm512_set1_ps(127.0f), bottom = _mm512_set1_ps(-127.0f), half = _mm512_set1_ps(0.5f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000);
    for (int b = 0; b < nb; b++, x += QK8, q += QK8) {
        __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
        __m512 m = _mm512_max_ps(_mm512_abs_ps(x1), _mm512_max_ps(_mm512_abs_ps(x0), _mm512_setzero_ps()));
        float amax = _mm512_reduce_max_ps(m);  // (a NaN |x| is dropped, as by the scalar loop)
        float scale = amax / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        __m512i level[2];
        for (int h = 0; h < 2; h++) {
            __m512 v = _mm512_mul_ps(h ? x1 : x0, _mm512_set1_ps(inv));
            v = _mm512_max_ps(_mm512_min_ps(v, top), bottom);
            v = _mm512_add_ps(v, _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(v), sign),
                                                                       _mm512_castps_si512(half))));
            level[h] = _mm512_cvttps_epi32(v);
            _mm_storeu_si128((__m128i *)(q + 16 * h), _mm512_cvtepi32_epi8(level[h]));
        }
        d[b] = scale;
        sum[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(level[0], level[1]));
    }
}

TARGET_AVX2 static void quantize_avx2(const float *x, int nb, int8_t *q, float *d, int32_t *sum) {
    const __m256 top = _mm256_set1_ps(127.0f), bottom = _mm256_set1_ps(-127.0f), half = _mm256_set1_ps(0.5f);
    const __m256 sign = _mm256_set1_ps(-0.0f), magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int b = 0; b < nb; b++, x += QK8, q += QK8) {
        __m256 xs[4], m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            xs[k] = _mm256_loadu_ps(x + 8 * k);
            m = _mm256_max_ps(_mm256_and_ps(xs[k], magnitude), m);
        }
        float amax = max8_avx2(m);
        float scale = amax / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        __m256i level[4], total = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            __m256 v = _mm256_mul_ps(xs[k], _mm256_set1_ps(inv));
            v = _mm256_max_ps(_mm256_min_ps(v, top), bottom);
            v = _mm256_add_ps(v, _mm256_or_ps(_mm256_and_ps(v, sign), half));
            level[k] = _mm256_cvttps_epi32(v);
            total = _mm256_add_epi32(total, level[k]);
        }
        // 32 int32 -> 32 int8 in order: pack pairs to int16 (per 128-bit lane), then to int8, then fix the lanes
        __m256i w01 = _mm256_packs_epi32(level[0], level[1]), w23 = _mm256_packs_epi32(level[2], level[3]);
        __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w01, w23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)q, bytes);
        __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4E));
        d[b] = scale;
        sum[b] = _mm_cvtsi128_si32(_mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xB1)));
    }
}

static const Kernels kernels_avx2 = {"avx2", q4_tile_avx2, q8_tile_avx2, q4_scales_avx2, 1.0f, f16_rows_avx2,
                                     f32_rows_avx2, scores_avx2, mix_avx2, quantize_avx2, 1, 0, NULL, NULL, NULL};
static const Kernels kernels_avxvnni = {"avx-vnni", q4_tile_avxvnni, q8_tile_avxvnni, q4_scales_avx2, 1.0f,
                                        f16_rows_avx2, f32_rows_avx2, scores_avx2, mix_avx2, quantize_avx2, 1, 0, NULL,
                                        NULL, NULL};
static const Kernels kernels_avx512 = {"avx512", q4_tile_avx512, q8_tile_avx512, q4_scales_avx512, 1.0f,
                                       f16_rows_avx512, f32_rows_avx512, scores_avx512, mix_avx512, quantize_avx512, 0,
                                       0, NULL, NULL, NULL};
static const Kernels kernels_vnni = {"avx512-vnni", q4_tile_vnni, q8_tile_vnni, q4_scales_avx512, 1.0f / 16,
                                     f16_rows_avx512, f32_rows_avx512, scores_avx512, mix_avx512, quantize_avx512,
                                     8, 1, NULL, NULL, NULL};

// ---- x86 with AMX tiles (Sapphire Rapids and later): bf16 matrix products for batches of 16 tokens or more
//
// Prefill and images multiply every weight with many tokens, so the AMX set spends its vector work on the
// weights once and leaves the tokens to the tile unit: each group block of q4/q8 weights is widened to bf16
// (w = q·s − m in fp32 with its row's scale and minimum, then rounded), and the batch's activations are
// rounded to bf16 instead of being quantized. tdpbf16ps C += A·B then takes A as 16 tokens x 32 activations
// (1 KiB of that bf16 copy, which is stored tile by tile) and B as 16 lines of bf16 pairs, line p holding
// weights 2p and 2p+1 of each of the 16 rows: one 1 KiB piece of the widened block per 32 columns. C, 16 tokens x 16 rows of fp32, sums the
// tile's whole column range with no float work per block. Products of bf16 values are exact and the sums
// fp32, so a bf16 activation keeps 8 significant bits where an int8 block keeps 7 of its largest value: as
// good or better, but another rounding than the int8 kernels. A token's results in a batch of 16 or more
// therefore differ (slightly) from its results alone, where the AVX-512 VNNI kernels run: decoding, and
// batches of fewer than 16 tokens. tests/test_kernels.c checks the AMX results against a float64 sum of the
// same bf16 values.
#define TARGET_AMX __attribute__((target( \
    "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512bf16,amx-tile,amx-bf16")))

// The tile configuration (palette 1): tmm0-3 C, tmm4-5 A, tmm6-7 B, each 16 rows of 64 bytes. A global, so
// it is surely in memory when ldtilecfg reads it (a local one may not be written: the compiler cannot see
// that the instruction reads it).
static const _Alignas(64) uint8_t amx_config[64] = {
    1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,                      // palette 1, start row 0
    64, 0, 64, 0, 64, 0, 64, 0, 64, 0, 64, 0, 64, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  // bytes/row
    16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0,              // rows
};
static _Thread_local int amx_configured;  // ldtilecfg done on this thread

// One line of a group block as floats, f[q] = rows 4q .. 4q+3 x 4 weights in line order, into B lines
// out (weights 0, 1 of each row) and out + 32 (weights 2, 3). Rounded to bf16, rows 0-7 are 16 dwords
// holding pair h of row r in dword 2r + h, and likewise rows 8-15: a permute gathers each pair by row.
TARGET_AMX static INLINE void amx_bf16_line(const __m512 f[4], uint16_t *out) {
    const __m512i pair0 = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i pair1 = _mm512_add_epi32(pair0, _mm512_set1_epi32(1));
    __m512i rows0 = (__m512i)_mm512_cvtne2ps_pbh(f[1], f[0]), rows8 = (__m512i)_mm512_cvtne2ps_pbh(f[3], f[2]);
    _mm512_store_si512(out, _mm512_permutex2var_epi32(rows0, pair0, rows8));
    _mm512_store_si512(out + 32, _mm512_permutex2var_epi32(rows0, pair1, rows8));
}

// The 16 lanes of v (one per row) spread over a line's order: by_row(v)[q] lane e = v[4q + e/4].
TARGET_AMX static INLINE void amx_by_row(__m512 v, __m512 out[4]) {
    const __m512i first = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    #pragma GCC unroll 4
    for (int q = 0; q < 4; q++) out[q] = _mm512_permutexvar_ps(_mm512_add_epi32(first, _mm512_set1_epi32(4 * q)), v);
}

// A q4 group block widened: sub-block j's 32 columns at out + 512j (16 lines of 32 bf16). Line 8(j/2) + i
// holds them as v & 0x0F (j even) or v & 0xF0, levels times 16, whose scales q4_odd = 1/16 divides: the same
// fp32 value q·s − m either way.
TARGET_AMX static void q4_bf16_amx(const BlockQ4x16 *blk, const float *scales, uint16_t *out) {
    for (int j = 0; j < 8; j++) {
        __m512 s[4], m[4];
        amx_by_row(_mm512_loadu_ps(scales + 16 * j), s);
        amx_by_row(_mm512_loadu_ps(scales + 128 + 16 * j), m);
        const __m512i mask = _mm512_set1_epi32(j % 2 ? 0xF0 : 0x0F);
        for (int i = 0; i < 8; i++) {
            const uint8_t *line = blk->qs + 64 * (8 * (j / 2) + i);
            if (j % 2 == 0) prefetch_lines(blk, PREFETCH_AHEAD, 0, j / 2, i);
            __m512 f[4];
            #pragma GCC unroll 4
            for (int q = 0; q < 4; q++) {
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(line + 16 * q)));
                v = _mm512_and_si512(v, mask);
                f[q] = _mm512_fmsub_ps(_mm512_cvtepi32_ps(v), s[q], m[q]);
            }
            amx_bf16_line(f, out + 512 * j + 64 * i);
        }
    }
}

// A q8 group block widened (32 columns: 512 bf16): w = d·q.
TARGET_AMX static void q8_bf16_amx(const BlockQ8x16 *blk, uint16_t *out) {
    __m512 d[4];
    amx_by_row(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk->d)), d);
    prefetch_lines(blk, PREFETCH_AHEAD, 0, 0, 0);
    for (int i = 0; i < 8; i++) {
        __m512 f[4];
        #pragma GCC unroll 4
        for (int q = 0; q < 4; q++)
            f[q] = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk->q + 64 * i + 16 * q)))), d[q]);
        amx_bf16_line(f, out + 64 * i);
    }
}

// n activations rounded to bf16 (to nearest even; n a multiple of 32), 32 at out + 512i.
TARGET_AMX static void acts_bf16_amx(const float *x, int n, uint16_t *out) {
    for (int i = 0; i < n; i += 32)
        _mm512_store_si512(out + 16 * i,
                           (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
}

// C tile c (0..3) loaded from, or stored to, rows `stride` bytes apart (tile numbers must be constants).
TARGET_AMX static INLINE void amx_load_c(int c, const float *from, int stride) {
    switch (c) {
    case 0: _tile_loadd(0, from, stride); break;
    case 1: _tile_loadd(1, from, stride); break;
    case 2: _tile_loadd(2, from, stride); break;
    default: _tile_loadd(3, from, stride); break;
    }
}

TARGET_AMX static INLINE void amx_zero_c(int c) {
    switch (c) {
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    default: _tile_zero(3); break;
    }
}

TARGET_AMX static INLINE void amx_store_c(int c, float *to, int stride) {
    switch (c) {
    case 0: _tile_stored(0, to, stride); break;
    case 1: _tile_stored(1, to, stride); break;
    case 2: _tile_stored(2, to, stride); break;
    default: _tile_stored(3, to, stride); break;
    }
}

// nt <= 32 tokens (A tiles 4, 5: 16 tokens each) times the rows of the tile's group (weights wb, B tile 6)
// and of a second group (wb2, B tile 7) over `steps` pieces of 32 columns: C tile 2h + u for group h and
// tokens 16u.., four multiplies for the two A and two B tiles each step loads. A partial token tile
// multiplies whatever the scratch holds past the batch, and only its first rows are kept; C tiles without
// tokens or without a second group multiply the first ones again and are dropped.
TARGET_AMX static void amx_tile(const Tile *p, int nt, int steps) {
    if (!amx_configured) {
        _tile_loadconfig(amx_config);
        amx_configured = 1;
    }
    _Alignas(64) float part[2][16][16];
    int tiles = (nt + 15) / 16, last = nt - 16 * (tiles - 1), groups = p->wb2 ? 2 : 1;
    for (int c = 0; c < 4; c++) {
        int h = c / 2, u = c % 2;
        float *out = (h ? p->out2 : p->out) + (size_t)16 * u * p->ostride;
        if (!p->load || u >= tiles || h >= groups) {
            amx_zero_c(c);
        } else if (u < tiles - 1 || last == 16) {
            amx_load_c(c, out, p->ostride * 4);
        } else {
            for (int t = 0; t < last; t++) memcpy(part[h][t], out + t * p->ostride, sizeof part[h][t]);
            amx_load_c(c, part[h][0], 64);
        }
    }
    const uint16_t *x0 = p->xb, *x1 = tiles > 1 ? x0 + p->xbstride : x0, *w0 = p->wb, *w1 = p->wb2 ? p->wb2 : w0;
    for (int i = 0; i < steps; i++) {
        _tile_loadd(4, x0 + 512 * i, 64);
        _tile_loadd(5, x1 + 512 * i, 64);
        _tile_loadd(6, w0 + 512 * i, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 5, 6);
        _tile_loadd(7, w1 + 512 * i, 64);
        _tile_dpbf16ps(2, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
    }
    for (int c = 0; c < 4; c++) {
        int h = c / 2, u = c % 2;
        float *out = (h ? p->out2 : p->out) + (size_t)16 * u * p->ostride;
        if (u >= tiles || h >= groups) continue;
        if (u < tiles - 1 || last == 16) {
            amx_store_c(c, out, p->ostride * 4);
        } else {
            amx_store_c(c, part[h][0], 64);
            for (int t = 0; t < last; t++) memcpy(out + t * p->ostride, part[h][t], sizeof part[h][t]);
        }
    }
}

TARGET_AMX static void q4_tile_amx(const Tile *p, int nt) {
    if (p->wb) amx_tile(p, nt, 8 * p->nb);
    else q4_tile_vnni(p, nt);
}

TARGET_AMX static void q8_tile_amx(const Tile *p, int nt) {
    if (p->wb) amx_tile(p, nt, p->nb);
    else q8_tile_vnni(p, nt);
}

// Whether AMX bf16 runs: the CPU has it (CPUID 7.0 EDX bits 22, 24: AMX-BF16, AMX-TILE; 7.1 EAX bit 5:
// AVX512-BF16) and the kernel lets this process use the tile data (Linux: arch_prctl ARCH_REQ_XCOMP_PERM,
// once, for all threads).
static int amx_usable(void) {
    static int usable = -1;
    if (usable >= 0) return usable;
    unsigned a, b, c, d, a1, b1, c1, d1;
    usable = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1) && (d >> 24 & 1) &&
             __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 >> 5 & 1);
#if defined(__linux__)
    if (usable) usable = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    usable = 0;
#endif
    return usable;
}

static const Kernels kernels_amx = {"amx", q4_tile_amx, q8_tile_amx, q4_scales_avx512, 1.0f / 16, f16_rows_avx512,
                                    f32_rows_avx512, scores_avx512, mix_avx512, quantize_avx512, 8, 1,
                                    acts_bf16_amx, q4_bf16_amx, q8_bf16_amx};
#endif // x86

// ---- arm64: NEON, and NEON with the dot-product instructions (sdot: ARMv8.2, optional before 8.4)
//
// As on x86, a body per number of tokens, its token loops unrolled by their largest trip count (for clang).
#if defined(__aarch64__)
#include <arm_neon.h>
#define HAVE_NEON_KERNELS
#ifndef INLINE
#define INLINE inline __attribute__((always_inline))
#endif
#if defined(__ARM_FEATURE_DOTPROD)
#define HAVE_DOTPROD_KERNELS
#define TARGET_DOTPROD
#elif defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10
#define HAVE_DOTPROD_KERNELS
#define TARGET_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

// 4 rows of 4 bytes (w) times 4 bytes repeated in each lane (x): lane r += the 4 products of row r.
typedef int32x4_t Dot4(int32x4_t acc, int8x16_t w, int8x16_t x);

static INLINE int32x4_t dot4_neon(int32x4_t acc, int8x16_t w, int8x16_t x) {
    int16x8_t rows01 = vmull_s8(vget_low_s8(w), vget_low_s8(x)), rows23 = vmull_high_s8(w, x);
    return vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(rows01), vpaddlq_s16(rows23)));
}

static INLINE int8x16_t broadcast4_neon(const int8_t *x) { return vreinterpretq_s8_s32(vdupq_n_s32(load_i32(x))); }

// q4_scales_scalar, 4 rows (quad q) at a time: vld3q_u32 deals their 12 dwords out as dwords 0, 1 and 2 of
// each row, w[k] lane r = dword 3r + k; values as in the AVX-512 version (q4_scale_value).
static void q4_scales_neon(const BlockQ4x16 *blk, float odd, float *out) {
    for (int q = 0; q < 4; q++) {
        float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(blk->d + 4 * q)));
        float32x4_t dmin = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(blk->dmin + 4 * q)));
        float32x4_t d_odd = vmulq_n_f32(d, odd);
        uint32x4x3_t w = vld3q_u32((const uint32_t *)blk->scales[4 * q]);
        #pragma GCC unroll 16
        for (int v = 0; v < 16; v++) {
            int bit = 6 * v, k = bit / 32, shift = bit % 32;
            uint32x4_t value = vshlq_u32(w.val[k], vdupq_n_s32(-shift));
            if (shift > 26) value = vorrq_u32(value, vshlq_u32(w.val[k + 1], vdupq_n_s32(32 - shift)));
            value = vandq_u32(value, vdupq_n_u32(63));
            vst1q_f32(out + 16 * v + 4 * q, vmulq_f32(vcvtq_f32_u32(value), v >= 8 ? dmin : v % 2 ? d_odd : d));
        }
    }
}

// q4, one token (decoding): all 4 quads of each line, and its low and high nibbles (sub-blocks 2k and 2k+1)
// from one load. A tile without scales makes each block's into L1 just before its levels.
static INLINE void q4_tile_neon_one(const Tile *p, Dot4 *dot4) {
    float32x4_t acc[4];
    for (int q = 0; q < 4; q++) acc[q] = p->load ? vld1q_f32(p->out + 4 * q) : vdupq_n_f32(0.0f);
    const uint8x16_t low = vdupq_n_u8(15);
    float own[256];
    for (int b = 0; b < p->nb; b++) {
        const BlockQ4x16 *blk = (const BlockQ4x16 *)p->w + b;
        if (!p->scales) q4_scales_neon(blk, 1.0f, own);
        const float *sc = p->scales ? p->scales + 256 * b : own, *mn = sc + 128;
        for (int k = 0; k < 4; k++) {
            int32x4_t even[4], odd[4];
            for (int q = 0; q < 4; q++) even[q] = odd[q] = vdupq_n_s32(0);
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                prefetch_lines(blk, p->prefetch, 1, k, i);
                const int8_t *x = p->xq + QK4 * b + 64 * k + 4 * i;
                int8x16_t x_even = broadcast4_neon(x), x_odd = broadcast4_neon(x + 32);
                #pragma GCC unroll 4
                for (int q = 0; q < 4; q++) {
                    uint8x16_t v = vld1q_u8(blk->qs + 64 * (8 * k + i) + 16 * q);
                    even[q] = dot4(even[q], vreinterpretq_s8_u8(vandq_u8(v, low)), x_even);
                    odd[q] = dot4(odd[q], vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), x_odd);
                }
            }
            int j = 8 * b + 2 * k;
            #pragma GCC unroll 4
            for (int q = 0; q < 4; q++) {
                float32x4_t sc0 = vld1q_f32(sc + 32 * k + 4 * q), sc1 = vld1q_f32(sc + 32 * k + 16 + 4 * q);
                float32x4_t mn0 = vld1q_f32(mn + 32 * k + 4 * q), mn1 = vld1q_f32(mn + 32 * k + 16 + 4 * q);
                acc[q] = vfmaq_f32(acc[q], vcvtq_f32_s32(even[q]), vmulq_n_f32(sc0, p->dx[j]));
                acc[q] = vfmsq_f32(acc[q], mn0, vdupq_n_f32(p->dsum[j]));
                acc[q] = vfmaq_f32(acc[q], vcvtq_f32_s32(odd[q]), vmulq_n_f32(sc1, p->dx[j + 1]));
                acc[q] = vfmsq_f32(acc[q], mn1, vdupq_n_f32(p->dsum[j + 1]));
            }
        }
    }
    for (int q = 0; q < 4; q++) vst1q_f32(p->out + 4 * q, acc[q]);
}

// q4: 4 rows (a quarter of each line) by up to 4 tokens at a time.
static INLINE void q4_tile_neon_n(const Tile *p, int quad, int t0, const int nt, Dot4 *dot4) {
    float32x4_t acc[4];
    float *out = p->out + t0 * p->ostride + 4 * quad;
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) acc[t] = p->load ? vld1q_f32(out + t * p->ostride) : vdupq_n_f32(0.0f);
    const uint8x16_t low = vdupq_n_u8(15);
    for (int b = 0; b < p->nb; b++) {
        const BlockQ4x16 *blk = (const BlockQ4x16 *)p->w + b;
        const float *sc = p->scales + 256 * b + 4 * quad, *mn = sc + 128;
        for (int j = 0; j < 8; j++) {
            int32x4_t isum[4];
            #pragma GCC unroll 4
            for (int t = 0; t < nt; t++) isum[t] = vdupq_n_s32(0);
            for (int i = 0; i < 8; i++) {
                uint8x16_t v = vld1q_u8(blk->qs + 64 * (8 * (j / 2) + i) + 16 * quad);
                if (quad == 0 && t0 == 0 && j % 2 == 0) prefetch_lines(blk, p->prefetch, nt == 1, j / 2, i);
                int8x16_t q = vreinterpretq_s8_u8(j % 2 ? vshrq_n_u8(v, 4) : vandq_u8(v, low));
                #pragma GCC unroll 4
                for (int t = 0; t < nt; t++)
                    isum[t] = dot4(isum[t], q, broadcast4_neon(p->xq + (t0 + t) * p->xstride + QK4 * b + 32 * j + 4 * i));
            }
            float32x4_t scj = vld1q_f32(sc + 16 * j), mnj = vld1q_f32(mn + 16 * j);
            #pragma GCC unroll 4
            for (int t = 0; t < nt; t++) {
                int jx = (t0 + t) * p->bstride + 8 * b + j;
                acc[t] = vfmaq_f32(acc[t], vcvtq_f32_s32(isum[t]), vmulq_n_f32(scj, p->dx[jx]));
                acc[t] = vfmsq_f32(acc[t], mnj, vdupq_n_f32(p->dsum[jx]));
            }
        }
    }
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) vst1q_f32(out + t * p->ostride, acc[t]);
}

static INLINE void q8_tile_neon_n(const Tile *p, int quad, int t0, const int nt, Dot4 *dot4) {
    float32x4_t acc[4];
    float *out = p->out + t0 * p->ostride + 4 * quad;
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) acc[t] = p->load ? vld1q_f32(out + t * p->ostride) : vdupq_n_f32(0.0f);
    for (int b = 0; b < p->nb; b++) {
        const BlockQ8x16 *blk = (const BlockQ8x16 *)p->w + b;
        int32x4_t isum[4];
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++) isum[t] = vdupq_n_s32(0);
        for (int i = 0; i < 8; i++) {
            if (quad == 0 && t0 == 0) prefetch_lines(blk, p->prefetch, nt == 1, 0, i);
            int8x16_t v = vld1q_s8(blk->q + 64 * i + 16 * quad);
            #pragma GCC unroll 4
            for (int t = 0; t < nt; t++)
                isum[t] = dot4(isum[t], v, broadcast4_neon(p->xq + (t0 + t) * p->xstride + QK8 * b + 4 * i));
        }
        float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(blk->d + 4 * quad)));
        #pragma GCC unroll 4
        for (int t = 0; t < nt; t++)
            acc[t] = vfmaq_f32(acc[t], vcvtq_f32_s32(isum[t]), vmulq_n_f32(d, p->dx[(t0 + t) * p->bstride + b]));
    }
    #pragma GCC unroll 4
    for (int t = 0; t < nt; t++) vst1q_f32(out + t * p->ostride, acc[t]);
}

static INLINE void q4_tile_neon_all(const Tile *p, int nt, Dot4 *dot4) {
    if (nt == 1) {
        q4_tile_neon_one(p, dot4);
        return;
    }
    for (int quad = 0; quad < 4; quad++)
        for (int t = 0; t < nt; t += 4) {
            switch (nt - t < 4 ? nt - t : 4) {
            case 4: q4_tile_neon_n(p, quad, t, 4, dot4); break;
            case 2: q4_tile_neon_n(p, quad, t, 2, dot4); break;
            default: q4_tile_neon_n(p, quad, t, 1, dot4); break;
            }
        }
}

static INLINE void q8_tile_neon_all(const Tile *p, int nt, Dot4 *dot4) {
    for (int quad = 0; quad < 4; quad++)
        for (int t = 0; t < nt; t += 4) {
            switch (nt - t < 4 ? nt - t : 4) {
            case 4: q8_tile_neon_n(p, quad, t, 4, dot4); break;
            case 2: q8_tile_neon_n(p, quad, t, 2, dot4); break;
            default: q8_tile_neon_n(p, quad, t, 1, dot4); break;
            }
        }
}

static void q4_tile_neon(const Tile *p, int nt) { q4_tile_neon_all(p, nt, dot4_neon); }
static void q8_tile_neon(const Tile *p, int nt) { q8_tile_neon_all(p, nt, dot4_neon); }

#ifdef HAVE_DOTPROD_KERNELS
TARGET_DOTPROD static INLINE int32x4_t dot4_sdot(int32x4_t acc, int8x16_t w, int8x16_t x) { return vdotq_s32(acc, w, x); }
TARGET_DOTPROD static void q4_tile_neondot(const Tile *p, int nt) { q4_tile_neon_all(p, nt, dot4_sdot); }
TARGET_DOTPROD static void q8_tile_neondot(const Tile *p, int nt) { q8_tile_neon_all(p, nt, dot4_sdot); }
#endif

// f32 and f16 rows: four 4-lane partial sums over columns 16c..16c+15, reduced in a fixed order, then a
// scalar tail.
static INLINE float32x4_t load_weights_neon(const void *row, int f16, int i) {
    if (f16) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)row + i)));
    return vld1q_f32((const float *)row + i);
}

static void float_rows_neon(const Tensor *w, int r0, int r1, const float *x, int n, float *out, int f16) {
    int cols = w->cols;
    for (int r = r0; r < r1; r++) {
        const void *row = (const uint8_t *)w->data + (size_t)r * cols * (f16 ? 2 : 4);
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * cols;
            float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
            int i = 0;
            for (; i + 16 <= cols; i += 16)
                for (int k = 0; k < 4; k++)
                    acc[k] = vfmaq_f32(acc[k], load_weights_neon(row, f16, i + 4 * k), vld1q_f32(xt + i + 4 * k));
            float sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
            for (; i < cols; i++) sum += (f16 ? fp16_to_f32(((const uint16_t *)row)[i]) : ((const float *)row)[i]) * xt[i];
            out[(size_t)t * w->rows + r] = sum;
        }
    }
}

static void f32_rows_neon(const Tensor *w, int r0, int r1, const float *x, int n, float *out) {
    float_rows_neon(w, r0, r1, x, n, out, 0);
}

static void f16_rows_neon(const Tensor *w, int r0, int r1, const float *x, int n, float *out) {
    float_rows_neon(w, r0, r1, x, n, out, 1);
}

// Attention: four 4-lane partial sums and a scalar tail.
static void scores_neon(const float *q, int nq, int d, const float *keys, size_t stride, int len, float scale,
                        float *s, size_t ld) {
    for (int j = 0; j < len; j++) {
        const float *key = keys + j * stride;
        for (int a = 0; a < nq; a++) {
            const float *qa = q + a * d;
            float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
            int i = 0;
            for (; i + 16 <= d; i += 16)
                for (int k = 0; k < 4; k++) acc[k] = vfmaq_f32(acc[k], vld1q_f32(qa + i + 4 * k), vld1q_f32(key + i + 4 * k));
            float dot = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
            for (; i < d; i++) dot += qa[i] * key[i];
            s[a * ld + j] = dot * scale;
        }
    }
}

static void mix_neon(const float *p, size_t ld, int nq, int d, const float *values, size_t stride, int len,
                     float *out) {
    for (int j = 0; j < len; j++) {
        const float *value = values + j * stride;
        for (int a = 0; a < nq; a++) {
            float pj = p[a * ld + j], *o = out + a * d;
            int i = 0;
            for (; i + 4 <= d; i += 4) vst1q_f32(o + i, vfmaq_n_f32(vld1q_f32(o + i), vld1q_f32(value + i), pj));
            for (; i < d; i++) o[i] += pj * value[i];
        }
    }
}

// Activations: as the x86 versions (vminq/vmaxq would pass NaN on, so the clamps are compare-and-select).
static void quantize_neon(const float *x, int nb, int8_t *q, float *d, int32_t *sum) {
    const float32x4_t top = vdupq_n_f32(127.0f), bottom = vdupq_n_f32(-127.0f);
    for (int b = 0; b < nb; b++, x += QK8, q += QK8) {
        float32x4_t xs[8], m = vdupq_n_f32(0.0f);
        for (int k = 0; k < 8; k++) {
            xs[k] = vld1q_f32(x + 4 * k);
            float32x4_t a = vabsq_f32(xs[k]);
            m = vbslq_f32(vcgtq_f32(a, m), a, m);  // a > m ? a : m, as the scalar loop
        }
        float amax = vmaxvq_f32(m);
        float scale = amax / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        int32x4_t total = vdupq_n_s32(0);
        int16x8_t pairs[4];
        for (int k = 0; k < 8; k++) {
            float32x4_t v = vmulq_n_f32(xs[k], inv);
            v = vbslq_f32(vcltq_f32(v, top), v, top);
            v = vbslq_f32(vcgtq_f32(v, bottom), v, bottom);
            float32x4_t half = vbslq_f32(vcgeq_f32(v, vdupq_n_f32(0.0f)), vdupq_n_f32(0.5f), vdupq_n_f32(-0.5f));
            int32x4_t level = vcvtq_s32_f32(vaddq_f32(v, half));  // truncates
            total = vaddq_s32(total, level);
            if (k % 2) pairs[k / 2] = vcombine_s16(vget_low_s16(pairs[k / 2]), vmovn_s32(level));
            else pairs[k / 2] = vcombine_s16(vmovn_s32(level), vdup_n_s16(0));
        }
        vst1q_s8(q, vcombine_s8(vmovn_s16(pairs[0]), vmovn_s16(pairs[1])));
        vst1q_s8(q + 16, vcombine_s8(vmovn_s16(pairs[2]), vmovn_s16(pairs[3])));
        d[b] = scale;
        sum[b] = vaddvq_s32(total);
    }
}

static const Kernels kernels_neon = {"neon", q4_tile_neon, q8_tile_neon, q4_scales_neon, 1.0f, f16_rows_neon,
                                     f32_rows_neon, scores_neon, mix_neon, quantize_neon, 1, 0, NULL, NULL, NULL};
#ifdef HAVE_DOTPROD_KERNELS
static const Kernels kernels_neondot = {"neon-dotprod", q4_tile_neondot, q8_tile_neondot, q4_scales_neon, 1.0f,
                                        f16_rows_neon, f32_rows_neon, scores_neon, mix_neon, quantize_neon, 1, 0, NULL,
                                        NULL, NULL};
#endif
#if defined(__linux__)
#include <sys/auxv.h>
#endif
#endif // arm64

// ---- choosing the kernels, and matmul

// Every kernel set compiled in, the plain one first.
static const Kernels *const all_kernels[] = {
    &kernels_scalar,
#ifdef HAVE_X86_KERNELS
    &kernels_avx2, &kernels_avxvnni, &kernels_avx512, &kernels_vnni, &kernels_amx,
#endif
#ifdef HAVE_NEON_KERNELS
    &kernels_neon,
#endif
#ifdef HAVE_DOTPROD_KERNELS
    &kernels_neondot,
#endif
};

// Whether this CPU runs a kernel set.
static int kernels_supported(const Kernels *k) {
#ifdef HAVE_X86_KERNELS
    __builtin_cpu_init();
    // (F16C, the fp16 conversions, came before AVX2 and FMA on Intel and AMD; not every compiler can ask)
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    if (k == &kernels_avx2) return avx2;
    unsigned a, b, c, d;  // AVX-VNNI: CPUID 7.1 EAX bit 4 (not every compiler's __builtin_cpu_supports knows it)
    if (k == &kernels_avxvnni) return avx2 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1);
    if (k == &kernels_avx512) return avx512;
    if (k == &kernels_vnni) return avx512 && __builtin_cpu_supports("avx512vnni");
    if (k == &kernels_amx) return avx512 && __builtin_cpu_supports("avx512vnni") && amx_usable();
#endif
#ifdef HAVE_DOTPROD_KERNELS
#if defined(__ARM_FEATURE_DOTPROD)
    if (k == &kernels_neondot) return 1;
#elif defined(__linux__)
    if (k == &kernels_neondot) return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
    if (k == &kernels_neondot) return 0;
#endif
#endif
    (void)k;
    return 1;
}

static const Kernels *kernels;  // the set matmul uses: kernels_for_cpu() unless --kernels chose one

// The best set this CPU runs (the last supported one in all_kernels).
static const Kernels *kernels_for_cpu(void) {
    const Kernels *best = &kernels_scalar;
    for (size_t i = 0; i < sizeof all_kernels / sizeof *all_kernels; i++)
        if (kernels_supported(all_kernels[i])) best = all_kernels[i];
    return best;
}

// The set named `name` if this CPU runs it, else NULL.
static const Kernels *kernels_by_name(const char *name) {
    for (size_t i = 0; i < sizeof all_kernels / sizeof *all_kernels; i++)
        if (strcmp(all_kernels[i]->name, name) == 0) return kernels_supported(all_kernels[i]) ? all_kernels[i] : NULL;
    return NULL;
}

#ifdef __APPLE__
#include <sys/sysctl.h>
#endif

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int thread_count(void) {  // in the current team
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// The set in use: --kernels' choice, or (the first time, if none) the best for this CPU.
static const Kernels *kernel_set(void) {
    if (!kernels) kernels = kernels_for_cpu();
    return kernels;
}

// Threads by default: one per physical core (a core's second hyper-thread shares its SIMD units and gains
// nothing here). Linux: the distinct (physical id, core id) pairs of /proc/cpuinfo; macOS: hw.physicalcpu;
// else, or if those say nothing, every processor OpenMP may use.
static int physical_cores(void) {
    int procs = 1, cores = 0;
#ifdef _OPENMP
    procs = omp_get_num_procs();
#endif
#if defined(__linux__)
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    int package = 0, seen[1024][2];
    while (f && fgets(line, sizeof line, f)) {
        int v;
        if (sscanf(line, "physical id : %d", &v) == 1) package = v;
        else if (sscanf(line, "core id : %d", &v) == 1) {
            int known = 0;
            for (int i = 0; i < cores && !known; i++) known = seen[i][0] == package && seen[i][1] == v;
            if (!known && cores < 1024) { seen[cores][0] = package; seen[cores][1] = v; cores++; }
        }
    }
    if (f) fclose(f);
#elif defined(__APPLE__)
    size_t len = sizeof cores;
    if (sysctlbyname("hw.physicalcpu", &cores, &len, NULL, 0) != 0) cores = 0;
#endif
    return cores > 0 && cores < procs ? cores : procs;
}

// Token chunks: q8/q4 activations are quantized into this scratch, so matmul never allocates.
#define ACT_LEVELS (9 << 20)         // 9 MiB: 256 tokens (a forward chunk) of 32768 (the feed-forward's width)
#define ACT_BLOCKS (ACT_LEVELS / 16)
static _Alignas(64) int8_t act_levels[ACT_LEVELS];
static _Alignas(64) uint16_t act_bf16[2 * ACT_LEVELS];  // AMX; room for a partial tile past a chunk
static float act_scales[ACT_BLOCKS], act_dsums[ACT_BLOCKS];
static int32_t act_sums[ACT_BLOCKS];
// Products smaller than this (multiply-adds) run on one thread: waking the others would cost more.
#define PARALLEL_WORK (1 << 20)

// Where tiles put their sums: row r of group g for token t at at[t·ostride + g·gstride + r]. For one_tile
// batches (decoding) and AMX tiles, out itself (ostride = rows, gstride = 16). Other tiles add one range of
// columns at a time to sums that the next range's tiles read back: in out, a tile's tokens would be whole
// rows of out apart, which the hardware prefetcher does not follow, and each tile would start by waiting
// for memory (6-9% of the kernel's time). So they keep them in partial_sums, (group, token, 16 rows), where
// a group's tiles walk them in order, copied into out at the end (2 threads, prefill of 256 tokens
// 11.7-14.5 -> 15.4-15.8 tok/s, of 512 tokens 10.3-12.2 -> 12.4-15.6); in out if they do not fit.
typedef struct { float *at; size_t ostride, gstride; } Sums;
#define PARTIAL_SUMS (8 << 20)       // floats: 256 tokens of 32768 rows
static _Alignas(64) float partial_sums[PARTIAL_SUMS];

// The tile of group g from token t and column c, nb blocks long.
static Tile tile_at(const Tensor *w, int g, const QuantizedActs *a, int t, int c, int nb, const Sums *out) {
    int q4 = w->type == TYPE_Q4, block = q4 ? QK4 : QK8;
    size_t j = (size_t)t * a->bstride + c / QK8, block_bytes = q4 ? sizeof(BlockQ4x16) : sizeof(BlockQ8x16);
    Tile p = {.w = (const uint8_t *)w->data + ((size_t)g * (w->cols / block) + c / block) * block_bytes, .nb = nb,
              .xq = a->q + (size_t)t * a->xstride + c, .xb = a->xb ? a->xb + (size_t)t * a->cols + 16 * c : NULL,
              .xbstride = 16 * a->cols, .dx = a->d + j, .dsum = a->dsum + j, .sum = a->sum + j,
              .xstride = a->xstride, .bstride = a->bstride, .out = out->at + t * out->ostride + g * out->gstride,
              .ostride = (int)out->ostride};
    return p;
}

// Whether a batch of n tokens (1, 2, 4 or 8: decoding) goes through each group as one tile over a whole
// range of columns, rather than in tiles over a few blocks at a time.
static int one_tile(int n) { return n <= 8 && (n & (n - 1)) == 0; }

// out for the 16 rows of group g, the n tokens of a and the columns [k0, k1), a few blocks at a time: the
// q4 scales of those blocks, then every tile over them (8, 4, 2, 1 tokens), the first tile fetching the
// next blocks from memory, the others finding these in L1.
// A batch for one_tile makes each q4 block's scales itself (q4_own_scales) or gets them block by block just
// before the block's levels. A tile may cover a second group g2 as well (g2 >= 0, if the set takes pairs).
static void matmul_group(const Kernels *k, const Tensor *w, int g, int g2, const QuantizedActs *a, int n, int k0,
                         int k1, const Sums *out) {
    int q4 = w->type == TYPE_Q4, block = q4 ? QK4 : QK8;
    int own_scales = q4 && one_tile(n) && n <= k->q4_own_scales;
    int step = !one_tile(n) ? (q4 ? 4 : 16) : q4 && !own_scales ? 1 : (k1 - k0) / block;  // about 9 KiB, or all
    TileKernel *kernel = q4 ? k->q4 : k->q8;
    float scales[2 * 4 * 256];  // group g's, then g2's
    // Decoding, each group's results (a line per token) were last touched a whole pass over the weights ago
    // and may be in no cache: ask for the next groups' lines, to write, a tile ahead. Else storing a tile's
    // results can wait for memory, and the next tile's setup behind the stores (seen: 2.7% of the time of
    // a decode on 1 thread).
    for (int t = 0; t < n && one_tile(n); t++) {
        __builtin_prefetch(out->at + t * out->ostride + (g + 1) * out->gstride, 1);
        if (g2 >= 0) __builtin_prefetch(out->at + t * out->ostride + (g2 + 1) * out->gstride, 1);
    }
    for (int c = k0; c < k1; c += step * block) {
        int nb = (k1 - c) / block < step ? (k1 - c) / block : step;
        for (int h = 0; h < (g2 >= 0 ? 2 : 1) && q4 && !own_scales; h++) {
            const BlockQ4x16 *first = tile_at(w, h ? g2 : g, a, 0, c, nb, out).w;
            for (int b = 0; b < nb; b++) k->q4_scales(first + b, k->q4_odd, scales + 256 * (h * nb + b));
        }
        for (int t = 0, nt; t < n; t += nt) {
            for (nt = 8; nt > n - t; nt /= 2) {}
            Tile p = tile_at(w, g, a, t, c, nb, out);
            if (g2 >= 0) {
                Tile second = tile_at(w, g2, a, t, c, nb, out);
                p.w2 = second.w;
                p.out2 = second.out;
            }
            p.scales = own_scales ? NULL : scales;
            p.load = c > 0;
            p.prefetch = t == 0 ? PREFETCH_AHEAD : 0;
            kernel(&p, nt);
        }
    }
}

// The same with AMX (a->xb: bf16 activations) for groups g and g2 (g2 >= 0) or g alone: their blocks widened
// to bf16, eight q4 or 32 q8 blocks at a time (up to 128 KiB for both groups: a whole range of a 256-token
// chunk), each q4 block's scales just before it so that the widening's prefetches cover them; then tiles of
// 32 tokens x both groups over them. Each such step loads and stores the tiles' sums once: with four q4
// blocks per step, prefill was slower (Intel Xeon, 2 threads, alternating runs: 128 tokens 20.9-22.7 tok/s
// against 25.1-25.8, 512 tokens 16.3-22.8 against 23.5-24.1); with 16 (the range of a 128-token chunk) 5%
// slower.
static void matmul_groups_bf16(const Kernels *k, const Tensor *w, int g, int g2, const QuantizedActs *a, int n,
                               int k0, int k1, const Sums *out) {
    int q4 = w->type == TYPE_Q4, block = q4 ? QK4 : QK8, step = q4 ? 8 : 32, ng = g2 >= 0 ? 2 : 1;
    float scales[256];
    _Alignas(64) uint16_t wb[2][8 * 4096];
    for (int c = k0; c < k1; c += step * block) {
        int nb = (k1 - c) / block < step ? (k1 - c) / block : step;
        for (int h = 0; h < ng; h++) {
            const void *first = tile_at(w, h ? g2 : g, a, 0, c, nb, out).w;
            for (int b = 0; b < nb; b++) {
                if (q4) {
                    k->q4_scales((const BlockQ4x16 *)first + b, k->q4_odd, scales);
                    k->q4_bf16((const BlockQ4x16 *)first + b, scales, wb[h] + 4096 * b);
                } else {
                    k->q8_bf16((const BlockQ8x16 *)first + b, wb[h] + 512 * b);
                }
            }
        }
        for (int t = 0; t < n; t += 32) {
            Tile p = tile_at(w, g, a, t, c, nb, out);
            p.wb = wb[0];
            p.wb2 = ng == 2 ? wb[1] : NULL;
            p.out2 = ng == 2 ? tile_at(w, g2, a, t, c, nb, out).out : NULL;
            p.load = c > 0;
            (q4 ? k->q4 : k->q8)(&p, n - t < 32 ? n - t : 32);
        }
    }
}

// Thread id's share of the groups of a matmul, [g0, g1), in units of work. Where tiles take two groups (one
// token, to read two streams; a prompt's tiles over a few blocks, to share each activation between both),
// unit i < pairs is group g0 + i with g0 + pairs + i, half the share on: the thread reads its weights as two
// continuous streams (a new stream at every tile would wait for the hardware prefetcher to find it again);
// the other units are one group each (an odd last group, or all of them).
typedef struct { int g0, g1, pairs; } Share;

static Share share_of(int groups, int id, int threads, int paired) {
    int g0 = (int)((long long)groups * id / threads), g1 = (int)((long long)groups * (id + 1) / threads);
    return (Share){g0, g1, paired ? (g1 - g0) / 2 : 0};
}

static int units(const Share *s) { return s->g1 - s->g0 - s->pairs; }

// The first group of unit i of share s; *g2 = the second, or -1.
static int unit_groups(const Share *s, int i, int *g2) {
    *g2 = i < s->pairs ? s->g0 + i + s->pairs : -1;
    return i < s->pairs ? s->g0 + i : s->g0 + s->pairs + i;
}

// Decoding, on a machine where other programs run, one thread often finishes its share first and waits for
// the others at the end of every matmul (2 threads: 3.7% of all samples). So one_tile batches claim each unit
// as they go: a thread goes forward through its own share, then backwards from the end of the others' (the
// next thread's first), each until it meets a unit already claimed. Of the threads that come to a share from
// its end, only the first to claim its last unit goes on, so a share's units are claimed as a prefix and a
// suffix that meet, and each is done once. (2 threads, decode: 7 of 8 interleaved runs faster, median +7%.)
// On one thread there is no one to wait for, and a claim, an atomic exchange, waits for the loads before it.
static unsigned char claimed[1 << 16];  // by the unit's first group; for matrices of up to 2^20 rows

static int claim(const Share *s, int i) {  // unit i of share s
    int g2, g = unit_groups(s, i, &g2);
    unsigned char was;
    #pragma omp atomic capture
    { was = claimed[g]; claimed[g] = 1; }
    return !was;
}

// Unit i of share s: its groups for the n tokens of a and the columns [k0, k1).
static void matmul_unit(const Kernels *k, const Tensor *w, const Share *s, int i, const QuantizedActs *a, int n,
                        int k0, int k1, const Sums *out) {
    int g2, g = unit_groups(s, i, &g2);
    if (a->xb) matmul_groups_bf16(k, w, g, g2, a, n, k0, k1, out);
    else matmul_group(k, w, g, g2, a, n, k0, k1, out);
}

// out (n, w->rows) = x (n, w->cols) · wᵀ, i.e. out[t][r] = Σ_i w[r][i] x[t][i] for each of n tokens.
// q8/q4: the tokens go in chunks that the activation scratch holds, and the columns in ranges whose
// activations stay in a core's cache (n · range <= 512 KiB of levels; AMX: 1 MiB of bf16), each range through
// every group before the next; the threads split the groups evenly, the same way for every range (so no
// thread waits for another between ranges). The sums of each token are the same whatever n is: a token gives
// the same logits alone or in a batch (AMX: in any batch of 16 or more).
static void matmul(float *out, const float *x, int n, const Tensor *w) {
    const Kernels *k = kernel_set();
    int rows = w->rows, cols = w->cols;
    if (w->type == TYPE_F32 || w->type == TYPE_F16) {
        RowKernel *rk = w->type == TYPE_F32 ? k->f32 : k->f16;
        #pragma omp parallel for schedule(static) if ((double)rows * cols * n >= PARALLEL_WORK)
        for (int r0 = 0; r0 < rows; r0 += QROWS) rk(w, r0, r0 + QROWS < rows ? r0 + QROWS : rows, x, n, out);
        return;
    }
    QuantizedActs a = {cols, act_levels, act_scales, act_dsums, act_sums, NULL, cols + 64, cols / QK8 + 16};
    int chunk = ACT_LEVELS / a.xstride < ACT_BLOCKS / a.bstride ? ACT_LEVELS / a.xstride : ACT_BLOCKS / a.bstride;
    for (int t0 = 0; t0 < n; t0 += chunk) {
        int nt = n - t0 < chunk ? n - t0 : chunk;
        int range = (512 << 10) / nt / QK4 * QK4;
        range = range < QK4 ? QK4 : range;
        const float *xt = x + (size_t)t0 * cols;
        float *ot = out + (size_t)t0 * rows;
        a.xb = k->acts_bf16 && nt >= 16 ? act_bf16 : NULL;
        int partial = !a.xb && !one_tile(nt) && (size_t)nt * rows <= PARTIAL_SUMS;
        Sums sums = {ot, rows, QROWS};
        if (partial) sums = (Sums){partial_sums, QROWS, (size_t)nt * QROWS};
        int groups = rows / QROWS;
        int steal = one_tile(nt) && max_threads() > 1 && groups <= (int)sizeof claimed;  // one range of columns
        if (steal) memset(claimed, 0, groups);
        #pragma omp parallel if ((double)rows * cols * nt >= PARALLEL_WORK)
        {
            #pragma omp for schedule(static)
            for (int t = 0; t < nt; t++) {
                if (!a.xb) quantize_token(k, &a, t, xt + (size_t)t * cols);
                else k->acts_bf16(xt + (size_t)t * cols, cols, a.xb + (size_t)(t - t % 16) * cols + 32 * (t % 16));
            }
            int id = thread_index(), threads = thread_count();
            int paired = a.xb || (k->pairs && (nt == 1 || (!one_tile(nt) && w->type == TYPE_Q4)));
            Share mine = share_of(groups, id, threads, paired);
            for (int k0 = 0; k0 < cols && !steal; k0 += range) {
                int k1 = cols - k0 < range ? cols : k0 + range;
                for (int i = 0; i < units(&mine); i++) matmul_unit(k, w, &mine, i, &a, nt, k0, k1, &sums);
            }
            for (int i = 0; steal && i < units(&mine) && claim(&mine, i); i++)
                matmul_unit(k, w, &mine, i, &a, nt, 0, cols, &sums);
            for (int s = 1; s < threads && steal; s++) {
                Share other = share_of(groups, (id + s) % threads, threads, paired);
                for (int i = units(&other) - 1; i >= 0 && claim(&other, i); i--)
                    matmul_unit(k, w, &other, i, &a, nt, 0, cols, &sums);
            }
            for (int g = mine.g0; g < mine.g1 && partial; g++)
                for (int t = 0; t < nt; t++)
                    memcpy(ot + (size_t)t * rows + g * QROWS, sums.at + t * sums.ostride + g * sums.gstride,
                           sizeof(float) * QROWS);
        }
    }
}

// y = w ⊙ x / sqrt(mean(x²) + eps), over one vector of n values.
static void rmsnorm(float *y, const float *x, const float *w, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) y[i] = w[i] * (x[i] * scale);
}

static void softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += x[i] = expf(x[i] - max);
    for (int i = 0; i < n; i++) x[i] = (float)(x[i] / sum);
}

static float silu(float z) { return z / (1.0f + expf(-z)); }

// RoPE angles for one position, as the reference forms them (MODEL.md §4): inv_freq in fp32, then one
// fp32 rounding of pos * inv_freq, then an accurate cos and sin of that angle.
static void rope_angles(float *cos_out, float *sin_out, const float *inv_freq, int n_pairs, int pos) {
    for (int i = 0; i < n_pairs; i++) {
        float angle = (float)pos * inv_freq[i];
        cos_out[i] = (float)cos((double)angle);
        sin_out[i] = (float)sin((double)angle);
    }
}

// Rotates each pair (2i, 2i+1) of a head as the complex number x[2i] + i·x[2i+1] by angle i.
static void rope_rotate(float *head, const float *cos_a, const float *sin_a, int head_dim) {
    for (int i = 0; i < head_dim / 2; i++) {
        float x0 = head[2 * i], x1 = head[2 * i + 1];
        head[2 * i] = x0 * cos_a[i] - x1 * sin_a[i];
        head[2 * i + 1] = x0 * sin_a[i] + x1 * cos_a[i];
    }
}

// ----------------------------------------------------------------------------
// the transformer: activations and the KV cache, then the forward pass over a batch of tokens

// Buffers of floats, placed one after another (64-byte aligned) in one mapping of zeroed memory whose
// pages come as they are first written: in 2 MiB pages where Linux gives anonymous memory in such pages
// (the mapping starts on a 2 MiB boundary and asks for them, MADV_HUGEPAGE). With 4 KiB pages, walking the
// page tables costs more than the reading in a virtual machine, where the strided accesses to activations
// need one walk per row: on one thread (AMD Zen 5 VM) copying a prompt's sums into the (token, row)
// outputs took 2-3x as long, and decoding after a 512-token prompt spent 18.5% of its time in attention,
// 2.2% in 2 MiB pages.
#define HUGE_PAGE (2 << 20)
typedef struct { float **at; size_t n; } Buffer;  // where the buffer's address goes, and its length in floats
typedef struct { void *start; size_t bytes; } Mapping;

static size_t buffer_bytes(const Buffer *b) { return (b->n * sizeof(float) + 63) / 64 * 64; }

// The mapping holding the buffers (start NULL if there is no memory for them).
static Mapping map_buffers(Buffer *buffers, int count) {
    size_t bytes = 0;
    for (int i = 0; i < count; i++) bytes += buffer_bytes(&buffers[i]);
    Mapping m = {mmap(NULL, bytes + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                 bytes + HUGE_PAGE};
    if (m.start == MAP_FAILED) return (Mapping){NULL, 0};
    char *next = (char *)m.start + (HUGE_PAGE - (uintptr_t)m.start % HUGE_PAGE) % HUGE_PAGE;
#ifdef MADV_HUGEPAGE
    madvise(next, bytes, MADV_HUGEPAGE);
#endif
    for (int i = 0; i < count; i++) {
        *buffers[i].at = (float *)next;
        next += buffer_bytes(&buffers[i]);
    }
    return m;
}

static void unmap_buffers(Mapping m) {
    if (m.start) munmap(m.start, m.bytes);
}

typedef struct {
    int max_batch;               // tokens per forward call
    int seq_len;                 // KV cache length (the context)
    float *x;                    // (max_batch, dim) residual stream
    float *xb;                   // (max_batch, dim) normalized input of a block
    float *q;                    // (max_batch, n_heads * head_dim)
    float *att;                  // (max_batch, n_heads * head_dim) attention output, before wo
    float *hb, *hb2;             // (max_batch, hidden_dim) feed-forward gate and up
    float *rope_cos, *rope_sin;  // (max_batch, head_dim / 2) angles of each token's position
    float *inv_freq;             // (head_dim / 2)
    float *k, *v;                // (max_batch, n_kv_heads * head_dim) the new tokens' keys and values
    float *logits;               // (max_batch, vocab_size)
    float *key_cache;            // (n_layers, cache_blocks, n_kv_heads, KV_BLOCK, head_dim): see KV_BLOCK
    float *value_cache;          //   the same for the values
    int cache_blocks;            // KV_BLOCK positions each: seq_len rounded up
    float *scores;               // (threads, n_heads / n_kv_heads, seq_len) attention scores of each thread
    Mapping memory;              // where all of the above live (map_buffers)
} RunState;

// The KV cache comes first in RunState's mapping, in blocks of KV_BLOCK positions. In each layer's block,
// each kv head's keys (or values) of those positions follow one another, so that attention reads a head's
// keys as one stream; a whole block, 512 positions x 8 kv heads x 128 floats, is one 2 MiB page. So memory
// is taken as the context fills, a block at a time.
#define KV_BLOCK 512

static int runstate_init(RunState *s, const Config *c, int max_batch, int seq_len) {
    memset(s, 0, sizeof *s);
    s->max_batch = max_batch;
    s->seq_len = seq_len;
    s->cache_blocks = (seq_len + KV_BLOCK - 1) / KV_BLOCK;
    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim, b = max_batch;
    size_t cache = (size_t)c->n_layers * s->cache_blocks * KV_BLOCK * kv_dim;
    Buffer buffers[] = {
        {&s->key_cache, cache}, {&s->value_cache, cache},
        {&s->x, b * c->dim}, {&s->xb, b * c->dim}, {&s->q, b * q_dim}, {&s->att, b * q_dim},
        {&s->k, b * kv_dim}, {&s->v, b * kv_dim}, {&s->hb, b * c->hidden_dim}, {&s->hb2, b * c->hidden_dim},
        {&s->rope_cos, b * c->head_dim / 2}, {&s->rope_sin, b * c->head_dim / 2}, {&s->inv_freq, c->head_dim / 2},
        {&s->logits, b * c->vocab_size},
        {&s->scores, (size_t)max_threads() * (c->n_heads / c->n_kv_heads) * seq_len}};
    s->memory = map_buffers(buffers, sizeof buffers / sizeof buffers[0]);
    if (!s->memory.start)
        return fail("out of memory for a %d-token context (%.1f GB of KV cache); use a smaller -c", seq_len,
                    2.0 * c->n_layers * seq_len * kv_dim * sizeof(float) / 1e9);
    // inv_freq[i] = 1 / theta^(2i / head_dim), in fp32 as the reference computes it
    for (int i = 0; i < c->head_dim / 2; i++)
        s->inv_freq[i] = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
    return 0;
}

static void runstate_free(RunState *s) {
    unmap_buffers(s->memory);
}

// Where the key (and value) of kv head g at position pos of layer l starts in the cache; the next
// positions of the same block follow it.
static size_t cache_slot(const Config *c, const RunState *s, int l, int g, int pos) {
    size_t block = (size_t)l * s->cache_blocks + pos / KV_BLOCK;
    return ((block * c->n_kv_heads + g) * KV_BLOCK + pos % KV_BLOCK) * c->head_dim;
}

// Causal grouped-query attention for n new tokens at positions pos..pos+n-1, whose keys and values
// are already in the cache. q: (n, n_heads, head_dim) -> att: (n, n_heads, head_dim). In parallel over
// (token, kv head): the query heads a kv head serves share each key and value row they read.
static void attention(const Config *c, RunState *s, int layer, int n, int pos) {
    int head_dim = c->head_dim, group = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)head_dim);
    const Kernels *k = kernel_set();
    #pragma omp parallel if ((double)n * c->n_heads * (pos + n) * head_dim >= PARALLEL_WORK)
    {
        float *scores = s->scores + (size_t)thread_index() * group * s->seq_len;  // (group, seq_len)
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int t = 0; t < n; t++) {
            for (int g = 0; g < c->n_kv_heads; g++) {  // kv head g serves query heads g*group .. g*group+group-1
                int len = pos + t + 1;
                size_t first = (size_t)t * c->n_heads + g * group;
                for (int j = 0; j < len; j += KV_BLOCK)  // the keys block by block: scores[a·seq_len + j ..]
                    k->scores(s->q + first * head_dim, group, head_dim, s->key_cache + cache_slot(c, s, layer, g, j),
                              head_dim, (len - j < KV_BLOCK ? len - j : KV_BLOCK), scale, scores + j, s->seq_len);
                for (int a = 0; a < group; a++) softmax(scores + (size_t)a * s->seq_len, len);
                float *out = s->att + first * head_dim;
                memset(out, 0, (size_t)group * head_dim * sizeof(float));
                for (int j = 0; j < len; j += KV_BLOCK)
                    k->mix(scores + j, s->seq_len, group, head_dim, s->value_cache + cache_slot(c, s, layer, g, j),
                           head_dim, (len - j < KV_BLOCK ? len - j : KV_BLOCK), out);
            }
        }
    }
}

// The decoder over n tokens at positions pos..pos+n-1 (n <= max_batch, pos + n <= seq_len).
// Input: their embeddings in s->x (n, dim). Output: logits (n, vocab_size) in s->logits; only the
// last row when !all_logits (generation needs no more).
static void forward(const Model *m, RunState *s, int n, int pos, int all_logits) {
    const Config *c = &m->config;
    const Weights *w = &m->weights;
    int dim = c->dim, head_dim = c->head_dim, kv_dim = c->n_kv_heads * head_dim, q_dim = c->n_heads * head_dim;
    for (int t = 0; t < n; t++)
        rope_angles(s->rope_cos + t * head_dim / 2, s->rope_sin + t * head_dim / 2, s->inv_freq, head_dim / 2, pos + t);

    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *lw = &w->layers[l];
        // attention: x = x + wo(attention(rope(wq(h)), rope(wk(h)), wv(h))), h = rmsnorm(x)
        for (int t = 0; t < n; t++) rmsnorm(s->xb + t * dim, s->x + t * dim, lw->attention_norm, dim, c->norm_eps);
        matmul(s->q, s->xb, n, &lw->wq);
        matmul(s->k, s->xb, n, &lw->wk);
        matmul(s->v, s->xb, n, &lw->wv);
        for (int t = 0; t < n; t++) {
            const float *cos_a = s->rope_cos + t * head_dim / 2, *sin_a = s->rope_sin + t * head_dim / 2;
            for (int a = 0; a < c->n_heads; a++) rope_rotate(s->q + t * q_dim + a * head_dim, cos_a, sin_a, head_dim);
            for (int g = 0; g < c->n_kv_heads; g++) {
                float *key = s->k + t * kv_dim + g * head_dim;
                rope_rotate(key, cos_a, sin_a, head_dim);
                memcpy(s->key_cache + cache_slot(c, s, l, g, pos + t), key, head_dim * sizeof(float));
                memcpy(s->value_cache + cache_slot(c, s, l, g, pos + t), s->v + t * kv_dim + g * head_dim,
                       head_dim * sizeof(float));
            }
        }
        attention(c, s, l, n, pos);
        matmul(s->xb, s->att, n, &lw->wo);
        for (int i = 0; i < n * dim; i++) s->x[i] += s->xb[i];

        // feed-forward: x = x + w2(silu(w1(h)) * w3(h)), h = rmsnorm(x)
        for (int t = 0; t < n; t++) rmsnorm(s->xb + t * dim, s->x + t * dim, lw->ffn_norm, dim, c->norm_eps);
        matmul(s->hb, s->xb, n, &lw->w1);
        matmul(s->hb2, s->xb, n, &lw->w3);
        #pragma omp parallel for schedule(static) if (n * c->hidden_dim >= 16384)
        for (int i = 0; i < n * c->hidden_dim; i++) s->hb[i] = silu(s->hb[i]) * s->hb2[i];
        matmul(s->xb, s->hb, n, &lw->w2);
        for (int i = 0; i < n * dim; i++) s->x[i] += s->xb[i];
    }

    // logits = output(rmsnorm(x))
    int first = all_logits ? 0 : n - 1;
    for (int t = first; t < n; t++) rmsnorm(s->xb + (t - first) * dim, s->x + t * dim, w->norm, dim, c->norm_eps);
    matmul(s->logits, s->xb, n - first, &w->output);
}

// Token embeddings of n ids into s->x.
static void embed_tokens(const Model *m, RunState *s, const int *ids, int n) {
    for (int t = 0; t < n; t++) dequantize_row(&m->weights.tok_embeddings, ids[t], s->x + (size_t)t * m->config.dim);
}

// ----------------------------------------------------------------------------
// vision: an image file -> preprocessed pixels -> Pixtral encoder -> projector -> one embedding per [IMG]
// token. The section lives in its own file, vision.c, included here (it is part of this program, not a
// library: it uses the blocks above, and the prompt code below uses it).

#include "vision.c"

// ----------------------------------------------------------------------------
// sampling: temperature, then top-k, top-p and min-p filters, from a seeded generator

typedef struct {
    float prob;
    int id;
} Candidate;

typedef struct {
    float temperature;           // 0 = greedy
    int top_k;                   // 0 = off
    float top_p;                 // 1 = off
    float min_p;                 // 0 = off
    uint64_t rng;                // xorshift64* state
    Candidate *candidates;       // (vocab_size) scratch
} Sampler;

static float random_f32(uint64_t *state) {  // uniform in [0, 1)
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (float)((*state * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int by_prob_desc(const void *a, const void *b) {
    float x = ((const Candidate *)a)->prob, y = ((const Candidate *)b)->prob;
    return (x < y) - (x > y);
}

// Picks the next token from logits (n values; modified in place).
static int sample(Sampler *sp, float *logits, int n) {
    if (sp->temperature <= 0.0f) return argmax(logits, n);
    for (int i = 0; i < n; i++) logits[i] /= sp->temperature;
    softmax(logits, n);  // now probabilities
    // Candidates: min-p keeps tokens with p >= min_p * p_max; sorted by probability for top-k and top-p.
    float floor_p = sp->min_p * logits[argmax(logits, n)];
    Candidate *c = sp->candidates;
    int count = 0;
    for (int i = 0; i < n; i++)
        if (logits[i] >= floor_p && logits[i] > 0.0f) c[count++] = (Candidate){logits[i], i};
    qsort(c, count, sizeof *c, by_prob_desc);
    if (sp->top_k > 0 && count > sp->top_k) count = sp->top_k;
    // top-p: the most probable tokens whose probabilities add up to top_p (at least one)
    double kept = 0.0;
    int cut = 0;
    while (cut < count && (cut == 0 || kept < sp->top_p)) kept += c[cut++].prob;
    double r = random_f32(&sp->rng) * kept, cdf = 0.0;
    for (int i = 0; i < cut; i++) {
        cdf += c[i].prob;
        if (r < cdf) return c[i].id;
    }
    return c[cut - 1].id;
}

// ----------------------------------------------------------------------------
// generation: a session feeds tokens through the model and samples replies, keeping the KV cache

typedef struct { int *ids; int n, cap; } Tokens;

static int tokens_push(Tokens *t, int id) {
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 256;
        int *p = realloc(t->ids, cap * sizeof(int));
        if (!p) return fail("out of memory");
        t->ids = p, t->cap = cap;
    }
    t->ids[t->n++] = id;
    return 0;
}

// Appends the tokens of plain text (never special tokens: "[INST]" typed by a user is text).
static int tokens_push_text(Tokens *t, const Tokenizer *tok, const char *text, const char *what) {
    size_t len = strlen(text);
    char err[256];
    if (utf8_validate(text, len, err, sizeof err)) return fail("%s: %s", what, err);
    int *ids = malloc((len + 1) * sizeof(int));  // never more tokens than bytes
    if (!ids) return fail("out of memory");
    int n = tokenizer_encode(tok, text, len, ids, (int)len + 1);
    if (n < 0) { free(ids); return fail("%s: cannot tokenize (out of memory)", what); }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) rc = tokens_push(t, ids[i]);
    free(ids);
    return rc;
}

typedef struct {
    const Model *model;
    const Tokenizer *tokenizer;
    RunState state;
    Sampler sampler;
    int pos;                     // tokens in the KV cache
    int pending;                 // last sampled token, not yet fed (-1: none)
    Tokens history;              // every token fed so far (the pending one follows), for --dump-tokens
    FILE *dump_logits;           // --dump-logits: logits of every fed token
    const ImageEmbeddings *images;  // (n_images) images of the turn being fed: their rows go, in order, to
    int n_images;                // the [IMG] tokens fed (MODEL.md §6); image_next / row_next: the next row
    int image_next, row_next;
    // statistics
    long prompt_tokens, generated_tokens;
    long decode_steps;           // one-token forward passes (a turn's first token comes from its prompt's)
    double prefill_seconds, decode_seconds, first_token_seconds;
} Session;

// Runs ids through the model in batches; afterwards s->logits holds the last token's logits.
static int feed(Session *ss, const int *ids, int n) {
    const Config *c = &ss->model->config;
    RunState *s = &ss->state;
    if (ss->pos + n > s->seq_len)
        return fail("the %s needs %d tokens but the context holds %d (-c %d)", ss->pos ? "conversation" : "prompt",
                    ss->pos + n, s->seq_len, s->seq_len);
    for (int done = 0; done < n;) {
        int b = n - done < s->max_batch ? n - done : s->max_batch;
        embed_tokens(ss->model, s, ids + done, b);
        for (int i = 0; i < b; i++) {  // each [IMG] position takes the next image embedding instead
            if (ids[done + i] != c->image_token_id || ss->image_next >= ss->n_images) continue;
            const ImageEmbeddings *img = &ss->images[ss->image_next];
            memcpy(s->x + (size_t)i * c->dim, img->embeddings + (size_t)ss->row_next * c->dim, c->dim * sizeof(float));
            if (++ss->row_next == img->rows * img->cols) ss->image_next++, ss->row_next = 0;
        }
        forward(ss->model, s, b, ss->pos, ss->dump_logits != NULL);
        if (ss->dump_logits) {
            if (fwrite(s->logits, sizeof(float), (size_t)b * c->vocab_size, ss->dump_logits) != (size_t)b * c->vocab_size)
                return fail("--dump-logits: write failed");
            if (done + b == n)  // generation reads the last row from the front
                memmove(s->logits, s->logits + (size_t)(b - 1) * c->vocab_size, c->vocab_size * sizeof(float));
        }
        for (int i = 0; i < b; i++)
            if (tokens_push(&ss->history, ids[done + i])) return -1;
        ss->pos += b;
        done += b;
    }
    return 0;
}

// Prefill of a turn's tokens, with the pending reply token and its </s> in front of them.
// The turn's [IMG] tokens take the rows of images[0..n_images), in order; their count must match.
static int feed_turn(Session *ss, const Tokens *turn, const ImageEmbeddings *images, int n_images) {
    Tokens all = {0};
    int rc = 0, eos = ss->model->config.eos_id, before = 0;
    long img_tokens = 0, img_rows = 0;
    for (int i = 0; i < turn->n; i++) img_tokens += turn->ids[i] == ss->model->config.image_token_id;
    for (int i = 0; i < n_images; i++) img_rows += (long)images[i].rows * images[i].cols;
    if (n_images && img_tokens != img_rows)
        return fail("the prompt has %ld [IMG] tokens but its images have %ld embeddings", img_tokens, img_rows);
    if (ss->pending >= 0) {
        rc = tokens_push(&all, ss->pending);
        if (rc == 0 && ss->pending != eos) rc = tokens_push(&all, eos);
        ss->pending = -1;
        before = all.n;          // fed before the images take effect
    }
    for (int i = 0; i < turn->n && rc == 0; i++) rc = tokens_push(&all, turn->ids[i]);
    double t0 = now_seconds();
    if (rc == 0 && before) rc = feed(ss, all.ids, before);
    ss->images = images, ss->n_images = n_images, ss->image_next = ss->row_next = 0;
    if (rc == 0) rc = feed(ss, all.ids + before, all.n - before);
    ss->images = NULL, ss->n_images = 0;
    ss->prefill_seconds += now_seconds() - t0;
    ss->prompt_tokens += all.n;
    free(all.ids);
    return rc;
}

// Samples up to max_new tokens after what was fed, streaming the text; stops at </s> or a full context.
static int generate(Session *ss, int max_new, double turn_start) {
    const Model *m = ss->model;
    TokenDecoder dec = {0};
    char *text = malloc(tokenizer_max_decoded(ss->tokenizer));
    if (!text) return fail("out of memory");
    double t0 = now_seconds();
    for (int i = 0; i < max_new; i++) {
        if (i > 0) {  // feed the previous token
            if (ss->pos >= ss->state.seq_len) {
                fprintf(stderr, "\n[context full: %d tokens]\n", ss->pos);
                break;
            }
            if (feed(ss, &ss->pending, 1)) { free(text); return -1; }
            ss->decode_steps++;
        }
        int next = sample(&ss->sampler, ss->state.logits, m->config.vocab_size);
        if (ss->generated_tokens == 0 && ss->first_token_seconds == 0) ss->first_token_seconds = now_seconds() - turn_start;
        ss->pending = next;
        ss->generated_tokens++;
        if (next == m->config.eos_id) break;
        int len = decoder_push(ss->tokenizer, &dec, next, text);
        if (len > 0) { fwrite(text, 1, len, stdout); fflush(stdout); }
    }
    int len = decoder_flush(&dec, text);
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    free(text);
    ss->decode_seconds += now_seconds() - t0;
    return 0;
}
// Reads all of a stream into a new buffer. 0 ok, -1 on a read error or out of memory.
static int read_all(FILE *f, char **data, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *bigger = realloc(buf, cap *= 2);
        if (!bigger) free(buf);
        buf = bigger;
    }
    if (!buf || ferror(f)) { free(buf); return -1; }
    *data = buf;
    *len = n;
    return 0;
}

// Tokenizes text[0..len) and prints its ids on one line of out. 0 ok, else -1 with a message in err.
static int print_token_ids(const Tokenizer *tok, const char *text, size_t len, FILE *out, char *err, size_t errlen) {
    if (utf8_validate(text, len, err, errlen)) return -1;
    int *ids = malloc((len ? len : 1) * sizeof *ids);   // never more ids than bytes
    int n = ids && len <= INT32_MAX ? tokenizer_encode(tok, text, len, ids, (int)len) : -1;
    if (n < 0) snprintf(err, errlen, "cannot tokenize %zu bytes (too large, or out of memory)", len);
    for (int i = 0; i < n; i++) fprintf(out, i ? " %d" : "%d", ids[i]);
    if (n >= 0) fputc('\n', out);
    free(ids);
    return n < 0 ? -1 : 0;
}

// Loads a tekken.json into tf and builds tok over it. 0 ok, else -1 with a message in err.
static int load_tokenizer(const char *path, TekkenFile *tf, Tokenizer *tok, char *err, size_t errlen) {
    if (tekken_load(path, tf, err, errlen)) return -1;
    char why[256];
    if (tokenizer_init(tok, tf->n_vocab, tf->n_special, tf->vocab_offsets, tf->vocab_bytes,
                       tf->special_offsets, tf->special_bytes, why, sizeof why)) {
        snprintf(err, errlen, "%s: %s", path, why);
        tekken_free(tf);
        return -1;
    }
    return 0;
}

// --tokenize: stdin -> ids on stdout.
static int tokenize_stdin(const char *tekken_path) {
    char err[512], *text;
    size_t len;
    TekkenFile tf;
    Tokenizer tok;
    if (read_all(stdin, &text, &len)) { fprintf(stderr, "run: cannot read stdin\n"); return 1; }
    if (load_tokenizer(tekken_path, &tf, &tok, err, sizeof err)) { fprintf(stderr, "run: %s\n", err); free(text); return 1; }
    int rc = print_token_ids(&tok, text, len, stdout, err, sizeof err);
    if (rc) fprintf(stderr, "run: stdin: %s\n", err);
    free(text);
    tokenizer_free(&tok);
    tekken_free(&tf);
    return rc || fflush(stdout) != 0 ? 1 : 0;
}

// ----------------------------------------------------------------------------
// the prompt format (V7, MODEL.md §8) and the chat loop

// The tokens of one image (MODEL.md §6): ([IMG] x cols, [IMG_BREAK]) x rows, the last [IMG_BREAK]
// replaced by [IMG_END]. A 2x3 grid: [IMG][IMG][IMG][IMG_BREAK][IMG][IMG][IMG][IMG_END].
static int image_tokens(Tokens *t, const Tokenizer *tok, int rows, int cols) {
    int img = tokenizer_special_id(tok, "[IMG]"), brk = tokenizer_special_id(tok, "[IMG_BREAK]"),
        end = tokenizer_special_id(tok, "[IMG_END]");
    if (img < 0 || brk < 0 || end < 0) return fail("the tokenizer lacks the image tokens");
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++)
            if (tokens_push(t, img)) return -1;
        if (tokens_push(t, r == rows - 1 ? end : brk)) return -1;
    }
    return 0;
}

// One user turn: [INST] images text [/INST], with <s> and the system prompt before the first one. The
// images come before the text, as mistral-common puts an image given with a text (MODEL.md §8).
static int user_turn(Tokens *t, const Tokenizer *tok, const char *system, const char *text, int first,
                     const ImageEmbeddings *images, int n_images) {
    int bos = tokenizer_special_id(tok, "<s>"), inst = tokenizer_special_id(tok, "[INST]"),
        inst_end = tokenizer_special_id(tok, "[/INST]"), sys = tokenizer_special_id(tok, "[SYSTEM_PROMPT]"),
        sys_end = tokenizer_special_id(tok, "[/SYSTEM_PROMPT]");
    if (bos < 0 || inst < 0 || inst_end < 0 || sys < 0 || sys_end < 0)
        return fail("the tokenizer lacks the special tokens of the V7 chat format");
    if (first && tokens_push(t, bos)) return -1;
    if (first && system &&
        (tokens_push(t, sys) || tokens_push_text(t, tok, system, "system prompt") || tokens_push(t, sys_end)))
        return -1;
    if (tokens_push(t, inst)) return -1;
    for (int i = 0; i < n_images; i++)
        if (image_tokens(t, tok, images[i].rows, images[i].cols)) return -1;
    if (tokens_push_text(t, tok, text, "prompt") || tokens_push(t, inst_end)) return -1;
    return 0;
}

// Reads one user message: a line, continued on the next line while it ends with a backslash.
// Returns NULL at the end of input.
static char *read_message(FILE *in) {
    size_t cap = 256, n = 0;
    char *msg = malloc(cap);
    int c, got = 0;
    while (msg && (c = fgetc(in)) != EOF) {
        got = 1;
        if (c == '\n') {
            if (n > 0 && msg[n - 1] == '\\') { msg[n - 1] = '\n'; continue; }
            break;
        }
        if (n + 2 > cap) {
            char *bigger = realloc(msg, cap *= 2);
            if (!bigger) free(msg);
            msg = bigger;
            if (!msg) break;
        }
        msg[n++] = (char)c;
    }
    if (!msg || !got) { free(msg); return NULL; }
    msg[n] = '\0';
    return msg;
}

// Encoded images waiting for the message they go with.
typedef struct { ImageEmbeddings *items; int n, cap; } ImageList;

static int images_push(ImageList *l, ImageEmbeddings e) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 4;
        ImageEmbeddings *p = realloc(l->items, cap * sizeof *p);
        if (!p) { image_embeddings_free(&e); return fail("out of memory"); }
        l->items = p, l->cap = cap;
    }
    l->items[l->n++] = e;
    return 0;
}

static void images_clear(ImageList *l) {
    for (int i = 0; i < l->n; i++) image_embeddings_free(&l->items[i]);
    l->n = 0;
}

static void images_free(ImageList *l) {
    images_clear(l);
    free(l->items);
}

// A line "/image PATH" encodes PATH and attaches it to the next message (images first, in order); the
// images given with -i go with the first message. An image that cannot be read is reported and skipped.
static int chat(Session *ss, const char *system, int max_new, ImageList *images) {
    int interactive = isatty(0), first = 1;
    for (;;) {
        if (interactive) { printf("> "); fflush(stdout); }
        char *msg = read_message(stdin);
        if (!msg) break;
        if (strcmp(msg, "/exit") == 0 || strcmp(msg, "/quit") == 0) { free(msg); break; }
        if (strncmp(msg, "/image", 6) == 0 && (msg[6] == '\0' || msg[6] == ' ' || msg[6] == '\t')) {
            char *path = msg + 6, *end = path + strlen(path);
            while (*path == ' ' || *path == '\t') path++;
            while (end > path && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) *--end = '\0';
            ImageEmbeddings e;
            if (!*path) fprintf(stderr, "run: /image needs a file: /image PATH\n");
            else if (encode_image_file(ss->model, path, &e) || images_push(images, e))
                fprintf(stderr, "run: %s\n", error_msg);
            else fprintf(stderr, "[%s: %dx%d image tokens, for the next message]\n", path, e.rows, e.cols);
            free(msg);
            continue;
        }
        Tokens t = {0};
        double start = now_seconds();
        int rc = user_turn(&t, ss->tokenizer, system, msg, first, images->items, images->n);
        free(msg);
        if (rc == 0) rc = feed_turn(ss, &t, images->items, images->n);
        free(t.ids);
        images_clear(images);   // now in the KV cache, like the rest of the conversation
        first = 0;
        if (rc == 0) rc = generate(ss, max_new, start);
        if (rc) return rc;
        printf("\n");
    }
    return 0;
}

// ----------------------------------------------------------------------------
// the command line

typedef struct {
    const char *model_path, *tokenizer_path;
    const char *prompt, *system, *tokens;
    const char *dump_logits, *dump_tokens;
    const char **images;         // -i, in order (n_images)
    int n_images;
    const char *dump_image_embeddings, *dump_pixels;
    int steps;                   // -n; -1: until </s> or the context is full
    float temperature, top_p, min_p;
    int top_k;
    uint64_t seed;
    int threads, context;
    int chat, raw, tokenize;
    const Kernels *kernels;      // --kernels; NULL: the best for this CPU
} Options;

static void usage(FILE *f) {
    fprintf(f,
"usage: run MODEL [options]                      generate text with a model file made by ./quantize\n"
"       run MODEL --tokenize                     print the token ids of stdin (no BOS, no template)\n"
"       run --tokenizer TEKKEN_JSON --tokenize   the same with a tekken.json and no model\n"
"\n"
"  -p PROMPT          a user message, in the model's chat format (V7)\n"
"  -i IMAGE           an image for the model to see, placed before the text of the (first) message;\n"
"                     repeat -i for several images, in order. PNG, JPEG, BMP, GIF (first frame), PNM\n"
"                     (PPM/PGM), TGA; transparency is composited on white. Scaled so the longest side\n"
"                     is at most 1540 pixels, then each side rounded up to 28 pixels: one token per\n"
"                     28x28 cell plus one per row (1024x768 -> 37x28 = 1036 [IMG] + 28 = 1064 tokens;\n"
"                     at most 55x55 = 3025 + 55 = 3080); at most 16384 pixels a side and 64 megapixels\n"
"  -s SYSTEM          a system prompt before it\n"
"  --chat             interactive chat on stdin: one message per line (end a line with \\ to continue\n"
"                     it); the conversation stays in the KV cache. /exit or end of input quits.\n"
"                     A line /image PATH attaches an image to the next message (encoded once)\n"
"  --raw              feed <s> and PROMPT as they are, without the chat format\n"
"  -n N               generate at most N tokens (default: until </s> or a full context)\n"
"  --temp T           temperature (default 0.15, as Mistral recommends; 0 = greedy)\n"
"  --top-p P          keep the most likely tokens whose probabilities add up to P (default 1 = off)\n"
"  --top-k K          keep the K most likely tokens (default 0 = off)\n"
"  --min-p M          keep tokens at least M times as likely as the most likely one (default 0 = off)\n"
"  --seed S           random seed, for reproducible sampling (default: from the clock)\n"
"  -t THREADS         threads (default: one per physical core)\n"
"  --kernels NAME     the matmul kernels to use (default: the fastest this CPU runs, listed below)\n"
"  -c CONTEXT         context length in tokens: the KV cache size (default 4096, at most the model's)\n"
"  --tokens IDS       feed these comma-separated token ids exactly (no BOS); generates only with -n\n"
"  --dump-logits FILE write the logits of every token fed to the model, float32 (n_fed x vocab_size)\n"
"  --dump-tokens FILE write every token id of the session (fed, then the last sampled), comma-separated\n"
"  --dump-image-embeddings FILE  with -i: write the projector output of the images, float32, row-major\n"
"                     (one row of dim values per [IMG] token, in prompt order), and print each image's\n"
"                     token grid on stdout as \"grid ROWSxCOLS\"; with nothing else to do, stops there\n"
"  --dump-pixels FILE with -i: write the preprocessed images (what the encoder sees), float32,\n"
"                     (3, 28*ROWS, 28*COLS) each, normalized; prints the grids like the above\n");
    fprintf(f, "\nkernels: %s; this CPU runs:", kernels_for_cpu()->name);
    for (size_t i = 0; i < sizeof all_kernels / sizeof *all_kernels; i++)
        if (kernels_supported(all_kernels[i])) fprintf(f, " %s", all_kernels[i]->name);
    fprintf(f, "; threads: %d\n", physical_cores());
}

// Parses a whole-string number within [lo, hi]. 0 ok, -1 otherwise.
static int parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, Options *o) {
    *o = (Options){.steps = -2, .temperature = 0.15f, .top_p = 1.0f, .seed = (uint64_t)time(NULL)};
    o->images = calloc(argc, sizeof *o->images);   // freed by main
    if (!o->images) return fail("out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); exit(0); }
        if (strcmp(a, "--chat") == 0) { o->chat = 1; continue; }
        if (strcmp(a, "--raw") == 0) { o->raw = 1; continue; }
        if (strcmp(a, "--tokenize") == 0) { o->tokenize = 1; continue; }
        if (a[0] != '-') {
            if (o->model_path) return fail("unexpected argument %s", a);
            o->model_path = a;
            continue;
        }
        if (i + 1 >= argc) return fail("%s needs a value", a);
        const char *v = argv[++i];
        double x;
        if (strcmp(a, "-p") == 0) o->prompt = v;
        else if (strcmp(a, "-s") == 0) o->system = v;
        else if (strcmp(a, "--tokens") == 0) o->tokens = v;
        else if (strcmp(a, "--tokenizer") == 0) o->tokenizer_path = v;
        else if (strcmp(a, "--dump-logits") == 0) o->dump_logits = v;
        else if (strcmp(a, "--dump-tokens") == 0) o->dump_tokens = v;
        else if (strcmp(a, "-i") == 0) o->images[o->n_images++] = v;   // room for argc entries
        else if (strcmp(a, "--dump-image-embeddings") == 0) o->dump_image_embeddings = v;
        else if (strcmp(a, "--dump-pixels") == 0) o->dump_pixels = v;
        else if (strcmp(a, "-n") == 0 && parse_double(v, 0, 1e9, &x) == 0 && x == floor(x)) o->steps = (int)x;
        else if (strcmp(a, "--temp") == 0 && parse_double(v, 0, 100, &x) == 0) o->temperature = (float)x;
        else if (strcmp(a, "--top-p") == 0 && parse_double(v, 0, 1, &x) == 0 && x > 0) o->top_p = (float)x;
        else if (strcmp(a, "--top-k") == 0 && parse_double(v, 0, 1e9, &x) == 0 && x == floor(x)) o->top_k = (int)x;
        else if (strcmp(a, "--min-p") == 0 && parse_double(v, 0, 1, &x) == 0) o->min_p = (float)x;
        else if (strcmp(a, "--seed") == 0 && parse_double(v, 0, 1.8e19, &x) == 0 && x == floor(x)) o->seed = (uint64_t)x;
        else if (strcmp(a, "-t") == 0 && parse_double(v, 1, 4096, &x) == 0 && x == floor(x)) o->threads = (int)x;
        else if (strcmp(a, "--kernels") == 0 && (o->kernels = kernels_by_name(v))) {}
        else if (strcmp(a, "-c") == 0 && parse_double(v, 1, 1 << 24, &x) == 0 && x == floor(x)) o->context = (int)x;
        else if (strcmp(a, "-n") == 0 || strcmp(a, "--temp") == 0 || strcmp(a, "--top-p") == 0 ||
                 strcmp(a, "--top-k") == 0 || strcmp(a, "--min-p") == 0 || strcmp(a, "--seed") == 0 ||
                 strcmp(a, "-t") == 0 || strcmp(a, "-c") == 0)
            return fail("bad value for %s: %s", a, v);
        else if (strcmp(a, "--kernels") == 0)
            return fail("--kernels %s: unknown, or this CPU cannot run them (--help lists those it can)", v);
        else return fail("unknown option %s", a);
    }
    if (o->tokenizer_path && !o->tokenize) return fail("--tokenizer goes with --tokenize");
    if (!o->model_path && !o->tokenizer_path) return fail("no model file given");
    int dump_images = o->dump_image_embeddings || o->dump_pixels;
    if (dump_images && !o->n_images) return fail("--dump-image-embeddings and --dump-pixels need -i IMAGE");
    if (o->n_images && (o->raw || o->tokenize)) return fail("-i does not go with --raw or --tokenize");
    if (o->model_path && !o->tokenize && !o->prompt && !o->chat && !o->tokens && !dump_images)
        return fail("nothing to do: give -p PROMPT, --chat, --tokens IDS or --tokenize");
    if ((o->prompt != NULL) + o->chat + (o->tokens != NULL) > 1) return fail("-p, --chat and --tokens exclude each other");
    if (o->raw && !o->prompt) return fail("--raw goes with -p");
    return 0;
}

// "1,22,333" -> ids, each a valid token id.
static int parse_token_list(const char *s, int vocab_size, Tokens *t) {
    for (const char *p = s; *p;) {
        char *end;
        errno = 0;
        long id = strtol(p, &end, 10);
        if (end == p || errno || id < 0 || id >= vocab_size)
            return fail("--tokens: bad token id at \"%.20s\" (ids are 0..%d)", p, vocab_size - 1);
        if (tokens_push(t, (int)id)) return -1;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return fail("--tokens: expected a comma at \"%.20s\"", end);
    }
    if (t->n == 0) return fail("--tokens: no token ids");
    return 0;
}

static int write_token_list(const char *path, const Tokens *t, int pending) {
    FILE *f = fopen(path, "w");
    if (!f) return fail("%s: %s", path, strerror(errno));
    for (int i = 0; i < t->n; i++) fprintf(f, i ? ",%d" : "%d", t->ids[i]);
    if (pending >= 0) fprintf(f, t->n ? ",%d" : "%d", pending);
    fprintf(f, "\n");
    return fclose(f) == 0 ? 0 : fail("%s: write failed", path);
}

static void print_stats(const Session *ss) {
    fprintf(stderr, "\nprompt: %ld tokens, %.2f tok/s | generated: %ld tokens, %.2f tok/s | time to first token: %.2f s\n",
            ss->prompt_tokens, ss->prefill_seconds > 0 ? ss->prompt_tokens / ss->prefill_seconds : 0.0,
            ss->generated_tokens, ss->decode_seconds > 0 ? ss->decode_steps / ss->decode_seconds : 0.0,
            ss->first_token_seconds);
}

// -i: loads and preprocesses each image, in order; --dump-pixels writes the preprocessed pixels and
// --dump-image-embeddings the projector output (each also prints "grid ROWSxCOLS"). With keep, the
// embeddings go to `out` for the prompt.
static int prepare_images(const Options *o, const Model *m, ImageList *out, int keep) {
    const Config *c = &m->config;
    if (c->vision_layers == 0) return fail("%s: this model file has no vision encoder, so it takes no images", o->model_path);
    FILE *pixels = NULL, *embeddings = NULL;
    int rc = 0;
    if (o->dump_pixels && !(pixels = fopen(o->dump_pixels, "wb"))) rc = fail("%s: %s", o->dump_pixels, strerror(errno));
    if (rc == 0 && o->dump_image_embeddings && !(embeddings = fopen(o->dump_image_embeddings, "wb")))
        rc = fail("%s: %s", o->dump_image_embeddings, strerror(errno));
    for (int i = 0; i < o->n_images && rc == 0; i++) {
        Image img;
        if (image_load(&img, o->images[i], c)) { rc = -1; break; }
        size_t n_pixels = (size_t)3 * img.pixel_rows * img.pixel_cols;
        if (pixels && fwrite(img.pixels, sizeof(float), n_pixels, pixels) != n_pixels)
            rc = fail("%s: write failed", o->dump_pixels);
        if (rc == 0 && (embeddings || keep)) {
            size_t n = (size_t)img.rows * img.cols * c->dim;
            ImageEmbeddings e = {img.rows, img.cols, malloc(n * sizeof(float))};
            rc = e.embeddings ? vision_encode(m, &img, e.embeddings) : fail("out of memory");
            if (rc == 0 && embeddings && fwrite(e.embeddings, sizeof(float), n, embeddings) != n)
                rc = fail("%s: write failed", o->dump_image_embeddings);
            if (rc == 0 && keep) rc = images_push(out, e);
            else image_embeddings_free(&e);
        }
        if (rc == 0 && (pixels || embeddings)) printf("grid %dx%d\n", img.rows, img.cols);
        image_free(&img);
    }
    fflush(stdout);
    if (pixels && fclose(pixels) != 0 && rc == 0) rc = fail("%s: write failed", o->dump_pixels);
    if (embeddings && fclose(embeddings) != 0 && rc == 0) rc = fail("%s: write failed", o->dump_image_embeddings);
    return rc;
}

// Runs what the options ask for with a loaded model and its tokenizer.
static int run_model(const Options *o, const Model *m, const Tokenizer *tok) {
    const Config *c = &m->config;
    if (o->tokenize) {
        char *text, err[512];
        size_t len;
        if (read_all(stdin, &text, &len)) return fail("cannot read stdin");
        int rc = print_token_ids(tok, text, len, stdout, err, sizeof err);
        free(text);
        return rc ? fail("stdin: %s", err) : 0;
    }
    int context = o->context ? o->context : (c->max_seq_len < 4096 ? c->max_seq_len : 4096);
    if (context > c->max_seq_len) return fail("-c %d is longer than the model's context (%d)", context, c->max_seq_len);
    ImageList images = {0};
    int generating = o->prompt || o->chat || o->tokens;
    if (o->n_images) {
        int rc = prepare_images(o, m, &images, generating);
        if (rc || !generating) {
            images_free(&images);
            return rc;
        }
    }

    Session ss = {.model = m, .tokenizer = tok, .pending = -1};
    Tokens prompt = {0};
    ss.sampler = (Sampler){o->temperature, o->top_k, o->top_p, o->min_p, o->seed * 2654435761u + 1, NULL};
    ss.sampler.candidates = malloc(c->vocab_size * sizeof(Candidate));
    int rc = ss.sampler.candidates ? runstate_init(&ss.state, c, 256, context) : fail("out of memory");
    if (rc == 0 && o->dump_logits && !(ss.dump_logits = fopen(o->dump_logits, "wb")))
        rc = fail("%s: %s", o->dump_logits, strerror(errno));

    int steps = o->steps >= 0 ? o->steps : (o->tokens ? 0 : context);
    double start = now_seconds();
    if (rc == 0 && o->chat) {
        rc = chat(&ss, o->system, steps, &images);
    } else if (rc == 0) {
        if (o->tokens) rc = parse_token_list(o->tokens, c->vocab_size, &prompt);
        else if (o->raw) rc = tokens_push(&prompt, c->bos_id) || tokens_push_text(&prompt, tok, o->prompt, "prompt");
        else rc = user_turn(&prompt, tok, o->system, o->prompt, 1, images.items, images.n);
        if (rc == 0) rc = feed_turn(&ss, &prompt, images.items, images.n);
        if (rc == 0 && steps > 0) rc = generate(&ss, steps, start);
        if (rc == 0 && steps > 0) printf("\n");
    }
    if (ss.dump_logits && fclose(ss.dump_logits) != 0 && rc == 0) rc = fail("%s: write failed", o->dump_logits);
    if (rc == 0 && o->dump_tokens) rc = write_token_list(o->dump_tokens, &ss.history, ss.pending);
    if (rc == 0) print_stats(&ss);
    free(prompt.ids);
    images_free(&images);
    free(ss.history.ids);
    free(ss.sampler.candidates);
    runstate_free(&ss.state);
    return rc;
}

int main(int argc, char **argv) {
    Options o;
    if (parse_args(argc, argv, &o)) {
        fprintf(stderr, "run: %s\n", error_msg);
        usage(stderr);
        free(o.images);
        return 2;
    }
#ifdef _OPENMP
    omp_set_num_threads(o.threads ? o.threads : physical_cores());
#endif
    if (o.kernels) kernels = o.kernels;
#ifdef HAVE_X86_KERNELS
    __builtin_cpu_init();
    stream_nta = __builtin_cpu_is("amd");
#endif
    if (!o.model_path) return tokenize_stdin(o.tokenizer_path);
    Model m;
    Tokenizer tok;
    char err[256];
    int rc = model_load(&m, o.model_path);
    if (rc == 0) {
        const TokenizerPart *v = &m.vocab;
        rc = tokenizer_init(&tok, v->n_vocab, v->n_special, v->vocab_offsets, v->vocab_bytes, v->special_offsets,
                            v->special_bytes, err, sizeof err);
        if (rc) fail("%s: %s", o.model_path, err);
        else {
            rc = run_model(&o, &m, &tok);
            tokenizer_free(&tok);
        }
    }
    model_free(&m);
    free(o.images);
    if (rc) fprintf(stderr, "run: %s\n", error_msg);
    return rc ? 1 : 0;
}
