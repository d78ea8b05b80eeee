/* Compiled inner loops of the fixed-point emulator (loaded through ctypes by kernels.py).
 *
 * spike_rows: binary spikes times integer weights, as sums of the weight rows of the active inputs.
 *   Work grows with the number of spikes, not with the size of the matrix, and the weights are read
 *   as int16 in column tiles whose accumulators stay in registers. A row accumulates in int16 only
 *   when (active inputs) x max|w| <= 32767 proves that no partial sum can overflow; otherwise int32.
 * lif_scan: the CUBA update of NeuronArith.step (arith.py), the same float64 operations in the same
 *   order on exact integers, so the results are the numpy path's bit for bit.
 *
 * Both work on a range of rows (or samples) so that Python threads can split the work; they hold no
 * global state and call nothing that needs the GIL.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Column tiles held in registers: NV vectors of 16 (32 with AVX-512) int16 or of 8 int32 accumulators. GCC/Clang vector
 * extensions, so the same code builds for whatever vector width the compiler targets. Weights are int16,
 * or int8 when they fit (half the cache traffic); the rows are padded to ldw, a multiple of TMIN
 * columns, so every tile reads whole vectors, and only the first n columns are stored, times `scale`
 * (a power of two the caller divided the weights by to make them fit int8; exact). */
typedef int16_t v16s __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef int16_t v8s __attribute__((vector_size(16)));
typedef int8_t v16c __attribute__((vector_size(16)));
typedef int8_t v8c __attribute__((vector_size(8)));
typedef float v8f_u __attribute__((vector_size(32), aligned(4)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4)));
#define TMIN 64    /* narrowest tile, in columns; python pads the weights to a multiple of it */
#define PREFETCH 2 /* rows ahead: they are read in no order a hardware prefetcher could follow */

/* Load LANES weights widened to the accumulator type: one instruction with AVX2, generic otherwise. */
#if defined(__AVX2__)
#include <immintrin.h>
static inline v16s LOAD_v16s(const int16_t *p) { return (v16s)_mm256_loadu_si256((const __m256i *)p); }
static inline v8i LOAD_v8s(const int16_t *p) { return (v8i)_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)p)); }
static inline v16s LOAD_v16c(const int8_t *p) { return (v16s)_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p)); }
static inline v8i LOAD_v8c(const int8_t *p) { return (v8i)_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
#else
static inline v16s LOAD_v16s(const int16_t *p) { v16s v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline v8i LOAD_v8s(const int16_t *p) { v8s v; __builtin_memcpy(&v, p, sizeof v); return __builtin_convertvector(v, v8i); }
static inline v16s LOAD_v16c(const int8_t *p) { v16c v; __builtin_memcpy(&v, p, sizeof v); return __builtin_convertvector(v, v16s); }
static inline v8i LOAD_v8c(const int8_t *p) { v8c v; __builtin_memcpy(&v, p, sizeof v); return __builtin_convertvector(v, v8i); }
#endif

/* int16 accumulators: 32 lanes in a 512-bit register with AVX-512BW (half the instructions), else 16 */
#if defined(__AVX512BW__)
typedef int16_t v32s __attribute__((vector_size(64)));
typedef float v32f_u __attribute__((vector_size(128), aligned(4)));
static inline v32s LOAD_v32s(const int16_t *p) { return (v32s)_mm512_loadu_si512((const void *)p); }
static inline v32s LOAD_v32c(const int8_t *p) { return (v32s)_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)p)); }
#define ACC16 v32s
#define OUT16 v32f_u
#define L16 32
#define VIN16_i16 v32s
#define VIN16_i8 v32c
#else
#define ACC16 v16s
#define OUT16 v16f_u
#define L16 16
#define VIN16_i16 v16s
#define VIN16_i8 v16c
#endif
#define BIG (16 * L16) /* widest tile: 16 accumulator registers */

#define CAT(a, b) a##b
#define XCAT(a, b) CAT(a, b)

#define DEFINE_TILE(NAME, WT, NV, VACC, VIN, VOUT, LANES)                                           \
    static void NAME(const int32_t *restrict idx, long m, const WT *restrict w, long ldw, long j0,  \
                     long width, float scale, float *restrict o) {                                  \
        VACC acc[NV];                                                                               \
        for (int q = 0; q < NV; q++) acc[q] = (VACC){0};                                           \
        for (long i = 0; i < m; i++) {                                                              \
            const WT *wk = w + (long)idx[i] * ldw + j0;                                             \
            if (i + PREFETCH < m) {                                                                 \
                const char *p = (const char *)(w + (long)idx[i + PREFETCH] * ldw + j0);            \
                for (int c = 0; c < NV * LANES * (int)sizeof(WT); c += 64) __builtin_prefetch(p + c); \
            }                                                                                       \
            for (int q = 0; q < NV; q++) acc[q] += XCAT(LOAD_, VIN)(wk + q * LANES);                \
        }                                                                                           \
        if (width >= NV * LANES) /* whole vectors: converted and stored as such */                 \
            for (int q = 0; q < NV; q++) ((VOUT *)o)[q] = __builtin_convertvector(acc[q], VOUT) * scale; \
        else                                                                                        \
            for (int q = 0; q < NV; q++)                                                            \
                for (int e = 0; e < LANES && q * LANES + e < width; e++)                            \
                    o[q * LANES + e] = (float)acc[q][e] * scale;                                    \
    }

/* The indices of the nonzero bytes of xr[0..k) into idx; returns how many. */
static long active_inputs(const uint8_t *xr, long k, int32_t *idx) {
    long c = 0, i = 0;
#if defined(__AVX2__)
    /* 32 bytes at a time: a bit mask of the nonzero ones, then one step per spike */
    const __m256i zero = _mm256_setzero_si256();
    for (; i + 32 <= k; i += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(xr + i));
        uint32_t mask = ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, zero));
        while (mask) {
            idx[c++] = (int32_t)(i + __builtin_ctz(mask));
            mask &= mask - 1;
        }
    }
#endif
    for (; i < k; i++) {
        idx[c] = (int32_t)i;
        c += xr[i] != 0;
    }
    return c;
}

/* counts[r] = number of nonzero bytes in x[r, 0..k), for rows r0 <= r < r1 */
void count_rows(const uint8_t *x, long k, int32_t *counts, long r0, long r1) {
    for (long r = r0; r < r1; r++) {
        const uint8_t *xr = x + r * k;
        long c = 0, i = 0;
#if defined(__AVX2__)
        const __m256i zero = _mm256_setzero_si256();
        for (; i + 32 <= k; i += 32) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(xr + i));
            c += __builtin_popcount(~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, zero)));
        }
#endif
        for (; i < k; i++) c += xr[i] != 0;
        counts[r] = (int32_t)c;
    }
}

#define ROW_BLOCK 64 /* rows whose active-input lists are built once and reused for every column tile */

/* out[r, :n] = scale * sum over k with x[r, k] != 0 of w[k, :n], for rows r0 <= r < r1.
 * x: uint8 [rows, k]; w: [k, ldw] (ldw a multiple of TMIN, zero-padded); wmax = max |w|;
 * out: float32 [rows, n]. A row accumulates in int16 only when (active inputs) x wmax <= 32767 proves
 * that no partial sum overflows, else in int32. Rows are taken in blocks and each column tile is done
 * for the whole block, so a tile of w stays in cache. Returns 0, -1 without scratch memory, -2 for a
 * bad ldw. */
#define DEFINE_SPIKE_ROWS(NAME, WT, SUF)                                                              \
    DEFINE_TILE(t16_big_##SUF, WT, 16, ACC16, VIN16_##SUF, OUT16, L16)                                \
    DEFINE_TILE(t16_256_##SUF, WT, 256 / L16, ACC16, VIN16_##SUF, OUT16, L16)                         \
    DEFINE_TILE(t16_64_##SUF, WT, TMIN / L16, ACC16, VIN16_##SUF, OUT16, L16)                         \
    DEFINE_TILE(t32_128_##SUF, WT, 16, v8i, VIN8_##SUF, v8f_u, 8)                                     \
    DEFINE_TILE(t32_64_##SUF, WT, 8, v8i, VIN8_##SUF, v8f_u, 8)                                       \
    int NAME(const uint8_t *x, long k, const WT *w, long n, long ldw, long wmax, float scale,         \
             float *out, long r0, long r1) {                                                          \
        if (ldw % TMIN || ldw < n) return -2;                                                         \
        int32_t *idx = malloc(sizeof(int32_t) * (size_t)(ROW_BLOCK * (k > 0 ? k : 1)));               \
        if (!idx) return -1;                                                                          \
        long fit16 = wmax > 0 ? 32767 / wmax : k;                                                     \
        long m[ROW_BLOCK];                                                                            \
        for (long rb = r0; rb < r1; rb += ROW_BLOCK) {                                                \
            long nb = r1 - rb < ROW_BLOCK ? r1 - rb : ROW_BLOCK;                                      \
            for (long q = 0; q < nb; q++) m[q] = active_inputs(x + (rb + q) * k, k, idx + q * k);     \
            for (long j0 = 0; j0 < n;) {                                                              \
                long step = ldw - j0 >= BIG ? BIG : ldw - j0 >= 256 ? 256 : TMIN;                     \
                long width = n - j0 < step ? n - j0 : step;                                           \
                for (long q = 0; q < nb; q++) {                                                       \
                    const int32_t *iq = idx + q * k;                                                  \
                    float *o = out + (rb + q) * n + j0;                                               \
                    if (m[q] <= fit16) {                                                              \
                        if (step == BIG) t16_big_##SUF(iq, m[q], w, ldw, j0, width, scale, o);        \
                        else if (step == 256) t16_256_##SUF(iq, m[q], w, ldw, j0, width, scale, o);   \
                        else t16_64_##SUF(iq, m[q], w, ldw, j0, width, scale, o);                     \
                    } else                                                                            \
                        for (long c = 0; c < step && c < width; c += 128) {                           \
                            if (step - c >= 128) t32_128_##SUF(iq, m[q], w, ldw, j0 + c, width - c, scale, o + c); \
                            else t32_64_##SUF(iq, m[q], w, ldw, j0 + c, width - c, scale, o + c);     \
                        }                                                                             \
                }                                                                                     \
                j0 += step;                                                                           \
            }                                                                                         \
        }                                                                                             \
        free(idx);                                                                                    \
        return 0;                                                                                     \
    }

#define VIN8_i16 v8s
#define VIN8_i8 v8c
DEFINE_SPIKE_ROWS(spike_rows_i16, int16_t, i16)
DEFINE_SPIKE_ROWS(spike_rows_i8, int8_t, i8)

static inline double wrap_bits(double x, double half, double full, double inv_full) {
    return x - full * floor((x + half) * inv_full);
}

/* (x * f) >> decay_bits toward zero, or to nearest with ties away from zero */
static inline double decay(double x, double f_scaled, int nearest) {
    double y = x * f_scaled;
    return nearest ? trunc(y + (y < 0 ? -0.5 : 0.5)) : trunc(y);
}

enum { REG_WRAP = 1, CHECK_U = 2, CHECK_V = 4, BIAS = 8, NEAREST = 16, IN_F32 = 32, IN_F64 = 64 };

typedef struct {
    const double *fu_s, *fv_s, *vth, *bias;
    double big_m, half, full, inv_full;
} lif_consts;

/* One step of one sample's neurons: NeuronArith.step. F is a compile-time constant at each call (see
 * lif_row_any), so the steps whose flag is off, which the bounds prove to be identities, cost nothing,
 * and the loop has no branches left and vectorises. Every operation is exact on integers below 2**53. */
static inline __attribute__((always_inline)) int32_t lif_row(
    const int F, long n, const lif_consts *c, const void *restrict a_row, double act, double *restrict ub,
    double *restrict vb, double *restrict spk_d, int64_t *wraps, int64_t *sats) {
    const double big_m = c->big_m, two_m = 2 * c->big_m, lim = c->big_m - 1;
    const double *restrict fu_s = c->fu_s, *restrict fv_s = c->fv_s, *restrict vth = c->vth;
    const double *restrict bias = c->bias;
    int64_t nw = 0, ns = 0;
    int32_t cnt = 0;
    for (long j = 0; j < n; j++) {
        double ain = (F & IN_F32) ? (double)((const float *)a_row)[j] * act
                     : (F & IN_F64) ? ((const double *)a_row)[j] * act : 0.0;
        double x = decay(ub[j], fu_s[j], F & NEAREST) + ain;
        if (F & REG_WRAP) x = wrap_bits(x, c->half, c->full, c->inv_full);
        if (F & CHECK_U) { /* a single wrap, not modulo, as Lava does */
            int hi = x > big_m, lo = x <= -big_m;
            nw += hi + lo;
            x = hi ? x - two_m : (lo ? x + two_m : x);
        }
        double y = decay(vb[j], fv_s[j], F & NEAREST) + x;
        if (F & BIAS) y += bias[j];
        if (F & REG_WRAP) y = wrap_bits(y, c->half, c->full, c->inv_full);
        if (F & CHECK_V) {
            int hi = y > lim, lo = y < -lim;
            ns += hi + lo;
            y = hi ? lim : (lo ? -lim : y);
        }
        int spk = y > vth[j];
        ub[j] = x;
        vb[j] = spk ? 0.0 : y;
        spk_d[j] = spk;
        cnt += spk;
    }
    *wraps += nw;
    *sats += ns;
    return cnt;
}

#define ROW(F) case F: return lif_row(F, n, c, a_row, act, ub, vb, spk_d, wraps, sats);
static int32_t lif_row_any(int flags, long n, const lif_consts *c, const void *a_row, double act, double *ub,
                           double *vb, double *spk_d, int64_t *wraps, int64_t *sats) {
    switch (flags & 127) {
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7) ROW(8) ROW(9) ROW(10) ROW(11)
        ROW(12) ROW(13) ROW(14) ROW(15) ROW(16) ROW(17) ROW(18) ROW(19) ROW(20) ROW(21) ROW(22) ROW(23)
        ROW(24) ROW(25) ROW(26) ROW(27) ROW(28) ROW(29) ROW(30) ROW(31) ROW(32) ROW(33) ROW(34) ROW(35)
        ROW(36) ROW(37) ROW(38) ROW(39) ROW(40) ROW(41) ROW(42) ROW(43) ROW(44) ROW(45) ROW(46) ROW(47)
        ROW(48) ROW(49) ROW(50) ROW(51) ROW(52) ROW(53) ROW(54) ROW(55) ROW(56) ROW(57) ROW(58) ROW(59)
        ROW(60) ROW(61) ROW(62) ROW(63) ROW(64) ROW(65) ROW(66) ROW(67) ROW(68) ROW(69) ROW(70) ROW(71)
        ROW(72) ROW(73) ROW(74) ROW(75) ROW(76) ROW(77) ROW(78) ROW(79) ROW(80) ROW(81) ROW(82) ROW(83)
        ROW(84) ROW(85) ROW(86) ROW(87) ROW(88) ROW(89) ROW(90) ROW(91) ROW(92) ROW(93) ROW(94) ROW(95)
    }
    return -1;
}

/* Advances samples b0 <= b < b1 through tc steps. a: [tc, batch, n] float32 or float64 (a_f64 says
 * which) or NULL for no input; u, v: [batch, n] float64 state, updated in place; fu_s, fv_s, vth, bias:
 * [n] float64. s: uint8 [tc, batch, n]; counts: int32 [tc, batch]; v_out, u_out: float64 [tc, batch, n]
 * or NULL. flags: REG_WRAP | CHECK_U | CHECK_V | BIAS | NEAREST. Steps with
 * (t0 + t + 1) % reset_interval == reset_offset zero u and v first. events[0] += u wraps,
 * events[1] += v saturations; events[2] = -1 when scratch memory cannot be had. */
void lif_scan(long tc, long batch, long n, long b0, long b1, const void *a, int a_f64, double act,
              double *u, double *v, const double *fu_s, const double *fv_s, const double *vth,
              const double *bias, double big_m, int reg_bits, int flags, long reset_interval,
              long reset_offset, long t0, uint8_t *s, int32_t *counts, double *v_out, double *u_out,
              int64_t *events) {
    lif_consts c = {fu_s, fv_s, vth, bias, big_m, ldexp(1.0, reg_bits - 1), ldexp(1.0, reg_bits),
                    ldexp(1.0, -reg_bits)};
    /* scratch: the spikes as doubles (a uint8 store in the neuron loop would keep GCC from vectorising it) */
    double *spk_d = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!spk_d) { events[2] = -1; return; }
    if (a) flags |= a_f64 ? IN_F64 : IN_F32;
    int64_t wraps = 0, sats = 0;
    for (long b = b0; b < b1; b++) {
        double *ub = u + b * n, *vb = v + b * n;
        for (long t = 0; t < tc; t++) {
            long row = (t * batch + b) * n;
            if (reset_interval && (t0 + t + 1) % reset_interval == reset_offset)
                for (long j = 0; j < n; j++) ub[j] = vb[j] = 0.0;
            const void *a_row = !a ? NULL : a_f64 ? (const void *)((const double *)a + row)
                                                  : (const void *)((const float *)a + row);
            counts[t * batch + b] = lif_row_any(flags, n, &c, a_row, act, ub, vb, spk_d, &wraps, &sats);
            uint8_t *sr = s + row;
            for (long j = 0; j < n; j++) sr[j] = (uint8_t)spk_d[j];
            if (v_out) for (long j = 0; j < n; j++) v_out[row + j] = vb[j];
            if (u_out) for (long j = 0; j < n; j++) u_out[row + j] = ub[j];
        }
    }
    free(spk_d);
    events[0] += wraps;
    events[1] += sats;
}
