/* The AEAD over the rows of a GSO train or a GRO batch, in one call.
 *
 * gannet/crypto/protection.py decides everything (which key, which packet
 * numbers, the replay window, key updates); this module only seals and
 * opens rows the way protection.py's Python equivalent does, datagram by
 * datagram, so that a train of 44 rows costs one call instead of 44 calls
 * of Python each building a nonce and a header (docs/security.md,
 * Performance). The Python equivalent stays complete: it runs where this
 * module is not built or cannot load, and under GANNET_PURE=1, and a
 * differential test holds the two to the same bytes and the same verdicts.
 *
 * The AEADs are OpenSSL's (libcrypto's EVP interface), loaded with dlopen:
 * the library is there wherever Python's ssl module is, and its headers
 * need not be, so the few prototypes used are declared here. No OpenSSL
 * header is included.
 *
 * The envelope (gannet/wire/protected.py): an 8-byte header
 *   form (8) | key phase (1) | packet number, low 23 bits (23) | dst cid (32)
 * authenticated as associated data, then the ciphertext of the inner
 * datagram's bytes 8 up to its CRC32C trailer followed by a 3-byte tail
 * (its flags byte, bit 7 set for the short form, and its bytes 2-3), then
 * the 16-byte tag: the inner datagram's first byte and destination ID are
 * the header's, and not sent twice. The nonce is the direction's 12-byte
 * IV XOR the full packet number (big-endian, in the last 8 bytes), which
 * the opener reconstructs from the largest it has opened (RFC 9000
 * Appendix A.3, as decode_packet_number in protected.py).
 *
 * An opened row is written as the inner datagram followed by its CRC32C
 * (little-endian), the form the plain endpoint's decoders read.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#include "../_crc32c.h"

#define HEADER_SIZE 8
#define TAG_SIZE 16
#define IV_SIZE 12
#define TRAILER_SIZE 4
#define ELIDED 5         /* the inner datagram's first byte and destination ID */
#define TAIL 3           /* its flags byte and bytes 2-3, at the end of the plaintext */
#define OVERHEAD (HEADER_SIZE + TAG_SIZE - TRAILER_SIZE - ELIDED)
#define PN_BITS 23
#define PN_MASK ((1u << PN_BITS) - 1)
#define VERSION 3
#define SHORT_FORM (0x80 | VERSION)
#define PROTECTED_FORM (0x40 | VERSION)  /* gannet/wire/protected.py PROTECTED: a sealed datagram */
#define SHORT_BIT 0x80   /* in the tail's flags byte: the inner datagram is the short form */

/* ------------------------------------------------------------ libcrypto */

/* EVP_CIPHER_CTX_ctrl codes (OpenSSL's evp.h; the same since 1.1.0). */
#define EVP_CTRL_AEAD_GET_TAG 0x10
#define EVP_CTRL_AEAD_SET_TAG 0x11

typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct engine_st ENGINE;

/* OpenSSL 3's parameters (params.h, core_names.h): a row's nonce and tag
 * are passed to the cipher this way where the library has it. */
typedef struct {
    const char *key;
    unsigned int data_type;
    void *data;
    size_t data_size;
    size_t return_size;
} OSSL_PARAM;
#define OSSL_PARAM_OCTET_STRING 5
#define OSSL_PARAM_UNMODIFIED ((size_t)-1)

static struct {
    EVP_CIPHER_CTX *(*ctx_new)(void);
    void (*ctx_free)(EVP_CIPHER_CTX *);
    int (*ctx_ctrl)(EVP_CIPHER_CTX *, int, int, void *);
    const EVP_CIPHER *(*aes_128_gcm)(void);
    const EVP_CIPHER *(*chacha20_poly1305)(void);
    int (*encrypt_init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, ENGINE *, const unsigned char *,
                        const unsigned char *);
    int (*decrypt_init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, ENGINE *, const unsigned char *,
                        const unsigned char *);
    int (*encrypt_update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int);
    int (*decrypt_update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int);
    int (*encrypt_final)(EVP_CIPHER_CTX *, unsigned char *, int *);
    int (*decrypt_final)(EVP_CIPHER_CTX *, unsigned char *, int *);
    /* OpenSSL 3 only (NULL before): see `Keys` */
    EVP_CIPHER *(*cipher_fetch)(void *, const char *, const char *);
    int (*ctx_set_params)(EVP_CIPHER_CTX *, const OSSL_PARAM *);
    int (*ctx_get_params)(EVP_CIPHER_CTX *, OSSL_PARAM *);
} evp;

static const char *const LIBCRYPTO[] = {
    "libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.3.dylib", "libcrypto.dylib", "libcrypto.so",
};

static int
load_libcrypto(void)
{
    void *lib = NULL;
    for (size_t i = 0; i < sizeof(LIBCRYPTO) / sizeof(LIBCRYPTO[0]) && lib == NULL; i++)
        lib = dlopen(LIBCRYPTO[i], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        PyErr_SetString(PyExc_ImportError, "libcrypto (OpenSSL) could not be loaded");
        return -1;
    }
#define SYM(field, name)                                                                \
    if ((*(void **)&evp.field = dlsym(lib, name)) == NULL) {                            \
        PyErr_Format(PyExc_ImportError, "libcrypto has no %s", name);                   \
        return -1;                                                                      \
    }
    SYM(ctx_new, "EVP_CIPHER_CTX_new")
    SYM(ctx_free, "EVP_CIPHER_CTX_free")
    SYM(ctx_ctrl, "EVP_CIPHER_CTX_ctrl")
    SYM(aes_128_gcm, "EVP_aes_128_gcm")
    SYM(chacha20_poly1305, "EVP_chacha20_poly1305")
    SYM(encrypt_init, "EVP_EncryptInit_ex")
    SYM(decrypt_init, "EVP_DecryptInit_ex")
    SYM(encrypt_update, "EVP_EncryptUpdate")
    SYM(decrypt_update, "EVP_DecryptUpdate")
    SYM(encrypt_final, "EVP_EncryptFinal_ex")
    SYM(decrypt_final, "EVP_DecryptFinal_ex")
#undef SYM
    *(void **)&evp.cipher_fetch = dlsym(lib, "EVP_CIPHER_fetch");
    *(void **)&evp.ctx_set_params = dlsym(lib, "EVP_CIPHER_CTX_set_params");
    *(void **)&evp.ctx_get_params = dlsym(lib, "EVP_CIPHER_CTX_get_params");
    if (evp.ctx_set_params == NULL || evp.ctx_get_params == NULL)
        evp.cipher_fetch = NULL;  /* all of OpenSSL 3's or none */
    return 0;
}

/* --------------------------------------------------------------- CRC32C */

/* Castagnoli, reflected, as the crc32c package computes it. */
static uint32_t crc_table[256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t
crc32c_table(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

#if GANNET_HW_CRC
#define HAVE_HW_CRC 1
__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw(const unsigned char *p, size_t n)
{
    return crc32c_lane(0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
}
#endif

#ifdef HAVE_HW_CRC
/* The CRC of A || B || C from the CRCs of its thirds, computed side by side
 * (the instruction's latency is three times its throughput, so three
 * independent streams run about three times as fast as one): the register
 * after A is carried over B and C as a multiplication by x^(8 len) modulo
 * the polynomial (as zlib's crc32_combine does), then the others' CRCs are
 * added. Rows of one batch share a length, so the multiplier is kept. */
static uint32_t x2n_table[32];  /* x^(2^n) mod P, reflected */

static uint32_t
multmodp(uint32_t a, uint32_t b)
{
    uint32_t m = (uint32_t)1 << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ 0x82F63B78u : b >> 1;
    }
    return p;
}

static uint32_t
x8nmodp(size_t n)  /* x^(8n) mod P */
{
    uint32_t p = (uint32_t)1 << 31;  /* x^0 */
    int k = 3;
    while (n) {
        if (n & 1)
            p = multmodp(x2n_table[k & 31], p);
        n >>= 1;
        k++;
    }
    return p;
}

static void
x2n_init(void)
{
    uint32_t p = (uint32_t)1 << 30;  /* x^1 */
    x2n_table[0] = p;
    for (int n = 1; n < 32; n++)
        x2n_table[n] = p = multmodp(p, p);
}

__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw3(const unsigned char *p, size_t n)
{
    static size_t cached_len;
    static uint32_t cached_shift;
    if (n < 3 * 64)
        return crc32c_hw(p, n);
    size_t third = n / 24 * 8;  /* bytes per stream, whole words */
    if (third != cached_len) {
        cached_shift = x8nmodp(third);
        cached_len = third;
    }
    uint64_t a = 0xFFFFFFFFu, b = 0, c = 0;
    const unsigned char *pb = p + third, *pc = p + 2 * third;
    for (size_t i = 0; i < third; i += 8) {
        uint64_t va, vb, vc;
        memcpy(&va, p + i, 8);
        memcpy(&vb, pb + i, 8);
        memcpy(&vc, pc + i, 8);
        a = __builtin_ia32_crc32di(a, va);
        b = __builtin_ia32_crc32di(b, vb);
        c = __builtin_ia32_crc32di(c, vc);
    }
    uint32_t crc = multmodp(cached_shift, (uint32_t)a) ^ (uint32_t)b;
    crc = multmodp(cached_shift, crc) ^ (uint32_t)c;
    p += 3 * third;
    n -= 3 * third;
    return crc32c_lane(crc, p, n) ^ 0xFFFFFFFFu;
}
#endif

static uint32_t (*crc32c)(const unsigned char *, size_t) = crc32c_table;

static void
put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void
put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t
get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* RFC 9000 Appendix A.3: the full packet number nearest the one after
 * `largest` (-1 before any) whose low PN_BITS are `truncated`. */
static uint64_t
decode_pn(long long largest, uint32_t truncated)
{
    const uint64_t win = (uint64_t)1 << PN_BITS, hwin = win / 2;
    uint64_t expected = (uint64_t)(largest + 1);
    uint64_t candidate = (expected & ~(uint64_t)PN_MASK) | truncated;
    if (candidate + hwin <= expected && candidate < ((uint64_t)1 << 62) - win)
        return candidate + win;
    if (candidate > expected + hwin && candidate >= win)
        return candidate - win;
    return candidate;
}

/* ----------------------------------------------------------------- Keys */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *seal;
    EVP_CIPHER_CTX *open;
    unsigned char iv[IV_SIZE];
    /* How a row's nonce and tag reach the cipher. 0: EVP_EncryptInit_ex /
     * EVP_DecryptInit_ex with the nonce, and EVP_CIPHER_CTX_ctrl for the
     * tag. 1 (AES-GCM under OpenSSL 3, when it passes the check in
     * keys_init): the nonce as GCM's whole fixed IV and the tag as
     * parameters (EVP_CIPHER_CTX_set_params / get_params), the same bytes
     * for about a fifth less of OpenSSL's fixed cost per row: OpenSSL 3.0's
     * Init asks the provider for the IV length by name on every call, and
     * its ctrl converts to these parameters anyway (docs/security.md,
     * Performance). */
    int params;
} KeysObject;

static void
nonce_for(const KeysObject *k, uint64_t pn, unsigned char *nonce)
{
    memcpy(nonce, k->iv, IV_SIZE);
    for (int i = 0; i < 8; i++)
        nonce[IV_SIZE - 1 - i] ^= (unsigned char)(pn >> (8 * i));
}

#define PARAM_OCTETS(name, buf, size) {(name), OSSL_PARAM_OCTET_STRING, (buf), (size), OSSL_PARAM_UNMODIFIED}
#define PARAM_END {NULL, 0, NULL, 0, 0}
/* GCM's fixed IV, given whole: a length of (size_t)-1 says "all of it"
 * (what EVP_CTRL_GCM_SET_IV_FIXED with -1 passes). */
#define PARAM_WHOLE_IV "tlsivfixed"
#define PARAM_TAG "tag"

/* ciphertext + tag of `body` (n bytes) and `tail` (TAIL bytes) after the
 * header already at out, packet number pn; 0 on success. */
static int
seal_one(KeysObject *k, unsigned char *out, const unsigned char *body, int n, uint64_t pn,
         const unsigned char *tail)
{
    unsigned char nonce[IV_SIZE];
    int len;
    nonce_for(k, pn, nonce);
    if (k->params) {
        OSSL_PARAM iv[] = {PARAM_OCTETS(PARAM_WHOLE_IV, nonce, (size_t)-1), PARAM_END};
        if (evp.ctx_set_params(k->seal, iv) != 1)
            return -1;
    } else if (evp.encrypt_init(k->seal, NULL, NULL, NULL, nonce) != 1)
        return -1;
    unsigned char *tag_at = out + HEADER_SIZE + n + TAIL;
    if (evp.encrypt_update(k->seal, NULL, &len, out, HEADER_SIZE) != 1
        || evp.encrypt_update(k->seal, out + HEADER_SIZE, &len, body, n) != 1
        || evp.encrypt_update(k->seal, out + HEADER_SIZE + n, &len, tail, TAIL) != 1
        || evp.encrypt_final(k->seal, tag_at, &len) != 1)
        return -1;
    if (k->params) {
        OSSL_PARAM tag[] = {PARAM_OCTETS(PARAM_TAG, tag_at, TAG_SIZE), PARAM_END};
        return evp.ctx_get_params(k->seal, tag) == 1 ? 0 : -1;
    }
    return evp.ctx_ctrl(k->seal, EVP_CTRL_AEAD_GET_TAG, TAG_SIZE, tag_at) == 1 ? 0 : -1;
}

/* The sealed plaintext of row p (n bytes, packet number pn: the inner
 * datagram from its byte HEADER_SIZE on, then its TAIL) into out; 0 when
 * it authenticates. */
static int
open_one(KeysObject *k, unsigned char *out, const unsigned char *p, Py_ssize_t n, uint64_t pn)
{
    unsigned char nonce[IV_SIZE], tag[TAG_SIZE];
    int len, len2;
    int body = (int)(n - HEADER_SIZE - TAG_SIZE);
    nonce_for(k, pn, nonce);
    memcpy(tag, p + n - TAG_SIZE, TAG_SIZE);
    if (k->params) {
        OSSL_PARAM both[] = {PARAM_OCTETS(PARAM_WHOLE_IV, nonce, (size_t)-1),
                             PARAM_OCTETS(PARAM_TAG, tag, TAG_SIZE), PARAM_END};
        if (evp.ctx_set_params(k->open, both) != 1)
            return -1;
    } else if (evp.decrypt_init(k->open, NULL, NULL, NULL, nonce) != 1)
        return -1;
    if (evp.decrypt_update(k->open, NULL, &len, p, HEADER_SIZE) != 1
        || evp.decrypt_update(k->open, out, &len, p + HEADER_SIZE, body) != 1)
        return -1;
    if (!k->params && evp.ctx_ctrl(k->open, EVP_CTRL_AEAD_SET_TAG, TAG_SIZE, tag) != 1)
        return -1;
    return evp.decrypt_final(k->open, out + len, &len2) == 1 ? 0 : -1;
}

/* Whether the parameter path gives the bytes and verdicts of the Init/ctrl
 * path under this key (a library whose GCM took the parameters otherwise
 * keeps the Init/ctrl path). */
static int
params_agree(KeysObject *k)
{
    const uint64_t pn = 0x0102030405060708u;
    unsigned char body[64], tail[TAIL] = {0x10, 0, 0},
        plain[HEADER_SIZE + sizeof body + TAIL + TAG_SIZE], fast[sizeof plain],
        opened[sizeof body + TAIL];
    memset(body, 0x5A, sizeof body);
    memset(plain, 0, HEADER_SIZE);
    memcpy(fast, plain, HEADER_SIZE);
    k->params = 0;
    if (seal_one(k, plain, body, (int)sizeof body, pn, tail) != 0)
        return 0;
    k->params = 1;
    int ok = seal_one(k, fast, body, (int)sizeof body, pn, tail) == 0
             && memcmp(plain, fast, sizeof plain) == 0
             && open_one(k, opened, fast, sizeof fast, pn) == 0
             && memcmp(opened, body, sizeof body) == 0 && memcmp(opened + sizeof body, tail, TAIL) == 0;
    fast[HEADER_SIZE] ^= 1;  /* an altered row must not open */
    ok = ok && open_one(k, opened, fast, sizeof fast, pn) != 0;
    fast[HEADER_SIZE] ^= 1;
    ok = ok && open_one(k, opened, fast, sizeof fast, pn) == 0;
    k->params = 0;
    return ok;
}

/* OpenSSL 3's own (fetched) ciphers, made once: the EVP_aes_128_gcm() kind
 * is looked up again on every context it is given to. */
static const EVP_CIPHER *
cipher_named(const char *name, Py_ssize_t *key_size)
{
    static EVP_CIPHER *fetched[2];
    int i;
    if (strcmp(name, "aes-128-gcm") == 0) {
        i = 0;
        *key_size = 16;
    } else if (strcmp(name, "chacha20-poly1305") == 0) {
        i = 1;
        *key_size = 32;
    } else
        return NULL;
    if (evp.cipher_fetch != NULL && fetched[i] == NULL)
        fetched[i] = evp.cipher_fetch(NULL, i == 0 ? "AES-128-GCM" : "ChaCha20-Poly1305", NULL);
    if (fetched[i] != NULL)
        return fetched[i];
    return i == 0 ? evp.aes_128_gcm() : evp.chacha20_poly1305();
}

static int
keys_init(KeysObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"aead", "key", "iv", NULL};
    const char *name;
    Py_buffer key, iv;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sy*y*", kwlist, &name, &key, &iv))
        return -1;
    int rc = -1;
    Py_ssize_t key_size = 0;
    const EVP_CIPHER *cipher = cipher_named(name, &key_size);
    if (cipher == NULL) {
        PyErr_Format(PyExc_ValueError, "unknown AEAD %s", name);
        goto done;
    }
    if (key.len != key_size || iv.len != IV_SIZE) {
        PyErr_SetString(PyExc_ValueError, "wrong key or IV length");
        goto done;
    }
    if (self->seal == NULL)
        self->seal = evp.ctx_new();
    if (self->open == NULL)
        self->open = evp.ctx_new();
    if (self->seal == NULL || self->open == NULL
        || evp.encrypt_init(self->seal, cipher, NULL, key.buf, NULL) != 1
        || evp.decrypt_init(self->open, cipher, NULL, key.buf, NULL) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto refused the key");
        goto done;
    }
    memcpy(self->iv, iv.buf, IV_SIZE);
    self->params = key_size == 16 && evp.cipher_fetch != NULL && params_agree(self);
    rc = 0;
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&iv);
    return rc;
}

static void
keys_dealloc(KeysObject *self)
{
    if (self->seal != NULL)
        evp.ctx_free(self->seal);
    if (self->open != NULL)
        evp.ctx_free(self->open);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(seal_rows_doc,
"seal_rows(src, size, out, form, flags, dst_cid, pn, rows) -> bytes written\n\n"
"Seal the first `rows` datagrams of `src` (`size` bytes each, back to back,\n"
"the last maybe shorter, each ending in its CRC32C trailer, which is not\n"
"sealed) into `out` as rows `size` + OVERHEAD long, packet numbers from `pn`,\n"
"key phase `flags`.");

/* Row `row` (n bytes, a plaintext datagram ending in its CRC32C trailer)
 * sealed into o (n + OVERHEAD bytes) with packet number pn; NULL, or the
 * error's message (ValueError for the row, RuntimeError for libcrypto). */
static const char *
seal_row(KeysObject *self, unsigned char *o, const unsigned char *row, Py_ssize_t n, int form,
         int flags, unsigned long dst, uint64_t pn, PyObject **kind)
{
    *kind = PyExc_ValueError;
    if (n < HEADER_SIZE + TRAILER_SIZE || n > 0x7FFFFFFF || (row[0] != VERSION && row[0] != SHORT_FORM)
        || row[1] & SHORT_BIT)
        return "not a plaintext Gannet datagram";
    Py_ssize_t body = n - HEADER_SIZE - TRAILER_SIZE;  /* sealed: this, then the tail */
    unsigned char tail[TAIL] = {
        (unsigned char)(row[0] == SHORT_FORM ? row[1] | SHORT_BIT : row[1]), row[2], row[3]};
    put_be32(o, (uint32_t)form << 24 | (uint32_t)(flags & 1) << PN_BITS | ((uint32_t)pn & PN_MASK));
    put_be32(o + 4, (uint32_t)dst);
    if (seal_one(self, o, row + HEADER_SIZE, (int)body, pn, tail) != 0) {
        *kind = PyExc_RuntimeError;
        return "libcrypto failed to seal";
    }
    return NULL;
}

static PyObject *
keys_seal_rows(KeysObject *self, PyObject *args)
{
    Py_buffer src, out;
    Py_ssize_t size, rows;
    int form, flags;
    unsigned long dst;
    unsigned long long pn;
    if (!PyArg_ParseTuple(args, "y*nw*iikKn", &src, &size, &out, &form, &flags, &dst, &pn, &rows))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t in_pos = 0, out_pos = 0;
    if (size < HEADER_SIZE + TRAILER_SIZE || size > 0x7FFFFFFF || rows < 0) {
        PyErr_SetString(PyExc_ValueError, "bad row size or count");
        goto done;
    }
    for (Py_ssize_t i = 0; i < rows; i++) {
        Py_ssize_t n = src.len - in_pos < size ? src.len - in_pos : size;
        if (n <= TRAILER_SIZE) {
            PyErr_SetString(PyExc_ValueError, "fewer rows than asked for");
            goto done;
        }
        if (out.len - out_pos < n + OVERHEAD) {
            PyErr_SetString(PyExc_ValueError, "output buffer too small");
            goto done;
        }
        PyObject *kind;
        const char *error = seal_row(self, (unsigned char *)out.buf + out_pos,
                                     (const unsigned char *)src.buf + in_pos, n, form, flags, dst,
                                     (uint64_t)pn + (uint64_t)i, &kind);
        if (error != NULL) {
            PyErr_SetString(kind, error);
            goto done;
        }
        in_pos += n;
        out_pos += n + OVERHEAD;
    }
    result = PyLong_FromSsize_t(out_pos);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(seal_datagram_doc,
"seal_datagram(datagram, flags, dst_cid, pn) -> bytes\n\n"
"seal_rows of one datagram (form PROTECTED), into new bytes: one call with\n"
"nothing to allocate or parse beforehand, for a small message or an ACK.");

static PyObject *
keys_seal_datagram(KeysObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "seal_datagram(datagram, flags, dst_cid, pn)");
        return NULL;
    }
    int flags = (int)PyLong_AsLong(args[1]);
    unsigned long dst = PyLong_AsUnsignedLong(args[2]);
    unsigned long long pn = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer src;
    if (PyObject_GetBuffer(args[0], &src, PyBUF_SIMPLE) != 0)
        return NULL;
    PyObject *result = NULL;
    if (src.len < HEADER_SIZE + TRAILER_SIZE || src.len > 0x7FFFFFFF) {
        PyErr_SetString(PyExc_ValueError, "not a plaintext Gannet datagram");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, src.len + OVERHEAD);
    if (result == NULL)
        goto done;
    PyObject *kind;
    const char *error = seal_row(self, (unsigned char *)PyBytes_AS_STRING(result), src.buf, src.len,
                                 PROTECTED_FORM, flags, dst, (uint64_t)pn, &kind);
    if (error != NULL) {
        Py_CLEAR(result);
        PyErr_SetString(kind, error);
    }
done:
    PyBuffer_Release(&src);
    return result;
}

PyDoc_STRVAR(seal_short_doc,
"seal_short(flags, wnd, dst_cid, seq, ack, tsval, payload, key_phase, pn) -> bytes\n\n"
"seal_datagram of the short-form datagram these fields make\n"
"(gannet.wire.datagram.encode_short), without that datagram: its fields are\n"
"written straight into the envelope and sealed there, and its CRC32C\n"
"trailer, which sealing leaves out, is never computed. For a message, a\n"
"reply or an ACK of an established connection.");

static PyObject *
keys_seal_short(KeysObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "seal_short(flags, wnd, dst_cid, seq, ack, tsval, payload, key_phase, pn)");
        return NULL;
    }
    long flags = PyLong_AsLong(args[0]);
    long wnd = PyLong_AsLong(args[1]);
    unsigned long dst = PyLong_AsUnsignedLong(args[2]);
    unsigned long seq = PyLong_AsUnsignedLong(args[3]);
    unsigned long ack = PyLong_AsUnsignedLong(args[4]);
    unsigned long tsval = PyLong_AsUnsignedLong(args[5]);
    long key_phase = PyLong_AsLong(args[7]);
    unsigned long long pn = PyLong_AsUnsignedLongLong(args[8]);
    if (PyErr_Occurred())
        return NULL;
    if (flags < 0 || flags > 0xFF || flags & SHORT_BIT || wnd < 0 || wnd > 0xFFFF || dst > 0xFFFFFFFFul
        || seq > 0xFFFFFFFFul || ack > 0xFFFFFFFFul || tsval > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "a field out of its range");
        return NULL;
    }
    Py_buffer payload;
    if (PyObject_GetBuffer(args[6], &payload, PyBUF_SIMPLE) != 0)
        return NULL;
    PyObject *result = NULL;
    /* the sealed body: the inner datagram's bytes 8 to its trailer (seq,
     * ack, TSval, payload), then its TAIL */
    Py_ssize_t body = 12 + payload.len;
    if (body > 0x7FFFFFFF - HEADER_SIZE - TAIL - TAG_SIZE) {
        PyErr_SetString(PyExc_ValueError, "payload too long");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + body + TAIL + TAG_SIZE);
    if (result == NULL)
        goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(result);
    put_be32(o, (uint32_t)PROTECTED_FORM << 24 | (uint32_t)(key_phase & 1) << PN_BITS
                    | ((uint32_t)pn & PN_MASK));
    put_be32(o + 4, (uint32_t)dst);
    put_be32(o + 8, (uint32_t)seq);
    put_be32(o + 12, (uint32_t)ack);
    put_be32(o + 16, (uint32_t)tsval);
    memcpy(o + 20, payload.buf, (size_t)payload.len);
    unsigned char tail[TAIL] = {(unsigned char)(flags | SHORT_BIT), (unsigned char)(wnd >> 8),
                                (unsigned char)wnd};
    /* sealed in place (the AEADs allow the output to be the input) */
    if (seal_one(self, o, o + HEADER_SIZE, (int)body, (uint64_t)pn, tail) != 0) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to seal");
    }
done:
    PyBuffer_Release(&payload);
    return result;
}

/* Why open_rows stopped before the end. */
#define STOP_END 0       /* every row opened */
#define STOP_OTHER 1     /* a row that is not the common case: Python opens it */
#define STOP_TAG 2       /* a common-case row whose tag did not verify */

PyDoc_STRVAR(open_rows_doc,
"open_rows(buf, seg, start, out, pos, form, flags, dst_cid, after_pn, trailers=True)\n"
"    -> (row, pos, first_pn, count, stop)\n\n"
"Open the rows of `buf` (`seg` bytes each, the last maybe shorter) from row\n"
"`start`, while each is the common case: a sealed datagram of `form` with\n"
"key phase `flags`, for `dst_cid`, whose packet number (reconstructed from\n"
"`after_pn`, the largest opened) is above `after_pn` (the first) or one\n"
"above the row before. Each is written to `out` at\n"
"`pos` as its inner datagram and CRC32C trailer. Returns the row it\n"
"stopped at, the position after the last written, the packet numbers\n"
"opened (`count` from `first_pn`), and why it stopped: 0 the end, 1 a row\n"
"that is not the common case, 2 a row whose tag did not verify. With\n"
"`trailers` false the CRC32C trailers are left unwritten (room is kept):\n"
"for a reader that takes the tag's word for every byte.");

/* Row p (n bytes) opened into d (room bytes) as its inner datagram and,
 * with `trailers`, its CRC32C, when it is the common case (see open_rows)
 * with packet number pn (-1: reconstructed from `after`, which it must
 * exceed). Returns STOP_END (opened: *pn_out and *written set), STOP_OTHER,
 * STOP_TAG, or -1 with ValueError when room is short. */
static int
open_row(KeysObject *self, const unsigned char *p, Py_ssize_t n, unsigned char *d, Py_ssize_t room,
         int form, int flags, unsigned long dst, long long after, long long next, int trailers,
         uint64_t *pn_out, Py_ssize_t *written)
{
    if (n < HEADER_SIZE + TAIL + TAG_SIZE || n > 0x7FFFFFFF || p[0] != form || (p[1] >> 7) != flags
        || get_be32(p + 4) != (uint32_t)dst)
        return STOP_OTHER;
    uint32_t truncated = get_be32(p) & PN_MASK;
    uint64_t pn;
    if (next >= 0) {
        pn = (uint64_t)next;
        if (((uint32_t)pn & PN_MASK) != truncated)
            return STOP_OTHER;  /* a gap, a reordered or replayed number: the window decides */
    } else {
        pn = decode_pn(after, truncated);
        if (after >= 0 && pn <= (uint64_t)after)
            return STOP_OTHER;
    }
    int body = (int)(n - HEADER_SIZE - TAG_SIZE);
    int inner = body - TAIL + HEADER_SIZE;  /* the inner datagram, without its CRC */
    if (room < inner + TRAILER_SIZE) {
        PyErr_SetString(PyExc_ValueError, "output buffer too small");
        return -1;
    }
    /* opened at d + 8, then its first 8 bytes restored */
    if (open_one(self, d + HEADER_SIZE, p, n, pn) != 0)
        return STOP_TAG;
    unsigned char lead = d[inner], b2 = d[inner + 1], b3 = d[inner + 2];
    d[0] = lead & SHORT_BIT ? SHORT_FORM : VERSION;
    d[1] = lead & (unsigned char)~SHORT_BIT;
    d[2] = b2;
    d[3] = b3;
    memcpy(d + 4, p + 4, 4);
    if (trailers)
        put_le32(d + inner, crc32c(d, (size_t)inner));
    *pn_out = pn;
    *written = inner + TRAILER_SIZE;
    return STOP_END;
}

static PyObject *
keys_open_rows(KeysObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* (FASTCALL, its arguments converted one by one: a GRO batch of small
     * datagrams of several connections makes a call per connection, and
     * PyArg_ParseTuple's format and argument tuple were a third of one) */
    if (nargs != 9 && nargs != 10) {
        PyErr_SetString(PyExc_TypeError,
                        "open_rows(buf, seg, start, out, pos, form, flags, dst_cid, after_pn, trailers=True)");
        return NULL;
    }
    Py_ssize_t seg = PyLong_AsSsize_t(args[1]);
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    Py_ssize_t pos = PyLong_AsSsize_t(args[4]);
    int form = (int)PyLong_AsLong(args[5]);
    int flags = (int)PyLong_AsLong(args[6]);
    unsigned long dst = PyLong_AsUnsignedLong(args[7]);
    long long after = PyLong_AsLongLong(args[8]);
    if (PyErr_Occurred())
        return NULL;
    int trailers = nargs == 10 ? PyObject_IsTrue(args[9]) : 1;
    if (trailers < 0)
        return NULL;
    Py_buffer buf, out;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) != 0)
        return NULL;
    if (PyObject_GetBuffer(args[3], &out, PyBUF_WRITABLE) != 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyObject *result = NULL;
    if (seg <= 0 || seg >= buf.len)
        seg = buf.len;
    if (seg == 0 || seg > 0x7FFFFFFF || start < 0 || pos < 0 || pos > out.len) {
        PyErr_SetString(PyExc_ValueError, "bad row size, start or position");
        goto done;
    }
    const unsigned char *base = buf.buf;
    unsigned char *o = out.buf;
    Py_ssize_t row = start, count = 0;
    uint64_t first = 0, prev = 0;
    int stop = STOP_END;
    for (Py_ssize_t off = start * seg; off < buf.len; off += seg, row++) {
        Py_ssize_t n = buf.len - off < seg ? buf.len - off : seg;
        uint64_t pn;
        Py_ssize_t written;
        stop = open_row(self, base + off, n, o + pos, out.len - pos, form, flags, dst, after,
                        count ? (long long)(prev + 1) : -1, trailers, &pn, &written);
        if (stop < 0)
            goto done;
        if (stop != STOP_END)
            break;
        pos += written;
        if (count++ == 0)
            first = pn;
        prev = pn;
    }
    result = PyTuple_New(5);
    if (result != NULL) {
        PyObject *items[5] = {PyLong_FromSsize_t(row), PyLong_FromSsize_t(pos),
                              PyLong_FromUnsignedLongLong((unsigned long long)first),
                              PyLong_FromSsize_t(count), PyLong_FromLong(stop)};
        for (int i = 0; i < 5; i++) {
            if (items[i] == NULL) {
                for (int j = 0; j < 5; j++)
                    Py_XDECREF(items[j]);
                Py_CLEAR(result);
                break;
            }
        }
        for (int i = 0; result != NULL && i < 5; i++)
            PyTuple_SET_ITEM(result, i, items[i]);
    }
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(open_datagram_doc,
"open_datagram(datagram, out, flags, dst_cid, after_pn, trailers) -> int\n\n"
"open_rows of one datagram (form PROTECTED) into `out` at 0, in one call\n"
"with nothing to parse or build: its packet number when it opened (the\n"
"inner datagram and its trailer's room fill len(datagram) - OVERHEAD\n"
"bytes), else -1 - the reason open_rows gives (STOP_OTHER, STOP_TAG).");

static PyObject *
keys_open_datagram(KeysObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "open_datagram(datagram, out, flags, dst_cid, after_pn, trailers)");
        return NULL;
    }
    int flags = (int)PyLong_AsLong(args[2]);
    unsigned long dst = PyLong_AsUnsignedLong(args[3]);
    long long after = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    int trailers = PyObject_IsTrue(args[5]);
    if (trailers < 0)
        return NULL;
    Py_buffer buf, out;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) != 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &out, PyBUF_WRITABLE) != 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    uint64_t pn = 0;
    Py_ssize_t written;
    int stop = open_row(self, buf.buf, buf.len, out.buf, out.len, PROTECTED_FORM, flags, dst, after, -1,
                        trailers, &pn, &written);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&out);
    if (stop < 0)
        return NULL;
    return stop == STOP_END ? PyLong_FromUnsignedLongLong(pn) : PyLong_FromLong(-1 - stop);
}

static PyMethodDef keys_methods[] = {
    {"seal_rows", (PyCFunction)keys_seal_rows, METH_VARARGS, seal_rows_doc},
    {"open_rows", (PyCFunction)(void (*)(void))keys_open_rows, METH_FASTCALL, open_rows_doc},
    {"seal_datagram", (PyCFunction)(void (*)(void))keys_seal_datagram, METH_FASTCALL, seal_datagram_doc},
    {"open_datagram", (PyCFunction)(void (*)(void))keys_open_datagram, METH_FASTCALL, open_datagram_doc},
    {"seal_short", (PyCFunction)(void (*)(void))keys_seal_short, METH_FASTCALL, seal_short_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef keys_members[] = {
    {"param_path", T_INT, offsetof(KeysObject, params), READONLY,
     "1 when rows pass their nonce and tag to OpenSSL as parameters (AES-GCM under OpenSSL 3), 0 "
     "when through EVP_*Init_ex and EVP_CIPHER_CTX_ctrl."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject KeysType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gannet.crypto._rows.Keys",
    .tp_basicsize = sizeof(KeysObject),
    .tp_dealloc = (destructor)keys_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Keys(aead, key, iv): one direction's key and IV, for sealing and opening rows.",
    .tp_methods = keys_methods,
    .tp_members = keys_members,
    .tp_init = (initproc)keys_init,
    .tp_new = PyType_GenericNew,
};

static PyObject *
crc32c_py(PyObject *module, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t c = crc32c(b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef module_methods[] = {
    {"crc32c", crc32c_py, METH_O, "CRC32C of a buffer (the one opened rows carry; for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "gannet.crypto._rows",
    "Sealing and opening the rows of a train or batch in one call (see _rows.c).", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__rows(void)
{
    if (load_libcrypto() < 0)
        return NULL;
    crc_init();
#ifdef HAVE_HW_CRC
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        x2n_init();
        crc32c = crc32c_hw3;
    }
#endif
    if (PyType_Ready(&KeysType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&KeysType);
    if (PyModule_AddObject(m, "Keys", (PyObject *)&KeysType) < 0) {
        Py_DECREF(&KeysType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "STOP_END", STOP_END);
    PyModule_AddIntConstant(m, "STOP_OTHER", STOP_OTHER);
    PyModule_AddIntConstant(m, "STOP_TAG", STOP_TAG);
    PyModule_AddIntConstant(m, "OVERHEAD", OVERHEAD);
    return m;
}
