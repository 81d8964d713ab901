/* Fused CPU passes for edge-popup's training hot path (wrapped by popcli/nn/cpu_kernels.py).
 *
 * Why: on a CPU the per-step cost of edge-popup beyond dense training is memory traffic. The
 * torch expressions (|s|, comparisons, a float mask, w * mask, g * w * sign(s)) make ~10 passes
 * over every layer's weights; these kernels make 3 (select, masked weight, score gradient).
 *
 * Scores are read as uint32 bit patterns: for x >= 0 the IEEE-754 patterns order like the values,
 * so comparisons of |s| are integer comparisons of (bits & 0x7fffffff). Every output is
 * bit-identical to the torch expression named beside it (tests/test_kernels.py checks this).
 * Plain C99 with GCC/Clang vector extensions, no target-specific code: the vectors are VBYTES wide,
 * 64 bytes in the AVX-512 build (zmm), 32 in the AVX2 build (ymm), 16 otherwise (SSE2 xmm / NEON),
 * and every lane computes alone, so each build gives the same bits. Compile with -ffp-contract=off
 * so no multiply is fused into anything else. With -fopenmp the
 * passes split across `threads` threads (the caller passes torch's thread count); without it the
 * pragmas are ignored and the same loops run on one thread with the same results.
 */
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX2__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
#define LANES (VBYTES / 4) /* uint32 / float lanes per vector */

typedef uint32_t u32v __attribute__((vector_size(VBYTES)));
typedef float f32v __attribute__((vector_size(VBYTES)));

#define ABS_MASK 0x7fffffffu
#define ONE_BITS 0x3f800000u /* 1.0f */

static inline u32v splat(uint32_t x) { return (u32v){0} + x; }
static inline u32v load_u(const uint32_t *p) { u32v v; memcpy(&v, p, VBYTES); return v; }
static inline f32v load_f(const float *p) { f32v v; memcpy(&v, p, VBYTES); return v; }
static inline int any_lane(u32v v)
{
    uint32_t r = 0;
    for (int j = 0; j < LANES; j++) r |= v[j];
    return r != 0;
}
static inline int64_t lane_sum(u32v v)
{
    int64_t r = 0;
    for (int j = 0; j < LANES; j++) r += v[j];
    return r;
}

#define MAX_THREADS 256

/* One thread's share of popcli_count_gather: returns #(lo <= |s| <= hi) and stores #(|s| > hi)
 * in *above; the first `cap` |s| bit patterns inside [lo, hi] go to out[], in index order. The
 * inside test runs four vectors at a time and only blocks that hold a hit take the scalar path,
 * so a narrow bracket costs one read of s. */
static int64_t count_gather_range(const uint32_t *s, int64_t n, uint32_t lo, uint32_t hi,
                                  uint32_t *out, int64_t cap, int64_t *above)
{
    const uint32_t span = hi - lo; /* unsigned: (u - lo) <= span  <=>  lo <= u <= hi */
    const u32v vabs = splat(ABS_MASK), vlo = splat(lo), vhi = splat(hi), vspan = splat(span);
    u32v acc = splat(0);           /* lane counts of |s| > hi (compare gives -1 per hit) */
    int64_t i = 0, inside = 0, over = 0;
    for (; i + 4 * LANES <= n; i += 4 * LANES) {
        u32v a = load_u(s + i) & vabs, b = load_u(s + i + LANES) & vabs;
        u32v c = load_u(s + i + 2 * LANES) & vabs, d = load_u(s + i + 3 * LANES) & vabs;
        acc -= (u32v)(a > vhi) + (u32v)(b > vhi) + (u32v)(c > vhi) + (u32v)(d > vhi);
        u32v hit = (u32v)((a - vlo) <= vspan) | (u32v)((b - vlo) <= vspan) |
                   (u32v)((c - vlo) <= vspan) | (u32v)((d - vlo) <= vspan);
        if (any_lane(hit)) {
            for (int j = 0; j < 4 * LANES; j++) {
                uint32_t u = s[i + j] & ABS_MASK;
                if (u - lo <= span) {
                    if (inside < cap) out[inside] = u;
                    inside++;
                }
            }
        }
        if ((i & ((1 << 20) - 1)) == 0) { /* flush lane counts before a uint32 lane could wrap */
            over += lane_sum(acc);
            acc = splat(0);
        }
    }
    over += lane_sum(acc);
    for (; i < n; i++) {
        uint32_t u = s[i] & ABS_MASK;
        over += u > hi;
        if (u - lo <= span) {
            if (inside < cap) out[inside] = u;
            inside++;
        }
    }
    *above = over;
    return inside;
}

/* Count |s| > hi into *above and gather the |s| bit patterns inside [lo, hi] into out[0..cap)
 * (any order). Returns how many lie inside, or cap + 1 when they do not all fit. */
int64_t popcli_count_gather(const uint32_t *s, int64_t n, uint32_t lo, uint32_t hi,
                            uint32_t *out, int64_t cap, int64_t *above, int threads)
{
    int64_t inside[MAX_THREADS], over[MAX_THREADS];
    threads = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    const int64_t share = cap / threads; /* each thread gathers into its own slice of out */
    #pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; t++) {
        int64_t begin = n * t / threads, end = n * (t + 1) / threads;
        inside[t] = count_gather_range(s + begin, end - begin, lo, hi, out + t * share, share, &over[t]);
    }
    int64_t total = 0, above_total = 0;
    int overflow = 0;
    for (int t = 0; t < threads; t++) {
        above_total += over[t];
        overflow |= inside[t] > share;
        if (!overflow) /* slide this slice down behind the previous ones */
            memmove(out + total, out + t * share, (size_t)inside[t] * sizeof(uint32_t));
        total += inside[t];
    }
    *above = above_total;
    return overflow && total <= cap ? cap + 1 : total;
}

/* out = w * (|s| >= t as 0.0/1.0)   (torch: w * torch.ge(s.abs(), t).float()) */
void popcli_masked_weight(const uint32_t *s, const float *w, float *out, int64_t n, uint32_t t, int threads)
{
    const u32v vabs = splat(ABS_MASK), vt = splat(t), vone = splat(ONE_BITS);
    #pragma omp parallel for num_threads(threads < 1 ? 1 : threads) schedule(static)
    for (int64_t b = 0; b < n / LANES; b++) {
        const int64_t i = LANES * b;
        u32v keep = (u32v)((load_u(s + i) & vabs) >= vt) & vone;
        f32v r = load_f(w + i) * (f32v)keep;
        memcpy(out + i, &r, VBYTES);
    }
    for (int64_t i = n / LANES * LANES; i < n; i++) {
        uint32_t keep = (s[i] & ABS_MASK) >= t ? ONE_BITS : 0u;
        float m;
        memcpy(&m, &keep, 4);
        out[i] = w[i] * m;
    }
}

/* One thread's share of popcli_masked_weight_gather (see there); indices are relative to s. */
static int64_t masked_weight_gather_range(const uint32_t *s, const float *w, float *out, int64_t n,
                                          uint32_t lo, uint32_t hi, int64_t *idx, int64_t cap,
                                          int64_t *above)
{
    const uint32_t span = hi - lo;
    const u32v vabs = splat(ABS_MASK), vlo = splat(lo), vhi = splat(hi), vspan = splat(span),
               vone = splat(ONE_BITS);
    u32v acc = splat(0);
    int64_t i = 0, inside = 0, over = 0;
    for (; i + LANES <= n; i += LANES) {
        u32v u = load_u(s + i) & vabs;
        u32v high = (u32v)(u > vhi);
        acc -= high;
        f32v r = load_f(w + i) * (f32v)(high & vone); /* kept for sure above hi, else 0 for now */
        memcpy(out + i, &r, VBYTES);
        if (any_lane((u32v)((u - vlo) <= vspan))) {
            for (int j = 0; j < LANES; j++) {
                if (u[j] - lo <= span) {
                    if (inside < cap) idx[inside] = i + j;
                    inside++;
                }
            }
        }
        if ((i & ((1 << 20) - 1)) == 0) {
            over += lane_sum(acc);
            acc = splat(0);
        }
    }
    over += lane_sum(acc);
    for (; i < n; i++) {
        uint32_t u = s[i] & ABS_MASK;
        uint32_t bits = u > hi ? ONE_BITS : 0u;
        float m;
        memcpy(&m, &bits, 4);
        out[i] = w[i] * m;
        over += u > hi;
        if (u - lo <= span) {
            if (inside < cap) idx[inside] = i;
            inside++;
        }
    }
    *above = over;
    return inside;
}

/* The selection and the masked weight in one pass, for a bracket [lo, hi] that likely holds the
 * threshold: out = w * (|s| > hi), #(|s| > hi) -> *above, and the flat indices of the entries
 * inside [lo, hi] -> idx[0..cap) in increasing order (their out is 0 until the caller, knowing
 * the threshold, sets the kept ones to w). Returns #inside, or cap + 1 when they do not all fit. */
int64_t popcli_masked_weight_gather(const uint32_t *s, const float *w, float *out, int64_t n, uint32_t lo,
                                    uint32_t hi, int64_t *idx, int64_t cap, int64_t *above, int threads)
{
    int64_t inside[MAX_THREADS], over[MAX_THREADS];
    threads = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    const int64_t share = cap / threads;
    #pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; t++) {
        int64_t begin = n * t / threads & ~(int64_t)(LANES - 1),
                end = t + 1 == threads ? n : n * (t + 1) / threads & ~(int64_t)(LANES - 1);
        int64_t *mine = idx + t * share;
        inside[t] = masked_weight_gather_range(s + begin, w + begin, out + begin, end - begin, lo, hi, mine, share,
                                               &over[t]);
        for (int64_t j = 0; j < (inside[t] < share ? inside[t] : share); j++)
            mine[j] += begin;
    }
    int64_t total = 0, above_total = 0;
    int overflow = 0;
    for (int t = 0; t < threads; t++) {
        above_total += over[t];
        overflow |= inside[t] > share;
        if (!overflow)
            memmove(idx + total, idx + t * share, (size_t)inside[t] * sizeof(int64_t));
        total += inside[t];
    }
    *above = above_total;
    return overflow && total <= cap ? cap + 1 : total;
}

/* Surplus ties at the threshold: keep |s| > t, and of the entries with |s| == t only the first
 * `ties` by index. out = w * mask as above. Scalar: this case is rare. */
void popcli_masked_weight_ties(const uint32_t *s, const float *w, float *out, int64_t n, uint32_t t,
                               int64_t ties)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = s[i] & ABS_MASK;
        int keep = u > t;
        if (u == t && ties > 0) {
            keep = 1;
            ties--;
        }
        uint32_t bits = keep ? ONE_BITS : 0u;
        float m;
        memcpy(&m, &bits, 4);
        out[i] = w[i] * m;
    }
}

/* out = (g * w) * sign(s), sign in {-1, 0, +1}   (torch: (g * w).mul_(torch.sign(s))) */
void popcli_score_grad(const float *g, const float *w, const float *s, float *out, int64_t n, int threads)
{
    const f32v zero = {0.0f};
    const u32v vone = splat(ONE_BITS);
    #pragma omp parallel for num_threads(threads < 1 ? 1 : threads) schedule(static)
    for (int64_t b = 0; b < n / LANES; b++) {
        const int64_t i = LANES * b;
        f32v sv = load_f(s + i);
        f32v pos = (f32v)((u32v)(sv > zero) & vone), neg = (f32v)((u32v)(sv < zero) & vone);
        f32v r = (load_f(g + i) * load_f(w + i)) * (pos - neg);
        memcpy(out + i, &r, VBYTES);
    }
    for (int64_t i = n / LANES * LANES; i < n; i++) {
        float sign = (float)(s[i] > 0.0f) - (float)(s[i] < 0.0f);
        out[i] = (g[i] * w[i]) * sign;
    }
}
