/* Multi-scalar multiplication on edwards25519, for checking many Ed25519 signatures at once.
 *
 * One function for Python: msm(points, scalars) -> the 32-byte encoding of sum(s_i * P_i), or None when a
 * point does not decode. points: n concatenated 32-byte encodings (canonical y, sign of x in the top bit);
 * scalars: n concatenated 32-byte little-endian integers. guard/audit/seal.py builds the batch equation of
 * n signatures by one key on it (check_signatures); the signature rules themselves live there.
 *
 * Variable time: it handles public data only (signatures, keys, the verifier's own random weights).
 *
 * Field elements mod p = 2^255 - 19 are five 51-bit limbs; products are accumulated in 128 bits. Points
 * are in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z, on -x^2 + y^2 = 1 + d x^2 y^2, with
 * the unified addition and doubling formulas of Hisil, Wong, Carter and Dawson (2008) for a = -1. The sum
 * is Straus's method: width-5 signed digits (w-NAF) per scalar, a table of the odd multiples P..15P per
 * point, and one shared run of doublings. tests/audit/test_signatures.py checks it against libsodium.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned __int128 u128;
typedef struct { uint64_t v[5]; } fe;
typedef struct { fe X, Y, Z, T; } ge;          /* extended coordinates */
typedef struct { fe ypx, ymx, z2, t2d; } gc;   /* a point ready to be added: Y+X, Y-X, 2Z, 2dT */

#define M51 ((uint64_t)0x7ffffffffffff)
#define W 5                    /* w-NAF width: digits are odd, -15..15 */
#define TAB (1 << (W - 2))     /* odd multiples kept per point: P, 3P, ..., 15P */
#define DIGITS 257

static const uint8_t D_BYTES[32] = {
    0xa3, 0x78, 0x59, 0x13, 0xca, 0x4d, 0xeb, 0x75, 0xab, 0xd8, 0x41, 0x41, 0x4d, 0x0a, 0x70, 0x00,
    0x98, 0xe8, 0x79, 0x77, 0x79, 0x40, 0xc7, 0x8c, 0x73, 0xfe, 0x6f, 0x2b, 0xee, 0x6c, 0x03, 0x52};
static const uint8_t SQRTM1_BYTES[32] = {
    0xb0, 0xa0, 0x0e, 0x4a, 0x27, 0x1b, 0xee, 0xc4, 0x78, 0xe4, 0x2f, 0xad, 0x06, 0x18, 0x43, 0x2f,
    0xa7, 0xd7, 0xfb, 0x3d, 0x99, 0x00, 0x4d, 0x2b, 0x0b, 0xdf, 0xc1, 0x4f, 0x80, 0x24, 0x83, 0x2b};
static fe FE_D, FE_D2, FE_SQRTM1;

static uint64_t load64(const uint8_t *s) {
    uint64_t r = 0;
    for (int i = 7; i >= 0; i--) r = (r << 8) | s[i];
    return r;
}

static void store64(uint8_t *s, uint64_t v) {
    for (int i = 0; i < 8; i++, v >>= 8) s[i] = (uint8_t)v;
}

/* ---- field ---- */

/* Weak reduction: limbs below 2^51, limb 0 below 2^51 + 2^18. */
static inline void fe_carry(fe *h) {
    uint64_t c;
    c = h->v[0] >> 51; h->v[0] &= M51; h->v[1] += c;
    c = h->v[1] >> 51; h->v[1] &= M51; h->v[2] += c;
    c = h->v[2] >> 51; h->v[2] &= M51; h->v[3] += c;
    c = h->v[3] >> 51; h->v[3] &= M51; h->v[4] += c;
    c = h->v[4] >> 51; h->v[4] &= M51; h->v[0] += 19 * c;
}

static inline void fe_add(fe *h, const fe *f, const fe *g) {
    for (int i = 0; i < 5; i++) h->v[i] = f->v[i] + g->v[i];
    fe_carry(h);
}

/* f - g + 4p, so that no limb goes below zero for weakly reduced g. */
static inline void fe_sub(fe *h, const fe *f, const fe *g) {
    h->v[0] = f->v[0] + ((uint64_t)1 << 53) - 76 - g->v[0];
    for (int i = 1; i < 5; i++) h->v[i] = f->v[i] + ((uint64_t)1 << 53) - 4 - g->v[i];
    fe_carry(h);
}

static inline void fe_neg(fe *h, const fe *f) {
    fe z = {{0, 0, 0, 0, 0}};
    fe_sub(h, &z, f);
}

/* The five 128-bit column sums, reduced to weakly reduced limbs. Inputs weakly reduced: each sum is below
 * 5 * 19 * 2^102.1 < 2^109, so every carry fits in 64 bits. */
static inline void fe_reduce(fe *h, u128 r0, u128 r1, u128 r2, u128 r3, u128 r4) {
    uint64_t c;
    r1 += (uint64_t)(r0 >> 51);
    r2 += (uint64_t)(r1 >> 51);
    r3 += (uint64_t)(r2 >> 51);
    r4 += (uint64_t)(r3 >> 51);
    c = (uint64_t)(r4 >> 51);
    h->v[0] = ((uint64_t)r0 & M51) + 19 * c;
    h->v[1] = (uint64_t)r1 & M51;
    h->v[2] = (uint64_t)r2 & M51;
    h->v[3] = (uint64_t)r3 & M51;
    h->v[4] = (uint64_t)r4 & M51;
    c = h->v[0] >> 51; h->v[0] &= M51; h->v[1] += c;
}

static void fe_mul(fe *h, const fe *f, const fe *g) {
    const uint64_t f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
    const uint64_t g0 = g->v[0], g1 = g->v[1], g2 = g->v[2], g3 = g->v[3], g4 = g->v[4];
    const uint64_t g1_19 = 19 * g1, g2_19 = 19 * g2, g3_19 = 19 * g3, g4_19 = 19 * g4;
    u128 r0 = (u128)f0 * g0 + (u128)f1 * g4_19 + (u128)f2 * g3_19 + (u128)f3 * g2_19 + (u128)f4 * g1_19;
    u128 r1 = (u128)f0 * g1 + (u128)f1 * g0 + (u128)f2 * g4_19 + (u128)f3 * g3_19 + (u128)f4 * g2_19;
    u128 r2 = (u128)f0 * g2 + (u128)f1 * g1 + (u128)f2 * g0 + (u128)f3 * g4_19 + (u128)f4 * g3_19;
    u128 r3 = (u128)f0 * g3 + (u128)f1 * g2 + (u128)f2 * g1 + (u128)f3 * g0 + (u128)f4 * g4_19;
    u128 r4 = (u128)f0 * g4 + (u128)f1 * g3 + (u128)f2 * g2 + (u128)f3 * g1 + (u128)f4 * g0;
    fe_reduce(h, r0, r1, r2, r3, r4);
}

static void fe_sq(fe *h, const fe *f) {
    const uint64_t f0 = f->v[0], f1 = f->v[1], f2 = f->v[2], f3 = f->v[3], f4 = f->v[4];
    const uint64_t f0_2 = 2 * f0, f1_2 = 2 * f1, f1_38 = 38 * f1, f2_38 = 38 * f2, f3_38 = 38 * f3;
    const uint64_t f3_19 = 19 * f3, f4_19 = 19 * f4;
    u128 r0 = (u128)f0 * f0 + (u128)f1_38 * f4 + (u128)f2_38 * f3;
    u128 r1 = (u128)f0_2 * f1 + (u128)f2_38 * f4 + (u128)f3_19 * f3;
    u128 r2 = (u128)f0_2 * f2 + (u128)f1 * f1 + (u128)f3_38 * f4;
    u128 r3 = (u128)f0_2 * f3 + (u128)f1_2 * f2 + (u128)f4_19 * f4;
    u128 r4 = (u128)f0_2 * f4 + (u128)f1_2 * f3 + (u128)f2 * f2;
    fe_reduce(h, r0, r1, r2, r3, r4);
}

static void fe_sqn(fe *h, const fe *f, int n) {
    fe_sq(h, f);
    while (--n > 0) fe_sq(h, h);
}

static void fe_frombytes(fe *h, const uint8_t s[32]) {  /* ignores the top bit */
    uint64_t a0 = load64(s), a1 = load64(s + 8), a2 = load64(s + 16), a3 = load64(s + 24);
    h->v[0] = a0 & M51;
    h->v[1] = ((a0 >> 51) | (a1 << 13)) & M51;
    h->v[2] = ((a1 >> 38) | (a2 << 26)) & M51;
    h->v[3] = ((a2 >> 25) | (a3 << 39)) & M51;
    h->v[4] = (a3 >> 12) & M51;
}

static void fe_tobytes(uint8_t s[32], const fe *f) {  /* the canonical encoding, 0 <= value < p */
    fe t = *f;
    fe_carry(&t);
    fe_carry(&t);  /* now every limb < 2^51: the value is below 2^255 < 2p */
    uint64_t q = (t.v[0] + 19) >> 51;  /* q = 1 iff value >= p */
    q = (t.v[1] + q) >> 51;
    q = (t.v[2] + q) >> 51;
    q = (t.v[3] + q) >> 51;
    q = (t.v[4] + q) >> 51;
    t.v[0] += 19 * q;  /* value - p = value + 19 - 2^255 */
    uint64_t c;
    c = t.v[0] >> 51; t.v[0] &= M51; t.v[1] += c;
    c = t.v[1] >> 51; t.v[1] &= M51; t.v[2] += c;
    c = t.v[2] >> 51; t.v[2] &= M51; t.v[3] += c;
    c = t.v[3] >> 51; t.v[3] &= M51; t.v[4] += c;
    t.v[4] &= M51;
    store64(s, t.v[0] | (t.v[1] << 51));
    store64(s + 8, (t.v[1] >> 13) | (t.v[2] << 38));
    store64(s + 16, (t.v[2] >> 26) | (t.v[3] << 25));
    store64(s + 24, (t.v[3] >> 39) | (t.v[4] << 12));
}

static int fe_iszero(const fe *f) {
    uint8_t s[32];
    fe_tobytes(s, f);
    uint8_t acc = 0;
    for (int i = 0; i < 32; i++) acc |= s[i];
    return acc == 0;
}

static int fe_isodd(const fe *f) {
    uint8_t s[32];
    fe_tobytes(s, f);
    return s[0] & 1;
}

/* z^(2^250 - 1), and z^11 in *z11 */
static void fe_pow2_250_1(fe *out, fe *z11, const fe *z) {
    fe t0, t1, t2, t3;
    fe_sq(&t0, z);              /* z^2 */
    fe_sqn(&t1, &t0, 2);        /* z^8 */
    fe_mul(&t1, &t1, z);        /* z^9 */
    fe_mul(z11, &t0, &t1);      /* z^11 */
    fe_sq(&t2, z11);            /* z^22 */
    fe_mul(&t1, &t1, &t2);      /* z^31 = z^(2^5 - 1) */
    fe_sqn(&t2, &t1, 5);
    fe_mul(&t1, &t2, &t1);      /* 2^10 - 1 */
    fe_sqn(&t2, &t1, 10);
    fe_mul(&t2, &t2, &t1);      /* 2^20 - 1 */
    fe_sqn(&t3, &t2, 20);
    fe_mul(&t2, &t3, &t2);      /* 2^40 - 1 */
    fe_sqn(&t2, &t2, 10);
    fe_mul(&t1, &t2, &t1);      /* 2^50 - 1 */
    fe_sqn(&t2, &t1, 50);
    fe_mul(&t2, &t2, &t1);      /* 2^100 - 1 */
    fe_sqn(&t3, &t2, 100);
    fe_mul(&t2, &t3, &t2);      /* 2^200 - 1 */
    fe_sqn(&t2, &t2, 50);
    fe_mul(out, &t2, &t1);      /* 2^250 - 1 */
}

static void fe_invert(fe *out, const fe *z) {  /* z^(p - 2) = z^(2^255 - 21) */
    fe t, z11;
    fe_pow2_250_1(&t, &z11, z);
    fe_sqn(&t, &t, 5);
    fe_mul(out, &t, &z11);
}

static void fe_pow22523(fe *out, const fe *z) {  /* z^((p - 5) / 8) = z^(2^252 - 3) */
    fe t, z11;
    fe_pow2_250_1(&t, &z11, z);
    fe_sqn(&t, &t, 2);
    fe_mul(out, &t, z);
}

/* ---- points ---- */

static void ge_identity(ge *p) {
    memset(p, 0, sizeof *p);
    p->Y.v[0] = 1;
    p->Z.v[0] = 1;
}

/* Decode: y canonical (< p), x recovered from y with the sign in the top bit; 0 if not a curve point. */
static int ge_frombytes(ge *p, const uint8_t s[32]) {
    uint8_t back[32];
    fe y, y2, u, v, v3, x, vx2, t, one = {{1, 0, 0, 0, 0}};
    int sign = s[31] >> 7;
    fe_frombytes(&y, s);
    fe_tobytes(back, &y);
    if (memcmp(back, s, 31) != 0 || back[31] != (s[31] & 0x7f)) return 0;  /* y >= p */
    fe_sq(&y2, &y);
    fe_sub(&u, &y2, &one);              /* u = y^2 - 1 */
    fe_mul(&v, &y2, &FE_D);
    fe_add(&v, &v, &one);               /* v = d y^2 + 1 */
    fe_sq(&v3, &v);
    fe_mul(&v3, &v3, &v);               /* v^3 */
    fe_sq(&x, &v3);
    fe_mul(&x, &x, &v);
    fe_mul(&x, &x, &u);                 /* u v^7 */
    fe_pow22523(&x, &x);
    fe_mul(&x, &x, &v3);
    fe_mul(&x, &x, &u);                 /* x = u v^3 (u v^7)^((p - 5) / 8) */
    fe_sq(&vx2, &x);
    fe_mul(&vx2, &vx2, &v);
    fe_sub(&t, &vx2, &u);
    if (!fe_iszero(&t)) {
        fe_add(&t, &vx2, &u);
        if (!fe_iszero(&t)) return 0;   /* u / v is not a square */
        fe_mul(&x, &x, &FE_SQRTM1);
    }
    if (fe_iszero(&x) && sign) return 0;
    if (fe_isodd(&x) != sign) fe_neg(&x, &x);
    p->X = x;
    p->Y = y;
    memset(&p->Z, 0, sizeof p->Z);
    p->Z.v[0] = 1;
    fe_mul(&p->T, &x, &y);
    return 1;
}

static void ge_tobytes(uint8_t s[32], const ge *p) {
    fe zi, x, y;
    fe_invert(&zi, &p->Z);
    fe_mul(&x, &p->X, &zi);
    fe_mul(&y, &p->Y, &zi);
    fe_tobytes(s, &y);
    s[31] |= (uint8_t)(fe_isodd(&x) << 7);
}

static void ge_cached(gc *c, const ge *p) {
    fe_add(&c->ypx, &p->Y, &p->X);
    fe_sub(&c->ymx, &p->Y, &p->X);
    fe_add(&c->z2, &p->Z, &p->Z);
    fe_mul(&c->t2d, &p->T, &FE_D2);
}

/* r = p + q (neg = 0) or p - q (neg = 1); r may be p. */
static void ge_add(ge *r, const ge *p, const gc *q, int neg) {
    fe a, b, c, d, e, f, g, h;
    fe_sub(&a, &p->Y, &p->X);
    fe_mul(&a, &a, neg ? &q->ypx : &q->ymx);
    fe_add(&b, &p->Y, &p->X);
    fe_mul(&b, &b, neg ? &q->ymx : &q->ypx);
    fe_mul(&c, &p->T, &q->t2d);
    fe_mul(&d, &p->Z, &q->z2);
    fe_sub(&e, &b, &a);
    if (neg) {
        fe_add(&f, &d, &c);
        fe_sub(&g, &d, &c);
    } else {
        fe_sub(&f, &d, &c);
        fe_add(&g, &d, &c);
    }
    fe_add(&h, &b, &a);
    fe_mul(&r->X, &e, &f);
    fe_mul(&r->Y, &g, &h);
    fe_mul(&r->T, &e, &h);
    fe_mul(&r->Z, &f, &g);
}

/* r = 2p; T of the result only when want_t (the next step is an addition). r may be p. */
static void ge_dbl(ge *r, const ge *p, int want_t) {
    fe a, b, c, e, f, g, h;
    fe_sq(&a, &p->X);
    fe_sq(&b, &p->Y);
    fe_sq(&c, &p->Z);
    fe_add(&c, &c, &c);
    fe_add(&e, &p->X, &p->Y);
    fe_sq(&e, &e);
    fe_add(&h, &a, &b);
    fe_sub(&e, &e, &h);                 /* 2xy */
    fe_sub(&g, &b, &a);
    fe_sub(&f, &g, &c);
    fe_neg(&h, &h);
    fe_mul(&r->X, &e, &f);
    fe_mul(&r->Y, &g, &h);
    fe_mul(&r->Z, &f, &g);
    if (want_t) fe_mul(&r->T, &e, &h);
}

/* ---- scalars ---- */

/* Width-W NAF of a 256-bit little-endian scalar: sum(naf[i] 2^i) = s, each digit 0 or odd in
 * [-(2^(W-1) - 1), 2^(W-1) - 1], and any W consecutive digits hold at most one that is not 0.
 * Returns the index of the top digit that is not 0, or -1 for s = 0. */
static int wnaf(int8_t naf[DIGITS], const uint8_t s[32]) {
    uint64_t k[5] = {load64(s), load64(s + 8), load64(s + 16), load64(s + 24), 0};
    int top = -1;
    memset(naf, 0, DIGITS);
    for (int i = 0; i < DIGITS; i++) {
        if ((k[0] | k[1] | k[2] | k[3] | k[4]) == 0) break;
        if (k[0] & 1) {
            int dig = (int)(k[0] & ((1u << W) - 1));
            if (dig >= (1 << (W - 1))) dig -= 1 << W;
            naf[i] = (int8_t)dig;
            top = i;
            if (dig > 0) {  /* k -= dig */
                uint64_t b = k[0] < (uint64_t)dig;
                k[0] -= (uint64_t)dig;
                for (int j = 1; j < 5; j++) { uint64_t t = k[j]; k[j] = t - b; b = t < b; }
            } else {        /* k += -dig */
                uint64_t a = (uint64_t)(-dig);
                k[0] += a;
                uint64_t c = k[0] < a;
                for (int j = 1; j < 5; j++) { k[j] += c; c = k[j] < c; }
            }
        }
        k[0] = (k[0] >> 1) | (k[1] << 63);
        k[1] = (k[1] >> 1) | (k[2] << 63);
        k[2] = (k[2] >> 1) | (k[3] << 63);
        k[3] = (k[3] >> 1) | (k[4] << 63);
        k[4] >>= 1;
    }
    return top;
}

/* out = sum(scalar_i * point_i). 0: done; -1: a point does not decode; -2: out of memory. */
static int msm(uint8_t out[32], const uint8_t *points, const uint8_t *scalars, size_t n) {
    gc *tab = n ? malloc(n * TAB * sizeof(gc)) : NULL;
    int8_t *naf = n ? malloc(n * DIGITS) : NULL;
    int rc = 0, top = -1;
    ge acc;
    if (n && (!tab || !naf)) { rc = -2; goto done; }
    for (size_t i = 0; i < n; i++) {
        ge p, p2;
        gc c2;
        if (!ge_frombytes(&p, points + 32 * i)) { rc = -1; goto done; }
        gc *t = tab + i * TAB;
        ge_cached(&t[0], &p);
        ge_dbl(&p2, &p, 1);
        ge_cached(&c2, &p2);
        for (int k = 1; k < TAB; k++) {  /* t[k] = (2k + 1) P */
            ge_add(&p, &p, &c2, 0);
            ge_cached(&t[k], &p);
        }
        int tp = wnaf(naf + i * DIGITS, scalars + 32 * i);
        if (tp > top) top = tp;
    }
    ge_identity(&acc);
    for (int j = top; j >= 0; j--) {
        int adds = 0;
        for (size_t i = 0; i < n && !adds; i++) adds = naf[i * DIGITS + j] != 0;
        if (j != top) ge_dbl(&acc, &acc, adds);
        for (size_t i = 0; i < n; i++) {
            int dig = naf[i * DIGITS + j];
            if (dig > 0) ge_add(&acc, &acc, &tab[i * TAB + dig / 2], 0);
            else if (dig < 0) ge_add(&acc, &acc, &tab[i * TAB + (-dig) / 2], 1);
        }
    }
    ge_tobytes(out, &acc);
done:
    free(tab);
    free(naf);
    return rc;
}

static PyObject *py_msm(PyObject *self, PyObject *args) {
    Py_buffer pts, scs;
    uint8_t out[32];
    int rc;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*:msm", &pts, &scs)) return NULL;
    if (pts.len % 32 != 0 || scs.len != pts.len) {
        PyBuffer_Release(&pts);
        PyBuffer_Release(&scs);
        PyErr_SetString(PyExc_ValueError, "msm: points and scalars must be n * 32 bytes each");
        return NULL;
    }
    size_t n = (size_t)pts.len / 32;
    Py_BEGIN_ALLOW_THREADS
    rc = msm(out, pts.buf, scs.buf, n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&pts);
    PyBuffer_Release(&scs);
    if (rc == -2) return PyErr_NoMemory();
    if (rc == -1) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyMethodDef methods[] = {
    {"msm", py_msm, METH_VARARGS,
     "msm(points, scalars) -> bytes | None\n\nThe encoding of sum(s_i * P_i) over edwards25519; None when a "
     "point does not decode.\npoints: n 32-byte point encodings; scalars: n 32-byte little-endian integers."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ed25519_batch",
                                    "Multi-scalar multiplication on edwards25519 (see seal.check_signatures).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__ed25519_batch(void) {
    fe_frombytes(&FE_D, D_BYTES);
    fe_add(&FE_D2, &FE_D, &FE_D);
    fe_frombytes(&FE_SQRTM1, SQRTM1_BYTES);
    return PyModule_Create(&module);
}
