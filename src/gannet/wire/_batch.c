/* The per-row work of a GSO train or a GRO batch, in one call.
 *
 * gannet/wire/batch.py decides everything: the header every row carries,
 * which fields of a row must equal the first row's (its masks), where the
 * sequence number lies, what makes a run. This module only does, for every
 * row at once, what batch.py's Python equivalent does with numpy and one
 * CRC32C call per row:
 *
 *   encode_rows  writes a train: the header template into every row, each
 *                row's sequence number, its payload, the last row's flags
 *                byte and each row's CRC32C trailer (little-endian);
 *   same_rows    checks that every row's header words equal the first
 *                row's under the masks and that the sequence numbers step
 *                by the payload size, and if so returns the payloads joined;
 *                asked to, it also checks every row's CRC32C (the receiver's
 *                check of a GRO batch), in the same pass as the join;
 *   scan_run     batch.scan's common case: a GRO batch whose full rows
 *                are one run, its header fields read, its rows checked as
 *                same_rows checks them and joined, scan's tuple built;
 *   encode_heads writes only what a train adds around its payloads, each
 *                row's header and CRC32C trailer, for a train whose
 *                payloads stay in the sender's buffer (a SourceTrain: large
 *                rows, each row's CRC computed in three parts side by side
 *                and combined);
 *   send_trains  sends several trains in one sendmmsg (Linux), a message
 *                each: a GSO train with its UDP_SEGMENT size, a
 *                SourceTrain's headers, payloads and trailers gathered
 *                from where they lie; what a sendmsg of each would send,
 *                for one system call;
 *   follows      tells whether two views of one bytes object are
 *                consecutive in it, and gives the view of both (the send
 *                buffer keeps a writer's consecutive slices as one chunk).
 *
 * The Python equivalent stays complete: it runs where this module is not
 * built, where the CPU has no CRC32C instruction (HARDWARE_CRC false), and
 * under GANNET_PURE=1; tests/core/test_batch_native.py holds the two to the
 * same bytes and the same verdicts.
 *
 * CRC32C (Castagnoli) with SSE4.2's crc32 instruction. One row's CRC is a
 * chain of dependent instructions (3 cycles each); the rows of a train are
 * independent, so three rows are computed side by side, which keeps the
 * instruction's unit busy every cycle, as the crc32c package does by
 * splitting one buffer three ways.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef __linux__
#include <sys/socket.h>
#include <sys/uio.h>
#define HAVE_SENDMMSG 1
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#else
#define HAVE_SENDMMSG 0
#endif

#include "../_crc32c.h"

#define HAVE_SSE42_BUILD GANNET_HW_CRC
#if HAVE_SSE42_BUILD
#include <nmmintrin.h>
#endif

#define TRAILER_SIZE 4

static int hardware_crc = 0;

#if HAVE_SSE42_BUILD
/* Three buffers of `n` bytes each, side by side, going on from the running
 * values in c[] (0xFFFFFFFF to start; not inverted at the end). */
__attribute__((target("sse4.2")))
static void crc_three_on(uint32_t c[3], const unsigned char *a, const unsigned char *b,
                         const unsigned char *d, size_t n)
{
    uint64_t ca = c[0], cb = c[1], cd = c[2];
    size_t i = 0;
    /* (two words a lane per turn: the loop's own instructions were a third
     * of the total at one) */
    for (; i + 16 <= n; i += 16) {
        uint64_t va, vb, vd, wa, wb, wd;
        memcpy(&va, a + i, 8);
        memcpy(&vb, b + i, 8);
        memcpy(&vd, d + i, 8);
        memcpy(&wa, a + i + 8, 8);
        memcpy(&wb, b + i + 8, 8);
        memcpy(&wd, d + i + 8, 8);
        ca = _mm_crc32_u64(ca, va);
        cb = _mm_crc32_u64(cb, vb);
        cd = _mm_crc32_u64(cd, vd);
        ca = _mm_crc32_u64(ca, wa);
        cb = _mm_crc32_u64(cb, wb);
        cd = _mm_crc32_u64(cd, wd);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t va, vb, vd;
        memcpy(&va, a + i, 8);
        memcpy(&vb, b + i, 8);
        memcpy(&vd, d + i, 8);
        ca = _mm_crc32_u64(ca, va);
        cb = _mm_crc32_u64(cb, vb);
        cd = _mm_crc32_u64(cd, vd);
    }
    uint32_t ra = (uint32_t)ca, rb = (uint32_t)cb, rd = (uint32_t)cd;
    for (; i < n; i++) {
        ra = _mm_crc32_u8(ra, a[i]);
        rb = _mm_crc32_u8(rb, b[i]);
        rd = _mm_crc32_u8(rd, d[i]);
    }
    c[0] = ra;
    c[1] = rb;
    c[2] = rd;
}

/* The CRC32Cs of three buffers of `n` bytes each. */
__attribute__((target("sse4.2")))
static void crc_three(const unsigned char *a, const unsigned char *b, const unsigned char *d,
                      size_t n, uint32_t out[3])
{
    uint32_t c[3] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    crc_three_on(c, a, b, d, n);
    out[0] = ~c[0];
    out[1] = ~c[1];
    out[2] = ~c[2];
}
#endif

/* CRC32C of A followed by B from the CRC32Cs of A and B and B's length: the
 * CRC of A moved on by len(B) zero bytes (a multiplication by x^(8 len(B))
 * modulo the polynomial, reflected), plus B's. As zlib's crc32_combine does
 * for its polynomial; x2n[k] holds x^(2^k) modulo the polynomial. */
#define CRC32C_POLY 0x82F63B78u
static uint32_t x2n[32];

static uint32_t multmodp(uint32_t a, uint32_t b)
{
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ CRC32C_POLY : b >> 1;
    }
    return p;
}

static void init_x2n(void)
{
    uint32_t p = 1u << 30;  /* x^1 */
    x2n[0] = p;
    for (int k = 1; k < 32; k++)
        x2n[k] = p = multmodp(p, p);
}

static uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b)
{
    uint32_t p = 1u << 31;  /* x^0 */
    unsigned k = 3;  /* x^(8 len_b) = x^(len_b 2^3) */
    for (size_t n = len_b; n; n >>= 1, k++)
        if (n & 1)
            p = multmodp(x2n[k & 31], p);
    return multmodp(p, crc_a) ^ crc_b;
}

/* The running CRC32C (not inverted) of `n` bytes from `crc`. */
static uint32_t crc32c_on(uint32_t crc, const unsigned char *p, size_t n)
{
#if HAVE_SSE42_BUILD
    return crc32c_lane(crc, p, n);
#else
    (void)p; (void)n;
    return crc;  /* not reached: batch.py uses this module only with HARDWARE_CRC */
#endif
}

static uint32_t crc32c_of(const unsigned char *p, size_t n)
{
#if HAVE_SSE42_BUILD
    return ~crc32c_lane(0xFFFFFFFFu, p, n);
#else
    (void)p; (void)n;
    return 0;  /* not reached: batch.py uses this module only with HARDWARE_CRC */
#endif
}

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* What encode_rows and encode_heads both take: a writable buffer, the
 * header, the source of the payloads (args 0-2), then offset, seq, mss,
 * the rows' size (encode_rows) or the payloads' length (encode_heads),
 * last_flags and seq_at (args 3-8). On failure the buffers are released
 * and -1 returned with the error set. */
typedef struct {
    Py_buffer out, header, src;
    Py_ssize_t offset, mss, n, seq_at;
    unsigned long long seq;
    long last_flags;
} RowArgs;

static int get_row_args(PyObject *const *args, RowArgs *a)
{
    if (PyObject_GetBuffer(args[0], &a->out, PyBUF_WRITABLE) < 0)
        return -1;
    if (PyObject_GetBuffer(args[1], &a->header, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&a->out);
        return -1;
    }
    if (PyObject_GetBuffer(args[2], &a->src, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&a->header);
        PyBuffer_Release(&a->out);
        return -1;
    }
    a->offset = PyLong_AsSsize_t(args[3]);
    a->seq = PyLong_AsUnsignedLongLongMask(args[4]);
    a->mss = PyLong_AsSsize_t(args[5]);
    a->n = PyLong_AsSsize_t(args[6]);
    a->last_flags = PyLong_AsLong(args[7]);
    a->seq_at = PyLong_AsSsize_t(args[8]);
    return 0;
}

static void release_row_args(RowArgs *a)
{
    PyBuffer_Release(&a->src);
    PyBuffer_Release(&a->header);
    PyBuffer_Release(&a->out);
}

/* Row k's header (batch.py's rule for a run's rows): `header` with the
 * sequence number seq + k * mss (mod 2**32), big-endian, at seq_at. */
static inline void put_row_head(unsigned char *row, const RowArgs *a, Py_ssize_t k)
{
    memcpy(row, a->header.buf, (size_t)a->header.len);
    put_be32(row + a->seq_at, (uint32_t)a->seq + (uint32_t)k * (uint32_t)a->mss);
}

/* encode_rows(out, header, src, offset, seq, mss, size, last_flags, seq_at, trailers)
 *
 * `out` (writable) holds rows of `size` bytes, the last maybe shorter; row
 * k is `header` with the 32-bit big-endian sequence number seq + k * mss
 * (mod 2**32) at `seq_at`, then the next payload bytes of `src` from
 * `offset` (mss bytes each, the last row what its length leaves), then, with `trailers`, the
 * CRC32C of all that, little-endian. The last row's byte 1 (the flags) is
 * `last_flags`. `src` must hold the payloads of all the rows. */
static PyObject *encode_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "encode_rows takes 10 arguments");
        return NULL;
    }
    RowArgs a;
    if (get_row_args(args, &a) < 0)
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t offset = a.offset, mss = a.mss, size = a.n, seq_at = a.seq_at;
    long last_flags = a.last_flags;
    int trailers = PyObject_IsTrue(args[9]);
    if (PyErr_Occurred())
        goto done;
    Py_buffer src = a.src;
    Py_ssize_t hlen = a.header.len, n = a.out.len;
    if (mss <= 0 || size != hlen + mss + TRAILER_SIZE || seq_at < 0 || seq_at + 4 > hlen
            || hlen < 2 || n <= 0 || last_flags < 0 || last_flags > 255) {
        PyErr_SetString(PyExc_ValueError, "encode_rows: inconsistent sizes");
        goto done;
    }
    Py_ssize_t rows = (n + size - 1) / size;
    Py_ssize_t tail = n - (rows - 1) * size;  /* the last row's length */
    if (tail < hlen + 1 + TRAILER_SIZE) {
        PyErr_SetString(PyExc_ValueError, "encode_rows: the last row has no payload");
        goto done;
    }
    Py_ssize_t payload = (rows - 1) * mss + (tail - hlen - TRAILER_SIZE);
    if (offset < 0 || src.len - offset < payload) {
        PyErr_SetString(PyExc_ValueError, "encode_rows: src is shorter than the rows' payloads");
        goto done;
    }
    unsigned char *o = a.out.buf;
    const unsigned char *s = (const unsigned char *)src.buf + offset;
    for (Py_ssize_t k = 0; k < rows; k++) {
        unsigned char *row = o + k * size;
        Py_ssize_t body = (k == rows - 1 ? tail : size) - TRAILER_SIZE;
        put_row_head(row, &a, k);
        memcpy(row + hlen, s + k * mss, body - hlen);
    }
    o[(rows - 1) * size + 1] = (unsigned char)last_flags;
    if (trailers) {
        Py_ssize_t k = 0;
        Py_ssize_t body = size - TRAILER_SIZE;
        Py_ssize_t full = tail == size ? rows : rows - 1;
#if HAVE_SSE42_BUILD
        for (; k + 3 <= full; k += 3) {
            uint32_t c[3];
            unsigned char *r = o + k * size;
            crc_three(r, r + size, r + 2 * size, (size_t)body, c);
            put_le32(r + body, c[0]);
            put_le32(r + size + body, c[1]);
            put_le32(r + 2 * size + body, c[2]);
        }
#endif
        for (; k < rows; k++) {
            unsigned char *r = o + k * size;
            Py_ssize_t len = (k == rows - 1 ? tail : size) - TRAILER_SIZE;
            put_le32(r + len, crc32c_of(r, (size_t)len));
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    release_row_args(&a);
    return result;
}

/* The CRC32C of rows first .. first+k-1 (k <= 3) of `seg` bytes each,
 * compared with `residue`: 1 if every one matches. */
static int rows_match(const unsigned char *b, Py_ssize_t seg, Py_ssize_t first, Py_ssize_t k,
                      uint32_t residue)
{
#if HAVE_SSE42_BUILD
    if (k == 3) {
        uint32_t c[3];
        const unsigned char *r = b + first * seg;
        crc_three(r, r + seg, r + 2 * seg, (size_t)seg, c);
        return c[0] == residue && c[1] == residue && c[2] == residue;
    }
#endif
    for (Py_ssize_t j = first; j < first + k; j++)
        if (crc32c_of(b + j * seg, (size_t)seg) != residue)
            return 0;
    return 1;
}

/* same_rows' work on `count` rows of `seg` bytes at `b` (see same_rows):
 * the payloads joined (bytes), Py_None (not one run) or Py_False (a CRC is
 * wrong, when `check`); NULL with an exception if memory runs out. */
static PyObject *join_rows(const unsigned char *b, Py_ssize_t seg, Py_ssize_t count,
                           const uint32_t *mask, Py_ssize_t words, Py_ssize_t seq_at,
                           Py_ssize_t data_at, Py_ssize_t mss, int check, uint32_t residue)
{
    uint32_t first[16];
    for (Py_ssize_t w = 0; w < words; w++)
        first[w] = get_be32(b + 4 * w) & mask[w];
    uint32_t seq0 = get_be32(b + seq_at);
    int run = 1;
    for (Py_ssize_t k = 1; k < count && run; k++) {
        const unsigned char *row = b + k * seg;
        for (Py_ssize_t w = 0; w < words; w++) {
            if ((get_be32(row + 4 * w) & mask[w]) != first[w]) {
                run = 0;
                break;
            }
        }
        if (get_be32(row + seq_at) != (uint32_t)(seq0 + (uint32_t)k * (uint32_t)mss))
            run = 0;
    }
    PyObject *result = NULL;
    unsigned char *d = NULL;
    if (run) {
        result = PyBytes_FromStringAndSize(NULL, mss * count);
        if (result == NULL)
            return NULL;
        d = (unsigned char *)PyBytes_AS_STRING(result);
    }
    for (Py_ssize_t k = 0; k < count; k += 3) {
        Py_ssize_t m = count - k < 3 ? count - k : 3;
        if (check && !rows_match(b, seg, k, m, residue)) {
            Py_XDECREF(result);
            Py_RETURN_FALSE;
        }
        if (d != NULL)
            for (Py_ssize_t j = k; j < k + m; j++)
                memcpy(d + j * mss, b + j * seg + data_at, mss);
    }
    if (result == NULL)
        Py_RETURN_NONE;
    return result;
}

/* same_rows(buf, seg, count, masks, seq_at, data_at, mss, residue) -> bytes | None | False
 *
 * `buf` holds `count` rows of `seg` bytes. Every row's first len(masks)
 * 32-bit big-endian words must equal the first row's wherever the mask has
 * a bit set, and its sequence number (big-endian, at `seq_at`) must be the
 * first row's plus k * mss (mod 2**32). Then the rows' payloads (`mss`
 * bytes from `data_at` in each) joined, else None.
 *
 * `residue` None checks no CRC. An int is the CRC32C every correct row has
 * (its trailer included): then False if any row's differs, whatever the
 * headers say, so that None means "correct rows, not one run". The CRCs
 * are computed three rows side by side, and each three rows' payloads are
 * copied right after, while they are in the L1 cache: one pass over the
 * batch where a CRC call over all of it and then the join made two. */
static PyObject *same_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "same_rows takes 8 arguments");
        return NULL;
    }
    Py_ssize_t seg = PyLong_AsSsize_t(args[1]);
    Py_ssize_t count = PyLong_AsSsize_t(args[2]);
    Py_ssize_t seq_at = PyLong_AsSsize_t(args[4]);
    Py_ssize_t data_at = PyLong_AsSsize_t(args[5]);
    Py_ssize_t mss = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred())
        return NULL;
    int check = args[7] != Py_None;
    uint32_t residue = 0;
    if (check) {
        unsigned long r = PyLong_AsUnsignedLong(args[7]);
        if (PyErr_Occurred())
            return NULL;
        if (r > 0xFFFFFFFFul) {
            PyErr_SetString(PyExc_ValueError, "same_rows: residue is not a 32-bit CRC");
            return NULL;
        }
        residue = (uint32_t)r;
    }
    PyObject *masks = args[3];
    if (!PyTuple_Check(masks) || PyTuple_GET_SIZE(masks) > 16) {
        PyErr_SetString(PyExc_TypeError, "same_rows: masks must be a tuple of at most 16 ints");
        return NULL;
    }
    Py_ssize_t words = PyTuple_GET_SIZE(masks);
    uint32_t mask[16];
    for (Py_ssize_t w = 0; w < words; w++) {
        mask[w] = (uint32_t)PyLong_AsUnsignedLongMask(PyTuple_GET_ITEM(masks, w));
        if (PyErr_Occurred())
            return NULL;
    }
    if (seg <= 0 || count <= 0 || mss < 0 || words * 4 > seg || seq_at < 0 || seq_at + 4 > seg
            || data_at < 0 || data_at + mss > seg) {
        PyErr_SetString(PyExc_ValueError, "same_rows: inconsistent sizes");
        return NULL;
    }
    Py_buffer in;
    if (PyObject_GetBuffer(args[0], &in, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    if (in.len < seg * count)
        PyErr_SetString(PyExc_ValueError, "same_rows: buf is shorter than its rows");
    else
        result = join_rows(in.buf, seg, count, mask, words, seq_at, data_at, mss, check, residue);
    PyBuffer_Release(&in);
    return result;
}

/* scan_run(buf, seg, min_rows, masks, fields, data_at, form, flags, free_flags, residue)
 *     -> tuple | None
 *
 * batch.scan's common case in one call: a GRO batch (`buf`, a memoryview,
 * datagrams of `seg` bytes, the last maybe shorter) whose full rows, at
 * least `min_rows` of them, are one run of the short form. The first row's
 * header is read, its fields where `fields` says: the offsets of the form
 * byte, the flags byte, the 16-bit window and the 32-bit destination,
 * sequence number, ACK and TSval (the form byte must be `form`, the flags
 * `flags` once `free_flags` is set in both, the destination not 0); the
 * first and last rows' destinations are compared; then every row is
 * checked as same_rows checks it, CRC32C included. Returns batch.scan's
 * tuple for those rows, (dst, seq, ack, wnd, tsval_first, tsval_last,
 * payloads joined, buf[:full rows]), or None for anything else, which
 * batch.scan then handles itself from the start. */
static PyObject *scan_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "scan_run takes 10 arguments");
        return NULL;
    }
    if (!PyMemoryView_Check(args[0]))
        Py_RETURN_NONE;
    Py_ssize_t seg = PyLong_AsSsize_t(args[1]);
    Py_ssize_t min_rows = PyLong_AsSsize_t(args[2]);
    Py_ssize_t data_at = PyLong_AsSsize_t(args[5]);
    long form = PyLong_AsLong(args[6]);
    long flags = PyLong_AsLong(args[7]);
    long free_flags = PyLong_AsLong(args[8]);
    unsigned long residue = PyLong_AsUnsignedLong(args[9]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *fields = args[4];
    if (!PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) != 7) {
        PyErr_SetString(PyExc_TypeError, "scan_run: fields must be a tuple of 7 offsets");
        return NULL;
    }
    Py_ssize_t at[7];  /* form, flags, wnd, dst, seq, ack, TSval */
    for (int f = 0; f < 7; f++) {
        at[f] = PyLong_AsSsize_t(PyTuple_GET_ITEM(fields, f));
        if (PyErr_Occurred())
            return NULL;
        if (at[f] < 0 || at[f] + (f < 2 ? 1 : f == 2 ? 2 : 4) > data_at) {
            PyErr_SetString(PyExc_ValueError, "scan_run: a field lies outside the header");
            return NULL;
        }
    }
    Py_ssize_t seq_at = at[4];
    PyObject *masks = args[3];
    if (!PyTuple_Check(masks) || PyTuple_GET_SIZE(masks) > 16) {
        PyErr_SetString(PyExc_TypeError, "scan_run: masks must be a tuple of at most 16 ints");
        return NULL;
    }
    Py_ssize_t words = PyTuple_GET_SIZE(masks);
    uint32_t mask[16];
    for (Py_ssize_t w = 0; w < words; w++) {
        mask[w] = (uint32_t)PyLong_AsUnsignedLongMask(PyTuple_GET_ITEM(masks, w));
        if (PyErr_Occurred())
            return NULL;
    }
    Py_ssize_t mss = seg - data_at - TRAILER_SIZE;
    if (words * 4 > data_at || residue > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "scan_run: inconsistent sizes");
        return NULL;
    }
    Py_buffer in;
    if (PyObject_GetBuffer(args[0], &in, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL, *joined = NULL, *raw = NULL;
    const unsigned char *b = in.buf;
    Py_ssize_t n = in.len;
    if (seg <= 0 || seg >= n || mss < 1 || n / seg < min_rows) {
        result = Py_None;  /* not a batch of enough rows with data */
        Py_INCREF(result);
        goto done;
    }
    Py_ssize_t count = n / seg, full = count * seg;
    uint32_t dst = get_be32(b + at[3]);
    if (b[at[0]] != form || (b[at[1]] | free_flags) != (flags | free_flags) || !dst
            || memcmp(b + at[3], b + full - seg + at[3], 4) != 0) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    joined = join_rows(b, seg, count, mask, words, seq_at, data_at, mss, 1, (uint32_t)residue);
    if (joined == NULL)
        goto done;
    if (!PyBytes_Check(joined)) {  /* not one run, or a wrong CRC: batch.scan sorts it out */
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    raw = PySequence_GetSlice(args[0], 0, full);
    if (raw == NULL)
        goto done;
    const unsigned char *last = b + full - seg;
    result = Py_BuildValue("(kkkkkkOO)", (unsigned long)dst, (unsigned long)get_be32(b + seq_at),
                           (unsigned long)get_be32(b + at[5]),
                           (unsigned long)((uint32_t)b[at[2]] << 8 | b[at[2] + 1]),
                           (unsigned long)get_be32(b + at[6]), (unsigned long)get_be32(last + at[6]),
                           joined, raw);
done:
    Py_XDECREF(raw);
    Py_XDECREF(joined);
    PyBuffer_Release(&in);
    return result;
}

/* encode_heads(heads, header, src, offset, seq, mss, length, last_flags, seq_at)
 *
 * The headers and trailers of a SourceTrain (gannet/wire/batch.py), whose
 * payloads stay in `src`: row k's payload is src[offset + k * mss :] (mss
 * bytes, the last row what `length` leaves). Writes, for every row k, at
 * k * (len(header) + 4) in `heads`: `header` with the 32-bit big-endian
 * sequence number seq + k * mss (mod 2**32) at `seq_at` (and the last
 * row's byte 1, its flags, `last_flags`), then the CRC32C of that header
 * and the row's payload, little-endian: the bytes encode_rows writes
 * around each payload. Made for large rows (path MTU discovery's): each
 * row's payload is cut in three, the thirds' CRCs are computed side by
 * side (the first going on from the header's) and combined. */
static PyObject *encode_heads(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "encode_heads takes 9 arguments");
        return NULL;
    }
    RowArgs a;
    if (get_row_args(args, &a) < 0)
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t offset = a.offset, mss = a.mss, length = a.n, seq_at = a.seq_at;
    long last_flags = a.last_flags;
    if (PyErr_Occurred())
        goto done;
    Py_buffer heads = a.out, src = a.src;
    Py_ssize_t hlen = a.header.len, head = hlen + TRAILER_SIZE;
    if (mss <= 0 || length <= 0 || seq_at < 0 || seq_at + 4 > hlen || hlen < 2
            || last_flags < 0 || last_flags > 255) {
        PyErr_SetString(PyExc_ValueError, "encode_heads: inconsistent sizes");
        goto done;
    }
    Py_ssize_t rows = (length + mss - 1) / mss;
    if (heads.len < rows * head || offset < 0 || src.len - offset < length) {
        PyErr_SetString(PyExc_ValueError, "encode_heads: heads or src too short for the rows");
        goto done;
    }
    unsigned char *h = heads.buf;
    const unsigned char *s = (const unsigned char *)src.buf + offset;
    for (Py_ssize_t k = 0; k < rows; k++) {
        unsigned char *row = h + k * head;
        const unsigned char *p = s + k * mss;
        size_t n = (size_t)(k < rows - 1 ? mss : length - (rows - 1) * mss);
        put_row_head(row, &a, k);
        if (k == rows - 1)
            row[1] = (unsigned char)last_flags;
        uint32_t c = crc32c_on(0xFFFFFFFFu, row, (size_t)hlen);
        size_t third = n / 3;
#if HAVE_SSE42_BUILD
        if (third >= 64) {
            uint32_t lanes[3] = {c, 0xFFFFFFFFu, 0xFFFFFFFFu};
            crc_three_on(lanes, p, p + third, p + 2 * third, third);
            lanes[2] = crc32c_on(lanes[2], p + 3 * third, n - 3 * third);
            uint32_t crc = crc32c_combine(~lanes[0], ~lanes[1], third);
            crc = crc32c_combine(crc, ~lanes[2], n - 2 * third);
            put_le32(row + hlen, crc);
            continue;
        }
#endif
        put_le32(row + hlen, ~crc32c_on(c, p, n));
    }
    result = Py_None;
    Py_INCREF(result);
done:
    release_row_args(&a);
    return result;
}

#if HAVE_SENDMMSG
#define SEND_TRAINS_MAX 64  /* trains in one call */
#define SOURCE_ROWS_MAX 64  /* a SourceTrain's rows: what one GSO send carries */
#define IOV_ON_STACK 256

/* One train of a send_trains call: a Train (`a` its buffer) or a
 * SourceTrain (`a` its heads, `b` the buffer holding its payloads). */
typedef struct {
    Py_buffer a, b;
    int held;  /* buffers acquired: 0, 1 or 2 */
    int source;
    long size;
    Py_ssize_t rows, offset, length, mss;
} TrainItem;

static PyObject *s_size, *s_heads, *s_buf, *s_offset, *s_length, *s_mss;

static int get_ssize_attr(PyObject *o, PyObject *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int get_buffer_attr(PyObject *o, PyObject *name, Py_buffer *view)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    int r = PyObject_GetBuffer(v, view, PyBUF_SIMPLE);
    Py_DECREF(v);
    return r;
}

/* Reads train `obj` into `it` (its buffers held, see it->held); the number
 * of iovecs its message takes, or -1 with the error set. */
static Py_ssize_t train_item(PyObject *obj, TrainItem *it)
{
    Py_ssize_t size;
    if (get_ssize_attr(obj, s_size, &size) < 0)
        return -1;
    it->size = (long)size;
    if (size <= 0 || size > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "send_trains: a datagram size out of range");
        return -1;
    }
    if (PyByteArray_Check(obj)) {  /* a Train: its datagrams back to back */
        it->source = 0;
        if (PyObject_GetBuffer(obj, &it->a, PyBUF_SIMPLE) < 0)
            return -1;
        it->held = 1;
        if (it->a.len <= 0) {
            PyErr_SetString(PyExc_ValueError, "send_trains: an empty train");
            return -1;
        }
        it->rows = (it->a.len + size - 1) / size;  /* one: a datagram, sent as sendto would */
        return 1;
    }
    /* a SourceTrain: heads (header, trailer, header, ...) around payloads
     * that stay in buf (wire/batch.py's SourceTrain.pieces, in this order) */
    it->source = 1;
    if (get_ssize_attr(obj, s_offset, &it->offset) < 0 || get_ssize_attr(obj, s_length, &it->length) < 0
            || get_ssize_attr(obj, s_mss, &it->mss) < 0)
        return -1;
    if (get_buffer_attr(obj, s_heads, &it->a) < 0)
        return -1;
    it->held = 1;
    if (get_buffer_attr(obj, s_buf, &it->b) < 0)
        return -1;
    it->held = 2;
    Py_ssize_t hlen = size - it->mss - TRAILER_SIZE;
    if (it->mss <= 0 || it->length <= 0 || hlen <= 0) {
        PyErr_SetString(PyExc_ValueError, "send_trains: inconsistent sizes");
        return -1;
    }
    it->rows = (it->length + it->mss - 1) / it->mss;
    if (it->rows > SOURCE_ROWS_MAX || it->a.len < it->rows * (hlen + TRAILER_SIZE) || it->offset < 0
            || it->b.len - it->offset < it->length) {
        PyErr_SetString(PyExc_ValueError, "send_trains: heads or buf too short for the rows");
        return -1;
    }
    return 2 * it->rows + 1;
}

/* send_trains(fd, trains, address) -> int
 *
 * Sends trains to `address` (a packed struct sockaddr) on the UDP socket
 * `fd` in one sendmmsg, one message a train, as a sendmsg of each would
 * send it (io/endpoint.py's _send_train, which is the equivalent). A train
 * is a gannet.wire.batch.Train (datagrams of `train.size` bytes back to
 * back, the last maybe shorter) or a SourceTrain (its rows' headers and
 * trailers in `heads`, the payloads in `buf`, gathered: the kernel's copy is
 * the only one). A message of several datagrams carries a UDP_SEGMENT
 * control message of the train's size; a train of one datagram (a sealed
 * 64 KB datagram of path MTU discovery is a Train of one row) goes as that
 * datagram, without one. Returns how many trains
 * the kernel took, from the first (it stops at the first it cannot take);
 * if it took none, raises OSError (BlockingIOError when the socket is
 * full), as socket.sendmsg does. */
static PyObject *send_trains(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "send_trains takes 3 arguments");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    PyObject *trains = args[1];
    if (!PyList_Check(trains) || PyList_GET_SIZE(trains) < 1 || PyList_GET_SIZE(trains) > SEND_TRAINS_MAX) {
        PyErr_SetString(PyExc_ValueError, "send_trains: trains must be a list of 1 to 64 trains");
        return NULL;
    }
    Py_buffer name;
    if (PyObject_GetBuffer(args[2], &name, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(trains), filled = 0, niov = 0;
    TrainItem items[SEND_TRAINS_MAX];
    struct iovec iov_stack[IOV_ON_STACK];
    struct iovec *iov = iov_stack;
    struct mmsghdr msgs[SEND_TRAINS_MAX];
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } control[SEND_TRAINS_MAX];
    struct sockaddr_storage addr;
    PyObject *result = NULL;
    if (fd < 0 || name.len <= 0 || (size_t)name.len > sizeof addr) {
        PyErr_SetString(PyExc_ValueError, "send_trains: not a socket and an address");
        goto done;
    }
    memcpy(&addr, name.buf, (size_t)name.len);
    for (Py_ssize_t k = 0; k < n; k++) {
        items[k].held = 0;
        filled = k + 1;
        Py_ssize_t need = train_item(PyList_GET_ITEM(trains, k), &items[k]);
        if (need < 0)
            goto done;
        niov += need;
    }
    if (niov > IOV_ON_STACK) {
        iov = PyMem_Malloc(sizeof(struct iovec) * (size_t)niov);
        if (iov == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)n);
    struct iovec *v = iov;
    for (Py_ssize_t k = 0; k < n; k++) {
        TrainItem *it = &items[k];
        struct msghdr *msg = &msgs[k].msg_hdr;
        msg->msg_name = &addr;
        msg->msg_namelen = (socklen_t)name.len;
        msg->msg_iov = v;
        if (!it->source) {
            v->iov_base = it->a.buf;
            v->iov_len = (size_t)it->a.len;
            v++;
        } else {
            unsigned char *h = it->a.buf, *p = (unsigned char *)it->b.buf + it->offset;
            size_t hlen = (size_t)(it->size - it->mss - TRAILER_SIZE), head = hlen + TRAILER_SIZE;
            v->iov_base = h;
            v->iov_len = hlen;
            v++;
            for (Py_ssize_t r = 0; r < it->rows; r++) {
                int last = r == it->rows - 1;
                v->iov_base = p + r * it->mss;
                v->iov_len = (size_t)(last ? it->length - r * it->mss : it->mss);
                v++;
                v->iov_base = h + (size_t)r * head + hlen;  /* the trailer, then the next row's header */
                v->iov_len = last ? TRAILER_SIZE : head;
                v++;
            }
        }
        msg->msg_iovlen = (size_t)(v - msg->msg_iov);
        if (it->rows > 1) {
            memset(&control[k], 0, sizeof control[k]);
            msg->msg_control = control[k].buf;
            msg->msg_controllen = sizeof control[k].buf;
            struct cmsghdr *cm = CMSG_FIRSTHDR(msg);
            cm->cmsg_level = SOL_UDP;
            cm->cmsg_type = UDP_SEGMENT;
            cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t gso_size = (uint16_t)it->size;
            memcpy(CMSG_DATA(cm), &gso_size, sizeof gso_size);
        }
    }
    int sent;
    Py_BEGIN_ALLOW_THREADS
    sent = sendmmsg((int)fd, msgs, (unsigned int)n, 0);
    Py_END_ALLOW_THREADS
    if (sent < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = PyLong_FromLong(sent);
done:
    for (Py_ssize_t k = 0; k < filled; k++) {
        if (items[k].held > 1)
            PyBuffer_Release(&items[k].b);
        if (items[k].held > 0)
            PyBuffer_Release(&items[k].a);
    }
    if (iov != iov_stack)
        PyMem_Free(iov);
    PyBuffer_Release(&name);
    return result;
}
#endif

/* follows(a, b) -> memoryview | None
 *
 * When `a` and `b` are views of one bytes object and b's bytes lie right
 * after a's in it (what a writer makes by writing consecutive slices of
 * one buffer), a view of both, of that object; else None. The send
 * buffer (core/sendbuf.py) then holds them as one chunk, so that a
 * datagram across the seam is read in place rather than joined. It only
 * compares where the bytes lie: without it (the pure build) the chunks
 * stay apart and such a datagram is joined, the same bytes. */
static PyObject *follows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "follows takes 2 arguments");
        return NULL;
    }
    PyObject *a = args[0], *b = args[1];
    if (!PyMemoryView_Check(a) || !PyMemoryView_Check(b))
        Py_RETURN_NONE;
    PyObject *base = PyMemoryView_GET_BASE(a);
    if (base == NULL || base != PyMemoryView_GET_BASE(b) || !PyBytes_CheckExact(base))
        Py_RETURN_NONE;
    const Py_buffer *va = PyMemoryView_GET_BUFFER(a), *vb = PyMemoryView_GET_BUFFER(b);
    if (va->buf == NULL || vb->buf == NULL || va->ndim != 1 || vb->ndim != 1 || va->itemsize != 1
            || vb->itemsize != 1 || !PyBuffer_IsContiguous(va, 'C') || !PyBuffer_IsContiguous(vb, 'C'))
        Py_RETURN_NONE;
    const char *start = PyBytes_AS_STRING(base);
    const char *pa = va->buf, *pb = vb->buf;
    Py_ssize_t size = PyBytes_GET_SIZE(base);
    if (pa < start || pa + va->len != pb || pb + vb->len > start + size)
        Py_RETURN_NONE;
    Py_ssize_t at = pa - start;
    PyObject *whole = PyMemoryView_FromObject(base);
    if (whole == NULL)
        return NULL;
    PyObject *both = PySequence_GetSlice(whole, at, at + va->len + vb->len);
    Py_DECREF(whole);
    return both;
}

/* crc32c(data) -> int: this module's CRC32C, for the tests that hold it to
 * the crc32c package's. */
static PyObject *crc32c_py(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t c = crc32c_of(in.buf, (size_t)in.len);
    PyBuffer_Release(&in);
    return PyLong_FromUnsignedLong(c);
}

/* Receptacle(capacity): a receive's destination that becomes a bytes object
 * without a copy. Its buffer (writable, `capacity` bytes) is the storage of
 * a new bytes object that nothing else holds; a recvmsg_into writes the
 * datagram there, and take(n, trailer) hands the first n - trailer bytes over
 * as that bytes object, shrunk in place (no copy: the allocator gives the
 * tail back), with the last `trailer` bytes beside it as a bytes of their
 * own. The next buffer request starts a new bytes object. Path MTU
 * discovery's payloads go this way from the kernel to the application's
 * read (io/datapath.py's receive_gro, core/endpoint.py's receive_parts);
 * the Python equivalent is batch.py's Receptacle, a bytearray and a copy. */
typedef struct {
    PyObject_HEAD
    PyObject *bytes;      /* NULL until a buffer is asked for, and after take */
    Py_ssize_t capacity;
    Py_ssize_t exports;
} Receptacle;

static int receptacle_init(PyObject *o, PyObject *args, PyObject *kwds)
{
    Receptacle *r = (Receptacle *)o;
    Py_ssize_t capacity;
    static char *kwlist[] = {"capacity", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n", kwlist, &capacity))
        return -1;
    if (capacity <= 0) {
        PyErr_SetString(PyExc_ValueError, "Receptacle: capacity must be positive");
        return -1;
    }
    if (r->exports) {
        PyErr_SetString(PyExc_BufferError, "Receptacle: its buffer is in use");
        return -1;
    }
    Py_CLEAR(r->bytes);
    r->capacity = capacity;
    return 0;
}

static void receptacle_dealloc(PyObject *o)
{
    Py_CLEAR(((Receptacle *)o)->bytes);
    Py_TYPE(o)->tp_free(o);
}

static int receptacle_getbuffer(PyObject *o, Py_buffer *view, int flags)
{
    Receptacle *r = (Receptacle *)o;
    if (r->capacity <= 0) {
        PyErr_SetString(PyExc_ValueError, "Receptacle: not initialised");
        view->obj = NULL;
        return -1;
    }
    if (r->bytes == NULL) {
        r->bytes = PyBytes_FromStringAndSize(NULL, r->capacity);
        if (r->bytes == NULL) {
            view->obj = NULL;
            return -1;
        }
    }
    if (PyBuffer_FillInfo(view, o, PyBytes_AS_STRING(r->bytes), r->capacity, 0, flags) < 0)
        return -1;
    r->exports++;
    return 0;
}

static void receptacle_releasebuffer(PyObject *o, Py_buffer *view)
{
    (void)view;
    ((Receptacle *)o)->exports--;
}

/* take(n, trailer) -> (bytes of the first n - trailer, bytes of the next trailer) */
static PyObject *receptacle_take(PyObject *o, PyObject *const *args, Py_ssize_t nargs)
{
    Receptacle *r = (Receptacle *)o;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "take takes 2 arguments");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t trailer = PyLong_AsSsize_t(args[1]);
    if (trailer == -1 && PyErr_Occurred())
        return NULL;
    if (r->exports) {
        PyErr_SetString(PyExc_BufferError, "Receptacle: its buffer is in use");
        return NULL;
    }
    if (r->bytes == NULL || trailer < 0 || n < trailer || n > r->capacity) {
        PyErr_SetString(PyExc_ValueError, "Receptacle.take: nothing received, or not that many bytes");
        return NULL;
    }
    PyObject *tail = PyBytes_FromStringAndSize(PyBytes_AS_STRING(r->bytes) + n - trailer, trailer);
    if (tail == NULL)
        return NULL;
    /* The bytes object is this receptacle's alone (only its storage was
     * lent, through the buffer, and no buffer is held): it may be resized. */
    PyObject *body = r->bytes;
    r->bytes = NULL;
    if (_PyBytes_Resize(&body, n - trailer) < 0) {
        Py_DECREF(tail);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, body, tail);
    Py_DECREF(body);
    Py_DECREF(tail);
    return result;
}

static PyMethodDef receptacle_methods[] = {
    {"take", (PyCFunction)(void (*)(void))receptacle_take, METH_FASTCALL,
     "take(n, trailer): what a receive wrote, as (its first n - trailer bytes, the next trailer bytes); "
     "the first is the buffer's own storage, not a copy."},
    {NULL, NULL, 0, NULL},
};

static PyBufferProcs receptacle_as_buffer = {receptacle_getbuffer, receptacle_releasebuffer};

static PyTypeObject ReceptacleType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gannet.wire._batch.Receptacle",
    .tp_basicsize = sizeof(Receptacle),
    .tp_dealloc = receptacle_dealloc,
    .tp_as_buffer = &receptacle_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A receive's destination whose bytes are handed over as a bytes object without a copy.",
    .tp_methods = receptacle_methods,
    .tp_init = receptacle_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef methods[] = {
    {"encode_rows", (PyCFunction)(void (*)(void))encode_rows, METH_FASTCALL,
     "Write a train's rows: header, sequence number, payload, CRC32C trailer."},
    {"same_rows", (PyCFunction)(void (*)(void))same_rows, METH_FASTCALL,
     "Whether a batch's rows are one run (masked header words, stepping sequence numbers); "
     "their payloads joined, else None; False if asked to check CRC32Cs and one is wrong."},
    {"scan_run", (PyCFunction)(void (*)(void))scan_run, METH_FASTCALL,
     "batch.scan's common case: a GRO batch whose full rows are one run, checked and joined; else None."},
    {"encode_heads", (PyCFunction)(void (*)(void))encode_heads, METH_FASTCALL,
     "Write the headers and CRC32C trailers of a train whose payloads stay in the sender's buffer."},
#if HAVE_SENDMMSG
    {"send_trains", (PyCFunction)(void (*)(void))send_trains, METH_FASTCALL,
     "Send Trains and SourceTrains in one sendmmsg, a message each (with its UDP_SEGMENT size when it holds several datagrams)."},
#endif
    {"follows", (PyCFunction)(void (*)(void))follows, METH_FASTCALL,
     "A view of both when two views of one bytes object are consecutive in it, else None."},
    {"crc32c", crc32c_py, METH_O, "CRC32C of a buffer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_batch",
    "The per-row work of a GSO train or a GRO batch in one call (see gannet/wire/batch.py).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__batch(void)
{
#if HAVE_SSE42_BUILD
    __builtin_cpu_init();
    hardware_crc = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
    init_x2n();
#if HAVE_SENDMMSG
    if ((s_size = PyUnicode_InternFromString("size")) == NULL
            || (s_heads = PyUnicode_InternFromString("heads")) == NULL
            || (s_buf = PyUnicode_InternFromString("buf")) == NULL
            || (s_offset = PyUnicode_InternFromString("offset")) == NULL
            || (s_length = PyUnicode_InternFromString("length")) == NULL
            || (s_mss = PyUnicode_InternFromString("mss")) == NULL)
        return NULL;
#endif
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "HARDWARE_CRC", hardware_crc) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyType_Ready(&ReceptacleType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ReceptacleType);
    if (PyModule_AddObject(m, "Receptacle", (PyObject *)&ReceptacleType) < 0) {
        Py_DECREF(&ReceptacleType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
