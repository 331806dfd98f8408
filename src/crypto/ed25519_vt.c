/*
 * Variable-time edwards25519 arithmetic for public values only: the VRF's
 * verification (vrf.c), where libsodium's constant-time, prime-order-only
 * scalar multiplication costs a multiplication by L per point besides its own.
 *
 * Field elements mod p = 2^255 - 19 are five 51-bit limbs; points are extended
 * coordinates (X : Y : Z : T) with x = X/Z, y = Y/Z, x*y = T/Z on
 * -x^2 + y^2 = 1 + d x^2 y^2. Addition is the unified formula of Hisil, Wong,
 * Carter and Dawson ("add-2008-hwcd-3"), complete on the whole curve because
 * d is not a square, so points of small or mixed order need no special case:
 * n*P is exactly the RFC's n*P for any point and any 256-bit n. Several
 * products are summed by Straus's method over width-5 NAFs, one doubling
 * chain for all of them.
 *
 * Nothing here may see a secret: branches and memory accesses follow the
 * scalars and points.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/internal.h"

typedef unsigned __int128 u128;
typedef struct msv_fe fe;
typedef struct {
    fe x, y, z, t;
} ge;
typedef struct msv_ge_cached ge_cached;

#define MASK51 ((UINT64_C(1) << 51) - 1)
#define WINDOW 5
#define TABLE (1 << (WINDOW - 2)) /* the odd multiples P, 3P, ..., 15P */
#define NAF_LEN 260

/* d = -121665/121666 and sqrt(-1) = 2^((p-1)/4), little-endian (a wrong byte fails test_vrf) */
static const uint8_t d_bytes[32] = {
    0xa3, 0x78, 0x59, 0x13, 0xca, 0x4d, 0xeb, 0x75, 0xab, 0xd8, 0x41, 0x41, 0x4d, 0x0a, 0x70, 0x00,
    0x98, 0xe8, 0x79, 0x77, 0x79, 0x40, 0xc7, 0x8c, 0x73, 0xfe, 0x6f, 0x2b, 0xee, 0x6c, 0x03, 0x52};
static const uint8_t sqrtm1_bytes[32] = {
    0xb0, 0xa0, 0x0e, 0x4a, 0x27, 0x1b, 0xee, 0xc4, 0x78, 0xe4, 0x2f, 0xad, 0x06, 0x18, 0x43, 0x2f,
    0xa7, 0xd7, 0xfb, 0x3d, 0x99, 0x00, 0x4d, 0x2b, 0x0b, 0xdf, 0xc1, 0x4f, 0x80, 0x24, 0x83, 0x2b};

static uint64_t load64(const uint8_t *p)
{
    uint64_t r = 0;

    for (int i = 7; i >= 0; i--)
        r = r << 8 | p[i];
    return r;
}

static void store64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The low 255 bits of s (the top bit is the sign of x in a point's encoding). */
static void fe_frombytes(fe *h, const uint8_t s[32])
{
    h->v[0] = load64(s) & MASK51;
    h->v[1] = (load64(s + 6) >> 3) & MASK51;
    h->v[2] = (load64(s + 12) >> 6) & MASK51;
    h->v[3] = (load64(s + 19) >> 1) & MASK51;
    h->v[4] = (load64(s + 24) >> 12) & MASK51;
}

/* Limbs back under 2^51 (limb 0 at most 2^51 + 19*2^13 or so). */
static inline __attribute__((always_inline)) void fe_carry(fe *h)
{
    /* written out: -O2 does not unroll loops, and this is most of the work */
    h->v[1] += h->v[0] >> 51;
    h->v[0] &= MASK51;
    h->v[2] += h->v[1] >> 51;
    h->v[1] &= MASK51;
    h->v[3] += h->v[2] >> 51;
    h->v[2] &= MASK51;
    h->v[4] += h->v[3] >> 51;
    h->v[3] &= MASK51;
    h->v[0] += 19 * (h->v[4] >> 51);
    h->v[4] &= MASK51;
}

/* The canonical encoding: the integer below p. */
static void fe_tobytes(uint8_t s[32], const fe *f)
{
    fe h = *f;
    uint64_t q;

    /* three passes leave every limb below 2^51: h < 2^255 */
    fe_carry(&h);
    fe_carry(&h);
    fe_carry(&h);
    /* q = 1 when h >= p, that is when h + 19 reaches 2^255 */
    q = (h.v[0] + 19) >> 51;
    for (int i = 1; i < 5; i++)
        q = (h.v[i] + q) >> 51;
    /* h + 19q - 2^255 q: the carry out of limb 4 is dropped */
    h.v[0] += 19 * q;
    for (int i = 0; i < 4; i++) {
        h.v[i + 1] += h.v[i] >> 51;
        h.v[i] &= MASK51;
    }
    h.v[4] &= MASK51;
    store64(s, h.v[0] | h.v[1] << 51);
    store64(s + 8, h.v[1] >> 13 | h.v[2] << 38);
    store64(s + 16, h.v[2] >> 26 | h.v[3] << 25);
    store64(s + 24, h.v[3] >> 39 | h.v[4] << 12);
}

/* Not carried: sums of carried elements stay below 2^53, fine for fe_mul and fe_sub. */
static inline __attribute__((always_inline)) void fe_add(fe *h, const fe *f, const fe *g)
{
    h->v[0] = f->v[0] + g->v[0];
    h->v[1] = f->v[1] + g->v[1];
    h->v[2] = f->v[2] + g->v[2];
    h->v[3] = f->v[3] + g->v[3];
    h->v[4] = f->v[4] + g->v[4];
}

/* f - g + 4p, so that no limb goes below zero for carried inputs. */
static inline __attribute__((always_inline)) void fe_sub(fe *h, const fe *f, const fe *g)
{
    h->v[0] = f->v[0] + UINT64_C(0x1FFFFFFFFFFFB4) - g->v[0];
    h->v[1] = f->v[1] + UINT64_C(0x1FFFFFFFFFFFFC) - g->v[1];
    h->v[2] = f->v[2] + UINT64_C(0x1FFFFFFFFFFFFC) - g->v[2];
    h->v[3] = f->v[3] + UINT64_C(0x1FFFFFFFFFFFFC) - g->v[3];
    h->v[4] = f->v[4] + UINT64_C(0x1FFFFFFFFFFFFC) - g->v[4];
    fe_carry(h);
}

static void fe_neg(fe *h, const fe *f)
{
    static const fe zero = {{0}};

    fe_sub(h, &zero, f);
}

/* h = the 128-bit limb products r, carried (r is changed). */
static inline __attribute__((always_inline)) void fe_reduce(fe *h, u128 r[5])
{
    uint64_t c;

    r[1] += (uint64_t)(r[0] >> 51);
    h->v[0] = (uint64_t)r[0] & MASK51;
    r[2] += (uint64_t)(r[1] >> 51);
    h->v[1] = (uint64_t)r[1] & MASK51;
    r[3] += (uint64_t)(r[2] >> 51);
    h->v[2] = (uint64_t)r[2] & MASK51;
    r[4] += (uint64_t)(r[3] >> 51);
    h->v[3] = (uint64_t)r[3] & MASK51;
    c = (uint64_t)(r[4] >> 51);
    h->v[4] = (uint64_t)r[4] & MASK51;
    h->v[0] += 19 * c;
    c = h->v[0] >> 51;
    h->v[0] &= MASK51;
    h->v[1] += c;
}

static void fe_mul(fe *h, const fe *f, const fe *g)
{
    const uint64_t *a = f->v, *b = g->v;
    const uint64_t b19[5] = {0, 19 * b[1], 19 * b[2], 19 * b[3], 19 * b[4]};
    u128 r[5];

    r[0] = (u128)a[0] * b[0] + (u128)a[1] * b19[4] + (u128)a[2] * b19[3] + (u128)a[3] * b19[2] +
           (u128)a[4] * b19[1];
    r[1] = (u128)a[0] * b[1] + (u128)a[1] * b[0] + (u128)a[2] * b19[4] + (u128)a[3] * b19[3] +
           (u128)a[4] * b19[2];
    r[2] = (u128)a[0] * b[2] + (u128)a[1] * b[1] + (u128)a[2] * b[0] + (u128)a[3] * b19[4] +
           (u128)a[4] * b19[3];
    r[3] = (u128)a[0] * b[3] + (u128)a[1] * b[2] + (u128)a[2] * b[1] + (u128)a[3] * b[0] +
           (u128)a[4] * b19[4];
    r[4] = (u128)a[0] * b[4] + (u128)a[1] * b[3] + (u128)a[2] * b[2] + (u128)a[3] * b[1] +
           (u128)a[4] * b[0];
    fe_reduce(h, r);
}

static void fe_sq(fe *h, const fe *f)
{
    const uint64_t *a = f->v;
    uint64_t d0 = 2 * a[0], d1 = 2 * a[1], a3_19 = 19 * a[3], a4_19 = 19 * a[4];
    u128 r[5];

    r[0] = (u128)a[0] * a[0] + (u128)d1 * a4_19 + (u128)(2 * a[2]) * a3_19;
    r[1] = (u128)d0 * a[1] + (u128)(2 * a[2]) * a4_19 + (u128)a[3] * a3_19;
    r[2] = (u128)d0 * a[2] + (u128)a[1] * a[1] + (u128)(2 * a[3]) * a4_19;
    r[3] = (u128)d0 * a[3] + (u128)d1 * a[2] + (u128)a[4] * a4_19;
    r[4] = (u128)d0 * a[4] + (u128)d1 * a[3] + (u128)a[2] * a[2];
    fe_reduce(h, r);
}

static void fe_sq_n(fe *h, const fe *f, int n)
{
    fe_sq(h, f);
    for (int i = 1; i < n; i++)
        fe_sq(h, h);
}

/* z^(2^250 - 1) into *t250 and z^11 into *z11: the common start of both chains below. */
static void fe_pow_start(fe *t250, fe *z11, const fe *z)
{
    /* t[i + 1] = t[i]^(2^sq[i]) * t[by[i]]: exponents 2^k - 1 for k = 5, 10, 20, 40, 50, 100,
     * 200, 250 */
    static const int sq[7] = {5, 10, 20, 10, 50, 100, 50}, by[7] = {0, 1, 2, 1, 4, 5, 4};
    fe z2, z9, t0, t[8];

    fe_sq(&z2, z);
    fe_sq_n(&t0, &z2, 2);
    fe_mul(&z9, &t0, z);
    fe_mul(z11, &z9, &z2);
    fe_sq(&t0, z11);
    fe_mul(&t[0], &t0, &z9); /* 2^5 - 1 */
    for (int i = 0; i < 7; i++) {
        fe_sq_n(&t0, &t[i], sq[i]);
        fe_mul(&t[i + 1], &t0, &t[by[i]]);
    }
    *t250 = t[7];
}

/* z^(p - 2) = 1/z (0 for 0). */
static void fe_invert(fe *h, const fe *z)
{
    fe t, z11;

    fe_pow_start(&t, &z11, z);
    fe_sq_n(&t, &t, 5);
    fe_mul(h, &t, &z11); /* 2^255 - 21 */
}

/* z^((p - 5) / 8) = z^(2^252 - 3). */
static void fe_pow22523(fe *h, const fe *z)
{
    fe t, z11;

    fe_pow_start(&t, &z11, z);
    fe_sq_n(&t, &t, 2);
    fe_mul(h, &t, z);
}

static int fe_equal(const fe *f, const fe *g)
{
    uint8_t a[32], b[32];

    fe_tobytes(a, f);
    fe_tobytes(b, g);
    return memcmp(a, b, 32) == 0;
}

static int fe_is_zero(const fe *f)
{
    static const uint8_t zero[32] = {0};
    uint8_t a[32];

    fe_tobytes(a, f);
    return memcmp(a, zero, 32) == 0;
}

static int fe_is_odd(const fe *f)
{
    uint8_t a[32];

    fe_tobytes(a, f);
    return a[0] & 1;
}

static void ge_identity(ge *p)
{
    memset(p, 0, sizeof(*p));
    p->y.v[0] = 1;
    p->z.v[0] = 1;
}

/* RFC 8032 5.1.3, strictly: y < p, x recovered, no x = 0 with the sign bit set. */
static int ge_frombytes(ge *p, const uint8_t s[32])
{
    fe u, v, v3, vx2, d, check;
    uint8_t again[32];
    int sign = s[31] >> 7;

    fe_frombytes(&p->y, s);
    fe_tobytes(again, &p->y);
    again[31] |= (uint8_t)(sign << 7);
    if (memcmp(again, s, 32) != 0) /* y >= p */
        return -1;
    memset(&p->z, 0, sizeof(p->z));
    p->z.v[0] = 1;
    fe_frombytes(&d, d_bytes);
    fe_sq(&u, &p->y);
    fe_mul(&v, &u, &d);
    fe_sub(&u, &u, &p->z); /* u = y^2 - 1 */
    fe_add(&v, &v, &p->z); /* v = d y^2 + 1 */
    fe_sq(&v3, &v);
    fe_mul(&v3, &v3, &v);      /* v^3 */
    fe_sq(&p->x, &v3);         /* v^6 */
    fe_mul(&p->x, &p->x, &v);  /* v^7 */
    fe_mul(&p->x, &p->x, &u);  /* u v^7 */
    fe_pow22523(&p->x, &p->x); /* (u v^7)^((p-5)/8) */
    fe_mul(&p->x, &p->x, &v3);
    fe_mul(&p->x, &p->x, &u); /* x = u v^3 (u v^7)^((p-5)/8) */
    fe_sq(&vx2, &p->x);
    fe_mul(&vx2, &vx2, &v);
    if (!fe_equal(&vx2, &u)) {
        fe_neg(&check, &u);
        if (!fe_equal(&vx2, &check))
            return -1;
        fe_frombytes(&check, sqrtm1_bytes);
        fe_mul(&p->x, &p->x, &check);
    }
    if (fe_is_zero(&p->x) && sign)
        return -1;
    if (fe_is_odd(&p->x) != sign)
        fe_neg(&p->x, &p->x);
    fe_mul(&p->t, &p->x, &p->y);
    return 0;
}

/* The encoding of p, given zi = 1/Z. */
static void ge_tobytes_zi(uint8_t s[32], const ge *p, const fe *zi)
{
    fe x, y;

    fe_mul(&x, &p->x, zi);
    fe_mul(&y, &p->y, zi);
    fe_tobytes(s, &y);
    s[31] |= (uint8_t)(fe_is_odd(&x) << 7);
}

static void ge_tobytes(uint8_t s[32], const ge *p)
{
    fe zi;

    fe_invert(&zi, &p->z);
    ge_tobytes_zi(s, p, &zi);
}

/* The encodings of n points with one inversion (Montgomery's trick; Z is never 0). */
#define BATCH_MAX 4
static void ge_tobytes_batch(uint8_t (*s)[32], const ge *const p[], size_t n)
{
    fe prefix[BATCH_MAX], inv, zi;

    prefix[0] = p[0]->z;
    for (size_t i = 1; i < n; i++)
        fe_mul(&prefix[i], &prefix[i - 1], &p[i]->z);
    fe_invert(&inv, &prefix[n - 1]);
    for (size_t i = n - 1; i > 0; i--) {
        fe_mul(&zi, &inv, &prefix[i - 1]); /* 1/Z_i */
        fe_mul(&inv, &inv, &p[i]->z);      /* 1/(Z_0 ... Z_{i-1}) */
        ge_tobytes_zi(s[i], p[i], &zi);
    }
    ge_tobytes_zi(s[0], p[0], &inv);
}

static void ge_to_cached(ge_cached *c, const ge *p)
{
    fe d2;

    fe_frombytes(&d2, d_bytes);
    fe_add(&d2, &d2, &d2);
    fe_add(&c->ypx, &p->y, &p->x);
    fe_sub(&c->ymx, &p->y, &p->x);
    fe_add(&c->z2, &p->z, &p->z);
    fe_mul(&c->t2d, &p->t, &d2);
}

/* r = p + q, or p - q when neg. */
static void ge_add(ge *r, const ge *p, const ge_cached *q, int neg)
{
    fe a, b, c, d, e, f, g, h;

    fe_sub(&a, &p->y, &p->x);
    fe_add(&b, &p->y, &p->x);
    fe_mul(&a, &a, neg ? &q->ypx : &q->ymx);
    fe_mul(&b, &b, neg ? &q->ymx : &q->ypx);
    fe_mul(&c, &p->t, &q->t2d);
    if (neg)
        fe_neg(&c, &c);
    fe_mul(&d, &p->z, &q->z2);
    fe_sub(&e, &b, &a);
    fe_sub(&f, &d, &c);
    fe_add(&g, &d, &c);
    fe_add(&h, &b, &a);
    fe_mul(&r->x, &e, &f);
    fe_mul(&r->y, &g, &h);
    fe_mul(&r->t, &e, &h);
    fe_mul(&r->z, &f, &g);
}

/* r = 2p ("dbl-2008-hwcd" with a = -1); r->t only when with_t (a doubling reads no T). */
static void ge_dbl_t(ge *r, const ge *p, int with_t)
{
    fe a, b, c, e, g, f, h;

    fe_sq(&a, &p->x);
    fe_sq(&b, &p->y);
    fe_sq(&c, &p->z);
    fe_add(&c, &c, &c);
    fe_add(&e, &p->x, &p->y);
    fe_sq(&e, &e);
    fe_sub(&e, &e, &a);
    fe_sub(&e, &e, &b);
    fe_sub(&g, &b, &a);
    fe_sub(&f, &g, &c);
    fe_add(&h, &a, &b);
    fe_neg(&h, &h);
    fe_mul(&r->x, &e, &f);
    fe_mul(&r->y, &g, &h);
    if (with_t)
        fe_mul(&r->t, &e, &h);
    fe_mul(&r->z, &f, &g);
}

static void ge_dbl(ge *r, const ge *p)
{
    ge_dbl_t(r, p, 1);
}

/* The width-5 NAF of the 256-bit little-endian n: naf[i] odd in [-15, 15] or 0. */
static void naf5(int8_t naf[NAF_LEN], const uint8_t n[32])
{
    uint64_t k[5] = {0};

    memset(naf, 0, NAF_LEN);
    for (int i = 0; i < 4; i++)
        k[i] = load64(n + 8 * i);
    for (int i = 0; i < NAF_LEN && (k[0] | k[1] | k[2] | k[3] | k[4]) != 0; i++) {
        if (k[0] & 1) {
            int digit = (int)(k[0] & 31);

            if (digit >= 16)
                digit -= 32;
            naf[i] = (int8_t)digit;
            /* k -= digit: the low five bits become zero */
            if (digit > 0) {
                k[0] -= (uint64_t)digit; /* no borrow: k[0] & 31 == digit */
            } else {
                uint64_t add = (uint64_t)-digit;

                for (int w = 0; w < 5 && add != 0; w++) {
                    k[w] += add;
                    add = k[w] < add;
                }
            }
        }
        for (int w = 0; w < 4; w++)
            k[w] = k[w] >> 1 | k[w + 1] << 63;
        k[4] >>= 1;
    }
}

/* The odd multiples P, 3P, ..., 15P. */
static void odd_multiples(ge_cached table[TABLE], const ge *p)
{
    ge p2, acc = *p;
    ge_cached c2;

    ge_dbl(&p2, p);
    ge_to_cached(&c2, &p2);
    ge_to_cached(&table[0], p);
    for (int i = 1; i < TABLE; i++) {
        ge_add(&acc, &acc, &c2, 0);
        ge_to_cached(&table[i], &acc);
    }
}

/* acc = the sum of the n products naf[j] * (the point table[j] holds), subtracted when neg[j]. */
static void straus(ge *acc, size_t n, const ge_cached *const table[], int8_t naf[][NAF_LEN],
                   const int neg[])
{
    int top = NAF_LEN - 1;

    for (; top >= 0; top--) {
        size_t j = 0;

        while (j < n && naf[j][top] == 0)
            j++;
        if (j < n)
            break;
    }
    ge_identity(acc);
    for (int i = top; i >= 0; i--) {
        int adds = 0;

        for (size_t j = 0; j < n; j++)
            adds |= naf[j][i];
        ge_dbl_t(acc, acc, adds != 0);
        for (size_t j = 0; j < n; j++) {
            int digit = naf[j][i];

            if (digit != 0)
                ge_add(acc, acc, &table[j][(digit < 0 ? -digit : digit) / 2],
                       (digit < 0) != neg[j]);
        }
    }
}

static const uint8_t base_bytes[32] = {
    0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
    0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66};

/* The odd multiples of B and of 2^128 B, made once. */
static ge_cached base_table[2][TABLE];
static pthread_once_t base_once = PTHREAD_ONCE_INIT;

static void base_init(void)
{
    ge b;

    if (ge_frombytes(&b, base_bytes) != 0)
        abort(); /* the base point's encoding is a constant */
    odd_multiples(base_table[0], &b);
    for (int i = 0; i < 128; i++)
        ge_dbl(&b, &b);
    odd_multiples(base_table[1], &b);
}

msv_err msv_ed25519_table_of(struct msv_ed25519_table *t, const uint8_t p[32])
{
    ge pp;

    if (ge_frombytes(&pp, p) != 0)
        return MSV_ERR_AUTH;
    odd_multiples(t->m, &pp);
    return MSV_OK;
}

/* acc = a*B - b*Q for Q the point of table q: a*B = a_lo*B + a_hi*(2^128 B), half the doublings. */
static void base_mul_sub(ge *acc, const uint8_t a[32], const uint8_t b[32],
                         const struct msv_ed25519_table *q)
{
    int8_t naf[3][NAF_LEN];
    const ge_cached *table[3] = {base_table[0], q->m, base_table[1]};
    int neg[3] = {0, 1, 0};
    uint8_t half[32] = {0};

    pthread_once(&base_once, base_init);
    memcpy(half, a, 16);
    naf5(naf[0], half);
    memset(half, 0, sizeof(half));
    memcpy(half, a + 16, 16);
    naf5(naf[2], half);
    naf5(naf[1], b);
    straus(acc, 3, table, naf, neg);
}

msv_err msv_ed25519_mul_sub_vartime(uint8_t out[32], const uint8_t a[32], const uint8_t p[32],
                                    const uint8_t b[32], const uint8_t q[32])
{
    int8_t naf[2][NAF_LEN];
    struct msv_ed25519_table tp, tq;
    const ge_cached *table[2] = {tp.m, tq.m};
    int neg[2] = {0, 1};
    ge acc;

    if (msv_ed25519_table_of(&tq, q) != MSV_OK)
        return MSV_ERR_AUTH;
    if (memcmp(p, base_bytes, 32) == 0) {
        base_mul_sub(&acc, a, b, &tq);
    } else {
        if (msv_ed25519_table_of(&tp, p) != MSV_OK)
            return MSV_ERR_AUTH;
        naf5(naf[0], a);
        naf5(naf[1], b);
        straus(&acc, 2, table, naf, neg);
    }
    ge_tobytes(out, &acc);
    return MSV_OK;
}

msv_err msv_ed25519_vrf_points(const struct msv_ed25519_table *y, const uint8_t q[32], int clear,
                               const uint8_t gamma[32], const uint8_t s[32], const uint8_t c[32],
                               uint8_t h[32], uint8_t u[32], uint8_t v[32], uint8_t gamma8[32])
{
    int8_t naf[2][NAF_LEN];
    struct msv_ed25519_table th, tg;
    const ge_cached *table[2] = {th.m, tg.m};
    int neg[2] = {0, 1};
    uint8_t out[4][32];
    ge hh, gg, g8, uu, vv;
    const ge *all[4] = {&hh, &uu, &vv, &g8};

    if (ge_frombytes(&hh, q) != 0 || ge_frombytes(&gg, gamma) != 0)
        return MSV_ERR_AUTH;
    for (int i = 0; clear && i < 3; i++)
        ge_dbl(&hh, &hh);
    g8 = gg;
    for (int i = 0; i < 3; i++)
        ge_dbl_t(&g8, &g8, 0);
    base_mul_sub(&uu, s, c, y); /* U = s*B - c*Y */
    /* V = s*H - c*Gamma */
    odd_multiples(th.m, &hh);
    odd_multiples(tg.m, &gg);
    naf5(naf[0], s);
    naf5(naf[1], c);
    straus(&vv, 2, table, naf, neg);
    ge_tobytes_batch(out, all, 4);
    memcpy(h, out[0], 32);
    memcpy(u, out[1], 32);
    memcpy(v, out[2], 32);
    memcpy(gamma8, out[3], 32);
    return MSV_OK;
}

msv_err msv_ed25519_times8_vartime(uint8_t out[32], const uint8_t p[32])
{
    ge r;

    if (ge_frombytes(&r, p) != 0)
        return MSV_ERR_AUTH;
    for (int i = 0; i < 3; i++)
        ge_dbl_t(&r, &r, 0);
    ge_tobytes(out, &r);
    return MSV_OK;
}

/* A square root of a: 1 and *r when a is a square, 0 when it is not. */
static int fe_sqrt(fe *r, const fe *a)
{
    fe check, i;

    fe_pow22523(&check, a);
    fe_mul(r, &check, a); /* a^((p+3)/8) */
    fe_sq(&check, r);
    if (fe_equal(&check, a))
        return 1;
    fe_neg(&check, &check);
    if (!fe_equal(&check, a))
        return 0;
    fe_frombytes(&i, sqrtm1_bytes);
    fe_mul(r, r, &i);
    return 1;
}

/* g(x) = x^3 + J x^2 + x = ((x + J) x + 1) x, curve25519's right-hand side. */
static void curve_rhs(fe *out, const fe *x, const fe *j, const fe *one)
{
    fe t;

    fe_add(&t, x, j);
    fe_mul(&t, &t, x);
    fe_add(&t, &t, one);
    fe_mul(out, &t, x);
}

/* c1 = sqrt(-486664) with sgn0(c1) = 0 (RFC 9380 Appendix D) */
static const uint8_t c1_bytes[32] = {
    0x06, 0x7e, 0x45, 0xff, 0xaa, 0x04, 0x6e, 0xcc, 0x82, 0x1a, 0x7d, 0x4b, 0xd1, 0xd3, 0xa1, 0xc5,
    0x7e, 0x4f, 0xfc, 0x03, 0xdc, 0x08, 0x7b, 0xd2, 0xbb, 0x06, 0xa0, 0x60, 0xf4, 0xed, 0x26, 0x0f};

msv_err msv_ed25519_elligator2_vartime(uint8_t q[32], const uint8_t uniform[48])
{
    uint8_t le[32] = {0}, two192[32] = {0};
    fe u, hi, one = {{1}}, j = {{486662}}, tv, x1, gx, s, t, den, inv, w, v, c1;

    /* u = uniform as a big-endian integer mod p: hi * 2^192 + lo, 192 bits each */
    for (int i = 0; i < 24; i++)
        le[i] = uniform[47 - i];
    fe_frombytes(&u, le);
    for (int i = 0; i < 24; i++)
        le[i] = uniform[23 - i];
    fe_frombytes(&hi, le);
    two192[24] = 1;
    fe_frombytes(&tv, two192);
    fe_mul(&hi, &hi, &tv);
    fe_add(&u, &u, &hi);
    fe_carry(&u);
    /* x1 = -J / (1 + 2u^2); 1 + 2u^2 is never 0 (-1/2 is not a square) */
    fe_sq(&tv, &u);
    fe_add(&tv, &tv, &tv);
    fe_add(&tv, &tv, &one);
    fe_invert(&tv, &tv);
    fe_mul(&x1, &tv, &j);
    fe_neg(&x1, &x1);
    curve_rhs(&gx, &x1, &j, &one);
    if (fe_sqrt(&t, &gx)) {
        s = x1;
        if (!fe_is_odd(&t)) /* sgn0(t) = 1; t = 0 stays 0 */
            fe_neg(&t, &t);
    } else {
        /* x2 = -x1 - J, and g(x2) is a square */
        fe_add(&s, &x1, &j);
        fe_neg(&s, &s);
        curve_rhs(&gx, &s, &j, &one);
        if (!fe_sqrt(&t, &gx))
            return MSV_ERR_CRYPTO;
        if (fe_is_odd(&t))
            fe_neg(&t, &t);
    }
    /* (v, w) = (c1 s / t, (s - 1) / (s + 1)) with one inversion; the identity when t = 0 or s = -1
     */
    fe_add(&den, &s, &one);
    fe_mul(&inv, &den, &t);
    if (fe_is_zero(&inv)) {
        memset(q, 0, 32);
        q[0] = 1;
        return MSV_OK;
    }
    fe_invert(&inv, &inv);
    fe_sub(&w, &s, &one);
    fe_mul(&w, &w, &t);
    fe_mul(&w, &w, &inv);
    fe_frombytes(&c1, c1_bytes);
    fe_mul(&v, &c1, &s);
    fe_mul(&v, &v, &den);
    fe_mul(&v, &v, &inv);
    fe_tobytes(q, &w);
    q[31] |= (uint8_t)(fe_is_odd(&v) << 7);
    return MSV_OK;
}
