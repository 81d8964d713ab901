/* The portable weight generator of docs/FORMAT.md in C: Philox4x64-10 and the integer-to-float
 * transforms, bit-identical to popcli/rng.py's numpy reference (tests/test_rng.py checks both
 * against the golden values). Multi-threaded with OpenMP: every output depends only on its
 * index, so any split of the work gives the same bits.
 *
 * Floating point: float32 only, every operation exactly rounded and in the order the spec gives
 * (compile with -ffp-contract=off; x86-64 and ARM64 evaluate float in float, FLT_EVAL_METHOD 0).
 * Constants are float32 bit patterns written as hex floats, never decimal literals: numpy's
 * reference rounds decimal -> double -> float32, which is not always the nearest float32.
 */
#include <stdint.h>
#include <string.h>

#define PHILOX_M0 0xD2E7470EE14C6C93ULL
#define PHILOX_M1 0xCA5A826395121157ULL
#define PHILOX_W0 0x9E3779B97F4A7C15ULL
#define PHILOX_W1 0xBB67AE8584CAA73BULL

/* Philox4x64-10 of the 256-bit counter (c0, 0, 0, 0) with key (k0, k1). */
static void philox_block(uint64_t c0, uint64_t k0, uint64_t k1, uint64_t out[4])
{
    uint64_t x0 = c0, x1 = 0, x2 = 0, x3 = 0;
    for (int round = 0; round < 10; round++) {
        __uint128_t p0 = (__uint128_t)PHILOX_M0 * x0, p1 = (__uint128_t)PHILOX_M1 * x2;
        uint64_t y0 = (uint64_t)(p1 >> 64) ^ x1 ^ k0, y1 = (uint64_t)p1;
        uint64_t y2 = (uint64_t)(p0 >> 64) ^ x3 ^ k1, y3 = (uint64_t)p0;
        x0 = y0; x1 = y1; x2 = y2; x3 = y3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = x0; out[1] = x1; out[2] = x2; out[3] = x3;
}

/* q = (f32(x >> 9) - 4194303.5) * 2^-23, exactly */
static inline float centered(uint32_t x)
{
    float q = (float)(x >> 9);
    q -= 0x1.fffffcp+21f;
    return q * 0x1.0p-23f;
}

/* log(x), x > 0 float32, from frexp and the atanh series (rng._log) */
static inline float exact_log(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, 4);
    int e = (int)((bits >> 23) & 0xff) - 126;          /* frexp exponent: x = m * 2^e, m in [0.5, 1) */
    uint32_t mbits = (bits & 0x007fffffu) | 0x3f000000u; /* x > 2^-24 here: always a normal number */
    float m;
    memcpy(&m, &mbits, 4);
    if (m < 0x1.6a09e6p-1f) {
        m = m * 2.0f;
        e -= 1;
    }
    float t = (m - 1.0f) / (m + 1.0f);
    float t2 = t * t;
    float acc = 0x1.3b13b2p-4f;                 /* 1/13 */
    acc = acc * t2 + 0x1.745d18p-4f;            /* 1/11 */
    acc = acc * t2 + 0x1.c71c72p-4f;            /* 1/9 */
    acc = acc * t2 + 0x1.24924ap-3f;            /* 1/7 */
    acc = acc * t2 + 0x1.99999ap-3f;            /* 1/5 */
    acc = acc * t2 + 0x1.555556p-2f;            /* 1/3 */
    acc = acc * t2 + 0x1.0p+0f;                 /* 1 */
    return (float)e * 0x1.62e430p-1f + (2.0f * t) * acc;
}

/* Standard normal quantile of 0.5 + q (AS241 PPND7, rng.normal_from_centered) */
static inline float normal_quantile(float q)
{
    float r = 0x1.71eb86p-3f - q * q;
    float a = 0x1.d8e000p+5f;
    a = a * r + 0x1.3e9510p+7f;
    a = a * r + 0x1.937964p+5f;
    a = a * r + 0x1.b18d90p+1f;
    float b = 0x1.0cc010p+6f;
    b = b * r + 0x1.3b07f2p+6f;
    b = b * r + 0x1.1e529ep+4f;
    b = b * r + 0x1.0p+0f;
    float z = q * a;
    z /= b;
    float aq = q < 0.0f ? -q : q;
    if (aq > 0x1.b33334p-2f) {
        float rt = __builtin_sqrtf(-exact_log(0x1.0p-1f - aq)) - 0x1.99999ap+0f;
        float c = 0x1.5ca5dap-3f;
        c = c * rt + 0x1.4e85c2p+0f;
        c = c * rt + 0x1.60df54p+1f;
        c = c * rt + 0x1.6c6662p+0f;
        float d = 0x1.ec62b8p-4f;
        d = d * rt + 0x1.795848p-1f;
        d = d * rt + 0x1.0p+0f;
        float v = c / d;
        z = q < 0.0f ? -v : v;
    }
    return z;
}

enum { NORMAL = 0, UNIFORM = 1, SIGNED = 2 };

/* out[0..n) = the weights of the layer keyed (k0, k1), straight from the Philox blocks (no word
 * buffer): block j (counter j + 1) holds words 4j..4j+3. NORMAL / UNIFORM: weight i takes uint32 i
 * (word i / 2, low half first): normal quantile, or 2q, times scale. SIGNED: weight i takes bit
 * (i mod 64) of word i / 64: +scale if set, else -scale. */
void popcli_generate_weights(uint64_t k0, uint64_t k1, int64_t n, int kind, float scale, float *out, int threads)
{
    const int64_t per_block = kind == SIGNED ? 256 : 8;
    const int64_t blocks = (n + per_block - 1) / per_block;
    #pragma omp parallel for num_threads(threads < 1 ? 1 : threads) schedule(static, 512)
    for (int64_t j = 0; j < blocks; j++) {
        uint64_t w[4];
        philox_block((uint64_t)j + 1, k0, k1, w);
        const int64_t first = j * per_block, count = n - first < per_block ? n - first : per_block;
        if (kind == SIGNED) { /* sign bit of scale set where the stream's bit is 0: branch-free */
            uint32_t sbits;
            memcpy(&sbits, &scale, 4);
            uint32_t *o = (uint32_t *)(out + first);
            for (int64_t t = 0; t < count; t++)
                o[t] = sbits | (uint32_t)(~(w[t >> 6] >> (t & 63)) & 1) << 31;
        } else {
            for (int64_t t = 0; t < count; t++) {
                uint32_t u = (uint32_t)(w[t >> 1] >> (32 * (t & 1)));
                float q = centered(u);
                out[first + t] = (kind == NORMAL ? normal_quantile(q) : q * 2.0f) * scale;
            }
        }
    }
}
