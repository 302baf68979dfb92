// bench.c: the yardsticks `make bench` measures our speed against, on this machine, in the same run.
//
//   tests/bench membw THREADS           best read bandwidth in GB/s: all threads, 1 to 8 streams each
//   tests/bench filebw FILE THREADS     the same reading FILE through mmap (the page cache)
//   tests/bench flops THREADS           best fp32 FMA throughput in GFLOP/s, from registers (AVX-512, AVX2 or plain)
//   tests/bench weight-bytes MODEL      bytes of weights the text decoder reads per generated token
//   tests/bench image W H FILE          writes a W x H binary PPM test image (for the vision encoder)
//
// Build: cc -O2 -fopenmp tests/bench.c -o tests/bench -lm (the Makefile does it).

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../model.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Asks for the line at p into L2, or non-temporally (nta: into L1 only), as run's kernels do.
static inline void prefetch_line(const uint8_t *p, int nta) {
    if (nta) __builtin_prefetch(p, 0, 0);
    else __builtin_prefetch(p, 0, 2);
}

// Sums n bytes from `streams` places of a slice advanced together (64 bytes each step), asking for the
// line `ahead` bytes on (0: no software prefetch).
#if defined(__x86_64__)
typedef long long v8i __attribute__((vector_size(64)));  // 64 bytes: one AVX-512 load
__attribute__((target("avx512f"))) static long long sum_streams_avx512(const uint8_t *p, size_t per, int streams,
                                                                       size_t ahead, int nta) {
    v8i acc[16] = {{0}};
    for (size_t i = 0; i < per; i += 64)
        for (int k = 0; k < streams; k++) {
            if (ahead) prefetch_line(p + k * per + i + ahead, nta);
            acc[k] += *(const v8i *)(p + k * per + i);
        }
    long long s = 0;
    for (int k = 0; k < streams; k++)
        for (int j = 0; j < 8; j++) s += acc[k][j];
    return s;
}
#endif
static long long sum_streams(const uint8_t *p, size_t per, int streams, size_t ahead, int nta) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) return sum_streams_avx512(p, per, streams, ahead, nta);
#endif
    uint64_t acc[16] = {0};
    for (size_t i = 0; i < per; i += 8)
        for (int k = 0; k < streams; k++) {
            if (ahead && i % 64 == 0) prefetch_line(p + k * per + i + ahead, nta);
            acc[k] += *(const uint64_t *)(p + k * per + i);
        }
    long long s = 0;
    for (int k = 0; k < streams; k++) s += (long long)acc[k];
    return s;
}

// The best of `passes` passes of all threads summing their slices of buf, each `streams` places at once.
// Every pass is tried with each of these software prefetches: none, 8 KiB ahead into L2, and 3 KiB ahead
// non-temporally (as run's one-token kernels do).
static const struct { size_t ahead; int nta; } prefetches[] = {{0, 0}, {8192, 0}, {3072, 1}};
static double best_read(const uint8_t *buf, size_t bytes, int streams, size_t ahead, int nta, int passes) {
    long long total = 0;
    double best = 0;
    for (int pass = 0; pass < passes; pass++) {
        double t0 = now_seconds();
        #pragma omp parallel reduction(+ : total)
        {
            int nt = 1, id = 0;
#ifdef _OPENMP
            nt = omp_get_num_threads(), id = omp_get_thread_num();
#endif
            size_t per = bytes / nt / streams / 64 * 64;
            size_t n = per - (per > ahead ? ahead : per);
            total += sum_streams(buf + (size_t)id * per * streams, n, streams, ahead, nta);
        }
        double gbs = (double)bytes / (now_seconds() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    if (total == 42) printf(" ");  // keeps the sums alive
    return best;
}

// The best of best_read over 1, 2, 4 .. max_streams streams and every kind of prefetch.
static double best_variant(const uint8_t *buf, size_t bytes, int max_streams, int passes) {
    double best = 0;
    for (int streams = 1; streams <= max_streams; streams *= 2)
        for (size_t i = 0; i < sizeof prefetches / sizeof *prefetches; i++) {
            double gbs = best_read(buf, bytes, streams, prefetches[i].ahead, prefetches[i].nta, passes);
            best = gbs > best ? gbs : best;
        }
    return best;
}

// Each thread sums its slice of a 2 GiB buffer (far larger than the caches), reading 1, 2, 4 or 8 places
// of it at once (hardware prefetchers may keep several streams per core busier than one), with and without
// software prefetch (on a Sapphire Rapids one prefetched stream reads fastest; on an AMD Zen 5 two to eight
// streams with none, or four non-temporally prefetched ones), in 4 KiB pages and, where the kernel gives
// them (Linux's MADV_HUGEPAGE), 2 MiB pages (fewer TLB misses: 2-4% faster on the Sapphire Rapids). The best
// pass of the best variant is the yardstick.
static double measure_bandwidth(void) {
    size_t bytes = (size_t)2 << 30;
    double best = 0;
    for (int huge = 0; huge < 2; huge++) {
        uint8_t *buf = aligned_alloc(2 << 20, bytes);
        if (!buf) return 0;
#ifdef MADV_HUGEPAGE
        if (huge) madvise(buf, bytes, MADV_HUGEPAGE);
#endif
        #pragma omp parallel for
        for (size_t i = 0; i < bytes; i += 64) memset(buf + i, 1, 64);  // touch every page near its thread
        double gbs = best_variant(buf, bytes, 8, 4);
        best = gbs > best ? gbs : best;
        free(buf);
    }
    return best;
}

// Reading a model file's pages where run reads them, through a shared mmap of the page cache with 2 MiB pages
// asked for, as run does (the file should be cached: bench.sh reads it first): all of it, since decoding reads
// nearly all of it for every token, the best of 1, 2 and 4 streams per thread with and without software
// prefetch. On some machines a working set that big reads slower than the yardstick's 2 GiB: on an Intel Xeon
// virtual machine, two plain streams of fresh memory read 16.5-17.2 GB/s on 1 thread over 2 GiB, 12.6-13.4
// over 8 GiB and 10.8-11.3 over 16 GiB (in 1 GiB pages the same decline, so not the guest's TLB).
static int measure_file_bandwidth(const char *path) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(path); return 1; }
    size_t bytes = (size_t)st.st_size;
    const uint8_t *map = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) { perror(path); return 1; }
#ifdef MADV_HUGEPAGE
    madvise((void *)map, bytes, MADV_HUGEPAGE);
#endif
    printf("%.1f\n", best_variant(map, bytes, 4, 2));
    munmap((void *)map, bytes);
    return 0;
}

// 12 independent FMA chains per thread, all in registers: the core's FMA peak for the widest
// vectors the CPU has. Explicit FMA intrinsics: with -std=c11 the compiler does not fuse a*b+c.
#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static double fma_avx512(long iters) {
    __m512 acc[12], m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
    for (int k = 0; k < 12; k++) acc[k] = _mm512_set1_ps((float)k);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int k = 0; k < 12; k++) acc[k] = _mm512_fmadd_ps(acc[k], m, a);  // unrolled: acc stays in registers
    float s = 0;
    for (int k = 0; k < 12; k++) s += _mm512_reduce_add_ps(acc[k]);
    return s;
}
__attribute__((target("avx2,fma"))) static double fma_avx2(long iters) {
    __m256 acc[12], m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    for (int k = 0; k < 12; k++) acc[k] = _mm256_set1_ps((float)k);
    for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int k = 0; k < 12; k++) acc[k] = _mm256_fmadd_ps(acc[k], m, a);
    float s = 0, out[8];
    for (int k = 0; k < 12; k++) {
        _mm256_storeu_ps(out, acc[k]);
        s += out[0];
    }
    return s;
}
#endif

static double measure_flops(void) {
    long iters = 50 * 1000 * 1000;
    int lanes = 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    lanes = __builtin_cpu_supports("avx512f") ? 16 : __builtin_cpu_supports("avx2") ? 8 : 0;
#endif
    double best = 0, sink = 0;
    for (int pass = 0; pass < 3; pass++) {
        int threads = 1;
        double t0 = now_seconds();
        #pragma omp parallel reduction(+ : sink)
        {
#ifdef _OPENMP
            #pragma omp single
            threads = omp_get_num_threads();
#endif
#if defined(__x86_64__)
            if (lanes == 16) sink += fma_avx512(iters);
            else if (lanes == 8) sink += fma_avx2(iters);
#endif
        }
        double gflops = 12.0 * lanes * 2 * iters * threads / (now_seconds() - t0) / 1e9;
        best = gflops > best ? gflops : best;
    }
    if (sink == 42) printf(" ");
    return best;
}

// Per generated token the decoder reads every text matrix once, but only one row of tok_embeddings.
static int weight_bytes(const char *path) {
    FILE *f = fopen(path, "rb");
    FileHeader h;
    if (!f || fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, MODEL_MAGIC, 8) != 0) {
        fprintf(stderr, "bench: %s: not a model file\n", path);
        return 1;
    }
    uint64_t total = 0;
    fseek(f, (long)h.directory_offset, SEEK_SET);
    for (uint32_t i = 0; i < h.n_tensors; i++) {
        TensorInfo t;
        if (fread(&t, sizeof t, 1, f) != 1) { fprintf(stderr, "bench: %s: truncated\n", path); return 1; }
        if (strncmp(t.name, "vision_", 7) && strncmp(t.name, "patch_merger", 12) && strncmp(t.name, "pre_mm", 6))
            total += strcmp(t.name, "tok_embeddings.weight") ? t.bytes : t.bytes / t.shape[0];
    }
    fclose(f);
    printf("%llu\n", (unsigned long long)total);
    return 0;
}

static int write_image(int w, int h, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return 1; }
    fprintf(f, "P6\n%d %d\n255\n", w, h);
    uint32_t s = 12345;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            s = s * 1664525u + 1013904223u;
            unsigned char px[3] = {(unsigned char)(x * 255 / w), (unsigned char)(y * 255 / h), (unsigned char)(s >> 24)};
            fwrite(px, 1, 3, f);
        }
    return fclose(f) != 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "membw") == 0) {
#ifdef _OPENMP
        omp_set_num_threads(atoi(argv[2]));
#endif
        printf("%.1f\n", measure_bandwidth());
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "flops") == 0) {
#ifdef _OPENMP
        omp_set_num_threads(atoi(argv[2]));
#endif
        printf("%.1f\n", measure_flops());
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "filebw") == 0) {
#ifdef _OPENMP
        omp_set_num_threads(atoi(argv[3]));
#endif
        return measure_file_bandwidth(argv[2]);
    }
    if (argc == 3 && strcmp(argv[1], "weight-bytes") == 0) return weight_bytes(argv[2]);
    if (argc == 5 && strcmp(argv[1], "image") == 0) return write_image(atoi(argv[2]), atoi(argv[3]), argv[4]);
    fprintf(stderr, "usage: bench membw THREADS | filebw FILE THREADS | flops THREADS | weight-bytes MODEL | "
                    "image W H FILE\n");
    return 2;
}
