// Checks every matmul kernel set of run.c against the scalar one, which is the definition (run.c's
// section "neural net blocks"). Built by tests/test_kernels.py from run.c with its main renamed, natively
// and, for arm64, with a cross compiler (run under qemu-user).
//
//   test_kernels                 every kernel set this CPU runs; names the ones it cannot
//   test_kernels NAME...         only these (an error if this CPU cannot run one)
//
// Prints one line per check ("ok ..." or "FAIL ...") and exits 1 if any failed.
//
// Cases: random weights of every type (q4 and q8 made by quantize.c's quantizers and interleaved as in the
// file; f16, f32) with all-zero blocks, extreme scales (fp16 scales near 65504 and subnormal ones, 6-bit
// scales and minimums 0 and 63, levels all 0 or all 15/127/-127); activations with outliers, all-zero
// blocks and huge/tiny magnitudes; row counts 16..176 (f32/f16 also odd ones) and 65536 (more partial sums
// than matmul's partial_sums holds); token counts 1..130 (tiles
// of 16 (AMX), 8, 4, 2, 1 and their mixtures; one token's q4 and q8 tiles of two groups, next to each other
// or apart, and one for an odd last group, in the VNNI kernels; on one thread and on two) and column counts
// of several column ranges, so the partial sums go through memory; and batches of 1-8 tokens on 2-4
// threads, whose units of work are claimed as they go, split between the threads in many ways.
//
// What "agrees" means: the q8/q4 SIMD kernels compute the same integer sums and the same float operations
// as the scalar definition, except that they fuse each multiply-add (one rounding, not two): each of the
// `steps` additions may differ by an ulp of the running sum, so a result may differ from the scalar one by
// up to steps · 2^-23 · sum |terms| (in practice far less: the worst is printed), and all SIMD sets must
// give the same bits as each other. f32/f16 kernels sum in other orders (lanes): the same bound with
// steps = columns. Each token's results must not depend on how many tokens share the batch.
//
// The AMX set multiplies batches of 16 tokens or more in bf16 (run.c, "x86 with AMX tiles"): there it must
// agree with a float64 sum of the same bf16 values (weights widened in fp32 and rounded, activations
// rounded) within columns · 2^-24 · sum|terms| (fp32 sums), and give each token the same bits in any such
// batch; smaller batches run the VNNI kernels and are checked as above.
#define main run_main
#include "run.c"
#undef main

static int failures;

static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf(ok ? "ok   " : "FAIL ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!ok) failures++;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {  // xorshift64*
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}
static float uniform(void) { return (rnd() >> 8) * (1.0f / 16777216.0f); }            // [0, 1)
static float gauss(void) {
    float u = uniform() + 1e-7f, v = uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

// ---- weights

// A q4 block with a random twist: 1 in 8 all zero, 1 in 8 with extreme fp16 scales, 1 in 8 with extreme
// 6-bit values and levels; otherwise quantized from gaussian values.
static void random_q4_block(BlockQ4 *b) {
    float x[QK4];
    int kind = rnd() % 8;
    for (int i = 0; i < QK4; i++) x[i] = 0.02f * gauss();
    if (kind == 0) { memset(b, 0, sizeof *b); return; }
    quantize_q4(x, b, QK4);
    if (kind == 1) {
        static const uint16_t extremes[] = {0x7bff, 0x0001, 0x03ff, 0x0400, 0x3c00, 0xfbff};  // 65504, subnormals, 1, -65504
        b->d = extremes[rnd() % 6];
        b->dmin = extremes[rnd() % 6];
    } else if (kind == 2) {
        int v[16];
        for (int j = 0; j < 16; j++) v[j] = rnd() % 3 == 0 ? 0 : rnd() % 2 ? 63 : (int)(rnd() % 64);
        q4_pack_scales(v, b->scales);
        int level = rnd() % 3;
        if (level < 2) memset(b->qs, level ? 0xFF : 0x00, sizeof b->qs);
    }
}

static void random_q8_block(BlockQ8 *b) {
    float x[QK8];
    int kind = rnd() % 8;
    for (int i = 0; i < QK8; i++) x[i] = 0.02f * gauss();
    if (kind == 0) { memset(b, 0, sizeof *b); return; }
    quantize_q8(x, b, QK8);
    if (kind == 1) b->d = (uint16_t[]){0x7bff, 0x0001, 0x3c00, 0xfbff}[rnd() % 4];
    if (kind == 2) for (int i = 0; i < QK8; i++) b->q[i] = rnd() % 2 ? 127 : -127;
}

// A random matrix of `rows` x `cols` in the file's layout (q8/q4: 16-row groups).
static void *random_matrix(uint32_t type, int rows, int cols) {
    size_t bytes = type_bytes(type, (uint64_t)rows * cols);
    uint8_t *m = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (type == TYPE_F32 || type == TYPE_F16) {
        for (size_t i = 0; i < (size_t)rows * cols; i++) {
            float v = gauss() * (rnd() % 50 == 0 ? 100.0f : 1.0f);
            if (type == TYPE_F32) memcpy(m + 4 * i, &v, 4);
            else { uint16_t h = f32_to_fp16(v); memcpy(m + 2 * i, &h, 2); }
        }
        return m;
    }
    int nb = cols / (type == TYPE_Q4 ? QK4 : QK8);
    size_t block = type == TYPE_Q4 ? sizeof(BlockQ4) : sizeof(BlockQ8);
    uint8_t *group = malloc(QROWS * nb * block);
    for (int g = 0; g < rows / QROWS; g++) {
        for (int i = 0; i < QROWS * nb; i++) {
            if (type == TYPE_Q4) random_q4_block((BlockQ4 *)group + i);
            else random_q8_block((BlockQ8 *)group + i);
        }
        uint8_t *dst = m + (size_t)g * QROWS * nb * block;
        if (type == TYPE_Q4) interleave_q4((const BlockQ4 *)group, nb, (BlockQ4x16 *)dst);
        else interleave_q8((const BlockQ8 *)group, nb, (BlockQ8x16 *)dst);
    }
    free(group);
    return m;
}

// Activations: gaussian with outliers, 1 block in 10 all zero, 1 token in 5 scaled by 1e-20 or 1e20.
static float *random_activations(int n, int cols) {
    float *x = malloc(sizeof(float) * (size_t)n * cols);
    for (int t = 0; t < n; t++) {
        float scale = rnd() % 5 ? 1.0f : rnd() % 2 ? 1e-20f : 1e20f;
        for (int i = 0; i < cols; i++) x[(size_t)t * cols + i] = gauss() * scale * (rnd() % 97 == 0 ? 30.0f : 1.0f);
        for (int b = 0; b < cols / QK8; b++)
            if (rnd() % 10 == 0) memset(x + (size_t)t * cols + b * QK8, 0, QK8 * sizeof(float));
    }
    return x;
}

// ---- the checks

// sum |terms| of out[t][r], the scale of the rounding errors: from the dequantized weights and activations.
static void magnitudes(const Tensor *w, const float *x, int n, double *mag) {
    float *row = malloc(sizeof(float) * w->cols), *xq = malloc(sizeof(float) * w->cols);
    BlockQ8A *blocks = malloc(sizeof(BlockQ8A) * (w->cols / QK8 + 1));
    int quantized = w->type == TYPE_Q4 || w->type == TYPE_Q8;
    for (int r = 0; r < w->rows; r++) {
        dequantize_row(w, r, row);
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * w->cols;
            if (quantized) {
                quantize_activations(xt, blocks, w->cols);
                for (int i = 0; i < w->cols; i++) xq[i] = blocks[i / QK8].d * blocks[i / QK8].q[i % QK8];
                xt = xq;
            }
            double m = 0;
            for (int i = 0; i < w->cols; i++) m += fabs((double)row[i] * xt[i]);
            // q4: the minimum term adds dmin·mn·|dx·Σ xq| per sub-block, itself bounded by the same sum
            mag[(size_t)t * w->rows + r] = 2 * m;
        }
    }
    free(row); free(xq); free(blocks);
}

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

// f rounded to bf16 (to nearest even), as a float; finite f only.
static float to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7FFF + (u >> 16 & 1)) & 0xFFFF0000u;
    memcpy(&f, &u, 4);
    return f;
}

// Row r of a q4/q8 matrix as the AMX kernels widen it: q4 w = fma(q, d·sc, −dmin·mn) and q8 w = d·q in
// fp32 (both products exact), rounded to bf16.
static void bf16_row(const Tensor *w, int r, float *out) {
    const uint8_t *data = w->data;
    for (int b = 0; b < w->cols / (w->type == TYPE_Q4 ? QK4 : QK8); b++) {
        if (w->type == TYPE_Q4) {
            BlockQ4 blk;
            q4x16_get_row((const BlockQ4x16 *)data + (size_t)(r / QROWS) * (w->cols / QK4) + b, r % QROWS, &blk);
            int v[16];
            q4_unpack_scales(blk.scales, v);
            float d = fp16_to_f32(blk.d), dmin = fp16_to_f32(blk.dmin);
            for (int j = 0; j < 8; j++)
                for (int i = 0; i < 32; i++) {
                    uint8_t byte = blk.qs[32 * (j / 2) + i];
                    int q = j % 2 ? byte >> 4 : byte & 15;
                    out[QK4 * b + 32 * j + i] = to_bf16(fmaf((float)q, d * (float)v[j], -(dmin * (float)v[8 + j])));
                }
        } else {
            BlockQ8 blk;
            q8x16_get_row((const BlockQ8x16 *)data + (size_t)(r / QROWS) * (w->cols / QK8) + b, r % QROWS, &blk);
            for (int i = 0; i < QK8; i++) out[QK8 * b + i] = to_bf16(fp16_to_f32(blk.d) * (float)blk.q[i]);
        }
    }
}

// The AMX result for a batch of 16 or more, in float64, and sum|terms|.
static void bf16_products(const Tensor *w, const float *x, int n, double *want, double *mag) {
    float *row = malloc(sizeof(float) * w->cols), *xb = malloc(sizeof(float) * w->cols);
    for (int r = 0; r < w->rows; r++) {
        bf16_row(w, r, row);
        for (int t = 0; t < n; t++) {
            for (int i = 0; i < w->cols; i++) xb[i] = to_bf16(x[(size_t)t * w->cols + i]);
            double sum = 0, m = 0;
            for (int i = 0; i < w->cols; i++) {
                sum += (double)row[i] * xb[i];
                m += fabs((double)row[i] * xb[i]);
            }
            want[(size_t)t * w->rows + r] = sum;
            mag[(size_t)t * w->rows + r] = m;
        }
    }
    free(row); free(xb);
}

// The AMX set on a batch of n >= 16: against bf16_products, and each token the same bits when its batch is
// only the first or the last 16 tokens.
static void check_amx_batch(const Kernels *amx, const Tensor *w, const float *x, int n) {
    size_t size = (size_t)n * w->rows;
    double *want = malloc(size * sizeof(double)), *mag = malloc(size * sizeof(double));
    float *got = malloc(size * sizeof(float)), *part = malloc((size_t)16 * w->rows * sizeof(float));
    bf16_products(w, x, n, want, mag);
    kernels = amx;
    matmul(got, x, n, w);
    double worst = 0;
    int bad = 0;
    for (size_t i = 0; i < size; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= (w->cols + 1) * 0x1p-24 * mag[i] + 1e-37)) bad++;
        if (mag[i] > 0) worst = fmax(worst, e / mag[i]);
    }
    matmul(part, x, 16, w);
    int same = same_bits(part, got, (size_t)16 * w->rows);
    matmul(part, x + (size_t)(n - 16) * w->cols, 16, w);
    same = same && same_bits(part, got + (size_t)(n - 16) * w->rows, (size_t)16 * w->rows);
    check(bad == 0 && same, "%-12s %s %3d x %5d, %2d tokens: %s (worst %.1e of sum|terms|)%s", amx->name,
          type_name(w->type), w->rows, w->cols, n, bad ? "differs from the bf16 products" : "agrees with the bf16 products",
          worst, same ? "" : "; a token in a batch of 16 gives other bits");
    free(want); free(mag); free(got); free(part);
}

// One weight type and shape, every kernel set: against scalar (within tol · sum|terms|, relative) and
// against each other (the SIMD sets bit for bit), for all n at once and token by token.
static void check_case(uint32_t type, int rows, int cols, int n, const Kernels **sets, int n_sets) {
    Tensor w = {random_matrix(type, rows, cols), type, rows, cols};
    float *x = random_activations(n, cols);
    size_t size = (size_t)n * rows;
    float *want = malloc(size * sizeof(float)), *got = malloc(size * sizeof(float)), *first_simd = NULL;
    float *one = malloc(size * sizeof(float));
    double *mag = malloc(size * sizeof(double));
    magnitudes(&w, x, n, mag);
    int steps = type == TYPE_Q4 ? cols / 32 * 2 : type == TYPE_Q8 ? cols / 32 : cols;
    kernels = &kernels_scalar;
    matmul(want, x, n, &w);
    for (int s = 0; s < n_sets; s++) {
        if (sets[s]->acts_bf16 && n >= 16 && (type == TYPE_Q4 || type == TYPE_Q8)) {
            check_amx_batch(sets[s], &w, x, n);
            continue;
        }
        kernels = sets[s];
        for (size_t i = 0; i < size; i++) got[i] = NAN;
        matmul(got, x, n, &w);
        double worst = 0;
        int bad = 0;
        for (size_t i = 0; i < size; i++) {
            double e = fabs((double)got[i] - want[i]);
            if (!(e <= (steps + 1) * 0x1p-23 * mag[i] + 1e-37)) bad++;  // also catches NaN
            if (mag[i] > 0) worst = fmax(worst, e / mag[i]);
        }
        // each token alone must give the same bits as in the batch
        for (int t = 0; t < n; t++) matmul(one + (size_t)t * rows, x + (size_t)t * cols, 1, &w);
        int alone = same_bits(one, got, size);
        int equal = 1;
        if (sets[s] != &kernels_scalar && (type == TYPE_Q4 || type == TYPE_Q8)) {
            if (!first_simd) first_simd = memcpy(malloc(size * sizeof(float)), got, size * sizeof(float));
            else equal = same_bits(first_simd, got, size);
        }
        check(bad == 0 && alone && equal,
              "%-12s %s %3d x %5d, %2d tokens: %s (worst %.1e of sum|terms|)%s%s", sets[s]->name, type_name(type), rows,
              cols, n, bad ? "differs from scalar" : "agrees with scalar", worst,
              alone ? "" : "; a token alone gives other bits than in the batch",
              equal ? "" : "; not the same bits as the other SIMD kernels");
    }
    free((void *)w.data); free(x); free(want); free(got); free(one); free(mag); free(first_simd);
}

// Attention kernels: scores (q · keys) and mix (Σ p · values) of every set against scalar, with the keys
// and values strided as in the KV cache; d = 33 has a tail in every kernel. The bound as for f32 rows.
static void check_attention(int nq, int d, int len, const Kernels **sets, int n_sets) {
    int stride = nq * d + 7;
    size_t ld = len + 3;
    float *q = malloc(sizeof(float) * nq * d), *kv = malloc(sizeof(float) * (size_t)len * stride);
    float *p = malloc(sizeof(float) * nq * ld), *want_s = malloc(sizeof(float) * nq * ld), *got_s = malloc(sizeof(float) * nq * ld);
    float *want_o = malloc(sizeof(float) * nq * d), *got_o = malloc(sizeof(float) * nq * d);
    double *mag_s = malloc(sizeof(double) * nq * ld), *mag_o = malloc(sizeof(double) * nq * d);
    for (int i = 0; i < nq * d; i++) q[i] = gauss();
    for (size_t i = 0; i < (size_t)len * stride; i++) kv[i] = gauss() * (rnd() % 50 == 0 ? 20.0f : 1.0f);
    for (size_t i = 0; i < (size_t)nq * ld; i++) p[i] = uniform();
    float scale = 1.0f / sqrtf((float)d);
    for (int a = 0; a < nq; a++) {
        for (int j = 0; j < len; j++) {
            double m = 0;
            for (int i = 0; i < d; i++) m += fabs((double)q[a * d + i] * kv[(size_t)j * stride + i]);
            mag_s[a * ld + j] = m * scale;
        }
        for (int i = 0; i < d; i++) {
            double m = 0;
            for (int j = 0; j < len; j++) m += fabs((double)p[a * ld + j] * kv[(size_t)j * stride + i]);
            mag_o[a * d + i] = m;
        }
    }
    kernels_scalar.scores(q, nq, d, kv, stride, len, scale, want_s, ld);
    memset(want_o, 0, sizeof(float) * nq * d);
    kernels_scalar.mix(p, ld, nq, d, kv, stride, len, want_o);
    for (int s = 0; s < n_sets; s++) {
        for (size_t i = 0; i < (size_t)nq * ld; i++) got_s[i] = NAN;
        sets[s]->scores(q, nq, d, kv, stride, len, scale, got_s, ld);
        memset(got_o, 0, sizeof(float) * nq * d);
        sets[s]->mix(p, ld, nq, d, kv, stride, len, got_o);
        int bad = 0;
        double worst = 0;
        for (int a = 0; a < nq; a++) {
            for (int j = 0; j < len; j++) {
                double e = fabs((double)got_s[a * ld + j] - want_s[a * ld + j]);
                bad += !(e <= (d + 1) * 0x1p-23 * mag_s[a * ld + j] + 1e-37);
                if (mag_s[a * ld + j] > 0) worst = fmax(worst, e / mag_s[a * ld + j]);
            }
            for (int i = 0; i < d; i++) {
                double e = fabs((double)got_o[a * d + i] - want_o[a * d + i]);
                bad += !(e <= (len + 1) * 0x1p-23 * mag_o[a * d + i] + 1e-37);
                if (mag_o[a * d + i] > 0) worst = fmax(worst, e / mag_o[a * d + i]);
            }
        }
        check(bad == 0, "%-12s attention, %d heads of %3d, %3d keys: %s (worst %.1e of sum|terms|)", sets[s]->name, nq,
              d, len, bad ? "differs from scalar" : "agrees with scalar", worst);
    }
    free(q); free(kv); free(p); free(want_s); free(got_s); free(want_o); free(got_o); free(mag_s); free(mag_o);
}

// Activation quantization must give exactly quant.h's levels and scales (test_text's q8_values emulates
// them): every set on random blocks of many magnitudes, with zeros, infinities and NaNs.
static void check_quantize(const Kernels **sets, int n_sets) {
    enum { NB = 400 };
    float *x = malloc(sizeof(float) * NB * QK8);
    for (int b = 0; b < NB; b++) {
        float scale = powf(10.0f, (float)((int)(rnd() % 61) - 30));
        for (int i = 0; i < QK8; i++) x[b * QK8 + i] = gauss() * scale * (rnd() % 97 == 0 ? 30.0f : 1.0f);
        if (b % 17 == 0) memset(x + b * QK8, 0, QK8 * sizeof(float));
        if (b % 23 == 0) x[b * QK8 + rnd() % QK8] = rnd() % 2 ? INFINITY : -INFINITY;
        if (b % 29 == 0) x[b * QK8 + rnd() % QK8] = NAN;
        if (b % 31 == 0) x[b * QK8 + rnd() % QK8] = -0.0f;
        if (b % 37 == 0) for (int i = 0; i < QK8; i++) x[b * QK8 + i] = (float)((int)(rnd() % 255) - 127) * 0.5f;  // ties
    }
    BlockQ8A want[NB];
    quantize_activations(x, want, NB * QK8);
    for (int s = 0; s < n_sets; s++) {
        int8_t q[NB * QK8];
        float d[NB];
        int32_t sum[NB];
        sets[s]->quantize(x, NB, q, d, sum);
        int bad = 0;
        for (int b = 0; b < NB; b++) {
            int32_t total = 0;
            for (int i = 0; i < QK8; i++) total += want[b].q[i];
            bad += memcmp(q + b * QK8, want[b].q, QK8) != 0 || memcmp(&d[b], &want[b].d, 4) != 0 || sum[b] != total;
        }
        check(bad == 0, "%-12s activations: %s", sets[s]->name, bad ? "other levels or scales than quant.h's" :
              "the same levels, scales and sums as quant.h, bit for bit");
    }
    free(x);
}

// Batches of up to 8 tokens claim their units of groups as they go, the threads that finish first taking the
// last units of the others' shares (run.c, "claim"). On more threads than cores a thread often stops for a
// while, so here the shares come out split in many ways: whichever it is, every row must be computed, once,
// to the same bits as on one thread. 257 groups: the shares are odd, so some units are single groups.
static void check_claims(const Kernels **sets, int n_sets) {
#ifdef _OPENMP
    int rows = 16 * 257, cols = 512, given = omp_get_max_threads();
    Tensor w = {random_matrix(TYPE_Q4, rows, cols), TYPE_Q4, rows, cols};
    float *x = random_activations(8, cols);
    float *want = malloc(sizeof(float) * 8 * rows), *got = malloc(sizeof(float) * 8 * rows);
    for (int s = 0; s < n_sets; s++) {
        kernels = sets[s];
        for (int n = 1; n <= 8; n *= 2) {
            omp_set_num_threads(1);
            matmul(want, x, n, &w);
            int same = 1;
            for (int threads = 2; threads <= 4; threads++) {
                omp_set_num_threads(threads);
                for (int rep = 0; rep < 10; rep++) {
                    for (int i = 0; i < n * rows; i++) got[i] = NAN;
                    matmul(got, x, n, &w);
                    same = same && same_bits(want, got, (size_t)n * rows);
                }
            }
            check(same, "%-12s q4 %d x %d, %d tokens on 2, 3 and 4 threads, 10 times each: %s", sets[s]->name, rows,
                  cols, n, same ? "the same bits as on one thread" : "other results than on one thread");
        }
    }
    omp_set_num_threads(given);
    free((void *)w.data); free(x); free(want); free(got);
#else
    (void)sets, (void)n_sets;
    printf("skip claims: built without OpenMP (one thread)\n");
#endif
}

// Vision attention (vision.c): each set's tasks against the scalar definition, on random q, k, v whose
// scores spread over about ±70 (so some e^x underflow to 0), for patch counts around the blocks of 64
// queries and keys and both head sizes the tasks take (Pixtral: 64). Agreeing means within 1e-5 of the
// largest output (float sums of up to n terms in other orders, exp within 2 ulp).
static void check_vision_attention(const Kernels **sets, int n_sets) {
    static const int shapes[][3] = {{1, 1, 32}, {7, 2, 64}, {63, 2, 32}, {64, 2, 64}, {65, 3, 64}, {200, 2, 64},
                                    {700, 2, 32}};
    const Kernels *given = kernels;
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        int n = shapes[c][0], heads = shapes[c][1], hd = shapes[c][2];
        size_t size = (size_t)n * heads * hd;
        float *q = malloc(size * sizeof(float)), *k = malloc(size * sizeof(float)), *v = malloc(size * sizeof(float));
        float *want = malloc(size * sizeof(float)), *got = malloc(size * sizeof(float));
        size_t scratch = heads * hd * padded_keys(n);   // the tasks' layouts, reused by every set as by the layers
        float *kt = calloc(scratch, sizeof(float)), *vh = calloc(scratch, sizeof(float));
        for (size_t i = 0; i < size; i++) q[i] = 6 * uniform() - 3, k[i] = 6 * uniform() - 3, v[i] = uniform() - 0.5f;
        vision_attention_scalar(q, k, v, want, n, heads, hd);
        double largest = 0;
        for (size_t i = 0; i < size; i++) largest = fmax(largest, fabs(want[i]));
        for (int s = 0; s < n_sets; s++) {
            kernels = sets[s];
            for (size_t i = 0; i < size; i++) got[i] = NAN;
            vision_attention(q, k, v, got, n, heads, hd, kt, vh);
            double worst = 0;
            for (size_t i = 0; i < size; i++) worst = fmax(worst, isnan(got[i]) ? INFINITY : fabs(got[i] - want[i]));
            check(worst <= 1e-5 * largest, "%-12s vision attention, %3d patches, %d heads of %d: %s (worst %.1e of the "
                  "largest output)", sets[s]->name, n, heads, hd, worst <= 1e-5 * largest ? "agrees with scalar" :
                  "differs from scalar", worst / largest);
        }
        free(q); free(k); free(v); free(want); free(got); free(kt); free(vh);
    }
    kernels = given;
}

int main(int argc, char **argv) {
    const Kernels *sets[16];
    int n_sets = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            const Kernels *k = kernels_by_name(argv[i]);
            if (!k) { printf("FAIL %s: unknown, or this CPU cannot run it\n", argv[i]); return 1; }
            sets[n_sets++] = k;
        }
    } else {
        for (size_t i = 0; i < sizeof all_kernels / sizeof *all_kernels; i++) {
            if (kernels_supported(all_kernels[i])) sets[n_sets++] = all_kernels[i];
            else printf("skip %s: this CPU lacks the instructions\n", all_kernels[i]->name);
        }
    }
    static const struct { uint32_t type; int rows, cols, n; } cases[] = {
        {TYPE_Q4, 16, 256, 1},   {TYPE_Q4, 48, 512, 3},    {TYPE_Q4, 32, 1024, 8},  {TYPE_Q4, 80, 768, 19},
        {TYPE_Q4, 16, 20480, 5}, {TYPE_Q4, 32, 2048, 64},  {TYPE_Q4, 16, 20480, 33}, {TYPE_Q4, 48, 1280, 37},
        {TYPE_Q8, 16, 32, 1},    {TYPE_Q8, 48, 96, 7},     {TYPE_Q8, 16, 20512, 17}, {TYPE_Q8, 32, 96, 16},
        {TYPE_Q8, 32, 640, 13},  {TYPE_Q8, 16, 20512, 3},  {TYPE_Q8, 64, 4096, 64}, {TYPE_F32, 1, 1, 1},
        {TYPE_Q4, 32, 512, 130}, {TYPE_Q8, 48, 160, 70},   {TYPE_F32, 7, 33, 5},    {TYPE_F32, 23, 588, 9},
        {TYPE_F32, 16, 64, 4},   {TYPE_F16, 5, 17, 3},     {TYPE_F16, 19, 200, 6},  {TYPE_F16, 32, 4096, 2},
        {TYPE_Q4, 48, 2048, 1},  {TYPE_Q4, 64, 5120, 1},   {TYPE_Q4, 160, 512, 1},  {TYPE_Q4, 160, 8192, 1},
        {TYPE_Q8, 80, 96, 1},    {TYPE_Q8, 176, 6016, 1},  {TYPE_Q4, 160, 1024, 12}, {TYPE_Q4, 112, 512, 2},
        {TYPE_Q8, 160, 256, 10}, {TYPE_Q8, 112, 64, 4},
        {TYPE_Q8, 65536, 32, 130},  // more partial sums than partial_sums holds: they stay in out
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        check_case(cases[c].type, cases[c].rows, cases[c].cols, cases[c].n, sets, n_sets);
    check_quantize(sets, n_sets);
    check_claims(sets, n_sets);
    check_attention(4, 128, 1, sets, n_sets);
    check_attention(4, 128, 77, sets, n_sets);
    check_attention(2, 96, 40, sets, n_sets);
    check_attention(1, 33, 9, sets, n_sets);
    check_attention(3, 64, 300, sets, n_sets);
    check_vision_attention(sets, n_sets);
    printf("%s\n", failures ? "FAILED" : "all kernels agree");
    return failures ? 1 : 0;
}
