/* Decoder of popcli's interleaved binary rANS mask stream (popcli/codecs.py, docs/FORMAT.md):
 * the same arithmetic as the numpy reference, one symbol at a time instead of one lane-row.
 *
 * words: the stream as 16-bit words; the first 2 * lanes are the lane states (high, low).
 * starts[l] .. starts[l + 1]: the symbols of layer l, whose kept weights have probability
 * f1[l] / 2^16 (symbol 0 owns [0, 2^16 - f1), symbol 1 owns [2^16 - f1, 2^16)).
 * out: uint8 0/1 per symbol; ones[l]: the number of 1 symbols (kept weights) decoded in layer l.
 * Returns 0, or -1 when the stream ends early, -2 when it does not end exactly where it should.
 */
#include <stdint.h>

/* Decode the symbols base..base+active-1 (one per lane) with one layer's probability p1, in two
 * passes: the state updates are independent across lanes (a vectorizable loop; every value fits
 * in 32 bits: x < 2^32, f * (x >> 16) + slot < 2^32), then the refills walk the shared stream.
 * Reads past the stream's end are clamped and reported through *overrun. */
static inline int64_t decode_row(uint32_t *restrict state, int64_t active, uint32_t p1, const uint16_t *restrict words,
                                 int64_t nwords, int64_t pos, uint8_t *restrict out, int64_t *ones, int *overrun)
{
    const uint32_t p0 = 65536 - p1;
    int64_t count = 0;
    for (int64_t j = 0; j < active; j++) {
        uint32_t x = state[j], slot = x & 0xffff;
        uint32_t one = slot >= p0;
        state[j] = (one ? p1 : p0) * (x >> 16) + slot - (one ? p0 : 0);
        out[j] = (uint8_t)one;
        count += one;
    }
    *ones += count;
    for (int64_t j = 0; j < active; j++) {
        uint32_t x = state[j], need = x < 65536;
        *overrun |= (int)(need & (pos >= nwords));
        uint32_t word = words[pos < nwords ? pos : nwords - 1];
        state[j] = need ? (x << 16) | word : x;
        pos += need;
    }
    return pos;
}

int popcli_rans_decode(const uint16_t *words, int64_t nwords, int64_t n, int64_t lanes, const int64_t *starts,
                       const uint32_t *f1, int64_t layers, uint8_t *out, int64_t *ones)
{
    uint32_t state[4096];
    if (lanes < 1 || lanes > 4096 || nwords < 2 * lanes)
        return -1;
    for (int64_t j = 0; j < lanes; j++)
        state[j] = ((uint32_t)words[2 * j] << 16) | words[2 * j + 1];
    int64_t pos = 2 * lanes, layer = 0;
    int overrun = 0;
    for (int64_t base = 0; base < n && !overrun; base += lanes) {
        const int64_t active = n - base < lanes ? n - base : lanes;
        while (layer + 1 < layers && base >= starts[layer + 1])
            layer++;
        if (layer + 1 >= layers || base + active <= starts[layer + 1]) { /* the whole row in one layer */
            pos = decode_row(state, active, f1[layer], words, nwords, pos, out + base, ones + layer, &overrun);
            continue;
        }
        for (int64_t j = 0; j < active; j++) { /* a row across layer boundaries: one symbol at a time */
            while (layer + 1 < layers && base + j >= starts[layer + 1])
                layer++;
            pos = decode_row(state + j, 1, f1[layer], words, nwords, pos, out + base + j, ones + layer,
                             &overrun);
        }
    }
    if (overrun)
        return -1;
    if (pos != nwords)
        return -2;
    for (int64_t j = 0; j < lanes; j++)
        if (state[j] != 65536)
            return -2;
    return 0;
}
