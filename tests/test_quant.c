// test_quant.c: checks the number formats of quant.h against independent double-precision references.
//
//   cc -O2 -std=c11 -I. tests/test_quant.c -o tests/test_quant -lm && ./tests/test_quant
//
// Prints one line per check (ok or FAIL with the numbers) and exits non-zero if any check fails.
// The weight-family measurement regenerates the synthetic matrices of docs QUANT.md and compares the q4 and
// q8 errors with llama.cpp's numbers there. Builds with or without -fopenmp (the pragmas only add speed).
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant.h"

static int failures;

static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!ok) failures++;
}

// ----------------------------------------------------------------------------
// A small deterministic random number generator (splitmix64) and the distributions QUANT.md needs

typedef struct {
    uint64_t state;
    int has_spare;
    double spare;  // Box-Muller makes Gaussians in pairs
} Rng;

static Rng rng_new(uint64_t seed) { Rng r = {seed, 0, 0.0}; return r; }

static uint64_t rng_u64(Rng *r) {
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(Rng *r) { return ((double)(rng_u64(r) >> 11) + 0.5) * 0x1p-53; }  // in (0, 1)

static double rng_gauss(Rng *r) {
    if (r->has_spare) { r->has_spare = 0; return r->spare; }
    double radius = sqrt(-2.0 * log(rng_uniform(r))), angle = 6.283185307179586 * rng_uniform(r);
    r->spare = radius * sin(angle);
    r->has_spare = 1;
    return radius * cos(angle);
}

// Gamma(k, 1) for k >= 1 (Marsaglia and Tsang, 2000)
static double rng_gamma(Rng *r, double k) {
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double z = rng_gauss(r), v = 1.0 + c * z;
        if (v <= 0) continue;
        v = v * v * v;
        if (log(rng_uniform(r)) < 0.5 * z * z + d - d * v + d * log(v)) return d * v;
    }
}

// Student-t with df degrees of freedom: N(0,1) / sqrt(chi2_df / df), chi2_df = 2 * Gamma(df/2)
static double rng_student(Rng *r, double df) { return rng_gauss(r) / sqrt(2.0 * rng_gamma(r, df / 2) / df); }

static float round_bf16(float f) {  // round to nearest even bf16, as a float (finite inputs)
    uint32_t u = f32_bits(f);
    u += 0x7fff + ((u >> 16) & 1);
    return bits_f32(u & 0xffff0000u);
}

// ----------------------------------------------------------------------------
// fp16 and bf16

// The value of fp16 bit pattern h, computed from the definition.
static double fp16_reference(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    double v = exp == 0 ? ldexp(mant, -24) : exp == 31 ? (mant ? NAN : INFINITY) : ldexp(1024 + mant, exp - 25);
    return sign ? -v : v;
}

// f rounded to the nearest fp16 value, ties to even, computed in double with the current (nearest) rounding mode.
static double fp16_round_reference(float f) {
    double a = fabs((double)f);
    if (a >= 65520.0) return copysign(INFINITY, f);
    int e;
    frexp(a, &e);                                   // a = m * 2^e with m in [0.5, 1)
    double ulp = ldexp(1.0, (e - 1 < -14 ? -14 : e - 1) - 10);  // fp16 spacing at a (subnormals: 2^-24)
    return copysign(nearbyint(a / ulp) * ulp, f);
}

static void test_half_floats(void) {
    int bad_value = 0, bad_trip = 0, bad_nan = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_f32((uint16_t)h);
        double ref = fp16_reference((uint16_t)h);
        if (isnan(ref)) {
            bad_nan += !isnan(f) || !isnan(fp16_to_f32(f32_to_fp16(f)));
            continue;
        }
        bad_value += (double)f != ref || !!signbit(f) != (int)(h >> 15);
        bad_trip += f32_to_fp16(f) != h;
    }
    check(bad_value == 0, "fp16_to_f32 matches the definition on all 63488 non-NaN patterns (%d wrong)", bad_value);
    check(bad_trip == 0, "fp16 -> f32 -> fp16 round trip is exact on all non-NaN patterns (%d wrong)", bad_trip);
    check(bad_nan == 0, "fp16 NaN patterns stay NaN through f32 and back (%d wrong)", bad_nan);

    // Every halfway point between neighbouring fp16 values (exact in fp32) must round to the even one.
    int bad_tie = 0;
    for (uint16_t h = 0; h < 0x7c00; h++) {
        float mid = (float)((fp16_reference(h) + fp16_reference((uint16_t)(h + 1))) / 2);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : h;
        bad_tie += f32_to_fp16(mid) != even || f32_to_fp16(-mid) != (0x8000 | even);
    }
    check(bad_tie == 0, "ties round to even at all 31744 halfway points, both signs, incl. 65520 -> inf (%d wrong)", bad_tie);

    // Random floats over the whole range that matters: from below the smallest subnormal to beyond the largest.
    Rng r = rng_new(1);
    int bad_round = 0, n = 2000000;
    for (int i = 0; i < n; i++) {
        int e = -30 + (int)(rng_u64(&r) % 48);  // 2^-30 .. 2^17
        float f = ldexpf(1.0f + (float)(rng_u64(&r) >> 41) * 0x1p-23f, e);
        if (rng_u64(&r) & 1) f = -f;
        double ref = fp16_round_reference(f), got = fp16_to_f32(f32_to_fp16(f));
        bad_round += got != ref || !!signbit(got) != !!signbit(f);
    }
    check(bad_round == 0, "f32 -> fp16 rounds to nearest even like a double reference on %d random floats "
          "in 2^-30..2^17 (%d wrong)", n, bad_round);
    check(f32_to_fp16(1e30f) == 0x7c00 && f32_to_fp16(-INFINITY) == 0xfc00 && f32_to_fp16(65519.0f) == 0x7bff
          && f32_to_fp16(1e-30f) == 0 && f32_to_fp16(-0.0f) == 0x8000 && isnan(fp16_to_f32(f32_to_fp16(NAN))),
          "fp16 specials: overflow to inf, 65519 -> 65504, underflow to signed zero, NaN stays NaN");
    check(f16_exact(1.0f) && f16_exact(65504.0f) && f16_exact(0x1p-24f) && !f16_exact(0.1f)
          && !f16_exact(1e5f) && !f16_exact(0x1p-25f), "f16_exact: 1, 65504, 2^-24 yes; 0.1, 1e5, 2^-25 no");
    check(bf16_to_f32(0x3f80) == 1.0f && bf16_to_f32(0xc049) == -3.140625f && bf16_to_f32(0x0001) == 0x1p-133f,
          "bf16_to_f32: 1, -3.140625, smallest subnormal");
}

// ----------------------------------------------------------------------------
// Block layouts, checked against the formulas in the struct comments

static void test_layouts(void) {
    // 6-bit scales: v[t] = bits 6t..6t+5 of the little-endian bit stream scales[0..11]
    int v[16], back[16], bad = 0;
    for (int t = 0; t < 16; t++) v[t] = (t * 37 + 5) & 63;
    BlockQ4 b;
    memset(&b, 0, sizeof b);
    q4_pack_scales(v, b.scales);
    q4_unpack_scales(b.scales, back);
    for (int t = 0; t < 16; t++) {
        int bit = 6 * t, got = 0;
        for (int k = 0; k < 6; k++) got |= ((b.scales[(bit + k) / 8] >> ((bit + k) % 8)) & 1) << k;
        bad += got != v[t] || back[t] != v[t];
    }
    check(bad == 0, "q4 scales: 16 six-bit values packed as a little-endian bit stream and unpacked (%d wrong)", bad);

    // levels: qs[32k+i] low nibble = weight 64k+i, high nibble = weight 64k+32+i; w = d*sc[j]*q - dmin*mn[j]
    b.d = f32_to_fp16(0.5f);
    b.dmin = f32_to_fp16(0.25f);
    for (int k = 0; k < 128; k++) b.qs[k] = (uint8_t)((k * 7 + 3) & 255);
    float w[QK4];
    dequantize_q4(&b, w, QK4);
    bad = 0;
    for (int i = 0; i < QK4; i++) {
        int k = i / 64, r = i % 64, q = r < 32 ? b.qs[32 * k + r] & 15 : b.qs[32 * k + r - 32] >> 4, j = i / 32;
        bad += w[i] != 0.5f * v[j] * q - 0.25f * v[8 + j];
    }
    check(bad == 0, "q4 dequantization follows w[32j+i] = d*sc[j]*q[32j+i] - dmin*mn[j] and the nibble order (%d wrong)", bad);
}

// ----------------------------------------------------------------------------
// Edge cases: no NaN or inf, errors within bounds

static int all_finite(const float *y, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(y[i])) return 0;
    return 1;
}

// relative RMS error ||x - y|| / ||x||, and the largest |x - y|
static double rel_error(const float *x, const float *y, int n, double *max_abs) {
    double e2 = 0, n2 = 0;
    *max_abs = 0;
    for (int i = 0; i < n; i++) {
        double e = (double)x[i] - y[i];
        e2 += e * e;
        n2 += (double)x[i] * x[i];
        if (fabs(e) > *max_abs) *max_abs = fabs(e);
    }
    return n2 > 0 ? sqrt(e2 / n2) : sqrt(e2);
}

typedef struct { float y8[QK4], y4[QK4]; double rel8, rel4, max8, max4; int finite; } RoundTrip;

static RoundTrip round_trip(const float *x) {
    RoundTrip r;
    BlockQ8 b8[QK4 / QK8];
    BlockQ4 b4;
    quantize_q8(x, b8, QK4);
    dequantize_q8(b8, r.y8, QK4);
    quantize_q4(x, &b4, QK4);
    dequantize_q4(&b4, r.y4, QK4);
    r.rel8 = rel_error(x, r.y8, QK4, &r.max8);
    r.rel4 = rel_error(x, r.y4, QK4, &r.max4);
    r.finite = all_finite(r.y8, QK4) && all_finite(r.y4, QK4);
    return r;
}

static void test_edge_cases(void) {
    float x[QK4];
    RoundTrip r;
    Rng rng = rng_new(7);

    memset(x, 0, sizeof x);
    r = round_trip(x);
    check(r.finite && r.max8 == 0 && r.max4 == 0, "all-zero block comes back exactly zero (q8 and q4)");

    for (int sign = -1; sign <= 1; sign += 2) {
        for (int i = 0; i < QK4; i++) x[i] = sign * 0.37f;
        r = round_trip(x);
        check(r.finite && r.rel8 < 1e-3 && r.rel4 < 1e-3, "constant block %+.2f: relative error q8 %.1e, q4 %.1e (< 1e-3)",
              sign * 0.37, r.rel8, r.rel4);
    }

    // Gaussian block (std 0.02) with one value of 100: the outlier must survive; the rest may not (the format
    // has one d per 256 weights), but must stay bounded
    for (int i = 0; i < QK4; i++) x[i] = 0.02f * (float)rng_gauss(&rng);
    x[77] = 100.0f;
    r = round_trip(x);
    check(r.finite && fabs(r.y8[77] - 100) < 0.5 && fabs(r.y4[77] - 100) < 1 && r.max4 < 2 && r.rel4 < 0.01,
          "outlier 100 among N(0, 0.02^2): q8 gives %.3f, q4 %.3f, q4 largest error %.3f, relative %.1e",
          r.y8[77], r.y4[77], r.max4, r.rel4);

    // q8 rounds each value to the nearest multiple of d: error <= d/2
    int bad = 0;
    for (int trial = 0; trial < 1000; trial++) {
        float scale = ldexpf(1.0f, -20 + trial % 36);  // 2^-20 .. 2^15
        for (int i = 0; i < QK8; i++) x[i] = scale * (float)rng_gauss(&rng);
        BlockQ8 b;
        float y[QK8];
        quantize_q8(x, &b, QK8);
        dequantize_q8(&b, y, QK8);
        float d = fp16_to_f32(b.d);
        for (int i = 0; i < QK8; i++) bad += !(fabsf(x[i] - y[i]) <= 0.5f * d * (1 + 1e-6f));
    }
    check(bad == 0, "q8 error <= d/2 for every value of 1000 Gaussian blocks with std 2^-20..2^15 (%d wrong)", bad);

    // tiny values: d underflows fp16 and everything becomes 0, which is as close as the format gets
    for (int i = 0; i < QK4; i++) x[i] = 1e-30f * (float)rng_gauss(&rng);
    r = round_trip(x);
    check(r.finite && r.max8 <= 1e-29 && r.max4 <= 1e-29, "values ~1e-30: finite, errors q8 %.1e, q4 %.1e", r.max8, r.max4);
    for (int i = 0; i < QK4; i++) x[i] = 1e-40f * (float)(i % 7 - 3);  // fp32 subnormals
    r = round_trip(x);
    check(r.finite && r.max8 <= 1e-39 && r.max4 <= 1e-39, "fp32 subnormal values: finite, errors q8 %.1e, q4 %.1e", r.max8, r.max4);

    // large values near the fp16 maximum are fine; far beyond, the scales saturate but stay finite
    for (int i = 0; i < QK4; i++) x[i] = 60000.0f * (float)(2 * rng_uniform(&rng) - 1);
    r = round_trip(x);
    check(r.finite && r.rel8 < 0.01 && r.rel4 < 0.1, "values up to 60000: relative error q8 %.4f, q4 %.4f", r.rel8, r.rel4);
    for (int i = 0; i < QK4; i++) x[i] = 1e30f * (float)(2 * rng_uniform(&rng) - 1);
    r = round_trip(x);
    check(r.finite, "values up to 1e30 (beyond what the formats can hold): finite results");

    // q4 on ordinary data: never worse than a plain min/max grid would be on a Gaussian block (about 0.09)
    double worst = 0;
    for (int trial = 0; trial < 200; trial++) {
        float scale = ldexpf(1.0f, -10 + trial % 20);
        for (int i = 0; i < QK4; i++) x[i] = scale * (float)rng_gauss(&rng);
        r = round_trip(x);
        if (!r.finite) worst = INFINITY;
        if (r.rel4 > worst) worst = r.rel4;
    }
    check(worst < 0.1, "q4 on 200 Gaussian blocks with std 2^-10..2^9: worst relative error %.4f (< 0.1)", worst);
}

// ----------------------------------------------------------------------------
// Dot products against double-precision sums of the dequantized values

// Activations: every value within half a step (d/2) of its level, for magnitudes from 1e-30 to 1e30,
// so small activations keep their relative precision (an fp16 scale would not below amax 7.8e-3).
static void test_activations(void) {
    Rng rng = rng_new(7);
    double worst = 0;
    for (int e = -30; e <= 30; e += 3) {
        float x[QK8], y[QK8];
        BlockQ8A b;
        for (int i = 0; i < QK8; i++) x[i] = (float)rng_gauss(&rng) * powf(10.0f, (float)e);
        quantize_activations(x, &b, QK8);
        float amax = 0;
        for (int i = 0; i < QK8; i++) amax = fmaxf(amax, fabsf(x[i]));
        for (int i = 0; i < QK8; i++) {
            y[i] = b.d * b.q[i];
            worst = fmax(worst, fabs((double)y[i] - x[i]) / (amax / 127.0));
        }
    }
    check(worst <= 0.5 + 1e-5, "activations: every value within half a step at magnitudes 1e-30..1e30 "
          "(worst %.4f steps)", worst);
}

static void test_dot_products(void) {
    static const int lengths[] = {256, 512, 4096, 5120, 32768};
    Rng rng = rng_new(11);
    double worst_q4 = 0, worst_q8 = 0, worst_f16 = 0;
    for (int t = 0; t < 5; t++) {
        int n = lengths[t];
        float *w = malloc(sizeof(float) * (size_t)n), *x = malloc(sizeof(float) * (size_t)n);
        float *wd = malloc(sizeof(float) * (size_t)n), *xd = malloc(sizeof(float) * (size_t)n);
        uint16_t *w16 = malloc(sizeof(uint16_t) * (size_t)n);
        BlockQ4 *w4 = malloc(sizeof(BlockQ4) * (size_t)(n / QK4));
        BlockQ8 *w8 = malloc(sizeof(BlockQ8) * (size_t)(n / QK8));
        BlockQ8A *x8 = malloc(sizeof(BlockQ8A) * (size_t)(n / QK8));
        for (int i = 0; i < n; i++) {
            w[i] = 0.02f * (float)rng_gauss(&rng);
            x[i] = (float)rng_gauss(&rng) * (i % 97 == 0 ? 30.0f : 1.0f);  // activations with a few outliers
            w16[i] = f32_to_fp16(w[i]);
        }
        quantize_activations(x, x8, n);
        for (int i = 0; i < n; i++) xd[i] = x8[i / QK8].d * x8[i / QK8].q[i % QK8];
        // error relative to sum |w_i x_i|, which does not vanish when the dot product itself nearly does
        double ref, mag;
        quantize_q4(w, w4, n);
        dequantize_q4(w4, wd, n);
        ref = mag = 0;
        for (int i = 0; i < n; i++) { ref += (double)wd[i] * xd[i]; mag += fabs((double)wd[i] * xd[i]); }
        worst_q4 = fmax(worst_q4, fabs(dot_q4_q8(w4, x8, n) - ref) / mag);
        quantize_q8(w, w8, n);
        dequantize_q8(w8, wd, n);
        ref = mag = 0;
        for (int i = 0; i < n; i++) { ref += (double)wd[i] * xd[i]; mag += fabs((double)wd[i] * xd[i]); }
        worst_q8 = fmax(worst_q8, fabs(dot_q8_q8(w8, x8, n) - ref) / mag);
        ref = mag = 0;
        for (int i = 0; i < n; i++) { ref += (double)fp16_to_f32(w16[i]) * x[i]; mag += fabs((double)fp16_to_f32(w16[i]) * x[i]); }
        worst_f16 = fmax(worst_f16, fabs(dot_f16_f32(w16, x, n) - ref) / mag);
        free(w); free(x); free(wd); free(xd); free(w16); free(w4); free(w8); free(x8);
    }
    check(worst_q4 < 1e-5, "dot_q4_q8 matches the double dot of the dequantized vectors, n = 256..32768 "
          "(worst error %.1e of sum|w*x|)", worst_q4);
    check(worst_q8 < 1e-5, "dot_q8_q8 matches likewise (worst %.1e)", worst_q8);
    check(worst_f16 < 1e-5, "dot_f16_f32 matches likewise (worst %.1e)", worst_f16);
}

// ----------------------------------------------------------------------------
// Speed of the q4 quantizer (informational: the converter quantizes 24 billion weights)

static void test_speed(void) {
    int n = 1 << 20;
    float *x = malloc(sizeof(float) * (size_t)n);
    BlockQ4 *b = malloc(sizeof(BlockQ4) * (size_t)(n / QK4));
    Rng rng = rng_new(13);
    for (int i = 0; i < n; i++) x[i] = round_bf16(0.02f * (float)rng_gauss(&rng));
    clock_t t0 = clock();
    quantize_q4(x, b, n);
    double seconds = (double)(clock() - t0) / CLOCKS_PER_SEC;
    check(1, "quantize_q4 takes %.1f ns per weight on one core (CPU time; informational)", 1e9 * seconds / n);
    free(x);
    free(b);
}

// ----------------------------------------------------------------------------
// QUANT.md weight families: relative RMS error ||W - Wq|| / ||W|| pooled over three matrices each

typedef struct {
    const char *name;
    uint64_t seed;
    double q4k;         // llama.cpp Q4_K, from QUANT.md
    double q8_0;        // llama.cpp Q8_0, from QUANT.md
    double df[3];       // Student-t degrees of freedom per matrix (0: Gaussian)
    int n_outlier[2];   // outlier columns in the 5120-wide and the 4096-wide matrices
} Family;

typedef struct { int rows, cols; } MatrixShape;  // out x in; a row is contiguous, as the quantizer sees it

static const MatrixShape shapes[3] = {{1024, 5120}, {1024, 5120}, {5120, 4096}};

// One row of matrix m of family f (std 0.02, cast through bf16). Each row has its own random stream, so rows
// can be made in any order, and in parallel.
static void family_row(const Family *f, int m, const uint8_t *outlier_col, int row, float *out) {
    const MatrixShape *s = &shapes[m];
    Rng r = rng_new(f->seed << 40 | (uint64_t)m << 32 | (uint64_t)row);  // splitmix64 hashes its state
    double df = f->df[m], scale = df > 0 ? 0.02 / sqrt(df / (df - 2)) : 0.02;  // Student-t std is sqrt(df/(df-2))
    for (int i = 0; i < s->cols; i++) {
        double v = (df > 0 ? rng_student(&r, df) : rng_gauss(&r)) * scale;
        if (outlier_col && outlier_col[i]) v *= 20;
        out[i] = round_bf16((float)v);
    }
}

typedef struct { double err2_q4, err2_q8, norm2; } Errors;

static Errors measure_family(const Family *f) {
    Errors total = {0, 0, 0};
    for (int m = 0; m < 3; m++) {
        const MatrixShape *s = &shapes[m];
        uint8_t *outlier_col = NULL;
        int n_out = f->n_outlier[m == 2];
        if (n_out) {  // distinct random input columns
            outlier_col = calloc((size_t)s->cols, 1);
            Rng r = rng_new(4242 + (uint64_t)m);
            for (int k = 0; k < n_out;) {
                int c = (int)(rng_u64(&r) % (uint64_t)s->cols);
                if (!outlier_col[c]) { outlier_col[c] = 1; k++; }
            }
        }
        double err2_q4 = 0, err2_q8 = 0, norm2 = 0;
        #pragma omp parallel for schedule(dynamic, 16) reduction(+ : err2_q4, err2_q8, norm2)
        for (int row = 0; row < s->rows; row++) {
            float *x = malloc(sizeof(float) * 3 * (size_t)s->cols), *y4 = x + s->cols, *y8 = y4 + s->cols;
            BlockQ4 *b4 = malloc(sizeof(BlockQ4) * (size_t)(s->cols / QK4));
            BlockQ8 *b8 = malloc(sizeof(BlockQ8) * (size_t)(s->cols / QK8));
            family_row(f, m, outlier_col, row, x);
            quantize_q4(x, b4, s->cols);
            dequantize_q4(b4, y4, s->cols);
            quantize_q8(x, b8, s->cols);
            dequantize_q8(b8, y8, s->cols);
            for (int i = 0; i < s->cols; i++) {
                err2_q4 += ((double)x[i] - y4[i]) * ((double)x[i] - y4[i]);
                err2_q8 += ((double)x[i] - y8[i]) * ((double)x[i] - y8[i]);
                norm2 += (double)x[i] * x[i];
            }
            free(x); free(b4); free(b8);
        }
        total.err2_q4 += err2_q4; total.err2_q8 += err2_q8; total.norm2 += norm2;
        free(outlier_col);
    }
    return total;
}

static void test_weight_families(void) {
    static const Family families[3] = {
        {"gauss", 1, 0.0713, 0.0054, {0, 0, 0}, {0, 0}},
        {"student", 2, 0.0847, 0.0070, {4, 5, 4.5}, {0, 0}},
        {"outlier", 3, 0.0850, 0.0088, {0, 0, 0}, {8, 6}},
    };
    double bpw = 8.0 * sizeof(BlockQ4) / QK4;
    check(bpw <= 4.6, "q4 is %.2f bits per weight (%zu bytes per 256), q8 %.2f", bpw, sizeof(BlockQ4),
          8.0 * sizeof(BlockQ8) / QK8);
    for (int k = 0; k < 3; k++) {
        const Family *f = &families[k];
        Errors e = measure_family(f);
        double q4 = sqrt(e.err2_q4 / e.norm2), q8 = sqrt(e.err2_q8 / e.norm2);
        check(q4 <= f->q4k, "q4 %-7s relative RMS error %.4f vs llama.cpp Q4_K %.4f (%+.1f%%)", f->name, q4, f->q4k,
              100 * (q4 / f->q4k - 1));
        // q8 rounds to the nearest multiple of d = amax/127, so the error is roughly uniform in +-d/2, with RMS
        // d/sqrt(12): about 0.005 of the RMS for Gaussian blocks of 32 (amax ~ 2.1-2.4 sigma), more for heavy
        // tails. llama.cpp's Q8_0 is the same format and rounding, so the numbers must agree up to sampling
        // noise: allow 5%.
        check(q8 <= 1.05 * f->q8_0, "q8 %-7s relative RMS error %.5f vs llama.cpp Q8_0 %.4f", f->name, q8, f->q8_0);
    }
}

int main(void) {
    test_half_floats();
    test_activations();
    test_layouts();
    test_edge_cases();
    test_dot_products();
    test_speed();  // before the parallel part, whose idle threads could count as CPU time
    test_weight_families();
    printf(failures ? "%d checks failed\n" : "all checks passed\n", failures);
    return failures != 0;
}
