/* Packed inference of signed-constant layers (popcli/nn/packed.py): every kept weight of output
 * row n is +-scale[n], so y[b, n] = scale[n] * (sum of kept x with sign + minus kept x with sign -)
 * + shift[n], computed from one keep bit and one sign bit per weight.
 *
 * Layout: keep and sign are [n_out, kbytes] uint8; bit j (LSB first) of byte i of row n is input
 * 8 * i + j. Sign bits of dropped weights are 0. x is [batch, 8 * kbytes] float32 (padded with
 * zeros by the caller), y is [batch, n_out].
 *
 * Summation order, the same on every path (so AVX2 and the portable C give the same bits): for
 * each (row, column) eight lane sums, lane j adding +-x[8 i + j] (or +0.0 when dropped) for i =
 * 0, 1, ... in order; then ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)); then
 * scale * sum, then + shift (two roundings, no fused multiply-add: -ffp-contract=off). torch
 * sums in another order, so against the dense layer the result agrees to float32 rounding of a
 * sum of K terms (tests: relative 1e-5 of the output's scale), not bit for bit.
 *
 * The AVX2 path (x86-64 with GCC/Clang: compiled with a target attribute, taken when the CPU has
 * AVX2 and isa != 0) turns each byte of keep and sign bits into lane masks with two 256-entry
 * tables: 8 weights cost two table loads, an AND (drop), an XOR (flip the float sign bit) and an
 * add. Four output rows share each load of x at batch 1; two rows by four columns otherwise.
 * The AVX-512 path (taken when the CPU has AVX-512 F/VL/DQ/BW and isa >= 3) uses each byte of
 * bits as a mask register instead of the tables (see its section). isa: 0 portable, 2 AVX2,
 * 3 AVX-512; the widest the CPU runs that is not wider is taken. OpenMP splits the output rows
 * over `threads` (for_row_blocks, shared by the matmul and the unpack).
 */
#include <stdint.h>
#include <string.h>

#define M1(i, j) ((((i) >> (j)) & 1) ? 0xffffffffu : 0u)
#define S1(i, j) ((((i) >> (j)) & 1) ? 0x80000000u : 0u)
#define ROW(F, i) {F(i, 0), F(i, 1), F(i, 2), F(i, 3), F(i, 4), F(i, 5), F(i, 6), F(i, 7)}
#define R4(F, i) ROW(F, i), ROW(F, (i) + 1), ROW(F, (i) + 2), ROW(F, (i) + 3)
#define R16(F, i) R4(F, i), R4(F, (i) + 4), R4(F, (i) + 8), R4(F, (i) + 12)
#define R64(F, i) R16(F, i), R16(F, (i) + 16), R16(F, (i) + 32), R16(F, (i) + 48)
#define R256(F) R64(F, 0), R64(F, 64), R64(F, 128), R64(F, 192)

/* KEEP_LUT[b]: lane j all ones where bit j of b is set; SIGN_LUT[b]: lane j the float sign bit. */
static const uint32_t KEEP_LUT[256][8] __attribute__((aligned(32))) = {R256(M1)};
static const uint32_t SIGN_LUT[256][8] __attribute__((aligned(32))) = {R256(S1)};

/* ---------------------------------------------------------------- portable C */

static inline float lane_sum(const float l[8])
{
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

static void portable_rows(const uint8_t *keep, const uint8_t *sign, const float *scale, const float *shift,
                          int64_t n_out, int64_t kbytes, const float *x, int64_t batch, float *y,
                          int64_t r0, int64_t r1)
{
    for (int64_t n = r0; n < r1; n++) {
        const uint8_t *k = keep + n * kbytes, *s = sign + n * kbytes;
        for (int64_t b = 0; b < batch; b++) {
            const float *xb = x + b * kbytes * 8;
            float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t i = 0; i < kbytes; i++) {
                for (int j = 0; j < 8; j++) {
                    uint32_t bits;
                    float v = xb[8 * i + j];
                    memcpy(&bits, &v, 4);
                    bits = (bits & KEEP_LUT[k[i]][j]) ^ SIGN_LUT[s[i]][j];
                    memcpy(&v, &bits, 4);
                    l[j] += v;
                }
            }
            float t = scale[n] * lane_sum(l);
            y[b * n_out + n] = t + shift[n];
        }
    }
}

static void portable_unpack(const uint8_t *keep, const uint8_t *sign, const float *scale, int64_t n_out,
                            int64_t kbytes, int64_t k_in, float *out, int64_t r0, int64_t r1)
{
    for (int64_t n = r0; n < r1; n++) {
        for (int64_t c = 0; c < k_in; c++) {
            uint8_t kb = keep[n * kbytes + c / 8], sb = sign[n * kbytes + c / 8];
            int j = (int)(c % 8);
            out[n * k_in + c] = ((kb >> j) & 1) ? (((sb >> j) & 1) ? -scale[n] : scale[n]) : 0.0f;
        }
    }
}

/* ---------------------------------------------------------------- AVX2 */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define POPCLI_HAVE_AVX2 1
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,bmi2")))

#define KM(byte) _mm256_load_ps((const float *)KEEP_LUT[(byte)])
#define SM(byte) _mm256_load_ps((const float *)SIGN_LUT[(byte)])
#define TERM(xv, kb, sb) _mm256_xor_ps(_mm256_and_ps((xv), KM(kb)), SM(sb))

AVX2 static inline float hsum(__m256 v)
{
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* l0+l4 l1+l5 l2+l6 l3+l7 */
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));                            /* (l0+l4)+(l2+l6), (l1+l5)+(l3+l7) */
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

AVX2 static inline void finish(float *y, int64_t n, __m256 acc, const float *scale, const float *shift)
{
    float t = scale[n] * hsum(acc);
    y[n] = t + shift[n];
}

static inline uint64_t word(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* A byte of w (already times 32: the table row's byte offset). */
#define AT(w, j) ((size_t)(((w) >> (8 * (j))) & 0xff) * 32)
#define KMW(w, j) _mm256_load_ps((const float *)((const char *)KEEP_LUT + AT(w, j)))
#define SMW(w, j) _mm256_load_ps((const float *)((const char *)SIGN_LUT + AT(w, j)))
#define TERMW(xv, kw, sw, j) _mm256_xor_ps(_mm256_and_ps((xv), KMW(kw, j)), SMW(sw, j))

/* One column (x: kbytes * 8 floats), rows r0..r1: four rows per pass sharing each x load, their
 * bits read eight bytes at a time (one load per 64 weights instead of one per 8). */
AVX2 static void avx2_column(const uint8_t *keep, const uint8_t *sign, const float *scale, const float *shift,
                             int64_t kbytes, const float *x, float *y, int64_t r0, int64_t r1)
{
    int64_t n = r0;
    for (; n + 4 <= r1; n += 4) {
        const uint8_t *k = keep + n * kbytes, *s = sign + n * kbytes;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t i = 0;
        for (; i + 8 <= kbytes; i += 8) {
            uint64_t k0 = word(k + i), k1 = word(k + i + kbytes), k2 = word(k + i + 2 * kbytes);
            uint64_t k3 = word(k + i + 3 * kbytes);
            uint64_t s0 = word(s + i), s1 = word(s + i + kbytes), s2 = word(s + i + 2 * kbytes);
            uint64_t s3 = word(s + i + 3 * kbytes);
            #pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                __m256 xv = _mm256_loadu_ps(x + 8 * (i + j));
                a0 = _mm256_add_ps(a0, TERMW(xv, k0, s0, j));
                a1 = _mm256_add_ps(a1, TERMW(xv, k1, s1, j));
                a2 = _mm256_add_ps(a2, TERMW(xv, k2, s2, j));
                a3 = _mm256_add_ps(a3, TERMW(xv, k3, s3, j));
            }
        }
        for (; i < kbytes; i++) {
            __m256 xv = _mm256_loadu_ps(x + 8 * i);
            a0 = _mm256_add_ps(a0, TERM(xv, k[i], s[i]));
            a1 = _mm256_add_ps(a1, TERM(xv, k[i + kbytes], s[i + kbytes]));
            a2 = _mm256_add_ps(a2, TERM(xv, k[i + 2 * kbytes], s[i + 2 * kbytes]));
            a3 = _mm256_add_ps(a3, TERM(xv, k[i + 3 * kbytes], s[i + 3 * kbytes]));
        }
        finish(y, n, a0, scale, shift); finish(y, n + 1, a1, scale, shift);
        finish(y, n + 2, a2, scale, shift); finish(y, n + 3, a3, scale, shift);
    }
    for (; n < r1; n++) {
        const uint8_t *k = keep + n * kbytes, *s = sign + n * kbytes;
        __m256 a = _mm256_setzero_ps();
        for (int64_t i = 0; i < kbytes; i++)
            a = _mm256_add_ps(a, TERM(_mm256_loadu_ps(x + 8 * i), k[i], s[i]));
        finish(y, n, a, scale, shift);
    }
}

/* Rows r0..r1 of every column: two rows by four columns per pass (the masks of a byte loaded
 * once, each x load used by both rows); leftover columns one at a time. */
AVX2 static void avx2_rows(const uint8_t *keep, const uint8_t *sign, const float *scale, const float *shift,
                           int64_t n_out, int64_t kbytes, const float *x, int64_t batch, float *y,
                           int64_t r0, int64_t r1)
{
    const int64_t kp = kbytes * 8;
    int64_t b = 0;
    for (; b + 4 <= batch; b += 4) {
        const float *x0 = x + b * kp, *x1 = x0 + kp, *x2 = x1 + kp, *x3 = x2 + kp;
        float *y0 = y + b * n_out;
        int64_t n = r0;
        for (; n + 2 <= r1; n += 2) {
            const uint8_t *k = keep + n * kbytes, *s = sign + n * kbytes;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
            __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            for (int64_t i = 0; i < kbytes; i++) {
                __m256 k0 = KM(k[i]), s0 = SM(s[i]), k1 = KM(k[i + kbytes]), s1 = SM(s[i + kbytes]);
                __m256 v0 = _mm256_loadu_ps(x0 + 8 * i), v1 = _mm256_loadu_ps(x1 + 8 * i);
                __m256 v2 = _mm256_loadu_ps(x2 + 8 * i), v3 = _mm256_loadu_ps(x3 + 8 * i);
                a00 = _mm256_add_ps(a00, _mm256_xor_ps(_mm256_and_ps(v0, k0), s0));
                a01 = _mm256_add_ps(a01, _mm256_xor_ps(_mm256_and_ps(v1, k0), s0));
                a02 = _mm256_add_ps(a02, _mm256_xor_ps(_mm256_and_ps(v2, k0), s0));
                a03 = _mm256_add_ps(a03, _mm256_xor_ps(_mm256_and_ps(v3, k0), s0));
                a10 = _mm256_add_ps(a10, _mm256_xor_ps(_mm256_and_ps(v0, k1), s1));
                a11 = _mm256_add_ps(a11, _mm256_xor_ps(_mm256_and_ps(v1, k1), s1));
                a12 = _mm256_add_ps(a12, _mm256_xor_ps(_mm256_and_ps(v2, k1), s1));
                a13 = _mm256_add_ps(a13, _mm256_xor_ps(_mm256_and_ps(v3, k1), s1));
            }
            finish(y0, n, a00, scale, shift); finish(y0 + n_out, n, a01, scale, shift);
            finish(y0 + 2 * n_out, n, a02, scale, shift); finish(y0 + 3 * n_out, n, a03, scale, shift);
            finish(y0, n + 1, a10, scale, shift); finish(y0 + n_out, n + 1, a11, scale, shift);
            finish(y0 + 2 * n_out, n + 1, a12, scale, shift); finish(y0 + 3 * n_out, n + 1, a13, scale, shift);
        }
        for (int64_t c = 0; c < 4 && n < r1; c++)
            avx2_column(keep, sign, scale, shift, kbytes, x + (b + c) * kp, y + (b + c) * n_out, n, r1);
    }
    for (; b < batch; b++)
        avx2_column(keep, sign, scale, shift, kbytes, x + b * kp, y + b * n_out, r0, r1);
}

AVX2 static void avx2_unpack(const uint8_t *keep, const uint8_t *sign, const float *scale, int64_t n_out,
                             int64_t kbytes, int64_t k_in, float *out, int64_t r0, int64_t r1)
{
    for (int64_t n = r0; n < r1; n++) {
        const uint8_t *k = keep + n * kbytes, *s = sign + n * kbytes;
        __m256 v = _mm256_set1_ps(scale[n]);
        float *o = out + n * k_in;
        int64_t i = 0;
        for (; 8 * i + 8 <= k_in; i++)
            _mm256_storeu_ps(o + 8 * i, TERM(v, k[i], s[i]));
        for (int64_t c = 8 * i; c < k_in; c++) {
            int j = (int)(c % 8);
            o[c] = ((k[i] >> j) & 1) ? (((s[i] >> j) & 1) ? -scale[n] : scale[n]) : 0.0f;
        }
    }
}
#endif

/* ---------------------------------------------------------------- AVX-512 */

/* The same eight lanes as AVX2 (256-bit vectors, AVX-512VL), but a byte of keep and sign bits is
 * used directly as a mask register: lanes with keep and not sign add x (mask keep ^ sign: sign
 * bits of dropped weights are 0), lanes with sign subtract it, dropped lanes are left as they
 * are. That is the portable path's sum bit for bit: a - x == a + (-x), and a lane never holds
 * -0.0 (it starts at +0.0 and a sum is -0.0 only when both terms are), so skipping the portable
 * path's "+ 0.0" changes nothing. No tables: 8 weights cost a masked add and a masked sub. Eight
 * lanes rather than sixteen keep the summation order of the other paths (Zen 4 splits 512-bit
 * operations into two 256-bit halves anyway). */
#if defined(POPCLI_HAVE_AVX2)
#define POPCLI_HAVE_AVX512 1
#define AVX512 __attribute__((target("avx2,bmi2,avx512f,avx512vl,avx512dq,avx512bw")))

AVX512 static inline __m256 masked_term(__m256 a, __m256 xv, unsigned kb, unsigned sb)
{
    a = _mm256_mask_add_ps(a, (__mmask8)(kb ^ sb), a, xv);
    return _mm256_mask_sub_ps(a, (__mmask8)sb, a, xv);
}

AVX512 static inline float hsum512(__m256 v)
{
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

AVX512 static inline void finish512(float *y, int64_t n, __m256 acc, const float *scale, const float *shift)
{
    float t = scale[n] * hsum512(acc);
    y[n] = t + shift[n];
}

#define BYTE(w, j) ((unsigned)((w) >> (8 * (j))) & 0xffu)

/* One column, rows r0..r1: four rows per pass sharing each x load, bits read 8 bytes at a time. */
AVX512 static void avx512_column(const uint8_t *keep, const uint8_t *sign, const float *scale, const float *shift,
                                 int64_t kbytes, const float *x, float *y, int64_t r0, int64_t r1)
{
    int64_t n = r0;
    for (; n + 4 <= r1; n += 4) {
        const uint8_t *k = keep + n * kbytes, *s = sign + n * kbytes;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t i = 0;
        for (; i + 8 <= kbytes; i += 8) {
            uint64_t k0 = word(k + i), k1 = word(k + i + kbytes), k2 = word(k + i + 2 * kbytes);
            uint64_t k3 = word(k + i + 3 * kbytes);
            uint64_t s0 = word(s + i), s1 = word(s + i + kbytes), s2 = word(s + i + 2 * kbytes);
            uint64_t s3 = word(s + i + 3 * kbytes);
            #pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                __m256 xv = _mm256_loadu_ps(x + 8 * (i + j));
                a0 = masked_term(a0, xv, BYTE(k0, j), BYTE(s0, j));
                a1 = masked_term(a1, xv, BYTE(k1, j), BYTE(s1, j));
                a2 = masked_term(a2, xv, BYTE(k2, j), BYTE(s2, j));
                a3 = masked_term(a3, xv, BYTE(k3, j), BYTE(s3, j));
            }
        }
        for (; i < kbytes; i++) {
            __m256 xv = _mm256_loadu_ps(x + 8 * i);
            a0 = masked_term(a0, xv, k[i], s[i]);
            a1 = masked_term(a1, xv, k[i + kbytes], s[i + kbytes]);
            a2 = masked_term(a2, xv, k[i + 2 * kbytes], s[i + 2 * kbytes]);
            a3 = masked_term(a3, xv, k[i + 3 * kbytes], s[i + 3 * kbytes]);
        }
        finish512(y, n, a0, scale, shift); finish512(y, n + 1, a1, scale, shift);
        finish512(y, n + 2, a2, scale, shift); finish512(y, n + 3, a3, scale, shift);
    }
    for (; n < r1; n++) {
        const uint8_t *k = keep + n * kbytes, *s = sign + n * kbytes;
        __m256 a = _mm256_setzero_ps();
        for (int64_t i = 0; i < kbytes; i++)
            a = masked_term(a, _mm256_loadu_ps(x + 8 * i), k[i], s[i]);
        finish512(y, n, a, scale, shift);
    }
}

/* Rows r0..r1 of every column: two rows by four columns per pass, leftover columns one at a time. */
AVX512 static void avx512_rows(const uint8_t *keep, const uint8_t *sign, const float *scale, const float *shift,
                               int64_t n_out, int64_t kbytes, const float *x, int64_t batch, float *y,
                               int64_t r0, int64_t r1)
{
    const int64_t kp = kbytes * 8;
    int64_t b = 0;
    for (; b + 4 <= batch; b += 4) {
        const float *x0 = x + b * kp, *x1 = x0 + kp, *x2 = x1 + kp, *x3 = x2 + kp;
        float *y0 = y + b * n_out;
        int64_t n = r0;
        for (; n + 2 <= r1; n += 2) {
            const uint8_t *k = keep + n * kbytes, *s = sign + n * kbytes;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
            __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            for (int64_t i = 0; i < kbytes; i++) {
                unsigned k0 = k[i], s0 = s[i], k1 = k[i + kbytes], s1 = s[i + kbytes];
                __m256 v0 = _mm256_loadu_ps(x0 + 8 * i), v1 = _mm256_loadu_ps(x1 + 8 * i);
                __m256 v2 = _mm256_loadu_ps(x2 + 8 * i), v3 = _mm256_loadu_ps(x3 + 8 * i);
                a00 = masked_term(a00, v0, k0, s0); a01 = masked_term(a01, v1, k0, s0);
                a02 = masked_term(a02, v2, k0, s0); a03 = masked_term(a03, v3, k0, s0);
                a10 = masked_term(a10, v0, k1, s1); a11 = masked_term(a11, v1, k1, s1);
                a12 = masked_term(a12, v2, k1, s1); a13 = masked_term(a13, v3, k1, s1);
            }
            finish512(y0, n, a00, scale, shift); finish512(y0 + n_out, n, a01, scale, shift);
            finish512(y0 + 2 * n_out, n, a02, scale, shift); finish512(y0 + 3 * n_out, n, a03, scale, shift);
            finish512(y0, n + 1, a10, scale, shift); finish512(y0 + n_out, n + 1, a11, scale, shift);
            finish512(y0 + 2 * n_out, n + 1, a12, scale, shift); finish512(y0 + 3 * n_out, n + 1, a13, scale, shift);
        }
        for (int64_t c = 0; c < 4 && n < r1; c++)
            avx512_column(keep, sign, scale, shift, kbytes, x + (b + c) * kp, y + (b + c) * n_out, n, r1);
    }
    for (; b < batch; b++)
        avx512_column(keep, sign, scale, shift, kbytes, x + b * kp, y + b * n_out, r0, r1);
}
#endif

/* ---------------------------------------------------------------- dispatch */

enum { PATH_GENERIC = 0, PATH_AVX2 = 2, PATH_AVX512 = 3 };

/* The widest path this CPU runs, no wider than `isa` (0 generic, 2 AVX2, 3 AVX-512). */
static int pick_path(int isa)
{
#ifdef POPCLI_HAVE_AVX2
    __builtin_cpu_init();
    int cpu = PATH_GENERIC;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2")) {
        cpu = PATH_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
            cpu = PATH_AVX512;
    }
    return isa < cpu ? (isa >= PATH_AVX2 ? PATH_AVX2 : PATH_GENERIC) : cpu;
#else
    (void)isa;
    return PATH_GENERIC;
#endif
}

/* The widest path compiled in and run by this CPU: 3 AVX-512, 2 AVX2, 0 portable. */
int popcli_packed_isa(void)
{
    return pick_path(PATH_AVX512);
}

/* The arguments of one call, shared by every row block. */
struct packed_call {
    const uint8_t *keep, *sign;
    const float *scale, *shift, *x;
    float *y;
    int64_t n_out, kbytes, k_in, batch;
    int path;
};

typedef void (*rows_fn)(const struct packed_call *c, int64_t r0, int64_t r1);

/* Row blocks of 8 split over the threads (a block never straddles two threads). */
static void for_row_blocks(const struct packed_call *c, rows_fn body, int threads)
{
    const int64_t blocks = (c->n_out + 7) / 8;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t r0 = blk * 8, r1 = r0 + 8 < c->n_out ? r0 + 8 : c->n_out;
        body(c, r0, r1);
    }
}

static void linear_rows(const struct packed_call *c, int64_t r0, int64_t r1)
{
#ifdef POPCLI_HAVE_AVX512
    if (c->path == PATH_AVX512) {
        if (c->batch == 1)
            avx512_column(c->keep, c->sign, c->scale, c->shift, c->kbytes, c->x, c->y, r0, r1);
        else
            avx512_rows(c->keep, c->sign, c->scale, c->shift, c->n_out, c->kbytes, c->x, c->batch, c->y, r0, r1);
        return;
    }
#endif
#ifdef POPCLI_HAVE_AVX2
    if (c->path == PATH_AVX2) {
        if (c->batch == 1)
            avx2_column(c->keep, c->sign, c->scale, c->shift, c->kbytes, c->x, c->y, r0, r1);
        else
            avx2_rows(c->keep, c->sign, c->scale, c->shift, c->n_out, c->kbytes, c->x, c->batch, c->y, r0, r1);
        return;
    }
#endif
    portable_rows(c->keep, c->sign, c->scale, c->shift, c->n_out, c->kbytes, c->x, c->batch, c->y, r0, r1);
}

static void unpack_rows(const struct packed_call *c, int64_t r0, int64_t r1)
{
#ifdef POPCLI_HAVE_AVX2
    if (c->path >= PATH_AVX2) {  /* AVX-512 unpacks with the AVX2 code: a store per 8 weights either way */
        avx2_unpack(c->keep, c->sign, c->scale, c->n_out, c->kbytes, c->k_in, c->y, r0, r1);
        return;
    }
#endif
    portable_unpack(c->keep, c->sign, c->scale, c->n_out, c->kbytes, c->k_in, c->y, r0, r1);
}

void popcli_packed_linear(const uint8_t *keep, const uint8_t *sign, const float *scale, const float *shift,
                          int64_t n_out, int64_t kbytes, const float *x, int64_t batch, float *y, int threads, int isa)
{
    struct packed_call c = {keep, sign, scale, shift, x, y, n_out, kbytes, kbytes * 8, batch, pick_path(isa)};
    for_row_blocks(&c, linear_rows, threads);
}

/* out[n, c] = +-scale[n] where kept, 0 elsewhere, for c < k_in: the dense weight the bits describe. */
void popcli_packed_unpack(const uint8_t *keep, const uint8_t *sign, const float *scale, int64_t n_out,
                          int64_t kbytes, int64_t k_in, float *out, int threads, int isa)
{
    struct packed_call c = {keep, sign, scale, NULL, NULL, out, n_out, kbytes, k_in, 0, pick_path(isa)};
    for_row_blocks(&c, unpack_rows, threads);
}
