/* Compiled inner loops of the fixed-point emulator (loaded through ctypes by kernels.py).
 *
 * spike_rows: binary spikes times integer weights, as sums of the weight rows of the active inputs.
 *   Work grows with the number of spikes, not with the size of the matrix, and the weights (int8 or
 *   int16) are added in column tiles whose accumulators stay in registers. A row accumulates in int16 only
 *   when (active inputs) x max|w| <= 32767 proves that no partial sum can overflow; otherwise int32.
 *   spike_rows_p8 does the same for weights in [-64, 63] (Lava's 8-bit weights halved), two spikes per byte.
 * lif_scan: the CUBA update of NeuronArith.step (arith.py) on int32 state, for datapaths whose registers
 *   are 32 bits wide: unsigned 32-bit arithmetic wraps exactly as those registers do, and the decay
 *   products are split so that no partial product needs more than 32 bits. Bit for bit the numpy path.
 *
 * Both work on a range of rows (or samples) so that Python threads can split the work; they call
 * nothing that needs the GIL, and their only state is each thread's index scratch (index_scratch).
 */
#include <stdint.h>
#include <stdlib.h>

/* Column tiles held in registers: NV vectors of 16 (32 with AVX-512) int16 or of 8 int32 accumulators. GCC/Clang vector
 * extensions, so the same code builds for whatever vector width the compiler targets. Weights are int16,
 * or int8 when they fit (half the cache traffic). They are stored tile by tile (kernels.py
 * spike_weights): the columns are padded to ldw, a multiple of TMIN, and cut into tiles of TILE columns
 * (the last one TMIN when ldw is not a multiple of TILE); the tile starting at column j0 holds its k rows
 * of tw columns contiguously at element j0 * k. One tile's rows then fill a compact block of the cache
 * instead of strided pieces of the rows, which measured 10-15% faster. Only the first n columns are
 * stored, times `scale` (a power of two the caller divided the weights by to make them fit int8; exact). */
typedef int16_t v16s __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef int16_t v8s __attribute__((vector_size(16)));
typedef int8_t v16c __attribute__((vector_size(16)));
typedef int8_t v8c __attribute__((vector_size(8)));
typedef float v8f_u __attribute__((vector_size(32), aligned(4)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4)));
#define TMIN 64    /* narrowest tile, in columns; python pads the weights to a multiple of it */
#define TILE 128   /* the other tile width; kernels.py lays the weights out in these tiles */

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

#define CAT(a, b) a##b
#define XCAT(a, b) CAT(a, b)

#define DEFINE_TILE(NAME, WT, NV, VACC, VIN, VOUT, LANES)                                           \
    static void NAME(const int32_t *restrict idx, long m, const WT *restrict slab, long width,      \
                     float scale, float *restrict o) {                                              \
        VACC acc[NV];                                                                               \
        for (int q = 0; q < NV; q++) acc[q] = (VACC){0};                                           \
        long i = 0; /* two rows per step, added together first: half the dependent additions */     \
        for (; i + 2 <= m; i += 2) {                                                                \
            const WT *w0 = slab + (long)idx[i] * (NV * LANES), *w1 = slab + (long)idx[i + 1] * (NV * LANES); \
            for (int q = 0; q < NV; q++) acc[q] += XCAT(LOAD_, VIN)(w0 + q * LANES) + XCAT(LOAD_, VIN)(w1 + q * LANES); \
        }                                                                                           \
        if (i < m) { const WT *wk = slab + (long)idx[i] * (NV * LANES);                             \
            for (int q = 0; q < NV; q++) acc[q] += XCAT(LOAD_, VIN)(wk + q * LANES); }              \
        if (width >= NV * LANES) /* whole vectors: converted and stored as such */                 \
            for (int q = 0; q < NV; q++) ((VOUT *)o)[q] = __builtin_convertvector(acc[q], VOUT) * scale; \
        else /* the row's last tile: whole vectors converted, then only the columns that exist stored */ \
            for (int q = 0; q < NV && q * LANES < width; q++) {                                     \
                VOUT f = __builtin_convertvector(acc[q], VOUT) * scale;                              \
                long e = width - q * LANES < LANES ? width - q * LANES : LANES;                      \
                __builtin_memcpy(o + q * LANES, &f, (size_t)e * sizeof(float));                      \
            }                                                                                       \
    }

/* The indices of the nonzero bytes of xr[0..k) into idx[0..k); returns how many. */
static long active_inputs(const uint8_t *xr, long k, int32_t *idx) {
    long c = 0, i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    /* no branch per spike: the loop below mispredicts about once per 32 bytes and was 3-4x slower (270
     * vs 71 ns a row of 784 inputs at 15 % density). Each store of 16 ends within idx[0..k), since c <= i. */
    __m512i pos = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i sixteen = _mm512_set1_epi32(16);
    for (; i + 16 <= k; i += 16) {
        __mmask16 m = _mm_test_epi8_mask(_mm_loadu_si128((const __m128i *)(xr + i)), _mm_set1_epi8(-1));
        _mm512_storeu_si512((void *)(idx + c), _mm512_maskz_compress_epi32(m, pos));
        c += __builtin_popcount(m);
        pos = _mm512_add_epi32(pos, sixteen);
    }
#elif defined(__AVX2__)
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
#define INDEX_BYTES (1L << 20) /* at most this much index scratch per thread: fewer rows per block for wide inputs */

/* This thread's index scratch of at least n entries, kept for its next call: a fresh block each call
 * cost a page fault per page, every chunk. NULL without memory. */
static int32_t *index_scratch(size_t n) {
    static __thread int32_t *buf;
    static __thread size_t cap;
    if (n > cap) {
        free(buf);
        buf = malloc(sizeof(int32_t) * n);
        cap = buf ? n : 0;
    }
    return buf;
}

/* out[r, :n] = scale * sum over k with x[r, k] != 0 of w[k, :n], for rows r0 <= r < r1.
 * x: uint8 [rows, k]; w: k x ldw weights in tiles (see above; ldw a multiple of TMIN, zero-padded); wmax = max |w|;
 * out: float32 [rows, n]. A row accumulates in int16 only when (active inputs) x wmax <= 32767 proves
 * that no partial sum overflows, else in int32. Rows are taken in blocks and each column tile is done
 * for the whole block, so a tile of w stays in cache. Returns 0, -1 without scratch memory, -2 for a
 * bad ldw. */
#define DEFINE_SPIKE_ROWS(NAME, WT, SUF)                                                              \
    DEFINE_TILE(t16_tile_##SUF, WT, TILE / L16, ACC16, VIN16_##SUF, OUT16, L16)                       \
    DEFINE_TILE(t16_64_##SUF, WT, TMIN / L16, ACC16, VIN16_##SUF, OUT16, L16)                         \
    DEFINE_TILE(t32_tile_##SUF, WT, TILE / 8, v8i, VIN8_##SUF, v8f_u, 8)                              \
    DEFINE_TILE(t32_64_##SUF, WT, TMIN / 8, v8i, VIN8_##SUF, v8f_u, 8)                                \
    int NAME(const uint8_t *x, long k, const WT *w, long n, long ldw, long wmax, float scale,         \
             float *out, long r0, long r1) {                                                          \
        if (ldw % TMIN || ldw < n) return -2;                                                         \
        long kk = k > 0 ? k : 1, block = INDEX_BYTES / (long)sizeof(int32_t) / kk;                    \
        block = block < 1 ? 1 : block > ROW_BLOCK ? ROW_BLOCK : block;                                \
        int32_t *idx = index_scratch((size_t)(block * kk));                                           \
        if (!idx) return -1;                                                                          \
        long fit16 = wmax > 0 ? 32767 / wmax : k;                                                     \
        long m[ROW_BLOCK];                                                                            \
        for (long rb = r0; rb < r1; rb += block) {                                                    \
            long nb = r1 - rb < block ? r1 - rb : block;                                              \
            for (long q = 0; q < nb; q++) m[q] = active_inputs(x + (rb + q) * k, k, idx + q * k);     \
            for (long j0 = 0; j0 < n;) {                                                              \
                long tw = ldw - j0 >= TILE ? TILE : TMIN, width = n - j0 < tw ? n - j0 : tw;          \
                const WT *slab = w + j0 * k;                                                          \
                for (long q = 0; q < nb; q++) {                                                       \
                    const int32_t *iq = idx + q * k;                                                  \
                    float *o = out + (rb + q) * n + j0;                                               \
                    if (m[q] <= fit16) {                                                              \
                        if (tw == TILE) t16_tile_##SUF(iq, m[q], slab, width, scale, o);              \
                        else t16_64_##SUF(iq, m[q], slab, width, scale, o);                           \
                    } else if (tw == TILE)                                                            \
                        t32_tile_##SUF(iq, m[q], slab, width, scale, o);                              \
                    else                                                                              \
                        t32_64_##SUF(iq, m[q], slab, width, scale, o);                                \
                }                                                                                     \
                j0 += tw;                                                                             \
            }                                                                                         \
        }                                                                                             \
        return 0;                                                                                     \
    }

#define VIN8_i16 v8s
#define VIN8_i8 v8c
DEFINE_SPIKE_ROWS(spike_rows_i16, int16_t, i16)
DEFINE_SPIKE_ROWS(spike_rows_i8, int8_t, i8)

/* spike_rows_p8: the same sums for weights in [-64, 63], which Lava's 8-bit mixed-sign weights are once
 * halved (kernels.py spike_weights). Each weight is stored as w + 64 in [0, 127], so the weights of two
 * active inputs add in one byte without overflow (at most 254), and a byte lane takes 64 columns where an
 * int16 lane takes 32. The pair sums are then added as 16-bit words without widening any byte: a word
 * holds two columns, lo + 256 * hi, and the high bytes are also summed apart, (word >> 8); the low
 * columns' sum is the word sum minus 256 times that, exact as long as no sum of either column reaches
 * 2**16 (P8_MAX_PAIRS + 1 pairs of at most 254). The bias, 128 per pair, comes off at the end. Half the
 * vector operations of the widening kernel per spike: 18-33 % faster on the engine benchmark's three layers
 * (C benchmark, one thread). Tiles as above (TILE columns, the last TMIN), except that within each 64-byte
 * chunk byte 2p holds column p and byte 2p + 1 column 32 + p. */
typedef uint8_t v64u8 __attribute__((vector_size(64), aligned(1)));
typedef uint16_t v32u16 __attribute__((vector_size(64)));
#define P8_MAX_PAIRS 257 /* and the tail's pair: 258 * 254 < 2**16 */

/* Pairs [p0, p1) of idx and then `tail` paired with a zero weight (64): an odd count's last input, or
 * p8_zero_row (zero weights), so that no branch depends on the parity of each row's count, which is
 * random. Per 64-column chunk z, the sums of columns 64z..64z+31 (lo) and 64z+32..64z+63 (hi), each
 * 128 * (p1 - p0 + 1) too high. */
static const uint8_t p8_zero_row[TILE] __attribute__((aligned(64))) = {[0 ... TILE - 1] = 64};

static inline __attribute__((always_inline)) void p8_sums(const int NZ, const int32_t *restrict idx, long p0,
                                                          long p1, const uint8_t *tail,
                                                          const uint8_t *restrict slab, v32u16 *lo, v32u16 *hi) {
    v32u16 raw[2];
    for (int z = 0; z < NZ; z++) { /* the tail first: the pairs add to it */
        v64u8 x;
        __builtin_memcpy(&x, tail + 64 * z, sizeof x);
        raw[z] = (v32u16)(x + (uint8_t)64);
        hi[z] = raw[z] >> 8;
    }
    for (long p = p0; p < p1; p++) {
        const uint8_t *a = slab + (long)idx[2 * p] * (NZ * 64), *b = slab + (long)idx[2 * p + 1] * (NZ * 64);
        for (int z = 0; z < NZ; z++) {
            v64u8 x, y;
            __builtin_memcpy(&x, a + 64 * z, sizeof x);
            __builtin_memcpy(&y, b + 64 * z, sizeof y);
            v32u16 s = (v32u16)(x + y);
            raw[z] += s;
            hi[z] += s >> 8;
        }
    }
    for (int z = 0; z < NZ; z++) lo[z] = raw[z] - (v32u16)(hi[z] << 8);
}

typedef uint16_t v16u16 __attribute__((vector_size(32)));
typedef int32_t v16i32 __attribute__((vector_size(64)));

/* o[0..width) (width <= 32) = scale * (the 32 sums in x - bias). In 16-lane halves: written with 32-lane
 * (128-byte) vectors, GCC spilled them to the stack, which cost most of the kernel's gain. */
static inline __attribute__((always_inline)) void p8_store(const v32u16 *x, int32_t bias, float scale, float *o,
                                                           long width) {
    v16u16 h[2];
    __builtin_memcpy(h, x, sizeof *x);
    for (int k = 0; k < 2 && 16 * k < width; k++) {
        v16f_u f = __builtin_convertvector(__builtin_convertvector(h[k], v16i32) - bias, v16f_u) * scale;
        if (width >= 16 * (k + 1))
            __builtin_memcpy(o + 16 * k, &f, sizeof f);
        else
            __builtin_memcpy(o + 16 * k, &f, (size_t)(width - 16 * k) * sizeof(float));
    }
}

static inline __attribute__((always_inline)) void p8_tile(const int NZ, const int32_t *restrict idx, long m,
                                                          const uint8_t *restrict slab, long width, float scale,
                                                          float *restrict o) {
    v32u16 lo[2], hi[2];
    long pairs = m / 2;
    const uint8_t *tail = m & 1 ? slab + (long)idx[m - 1] * (NZ * 64) : p8_zero_row;
    if (pairs <= P8_MAX_PAIRS) {
        p8_sums(NZ, idx, 0, pairs, tail, slab, lo, hi);
        const int32_t bias = 128 * (int32_t)(pairs + 1);
        for (int z = 0; z < NZ && 64 * z < width; z++) {
            p8_store(&lo[z], bias, scale, o + 64 * z, width - 64 * z < 32 ? width - 64 * z : 32);
            if (width > 64 * z + 32)
                p8_store(&hi[z], bias, scale, o + 64 * z + 32, width - 64 * z - 32 < 32 ? width - 64 * z - 32 : 32);
        }
        return;
    }
    /* more than P8_MAX_PAIRS pairs (a row denser than this kernel's 16-bit sums allow): in parts, in int32 */
    int32_t tot[TILE] = {0};
    for (long p0 = 0; p0 < pairs; p0 += P8_MAX_PAIRS) {
        long p1 = pairs - p0 < P8_MAX_PAIRS ? pairs : p0 + P8_MAX_PAIRS;
        p8_sums(NZ, idx, p0, p1, p1 == pairs ? tail : p8_zero_row, slab, lo, hi);
        const int32_t bias = 128 * (int32_t)(p1 - p0 + 1);
        for (int z = 0; z < NZ; z++)
            for (int c = 0; c < 32; c++) {
                tot[64 * z + c] += (int32_t)lo[z][c] - bias;
                tot[64 * z + 32 + c] += (int32_t)hi[z][c] - bias;
            }
    }
    for (long c = 0; c < width; c++) o[c] = (float)tot[c] * scale;
}

/* out[r, :n] = scale * sum over k with x[r, k] != 0 of w[k, :n] for rows r0 <= r < r1; w: k x ldw biased
 * uint8 weights in the layout above. Returns 0, -1 without scratch memory, -2 for a bad ldw. */
int spike_rows_p8(const uint8_t *x, long k, const uint8_t *w, long n, long ldw, float scale, float *out,
                  long r0, long r1) {
    if (ldw % TMIN || ldw < n) return -2;
    long kk = k > 0 ? k : 1, block = INDEX_BYTES / (long)sizeof(int32_t) / kk;
    block = block < 1 ? 1 : block > ROW_BLOCK ? ROW_BLOCK : block;
    int32_t *idx = index_scratch((size_t)(block * kk));
    if (!idx) return -1;
    long m[ROW_BLOCK];
    for (long rb = r0; rb < r1; rb += block) {
        long nb = r1 - rb < block ? r1 - rb : block;
        for (long q = 0; q < nb; q++) m[q] = active_inputs(x + (rb + q) * k, k, idx + q * k);
        for (long j0 = 0; j0 < n;) {
            long tw = ldw - j0 >= TILE ? TILE : TMIN, width = n - j0 < tw ? n - j0 : tw;
            const uint8_t *slab = w + j0 * k;
            for (long q = 0; q < nb; q++) {
                if (tw == TILE) p8_tile(2, idx + q * k, m[q], slab, width, scale, out + (rb + q) * n + j0);
                else p8_tile(1, idx + q * k, m[q], slab, width, scale, out + (rb + q) * n + j0);
            }
            j0 += tw;
        }
    }
    return 0;
}

enum { K_CHECK_U = 1, K_CHECK_V = 2, K_BIAS = 4, K_NEAREST = 8, K_IN_F32 = 16, K_IN_F64 = 32 };

typedef struct {
    const uint32_t *fu, *fv;
    const int32_t *vth, *bias;
    int32_t big_m;
    int dbits, act_shift;
} lif32_consts;

/* (x * f) >> dbits toward zero (or to nearest, ties away from zero) on |x| <= 2**31 and f <= 2**dbits,
 * dbits <= 16: |x| split at dbits bits so that both partial products fit 32 bits; exact. */
static inline __attribute__((always_inline)) uint32_t decay32(int32_t x, uint32_t f, int dbits, int nearest) {
    uint32_t ax = x < 0 ? 0u - (uint32_t)x : (uint32_t)x;
    uint32_t r = (ax >> dbits) * f + (((ax & ((1u << dbits) - 1)) * f + (nearest ? 1u << (dbits - 1) : 0u)) >> dbits);
    return x < 0 ? 0u - r : r;
}

/* One step of one sample's neurons. F is a compile-time constant at each call (see lif32_row_any), so
 * the checks the bounds prove impossible cost nothing, and the loop has no branches left and vectorises. */
static inline __attribute__((always_inline)) int32_t lif32_row(
    const int F, long n, const lif32_consts *c, const void *restrict a_row, int32_t *restrict ub,
    int32_t *restrict vb, uint8_t *restrict sr, int64_t *wraps, int64_t *sats) {
    const int32_t big_m = c->big_m, lim = c->big_m - 1;
    const uint32_t two_m = 2u * (uint32_t)c->big_m;
    const uint32_t *restrict fu = c->fu, *restrict fv = c->fv;
    const int32_t *restrict vth = c->vth, *restrict bias = c->bias;
    const int db = c->dbits, sh = c->act_shift;
    int32_t nw = 0, ns = 0, cnt = 0;
    for (long j = 0; j < n; j++) {
        uint32_t ain = (F & K_IN_F32) ? (uint32_t)(int32_t)((const float *)a_row)[j]
                       : (F & K_IN_F64) ? (uint32_t)(int64_t)((const double *)a_row)[j] : 0u;
        int32_t x = (int32_t)(decay32(ub[j], fu[j], db, F & K_NEAREST) + (ain << sh));
        if (F & K_CHECK_U) { /* a single wrap, not modulo, as Lava does */
            int hi = x > big_m, lo = x <= -big_m;
            nw += hi + lo;
            x = hi ? (int32_t)((uint32_t)x - two_m) : (lo ? (int32_t)((uint32_t)x + two_m) : x);
        }
        uint32_t ys = decay32(vb[j], fv[j], db, F & K_NEAREST) + (uint32_t)x;
        if (F & K_BIAS) ys += (uint32_t)bias[j];
        int32_t y = (int32_t)ys;
        if (F & K_CHECK_V) {
            int hi = y > lim, lo = y < -lim;
            ns += hi + lo;
            y = hi ? lim : (lo ? -lim : y);
        }
        int32_t spk = y > vth[j];
        ub[j] = x;
        vb[j] = spk ? 0 : y;
        sr[j] = (uint8_t)spk;
        cnt += spk;
    }
    *wraps += nw;
    *sats += ns;
    return cnt;
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
/* The same step written for AVX-512: sixteen neurons per register, masks instead of selects, and the
 * wrap and saturation events counted from the masks (GCC's version of the loop above is 1.3-1.5x slower). */
static inline __attribute__((always_inline)) __m512i decay16(__m512i x, __m512i ax, __m512i f, __m128i db,
                                                             __m512i low, __m512i half, int nearest, int small) {
    __m512i r;
    if (small) { /* |x| < 2**(32 - dbits): the whole product fits 32 bits unsigned, one multiply */
        __m512i p = _mm512_mullo_epi32(ax, f);
        r = _mm512_srl_epi32(nearest ? _mm512_add_epi32(p, half) : p, db);
    } else { /* |INT32_MIN| reads as 2**31 unsigned, as in decay32 */
        __m512i lo = _mm512_mullo_epi32(_mm512_and_si512(ax, low), f);
        if (nearest) lo = _mm512_add_epi32(lo, half);
        r = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_srl_epi32(ax, db), f), _mm512_srl_epi32(lo, db));
    }
    return _mm512_mask_sub_epi32(r, _mm512_movepi32_mask(x), _mm512_setzero_si512(), r);
}

typedef struct {
    __m128i db, sh;
    __m512i low, half, big_m, neg_m, two_m, lim, neg_lim, wide;
} lif16_vconsts;

/* Sixteen neurons from j. FULL (compile time): all sixteen exist, plain loads and stores; else the
 * lanes of m, with masked ones (slower on some CPUs, so only for a row's last, partial vector). */
static inline __attribute__((always_inline)) void lif16_block(
    const int F, const int FULL, long j, __mmask16 m, const lif32_consts *c, const lif16_vconsts *k,
    const void *restrict a_row, int32_t *restrict ub, int32_t *restrict vb, uint8_t *restrict sr, int32_t *nw,
    int32_t *ns, int32_t *cnt) {
#define LD(p) (FULL ? _mm512_loadu_si512((const void *)(p)) : _mm512_maskz_loadu_epi32(m, (p)))
    __m512i ain = _mm512_setzero_si512();
    if (F & K_IN_F32) {
        const float *af = (const float *)a_row + j;
        ain = _mm512_cvttps_epi32(FULL ? _mm512_loadu_ps(af) : _mm512_maskz_loadu_ps(m, af));
    }
    if (F & K_IN_F64) { /* through int64, so that the low 32 bits are the wrapped value */
        const double *ad = (const double *)a_row + j;
        __m512d d0 = FULL ? _mm512_loadu_pd(ad) : _mm512_maskz_loadu_pd((__mmask8)m, ad);
        __m512d d1 = FULL ? _mm512_loadu_pd(ad + 8) : _mm512_maskz_loadu_pd((__mmask8)(m >> 8), ad + 8);
        __m256i a0 = _mm512_cvtepi64_epi32(_mm512_cvttpd_epi64(d0)), a1 = _mm512_cvtepi64_epi32(_mm512_cvttpd_epi64(d1));
        ain = _mm512_inserti64x4(_mm512_castsi256_si512(a0), a1, 1);
    }
    /* u decays in one multiply while |u| < 2**(32 - dbits), as it nearly always is, so this branch predicts
     * well. v takes the split products every time: it often crosses that bound (2**20 for Loihi's 12 decay
     * bits; v goes to 2**23), and a branch on it was taken by about half the blocks of the engine
     * benchmark, at random: its mispredictions cost more than the extra multiply. */
    __m512i u0 = LD(ub + j), v0 = LD(vb + j), au = _mm512_abs_epi32(u0), du;
    if (!_mm512_test_epi32_mask(au, k->wide))
        du = decay16(u0, au, LD(c->fu + j), k->db, k->low, k->half, F & K_NEAREST, 1);
    else
        du = decay16(u0, au, LD(c->fu + j), k->db, k->low, k->half, F & K_NEAREST, 0);
    __m512i dv = decay16(v0, _mm512_abs_epi32(v0), LD(c->fv + j), k->db, k->low, k->half, F & K_NEAREST, 0);
    __m512i x = _mm512_add_epi32(du, _mm512_sll_epi32(ain, k->sh));
    if (F & K_CHECK_U) {
        __mmask16 hi = _mm512_cmpgt_epi32_mask(x, k->big_m), lo = _mm512_cmple_epi32_mask(x, k->neg_m);
        if (hi | lo) {
            *nw += __builtin_popcount(hi & m) + __builtin_popcount(lo & m);
            x = _mm512_mask_sub_epi32(x, hi, x, k->two_m);
            x = _mm512_mask_add_epi32(x, lo, x, k->two_m);
        }
    }
    __m512i y = _mm512_add_epi32(dv, x);
    if (F & K_BIAS) y = _mm512_add_epi32(y, LD(c->bias + j));
    if (F & K_CHECK_V) {
        __mmask16 out = _mm512_cmpgt_epi32_mask(y, k->lim) | _mm512_cmplt_epi32_mask(y, k->neg_lim);
        if (out) {
            *ns += __builtin_popcount(out & m);
            y = _mm512_min_epi32(_mm512_max_epi32(y, k->neg_lim), k->lim);
        }
    }
    __mmask16 spk = _mm512_cmpgt_epi32_mask(y, LD(c->vth + j)) & m;
    __m512i v_new = _mm512_maskz_mov_epi32((__mmask16)~spk, y);
    __m128i s8 = _mm_maskz_mov_epi8(spk, _mm_set1_epi8(1));
    if (FULL) {
        _mm512_storeu_si512((void *)(ub + j), x);
        _mm512_storeu_si512((void *)(vb + j), v_new);
        _mm_storeu_si128((__m128i *)(sr + j), s8);
    } else {
        _mm512_mask_storeu_epi32(ub + j, m, x);
        _mm512_mask_storeu_epi32(vb + j, m, v_new);
        _mm_mask_storeu_epi8(sr + j, m, s8);
    }
    *cnt += __builtin_popcount(spk);
#undef LD
}

static inline __attribute__((always_inline)) int32_t lif16_row(
    const int F, long n, const lif32_consts *c, const void *restrict a_row, int32_t *restrict ub,
    int32_t *restrict vb, uint8_t *restrict sr, int64_t *wraps, int64_t *sats) {
    const lif16_vconsts k = {
        _mm_cvtsi32_si128(c->dbits), _mm_cvtsi32_si128(c->act_shift), _mm512_set1_epi32((1 << c->dbits) - 1),
        _mm512_set1_epi32(1 << (c->dbits - 1)), _mm512_set1_epi32(c->big_m), _mm512_set1_epi32(-c->big_m),
        _mm512_set1_epi32((int32_t)(2u * (uint32_t)c->big_m)), _mm512_set1_epi32(c->big_m - 1),
        _mm512_set1_epi32(1 - c->big_m), _mm512_set1_epi32((int32_t)~((1u << (32 - c->dbits)) - 1u))};
    int32_t nw = 0, ns = 0, cnt = 0;
    long j = 0;
    for (; j + 16 <= n; j += 16) lif16_block(F, 1, j, (__mmask16)0xFFFF, c, &k, a_row, ub, vb, sr, &nw, &ns, &cnt);
    if (j < n)
        lif16_block(F, 0, j, (__mmask16)((1u << (n - j)) - 1), c, &k, a_row, ub, vb, sr, &nw, &ns, &cnt);
    *wraps += nw;
    *sats += ns;
    return cnt;
}
#define LIF_ROW lif16_row
#else
#define LIF_ROW lif32_row
#endif

#define ROW32(F) case F: return LIF_ROW(F, n, c, a_row, ub, vb, sr, wraps, sats);
#define ROW32_8(F) ROW32(F) ROW32(F + 1) ROW32(F + 2) ROW32(F + 3) ROW32(F + 4) ROW32(F + 5) ROW32(F + 6) ROW32(F + 7)
static int32_t lif32_row_any(int flags, long n, const lif32_consts *c, const void *a_row, int32_t *ub,
                             int32_t *vb, uint8_t *sr, int64_t *wraps, int64_t *sats) {
    switch (flags & 63) {
        ROW32_8(0) ROW32_8(8) ROW32_8(16) ROW32_8(24) ROW32_8(32) ROW32_8(40)
    }
    return -1;
}

/* Advances samples b0 <= b < b1 through tc steps. a: [tc, batch, n] float32 (a_kind 1, |a| < 2**31) or
 * float64 (a_kind 2, wrapped to 32 bits on conversion) or NULL; u, v: int32 [batch, n] state, updated in
 * place; fu, fv: [n] decay factors <= 2**dbits (dbits <= 16); vth, bias: int32 [n]. s: uint8 [tc, batch,
 * n]; counts: int32 [tc, batch]; v_out, u_out: int32 [tc, batch, n] or NULL. Steps with
 * (t0 + t + 1) % reset_interval == reset_offset zero u and v first. events[0] += u wraps, events[1] +=
 * v saturations. */
void lif_scan(long tc, long batch, long n, long b0, long b1, const void *a, int a_kind, int32_t *u, int32_t *v,
                const uint32_t *fu, const uint32_t *fv, const int32_t *vth, const int32_t *bias, int32_t big_m,
                int dbits, int act_shift, int flags, long reset_interval, long reset_offset, long t0, uint8_t *s,
                int32_t *counts, int32_t *v_out, int32_t *u_out, int64_t *events) {
    lif32_consts c = {fu, fv, vth, bias, big_m, dbits, act_shift};
    flags &= K_CHECK_U | K_CHECK_V | K_BIAS | K_NEAREST;
    if (a) flags |= a_kind == 2 ? K_IN_F64 : K_IN_F32;
    int64_t wraps = 0, sats = 0;
    for (long b = b0; b < b1; b++) {
        int32_t *ub = u + b * n, *vb = v + b * n;
        for (long t = 0; t < tc; t++) {
            long row = (t * batch + b) * n;
            if (reset_interval && (t0 + t + 1) % reset_interval == reset_offset)
                for (long j = 0; j < n; j++) ub[j] = vb[j] = 0;
            const void *a_row = !a ? NULL : a_kind == 2 ? (const void *)((const double *)a + row)
                                                        : (const void *)((const float *)a + row);
            counts[t * batch + b] = lif32_row_any(flags, n, &c, a_row, ub, vb, s + row, &wraps, &sats);
            if (v_out) for (long j = 0; j < n; j++) v_out[row + j] = vb[j];
            if (u_out) for (long j = 0; j < n; j++) u_out[row + j] = ub[j];
        }
    }
    events[0] += wraps;
    events[1] += sats;
}

/* as_int8_f32/f64: rows r0..r1 of float spikes (row r at x + r * ld, n values) converted to int8 at out + r * n,
 * when every value is an integer in [-128, 127]; returns 1 as soon as a row holds another value (NaN, inf, a
 * fraction, out of range: the caller then finds and names it). One pass over the input instead of numpy's
 * cast, compare and reduction, and threads can split the rows. -0.0 becomes 0, as numpy's cast makes it. */
#define AS_INT8(NAME, T)                                                                                      \
    int NAME(const T *x, long n, long ld, int8_t *out, long r0, long r1) {                                    \
        for (long r = r0; r < r1; r++) {                                                                      \
            const T *xr = x + r * ld;                                                                         \
            int8_t *o = out + r * n;                                                                          \
            int bad = 0;                                                                                      \
            for (long i = 0; i < n; i++) {                                                                    \
                T v = xr[i];                                                                                  \
                int in = v >= (T)-128 && v <= (T)127; /* false for NaN */                                     \
                int32_t k = (int32_t)(in ? v : (T)0);                                                         \
                bad |= !in | ((T)k != v);                                                                     \
                o[i] = (int8_t)k;                                                                             \
            }                                                                                                 \
            if (bad)                                                                                          \
                return 1;                                                                                     \
        }                                                                                                     \
        return 0;                                                                                             \
    }
AS_INT8(as_int8_f32, float)
AS_INT8(as_int8_f64, double)
