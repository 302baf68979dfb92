/* vision.c: the vision section of run.c, kept in its own file. An image becomes rows of [IMG] embeddings.

This is not a separate program or library: run.c includes it (#include "vision.c") between the transformer
and the sampler, so it uses run.c's Model, Tensor, matmul, rmsnorm, silu, rope_rotate, now_seconds and
fail() directly, and run.c's prompt code calls image_load, vision_encode and encode_image_file below.
MODEL.md §5 and §6 are the specification, mistral-common's preprocessing and mistral-inference's encoder
the reference:

  file --stb_image--> 8-bit grey/RGB, maybe alpha --composited on white--> RGB (h, w)
       --one bicubic resize, OpenCV INTER_CUBIC on floats--> (28·rows, 28·cols) --CLIP normalize-->
  pixels (3, H, W) --patch_conv--> (n, 1024), n = H/14 · W/14 patches, row-major --ln_pre, 24 layers with
  2D RoPE, attention over all patches of the image--> (n, 1024) --RMSNorm, 2x2 patch merge, w_in, GELU,
  w_out--> (rows·cols, 5120): one row per [IMG] token, merged grid row by row.

The decoder then sees ([IMG] x cols, [IMG_BREAK]) x rows with the last break replaced by [IMG_END]; each
[IMG] position takes the next row instead of its token embedding (run.c, feed()).
*/

// stb_image decodes the files: the system's copy (Debian: libstb-dev), never a vendored one.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_PNM
#define STBI_ONLY_TGA
#include <stb_image.h>

// ----------------------------------------------------------------------------
// vision: loading and preprocessing an image (MODEL.md §5.1, as mistral-common does it)

// Sizes refused from the header alone, before anything is decoded: the largest image is resized down to
// 1540 pixels anyway, and decoding a huge one would only cost memory (4 bytes per pixel).
#define IMAGE_MAX_SIDE 16384
#define IMAGE_MAX_PIXELS (64 << 20)   // 64 megapixels

static const double CLIP_MEAN[3] = {0.48145466, 0.4578275, 0.40821073};
static const double CLIP_STD[3] = {0.26862954, 0.26130258, 0.27577711};

typedef struct {
    int width, height;           // of the file
    int rows, cols;              // token grid: rows x cols [IMG] tokens
    int pixel_rows, pixel_cols;  // the resized image: rows x cols cells of (patch * merge)^2 pixels
    float *pixels;               // (3, pixel_rows, pixel_cols) normalized, channels R, G, B
} Image;

static void image_free(Image *img) {
    free(img->pixels);
    img->pixels = NULL;
}

// The token grid of an image of width x height (MODEL.md §5.1 step 2): if the longest side exceeds
// max_size, both sides are scaled down and rounded half to even (Python's round); then each side is
// rounded UP to whole cells of `cell` pixels (patch 14 x merge 2 = 28). 0, or -1 if a side rounds to 0.
static int image_grid(int width, int height, int max_size, int cell, int *rows, int *cols) {
    double ratio = fmax(height / (double)max_size, width / (double)max_size), w = width, h = height;
    if (ratio > 1) {
        w = nearbyint(width / ratio);   // the default rounding mode: to nearest, ties to even
        h = nearbyint(height / ratio);
    }
    if (w < 1 || h < 1) return -1;
    *cols = ((int)w - 1) / cell + 1;
    *rows = ((int)h - 1) / cell + 1;
    return 0;
}

// OpenCV's bicubic weights for a tap at fraction t in [0, 1) (interpolateCubic, A = -0.75), in float as
// OpenCV computes them.
static void cubic_weights(float t, float w[4]) {
    const float A = -0.75f;
    w[0] = ((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A;
    w[1] = ((A + 2) * t - (A + 3)) * t * t + 1;
    w[2] = ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1;
    w[3] = 1.f - w[0] - w[1] - w[2];
}

// For each output index d of an axis resized from src to dst samples: the first of its 4 taps and their
// weights. OpenCV (resize.cpp, resizeGeneric): scale = 1 / (dst / src) in double, f = (float)((d + 0.5) *
// scale - 0.5), taps floor(f) - 1 .. floor(f) + 2 (clamped to the axis by the caller: replicated border),
// weights of t = f - floor(f). No antialiasing when shrinking: always 4 taps.
static void cubic_taps(int src, int dst, int *first, float *weights) {
    double scale = 1.0 / ((double)dst / src);
    for (int d = 0; d < dst; d++) {
        float f = (float)((d + 0.5) * scale - 0.5);
        int s = (int)floorf(f);
        first[d] = s - 1;
        cubic_weights(f - s, weights + 4 * d);
    }
}

static int clamp_int(int x, int lo, int hi) { return x < lo ? lo : x > hi ? hi : x; }

// rgb (h, w, 3) 8-bit -> out (3, dh, dw) normalized: the one-step resize of cv2.resize(float32 image,
// (dw, dh), interpolation=INTER_CUBIC) (horizontal pass, then vertical; float arithmetic; the output
// is neither rounded nor clamped, so values outside 0..255 happen), then (p / 255 - mean) / std.
static int resize_normalize(const uint8_t *rgb, int w, int h, int dw, int dh, float *out) {
    int *xfirst = malloc(dw * sizeof(int)), *yfirst = malloc(dh * sizeof(int)), *slot = malloc(h * sizeof(int));
    float *xw = malloc(4 * dw * sizeof(float)), *yw = malloc(4 * dh * sizeof(float));
    if (!xfirst || !yfirst || !slot || !xw || !yw) {
        free(xfirst); free(yfirst); free(slot); free(xw); free(yw);
        return fail("out of memory");
    }
    cubic_taps(w, dw, xfirst, xw);
    cubic_taps(h, dh, yfirst, yw);
    // The horizontal pass is only needed for the source rows some output row reads.
    int n_slots = 0;
    for (int y = 0; y < h; y++) slot[y] = -1;
    for (int d = 0; d < dh; d++)
        for (int k = 0; k < 4; k++) {
            int y = clamp_int(yfirst[d] + k, 0, h - 1);
            if (slot[y] < 0) slot[y] = n_slots++;
        }
    float *rows = malloc((size_t)n_slots * dw * 3 * sizeof(float));   // (n_slots, dw, 3)
    if (!rows) {
        free(xfirst); free(yfirst); free(slot); free(xw); free(yw);
        return fail("out of memory");
    }
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < h; y++) {
        if (slot[y] < 0) continue;
        const uint8_t *src = rgb + (size_t)y * w * 3;
        float *dst = rows + (size_t)slot[y] * dw * 3;
        for (int d = 0; d < dw; d++) {
            const float *a = xw + 4 * d;
            int x0 = clamp_int(xfirst[d], 0, w - 1), x1 = clamp_int(xfirst[d] + 1, 0, w - 1),
                x2 = clamp_int(xfirst[d] + 2, 0, w - 1), x3 = clamp_int(xfirst[d] + 3, 0, w - 1);
            for (int c = 0; c < 3; c++)
                dst[d * 3 + c] = (float)src[x0 * 3 + c] * a[0] + (float)src[x1 * 3 + c] * a[1] +
                                 (float)src[x2 * 3 + c] * a[2] + (float)src[x3 * 3 + c] * a[3];
        }
    }
    #pragma omp parallel for schedule(static)
    for (int d = 0; d < dh; d++) {
        const float *b = yw + 4 * d, *r[4];
        for (int k = 0; k < 4; k++) r[k] = rows + (size_t)slot[clamp_int(yfirst[d] + k, 0, h - 1)] * dw * 3;
        for (int x = 0; x < dw; x++)
            for (int c = 0; c < 3; c++) {
                int i = x * 3 + c;
                float p = r[0][i] * b[0] + r[1][i] * b[1] + r[2][i] * b[2] + r[3][i] * b[3];
                out[((size_t)c * dh + d) * dw + x] = (float)((p / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]);
            }
    }
    free(rows); free(xfirst); free(yfirst); free(slot); free(xw); free(yw);
    return 0;
}

// The size in a PNG header (stb_image refuses to read the header of a PNG over 2^30 bytes decoded, so it
// cannot say how large the image is). 1 if f is a PNG, with the file position restored.
static int png_size(FILE *f, int *w, int *h) {
    uint8_t b[24];
    size_t n = fread(b, 1, sizeof b, f);
    rewind(f);
    if (n < 24 || memcmp(b, "\x89PNG\r\n\x1a\n", 8) != 0 || memcmp(b + 12, "IHDR", 4) != 0) return 0;
    uint32_t width = (uint32_t)b[16] << 24 | b[17] << 16 | b[18] << 8 | b[19];
    uint32_t height = (uint32_t)b[20] << 24 | b[21] << 16 | b[22] << 8 | b[23];
    *w = width > INT32_MAX ? INT32_MAX : (int)width;
    *h = height > INT32_MAX ? INT32_MAX : (int)height;
    return 1;
}

// Reads an image file and preprocesses it for the model's encoder. Formats: those of stb_image that
// Pillow also reads (PNG, JPEG, BMP, GIF: first frame, PNM, TGA). Grey becomes RGB; an alpha channel (or a
// palette's transparency) is composited on white as mistral-common does (MODEL.md §5.1 step 3). The size is
// checked from the header before decoding. 0 ok, -1 with a message naming the file.
static int image_load(Image *img, const char *path, const Config *c) {
    memset(img, 0, sizeof *img);
    if (c->num_channels != 3) return fail("the model's vision encoder takes %d channels, not RGB", c->num_channels);
    FILE *f = fopen(path, "rb");
    if (!f) return fail("%s: %s", path, strerror(errno));
    int w, h, channels;
    int ok = png_size(f, &w, &h) || stbi_info_from_file(f, &w, &h, &channels);
    fclose(f);
    if (!ok) return fail("%s: not an image this program reads (PNG, JPEG, BMP, GIF, PNM, TGA): %s", path, stbi_failure_reason());
    if (w < 1 || h < 1 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (int64_t)w * h > IMAGE_MAX_PIXELS)
        return fail("%s: image is %dx%d; at most %d pixels a side and %d megapixels are accepted", path, w, h,
                    IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS >> 20);
    int cell = c->patch_size * c->spatial_merge_size;
    if (image_grid(w, h, c->max_image_size, cell, &img->rows, &img->cols))
        return fail("%s: image is %dx%d: too thin, a side would be scaled to 0 pixels", path, w, h);
    uint8_t *data = stbi_load(path, &w, &h, &channels, 0);
    if (!data) return fail("%s: cannot decode: %s", path, stbi_failure_reason());

    // to 8-bit RGB: out = floor((src·a + 255·(255 − a)) / 255 + 0.5), as integers (Pillow's paste on white)
    uint8_t *rgb = malloc((size_t)w * h * 3);
    if (!rgb) { stbi_image_free(data); return fail("out of memory"); }
    for (size_t i = 0; i < (size_t)w * h; i++) {
        const uint8_t *p = data + i * channels;
        int a = channels == 2 ? p[1] : channels == 4 ? p[3] : 255;
        for (int k = 0; k < 3; k++) {
            int v = channels <= 2 ? p[0] : p[k];
            rgb[i * 3 + k] = (uint8_t)((2 * (v * a + 255 * (255 - a)) + 255) / 510);
        }
    }
    stbi_image_free(data);
    img->width = w, img->height = h;
    img->pixel_rows = img->rows * cell, img->pixel_cols = img->cols * cell;
    img->pixels = malloc((size_t)3 * img->pixel_rows * img->pixel_cols * sizeof(float));
    int rc = img->pixels ? resize_normalize(rgb, w, h, img->pixel_cols, img->pixel_rows, img->pixels)
                         : fail("out of memory");
    free(rgb);
    if (rc) image_free(img);
    return rc;
}

// ----------------------------------------------------------------------------
// vision: attention within one image (every patch attends to every patch of the same image, no mask)

// The readable definition. q, k, v: (n, heads * hd) after RoPE -> out: (n, heads * hd).
static void vision_attention_scalar(const float *q, const float *k, const float *v, float *out, int n, int heads,
                                    int hd) {
    int dim = heads * hd;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel
    {
        float *scores = malloc((size_t)n * sizeof(float));
        #pragma omp for collapse(2) schedule(dynamic, 16)
        for (int t = 0; t < n; t++) {
            for (int a = 0; a < heads; a++) {
                const float *qt = q + (size_t)t * dim + a * hd;
                for (int j = 0; j < n; j++) {
                    const float *kj = k + (size_t)j * dim + a * hd;
                    float dot = 0.0f;
                    for (int i = 0; i < hd; i++) dot += qt[i] * kj[i];
                    scores[j] = dot * scale;
                }
                softmax(scores, n);
                float *o = out + (size_t)t * dim + a * hd;
                memset(o, 0, hd * sizeof(float));
                for (int j = 0; j < n; j++) {
                    const float *vj = v + (size_t)j * dim + a * hd;
                    for (int i = 0; i < hd; i++) o[i] += scores[j] * vj[i];
                }
            }
        }
        free(scores);
    }
}

// The same with SIMD, flash-attention style: a task is one head and a block of 64 queries; it streams the
// keys in blocks of 64, keeps a running max and sum of each query's softmax and rescales its output when
// the max grows, so no n x n matrix is ever stored (an image of 12,100 patches would need 585 MB per head).
// The task is written once (attention_task); its steps for 8 queries and a block of keys (the scores, a
// row's max and exponentials, p·v) are kernels of each instruction set, in register tiles (AVX-512: 8
// queries x 32 keys or dimensions; AVX2: 4 x 16; NEON: 8 x 8), chosen with the matmul kernels (--kernels);
// the scalar set runs the definition above. Needs hd % 32 == 0 (Pixtral: 64).
#define ATT_QB 64      // queries per task
#define ATT_KB 64      // keys per block
#define ATT_QT 8       // queries per step

static size_t padded_keys(int n) { return (size_t)(n + ATT_KB - 1) / ATT_KB * ATT_KB; }  // n_pad

typedef struct {
    // p (ATT_QT, ATT_KB) = qt (ATT_QT rows of hd) · the block's keys (kt: hd rows of ATT_KB, n_pad apart)
    void (*scores)(const float *qt, const float *kt, int hd, int n_pad, float *p);
    // The largest of one query's ATT_KB scores pi; and pi = e^(pi - max) in place, returning their sum.
    float (*max)(const float *pi);
    float (*exp_sum)(float *pi, float max);
    // ot (ATT_QT rows of hd) = ot · rescale (one factor per row) + p · the block's values (ATT_KB rows of hd)
    void (*mix)(const float *p, const float *rescale, const float *v, int hd, float *ot);
} AttentionKernels;

// A task: queries q (ATT_QB, hd), already scaled by 1/sqrt(hd), rows >= nq zero; keys kt (hd, n_pad)
// transposed and values v (n_pad, hd) of one head, zero past n. Output rows (nq, hd), row stride out_stride.
// Scratch: o (ATT_QB, hd), p (ATT_QT, ATT_KB).
static void attention_task(const AttentionKernels *k, const float *q, int nq, const float *kt, const float *v,
                           int n, int n_pad, int hd, float *out, int out_stride, float *o, float *p) {
    float row_max[ATT_QB], row_sum[ATT_QB], rescale[ATT_QT];
    for (int i = 0; i < ATT_QB; i++) row_max[i] = -INFINITY, row_sum[i] = 0.0f;
    memset(o, 0, (size_t)ATT_QB * hd * sizeof(float));
    for (int j0 = 0; j0 < n_pad; j0 += ATT_KB) {
        int valid = n - j0 < ATT_KB ? n - j0 : ATT_KB;   // keys past n are padding
        for (int t0 = 0; t0 < nq; t0 += ATT_QT) {
            k->scores(q + (size_t)t0 * hd, kt + j0, hd, n_pad, p);
            // the online softmax: each query's running max may grow; what was summed so far then shrinks
            // by rescale = e^(old max - max), and this block's p = e^(score - max) add to the sum
            for (int i = 0; i < ATT_QT; i++) {
                float *pi = p + i * ATT_KB;
                for (int j = valid; j < ATT_KB; j++) pi[j] = -INFINITY;   // padding keys: e^-inf = 0
                float old = row_max[t0 + i], now = fmaxf(old, k->max(pi));
                rescale[i] = expf(old - now);   // 0 on the first block (old = -inf)
                row_max[t0 + i] = now;
                row_sum[t0 + i] = row_sum[t0 + i] * rescale[i] + k->exp_sum(pi, now);
            }
            k->mix(p, rescale, v + (size_t)j0 * hd, hd, o + (size_t)t0 * hd);
        }
    }
    for (int t = 0; t < nq; t++)
        for (int i = 0; i < hd; i++) out[(size_t)t * out_stride + i] = o[(size_t)t * hd + i] / row_sum[t];
}

// e^x for x <= 0 (a score minus its row's max), in every version: 2^k · e^r with k = round(x·log2 e) and
// |r| <= ln(2)/2, e^r by Cephes' expf polynomial, within 2 ulp of expf. x < -80 gives 0 (below 2e-35, it
// cannot change a sum that is >= 1, and it keeps denormals out of the products).
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f      // ln 2 in two parts
#define EXP_LN2_LO -2.12194440e-4f
static const float exp_poly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f,
                                  1.6666665459e-1f, 5.0000001201e-1f};

#ifdef HAVE_X86_KERNELS
// AVX-512: 16 lanes, 32 registers.
TARGET_AVX512 static inline __m512 exp_avx512(__m512 x) {
    __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-80.0f), _CMP_GE_OQ);
    x = _mm512_max_ps(x, _mm512_set1_ps(-80.0f));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(EXP_LN2_LO), r);
    __m512 e = _mm512_set1_ps(exp_poly[0]);
    for (int i = 1; i < 6; i++) e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(exp_poly[i]));
    e = _mm512_fmadd_ps(e, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(e, k));
}

TARGET_AVX512 static void attention_scores_avx512(const float *qt, const float *kt, int hd, int n_pad, float *p) {
    for (int jj = 0; jj < ATT_KB; jj += 32) {   // tiles of 8 queries x 32 keys
        __m512 acc[8][2];
        #pragma GCC unroll 8
        for (int i = 0; i < 8; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        const float *kd = kt + jj;
        for (int d = 0; d < hd; d++, kd += n_pad) {
            __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16);
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                __m512 x = _mm512_set1_ps(qt[i * hd + d]);
                acc[i][0] = _mm512_fmadd_ps(x, k0, acc[i][0]), acc[i][1] = _mm512_fmadd_ps(x, k1, acc[i][1]);
            }
        }
        #pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            _mm512_storeu_ps(p + i * ATT_KB + jj, acc[i][0]), _mm512_storeu_ps(p + i * ATT_KB + jj + 16, acc[i][1]);
    }
}

TARGET_AVX512 static float attention_max_avx512(const float *pi) {
    __m512 m = _mm512_loadu_ps(pi);
    for (int j = 16; j < ATT_KB; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(pi + j));
    return _mm512_reduce_max_ps(m);
}

TARGET_AVX512 static float attention_exp_sum_avx512(float *pi, float max) {
    __m512 sum = _mm512_setzero_ps(), mx = _mm512_set1_ps(max);
    for (int j = 0; j < ATT_KB; j += 16) {
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(pi + j), mx));
        _mm512_storeu_ps(pi + j, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

TARGET_AVX512 static void attention_mix_avx512(const float *p, const float *rescale, const float *v, int hd,
                                               float *ot) {
    for (int dd = 0; dd < hd; dd += 32) {   // tiles of 8 queries x 32 dimensions
        __m512 acc[8][2];
        #pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            acc[i][0] = _mm512_mul_ps(_mm512_loadu_ps(ot + i * hd + dd), _mm512_set1_ps(rescale[i]));
            acc[i][1] = _mm512_mul_ps(_mm512_loadu_ps(ot + i * hd + dd + 16), _mm512_set1_ps(rescale[i]));
        }
        const float *vj = v + dd;
        for (int j = 0; j < ATT_KB; j++, vj += hd) {
            __m512 v0 = _mm512_loadu_ps(vj), v1 = _mm512_loadu_ps(vj + 16);
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                __m512 x = _mm512_set1_ps(p[i * ATT_KB + j]);
                acc[i][0] = _mm512_fmadd_ps(x, v0, acc[i][0]), acc[i][1] = _mm512_fmadd_ps(x, v1, acc[i][1]);
            }
        }
        #pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            _mm512_storeu_ps(ot + i * hd + dd, acc[i][0]), _mm512_storeu_ps(ot + i * hd + dd + 16, acc[i][1]);
    }
}

static const AttentionKernels attention_avx512 = {attention_scores_avx512, attention_max_avx512,
                                                  attention_exp_sum_avx512, attention_mix_avx512};

// AVX2: 8 lanes, 16 registers. 2^k is made in the exponent bits (k >= -116 here: a normal float, so the
// product is exact, as scalef's).
TARGET_AVX2 static inline __m256 exp_avx2(__m256 x) {
    __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-80.0f), _CMP_GE_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-80.0f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(EXP_LN2_LO), r);
    __m256 e = _mm256_set1_ps(exp_poly[0]);
    for (int i = 1; i < 6; i++) e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(exp_poly[i]));
    e = _mm256_fmadd_ps(e, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));
    __m256 two_k = _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
    return _mm256_and_ps(_mm256_mul_ps(e, two_k), keep);
}

TARGET_AVX2 static void attention_scores_avx2(const float *qt, const float *kt, int hd, int n_pad, float *p) {
    for (int i0 = 0; i0 < ATT_QT; i0 += 4)
        for (int jj = 0; jj < ATT_KB; jj += 16) {   // tiles of 4 queries x 16 keys
            __m256 acc[4][2];
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
            const float *kd = kt + jj;
            for (int d = 0; d < hd; d++, kd += n_pad) {
                __m256 k0 = _mm256_loadu_ps(kd), k1 = _mm256_loadu_ps(kd + 8);
                #pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    __m256 x = _mm256_set1_ps(qt[(i0 + i) * hd + d]);
                    acc[i][0] = _mm256_fmadd_ps(x, k0, acc[i][0]), acc[i][1] = _mm256_fmadd_ps(x, k1, acc[i][1]);
                }
            }
            float *pt = p + i0 * ATT_KB + jj;
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                _mm256_storeu_ps(pt + i * ATT_KB, acc[i][0]), _mm256_storeu_ps(pt + i * ATT_KB + 8, acc[i][1]);
        }
}

TARGET_AVX2 static float attention_max_avx2(const float *pi) {
    __m256 m = _mm256_loadu_ps(pi);
    for (int j = 8; j < ATT_KB; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(pi + j));
    return max8_avx2(m);
}

TARGET_AVX2 static float attention_exp_sum_avx2(float *pi, float max) {
    __m256 sum = _mm256_setzero_ps(), mx = _mm256_set1_ps(max);
    for (int j = 0; j < ATT_KB; j += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(pi + j), mx));
        _mm256_storeu_ps(pi + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    return sum8_avx2(sum);
}

TARGET_AVX2 static void attention_mix_avx2(const float *p, const float *rescale, const float *v, int hd, float *ot) {
    for (int i0 = 0; i0 < ATT_QT; i0 += 4)
        for (int dd = 0; dd < hd; dd += 16) {   // tiles of 4 queries x 16 dimensions
            float *o = ot + i0 * hd + dd;
            __m256 acc[4][2];
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                acc[i][0] = _mm256_mul_ps(_mm256_loadu_ps(o + i * hd), _mm256_set1_ps(rescale[i0 + i]));
                acc[i][1] = _mm256_mul_ps(_mm256_loadu_ps(o + i * hd + 8), _mm256_set1_ps(rescale[i0 + i]));
            }
            const float *vj = v + dd;
            for (int j = 0; j < ATT_KB; j++, vj += hd) {
                __m256 v0 = _mm256_loadu_ps(vj), v1 = _mm256_loadu_ps(vj + 8);
                #pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    __m256 x = _mm256_set1_ps(p[(i0 + i) * ATT_KB + j]);
                    acc[i][0] = _mm256_fmadd_ps(x, v0, acc[i][0]), acc[i][1] = _mm256_fmadd_ps(x, v1, acc[i][1]);
                }
            }
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                _mm256_storeu_ps(o + i * hd, acc[i][0]), _mm256_storeu_ps(o + i * hd + 8, acc[i][1]);
        }
}

static const AttentionKernels attention_avx2 = {attention_scores_avx2, attention_max_avx2, attention_exp_sum_avx2,
                                                attention_mix_avx2};
#endif

#ifdef HAVE_NEON_KERNELS
// NEON: 4 lanes, 32 registers.
static inline float32x4_t exp_neon(float32x4_t x) {
    uint32x4_t keep = vcgeq_f32(x, vdupq_n_f32(-80.0f));
    x = vmaxq_f32(x, vdupq_n_f32(-80.0f));
    float32x4_t k = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(EXP_LOG2E)));
    float32x4_t r = vfmsq_f32(x, k, vdupq_n_f32(EXP_LN2_HI));   // x - k·ln2_hi
    r = vfmsq_f32(r, k, vdupq_n_f32(EXP_LN2_LO));
    float32x4_t e = vdupq_n_f32(exp_poly[0]);
    for (int i = 1; i < 6; i++) e = vfmaq_f32(vdupq_n_f32(exp_poly[i]), e, r);
    e = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), e, vmulq_f32(r, r));
    float32x4_t two_k = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127)), 23));
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vmulq_f32(e, two_k)), keep));
}

static void attention_scores_neon(const float *qt, const float *kt, int hd, int n_pad, float *p) {
    for (int jj = 0; jj < ATT_KB; jj += 8) {   // tiles of 8 queries x 8 keys
        float32x4_t acc[8][2];
        #pragma GCC unroll 8
        for (int i = 0; i < 8; i++) acc[i][0] = acc[i][1] = vdupq_n_f32(0.0f);
        const float *kd = kt + jj;
        for (int d = 0; d < hd; d++, kd += n_pad) {
            float32x4_t k0 = vld1q_f32(kd), k1 = vld1q_f32(kd + 4);
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                float32x4_t x = vdupq_n_f32(qt[i * hd + d]);
                acc[i][0] = vfmaq_f32(acc[i][0], x, k0), acc[i][1] = vfmaq_f32(acc[i][1], x, k1);
            }
        }
        #pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            vst1q_f32(p + i * ATT_KB + jj, acc[i][0]), vst1q_f32(p + i * ATT_KB + jj + 4, acc[i][1]);
    }
}

static float attention_max_neon(const float *pi) {
    float32x4_t m = vld1q_f32(pi);
    for (int j = 4; j < ATT_KB; j += 4) m = vmaxq_f32(m, vld1q_f32(pi + j));
    return vmaxvq_f32(m);
}

static float attention_exp_sum_neon(float *pi, float max) {
    float32x4_t sum = vdupq_n_f32(0.0f), mx = vdupq_n_f32(max);
    for (int j = 0; j < ATT_KB; j += 4) {
        float32x4_t e = exp_neon(vsubq_f32(vld1q_f32(pi + j), mx));
        vst1q_f32(pi + j, e);
        sum = vaddq_f32(sum, e);
    }
    return vaddvq_f32(sum);
}

static void attention_mix_neon(const float *p, const float *rescale, const float *v, int hd, float *ot) {
    for (int dd = 0; dd < hd; dd += 8) {   // tiles of 8 queries x 8 dimensions
        float32x4_t acc[8][2];
        #pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            acc[i][0] = vmulq_n_f32(vld1q_f32(ot + i * hd + dd), rescale[i]);
            acc[i][1] = vmulq_n_f32(vld1q_f32(ot + i * hd + dd + 4), rescale[i]);
        }
        const float *vj = v + dd;
        for (int j = 0; j < ATT_KB; j++, vj += hd) {
            float32x4_t v0 = vld1q_f32(vj), v1 = vld1q_f32(vj + 4);
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                float32x4_t x = vdupq_n_f32(p[i * ATT_KB + j]);
                acc[i][0] = vfmaq_f32(acc[i][0], x, v0), acc[i][1] = vfmaq_f32(acc[i][1], x, v1);
            }
        }
        #pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            vst1q_f32(ot + i * hd + dd, acc[i][0]), vst1q_f32(ot + i * hd + dd + 4, acc[i][1]);
    }
}

static const AttentionKernels attention_neon = {attention_scores_neon, attention_max_neon, attention_exp_sum_neon,
                                                attention_mix_neon};
#endif

// The attention kernels of the kernel set in use, or NULL (the scalar set, or a head size the tiles do not
// divide).
static const AttentionKernels *vision_attention_kernels(int hd) {
    const Kernels *k = kernel_set();
    if (hd % 32 != 0) return NULL;
#ifdef HAVE_X86_KERNELS
    if (k == &kernels_avx512 || k == &kernels_vnni || k == &kernels_amx) return &attention_avx512;
    if (k == &kernels_avx2 || k == &kernels_avxvnni) return &attention_avx2;
#endif
#ifdef HAVE_NEON_KERNELS
    if (k != &kernels_scalar) return &attention_neon;
#endif
    (void)k;
    return NULL;
}

// Lays out each head's keys transposed (kt: (heads, hd, n_pad)) and its values contiguous (vh: (heads,
// n_pad, hd)), then runs the tasks on all threads. 0 ok, -1 out of memory (the caller then uses the scalar
// version).
static int vision_attention_tasks(const AttentionKernels *att, const float *q, const float *k, const float *v,
                                  float *out, int n, int heads, int hd, float *kt, float *vh) {
    int dim = heads * hd, n_pad = (int)padded_keys(n), blocks = (n + ATT_QB - 1) / ATT_QB;
    #pragma omp parallel for schedule(static)
    for (int a = 0; a < heads; a++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < hd; i++) {
                kt[((size_t)a * hd + i) * n_pad + j] = k[(size_t)j * dim + a * hd + i];
                vh[((size_t)a * n_pad + j) * hd + i] = v[(size_t)j * dim + a * hd + i];
            }
    float scale = 1.0f / sqrtf((float)hd);
    int failed = 0;
    #pragma omp parallel
    {
        float *qb = malloc((size_t)ATT_QB * hd * sizeof(float)), *o = malloc((size_t)ATT_QB * hd * sizeof(float)),
              *p = malloc((size_t)ATT_QT * ATT_KB * sizeof(float));
        if (!qb || !o || !p) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for collapse(2) schedule(dynamic, 1)
        for (int a = 0; a < heads; a++) {
            for (int b = 0; b < blocks; b++) {
                if (!qb || !o || !p) continue;
                int t0 = b * ATT_QB, nq = n - t0 < ATT_QB ? n - t0 : ATT_QB;
                for (int t = 0; t < ATT_QB; t++)
                    for (int i = 0; i < hd; i++) qb[t * hd + i] = t < nq ? q[(size_t)(t0 + t) * dim + a * hd + i] * scale : 0;
                attention_task(att, qb, nq, kt + (size_t)a * hd * n_pad, vh + (size_t)a * n_pad * hd, n, n_pad,
                               hd, out + (size_t)t0 * dim + a * hd, dim, o, p);
            }
        }
        free(qb); free(o); free(p);
    }
    return failed ? -1 : 0;
}

// Attention over all n patches of one image, per head (q, k, v, out: (n, heads * hd)): the SIMD tasks
// where the kernel set has them, else the scalar definition. kt, vh: the tasks' scratch, heads · hd ·
// padded_keys(n) floats each, zero past n (the encoder keeps them in its mapping, in 2 MiB pages: in
// calloc's 4 KiB ones, the page faults of each layer's first writes (34 MB for 4144 patches) took 3.6% of
// the image's time, and the tasks' reads of kt, a page apart from one dimension to the next, missed the TLB).
static void vision_attention(const float *q, const float *k, const float *v, float *out, int n, int heads, int hd,
                             float *kt, float *vh) {
    const AttentionKernels *att = vision_attention_kernels(hd);
    if (att && vision_attention_tasks(att, q, k, v, out, n, heads, hd, kt, vh) == 0) return;
    vision_attention_scalar(q, k, v, out, n, heads, hd);
}

// ----------------------------------------------------------------------------
// vision: the Pixtral encoder and the projector (MODEL.md §5.2, §5.3)

// matmul (run.c) over at most VISION_BATCH patches at a time (the activations of a batch stay in cache
// while the weights stream past), counting the floating-point operations.
#define VISION_BATCH 1024
static void vision_matmul(float *out, const float *x, int n, const Tensor *w, double *flops) {
    for (int t0 = 0; t0 < n; t0 += VISION_BATCH)
        matmul(out + (size_t)t0 * w->rows, x + (size_t)t0 * w->cols, n - t0 < VISION_BATCH ? n - t0 : VISION_BATCH, w);
    *flops += 2.0 * n * w->rows * w->cols;
}

static void rmsnorm_rows(float *y, const float *x, const float *w, int n, int dim, float eps) {
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++) rmsnorm(y + (size_t)t * dim, x + (size_t)t * dim, w, dim, eps);
}

static float gelu(float x) { return (float)(0.5 * x * (1.0 + erf(x / sqrt(2.0)))); }   // exact, not tanh

// The Pixtral encoder (MODEL.md §5.2): pixels (3, H, W) -> features x (n, D) of the n = H/14 · W/14
// patches, row-major, after the last layer (no final norm). The patches go through each matmul as a batch
// (of up to VISION_BATCH). flops accumulates the work done. 0 ok, -1 out of memory.
static int vision_encoder(const Model *m, const Image *img, float *x, double *flops) {
    const Config *c = &m->config;
    const VisionWeights *w = &m->weights.vision;
    int P = c->patch_size, D = c->vision_dim, heads = c->vision_heads, hd = c->vision_head_dim, F = c->vision_hidden_dim;
    int rows_p = img->pixel_rows / P, cols_p = img->pixel_cols / P, n = rows_p * cols_p, conv = w->patch_conv.cols;
    int chunk = n < VISION_BATCH ? n : VISION_BATCH;  // patches per feed-forward step, which bounds hb and hb2
    if (heads * hd != D || hd > 1024)   // Pixtral: D = heads x head_dim (16 x 64)
        return fail("vision encoder: %d heads x %d does not make its width %d", heads, hd, D);
    size_t nd = (size_t)n * D;
    float *xb, *q, *k, *v, *att, *hb, *hb2, *patches, *rope_cos, *rope_sin, *kt, *vh;
    Buffer buffers[] = {{&xb, nd}, {&q, nd}, {&k, nd}, {&v, nd}, {&att, nd}, {&hb, (size_t)chunk * F},
                        {&hb2, (size_t)chunk * F}, {&patches, (size_t)n * conv}, {&rope_cos, (size_t)n * hd / 2},
                        {&rope_sin, (size_t)n * hd / 2}, {&kt, D * padded_keys(n)}, {&vh, D * padded_keys(n)}};
    Mapping memory = map_buffers(buffers, sizeof buffers / sizeof buffers[0]);
    if (!memory.start) return fail("out of memory");

    // patch_conv (stride = kernel = 14, no bias) as one matmul: patch (py, px) as a row of 588 values,
    // [c·196 + ky·14 + kx] = pixel (c, 14·py + ky, 14·px + kx)
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < n; t++) {
        int py = t / cols_p, px = t % cols_p;
        for (int ch = 0; ch < 3; ch++)
            for (int ky = 0; ky < P; ky++)
                memcpy(patches + (size_t)t * conv + (ch * P + ky) * P,
                       img->pixels + ((size_t)ch * img->pixel_rows + py * P + ky) * img->pixel_cols + px * P,
                       P * sizeof(float));
    }
    vision_matmul(xb, patches, n, &w->patch_conv, flops);
    rmsnorm_rows(x, xb, w->ln_pre, n, D, c->vision_norm_eps);

    // 2D RoPE angles of each patch: pairs 0..hd/4-1 turn with the row py at the even-indexed frequencies,
    // pairs hd/4..hd/2-1 with the column px at the odd-indexed ones; fp32 as the reference forms them.
    float freqs[512];
    for (int i = 0; i < hd / 2; i++)
        freqs[i] = (float)(1.0 / (float)pow(c->vision_rope_theta, (double)((float)(2 * i) / (float)hd)));
    for (int t = 0; t < n; t++) {
        int py = t / cols_p, px = t % cols_p;
        for (int i = 0; i < hd / 2; i++) {
            float angle = i < hd / 4 ? (float)py * freqs[2 * i] : (float)px * freqs[2 * (i - hd / 4) + 1];
            rope_cos[(size_t)t * hd / 2 + i] = (float)cos((double)angle);
            rope_sin[(size_t)t * hd / 2 + i] = (float)sin((double)angle);
        }
    }

    for (int l = 0; l < c->vision_layers; l++) {
        const LayerWeights *lw = &w->layers[l];
        // attention: x = x + wo(attention(rope(wq(h)), rope(wk(h)), wv(h))), h = rmsnorm(x)
        rmsnorm_rows(xb, x, lw->attention_norm, n, D, c->vision_norm_eps);
        vision_matmul(q, xb, n, &lw->wq, flops);
        vision_matmul(k, xb, n, &lw->wk, flops);
        vision_matmul(v, xb, n, &lw->wv, flops);
        #pragma omp parallel for schedule(static)
        for (int t = 0; t < n; t++) {
            const float *cos_a = rope_cos + (size_t)t * hd / 2, *sin_a = rope_sin + (size_t)t * hd / 2;
            for (int a = 0; a < heads; a++) {
                rope_rotate(q + (size_t)t * D + a * hd, cos_a, sin_a, hd);
                rope_rotate(k + (size_t)t * D + a * hd, cos_a, sin_a, hd);
            }
        }
        vision_attention(q, k, v, att, n, heads, hd, kt, vh);
        *flops += 4.0 * n * n * hd * heads;
        vision_matmul(xb, att, n, &lw->wo, flops);
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < nd; i++) x[i] += xb[i];

        // feed-forward: x = x + w2(silu(w1(h)) * w3(h)), h = rmsnorm(x), a chunk of patches at a time
        rmsnorm_rows(xb, x, lw->ffn_norm, n, D, c->vision_norm_eps);
        for (int t0 = 0; t0 < n; t0 += chunk) {
            int b = n - t0 < chunk ? n - t0 : chunk;
            vision_matmul(hb, xb + (size_t)t0 * D, b, &lw->w1, flops);
            vision_matmul(hb2, xb + (size_t)t0 * D, b, &lw->w3, flops);
            #pragma omp parallel for schedule(static)
            for (size_t i = 0; i < (size_t)b * F; i++) hb[i] = silu(hb[i]) * hb2[i];
            vision_matmul(att, hb, b, &lw->w2, flops);   // att as scratch (b, D)
            #pragma omp parallel for schedule(static)
            for (size_t i = 0; i < (size_t)b * D; i++) x[(size_t)t0 * D + i] += att[i];
        }
    }
    unmap_buffers(memory);
    return 0;
}

// The projector (MODEL.md §5.3): encoder features x (n, D) -> out (rows * cols, dim), one row per [IMG]
// token. z = rmsnorm(x); each 2x2 block of patches becomes one vector, channel-major
// (u[c·4 + ki·2 + kj] = z[patch (2R+ki, 2C+kj)][c]); out = w_out(gelu(w_in(merging(u)))). 0 ok, -1 out of memory.
static int vision_project(const Model *m, const Image *img, const float *x, float *out, double *flops) {
    const Config *c = &m->config;
    const VisionWeights *w = &m->weights.vision;
    int D = c->vision_dim, merge = c->spatial_merge_size, mm = merge * merge, cols_p = img->pixel_cols / c->patch_size;
    int n = img->pixel_rows / c->patch_size * cols_p, rows = img->rows, cols = img->cols, tokens = rows * cols;
    float *z = malloc((size_t)n * D * sizeof(float)), *u = malloc((size_t)tokens * D * mm * sizeof(float)),
          *merged = malloc((size_t)tokens * D * sizeof(float)), *hidden = malloc((size_t)tokens * c->dim * sizeof(float));
    int rc = z && u && merged && hidden ? 0 : fail("out of memory");
    if (rc == 0) {
        rmsnorm_rows(z, x, w->pre_mm_norm, n, D, c->vision_norm_eps);
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < tokens; r++) {
            int R = r / cols, C = r % cols;
            for (int ki = 0; ki < merge; ki++)
                for (int kj = 0; kj < merge; kj++) {
                    const float *zp = z + ((size_t)(merge * R + ki) * cols_p + merge * C + kj) * D;
                    for (int ch = 0; ch < D; ch++) u[(size_t)r * D * mm + ch * mm + ki * merge + kj] = zp[ch];
                }
        }
        vision_matmul(merged, u, tokens, &w->merging, flops);
        vision_matmul(hidden, merged, tokens, &w->w_in, flops);
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < (size_t)tokens * c->dim; i++) hidden[i] = gelu(hidden[i]);
        vision_matmul(out, hidden, tokens, &w->w_out, flops);
    }
    free(z); free(u); free(merged); free(hidden);
    return rc;
}

// Preprocessed image -> its [IMG] embeddings, out: (rows * cols, dim), merged grid row by row. Prints
// "vision: N patches, X s, Y GFLOP/s" on stderr (the FLOPs of every matmul and of attention). 0 ok, -1 out of memory.
static int vision_encode(const Model *m, const Image *img, float *out) {
    int n = img->pixel_rows / m->config.patch_size * (img->pixel_cols / m->config.patch_size);
    double start = now_seconds(), flops = 0;
    float *features = malloc((size_t)n * m->config.vision_dim * sizeof(float));
    int rc = features ? vision_encoder(m, img, features, &flops) : fail("out of memory");
    if (rc == 0) rc = vision_project(m, img, features, out, &flops);
    free(features);
    double seconds = now_seconds() - start;
    if (rc == 0)
        fprintf(stderr, "vision: %d patches, %.2f s, %.1f GFLOP/s\n", n, seconds, flops / 1e9 / (seconds > 0 ? seconds : 1e-9));
    return rc;
}

// An image's [IMG] embeddings, ready to be fed.
typedef struct {
    int rows, cols;              // token grid
    float *embeddings;           // (rows * cols, dim)
} ImageEmbeddings;

static void image_embeddings_free(ImageEmbeddings *e) {
    free(e->embeddings);
    e->embeddings = NULL;
}

// Loads, preprocesses and encodes one image file. 0 ok, -1 with a message naming the file.
static int encode_image_file(const Model *m, const char *path, ImageEmbeddings *out) {
    memset(out, 0, sizeof *out);
    if (m->config.vision_layers == 0) return fail("%s: this model file has no vision encoder", path);
    Image img;
    if (image_load(&img, path, &m->config)) return -1;
    out->rows = img.rows, out->cols = img.cols;
    out->embeddings = malloc((size_t)img.rows * img.cols * m->config.dim * sizeof(float));
    int rc = out->embeddings ? vision_encode(m, &img, out->embeddings) : fail("out of memory");
    image_free(&img);
    if (rc) image_embeddings_free(out);
    return rc;
}
