/* The repo reader's per-block hot path in C: CAR framing, the MST walk and records to
 * dataset columns (atproto JSON and the convenience fields).
 *
 * It accepts a strict subset of what the Python reader accepts and answers None for
 * anything else: an unusual but valid input, or an invalid one. The caller then takes
 * the Python path, which gives the exact result or the exact error. So this file never
 * decides that a repo is bad, and never needs to word an error the same way.
 *
 * The subset is what real repos are made of: CIDv1 DAG-CBOR / raw sha2-256 CIDs,
 * canonical DAG-CBOR without floats, integers within 64-bit signed range, nesting up to
 * MAX_DEPTH. sha256 is OpenSSL's (the libcrypto Python's hashlib already loaded), through
 * SHA256_Init/Update/Final: the one-shot SHA256() of OpenSSL 3 looks the algorithm up on
 * every call, which costs more than hashing a 200-byte block.
 *
 * It also makes the engine's rows (row(), and rows()' own) as tuples the cyclic garbage
 * collector does not track: see untrack().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#define CID_LEN 36
#define KEY_MAX 830 /* 317 + "/" + 512: the longest key the key syntax admits */
#define MAX_DEPTH 200
#define MIN_ENTRY 53 /* {k: b"", p: 0, t: null, v: CID}: the smallest MST entry */
/* The deepest tree walked here (each level holds ~2 KB of stack): a real repo's top layer
 * is ~log4 of its record count, under 16 for any repo there is; a deeper (forged) tree is
 * for the Python walk, whose recursion is not bounded by a thread's C stack. */
#define MAX_LAYER 32
#define OFFSET_SHIFT 32 /* index values pack offset << 32 | length, as car.py does */

typedef int (*sha256_init_fn)(void *);
typedef int (*sha256_update_fn)(void *, const void *, size_t);
typedef int (*sha256_final_fn)(unsigned char *, void *);

typedef struct {
    sha256_init_fn init;
    sha256_update_fn update;
    sha256_final_fn final;
    destructor plain_dealloc; /* of a tuple subclass made by a class statement */
} module_state;

/* Room for OpenSSL's SHA256_CTX (112 bytes in 1.1 and 3.x), opaque here. */
typedef union {
    unsigned char bytes[256];
    uint64_t align;
} sha256_ctx;

static void
sha256(module_state *st, const uint8_t *data, size_t len, unsigned char digest[32])
{
    sha256_ctx ctx;
    st->init(&ctx);
    st->update(&ctx, data, len);
    st->final(digest, &ctx);
}

/* A lookup said "take the Python path" (status 1) or raised (status -1). */
enum { OK = 0, FALLBACK = 1, RAISED = -1 };

static int
fast_cid(const uint8_t *p)
{
    return p[0] == 0x01 && (p[1] == 0x71 || p[1] == 0x55) && p[2] == 0x12 && p[3] == 0x20;
}

/* ---- output buffers ------------------------------------------------------------ */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    int nomem; /* a write failed for lack of memory (else a 0 from a writer is FALLBACK) */
    int non_ascii; /* a string written holds a non-ASCII character */
} Out;

static int
reserve(Out *o, Py_ssize_t more)
{
    if (o->len + more <= o->cap)
        return 1;
    Py_ssize_t cap = o->cap * 2 > o->len + more ? o->cap * 2 : o->len + more + 256;
    char *buf = PyMem_Realloc(o->buf, (size_t)cap);
    if (buf == NULL)
        return (o->nomem = 1, 0);
    o->buf = buf;
    o->cap = cap;
    return 1;
}

static int
put(Out *o, const char *s, Py_ssize_t n)
{
    if (!reserve(o, n))
        return 0;
    memcpy(o->buf + o->len, s, (size_t)n);
    o->len += n;
    return 1;
}

#define PUT_LIT(o, s) put((o), (s), (Py_ssize_t)(sizeof(s) - 1))

/* ---- CAR framing ------------------------------------------------------------- */

/* A minimal LEB128 varint of at most 5 bytes; 0 when truncated, longer or not minimal. */
static int
read_uvarint(const uint8_t *b, Py_ssize_t end, Py_ssize_t *pos, uint64_t *out)
{
    uint64_t value = 0;
    for (int i = 0; i < 5; i++) {
        if (*pos >= end)
            return 0;
        uint8_t byte = b[(*pos)++];
        value |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (byte < 0x80) {
            if (i > 0 && byte == 0)
                return 0;
            *out = value;
            return 1;
        }
    }
    return 0;
}

/* The block table: where each block is, by CID, without a Python object per block.
 * Open addressing over uint64 slots (a bytes object, so Python holds it), each 0 or a
 * block's ``offset << 32 | length``; a block's CID is the 36 bytes written just before it,
 * so a slot is told from another by comparing those. A slot's home is the low bits of
 * the CID's digest (random for real blocks); a CAR whose CIDs crowd one neighbourhood
 * (possible only with forged CIDs) is left to the Python scan's dict. */
#define PROBE_MAX 64

typedef struct {
    const uint8_t *data;
    Py_ssize_t size;
    const uint8_t *slots;
    uint64_t mask;
} Table;

static inline uint64_t
slot_at(const Table *t, uint64_t i)
{
    uint64_t v;
    memcpy(&v, t->slots + 8 * i, 8);
    return v;
}

static inline uint64_t
home(const Table *t, const uint8_t *cid)
{
    uint64_t h;
    memcpy(&h, cid + 4, 8);
    return h & t->mask;
}

/* Whether slot value v locates the block filed under cid. */
static inline int
holds(const Table *t, uint64_t v, const uint8_t *cid)
{
    uint64_t offset = v >> OFFSET_SHIFT, length = v & 0xFFFFFFFFULL;
    return offset >= CID_LEN && offset + length <= (uint64_t)t->size &&
           memcmp(t->data + offset - CID_LEN, cid, CID_LEN) == 0;
}

/* The slot value of a 36-byte cid's block, or 0 when it is not in the table. */
static uint64_t
table_find(const Table *t, const uint8_t *cid)
{
    uint64_t i = home(t, cid);
    for (int n = 0; n < PROBE_MAX; n++, i = (i + 1) & t->mask) {
        uint64_t v = slot_at(t, i);
        if (v == 0)
            return 0;
        if (holds(t, v, cid))
            return v;
    }
    return 0;
}

/* A Table over data from a table made by scan; 0 (TypeError set) if it cannot be one. */
static int
table_of(PyObject *data, PyObject *table, Table *t)
{
    Py_ssize_t n = PyBytes_GET_SIZE(table) / 8;
    if (PyBytes_GET_SIZE(table) % 8 != 0 || n == 0 || (n & (n - 1)) != 0) {
        PyErr_SetString(PyExc_TypeError, "not a block table made by scan()");
        return 0;
    }
    *t = (Table){(const uint8_t *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                 (const uint8_t *)PyBytes_AS_STRING(table), (uint64_t)n - 1};
    return 1;
}

/* One frame's place, or 0 when it is unusual or bad (truncated, over max_block, not a
 * CIDv1 sha2-256 CID). */
static int
frame(const uint8_t *b, Py_ssize_t end, Py_ssize_t *pos, Py_ssize_t max_block, Py_ssize_t *cid_at)
{
    uint64_t length;
    if (!read_uvarint(b, end, pos, &length) || length > (uint64_t)max_block ||
        length > (uint64_t)(end - *pos) || length < CID_LEN || !fast_cid(b + *pos))
        return 0;
    *cid_at = *pos;
    *pos += (Py_ssize_t)length;
    return 1;
}

#define PREFETCH_AHEAD 2048 /* bytes of the CAR the frame scan asks for ahead of it */

PyDoc_STRVAR(scan_doc,
"scan(data, pos, max_block) -> (table, blocks, frames) | None\n\n"
"Index the frames of a CAR held in memory from ``pos`` (just past the header): the block\n"
"table (for find, walk and rows; the first copy of a block wins), the number of distinct\n"
"blocks and the number of frames. None when any frame is unusual or bad.");

static PyObject *
scan(PyObject *module, PyObject *args)
{
    PyObject *data;
    Py_ssize_t start, max_block;
    if (!PyArg_ParseTuple(args, "O!nn", &PyBytes_Type, &data, &start, &max_block))
        return NULL;
    const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data), pos = start, cid_at, frames = 0;
    /* Offsets are packed into 32 bits: a larger CAR is for the Python scan. */
    if (start < 0 || start > end || max_block < 0 || (uint64_t)end > 0xFFFFFFFFULL)
        Py_RETURN_NONE;
    /* Count the frames first, to size the table. Frame heads lie hundreds of bytes apart
     * at irregular steps, which the hardware prefetcher does not follow: a CAR not in
     * cache would cost a memory round trip per frame. So the whole CAR is prefetched as
     * a stream, PREFETCH_AHEAD bytes ahead of the frame read. */
    Py_ssize_t fetched = pos;
    while (pos < end) {
        for (; fetched < end && fetched < pos + PREFETCH_AHEAD; fetched += 64)
            __builtin_prefetch(b + fetched);
        if (!frame(b, end, &pos, max_block, &cid_at))
            Py_RETURN_NONE;
        frames++;
    }
    Py_ssize_t n = 8;
    while (n < 2 * frames)
        n *= 2;
    PyObject *table = PyBytes_FromStringAndSize(NULL, 8 * n);
    if (table == NULL)
        return NULL;
    uint8_t *slots = (uint8_t *)PyBytes_AS_STRING(table);
    memset(slots, 0, (size_t)(8 * n));
    Table t = {b, end, slots, (uint64_t)n - 1};
    Py_ssize_t blocks = 0;
    for (pos = start; pos < end;) {
        Py_ssize_t frame_end = pos;
        (void)frame(b, end, &frame_end, max_block, &cid_at); /* checked by the first pass */
        const uint8_t *cid = b + cid_at;
        uint64_t packed = ((uint64_t)(cid_at + CID_LEN) << OFFSET_SHIFT) |
                          (uint64_t)(frame_end - cid_at - CID_LEN);
        uint64_t i = home(&t, cid);
        int placed = 0;
        for (int probes = 0; probes < PROBE_MAX; probes++, i = (i + 1) & t.mask) {
            uint64_t v = slot_at(&t, i);
            if (v == 0) {
                memcpy(slots + 8 * i, &packed, 8);
                blocks++;
                placed = 1;
                break;
            }
            if (holds(&t, v, cid)) { /* a repeated block: the first copy stays */
                placed = 1;
                break;
            }
        }
        if (!placed) {
            Py_DECREF(table);
            Py_RETURN_NONE;
        }
        pos = frame_end;
    }
    return Py_BuildValue("(Nnn)", table, blocks, frames);
}

PyDoc_STRVAR(find_doc,
"find(data, table, cid) -> int | None\n\n"
"Where the block filed under ``cid`` is (``offset << 32 | length``), by scan's table;\n"
"None when it is not there.");

static PyObject *
find(PyObject *module, PyObject *args)
{
    PyObject *data, *table;
    const char *cid;
    Py_ssize_t cid_len;
    Table t;
    if (!PyArg_ParseTuple(args, "O!O!y#", &PyBytes_Type, &data, &PyBytes_Type, &table, &cid,
                          &cid_len) ||
        !table_of(data, table, &t))
        return NULL;
    uint64_t v = cid_len == CID_LEN ? table_find(&t, (const uint8_t *)cid) : 0;
    if (v == 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(v);
}

/* A block by binary CID: OK with *out and *len set, FALLBACK if missing or its hash is
 * wrong (the Python path raises the precise error). */
static int
block(module_state *st, const Table *t, const uint8_t *cid, int check, const uint8_t **out,
      Py_ssize_t *len)
{
    if (!fast_cid(cid))
        return FALLBACK;
    uint64_t v = table_find(t, cid);
    if (v == 0)
        return FALLBACK;
    *out = t->data + (v >> OFFSET_SHIFT);
    *len = (Py_ssize_t)(v & 0xFFFFFFFFULL);
    if (check) {
        unsigned char digest[32];
        sha256(st, *out, (size_t)*len, digest);
        if (memcmp(digest, cid + 4, 32) != 0)
            return FALLBACK;
    }
    return OK;
}

/* ---- CBOR heads ----------------------------------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
} In;

/* One data item's head, minimally encoded and of definite length; 0 otherwise. Major
 * type 7 (simple values, floats) comes back with ``arg`` = the additional info. */
static int
head(In *in, int *major, uint64_t *arg)
{
    if (in->p >= in->end)
        return 0;
    uint8_t ib = *in->p++;
    int ai = ib & 31;
    *major = ib >> 5;
    if (*major == 7) {
        *arg = (uint64_t)ai;
        return ai < 24;
    }
    if (ai < 24) {
        *arg = (uint64_t)ai;
        return 1;
    }
    int n = ai == 24 ? 1 : ai == 25 ? 2 : ai == 26 ? 4 : ai == 27 ? 8 : 0;
    if (n == 0 || in->end - in->p < n)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | *in->p++;
    uint64_t floor = n == 1 ? 24 : n == 2 ? 0x100 : n == 4 ? 0x10000 : 0x100000000ULL;
    *arg = v;
    return v >= floor;
}

/* A byte or text string's head and contents. */
static int
string(In *in, int want_major, const uint8_t **s, Py_ssize_t *len)
{
    int major;
    uint64_t n;
    if (!head(in, &major, &n) || major != want_major || n > (uint64_t)(in->end - in->p))
        return 0;
    *s = in->p;
    *len = (Py_ssize_t)n;
    in->p += n;
    return 1;
}

/* A CID link (tag 42: a byte string of 0x00 + binary CID) in the fast form. */
static int
read_link(In *in, const uint8_t **cid)
{
    const uint8_t *s;
    Py_ssize_t len;
    if (in->end - in->p < 2 || in->p[0] != 0xd8 || in->p[1] != 42)
        return 0;
    in->p += 2;
    if (!string(in, 2, &s, &len) || len != CID_LEN + 1 || s[0] != 0 || !fast_cid(s + 1))
        return 0;
    *cid = s + 1;
    return 1;
}

/* null, or a link: *cid NULL for null. */
static int
optional_link(In *in, const uint8_t **cid)
{
    if (in->p < in->end && *in->p == 0xf6) {
        in->p++;
        *cid = NULL;
        return 1;
    }
    return read_link(in, cid);
}

/* A one-letter text key, e.g. "e". */
static int
key1(In *in, char letter)
{
    if (in->end - in->p < 2 || in->p[0] != 0x61 || in->p[1] != (uint8_t)letter)
        return 0;
    in->p += 2;
    return 1;
}

/* ---- the MST walk -------------------------------------------------------------- */

typedef struct {
    const uint8_t *k;
    Py_ssize_t klen;
    uint64_t p;
    const uint8_t *v, *t;
} Entry;

typedef struct {
    module_state *st;
    Table table;
    int check_hashes, check_layers;
    Py_ssize_t nranges;
    const uint8_t **starts, **stops;
    Py_ssize_t *start_lens, *stop_lens;
    Out out; /* the records found: ENTRY_HEAD bytes of key length, the key, the CID */
} Walk;

#define ENTRY_HEAD 2

typedef struct {
    const uint8_t *s;
    Py_ssize_t len; /* -1: no bound */
} Bound;

static int
cmp(const uint8_t *a, Py_ssize_t alen, const uint8_t *b, Py_ssize_t blen)
{
    Py_ssize_t n = alen < blen ? alen : blen;
    int c = memcmp(a, b, (size_t)n);
    return c != 0 ? c : (alen > blen) - (alen < blen);
}

static int
wanted_key(Walk *w, const uint8_t *key, Py_ssize_t len)
{
    if (w->nranges < 0)
        return 1;
    for (Py_ssize_t i = 0; i < w->nranges; i++)
        if (cmp(key, len, w->starts[i], w->start_lens[i]) >= 0 &&
            cmp(key, len, w->stops[i], w->stop_lens[i]) < 0)
            return 1;
    return 0;
}

/* Whether a wanted key can lie strictly between lo and hi. */
static int
wanted_between(Walk *w, Bound lo, Bound hi)
{
    if (w->nranges < 0)
        return 1;
    for (Py_ssize_t i = 0; i < w->nranges; i++)
        if ((hi.len < 0 || cmp(w->starts[i], w->start_lens[i], hi.s, hi.len) < 0) &&
            (lo.len < 0 || cmp(w->stops[i], w->stop_lens[i], lo.s, lo.len) > 0))
            return 1;
    return 0;
}

static int
nsid_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-';
}

/* collection/rkey: [a-zA-Z][a-zA-Z0-9.-]{0,316} "/" [a-zA-Z0-9._:~-]{1,512} */
static int
valid_key(const uint8_t *k, Py_ssize_t len)
{
    if (len < 3 || !((k[0] >= 'a' && k[0] <= 'z') || (k[0] >= 'A' && k[0] <= 'Z')))
        return 0;
    Py_ssize_t i = 1;
    while (i < len && k[i] != '/') {
        if (!nsid_char(k[i]) || i >= 317)
            return 0;
        i++;
    }
    Py_ssize_t rkey = len - i - 1;
    if (i >= len || rkey < 1 || rkey > 512)
        return 0;
    for (i++; i < len; i++) {
        uint8_t c = k[i];
        if (!(nsid_char(c) || c == '_' || c == ':' || c == '~'))
            return 0;
    }
    return 1;
}

static int
layer_of(module_state *st, const uint8_t *key, Py_ssize_t len)
{
    unsigned char d[32];
    sha256(st, key, (size_t)len, d);
    int zeros = 0;
    for (int i = 0; i < 32; i++) {
        if (d[i] == 0) {
            zeros += 8;
            continue;
        }
        zeros += __builtin_clz((unsigned)d[i]) - 24;
        break;
    }
    return zeros / 2;
}

/* Parse an MST node {e: [{k, p, t, v}], l}; the entries go to a new array (PyMem). */
static int
parse_node(const uint8_t *b, Py_ssize_t len, const uint8_t **left, Entry **entries,
           Py_ssize_t *count)
{
    In in = {b, b + len};
    int major;
    uint64_t n;
    /* An entry takes at least MIN_ENTRY bytes: a count beyond that cannot be real, and
     * is not allocated for. */
    if (in.p >= in.end || *in.p++ != 0xa2 || !key1(&in, 'e') || !head(&in, &major, &n) ||
        major != 4 || n > (uint64_t)len / MIN_ENTRY)
        return FALLBACK;
    Entry *es = PyMem_Malloc(sizeof(Entry) * (n ? n : 1));
    if (es == NULL) {
        PyErr_NoMemory();
        return RAISED;
    }
    for (uint64_t i = 0; i < n; i++) {
        Entry *e = &es[i];
        int pmajor;
        if (in.p >= in.end || *in.p++ != 0xa4 || !key1(&in, 'k') ||
            !string(&in, 2, &e->k, &e->klen) || !key1(&in, 'p') ||
            !head(&in, &pmajor, &e->p) || pmajor != 0 || !key1(&in, 't') ||
            !optional_link(&in, &e->t) || !key1(&in, 'v') || !read_link(&in, &e->v))
            goto bad;
    }
    if (!key1(&in, 'l') || !optional_link(&in, left) || in.p != in.end)
        goto bad;
    *entries = es;
    *count = (Py_ssize_t)n;
    return OK;
bad:
    PyMem_Free(es);
    return FALLBACK;
}

static int walk_node(Walk *w, const uint8_t *cid, int layer, Bound lo, Bound hi, int root);

static int
subtree(Walk *w, const uint8_t *cid, int layer, Bound lo, Bound hi)
{
    if (layer == 0)
        return FALLBACK;
    if (!wanted_between(w, lo, hi))
        return OK;
    return walk_node(w, cid, layer - 1, lo, hi, 0);
}

static int
walk_entries(Walk *w, const uint8_t *left, Entry *es, Py_ssize_t n, int layer, Bound lo,
             Bound hi)
{
    uint8_t prev[KEY_MAX], key[KEY_MAX];
    Py_ssize_t prev_len = 0;
    Bound prev_key = lo;
    const uint8_t *pending = left;
    for (Py_ssize_t i = 0; i < n; i++) {
        Entry *e = &es[i];
        if (e->p > (uint64_t)prev_len || (Py_ssize_t)e->p + e->klen > KEY_MAX)
            return FALLBACK;
        Py_ssize_t klen = (Py_ssize_t)e->p + e->klen;
        memcpy(key, prev, (size_t)e->p);
        memcpy(key + e->p, e->k, (size_t)e->klen);
        if (!valid_key(key, klen) ||
            (prev_key.len >= 0 && cmp(key, klen, prev_key.s, prev_key.len) <= 0) ||
            (hi.len >= 0 && cmp(key, klen, hi.s, hi.len) >= 0))
            return FALLBACK;
        if (w->check_layers && layer_of(w->st, key, klen) != layer)
            return FALLBACK;
        if (pending != NULL) {
            int status = subtree(w, pending, layer, prev_key, (Bound){key, klen});
            if (status != OK)
                return status;
        }
        if (wanted_key(w, key, klen)) {
            uint16_t len16 = (uint16_t)klen;
            if (!put(&w->out, (const char *)&len16, ENTRY_HEAD) ||
                !put(&w->out, (const char *)key, klen) ||
                !put(&w->out, (const char *)e->v, CID_LEN)) {
                PyErr_NoMemory();
                return RAISED;
            }
        }
        memcpy(prev, key, (size_t)klen);
        prev_len = klen;
        prev_key = (Bound){prev, prev_len};
        pending = e->t;
    }
    return pending != NULL ? subtree(w, pending, layer, prev_key, hi) : OK;
}

static int
walk_node(Walk *w, const uint8_t *cid, int layer, Bound lo, Bound hi, int root)
{
    const uint8_t *b;
    Py_ssize_t len;
    int status = block(w->st, &w->table, cid, w->check_hashes, &b, &len);
    if (status != OK)
        return status;
    const uint8_t *left;
    Entry *es;
    Py_ssize_t n;
    status = parse_node(b, len, &left, &es, &n);
    if (status != OK)
        return status;
    if (root) {
        if (n == 0) {
            PyMem_Free(es);
            return left == NULL ? OK : FALLBACK;
        }
        layer = w->check_layers ? layer_of(w->st, es[0].k, es[0].klen) : MAX_LAYER;
        if (layer > MAX_LAYER) {
            PyMem_Free(es);
            return FALLBACK;
        }
    }
    else if (n == 0 && left == NULL) {
        PyMem_Free(es);
        return FALLBACK;
    }
    status = walk_entries(w, left, es, n, layer, lo, hi);
    PyMem_Free(es);
    return status;
}

PyDoc_STRVAR(walk_doc,
"walk(data, table, root, check_hashes, check_layers, ranges) -> bytes | None\n\n"
"The records of the MST under ``root`` in key order, checked as mst.walk_mst checks\n"
"them, packed for rows(): each a 2-byte key length, the key and the record's CID.\n"
"``ranges``: sorted ``(start, stop)`` key ranges to keep, or None for all. None when\n"
"anything is unusual or wrong.");

static PyObject *
walk(PyObject *module, PyObject *args)
{
    PyObject *data, *table, *root, *ranges, *result = NULL;
    int check_hashes, check_layers;
    if (!PyArg_ParseTuple(args, "O!O!O!ppO", &PyBytes_Type, &data, &PyBytes_Type, &table,
                          &PyBytes_Type, &root, &check_hashes, &check_layers, &ranges))
        return NULL;
    Walk w = {PyModule_GetState(module), {0}, check_hashes, check_layers, -1,
              NULL, NULL, NULL, NULL, {NULL, 0, 0, 0, 0}};
    if (!table_of(data, table, &w.table))
        return NULL;
    if (PyBytes_GET_SIZE(root) != CID_LEN || !fast_cid((const uint8_t *)PyBytes_AS_STRING(root)))
        Py_RETURN_NONE;
    Py_ssize_t n = 0;
    if (ranges != Py_None) {
        if (!PyList_Check(ranges)) {
            PyErr_SetString(PyExc_TypeError, "ranges must be a list or None");
            return NULL;
        }
        n = PyList_GET_SIZE(ranges);
        w.starts = PyMem_Malloc(sizeof(uint8_t *) * (n + 1));
        w.stops = PyMem_Malloc(sizeof(uint8_t *) * (n + 1));
        w.start_lens = PyMem_Malloc(sizeof(Py_ssize_t) * (n + 1));
        w.stop_lens = PyMem_Malloc(sizeof(Py_ssize_t) * (n + 1));
        if (!w.starts || !w.stops || !w.start_lens || !w.stop_lens) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *r = PyList_GET_ITEM(ranges, i);
            char *s, *t;
            if (!PyTuple_Check(r)) {
                PyErr_SetString(PyExc_TypeError, "ranges must hold (start, stop) tuples");
                goto done;
            }
            if (!PyArg_ParseTuple(r, "y#y#", &s, &w.start_lens[i], &t, &w.stop_lens[i]))
                goto done;
            w.starts[i] = (const uint8_t *)s;
            w.stops[i] = (const uint8_t *)t;
        }
        w.nranges = n;
        /* Sorted, disjoint ranges (collections that are NSIDs) only: KeyRanges bisects,
         * and for overlapping ones that is not "any range holds the key". */
        for (Py_ssize_t i = 0; i + 1 < n; i++)
            if (cmp(w.stops[i], w.stop_lens[i], w.starts[i + 1], w.start_lens[i + 1]) > 0 ||
                cmp(w.starts[i], w.start_lens[i], w.starts[i + 1], w.start_lens[i + 1]) >= 0) {
                result = Py_None;
                Py_INCREF(result);
                goto done;
            }
    }
    int status = walk_node(&w, (const uint8_t *)PyBytes_AS_STRING(root), 0, (Bound){NULL, -1},
                           (Bound){NULL, -1}, 1);
    if (status == OK)
        result = PyBytes_FromStringAndSize(w.out.buf, w.out.len);
    else if (status == FALLBACK) {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    PyMem_Free(w.out.buf);
    PyMem_Free(w.starts);
    PyMem_Free(w.stops);
    PyMem_Free(w.start_lens);
    PyMem_Free(w.stop_lens);
    return result;
}

/* ---- records to JSON ------------------------------------------------------------- */


static const char B32[] = "abcdefghijklmnopqrstuvwxyz234567";
static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* "b" + base32 of a 36-byte CID: 59 characters into dst. */
static void
cid_text(const uint8_t *cid, char *dst)
{
    *dst++ = 'b';
    uint32_t acc = 0;
    int bits = 0;
    for (int i = 0; i < CID_LEN; i++) {
        acc = (acc << 8) | cid[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            *dst++ = B32[(acc >> bits) & 31];
        }
    }
    if (bits > 0)
        *dst++ = B32[(acc << (5 - bits)) & 31];
}
#define CID_TEXT_LEN 59

static int
put_base64(Out *o, const uint8_t *s, Py_ssize_t n)
{
    if (!reserve(o, (n + 2) / 3 * 4))
        return 0;
    char *d = o->buf + o->len;
    Py_ssize_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8) | s[i + 2];
        *d++ = B64[v >> 18];
        *d++ = B64[(v >> 12) & 63];
        *d++ = B64[(v >> 6) & 63];
        *d++ = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *d++ = B64[v >> 18];
        *d++ = B64[(v >> 12) & 63];
    }
    else if (n - i == 2) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8);
        *d++ = B64[v >> 18];
        *d++ = B64[(v >> 12) & 63];
        *d++ = B64[(v >> 6) & 63];
    }
    o->len = d - o->buf;
    return 1;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0. */
static int
utf8_seq(const uint8_t *s, const uint8_t *end)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    Py_ssize_t left = end - s;
    if (c >= 0xC2 && c <= 0xDF)
        return left >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F))
            return 0; /* overlong, or a surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
            return 0;
        return 4;
    }
    return 0;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
/* Whether any of the 8 bytes in v is below n (n <= 128), or is zero. */
#define ANY_BELOW(v, n) (((v) - ONES * (n)) & ~(v) & HIGHS)
#define ANY_ZERO(v) ANY_BELOW(v, 1)

/* Whether the 8 bytes in v are all ASCII that JSON takes as it is (no '"', '\\' or
 * control character): the common case, copied 8 bytes at a time. */
static inline int
plain8(uint64_t v)
{
    return !((v & HIGHS) | ANY_BELOW(v, 0x20) | ANY_ZERO(v ^ (ONES * '"')) |
             ANY_ZERO(v ^ (ONES * '\\')));
}

/* A JSON string as orjson writes it: only '"', '\\' and control characters escaped.
 * 0 for invalid UTF-8 (FALLBACK) or no memory. */
static int
put_string(Out *o, const uint8_t *s, Py_ssize_t n)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *end = s + n;
    /* Room for the worst case up front (every byte a 6-byte escape, and the quotes),
     * so the loop writes without checking. */
    if (n > (PY_SSIZE_T_MAX - 2) / 6)
        return (o->nomem = 1, 0);
    if (!reserve(o, 6 * n + 2))
        return 0;
    char *d = o->buf + o->len;
    *d++ = '"';
    while (s < end) {
        uint64_t v;
        while (end - s >= 8 && (memcpy(&v, s, 8), plain8(v))) {
            memcpy(d, &v, 8);
            d += 8;
            s += 8;
        }
        if (s == end)
            break;
        uint8_t c = *s;
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            *d++ = (char)c;
            s++;
            continue;
        }
        if (c >= 0x80) {
            int k = utf8_seq(s, end);
            if (k == 0)
                return 0;
            memcpy(d, s, (size_t)k);
            d += k;
            s += k;
            o->non_ascii = 1;
            continue;
        }
        *d++ = '\\';
        switch (c) {
        case '"': *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '\b': *d++ = 'b'; break;
        case '\f': *d++ = 'f'; break;
        case '\n': *d++ = 'n'; break;
        case '\r': *d++ = 'r'; break;
        case '\t': *d++ = 't'; break;
        default:
            *d++ = 'u';
            *d++ = '0';
            *d++ = '0';
            *d++ = hex[c >> 4];
            *d++ = hex[c & 15];
        }
        s++;
    }
    *d++ = '"';
    o->len = d - o->buf;
    return 1;
}

/* Where a value sits, for the fields the dataset copies out of a record. */
enum { AT_NONE, AT_TOP, AT_SUBJECT, AT_REPLY, AT_PARENT, AT_ROOT };
enum { F_CREATED, F_TEXT, F_PARENT, F_ROOT, F_SUBJECT_URI, F_SUBJECT_DID, F_COUNT };

typedef struct {
    Out out;
    const uint8_t *field[F_COUNT];
    Py_ssize_t field_len[F_COUNT];
} Conv;

static int
key_is(const uint8_t *k, Py_ssize_t n, const char *name)
{
    return (Py_ssize_t)strlen(name) == n && memcmp(k, name, (size_t)n) == 0;
}

/* Where the value of key k in a map at `at` sits, and which field it fills if a string. */
static int
place(int at, const uint8_t *k, Py_ssize_t n, int *field)
{
    *field = -1;
    switch (at) {
    case AT_TOP:
        if (key_is(k, n, "createdAt"))
            *field = F_CREATED;
        else if (key_is(k, n, "text"))
            *field = F_TEXT;
        else if (key_is(k, n, "subject")) {
            *field = F_SUBJECT_DID;
            return AT_SUBJECT;
        }
        else if (key_is(k, n, "reply"))
            return AT_REPLY;
        return AT_NONE;
    case AT_SUBJECT:
        if (key_is(k, n, "uri"))
            *field = F_SUBJECT_URI;
        return AT_NONE;
    case AT_REPLY:
        return key_is(k, n, "parent") ? AT_PARENT : key_is(k, n, "root") ? AT_ROOT : AT_NONE;
    case AT_PARENT:
    case AT_ROOT:
        if (key_is(k, n, "uri"))
            *field = at == AT_PARENT ? F_PARENT : F_ROOT;
        return AT_NONE;
    }
    return AT_NONE;
}

static int
put_uint(Out *o, uint64_t v)
{
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put(o, tmp + i, 24 - i);
}

/* One value: 1 written, 0 not (c->out.nomem tells a memory error from FALLBACK). `field`:
 * the field a string here fills (-1: none); `at`: where a map here sits. */
static int
convert(Conv *c, In *in, int depth, int at, int field)
{
    Out *o = &c->out;
    int major;
    uint64_t arg;
    if (depth > MAX_DEPTH || !head(in, &major, &arg))
        return 0;
    switch (major) {
    case 0:
        if (arg > INT64_MAX)
            return 0;
        return put_uint(o, arg);
    case 1:
        if (arg > INT64_MAX)
            return 0;
        return (PUT_LIT(o, "-") && put_uint(o, arg + 1));
    case 2:
        if (arg > (uint64_t)(in->end - in->p))
            return 0;
        if (!PUT_LIT(o, "{\"$bytes\":\"") || !put_base64(o, in->p, (Py_ssize_t)arg) ||
            !PUT_LIT(o, "\"}"))
            return 0;
        in->p += arg;
        return 1;
    case 3:
        if (arg > (uint64_t)(in->end - in->p))
            return 0;
        if (!put_string(o, in->p, (Py_ssize_t)arg))
            return 0;
        if (field >= 0) {
            c->field[field] = in->p;
            c->field_len[field] = (Py_ssize_t)arg;
        }
        in->p += arg;
        return 1;
    case 4:
        if (!PUT_LIT(o, "["))
            return 0;
        for (uint64_t i = 0; i < arg; i++) {
            if (i > 0 && !PUT_LIT(o, ","))
                return 0;
            if (!convert(c, in, depth + 1, AT_NONE, -1))
                return 0;
        }
        return PUT_LIT(o, "]");
    case 5: {
        if (!PUT_LIT(o, "{"))
            return 0;
        const uint8_t *prev = NULL;
        Py_ssize_t prev_len = 0;
        for (uint64_t i = 0; i < arg; i++) {
            const uint8_t *k;
            Py_ssize_t klen;
            if (!string(in, 3, &k, &klen))
                return 0;
            /* canonical order (shorter first, then bytewise) also rules out repeats */
            if (prev != NULL && (klen < prev_len ||
                                 (klen == prev_len && memcmp(k, prev, (size_t)klen) <= 0)))
                return 0;
            prev = k;
            prev_len = klen;
            if (i > 0 && !PUT_LIT(o, ","))
                return 0;
            if (!put_string(o, k, klen))
                return 0;
            if (!PUT_LIT(o, ":"))
                return 0;
            int child_field;
            int child_at = place(at, k, klen, &child_field);
            const uint8_t *before = in->p;
            if (!convert(c, in, depth + 1, child_at, child_field))
                return 0;
            /* createdAt must be a string: anything else is for the Python path to flag */
            if (child_field == F_CREATED && (*before >> 5) != 3)
                return 0;
        }
        return PUT_LIT(o, "}");
    }
    case 6: {
        const uint8_t *cid;
        if (arg != 42)
            return 0;
        in->p -= 2; /* a minimal tag 42 head is always 0xd8 0x2a: read_link() reads it again */
        if (!read_link(in, &cid))
            return 0;
        char text[CID_TEXT_LEN];
        cid_text(cid, text);
        if (!PUT_LIT(o, "{\"$link\":\"") || !put(o, text, CID_TEXT_LEN) || !PUT_LIT(o, "\"}"))
            return 0;
        return 1;
    }
    case 7:
        if (arg == 20)
            return PUT_LIT(o, "false");
        if (arg == 21)
            return PUT_LIT(o, "true");
        if (arg == 22)
            return PUT_LIT(o, "null");
        return 0;
    }
    return 0;
}

/* A str from valid UTF-8 known to be ASCII: copied into a new compact string. */
static PyObject *
ascii_text(const char *s, Py_ssize_t n)
{
    PyObject *str = PyUnicode_New(n, 127);
    if (str != NULL)
        memcpy(PyUnicode_DATA(str), s, (size_t)n);
    return str;
}

/* A str from valid UTF-8: ASCII (nearly every key, URI, CID and much JSON) without a
 * second decoding pass. */
static PyObject *
text(const char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    uint64_t any = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, s + i, 8);
        any |= v;
    }
    for (; i < n; i++)
        any |= (uint8_t)s[i];
    if (any & HIGHS)
        return PyUnicode_DecodeUTF8(s, n, NULL);
    return ascii_text(s, n);
}

static PyObject *
text_or_none(const uint8_t *s, Py_ssize_t n)
{
    if (s == NULL)
        Py_RETURN_NONE;
    return text((const char *)s, n);
}

static int
digits(const uint8_t *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* An atproto datetime in its common form, YYYY-MM-DDTHH:MM:SS[.digits]Z (at most 64
 * characters), as an aware UTC datetime; NULL (no exception) for any other string,
 * valid or not: syntax.parse_datetime decides those. */
static PyObject *
common_datetime(const uint8_t *s, Py_ssize_t n)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, us = 0;
    if (n < 20 || n > 64 || s[n - 1] != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' ||
        s[13] != ':' || s[16] != ':' || !digits(s, 4, &y) || !digits(s + 5, 2, &mo) ||
        !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) ||
        !digits(s + 17, 2, &sec))
        return NULL;
    if (n > 20) {
        int frac = (int)n - 21, value = 0;
        if (s[19] != '.' || frac < 1)
            return NULL;
        for (int i = 0; i < frac; i++)
            if (s[20 + i] < '0' || s[20 + i] > '9')
                return NULL;
        digits(s + 20, frac < 6 ? frac : 6, &value);
        for (int i = frac; i < 6; i++)
            value *= 10;
        us = value;
    }
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days[mo - 1] + (mo == 2 && leap) ||
        h > 23 || mi > 59 || sec > 59)
        return NULL;
    PyObject *dt = PyDateTimeAPI->DateTime_FromDateAndTime(
        y, mo, d, h, mi, sec, us, PyDateTime_TimeZone_UTC, PyDateTimeAPI->DateTimeType);
    if (dt == NULL)
        PyErr_Clear();
    return dt;
}

/* Whether cls is a strict subclass of tuple made by class statements only (a NamedTuple):
 * its instances are bare tuples of their items. A type made in C may keep more than its
 * items (os.stat_result does, past them) and is refused, as tuple.__new__ refuses it. */
static int
plain_tuple_type(module_state *st, PyTypeObject *cls)
{
    if (cls == &PyTuple_Type)
        return 0;
    for (PyTypeObject *t = cls; t != &PyTuple_Type; t = t->tp_base)
        if (t == NULL || t->tp_dealloc != st->plain_dealloc ||
            t->tp_basicsize != PyTuple_Type.tp_basicsize ||
            t->tp_itemsize != PyTuple_Type.tp_itemsize)
            return 0;
    return 1;
}

/* Leave a whole row out of the cyclic garbage collector when no item can ever be tracked
 * by it (CPython's own rule: not a container, or an exact tuple it already untracked;
 * an empty dict is untracked now but not once it holds a container). Such a row cannot be
 * part of a cycle. CPython untracks such tuples itself, but only exact tuples and only
 * when a collection reaches them; a named tuple stays tracked for life, so each
 * collection of an older generation walked every item of every row a batch holds
 * (~10 % of a job's CPU). row's type is a plain_tuple_type: no __dict__ or other slot
 * could come to hold anything. */
static void
untrack(PyObject *row)
{
    if (!PyObject_GC_IsTracked(row))
        return;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(row); i++) {
        PyObject *item = PyTuple_GET_ITEM(row, i);
        if (PyObject_IS_GC(item) && (!PyTuple_CheckExact(item) || PyObject_GC_IsTracked(item)))
            return;
    }
    PyObject_GC_UnTrack(row);
}

PyDoc_STRVAR(row_doc,
"row(cls, *values) -> cls\n\n"
"A ``cls`` (a tuple subclass made by class statements, such as a NamedTuple) of\n"
"``values``, as ``tuple.__new__(cls, values)`` makes it, but left out of the cyclic\n"
"garbage collector when no value can ever be tracked by it (str, bytes, int, datetime,\n"
"None ...: such a tuple cannot be part of a cycle). TypeError for any other cls.");

static PyObject *
row(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || !PyType_Check(args[0]) ||
        !plain_tuple_type(PyModule_GetState(module), (PyTypeObject *)args[0])) {
        PyErr_SetString(PyExc_TypeError, "row() needs a tuple subclass such as a NamedTuple first");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[0];
    PyObject *out = cls->tp_alloc(cls, nargs - 1);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 1; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(out, i - 1, args[i]);
    }
    untrack(out);
    return out;
}

#define ROW_FIELDS 13

/* Fill a new tuple's slot, or say the value could not be made (an exception is set). */
static int
set(PyObject *row, int i, PyObject *value)
{
    if (value == NULL)
        return 0;
    PyTuple_SET_ITEM(row, i, value);
    return 1;
}

PyDoc_STRVAR(rows_doc,
"rows(cls, data, table, did, records, pos, count, check_hashes) -> (list, pos)\n\n"
"For ``count`` records of ``records`` (packed by walk()) from byte ``pos``, each a ``cls``\n"
"(a NamedTuple; untracked by the cyclic GC) ``(collection, rkey, uri, cid, cid_str,\n"
"json, created_at, text, reply_parent, reply_root, subject_uri, subject_did,\n"
"created_moment)``: the record's atproto JSON and its string fields (None when absent\n"
"or not a string), and createdAt as a datetime when in the common form; and where the\n"
"next record starts. ``json`` and the fields after it are None when the block is\n"
"missing, fails its hash, or is not in this reader's subset: the Python path reads that\n"
"one.");

/* The next record of walk()'s packing at *pos: its key and CID; 0 at the end or when
 * the packing is not walk()'s (ValueError set). */
static int
next_record(const uint8_t *records, Py_ssize_t size, Py_ssize_t *pos, const char **key,
            Py_ssize_t *klen, const uint8_t **cid)
{
    uint16_t len16;
    if (size - *pos < ENTRY_HEAD)
        goto bad;
    memcpy(&len16, records + *pos, ENTRY_HEAD);
    if (size - *pos - ENTRY_HEAD < (Py_ssize_t)len16 + CID_LEN)
        goto bad;
    *key = (const char *)records + *pos + ENTRY_HEAD;
    *klen = len16;
    *cid = records + *pos + ENTRY_HEAD + len16;
    *pos += ENTRY_HEAD + len16 + CID_LEN;
    return 1;
bad:
    PyErr_SetString(PyExc_ValueError, "records not packed by walk()");
    return 0;
}

static PyObject *
rows(PyObject *module, PyObject *args)
{
    PyObject *data, *table, *did, *records;
    PyTypeObject *cls;
    Py_ssize_t pos, count;
    int check;
    Table t;
    if (!PyArg_ParseTuple(args, "O!O!O!UO!nnp", &PyType_Type, &cls, &PyBytes_Type, &data,
                          &PyBytes_Type, &table, &did, &PyBytes_Type, &records, &pos, &count,
                          &check) ||
        !table_of(data, table, &t))
        return NULL;
    module_state *st = PyModule_GetState(module);
    if (!plain_tuple_type(st, cls)) {
        PyErr_SetString(PyExc_TypeError, "cls must be a tuple subclass such as a NamedTuple");
        return NULL;
    }
    const uint8_t *packed = (const uint8_t *)PyBytes_AS_STRING(records);
    Py_ssize_t size = PyBytes_GET_SIZE(records);
    Py_ssize_t did_len;
    const char *did_utf8 = PyUnicode_AsUTF8AndSize(did, &did_len);
    if (did_utf8 == NULL)
        return NULL;
    if (pos < 0 || pos > size || count < 0) {
        PyErr_SetString(PyExc_ValueError, "bad pos or count");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    PyObject *collection = NULL;
    const char *collection_key = NULL;
    Py_ssize_t collection_len = 0;
    Conv c;
    memset(&c, 0, sizeof(c));
    Out uri = {NULL, 0, 0, 0, 0};
    for (Py_ssize_t i = 0; i < count && pos < size; i++) {
        const char *k;
        Py_ssize_t klen;
        const uint8_t *cid_at;
        if (!next_record(packed, size, &pos, &k, &klen, &cid_at))
            goto error;
        const char *slash = memchr(k, '/', (size_t)klen);
        if (slash == NULL) {
            PyErr_SetString(PyExc_ValueError, "a key without '/'");
            goto error;
        }
        Py_ssize_t clen = slash - k;
        /* Records come in key order: one str per run of a collection, made from the
         * key's bytes and compared by them. */
        if (collection == NULL || collection_len != clen ||
            memcmp(collection_key, k, (size_t)clen) != 0) {
            Py_XDECREF(collection);
            collection = text(k, clen);
            if (collection == NULL)
                goto error;
            collection_key = k;
            collection_len = clen;
        }
        uri.len = 0;
        char cid_str[CID_TEXT_LEN];
        cid_text(cid_at, cid_str);
        if (!PUT_LIT(&uri, "at://") || !put(&uri, did_utf8, did_len) || !PUT_LIT(&uri, "/") ||
            !put(&uri, k, klen)) {
            PyErr_NoMemory();
            goto error;
        }
        PyObject *row = cls->tp_alloc(cls, ROW_FIELDS);
        if (row == NULL)
            goto error;
        Py_INCREF(collection);
        PyTuple_SET_ITEM(row, 0, collection);
        if (!set(row, 1, text(slash + 1, klen - clen - 1)) ||
            !set(row, 2, text(uri.buf, uri.len)) ||
            !set(row, 3, PyBytes_FromStringAndSize((const char *)cid_at, CID_LEN)) ||
            !set(row, 4, ascii_text(cid_str, CID_TEXT_LEN)))
            goto row_error;
        const uint8_t *b;
        Py_ssize_t blen;
        int converted = 0;
        if (block(st, &t, cid_at, check, &b, &blen) == OK) {
            c.out.len = 0;
            c.out.nomem = 0;
            c.out.non_ascii = 0;
            memset(c.field, 0, sizeof(c.field));
            In in = {b, b + blen};
            converted = in.p < in.end && (*in.p >> 5) == 5 &&
                        convert(&c, &in, 1, AT_TOP, -1) && in.p == in.end;
            if (c.out.nomem) {
                PyErr_NoMemory();
                goto row_error;
            }
        }
        if (converted) {
            PyObject *json = c.out.non_ascii ? PyUnicode_DecodeUTF8(c.out.buf, c.out.len, NULL)
                                             : ascii_text(c.out.buf, c.out.len);
            if (!set(row, 5, json))
                goto row_error;
            for (int f = 0; f < F_COUNT; f++)
                if (!set(row, 6 + f, text_or_none(c.field[f], c.field_len[f])))
                    goto row_error;
            PyObject *moment = c.field[F_CREATED] == NULL
                                   ? NULL
                                   : common_datetime(c.field[F_CREATED], c.field_len[F_CREATED]);
            if (moment == NULL) {
                moment = Py_None;
                Py_INCREF(moment);
            }
            PyTuple_SET_ITEM(row, 6 + F_COUNT, moment);
        }
        else {
            for (int f = 5; f < ROW_FIELDS; f++) {
                Py_INCREF(Py_None);
                PyTuple_SET_ITEM(row, f, Py_None);
            }
        }
        untrack(row);
        /* Appended only when whole: no code ever sees a row with empty slots. */
        int appended = PyList_Append(out, row);
        Py_DECREF(row);
        if (appended < 0)
            goto error;
        continue;
    row_error:
        Py_DECREF(row);
        goto error;
    }
    Py_XDECREF(collection);
    PyMem_Free(c.out.buf);
    PyMem_Free(uri.buf);
    return Py_BuildValue("(Nn)", out, pos);
error:
    Py_XDECREF(collection);
    PyMem_Free(c.out.buf);
    PyMem_Free(uri.buf);
    Py_DECREF(out);
    return NULL;
}

/* ---- the module -------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {"find", find, METH_VARARGS, find_doc},
    {"walk", walk, METH_VARARGS, walk_doc},
    {"rows", rows, METH_VARARGS, rows_doc},
    {"row", (PyCFunction)(void (*)(void))row, METH_FASTCALL, row_doc},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    module_state *st = PyModule_GetState(module);
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return -1;
    /* The dealloc every class-statement subclass of tuple gets, from one made here. */
    PyObject *probe = PyObject_CallFunction((PyObject *)&PyType_Type, "s(O){}", "probe",
                                            (PyObject *)&PyTuple_Type);
    if (probe == NULL)
        return -1;
    st->plain_dealloc = ((PyTypeObject *)probe)->tp_dealloc;
    Py_DECREF(probe);
    /* hashlib's OpenSSL: import it so its libcrypto is loaded, then find SHA256 there. */
    PyObject *hashlib = PyImport_ImportModule("_hashlib");
    if (hashlib == NULL)
        return -1;
    Py_DECREF(hashlib);
    static const char *names[] = {"libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && st->final == NULL; i++) {
        void *lib = dlopen(names[i], RTLD_NOW | RTLD_NOLOAD);
        if (lib == NULL)
            continue;
        st->init = (sha256_init_fn)dlsym(lib, "SHA256_Init");
        st->update = (sha256_update_fn)dlsym(lib, "SHA256_Update");
        st->final = (sha256_final_fn)dlsym(lib, "SHA256_Final");
        if (st->init == NULL || st->update == NULL)
            st->final = NULL;
    }
    if (st->final == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL's SHA256 functions not found beside hashlib");
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "bsky_backfill.atproto._fastrepo",
    "The repo reader's hot path in C (see the comment at the top of _fastrepo.c).",
    sizeof(module_state),
    methods,
    slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__fastrepo(void)
{
    return PyModuleDef_Init(&moduledef);
}
