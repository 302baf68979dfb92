// json.h: a small strict JSON parser, and the tekken.json (Mistral Tekken tokenizer) reader built on it.
//
// Header-only: every function is static, include it where it is needed (the API functions are
// static inline only so that a file using part of the API gets no unused-function warnings).
// Used by the converter for config.json, params.json, safetensors headers and
// model.safetensors.index.json, and by `run --tokenizer tekken.json`.
//
// JSON API
//     char *text, err[256];  size_t len;  Json root;
//     if (json_read_file("params.json", &text, &len) != 0) { ... strerror(errno) ... }
//     if (json_parse(text, len, &root, err, sizeof err) != 0) { fprintf(stderr, "%s\n", err); ... }
//     free(text);                                          // the tree does not point into text
//     const Json *dim = json_get(&root, "dim");            // NULL if absent (or root not an object)
//     int64_t d;  if (json_integer(dim, &d) != 0) { ... missing, or not an integer ... }
//     json_free(&root);
//   Check a value's type before reading its fields (see Json). Strings are decoded to UTF-8 and
//   NUL-terminated (str, len; a string may contain "\u0000", so use len rather than strlen); arrays
//   and objects hold n items, objects also n keys (keys[i] names items[i]). The whole tree lives
//   in one arena owned by the root: json_free(&root) frees it all, and is the only json_free call
//   to make.
//
// Strictness (RFC 8259): exactly one value surrounded by optional whitespace; no comments, no
// trailing commas, no leading zeros, no NaN/Infinity, no control characters inside strings, no
// invalid UTF-8, no lone surrogates in \u escapes; nesting deeper than JSON_MAX_DEPTH is refused.
// Every error is one line with the byte offset where it was found, e.g.
//     "byte 1734: expected ',' or '}' after object member".
// Duplicate keys are accepted; json_get returns the last one, as Python's json module does.
//
// tekken.json API
//     TekkenFile tf;
//     if (tekken_load("tekken.json", &tf, err, sizeof err) != 0) { ... err names the file and the problem ... }
//     ... tf.n_vocab, tf.vocab_offsets, tf.vocab_bytes, tf.special_offsets, ... (see TekkenFile)
//     tekken_free(&tf);
//   The rules it enforces are those of mistral-common's Tekkenizer (MODEL.md section 7).
#ifndef JSON_H
#define JSON_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- JSON values

typedef enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

// One value. Read only the fields of its type: the union shares their storage (a tekken.json
// holds about a million values, so the size matters).
typedef struct Json {
    JsonType type;
    int n;                                            // JSON_ARRAY, JSON_OBJECT: number of items
    union {
        double number;                                // JSON_NUMBER
        struct { char *str; size_t len; };            // JSON_STRING: decoded UTF-8, NUL-terminated, len bytes
        struct { struct Json *items; char **keys; };  // JSON_ARRAY, JSON_OBJECT: the n values; JSON_OBJECT: their n keys
    };
    struct JsonBlock *arena;                          // root only: the memory of the whole tree
} Json;

#define JSON_MAX_DEPTH 128     // arrays and objects nested deeper than this are an error, not a stack overflow
#define JSON_MAX_NUMBER 512    // longest number literal accepted, in characters
#define JSON_BLOCK_SIZE (1 << 20)

// The tree is allocated from a list of large blocks rather than with one malloc per node: a
// tekken.json has about a million values, and freeing them one by one cost as much as parsing.
typedef struct JsonBlock {
    struct JsonBlock *next;
    size_t size, used;   // bytes of data[] that exist / are handed out
    char *data;
} JsonBlock;

typedef struct {
    const unsigned char *text;
    size_t len;
    size_t pos;          // next byte to read
    int depth;           // arrays and objects currently open
    char *err;
    size_t errlen;
    JsonBlock *arena;
    // Values (and keys) of the arrays and objects still open, innermost last. A container's
    // items are copied from here into the arena when it closes, once its size is known.
    Json *stack;
    char **stack_keys;
    size_t stack_n, stack_cap;
} JsonParser;

static inline void json_free(Json *root) {
    for (JsonBlock *b = root->arena, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    memset(root, 0, sizeof *root);
}

// n bytes from the arena, aligned for a Json (or a pointer, or a double); NULL if out of memory.
static void *json_alloc(JsonParser *p, size_t n) {
    size_t align = _Alignof(Json);
    JsonBlock *b = p->arena;
    size_t at = b ? (b->used + align - 1) / align * align : 0;
    if (!b || at > b->size || n > b->size - at) {
        size_t size = n > JSON_BLOCK_SIZE ? n : JSON_BLOCK_SIZE;
        if (size > SIZE_MAX - sizeof *b - align) return NULL;
        b = malloc(sizeof *b + align + size);
        if (!b) return NULL;
        b->data = (char *)b + (sizeof *b + align - 1) / align * align;
        b->size = size;
        b->next = p->arena;
        p->arena = b;
        at = 0;
    }
    b->used = at + n;
    return b->data + at;
}

static int json_error(JsonParser *p, size_t at, const char *fmt, ...) {
    if (p->err && p->errlen) {
        int k = snprintf(p->err, p->errlen, "byte %zu: ", at);
        if (k >= 0 && (size_t)k < p->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->err + k, p->errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

static void json_skip_whitespace(JsonParser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

// Names the byte at p->pos for error messages: "'x'", "byte 0xc3" or "end of input".
static const char *json_describe_next(const JsonParser *p, char buf[16]) {
    if (p->pos >= p->len) return "end of input";
    unsigned char c = p->text[p->pos];
    if (c >= 0x21 && c < 0x7f) snprintf(buf, 16, "'%c'", c);
    else snprintf(buf, 16, "byte 0x%02x", c);
    return buf;
}

// Length (2..4) of the valid multi-byte UTF-8 character at s[0..n), or 0 if it is not one
// (overlong forms, surrogates and code points above U+10FFFF are invalid, as in RFC 3629).
static int json_utf8_length(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    int need;
    unsigned char lo = 0x80, hi = 0xBF;   // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return 0;
    if ((size_t)need > n || s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return need;
}

static int json_hex4(const unsigned char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

static size_t json_put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12); out[1] = (char)(0x80 | (cp >> 6 & 0x3F)); out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18); out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// Parses the string starting at the opening quote at p->pos into NUL-terminated arena memory.
// Two passes: find the closing quote (to size the buffer: decoding never makes a string longer),
// then decode escapes and check everything else.
static int json_parse_string(JsonParser *p, char **out, size_t *out_len) {
    const unsigned char *s = p->text;
    size_t start = p->pos, end = start + 1;
    while (end < p->len && s[end] != '"') end += s[end] == '\\' ? 2 : 1;
    if (end >= p->len) return json_error(p, start, "unterminated string");

    char *buf = json_alloc(p, end - start);
    if (!buf) return json_error(p, start, "out of memory for a string of %zu bytes", end - start);
    size_t n = 0, i = start + 1;
    while (i < end) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '\\') {
            buf[n++] = (char)c;
            i++;
        } else if (c == '\\') {
            unsigned char e = s[i + 1];  // i + 1 < end: the scan above skipped escaped characters
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e && simple) {
                buf[n++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
                i += 2;
                continue;
            }
            if (e != 'u') return json_error(p, i, "invalid escape '\\%c' in string", e >= 0x20 && e < 0x7f ? e : '?');
            uint32_t cp, lo;
            if (i + 6 > end || json_hex4(s + i + 2, &cp)) return json_error(p, i, "\\u must be followed by 4 hex digits");
            size_t esc = i;
            i += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return json_error(p, esc, "lone low surrogate \\u%04X", (unsigned)cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {  // a high surrogate must be followed by a low one: together one character
                if (i + 6 > end || s[i] != '\\' || s[i + 1] != 'u' || json_hex4(s + i + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return json_error(p, esc, "high surrogate \\u%04X not followed by a low surrogate", (unsigned)cp);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
            n += json_put_utf8(buf + n, cp);
        } else if (c < 0x20) {
            return json_error(p, i, "control character 0x%02x in string (must be escaped)", c);
        } else {
            int k = json_utf8_length(s + i, end - i);
            if (!k) return json_error(p, i, "invalid UTF-8 in string");
            memcpy(buf + n, s + i, (size_t)k);
            n += (size_t)k;
            i += (size_t)k;
        }
    }
    buf[n] = '\0';
    p->arena->used -= (end - start) - (n + 1);   // give back what escapes saved: buf is the newest allocation
    *out = buf;
    *out_len = n;
    p->pos = end + 1;
    return 0;
}

// number = [ '-' ] ( '0' | [1-9][0-9]* ) [ '.' [0-9]+ ] [ ('e'|'E') ['+'|'-'] [0-9]+ ]
static int json_parse_number(JsonParser *p, Json *out) {
    const unsigned char *s = p->text;
    size_t start = p->pos, i = start;
#define JSON_DIGIT(k) ((k) < p->len && s[k] >= '0' && s[k] <= '9')
    if (i < p->len && s[i] == '-') i++;
    if (!JSON_DIGIT(i)) return json_error(p, i, "expected a digit");
    if (s[i] == '0') {
        i++;
        if (JSON_DIGIT(i)) return json_error(p, start, "number with a leading zero");
    } else {
        while (JSON_DIGIT(i)) i++;
    }
    if (i < p->len && s[i] == '.') {
        i++;
        if (!JSON_DIGIT(i)) return json_error(p, i, "expected a digit after the decimal point");
        while (JSON_DIGIT(i)) i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (!JSON_DIGIT(i)) return json_error(p, i, "expected a digit in the exponent");
        while (JSON_DIGIT(i)) i++;
    }
#undef JSON_DIGIT
    // strtod needs a NUL-terminated copy: the input need not be terminated after the number.
    char buf[JSON_MAX_NUMBER + 1];
    if (i - start > JSON_MAX_NUMBER) return json_error(p, start, "number longer than %d characters", JSON_MAX_NUMBER);
    memcpy(buf, s + start, i - start);
    buf[i - start] = '\0';
    out->type = JSON_NUMBER;
    out->number = strtod(buf, NULL);
    p->pos = i;
    return 0;
}

static int json_parse_value(JsonParser *p, Json *out);

// Pushes a finished item (and its key, for objects) onto the stack of open containers.
static int json_push(JsonParser *p, const Json *v, char *key) {
    if (p->stack_n == p->stack_cap) {
        size_t cap = p->stack_cap ? 2 * p->stack_cap : 256;
        Json *stack = realloc(p->stack, cap * sizeof *stack);
        if (stack) p->stack = stack;
        char **keys = stack ? realloc(p->stack_keys, cap * sizeof *keys) : NULL;
        if (keys) p->stack_keys = keys;
        if (!keys) return json_error(p, p->pos, "out of memory");
        p->stack_cap = cap;
    }
    p->stack[p->stack_n] = *v;
    p->stack_keys[p->stack_n] = key;
    p->stack_n++;
    return 0;
}

// Moves the items pushed since `base` into the arena as the container's items (and keys).
static int json_close_container(JsonParser *p, Json *out, size_t base) {
    size_t n = p->stack_n - base;
    if (n > INT32_MAX) return json_error(p, p->pos, "more than 2^31 items in one array or object");
    out->n = (int)n;
    if (n == 0) return 0;
    out->items = json_alloc(p, n * sizeof *out->items);
    if (out->type == JSON_OBJECT) out->keys = json_alloc(p, n * sizeof *out->keys);
    if (!out->items || (out->type == JSON_OBJECT && !out->keys)) return json_error(p, p->pos, "out of memory");
    memcpy(out->items, p->stack + base, n * sizeof *out->items);
    if (out->keys) memcpy(out->keys, p->stack_keys + base, n * sizeof *out->keys);
    p->stack_n = base;
    return 0;
}

// Parses an array or object starting at '[' or '{'.
static int json_parse_container(JsonParser *p, Json *out) {
    int is_object = p->text[p->pos] == '{';
    char close = is_object ? '}' : ']', buf[16];
    size_t base = p->stack_n;
    if (++p->depth > JSON_MAX_DEPTH) return json_error(p, p->pos, "nesting deeper than %d", JSON_MAX_DEPTH);
    out->type = is_object ? JSON_OBJECT : JSON_ARRAY;
    p->pos++;
    json_skip_whitespace(p);
    if (p->pos < p->len && p->text[p->pos] == close) {
        p->pos++;
        p->depth--;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        if (is_object) {
            size_t key_len;
            if (p->pos >= p->len || p->text[p->pos] != '"')
                return json_error(p, p->pos, "expected a string key, found %s", json_describe_next(p, buf));
            if (json_parse_string(p, &key, &key_len)) return -1;
            json_skip_whitespace(p);
            if (p->pos >= p->len || p->text[p->pos] != ':')
                return json_error(p, p->pos, "expected ':' after object key, found %s", json_describe_next(p, buf));
            p->pos++;
        }
        Json item = { 0 };
        if (json_parse_value(p, &item) || json_push(p, &item, key)) return -1;
        json_skip_whitespace(p);
        if (p->pos < p->len && p->text[p->pos] == ',') {
            p->pos++;
            json_skip_whitespace(p);
            continue;
        }
        if (p->pos < p->len && p->text[p->pos] == close) {
            p->pos++;
            p->depth--;
            return json_close_container(p, out, base);
        }
        return json_error(p, p->pos, is_object ? "expected ',' or '}' after object member, found %s"
                                               : "expected ',' or ']' after array item, found %s",
                          json_describe_next(p, buf));
    }
}

static int json_parse_value(JsonParser *p, Json *out) {
    char buf[16];
    json_skip_whitespace(p);
    if (p->pos >= p->len) return json_error(p, p->pos, "expected a value, found end of input");
    const char *rest = (const char *)p->text + p->pos;
    size_t left = p->len - p->pos;
    switch (p->text[p->pos]) {
    case '{': case '[': return json_parse_container(p, out);
    case '"': out->type = JSON_STRING; return json_parse_string(p, &out->str, &out->len);
    case 't': if (left >= 4 && !memcmp(rest, "true", 4)) { out->type = JSON_TRUE; p->pos += 4; return 0; } break;
    case 'f': if (left >= 5 && !memcmp(rest, "false", 5)) { out->type = JSON_FALSE; p->pos += 5; return 0; } break;
    case 'n': if (left >= 4 && !memcmp(rest, "null", 4)) { out->type = JSON_NULL; p->pos += 4; return 0; } break;
    default:
        if (*rest == '-' || (*rest >= '0' && *rest <= '9')) return json_parse_number(p, out);
    }
    return json_error(p, p->pos, "expected a value, found %s", json_describe_next(p, buf));
}

// Parses text[0..len) (need not be NUL-terminated). Returns 0, or -1 with a one-line message in err;
// *root is always safe to pass to json_free afterwards, and is JSON_NULL after an error.
static inline int json_parse(const char *text, size_t len, Json *root, char *err, size_t errlen) {
    JsonParser p = { (const unsigned char *)text, len, 0, 0, err, errlen, NULL, NULL, NULL, 0, 0 };
    memset(root, 0, sizeof *root);
    if (err && errlen) err[0] = '\0';
    int rc = json_parse_value(&p, root);
    if (rc == 0) {
        json_skip_whitespace(&p);
        if (p.pos != len) rc = json_error(&p, p.pos, "unexpected data after the JSON value");
    }
    free(p.stack);
    free(p.stack_keys);
    root->arena = p.arena;
    if (rc) json_free(root);
    return rc;
}

// The value of member `key` of an object (the last one if the key is repeated); NULL if obj is
// NULL, not an object or has no such member.
static inline const Json *json_get(const Json *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (int i = obj->n - 1; i >= 0; i--)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

// Reads v as an integer: 0 if v is a number with an integral value of magnitude at most 2^53 (so
// that the double holds it exactly), else -1 (also for v == NULL).
static inline int json_integer(const Json *v, int64_t *out) {
    if (!v || v->type != JSON_NUMBER) return -1;
    double d = v->number;
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != (double)(int64_t)d) return -1;
    *out = (int64_t)d;
    return 0;
}

// Reads a whole file into a new buffer (with a NUL after the data). 0 ok, else -1 with errno set.
static inline int json_read_file(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    // Start with the file's size when it can be had, so that a 20 MB file is read in one go. Sizes
    // beyond 1 GiB start small and grow instead: a directory may report a huge "size".
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size < 0 || size > (1L << 30) || fseek(f, 0, SEEK_SET) != 0) { clearerr(f); rewind(f); size = 1 << 16; }
    size_t cap = (size_t)size + 2, n = 0;   // + 2: room for the NUL, and to see the end of file without a realloc
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) { fclose(f); errno = ENOMEM; return -1; }
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1) break;
        char *bigger = cap < ((size_t)1 << 40) ? realloc(buf, cap * 2) : NULL;
        if (!bigger) free(buf);
        buf = bigger;
        cap *= 2;
    }
    if (ferror(f)) {
        int e = errno ? errno : EIO;
        free(buf);
        fclose(f);
        errno = e;
        return -1;
    }
    fclose(f);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

// ---- tekken.json

// The pre-tokenizer pattern of every Tekken file. run.c implements exactly this regex in C, so a
// file with any other pattern is refused rather than silently tokenized differently.
#define TEKKEN_PATTERN \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|" \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|" \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

#define TEKKEN_MAX_VOCAB (1 << 24)   // a sanity bound on the sizes a file may declare (Mistral's: 131072)

// mistral-common's built-in special tokens (ids 0..19), used when the file has no "special_tokens".
static const char *const TEKKEN_BUILTIN_SPECIALS[] = {
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
};

typedef struct {
    int n_vocab;                 // regular tokens kept = default_vocab_size - default_num_special_tokens; id = rank + n_special
    int n_special;               // default_num_special_tokens: ids 0..n_special-1 are control tokens
    uint32_t *vocab_offsets;     // (n_vocab+1) token of rank r = vocab_bytes[vocab_offsets[r] .. vocab_offsets[r+1])
    uint8_t *vocab_bytes;
    uint32_t *special_offsets;   // (n_special+1) name of special id i = special_bytes[special_offsets[i] .. special_offsets[i+1]), no NULs
    char *special_bytes;
    char *pattern;               // config.pattern (always TEKKEN_PATTERN once loaded)
    int image_patch_size, max_image_size, spatial_merge_size;   // from "multimodal" (or "image"); 0 if absent
} TekkenFile;

static inline void tekken_free(TekkenFile *t) {
    free(t->vocab_offsets);
    free(t->vocab_bytes);
    free(t->special_offsets);
    free(t->special_bytes);
    free(t->pattern);
    memset(t, 0, sizeof *t);
}

// Decodes strict base64 (RFC 4648 standard alphabet, '=' padding to a multiple of 4 characters, no
// whitespace, unused bits zero). Returns the number of bytes written to out, or -1.
static long tekken_base64_decode(const char *s, size_t n, uint8_t *out) {
    if (n % 4) return -1;
    long len = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = s[i + k];
            int d = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26
                  : c >= '0' && c <= '9' ? c - '0' + 52 : c == '+' ? 62 : c == '/' ? 63 : -1;
            if (c == '=' && i + 4 == n && k >= 2) { pad++; d = 0; }
            else if (d < 0 || pad) return -1;   // not base64, or data after '='
            v = v << 6 | (uint32_t)d;
        }
        if ((pad == 1 && (v & 0xFF)) || (pad == 2 && (v & 0xFFFF))) return -1;   // non-zero unused bits
        out[len++] = (uint8_t)(v >> 16);
        if (pad < 2) out[len++] = (uint8_t)(v >> 8);
        if (pad < 1) out[len++] = (uint8_t)v;
    }
    return len;
}

static int tekken_error(char *err, size_t errlen, const char *path, const char *fmt, ...) {
    if (err && errlen) {
        int k = snprintf(err, errlen, "%s: ", path);
        if (k >= 0 && (size_t)k < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

// Reads an integer member of obj into *out, requiring lo <= value <= hi.
static int tekken_get_int(const Json *obj, const char *key, int64_t lo, int64_t hi, int *out) {
    int64_t v;
    if (json_integer(json_get(obj, key), &v) || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

// Keeps the first n_vocab entries of "vocab": token_bytes decoded, rank == index, ranks 0..255 = bytes 0..255.
static int tekken_read_vocab(const char *path, const Json *vocab, TekkenFile *t, char *err, size_t errlen) {
    if (!vocab || vocab->type != JSON_ARRAY) return tekken_error(err, errlen, path, "\"vocab\" missing or not an array");
    if (vocab->n < t->n_vocab)
        return tekken_error(err, errlen, path, "\"vocab\" lists %d entries, fewer than the %d kept (default_vocab_size - default_num_special_tokens)",
                            vocab->n, t->n_vocab);
    size_t total = 0;   // upper bound of the decoded size: 3 bytes per 4 base64 characters
    for (int r = 0; r < t->n_vocab; r++) {
        const Json *e = &vocab->items[r], *b = json_get(e, "token_bytes");
        if (!b || b->type != JSON_STRING) return tekken_error(err, errlen, path, "vocab entry %d: \"token_bytes\" missing or not a string", r);
        total += b->len / 4 * 3;
    }
    if (total > UINT32_MAX) return tekken_error(err, errlen, path, "vocab too large (%zu bytes)", total);
    t->vocab_offsets = malloc(((size_t)t->n_vocab + 1) * sizeof *t->vocab_offsets);
    t->vocab_bytes = malloc(total ? total : 1);
    if (!t->vocab_offsets || !t->vocab_bytes) return tekken_error(err, errlen, path, "out of memory for the vocab");
    uint32_t off = 0;
    for (int r = 0; r < t->n_vocab; r++) {
        const Json *e = &vocab->items[r], *b = json_get(e, "token_bytes");
        int rank;
        if (tekken_get_int(e, "rank", 0, INT32_MAX, &rank) || rank != r)
            return tekken_error(err, errlen, path, "vocab entry %d: \"rank\" is not %d", r, r);
        long n = tekken_base64_decode(b->str, b->len, t->vocab_bytes + off);
        if (n <= 0) return tekken_error(err, errlen, path, "vocab entry %d: \"token_bytes\" is not valid base64 of a non-empty token", r);
        if (r < 256 && (n != 1 || t->vocab_bytes[off] != r))
            return tekken_error(err, errlen, path, "vocab entry %d: ranks 0..255 must be the single bytes 0..255", r);
        t->vocab_offsets[r] = off;
        off += (uint32_t)n;
    }
    t->vocab_offsets[t->n_vocab] = off;
    return 0;
}

// Special token names: the file's "special_tokens" (rank == index) when present, else the built-in
// list; ids not named up to n_special are "<SPECIAL_i>".
static int tekken_read_specials(const char *path, const Json *list, TekkenFile *t, char *err, size_t errlen) {
    int n_listed = (int)(sizeof TEKKEN_BUILTIN_SPECIALS / sizeof TEKKEN_BUILTIN_SPECIALS[0]);
    if (list) {
        if (list->type != JSON_ARRAY) return tekken_error(err, errlen, path, "\"special_tokens\" is not an array");
        n_listed = list->n;
    }
    if (n_listed > t->n_special)
        return tekken_error(err, errlen, path, "%d special tokens listed, more than default_num_special_tokens (%d)", n_listed, t->n_special);
    size_t total = 0;
    for (int i = 0; i < n_listed; i++) {
        if (!list) { total += strlen(TEKKEN_BUILTIN_SPECIALS[i]); continue; }
        const Json *e = &list->items[i], *s = json_get(e, "token_str");
        int rank;
        if (tekken_get_int(e, "rank", 0, INT32_MAX, &rank) || rank != i)
            return tekken_error(err, errlen, path, "special token %d: \"rank\" is not %d", i, i);
        if (!s || s->type != JSON_STRING) return tekken_error(err, errlen, path, "special token %d: \"token_str\" missing or not a string", i);
        total += s->len;
    }
    total += (size_t)(t->n_special - n_listed) * sizeof "<SPECIAL_2147483647>";
    t->special_offsets = malloc(((size_t)t->n_special + 1) * sizeof *t->special_offsets);
    t->special_bytes = malloc(total + 1);   // + 1: snprintf's NUL after the last filler
    if (!t->special_offsets || !t->special_bytes) return tekken_error(err, errlen, path, "out of memory for the special tokens");
    size_t off = 0;
    for (int i = 0; i < t->n_special; i++) {
        t->special_offsets[i] = (uint32_t)off;
        if (i >= n_listed) off += (size_t)sprintf(t->special_bytes + off, "<SPECIAL_%d>", i);
        else if (!list) { memcpy(t->special_bytes + off, TEKKEN_BUILTIN_SPECIALS[i], strlen(TEKKEN_BUILTIN_SPECIALS[i])); off += strlen(TEKKEN_BUILTIN_SPECIALS[i]); }
        else { const Json *s = json_get(&list->items[i], "token_str"); memcpy(t->special_bytes + off, s->str, s->len); off += s->len; }
    }
    t->special_offsets[t->n_special] = (uint32_t)off;
    return 0;
}

// The image section: "multimodal" (mistral-common 1.5) or "image" (newer files). All 0 if absent.
static int tekken_read_image(const char *path, const Json *root, TekkenFile *t, char *err, size_t errlen) {
    const Json *img = json_get(root, "multimodal");
    const char *name = "multimodal";
    if (!img) { img = json_get(root, "image"); name = "image"; }
    if (!img) return 0;
    if (img->type != JSON_OBJECT) return tekken_error(err, errlen, path, "\"%s\" is not an object", name);
    const char *keys[3] = { "image_patch_size", "max_image_size", "spatial_merge_size" };
    int *fields[3] = { &t->image_patch_size, &t->max_image_size, &t->spatial_merge_size };
    for (int i = 0; i < 3; i++)
        if (json_get(img, keys[i]) && tekken_get_int(img, keys[i], 0, INT32_MAX, fields[i]))
            return tekken_error(err, errlen, path, "\"%s\".\"%s\" is not a non-negative integer", name, keys[i]);
    return 0;
}

static int tekken_read(const char *path, const Json *root, TekkenFile *t, char *err, size_t errlen) {
    if (root->type != JSON_OBJECT) return tekken_error(err, errlen, path, "not a JSON object");
    const Json *config = json_get(root, "config"), *pattern = json_get(config, "pattern");
    int vocab_size;
    if (!config || config->type != JSON_OBJECT) return tekken_error(err, errlen, path, "\"config\" missing or not an object");
    if (!pattern || pattern->type != JSON_STRING) return tekken_error(err, errlen, path, "\"config\".\"pattern\" missing or not a string");
    if (pattern->len != strlen(TEKKEN_PATTERN) || memcmp(pattern->str, TEKKEN_PATTERN, pattern->len))
        return tekken_error(err, errlen, path, "unsupported pre-tokenizer pattern (only Tekken's own pattern is implemented)");
    if (tekken_get_int(config, "default_vocab_size", 1, TEKKEN_MAX_VOCAB, &vocab_size))
        return tekken_error(err, errlen, path, "\"config\".\"default_vocab_size\" missing or not an integer in 1..%d", TEKKEN_MAX_VOCAB);
    if (tekken_get_int(config, "default_num_special_tokens", 1, TEKKEN_MAX_VOCAB, &t->n_special))
        return tekken_error(err, errlen, path, "\"config\".\"default_num_special_tokens\" missing or not an integer in 1..%d", TEKKEN_MAX_VOCAB);
    if (vocab_size - t->n_special < 256)
        return tekken_error(err, errlen, path, "default_vocab_size (%d) must exceed default_num_special_tokens (%d) by at least 256",
                            vocab_size, t->n_special);
    t->n_vocab = vocab_size - t->n_special;
    t->pattern = malloc(pattern->len + 1);
    if (!t->pattern) return tekken_error(err, errlen, path, "out of memory");
    memcpy(t->pattern, pattern->str, pattern->len + 1);
    if (tekken_read_vocab(path, json_get(root, "vocab"), t, err, errlen)) return -1;
    if (tekken_read_specials(path, json_get(root, "special_tokens"), t, err, errlen)) return -1;
    return tekken_read_image(path, root, t, err, errlen);
}

// Loads a tekken.json. 0 ok; else -1 with a one-line message naming the file in err, and *t empty.
static inline int tekken_load(const char *path, TekkenFile *t, char *err, size_t errlen) {
    char *text, jerr[200];
    size_t len;
    Json root;
    memset(t, 0, sizeof *t);
    if (json_read_file(path, &text, &len)) return tekken_error(err, errlen, path, "cannot read: %s", strerror(errno));
    int rc = json_parse(text, len, &root, jerr, sizeof jerr);
    free(text);
    if (rc) return tekken_error(err, errlen, path, "invalid JSON: %s", jerr);
    rc = tekken_read(path, &root, t, err, errlen);
    json_free(&root);
    if (rc) tekken_free(t);
    return rc;
}

#endif // JSON_H
