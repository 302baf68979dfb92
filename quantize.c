// quantize.c: converts the official Mistral Small 3.1 checkpoint into one model file for `run`.
//
//   make quantize
//   ./quantize ~/models/Mistral-Small-3.1-24B-Instruct-2503 weights/mistral-small-3.1-q4.bin
//
// Reads either official layout from a folder: Hugging Face (config.json, model.safetensors.index.json,
// model-*.safetensors) or native Mistral (params.json, consolidated.safetensors), plus tekken.json.
// Writes the format of model.h: config, tokenizer, tensor directory, then the tensors one at a time,
// quantized in parallel. The source is memory-mapped and released tensor by tensor, so memory stays
// far below the checkpoint size. The output is written under a temporary name and renamed at the end.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "json.h"
#include "model.h"
#include "quant.h"

// ----------------------------------------------------------------------------
// reading files: JSON files, and read-only mappings of safetensors files

static int parse_json_file(const char *path, Json *root) {
    size_t len;
    char *text, err[256];
    if (json_read_file(path, &text, &len)) return fail("%s: %s", path, strerror(errno));
    int rc = json_parse(text, len, root, err, sizeof err);
    free(text);
    if (rc) return fail("%s: malformed JSON: %s", path, err);
    if (root->type != JSON_OBJECT) { json_free(root); return fail("%s: expected a JSON object", path); }
    return 0;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// ----------------------------------------------------------------------------
// safetensors: 8-byte little-endian header length N, N bytes of JSON, then the raw tensor data

typedef enum { DT_BF16, DT_F16, DT_F32 } DType;

typedef struct {
    char name[160];
    DType dtype;
    int n_dims;
    uint64_t shape[4];
    const uint8_t *data;         // inside the mapping of its file
    uint64_t bytes;
    int file;                    // index into Checkpoint.files
    int used;                    // found by the converter
} SourceTensor;

typedef struct {
    char path[1024];
    uint8_t *map;
    uint64_t size;
} MappedFile;

typedef struct {
    int hf_layout;               // 1: Hugging Face names and rotate-half q/k rows; 0: native
    char dir[1024];
    MappedFile files[64];
    int n_files;
    SourceTensor *tensors;
    int n_tensors;
} Checkpoint;

static int dtype_size(DType d) { return d == DT_F32 ? 4 : 2; }

static int cmp_by_offset(const void *a, const void *b) {
    const SourceTensor *x = *(SourceTensor *const *)a, *y = *(SourceTensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

// Maps one safetensors file and appends its tensors to ck->tensors, checking every header claim.
static int open_safetensors(Checkpoint *ck, const char *path) {
    if (ck->n_files == (int)(sizeof ck->files / sizeof ck->files[0])) return fail("%s: too many shards", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return fail("%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return fail("%s: %s", path, strerror(errno)); }
    if (!S_ISREG(st.st_mode)) { close(fd); return fail("%s: not a regular file", path); }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) { close(fd); return fail("%s: truncated safetensors file (%llu bytes)", path, (unsigned long long)size); }
    uint8_t *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return fail("%s: cannot map: %s", path, strerror(errno));
    MappedFile *mf = &ck->files[ck->n_files++];
    snprintf(mf->path, sizeof mf->path, "%s", path);
    mf->map = map;
    mf->size = size;

    uint64_t header_len;
    memcpy(&header_len, map, 8);
    if (header_len > size - 8 || header_len > (100u << 20))
        return fail("%s: header length %llu runs past the end of the file (%llu bytes)", path,
                    (unsigned long long)header_len, (unsigned long long)size);
    Json root;
    char err[256];
    if (json_parse((const char *)map + 8, header_len, &root, err, sizeof err))
        return fail("%s: malformed header JSON: %s", path, err);
    if (root.type != JSON_OBJECT) { json_free(&root); return fail("%s: header is not a JSON object", path); }

    const uint8_t *data = map + 8 + header_len;
    uint64_t data_size = size - 8 - header_len;
    int first = ck->n_tensors, rc = 0;
    SourceTensor *grown = realloc(ck->tensors, (ck->n_tensors + root.n) * sizeof *grown);
    if (!grown) { json_free(&root); return fail("out of memory"); }
    ck->tensors = grown;
    for (int i = 0; i < root.n && rc == 0; i++) {
        const char *name = root.keys[i];
        const Json *t = &root.items[i];
        if (strcmp(name, "__metadata__") == 0) continue;
        const Json *dtype = json_get(t, "dtype"), *shape = json_get(t, "shape"), *offs = json_get(t, "data_offsets");
        if (!dtype || dtype->type != JSON_STRING || !shape || shape->type != JSON_ARRAY || !offs ||
            offs->type != JSON_ARRAY || offs->n != 2) {
            rc = fail("%s: tensor %s: header entry lacks dtype, shape or data_offsets", path, name);
            break;
        }
        SourceTensor *s = &ck->tensors[ck->n_tensors];
        memset(s, 0, sizeof *s);
        if (strlen(name) >= sizeof s->name) { rc = fail("%s: tensor name too long: %.60s...", path, name); break; }
        strcpy(s->name, name);
        if (strcmp(dtype->str, "BF16") == 0) s->dtype = DT_BF16;
        else if (strcmp(dtype->str, "F16") == 0) s->dtype = DT_F16;
        else if (strcmp(dtype->str, "F32") == 0) s->dtype = DT_F32;
        else { rc = fail("%s: tensor %s: unsupported dtype %s (need BF16, F16 or F32)", path, name, dtype->str); break; }
        if (shape->n > 4) { rc = fail("%s: tensor %s: %d dimensions, at most 4 supported", path, name, shape->n); break; }
        s->n_dims = shape->n;
        uint64_t elements = 1;
        for (int d = 0; d < 4; d++) s->shape[d] = 1;
        for (int d = 0; d < shape->n; d++) {
            const Json *v = &shape->items[d];
            if (v->type != JSON_NUMBER || v->number < 0 || v->number > 1e12 || v->number != floor(v->number)) {
                rc = fail("%s: tensor %s: bad shape", path, name);
                break;
            }
            s->shape[d] = (uint64_t)v->number;
            elements *= s->shape[d];
        }
        if (rc) break;
        double b = offs->items[0].number, e = offs->items[1].number;
        if (offs->items[0].type != JSON_NUMBER || offs->items[1].type != JSON_NUMBER || b < 0 || e < b ||
            b != floor(b) || e != floor(e) || e > (double)data_size) {
            rc = fail("%s: tensor %s: data_offsets [%.0f, %.0f] outside the data area (%llu bytes)", path, name, b, e,
                      (unsigned long long)data_size);
            break;
        }
        s->bytes = (uint64_t)e - (uint64_t)b;
        if (s->bytes != elements * dtype_size(s->dtype)) {
            rc = fail("%s: tensor %s: data_offsets hold %llu bytes but the shape needs %llu", path, name,
                      (unsigned long long)s->bytes, (unsigned long long)(elements * dtype_size(s->dtype)));
            break;
        }
        s->data = data + (uint64_t)b;
        s->file = ck->n_files - 1;
        ck->n_tensors++;
    }
    json_free(&root);
    if (rc) return rc;

    // No two tensors of this file may share bytes.
    int n = ck->n_tensors - first;
    SourceTensor **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted) return fail("out of memory");
    for (int i = 0; i < n; i++) sorted[i] = &ck->tensors[first + i];
    qsort(sorted, n, sizeof *sorted, cmp_by_offset);
    for (int i = 1; i < n && rc == 0; i++)
        if (sorted[i - 1]->data + sorted[i - 1]->bytes > sorted[i]->data)
            rc = fail("%s: tensors %s and %s overlap", path, sorted[i - 1]->name, sorted[i]->name);
    free(sorted);
    return rc;
}

// The HF index lists which shard holds each tensor; every shard it names is opened once.
static int open_hf_shards(Checkpoint *ck) {
    char path[2048];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", ck->dir);
    if (!file_exists(path)) {  // small HF checkpoints come as one model.safetensors
        snprintf(path, sizeof path, "%s/model.safetensors", ck->dir);
        return open_safetensors(ck, path);
    }
    Json index;
    if (parse_json_file(path, &index)) return -1;
    const Json *map = json_get(&index, "weight_map");
    int rc = 0;
    if (!map || map->type != JSON_OBJECT || map->n == 0) rc = fail("%s: no weight_map object", path);
    for (int i = 0; rc == 0 && i < map->n; i++) {
        const Json *shard = &map->items[i];
        if (shard->type != JSON_STRING || strchr(shard->str, '/')) {
            rc = fail("%s: weight_map entry for %s is not a file name", path, map->keys[i]);
            break;
        }
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = strcmp(map->items[j].str, shard->str) == 0;
        if (seen) continue;
        char shard_path[2048];
        snprintf(shard_path, sizeof shard_path, "%s/%s", ck->dir, shard->str);
        rc = open_safetensors(ck, shard_path);
    }
    // Every tensor the index names must be in the shard it names.
    for (int i = 0; rc == 0 && i < map->n; i++) {
        int found = 0;
        for (int t = 0; t < ck->n_tensors && !found; t++) found = strcmp(ck->tensors[t].name, map->keys[i]) == 0;
        if (!found) rc = fail("%s: tensor %s is listed in the index but in no shard", path, map->keys[i]);
    }
    json_free(&index);
    return rc;
}

// ----------------------------------------------------------------------------
// the config: params.json (native) or config.json (HF) -> Config

// Reads a number from obj[key]; `fallback` < 0 means the key is required.
static int get_num(const Json *obj, const char *key, double fallback, double *out, const char *file) {
    const Json *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) {
        if (fallback < 0) return fail("%s: missing \"%s\"", file, key);
        *out = fallback;
        return 0;
    }
    if (v->type != JSON_NUMBER) return fail("%s: \"%s\" is not a number", file, key);
    *out = v->number;
    return 0;
}

typedef struct { const char *key; int32_t *field; double fallback; } IntField;
typedef struct { const char *key; float *field; double fallback; } FloatField;

static int read_fields(const Json *obj, const char *file, IntField *ints, int n_ints, FloatField *floats, int n_floats) {
    for (int i = 0; i < n_ints; i++) {
        double v;
        if (get_num(obj, ints[i].key, ints[i].fallback, &v, file)) return -1;
        if (v < 0 || v > 1e9 || v != floor(v)) return fail("%s: \"%s\" = %g is not a valid size", file, ints[i].key, v);
        *ints[i].field = (int32_t)v;
    }
    for (int i = 0; i < n_floats; i++) {
        double v;
        if (get_num(obj, floats[i].key, floats[i].fallback, &v, file)) return -1;
        if (!(v > 0)) return fail("%s: \"%s\" = %g must be positive", file, floats[i].key, v);
        *floats[i].field = (float)v;
    }
    return 0;
}

// Values one layout's config omits and the other states (MODEL.md §1), so both give the same file.
#define DEFAULT_MAX_SEQ_LEN 131072
#define DEFAULT_VISION_EPS 1e-5     // hard-coded in the reference, in neither config
#define DEFAULT_MERGE 2

static int read_native_config(const char *path, Config *c) {
    Json root;
    if (parse_json_file(path, &root)) return -1;
    IntField ints[] = {
        {"dim", &c->dim, -1}, {"n_layers", &c->n_layers, -1}, {"n_heads", &c->n_heads, -1},
        {"n_kv_heads", &c->n_kv_heads, -1}, {"head_dim", &c->head_dim, 0}, {"hidden_dim", &c->hidden_dim, -1},
        {"vocab_size", &c->vocab_size, -1}, {"max_seq_len", &c->max_seq_len, DEFAULT_MAX_SEQ_LEN},
    };
    FloatField floats[] = {{"rope_theta", &c->rope_theta, -1}, {"norm_eps", &c->norm_eps, -1}};
    int rc = read_fields(&root, path, ints, 8, floats, 2);
    const Json *v = json_get(&root, "vision_encoder");
    if (rc == 0 && v && v->type == JSON_OBJECT) {
        int32_t image_size = 0;
        IntField vints[] = {
            {"hidden_size", &c->vision_dim, -1}, {"num_hidden_layers", &c->vision_layers, -1},
            {"num_attention_heads", &c->vision_heads, -1}, {"head_dim", &c->vision_head_dim, 0},
            {"intermediate_size", &c->vision_hidden_dim, -1}, {"num_channels", &c->num_channels, 3},
            {"patch_size", &c->patch_size, -1}, {"image_size", &image_size, 0},
            {"max_image_size", &c->max_image_size, 0}, {"spatial_merge_size", &c->spatial_merge_size, DEFAULT_MERGE},
            {"image_token_id", &c->image_token_id, 0}, {"image_break_token_id", &c->image_break_id, 0},
            {"image_end_token_id", &c->image_end_id, 0},
        };
        FloatField vfloats[] = {{"rope_theta", &c->vision_rope_theta, -1}};
        rc = read_fields(v, path, vints, 13, vfloats, 1);
        if (c->max_image_size == 0) c->max_image_size = image_size;
        if (c->vision_head_dim == 0 && c->vision_heads) c->vision_head_dim = c->vision_dim / c->vision_heads;
        c->vision_norm_eps = DEFAULT_VISION_EPS;
        if (rc == 0 && c->max_image_size == 0) rc = fail("%s: vision_encoder lacks max_image_size", path);
    }
    if (c->head_dim == 0 && c->n_heads) c->head_dim = c->dim / c->n_heads;
    json_free(&root);
    return rc;
}

static int read_hf_config(const char *path, Config *c) {
    Json root;
    if (parse_json_file(path, &root)) return -1;
    const Json *text = json_get(&root, "text_config");
    if (!text || text->type != JSON_OBJECT) text = &root;  // a text-only Mistral config
    IntField ints[] = {
        {"hidden_size", &c->dim, -1}, {"num_hidden_layers", &c->n_layers, -1},
        {"num_attention_heads", &c->n_heads, -1}, {"num_key_value_heads", &c->n_kv_heads, -1},
        {"head_dim", &c->head_dim, 0}, {"intermediate_size", &c->hidden_dim, -1},
        {"vocab_size", &c->vocab_size, -1}, {"max_position_embeddings", &c->max_seq_len, DEFAULT_MAX_SEQ_LEN},
    };
    FloatField floats[] = {{"rope_theta", &c->rope_theta, -1}, {"rms_norm_eps", &c->norm_eps, -1}};
    int rc = read_fields(text, path, ints, 8, floats, 2);
    if (c->head_dim == 0 && c->n_heads) c->head_dim = c->dim / c->n_heads;
    const Json *v = json_get(&root, "vision_config");
    if (rc == 0 && v && v->type == JSON_OBJECT) {
        IntField vints[] = {
            {"hidden_size", &c->vision_dim, -1}, {"num_hidden_layers", &c->vision_layers, -1},
            {"num_attention_heads", &c->vision_heads, -1}, {"head_dim", &c->vision_head_dim, 0},
            {"intermediate_size", &c->vision_hidden_dim, -1}, {"num_channels", &c->num_channels, 3},
            {"patch_size", &c->patch_size, -1}, {"image_size", &c->max_image_size, -1},
        };
        FloatField vfloats[] = {{"rope_theta", &c->vision_rope_theta, -1}};
        IntField top[] = {{"spatial_merge_size", &c->spatial_merge_size, DEFAULT_MERGE},
                          {"image_token_index", &c->image_token_id, 0}};
        rc = read_fields(v, path, vints, 8, vfloats, 1);
        if (rc == 0) rc = read_fields(&root, path, top, 2, NULL, 0);
        if (c->vision_head_dim == 0 && c->vision_heads) c->vision_head_dim = c->vision_dim / c->vision_heads;
        c->vision_norm_eps = DEFAULT_VISION_EPS;
    }
    json_free(&root);
    return rc;
}

// Token ids come from the tokenizer's special-token names; where the config states one too, they must agree.
static int special_id(const TekkenFile *tk, const char *name) {
    for (int i = 0; i < tk->n_special; i++) {
        uint32_t b = tk->special_offsets[i], e = tk->special_offsets[i + 1];
        if (e - b == strlen(name) && memcmp(tk->special_bytes + b, name, e - b) == 0) return i;
    }
    return -1;
}

static int set_token_ids(Config *c, const TekkenFile *tk, const char *tekken_path) {
    struct { const char *name; int32_t *field; } ids[] = {
        {"<s>", &c->bos_id}, {"</s>", &c->eos_id}, {"[IMG]", &c->image_token_id},
        {"[IMG_BREAK]", &c->image_break_id}, {"[IMG_END]", &c->image_end_id},
    };
    for (int i = 0; i < 5; i++) {
        int id = special_id(tk, ids[i].name);
        if (id < 0) return fail("%s: no special token %s", tekken_path, ids[i].name);
        if (*ids[i].field && *ids[i].field != id)
            return fail("%s: %s is id %d but the model config says %d", tekken_path, ids[i].name, id, *ids[i].field);
        *ids[i].field = id;
    }
    c->n_special = tk->n_special;
    if (tk->n_vocab + tk->n_special != c->vocab_size)
        return fail("%s: %d special + %d regular tokens, but the model has a vocabulary of %d", tekken_path,
                    tk->n_special, tk->n_vocab, c->vocab_size);
    return 0;
}

// ----------------------------------------------------------------------------
// names: native name -> the name a checkpoint uses (MODEL.md §2.1)

// Native and HF suffixes of the per-layer tensors, text and vision alike.
static const char *layer_names[][2] = {
    {"attention_norm.weight", "input_layernorm.weight"},
    {"attention.wq.weight", "self_attn.q_proj.weight"},
    {"attention.wk.weight", "self_attn.k_proj.weight"},
    {"attention.wv.weight", "self_attn.v_proj.weight"},
    {"attention.wo.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"feed_forward.w1.weight", "mlp.gate_proj.weight"},
    {"feed_forward.w2.weight", "mlp.down_proj.weight"},
    {"feed_forward.w3.weight", "mlp.up_proj.weight"},
};
static const char *vision_layer_names[][2] = {
    {"attention.wq.weight", "attention.q_proj.weight"},
    {"attention.wk.weight", "attention.k_proj.weight"},
    {"attention.wv.weight", "attention.v_proj.weight"},
    {"attention.wo.weight", "attention.o_proj.weight"},
    {"feed_forward.w1.weight", "feed_forward.gate_proj.weight"},
    {"feed_forward.w2.weight", "feed_forward.down_proj.weight"},
    {"feed_forward.w3.weight", "feed_forward.up_proj.weight"},
};

// HF name of a native tensor in one of the two prefix styles: transformers 4.50 wrote
// "language_model.model.*"; >= 4.52 writes "model.language_model.*" (style 1).
static void hf_name(const char *native, int style, char *out, size_t size) {
    const char *text = style ? "model.language_model." : "language_model.model.";
    const char *model = style ? "model." : "";
    int layer, n;
    if (strcmp(native, "tok_embeddings.weight") == 0) { snprintf(out, size, "%sembed_tokens.weight", text); return; }
    if (strcmp(native, "norm.weight") == 0) { snprintf(out, size, "%snorm.weight", text); return; }
    if (strcmp(native, "output.weight") == 0) { snprintf(out, size, "%slm_head.weight", style ? "" : "language_model."); return; }
    if (sscanf(native, "layers.%d.%n", &layer, &n) == 1) {
        for (int i = 0; i < 9; i++)
            if (strcmp(native + n, layer_names[i][0]) == 0) {
                snprintf(out, size, "%slayers.%d.%s", text, layer, layer_names[i][1]);
                return;
            }
    }
    if (sscanf(native, "vision_encoder.transformer.layers.%d.%n", &layer, &n) == 1) {
        for (int i = 0; i < 7; i++)
            if (strcmp(native + n, vision_layer_names[i][0]) == 0) {
                snprintf(out, size, "%svision_tower.transformer.layers.%d.%s", model, layer, vision_layer_names[i][1]);
                return;
            }
    }
    if (strncmp(native, "vision_encoder.", 15) == 0) { snprintf(out, size, "%svision_tower.%s", model, native + 15); return; }
    static const char *projector[][2] = {
        {"pre_mm_projector_norm.weight", "multi_modal_projector.norm.weight"},
        {"patch_merger.merging_layer.weight", "multi_modal_projector.patch_merger.merging_layer.weight"},
        {"vision_language_adapter.w_in.weight", "multi_modal_projector.linear_1.weight"},
        {"vision_language_adapter.w_out.weight", "multi_modal_projector.linear_2.weight"},
    };
    for (int i = 0; i < 4; i++)
        if (strcmp(native, projector[i][0]) == 0) { snprintf(out, size, "%s%s", model, projector[i][1]); return; }
    snprintf(out, size, "%s", native);
}

static SourceTensor *find_source(Checkpoint *ck, const char *native) {
    char name[256];
    for (int style = 0; style < (ck->hf_layout ? 2 : 1); style++) {
        if (ck->hf_layout) hf_name(native, style, name, sizeof name);
        else snprintf(name, sizeof name, "%s", native);
        for (int i = 0; i < ck->n_tensors; i++)
            if (strcmp(ck->tensors[i].name, name) == 0) return &ck->tensors[i];
    }
    return NULL;
}

// ----------------------------------------------------------------------------
// the plan: for each output tensor (its TensorInfo in the directory) the source it comes from

typedef struct {
    const TensorInfo *info;      // name, type, shape, offset in the output
    SourceTensor *src;
    int permute_heads;           // HF q/k rows to bring back to interleaved-pair order; 0 = none
    int head_dim;
} PlanEntry;

static int is_qk(const char *name) {
    return strstr(name, "attention.wq.weight") || strstr(name, "attention.wk.weight");
}

// ----------------------------------------------------------------------------
// converting: source rows -> f32 -> the stored type, a chunk of rows at a time, rows in parallel

static float source_value(const SourceTensor *s, uint64_t i) {
    const uint8_t *p = s->data + i * dtype_size(s->dtype);
    if (s->dtype == DT_F32) { float f; memcpy(&f, p, 4); return f; }
    uint16_t h;
    memcpy(&h, p, 2);
    return s->dtype == DT_BF16 ? bf16_to_f32(h) : fp16_to_f32(h);
}

// Source row of output row r. HF stores a head's rows as (t, i) = rotate-half pairs (i, i + hd/2);
// we store (i, t) = interleaved pairs (2i, 2i+1): native row h*hd + 2i + t = HF row h*hd + t*hd/2 + i.
static uint64_t source_row(const PlanEntry *e, uint64_t r) {
    if (!e->permute_heads) return r;
    uint64_t hd = e->head_dim, h = r / hd, i = (r % hd) / 2, t = r % 2;
    return h * hd + t * (hd / 2) + i;
}

typedef struct { double err2, ref2; uint64_t n, f16_inexact; } ErrorStats;

// Converts rows [r0, r0+nr) of a tensor into `out` and accumulates the quantization error.
static void convert_rows(const PlanEntry *e, uint64_t r0, uint64_t nr, uint8_t *out, ErrorStats *st) {
    const TensorInfo *t = e->info;
    uint64_t cols = (uint64_t)t->shape[1] * t->shape[2] * t->shape[3], row_bytes = type_bytes(t->type, cols);
    double err2 = 0, ref2 = 0;
    uint64_t inexact = 0;
    #pragma omp parallel for schedule(dynamic, 1) reduction(+ : err2, ref2, inexact)
    for (uint64_t r = 0; r < nr; r++) {
        float *row = malloc(2 * cols * sizeof(float)), *back = row + cols;
        uint64_t src = source_row(e, r0 + r) * cols;
        for (uint64_t i = 0; i < cols; i++) row[i] = source_value(e->src, src + i);
        uint8_t *dst = out + r * row_bytes;
        switch (t->type) {
        case TYPE_F32: memcpy(dst, row, cols * 4); memcpy(back, row, cols * 4); break;
        case TYPE_F16:
            for (uint64_t i = 0; i < cols; i++) {
                uint16_t h = f32_to_fp16(row[i]);
                memcpy(dst + 2 * i, &h, 2);
                back[i] = fp16_to_f32(h);
                inexact += back[i] != row[i];
            }
            break;
        case TYPE_Q8: quantize_q8(row, (BlockQ8 *)dst, cols); dequantize_q8((BlockQ8 *)dst, back, cols); break;
        case TYPE_Q4: quantize_q4(row, (BlockQ4 *)dst, cols); dequantize_q4((BlockQ4 *)dst, back, cols); break;
        }
        for (uint64_t i = 0; i < cols; i++) {
            double d = (double)back[i] - row[i];
            err2 += d * d;
            ref2 += (double)row[i] * row[i];
        }
        free(row);
    }
    st->err2 += err2;
    st->ref2 += ref2;
    st->n += nr * cols;
    st->f16_inexact += inexact;
}

// q8 and q4 matrices are stored in groups of 16 rows (quant.h): rows [0, nr) of `out`, converted one after
// another, are interleaved in place a group at a time (nr is a multiple of 16). 0 ok, -1 out of memory.
static int interleave_rows(uint32_t type, uint8_t *out, uint64_t nr, uint64_t cols) {
    if (type != TYPE_Q8 && type != TYPE_Q4) return 0;
    uint64_t group_bytes = QROWS * type_bytes(type, cols);
    uint8_t *rows = malloc(group_bytes);
    if (!rows) return -1;
    for (uint64_t r = 0; r < nr; r += QROWS) {
        uint8_t *group = out + r / QROWS * group_bytes;
        memcpy(rows, group, group_bytes);
        if (type == TYPE_Q8) interleave_q8((const BlockQ8 *)rows, (int)(cols / QK8), (BlockQ8x16 *)group);
        else interleave_q4((const BlockQ4 *)rows, (int)(cols / QK4), (BlockQ4x16 *)group);
    }
    free(rows);
    return 0;
}

// ----------------------------------------------------------------------------
// progress: a bar on a terminal, a plain line every 5% otherwise

typedef struct { uint64_t total, done; double start; int tty, last_pct; } Progress;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void progress_show(Progress *p, int final) {
    double elapsed = now_seconds() - p->start, rate = elapsed > 0 ? p->done / elapsed : 0;
    double eta = rate > 0 ? (p->total - p->done) / rate : 0;
    int pct = p->total ? (int)(100.0 * p->done / p->total) : 100;
    if (!p->tty && !final && pct < p->last_pct + 5) return;
    p->last_pct = pct;
    char bar[31];
    for (int i = 0; i < 30; i++) bar[i] = i < pct * 30 / 100 ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "%s[%s] %3d%% %.2f/%.2f GB %.0f MB/s ETA %dm%02ds%s", p->tty ? "\r" : "", bar, pct, p->done / 1e9,
            p->total / 1e9, rate / 1e6, (int)eta / 60, (int)eta % 60, p->tty && !final ? "" : "\n");
    fflush(stderr);
}

// ----------------------------------------------------------------------------
// writing the file

static char tmp_path[2100];      // removed on failure or interrupt

static void remove_tmp_on_signal(int sig) {
    if (tmp_path[0]) unlink(tmp_path);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int write_all(FILE *f, const void *p, size_t n, const char *path) {
    if (n && fwrite(p, 1, n, f) != n) return fail("%s: write failed: %s", path, strerror(errno));
    return 0;
}

// A tensor "kind" groups the same matrix across layers: "layers.7.attention.wq.weight" -> "attention.wq".
static void tensor_kind(const char *name, char *kind, size_t size) {
    const char *p = name;
    int layer, n = 0;
    if (sscanf(p, "vision_encoder.transformer.layers.%d.%n", &layer, &n) == 1) {
        snprintf(kind, size, "vision.%s", p + n);
    } else if (sscanf(p, "layers.%d.%n", &layer, &n) == 1) {
        snprintf(kind, size, "%s", p + n);
    } else {
        snprintf(kind, size, "%s", p);
    }
    char *dot = strrchr(kind, '.');
    if (dot && strcmp(dot, ".weight") == 0) *dot = '\0';
}

typedef struct { char kind[MAX_TENSOR_NAME]; uint32_t type; ErrorStats st; uint64_t bytes; } KindStats;

static void print_summary(const PlanEntry *plan, int n, const ErrorStats *stats, uint64_t file_bytes, double seconds) {
    KindStats kinds[64];
    int n_kinds = 0;
    uint64_t params = 0, bytes = 0, inexact = 0;
    for (int i = 0; i < n; i++) {
        char kind[MAX_TENSOR_NAME];
        tensor_kind(plan[i].info->name, kind, sizeof kind);
        int k = 0;
        while (k < n_kinds && strcmp(kinds[k].kind, kind) != 0) k++;
        if (k == n_kinds && n_kinds < 64) {
            memset(&kinds[k], 0, sizeof kinds[k]);
            snprintf(kinds[k].kind, sizeof kinds[k].kind, "%s", kind);
            kinds[k].type = plan[i].info->type;
            n_kinds++;
        }
        if (k < n_kinds) {
            kinds[k].st.err2 += stats[i].err2;
            kinds[k].st.ref2 += stats[i].ref2;
            kinds[k].st.n += stats[i].n;
            kinds[k].bytes += plan[i].info->bytes;
        }
        params += stats[i].n;
        bytes += plan[i].info->bytes;
        inexact += stats[i].f16_inexact;
    }
    fprintf(stderr, "%-34s %5s %14s %9s %12s\n", "tensor kind", "type", "parameters", "bits/w", "rel RMS err");
    for (int k = 0; k < n_kinds; k++)
        fprintf(stderr, "%-34s %5s %14llu %9.3f %12.3e\n", kinds[k].kind, type_name(kinds[k].type),
                (unsigned long long)kinds[k].st.n, 8.0 * kinds[k].bytes / kinds[k].st.n,
                kinds[k].st.ref2 > 0 ? sqrt(kinds[k].st.err2 / kinds[k].st.ref2) : 0.0);
    fprintf(stderr, "total: %llu parameters, %.3f bits/weight, file %.3f GB, %.1f s\n", (unsigned long long)params,
            8.0 * bytes / params, file_bytes / 1e9, seconds);
    if (inexact) fprintf(stderr, "f16: %llu values not exactly representable (rounded)\n", (unsigned long long)inexact);
}

// ----------------------------------------------------------------------------
// main

typedef struct {
    const char *src_dir, *out_path;
    uint32_t type;
    int threads;
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: quantize CHECKPOINT_DIR OUTPUT_FILE [--type q4|q8|f16|f32] [-t THREADS]\n"
            "  CHECKPOINT_DIR  Hugging Face layout (config.json, model.safetensors.index.json, shards)\n"
            "                  or native layout (params.json, consolidated.safetensors), with tekken.json\n"
            "  --type T        type of the large matrices (default q4); norms stay f32; in q4 files the\n"
            "                  output head is q8 and matrices whose rows are not a multiple of 256 are q8\n"
            "  -t THREADS      OpenMP threads (default: all)\n");
}

static int parse_args(int argc, char **argv, Options *o) {
    o->type = TYPE_Q4;
    o->threads = 0;
    int positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); exit(0); }
        if (strcmp(a, "--type") == 0 && i + 1 < argc) {
            const char *t = argv[++i];
            if (strcmp(t, "q4") == 0) o->type = TYPE_Q4;
            else if (strcmp(t, "q8") == 0) o->type = TYPE_Q8;
            else if (strcmp(t, "f16") == 0) o->type = TYPE_F16;
            else if (strcmp(t, "f32") == 0) o->type = TYPE_F32;
            else return fail("unknown --type %s (use q4, q8, f16 or f32)", t);
        } else if (strcmp(a, "-t") == 0 && i + 1 < argc) {
            char *end;
            long t = strtol(argv[++i], &end, 10);
            if (*end || t < 1 || t > 1024) return fail("bad thread count %s", argv[i]);
            o->threads = (int)t;
        } else if (a[0] == '-' && a[1]) {
            return fail("unknown option %s", a);
        } else if (positional == 0) {
            o->src_dir = a, positional++;
        } else if (positional == 1) {
            o->out_path = a, positional++;
        } else {
            return fail("unexpected argument %s", a);
        }
    }
    if (positional != 2) return fail("need a checkpoint folder and an output file");
    return 0;
}

static int load_checkpoint(Checkpoint *ck, Config *c, TekkenFile *tk) {
    char config_path[2048], path[2048], err[1024];
    memset(c, 0, sizeof *c);
    snprintf(config_path, sizeof config_path, "%s/params.json", ck->dir);
    if (file_exists(config_path)) {
        ck->hf_layout = 0;
        snprintf(path, sizeof path, "%s/consolidated.safetensors", ck->dir);
        if (read_native_config(config_path, c) || open_safetensors(ck, path)) return -1;
    } else {
        snprintf(config_path, sizeof config_path, "%s/config.json", ck->dir);
        if (!file_exists(config_path)) {
            struct stat st;
            if (stat(ck->dir, &st) != 0) return fail("%s: %s", ck->dir, strerror(errno));
            return fail("%s: neither params.json (native layout) nor config.json (Hugging Face layout) found", ck->dir);
        }
        ck->hf_layout = 1;
        if (read_hf_config(config_path, c) || open_hf_shards(ck)) return -1;
    }
    if (config_check(c, err, sizeof err)) return fail("%s: %s", config_path, err);
    snprintf(path, sizeof path, "%s/tekken.json", ck->dir);
    if (tekken_load(path, tk, err, sizeof err)) return fail("%s", err);
    if (tk->image_patch_size && c->vision_layers && tk->image_patch_size != c->patch_size)
        return fail("%s: image_patch_size %d but the model's patch size is %d", path, tk->image_patch_size, c->patch_size);
    return set_token_ids(c, tk, path);
}

// Finds every tensor the model needs, checks its shape, and fills its directory entry (name, type,
// shape; write_model_head lays out the offsets) and plan entry.
static int make_plan(Checkpoint *ck, const Config *c, uint32_t type, TensorInfo *dir, PlanEntry *plan) {
    int n = model_tensor_count(c);
    TensorSpec *specs = malloc(n * sizeof *specs);
    if (!specs) return fail("out of memory");
    model_tensor_specs(c, specs);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const TensorSpec *s = &specs[i];
        PlanEntry *e = &plan[i];
        e->info = &dir[i];
        e->src = find_source(ck, s->name);
        if (!e->src) {
            char name[256];
            if (ck->hf_layout) hf_name(s->name, 0, name, sizeof name);
            else snprintf(name, sizeof name, "%s", s->name);
            rc = fail("%s: missing tensor %s", ck->dir, name);
            break;
        }
        e->src->used = 1;
        int same = e->src->n_dims == (int)s->n_dims;
        for (uint32_t d = 0; same && d < s->n_dims; d++) same = e->src->shape[d] == s->shape[d];
        if (!same) {
            char got[96] = "", exp[96] = "";
            for (int d = 0; d < e->src->n_dims; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", d ? ", " : "", (unsigned long long)e->src->shape[d]);
            for (uint32_t d = 0; d < s->n_dims; d++)
                snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%u", d ? ", " : "", s->shape[d]);
            rc = fail("%s: tensor %s has shape [%s] but the config implies [%s]", ck->files[e->src->file].path,
                      e->src->name, got, exp);
            break;
        }
        memset(&dir[i], 0, sizeof dir[i]);
        memcpy(dir[i].name, s->name, MAX_TENSOR_NAME);
        dir[i].type = storage_type(s, type);
        dir[i].n_dims = s->n_dims;
        memcpy(dir[i].shape, s->shape, sizeof dir[i].shape);
        if (ck->hf_layout && is_qk(s->name)) {
            int vision = strncmp(s->name, "vision_encoder.", 15) == 0;
            e->head_dim = vision ? c->vision_head_dim : c->head_dim;
            e->permute_heads = s->shape[0] / e->head_dim;
        }
    }
    free(specs);
    if (rc) return rc;
    for (int i = 0; i < ck->n_tensors; i++)
        if (!ck->tensors[i].used) fprintf(stderr, "skipping unused tensor %s\n", ck->tensors[i].name);
    return 0;
}

// Returns the pages of source bytes [begin, end) of a tensor to the kernel once converted, so that
// RSS stays near one chunk however large the tensor (the embeddings are 1.3 GB in bf16).
static void release_source(const Checkpoint *ck, const SourceTensor *s, uint64_t begin, uint64_t end) {
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    const MappedFile *mf = &ck->files[s->file];
    uint64_t b = ((uint64_t)(s->data - mf->map) + begin) / page * page, e = (uint64_t)(s->data - mf->map) + end;
    if (e > b) madvise(mf->map + b, e - b, MADV_DONTNEED);
}

static int convert(const Options *o) {
    Checkpoint ck;
    memset(&ck, 0, sizeof ck);
    snprintf(ck.dir, sizeof ck.dir, "%s", o->src_dir);
    Config c;
    TekkenFile tk;
    memset(&tk, 0, sizeof tk);
    if (load_checkpoint(&ck, &c, &tk)) return -1;
    int n = model_tensor_count(&c);
    PlanEntry *plan = calloc(n, sizeof *plan);
    TensorInfo *dir = calloc(n, sizeof *dir);
    ErrorStats *stats = calloc(n, sizeof *stats);
    if (!plan || !dir || !stats) return fail("out of memory");
    if (make_plan(&ck, &c, o->type, dir, plan)) return -1;

    snprintf(tmp_path, sizeof tmp_path, "%s.tmp%d", o->out_path, (int)getpid());
    signal(SIGINT, remove_tmp_on_signal);
    signal(SIGTERM, remove_tmp_on_signal);
    FILE *f = fopen(tmp_path, "wb");
    if (!f) return fail("%s: %s", tmp_path, strerror(errno));
    FileHeader h = {.n_tensors = n, .config = c};
    TokenizerHeader th = {tk.n_vocab, tk.n_special, strlen(tk.pattern), 0};
    int rc = write_model_head(f, &h, dir, &th, tk.vocab_offsets, tk.vocab_bytes, tk.special_offsets,
                              tk.special_bytes, tk.pattern);
    if (rc) rc = fail("%s: write failed: %s", tmp_path, strerror(errno));
    fprintf(stderr, "%s: %s layout, %d layers, %d vision layers, %d tensors -> %s (%.2f GB)\n", o->src_dir,
            ck.hf_layout ? "Hugging Face" : "native", c.n_layers, c.vision_layers, n, o->out_path, h.file_bytes / 1e9);

    Progress p = {0, 0, now_seconds(), isatty(2), -5};
    for (int i = 0; i < n; i++) p.total += plan[i].src->bytes;
    size_t chunk_cap = 64u << 20;  // output bytes converted per step
    uint8_t *chunk = malloc(chunk_cap);
    if (!chunk) rc = fail("out of memory");
    for (int i = 0; i < n && rc == 0; i++) {
        PlanEntry *e = &plan[i];
        uint64_t rows = e->info->shape[0], row_bytes = e->info->bytes / rows;
        uint64_t cols = (uint64_t)e->info->shape[1] * e->info->shape[2] * e->info->shape[3];
        uint64_t rows_per_chunk = chunk_cap / row_bytes ? chunk_cap / row_bytes : 1;
        if (e->info->type == TYPE_Q8 || e->info->type == TYPE_Q4)  // whole groups of 16 rows
            rows_per_chunk = rows_per_chunk < QROWS ? QROWS : rows_per_chunk / QROWS * QROWS;
        if (rows_per_chunk * row_bytes > chunk_cap) {
            free(chunk);
            chunk_cap = rows_per_chunk * row_bytes;
            if (!(chunk = malloc(chunk_cap))) { rc = fail("out of memory"); break; }
        }
        if (write_padding(f, e->info->offset)) rc = fail("%s: write failed: %s", tmp_path, strerror(errno));
        for (uint64_t r = 0; r < rows && rc == 0; r += rows_per_chunk) {
            uint64_t nr = rows - r < rows_per_chunk ? rows - r : rows_per_chunk;
            convert_rows(e, r, nr, chunk, &stats[i]);
            if (interleave_rows(e->info->type, chunk, nr, cols)) rc = fail("out of memory");
            if (rc == 0) rc = write_all(f, chunk, nr * row_bytes, tmp_path);
            if (!e->permute_heads) release_source(&ck, e->src, e->src->bytes / rows * r, e->src->bytes / rows * (r + nr));
            p.done += e->src->bytes * nr / rows;
            progress_show(&p, 0);
        }
        release_source(&ck, e->src, 0, e->src->bytes);
    }
    free(chunk);
    if (rc == 0 && write_padding(f, h.file_bytes)) rc = fail("%s: write failed: %s", tmp_path, strerror(errno));
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) rc = rc ? rc : fail("%s: write failed: %s", tmp_path, strerror(errno));
    if (fclose(f) != 0 && rc == 0) rc = fail("%s: write failed: %s", tmp_path, strerror(errno));
    if (rc == 0 && rename(tmp_path, o->out_path) != 0) rc = fail("%s: %s", o->out_path, strerror(errno));
    if (rc) return rc;
    tmp_path[0] = '\0';
    progress_show(&p, 1);
    print_summary(plan, n, stats, h.file_bytes, now_seconds() - p.start);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr, "peak RSS %.1f MB\n", ru.ru_maxrss / 1024.0);
    for (int i = 0; i < ck.n_files; i++) munmap(ck.files[i].map, ck.files[i].size);
    free(ck.tensors);
    free(plan);
    free(dir);
    free(stats);
    tekken_free(&tk);
    return 0;
}

int main(int argc, char **argv) {
    Options o = {0};
    if (parse_args(argc, argv, &o)) {
        fprintf(stderr, "quantize: %s\n", error_msg);
        usage(stderr);
        return 2;
    }
#ifdef _OPENMP
    if (o.threads) omp_set_num_threads(o.threads);
#endif
    if (convert(&o)) {
        if (tmp_path[0]) unlink(tmp_path);
        fprintf(stderr, "quantize: %s\n", error_msg);
        return 1;
    }
    return 0;
}
