/* run.c: Mistral Small 3.1 (24B) on a CPU, in one C file you can read top to bottom.

    make
    ./quantize ~/models/Mistral-Small-3.1-24B-Instruct-2503 weights/mistral-small-3.1-q4.bin
    ./run weights/mistral-small-3.1-q4.bin -p "Why is the sky blue?"

The sections follow the data: the model file (mapped, checked, viewed as weights) -> the Tekken
tokenizer (text <-> token ids) -> the neural-net blocks (matmul, rmsnorm, RoPE) -> the transformer
(a batch of tokens through 40 layers, with a KV cache) -> the sampler -> generation (prompt format,
streaming, chat) -> the command line. MODEL.md (shared docs) is the specification; model.h is the
file format; quant.h the q4/q8/f16 number formats and their dot products.
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

typedef struct {
    Tensor tok_embeddings;       // (vocab_size, dim)
    LayerWeights *layers;        // (n_layers)
    const float *norm;           // (dim)
    Tensor output;               // (vocab_size, dim)
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

static Tensor layer_tensor(const Model *m, int layer, const char *suffix) {
    char name[MAX_TENSOR_NAME];
    snprintf(name, sizeof name, "layers.%d.%s", layer, suffix);
    return tensor_view(m, name);
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
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *lw = &w->layers[l];
        lw->attention_norm = layer_tensor(m, l, "attention_norm.weight").data;
        lw->wq = layer_tensor(m, l, "attention.wq.weight");
        lw->wk = layer_tensor(m, l, "attention.wk.weight");
        lw->wv = layer_tensor(m, l, "attention.wv.weight");
        lw->wo = layer_tensor(m, l, "attention.wo.weight");
        lw->ffn_norm = layer_tensor(m, l, "ffn_norm.weight").data;
        lw->w1 = layer_tensor(m, l, "feed_forward.w1.weight");
        lw->w2 = layer_tensor(m, l, "feed_forward.w2.weight");
        lw->w3 = layer_tensor(m, l, "feed_forward.w3.weight");
    }
    return 0;
}

static void model_free(Model *m) {
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

// One row of a weight matrix as floats (an embedding lookup).
static void dequantize_row(const Tensor *w, int row, float *out) {
    const uint8_t *p = (const uint8_t *)w->data + type_bytes(w->type, (uint64_t)row * w->cols);
    switch (w->type) {
    case TYPE_F32: memcpy(out, p, w->cols * sizeof(float)); break;
    case TYPE_F16: for (int i = 0; i < w->cols; i++) out[i] = fp16_to_f32(((const uint16_t *)p)[i]); break;
    case TYPE_Q8: dequantize_q8((const BlockQ8 *)p, out, w->cols); break;
    case TYPE_Q4: dequantize_q4((const BlockQ4 *)p, out, w->cols); break;
    }
}

// out (n, w->rows) = x (n, w->cols) · wᵀ, i.e. out[t][r] = Σ_i w[r][i] x[t][i] for each of n tokens.
// q8 and q4 weights are multiplied with activations quantized to 8 bits (quant.h has the dot products).
// Each weight row is read once for all n tokens: with a batch, the weights stay in cache.
static void matmul(float *out, const float *x, int n, const Tensor *w) {
    int rows = w->rows, cols = w->cols;
    size_t row_bytes = type_bytes(w->type, cols);
    BlockQ8A *xq = NULL;
    if (w->type == TYPE_Q8 || w->type == TYPE_Q4) {
        xq = malloc((size_t)n * (cols / QK8) * sizeof(BlockQ8A));
        for (int t = 0; t < n; t++) quantize_activations(x + (size_t)t * cols, xq + (size_t)t * (cols / QK8), cols);
    }
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const void *row = (const uint8_t *)w->data + r * row_bytes;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * cols;
            const BlockQ8A *xqt = xq + (size_t)t * (cols / QK8);
            float sum = 0.0f;
            switch (w->type) {
            case TYPE_F32: for (int i = 0; i < cols; i++) sum += ((const float *)row)[i] * xt[i]; break;
            case TYPE_F16: sum = dot_f16_f32(row, xt, cols); break;
            case TYPE_Q8: sum = dot_q8_q8(row, xqt, cols); break;
            case TYPE_Q4: sum = dot_q4_q8(row, xqt, cols); break;
            }
            out[(size_t)t * rows + r] = sum;
        }
    }
    free(xq);
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
    float *logits;               // (max_batch, vocab_size)
    float *key_cache;            // (n_layers, seq_len, n_kv_heads * head_dim)
    float *value_cache;          // (n_layers, seq_len, n_kv_heads * head_dim)
} RunState;

static int runstate_init(RunState *s, const Config *c, int max_batch, int seq_len) {
    memset(s, 0, sizeof *s);
    s->max_batch = max_batch;
    s->seq_len = seq_len;
    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim, b = max_batch;
    s->x = calloc(b * c->dim, sizeof(float));
    s->xb = calloc(b * c->dim, sizeof(float));
    s->q = calloc(b * q_dim, sizeof(float));
    s->att = calloc(b * q_dim, sizeof(float));
    s->hb = calloc(b * c->hidden_dim, sizeof(float));
    s->hb2 = calloc(b * c->hidden_dim, sizeof(float));
    s->rope_cos = calloc(b * c->head_dim / 2, sizeof(float));
    s->rope_sin = calloc(b * c->head_dim / 2, sizeof(float));
    s->inv_freq = calloc(c->head_dim / 2, sizeof(float));
    s->logits = calloc(b * c->vocab_size, sizeof(float));
    s->key_cache = calloc((size_t)c->n_layers * seq_len * kv_dim, sizeof(float));
    s->value_cache = calloc((size_t)c->n_layers * seq_len * kv_dim, sizeof(float));
    if (!s->x || !s->xb || !s->q || !s->att || !s->hb || !s->hb2 || !s->rope_cos || !s->rope_sin || !s->inv_freq ||
        !s->logits || !s->key_cache || !s->value_cache)
        return fail("out of memory for a %d-token context (%.1f GB of KV cache); use a smaller -c", seq_len,
                    2.0 * c->n_layers * seq_len * kv_dim * sizeof(float) / 1e9);
    // inv_freq[i] = 1 / theta^(2i / head_dim), in fp32 as the reference computes it
    for (int i = 0; i < c->head_dim / 2; i++)
        s->inv_freq[i] = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
    return 0;
}

static void runstate_free(RunState *s) {
    free(s->x); free(s->xb); free(s->q); free(s->att); free(s->hb); free(s->hb2);
    free(s->rope_cos); free(s->rope_sin); free(s->inv_freq); free(s->logits);
    free(s->key_cache); free(s->value_cache);
}

// Causal grouped-query attention for n new tokens at positions pos..pos+n-1, whose keys and values
// are already in the cache. q: (n, n_heads, head_dim) -> att: (n, n_heads, head_dim).
static void attention(const Config *c, RunState *s, int layer, int n, int pos) {
    int head_dim = c->head_dim, kv_dim = c->n_kv_heads * head_dim, group = c->n_heads / c->n_kv_heads;
    const float *keys = s->key_cache + (size_t)layer * s->seq_len * kv_dim;
    const float *values = s->value_cache + (size_t)layer * s->seq_len * kv_dim;
    float scale = 1.0f / sqrtf((float)head_dim);
    #pragma omp parallel
    {
        float *scores = malloc((size_t)(pos + n) * sizeof(float));
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int t = 0; t < n; t++) {
            for (int a = 0; a < c->n_heads; a++) {
                const float *q = s->q + ((size_t)t * c->n_heads + a) * head_dim;
                int g = a / group, len = pos + t + 1;  // kv head g serves query heads g*group .. g*group+group-1
                for (int j = 0; j < len; j++) {
                    const float *k = keys + (size_t)j * kv_dim + g * head_dim;
                    float dot = 0.0f;
                    for (int i = 0; i < head_dim; i++) dot += q[i] * k[i];
                    scores[j] = dot * scale;
                }
                softmax(scores, len);
                float *out = s->att + ((size_t)t * c->n_heads + a) * head_dim;
                memset(out, 0, head_dim * sizeof(float));
                for (int j = 0; j < len; j++) {
                    const float *v = values + (size_t)j * kv_dim + g * head_dim;
                    for (int i = 0; i < head_dim; i++) out[i] += scores[j] * v[i];
                }
            }
        }
        free(scores);
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
        float *k = s->key_cache + ((size_t)l * s->seq_len + pos) * kv_dim;  // (n, kv_dim) slots of the new tokens
        float *v = s->value_cache + ((size_t)l * s->seq_len + pos) * kv_dim;
        matmul(s->q, s->xb, n, &lw->wq);
        matmul(k, s->xb, n, &lw->wk);
        matmul(v, s->xb, n, &lw->wv);
        for (int t = 0; t < n; t++) {
            const float *cos_a = s->rope_cos + t * head_dim / 2, *sin_a = s->rope_sin + t * head_dim / 2;
            for (int a = 0; a < c->n_heads; a++) rope_rotate(s->q + t * q_dim + a * head_dim, cos_a, sin_a, head_dim);
            for (int g = 0; g < c->n_kv_heads; g++) rope_rotate(k + t * kv_dim + g * head_dim, cos_a, sin_a, head_dim);
        }
        attention(c, s, l, n, pos);
        matmul(s->xb, s->att, n, &lw->wo);
        for (int i = 0; i < n * dim; i++) s->x[i] += s->xb[i];

        // feed-forward: x = x + w2(silu(w1(h)) * w3(h)), h = rmsnorm(x)
        for (int t = 0; t < n; t++) rmsnorm(s->xb + t * dim, s->x + t * dim, lw->ffn_norm, dim, c->norm_eps);
        matmul(s->hb, s->xb, n, &lw->w1);
        matmul(s->hb2, s->xb, n, &lw->w3);
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
    // statistics
    long prompt_tokens, generated_tokens;
    double prefill_seconds, decode_seconds, first_token_seconds;
} Session;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

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
static int feed_turn(Session *ss, const Tokens *turn) {
    Tokens all = {0};
    int rc = 0, eos = ss->model->config.eos_id;
    if (ss->pending >= 0) {
        rc = tokens_push(&all, ss->pending);
        if (rc == 0 && ss->pending != eos) rc = tokens_push(&all, eos);
        ss->pending = -1;
    }
    for (int i = 0; i < turn->n && rc == 0; i++) rc = tokens_push(&all, turn->ids[i]);
    double t0 = now_seconds();
    if (rc == 0) rc = feed(ss, all.ids, all.n);
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

// One user turn: [INST] text [/INST], with <s> and the system prompt before the first one.
static int user_turn(Tokens *t, const Tokenizer *tok, const char *system, const char *text, int first) {
    int bos = tokenizer_special_id(tok, "<s>"), inst = tokenizer_special_id(tok, "[INST]"),
        inst_end = tokenizer_special_id(tok, "[/INST]"), sys = tokenizer_special_id(tok, "[SYSTEM_PROMPT]"),
        sys_end = tokenizer_special_id(tok, "[/SYSTEM_PROMPT]");
    if (bos < 0 || inst < 0 || inst_end < 0 || sys < 0 || sys_end < 0)
        return fail("the tokenizer lacks the special tokens of the V7 chat format");
    if (first && tokens_push(t, bos)) return -1;
    if (first && system &&
        (tokens_push(t, sys) || tokens_push_text(t, tok, system, "system prompt") || tokens_push(t, sys_end)))
        return -1;
    if (tokens_push(t, inst) || tokens_push_text(t, tok, text, "prompt") || tokens_push(t, inst_end)) return -1;
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

static int chat(Session *ss, const char *system, int max_new) {
    int interactive = isatty(0);
    for (int turn = 0;; turn++) {
        if (interactive) { printf("> "); fflush(stdout); }
        char *msg = read_message(stdin);
        if (!msg) break;
        if (strcmp(msg, "/exit") == 0 || strcmp(msg, "/quit") == 0) { free(msg); break; }
        Tokens t = {0};
        double start = now_seconds();
        int rc = user_turn(&t, ss->tokenizer, system, msg, turn == 0);
        free(msg);
        if (rc == 0) rc = feed_turn(ss, &t);
        free(t.ids);
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
    int steps;                   // -n; -1: until </s> or the context is full
    float temperature, top_p, min_p;
    int top_k;
    uint64_t seed;
    int threads, context;
    int chat, raw, tokenize;
} Options;

static void usage(FILE *f) {
    fprintf(f,
"usage: run MODEL [options]                      generate text with a model file made by ./quantize\n"
"       run MODEL --tokenize                     print the token ids of stdin (no BOS, no template)\n"
"       run --tokenizer TEKKEN_JSON --tokenize   the same with a tekken.json and no model\n"
"\n"
"  -p PROMPT          a user message, in the model's chat format (V7)\n"
"  -s SYSTEM          a system prompt before it\n"
"  --chat             interactive chat on stdin: one message per line (end a line with \\ to continue\n"
"                     it); the conversation stays in the KV cache. /exit or end of input quits\n"
"  --raw              feed <s> and PROMPT as they are, without the chat format\n"
"  -n N               generate at most N tokens (default: until </s> or a full context)\n"
"  --temp T           temperature (default 0.15, as Mistral recommends; 0 = greedy)\n"
"  --top-p P          keep the most likely tokens whose probabilities add up to P (default 1 = off)\n"
"  --top-k K          keep the K most likely tokens (default 0 = off)\n"
"  --min-p M          keep tokens at least M times as likely as the most likely one (default 0 = off)\n"
"  --seed S           random seed, for reproducible sampling (default: from the clock)\n"
"  -t THREADS         threads (default: OpenMP's default, all cores)\n"
"  -c CONTEXT         context length in tokens: the KV cache size (default 4096, at most the model's)\n"
"  --tokens IDS       feed these comma-separated token ids exactly (no BOS); generates only with -n\n"
"  --dump-logits FILE write the logits of every token fed to the model, float32 (n_fed x vocab_size)\n"
"  --dump-tokens FILE write every token id of the session (fed, then the last sampled), comma-separated\n");
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
        else if (strcmp(a, "-n") == 0 && parse_double(v, 0, 1e9, &x) == 0 && x == floor(x)) o->steps = (int)x;
        else if (strcmp(a, "--temp") == 0 && parse_double(v, 0, 100, &x) == 0) o->temperature = (float)x;
        else if (strcmp(a, "--top-p") == 0 && parse_double(v, 0, 1, &x) == 0 && x > 0) o->top_p = (float)x;
        else if (strcmp(a, "--top-k") == 0 && parse_double(v, 0, 1e9, &x) == 0 && x == floor(x)) o->top_k = (int)x;
        else if (strcmp(a, "--min-p") == 0 && parse_double(v, 0, 1, &x) == 0) o->min_p = (float)x;
        else if (strcmp(a, "--seed") == 0 && parse_double(v, 0, 1.8e19, &x) == 0 && x == floor(x)) o->seed = (uint64_t)x;
        else if (strcmp(a, "-t") == 0 && parse_double(v, 1, 4096, &x) == 0 && x == floor(x)) o->threads = (int)x;
        else if (strcmp(a, "-c") == 0 && parse_double(v, 1, 1 << 24, &x) == 0 && x == floor(x)) o->context = (int)x;
        else if (strcmp(a, "-n") == 0 || strcmp(a, "--temp") == 0 || strcmp(a, "--top-p") == 0 ||
                 strcmp(a, "--top-k") == 0 || strcmp(a, "--min-p") == 0 || strcmp(a, "--seed") == 0 ||
                 strcmp(a, "-t") == 0 || strcmp(a, "-c") == 0)
            return fail("bad value for %s: %s", a, v);
        else return fail("unknown option %s", a);
    }
    if (o->tokenizer_path && !o->tokenize) return fail("--tokenizer goes with --tokenize");
    if (!o->model_path && !o->tokenizer_path) return fail("no model file given");
    if (o->model_path && !o->tokenize && !o->prompt && !o->chat && !o->tokens)
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
            ss->generated_tokens, ss->decode_seconds > 0 ? ss->generated_tokens / ss->decode_seconds : 0.0,
            ss->first_token_seconds);
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

    Session ss = {.model = m, .tokenizer = tok, .pending = -1};
    Tokens prompt = {0};
    ss.sampler = (Sampler){o->temperature, o->top_k, o->top_p, o->min_p, o->seed * 2654435761u + 1, NULL};
    ss.sampler.candidates = malloc(c->vocab_size * sizeof(Candidate));
    int rc = ss.sampler.candidates ? runstate_init(&ss.state, c, 64, context) : fail("out of memory");
    if (rc == 0 && o->dump_logits && !(ss.dump_logits = fopen(o->dump_logits, "wb")))
        rc = fail("%s: %s", o->dump_logits, strerror(errno));

    int steps = o->steps >= 0 ? o->steps : (o->tokens ? 0 : context);
    double start = now_seconds();
    if (rc == 0 && o->chat) {
        rc = chat(&ss, o->system, steps);
    } else if (rc == 0) {
        if (o->tokens) rc = parse_token_list(o->tokens, c->vocab_size, &prompt);
        else if (o->raw) rc = tokens_push(&prompt, c->bos_id) || tokens_push_text(&prompt, tok, o->prompt, "prompt");
        else rc = user_turn(&prompt, tok, o->system, o->prompt, 1);
        if (rc == 0) rc = feed_turn(&ss, &prompt);
        if (rc == 0 && steps > 0) rc = generate(&ss, steps, start);
        if (rc == 0 && steps > 0) printf("\n");
    }
    if (ss.dump_logits && fclose(ss.dump_logits) != 0 && rc == 0) rc = fail("%s: write failed", o->dump_logits);
    if (rc == 0 && o->dump_tokens) rc = write_token_list(o->dump_tokens, &ss.history, ss.pending);
    if (rc == 0) print_stats(&ss);
    free(prompt.ids);
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
        return 2;
    }
#ifdef _OPENMP
    if (o.threads) omp_set_num_threads(o.threads);
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
    if (rc) fprintf(stderr, "run: %s\n", error_msg);
    return rc ? 1 : 0;
}
