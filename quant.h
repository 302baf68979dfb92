// quant.h: the number formats shared by quantize.c (converter), run.c (runtime) and the tests.
//
//   fp16, bf16   half floats, converted by bit manipulation (no compiler support needed)
//   q8           BlockQ8: 32 values with one fp16 scale, 8.5 bits/value (weights)
//   activations  BlockQ8A: 32 values with one float scale, quantized at run time for the q8 and q4 dot products
//   q4           BlockQ4: 256 weights in 8 sub-blocks of 32, each with a 6-bit scale and minimum, 4.5 bits/weight
//   row groups   BlockQ8x16, BlockQ4x16: 16 rows' blocks interleaved, how q8 and q4 matrices are stored
//
// API (n is a multiple of the block size: 32 for q8, 256 for q4):
//   float fp16_to_f32(uint16_t h);    uint16_t f32_to_fp16(float f);    float bf16_to_f32(uint16_t h);
//   int f16_exact(float f);                                       whether f is exactly representable in fp16
//   void quantize_q8(const float *x, BlockQ8 *out, int n);        void dequantize_q8(const BlockQ8 *in, float *out, int n);
//   void quantize_q4(const float *x, BlockQ4 *out, int n);        void dequantize_q4(const BlockQ4 *in, float *out, int n);
//   float dot_f16_f32(const uint16_t *w, const float *x, int n);
//   void quantize_activations(const float *x, BlockQ8A *out, int n);   (one block: quantize_activation_block)
//   float dot_q8_q8(const BlockQ8 *w, const BlockQ8A *x, int n);  x: activations from quantize_activations
//   float dot_q4_q8(const BlockQ4 *w, const BlockQ8A *x, int n);
//   interleave_q8, interleave_q4, q8x16_get_row, q4x16_get_row, ...   16-row groups: the matrix layout in files
//
// Each format has a plain quantize and dequantize function, and the dot products at the end are the readable
// definitions that any faster (SIMD) version in run.c must agree with. No function keeps state: all are
// thread-safe and deterministic. The quantizers never produce NaN or inf from finite input (values beyond
// the fp16 scales' range saturate).
// Header only: every function is static inline, so each program that includes it gets its own copy and no
// warnings for the ones it does not use.
#ifndef QUANT_H
#define QUANT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

// ----------------------------------------------------------------------------
// Half floats: fp16 (1 sign, 5 exponent, 10 mantissa bits) and bf16 (the top half of an fp32)

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000 | mant << 13);          // inf, or NaN with its payload
    if (exp != 0) return bits_f32(sign | (exp + 127 - 15) << 23 | mant << 13);  // normal: rebias the exponent
    float sub = (float)mant * 0x1p-24f;                                        // zero or subnormal: mant * 2^-24
    return sign ? -sub : sub;
}

// Round to nearest, ties to even, like a hardware conversion.
static inline uint16_t f32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (x >> 16) & 0x8000;
    uint32_t a = x & 0x7fffffff;                          // |f|
    if (a > 0x7f800000) return sign | 0x7e00 | (a >> 13 & 0x3ff);  // NaN stays NaN (quiet, top payload bits kept)
    if (a >= 0x477ff000) return sign | 0x7c00;            // |f| >= 65520 (halfway from 65504 to 2^16): inf
    int e = (int)(a >> 23);                               // biased fp32 exponent
    if (e >= 113) {                                       // |f| >= 2^-14: a normal fp16
        uint32_t h = (uint32_t)(e - 112) << 10 | (a >> 13 & 0x3ff), rest = a & 0x1fff;
        if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;  // a carry into the exponent is still right
        return sign | (uint16_t)h;
    }
    if (e < 102) return sign;                             // |f| < 2^-25: rounds to zero
    // subnormal fp16: |f| = m * 2^-24 with m = the 24-bit significand shifted right by 126-e (14..24 bits)
    uint32_t sig = (a & 0x7fffff) | 0x800000;
    int shift = 126 - e;
    uint32_t m = sig >> shift, rest = sig & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (m & 1))) m++;    // m = 0x400 is the smallest normal: also right
    return sign | (uint16_t)m;
}

static inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

// Whether f survives the trip to fp16 and back bit for bit.
static inline int f16_exact(float f) { return f32_bits(fp16_to_f32(f32_to_fp16(f))) == f32_bits(f); }

// ----------------------------------------------------------------------------
// q8: blocks of 32 values with one fp16 scale, value = d * q. Weights and run-time activations.

#define QK8 32
typedef struct {
    uint16_t d;        // fp16 scale
    int8_t q[QK8];     // value i = d * q[i], q in -127..127
} BlockQ8;             // 32 values in 34 bytes = 8.5 bits per value
_Static_assert(sizeof(BlockQ8) == 34, "BlockQ8 must have no padding: it is the file format");

// n must be a multiple of 32. The scale d is amax/127 rounded to fp16, upwards if need be so that no value needs a
// level beyond 127, and the levels are computed from that fp16 d: each value is then off by at most d/2 (for
// magnitudes up to 127 * 65504, the largest fp16 scale; larger values saturate).
static inline void quantize_q8(const float *x, BlockQ8 *out, int n) {
    for (int b = 0; b < n / QK8; b++, x += QK8) {
        float amax = 0.0f;
        for (int i = 0; i < QK8; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        float d = amax / 127.0f;
        uint16_t h = f32_to_fp16(d < 65504.0f ? d : 65504.0f);
        if (fp16_to_f32(h) * 127.0f < amax && h < 0x7bff) h++;  // the next fp16 value up
        out[b].d = h;
        d = fp16_to_f32(h);
        float inv = d > 0.0f ? 1.0f / d : 0.0f;                 // d = 0 only for an all-zero block
        for (int i = 0; i < QK8; i++) {
            float v = x[i] * inv;
            v = v < 127.0f ? v : 127.0f;
            v = v > -127.0f ? v : -127.0f;
            out[b].q[i] = (int8_t)(v >= 0.0f ? v + 0.5f : v - 0.5f);  // round half away from zero
        }
    }
}

static inline void dequantize_q8(const BlockQ8 *in, float *out, int n) {
    for (int b = 0; b < n / QK8; b++) {
        float d = fp16_to_f32(in[b].d);
        for (int i = 0; i < QK8; i++) out[b * QK8 + i] = d * in[b].q[i];
    }
}

// ----------------------------------------------------------------------------
// q4: super-blocks of 256 weights = 8 sub-blocks of 32, each sub-block with its own scale and minimum,
// stored as 6-bit integers times two fp16 super-block scales (the layout of llama.cpp's Q4_K):
//
//   w[32j+i] = d*sc[j]*q[32j+i] - dmin*mn[j]        q in 0..15, sc and mn in 0..63

#define QK4 256
typedef struct {
    uint16_t d;          // fp16 super-block scale for the sub-block scales
    uint16_t dmin;       // fp16 super-block scale for the sub-block minimums
    uint8_t scales[12];  // 8 six-bit scales sc[0..7] then 8 six-bit mins mn[0..7]: 16 values v[t], t=0..15,
                         // as a little-endian bit stream: v[t] = bits 6t..6t+5, i.e. each 3 bytes b0,b1,b2 hold
                         // 4 values: g = b0 | b1<<8 | b2<<16, values g&63, (g>>6)&63, (g>>12)&63, (g>>18)&63
    uint8_t qs[128];     // 4-bit levels q in 0..15: qs[32k+i] low nibble = weight 64k+i, high nibble = weight 64k+32+i
} BlockQ4;               // 256 weights in 144 bytes = 4.5 bits per weight
_Static_assert(sizeof(BlockQ4) == 144, "BlockQ4 must have no padding: it is the file format");

// The 16 six-bit values of scales[]: v[0..7] = sc[0..7], v[8..15] = mn[0..7].
static inline void q4_unpack_scales(const uint8_t packed[12], int v[16]) {
    for (int g = 0; g < 4; g++) {
        uint32_t bits = packed[3 * g] | (uint32_t)packed[3 * g + 1] << 8 | (uint32_t)packed[3 * g + 2] << 16;
        for (int k = 0; k < 4; k++) v[4 * g + k] = (bits >> 6 * k) & 63;
    }
}

static inline void q4_pack_scales(const int v[16], uint8_t packed[12]) {
    for (int g = 0; g < 4; g++) {
        uint32_t bits = 0;
        for (int k = 0; k < 4; k++) bits |= (uint32_t)v[4 * g + k] << 6 * k;
        for (int k = 0; k < 3; k++) packed[3 * g + k] = (uint8_t)(bits >> 8 * k);
    }
}

static inline void dequantize_q4(const BlockQ4 *in, float *out, int n) {
    for (int b = 0; b < n / QK4; b++, out += QK4) {
        float d = fp16_to_f32(in[b].d), dmin = fp16_to_f32(in[b].dmin);
        int v[16];
        q4_unpack_scales(in[b].scales, v);
        for (int k = 0; k < 4; k++) {
            for (int i = 0; i < 32; i++) {
                uint8_t byte = in[b].qs[32 * k + i];
                int j = 2 * k;  // sub-block of the low nibble; the high nibble is in sub-block j+1
                out[64 * k + i] = d * v[j] * (byte & 15) - dmin * v[8 + j];
                out[64 * k + 32 + i] = d * v[j + 1] * (byte >> 4) - dmin * v[8 + j + 1];
            }
        }
    }
}

// --- the q4 quantizer: an error-minimising search ---
//
// Goal: the least squared error sum (x - w)^2 of each super-block. Given a sub-block's scale S = d*sc and
// minimum M = dmin*mn, the best level for each weight is simply the nearest one, so the search is over the
// scales and minimums, in four steps:
//   1. per sub-block, the best real (S, M): fit (S, M) by least squares to each of 20 level assignments
//      (grids of 13..16 steps spread over the values at 5 offsets), then improve the two best fits by
//      Lloyd's algorithm (alternate "nearest levels" and "least-squares fit" while the error drops);
//   2. d and dmin: try a few values from max(S)/63 and max(M)/63 upwards; for each, every sub-block takes the
//      6-bit (sc, mn) that its error formula below (levels of step 1) ranks best, and the total decides;
//   3. d and dmin re-fitted by least squares to those integers and levels;
//   4. per sub-block, the chosen (sc, mn) and its neighbours, each with its levels re-assigned: exact errors.
// Steps 1-3 only propose; step 4 measures. About 45 ns per weight on one x86-64 core at -O2 (the test
// measures it), most of it in q4_assign_levels.
//
// With the levels l_i fixed, a sub-block's error is a quadratic in (S, M) that needs five sums only:
//   err(S, M) = sum (x_i - S*l_i + M)^2 = sxx - 2*S*slx + 2*M*sx + S^2*sll - 2*S*M*sl + 32*M^2

typedef struct { float sx, sxx, sl, sll, slx; } Q4Sums;  // over one sub-block: sum x, x^2, l, l^2, l*x

static inline float q4_error(const Q4Sums *s, float S, float M) {
    float err = s->sxx - 2 * S * s->slx + 2 * M * s->sx + S * S * s->sll - 2 * S * M * s->sl + 32 * M * M;
    return err > 0.0f ? err : 0.0f;  // rounding can make a zero error slightly negative
}

// The nearest level of each of the 32 weights for scale S and minimum M: sets sl, sll, slx of s (sx and sxx
// are the caller's), and writes the levels to q unless it is NULL.
// Written as separate simple loops, with the clamps as ?: and eight partial sums for slx, so that gcc and clang
// at -O2 turn them into SIMD code; this function is most of the quantizer's time.
static inline void q4_assign_levels(const float *x, float S, float M, Q4Sums *s, uint8_t *q) {
    float inv = S > 0.0f ? 1.0f / S : 0.0f;
    int l[32];
    for (int i = 0; i < 32; i++) {
        float t = (x[i] + M) * inv + 0.5f;
        t = t > 0.0f ? t : 0.0f;    // (a NaN from extreme inputs also becomes 0)
        t = t < 15.0f ? t : 15.0f;
        l[i] = (int)t;
    }
    int sl = 0, sll = 0;
    for (int i = 0; i < 32; i++) { sl += l[i]; sll += l[i] * l[i]; }
    float slx[8] = {0};
    for (int i = 0; i < 32; i += 8)
        for (int k = 0; k < 8; k++) slx[k] += l[i + k] * x[i + k];
    s->sl = (float)sl;
    s->sll = (float)sll;
    s->slx = ((slx[0] + slx[1]) + (slx[2] + slx[3])) + ((slx[4] + slx[5]) + (slx[6] + slx[7]));
    if (q) for (int i = 0; i < 32; i++) q[i] = (uint8_t)l[i];
}

// Least-squares (S, M) for the levels in s, with M >= 0 (the lowest level must be <= 0: an unsigned 6-bit
// minimum can only subtract). Returns the error, which at the optimum simplifies to sxx - S*slx + M*sx.
static inline float q4_fit(const Q4Sums *s, float *S, float *M) {
    float det = 32 * s->sll - s->sl * s->sl;  // 0 when all levels are equal
    float inv = det > 0.0f ? 1.0f / det : 0.0f;
    float scale = (32 * s->slx - s->sl * s->sx) * inv, min = (s->sl * s->slx - s->sll * s->sx) * inv;
    if (min < 0.0f || scale <= 0.0f) {        // M = 0, fit the scale alone
        min = 0.0f;
        scale = s->sll > 0.0f ? s->slx / s->sll : 0.0f;
        scale = scale > 0.0f ? scale : 0.0f;
    }
    *S = scale;
    *M = min;
    float err = s->sxx - scale * s->slx + min * s->sx;
    return err > 0.0f ? err : 0.0f;
}

// Lloyd's algorithm from (S, M) with error err and sums s: re-assign levels and re-fit while the error drops.
static inline float q4_lloyd(const float *x, float *S, float *M, Q4Sums *s, float err) {
    for (int it = 0; it < 4; it++) {
        Q4Sums t = *s;
        float S1, M1;
        q4_assign_levels(x, *S, *M, &t, NULL);
        float e = q4_fit(&t, &S1, &M1);
        if (!(e < err)) break;
        err = e; *S = S1; *M = M1; *s = t;
    }
    return err;
}

// Step 1 for one sub-block: the best real (S, M), its error, and the sums of its levels.
static inline float q4_search_subblock(const float *x, float *S, float *M, Q4Sums *sums) {
    Q4Sums s = {0};
    float lo = 0.0f, hi = -INFINITY;  // the grid must reach down to 0 or below (M >= 0)
    for (int i = 0; i < 32; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        s.sx += x[i];
        s.sxx += x[i] * x[i];
    }
    *S = 0.0f; *M = -lo; *sums = s;
    if (!(hi > lo)) return 0.0f;      // all values equal and <= 0: exactly -M with every level 0
    float err = INFINITY, err2 = INFINITY, S2 = 0.0f, M2 = 0.0f;
    Q4Sums sums2 = s;
    for (int steps = 13; steps <= 16; steps++) {
        for (int k = -2; k <= 2; k++) {
            // a grid of `steps` steps over [lo, hi], its lowest level moved 0.2*k steps below lo
            float S0 = (hi - lo) / steps, M0 = -lo + 0.2f * k * S0, S1, M1;
            q4_assign_levels(x, S0, M0, &s, NULL);
            float e = q4_fit(&s, &S1, &M1);
            if (e < err) {
                err2 = err; S2 = *S; M2 = *M; sums2 = *sums;
                err = e; *S = S1; *M = M1; *sums = s;
            } else if (e < err2) {
                err2 = e; S2 = S1; M2 = M1; sums2 = s;
            }
        }
    }
    err = q4_lloyd(x, S, M, sums, err);
    err2 = q4_lloyd(x, &S2, &M2, &sums2, err2);
    if (err2 < err) { err = err2; *S = S2; *M = M2; *sums = sums2; }
    return err;
}

static inline int q4_nearest_int(float v, int max) {  // the nearest integer to v in 0..max
    v = v > 0.0f ? v + 0.5f : 0.0f;
    return v < (float)max ? (int)v : max;
}

// Steps 2-3: the 6-bit scales v (sc[0..7], mn[0..7]) for super-block scales d and dmin, and the total error by
// the formula. Each sub-block tries sc around S/d, each with the mn nearest to the best minimum for that scale.
static inline float q4_choose_ints(const Q4Sums *sums, const float *S, float d, float dmin, int v[16]) {
    float total = 0.0f, inv_d = d > 0.0f ? 1.0f / d : 0.0f, inv_dmin = dmin > 0.0f ? 1.0f / dmin : 0.0f;
    for (int j = 0; j < 8; j++) {
        const Q4Sums *s = &sums[j];
        int c = q4_nearest_int(S[j] * inv_d, 63);
        float best = INFINITY;
        v[j] = c; v[8 + j] = 0;  // (kept only if every error is NaN, from absurdly large inputs)
        for (int sc = (c > 0 ? c - 1 : 0); sc <= c + 1 && sc <= 63; sc++) {
            float Ssc = d * sc, Mbest = (Ssc * s->sl - s->sx) / 32;  // d err / dM = 0
            int mn = q4_nearest_int(Mbest * inv_dmin, 63);
            float err = q4_error(s, Ssc, dmin * mn);
            if (err < best) { best = err; v[j] = sc; v[8 + j] = mn; }
        }
        total += best;
    }
    return total;
}

static inline float fp16_round(float f) { return fp16_to_f32(f32_to_fp16(f < 65504.0f ? f : 65504.0f)); }

static inline void quantize_q4_block(const float *x, BlockQ4 *out) {
    float S[8], M[8], smax = 0.0f, mmax = 0.0f;
    Q4Sums sums[8];
    for (int j = 0; j < 8; j++) {
        q4_search_subblock(x + 32 * j, &S[j], &M[j], &sums[j]);
        smax = S[j] > smax ? S[j] : smax;
        mmax = M[j] > mmax ? M[j] : mmax;
    }

    // step 2: d = max(S)/63 maps the largest scale to 63, but a slightly larger d can suit the other sub-blocks'
    // scales better; likewise dmin
    int v[16], try_v[16];
    float d = fp16_round(smax / 63), dmin = fp16_round(mmax / 63);
    float err = q4_choose_ints(sums, S, d, dmin, v);
    for (int k = 1; k < 8; k++) {
        float d1 = fp16_round(smax / 63 * (1 + 0.01f * k));
        float e = q4_choose_ints(sums, S, d1, dmin, try_v);
        if (e < err) { err = e; d = d1; memcpy(v, try_v, sizeof v); }
    }
    for (int k = 1; k < 8; k++) {
        float dmin1 = fp16_round(mmax / 63 * (1 + 0.01f * k));
        float e = q4_choose_ints(sums, S, d, dmin1, try_v);
        if (e < err) { err = e; dmin = dmin1; memcpy(v, try_v, sizeof v); }
    }

    // step 3: least squares for (d, dmin) in x = d*a - dmin*b, with a = sc*l and b = mn, from the sums
    for (int it = 0; it < 2; it++) {
        double saa = 0, sab = 0, sbb = 0, sxa = 0, sxb = 0;
        for (int j = 0; j < 8; j++) {
            double sc = v[j], mn = v[8 + j];
            saa += sc * sc * sums[j].sll; sab += sc * mn * sums[j].sl; sbb += 32 * mn * mn;
            sxa += sc * sums[j].slx;      sxb += mn * sums[j].sx;
        }
        double det = saa * sbb - sab * sab;
        if (!(det > 0)) break;
        float d1 = fp16_round((float)((sxa * sbb - sxb * sab) / det));
        float dmin1 = fp16_round((float)((sxa * sab - sxb * saa) / det));
        if (!(d1 >= 0.0f && dmin1 >= 0.0f)) break;
        float e = q4_choose_ints(sums, S, d1, dmin1, try_v);
        if (!(e < err)) break;
        err = e; d = d1; dmin = dmin1; memcpy(v, try_v, sizeof v);
    }

    // step 4: exact errors for (sc, mn) and its neighbours (+-1, 0), (0, +-1), (+1, +1), (-1, -1); these move
    // the scale and the minimum together, as the error's valley runs (raising S raises the best M)
    static const int8_t neighbours[7][2] = {{0, 0}, {-1, 0}, {1, 0}, {0, -1}, {0, 1}, {-1, -1}, {1, 1}};
    uint8_t q[256];
    for (int j = 0; j < 8; j++) {
        int sc0 = v[j], mn0 = v[8 + j];
        float best = INFINITY;
        for (int k = 0; k < 7; k++) {
            int sc = sc0 + neighbours[k][0], mn = mn0 + neighbours[k][1];
            if (sc < 0 || sc > 63 || mn < 0 || mn > 63) continue;
            Q4Sums s = sums[j];
            q4_assign_levels(x + 32 * j, d * sc, dmin * mn, &s, NULL);
            float e = q4_error(&s, d * sc, dmin * mn);
            if (e < best) { best = e; v[j] = sc; v[8 + j] = mn; }
        }
        Q4Sums s;
        q4_assign_levels(x + 32 * j, d * v[j], dmin * v[8 + j], &s, q + 32 * j);
    }

    out->d = f32_to_fp16(d);
    out->dmin = f32_to_fp16(dmin);
    q4_pack_scales(v, out->scales);
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 32; i++) out->qs[32 * k + i] = (uint8_t)(q[64 * k + i] | q[64 * k + 32 + i] << 4);
}

// n must be a multiple of 256.
static inline void quantize_q4(const float *x, BlockQ4 *out, int n) {
    for (int b = 0; b < n / QK4; b++) quantize_q4_block(x + b * QK4, out + b);
}

// ----------------------------------------------------------------------------
// Activations: quantized at run time to blocks of 32 int8 with a float scale, so that q8 and q4 weights are
// multiplied with integer dot products. Not stored, so a float scale costs nothing; an fp16 scale would turn
// subnormal for blocks whose largest value is below 127 * 2^-14 = 7.8e-3 and lose precision there.

typedef struct {
    float d;           // scale
    int8_t q[QK8];     // value i = d * q[i], q in -127..127
} BlockQ8A;

// One block of 32 values: writes the levels, returns the scale.
static inline float quantize_activation_block(const float *x, int8_t q[QK8]) {
    float amax = 0.0f;
    for (int i = 0; i < QK8; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < QK8; i++) {
        float v = x[i] * inv;
        v = v < 127.0f ? v : 127.0f;  // x * (1/d) can round just above 127
        v = v > -127.0f ? v : -127.0f;
        q[i] = (int8_t)(v >= 0.0f ? v + 0.5f : v - 0.5f);  // round half away from zero
    }
    return d;
}

static inline void quantize_activations(const float *x, BlockQ8A *out, int n) {
    for (int b = 0; b < n / QK8; b++) out[b].d = quantize_activation_block(x + b * QK8, out[b].q);
}

// ----------------------------------------------------------------------------
// Row groups: how q8 and q4 matrices are stored in a model file. Sixteen consecutive rows are interleaved
// block by block so that one 64-byte line holds 4 consecutive weights of each of the 16 rows. That is the
// operand layout of the integer dot-product instructions, which multiply 4 bytes by 4 bytes into one 32-bit
// lane: x86 vpdpbusd (16 lanes = the 16 rows), an AMX tile's rows, arm64 sdot (4 lanes). The kernels load
// the weights as stored and multiply them by 4 activation bytes repeated in every lane, 16 rows at a time,
// with no shuffles. The values are those of the rows' BlockQ8/BlockQ4 (quantize_q8/q4 make them); only the
// byte order differs.
//
// A matrix of R rows (a multiple of 16) and C columns is R/16 groups one after another; group G (rows
// 16G..16G+15) is C/32 BlockQ8x16 or C/256 BlockQ4x16, its block b holding block b of each of its rows.

#define QROWS 16

typedef struct {
    uint16_t d[QROWS];          // row r's fp16 scale
    int8_t q[QROWS * QK8];      // q[64g + 4r + i] = row r's q[4g + i]: line g (0..7) = weights 4g..4g+3 of every row
} BlockQ8x16;                   // 16 BlockQ8 in 544 bytes

typedef struct {
    uint16_t d[QROWS], dmin[QROWS];  // row r's fp16 super-block scales
    uint8_t scales[QROWS][12];       // row r's packed 6-bit scales and minimums, as in BlockQ4
    uint8_t qs[QROWS * 128];         // qs[64w + 4r + i] = row r's qs[4w + i]. Line w = 8k + g (k = 0..3, g = 0..7)
                                     // holds weights 4g..4g+3 of sub-block 2k of every row in its low nibbles and
                                     // those of sub-block 2k+1 in its high nibbles
} BlockQ4x16;                        // 16 BlockQ4 in 2304 bytes, a multiple of 64: the lines stay aligned
_Static_assert(sizeof(BlockQ8x16) == 16 * sizeof(BlockQ8), "BlockQ8x16 is 16 BlockQ8");
_Static_assert(sizeof(BlockQ4x16) == 16 * sizeof(BlockQ4), "BlockQ4x16 is 16 BlockQ4");

static inline void q8x16_set_row(BlockQ8x16 *g, int r, const BlockQ8 *b) {
    g->d[r] = b->d;
    for (int w = 0; w < QK8 / 4; w++) memcpy(&g->q[64 * w + 4 * r], &b->q[4 * w], 4);
}

static inline void q8x16_get_row(const BlockQ8x16 *g, int r, BlockQ8 *b) {
    b->d = g->d[r];
    for (int w = 0; w < QK8 / 4; w++) memcpy(&b->q[4 * w], &g->q[64 * w + 4 * r], 4);
}

static inline void q4x16_set_row(BlockQ4x16 *g, int r, const BlockQ4 *b) {
    g->d[r] = b->d;
    g->dmin[r] = b->dmin;
    memcpy(g->scales[r], b->scales, 12);
    for (int w = 0; w < 32; w++) memcpy(&g->qs[64 * w + 4 * r], &b->qs[4 * w], 4);
}

static inline void q4x16_get_row(const BlockQ4x16 *g, int r, BlockQ4 *b) {
    b->d = g->d[r];
    b->dmin = g->dmin[r];
    memcpy(b->scales, g->scales[r], 12);
    for (int w = 0; w < 32; w++) memcpy(&b->qs[4 * w], &g->qs[64 * w + 4 * r], 4);
}

// 16 rows of nb blocks each, one row after another (as quantize_q8/q4 write them) -> nb group blocks.
static inline void interleave_q8(const BlockQ8 *rows, int nb, BlockQ8x16 *out) {
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < QROWS; r++) q8x16_set_row(&out[b], r, &rows[(size_t)r * nb + b]);
}

static inline void interleave_q4(const BlockQ4 *rows, int nb, BlockQ4x16 *out) {
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < QROWS; r++) q4x16_set_row(&out[b], r, &rows[(size_t)r * nb + b]);
}

// ----------------------------------------------------------------------------
// Dot products: the reference definitions. x is an activation vector from quantize_activations.

static inline float dot_f16_f32(const uint16_t *w, const float *x, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += fp16_to_f32(w[i]) * x[i];
    return sum;
}

static inline float dot_q8_q8(const BlockQ8 *w, const BlockQ8A *x, int n) {
    float sum = 0.0f;
    for (int b = 0; b < n / QK8; b++) {
        int32_t isum = 0;
        for (int i = 0; i < QK8; i++) isum += w[b].q[i] * x[b].q[i];
        sum += fp16_to_f32(w[b].d) * x[b].d * (float)isum;
    }
    return sum;
}

// Sub-block j of super-block b pairs with activation block 8b+j:
//   sum_i w_i x_i = d*sc[j]*dx * sum_i q_i xq_i  -  dmin*mn[j]*dx * sum_i xq_i
static inline float dot_q4_q8(const BlockQ4 *w, const BlockQ8A *x, int n) {
    float sum = 0.0f;
    for (int b = 0; b < n / QK4; b++) {
        float d = fp16_to_f32(w[b].d), dmin = fp16_to_f32(w[b].dmin);
        int v[16];
        q4_unpack_scales(w[b].scales, v);
        for (int j = 0; j < 8; j++) {
            const BlockQ8A *xb = &x[8 * b + j];
            const uint8_t *qs = w[b].qs + 32 * (j / 2);
            int shift = 4 * (j % 2);  // even sub-blocks in the low nibbles, odd ones in the high
            int32_t qx = 0, xsum = 0;
            for (int i = 0; i < 32; i++) {
                qx += ((qs[i] >> shift) & 15) * xb->q[i];
                xsum += xb->q[i];
            }
            float dx = xb->d;
            sum += d * v[j] * dx * (float)qx - dmin * v[8 + j] * dx * (float)xsum;
        }
    }
    return sum;
}

#endif // QUANT_H
