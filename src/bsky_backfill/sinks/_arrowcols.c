/* The Parquet sink's hot path: rows to columns, and columns of str or aware UTC
 * datetimes to Arrow buffers (in this machine's byte order, as Arrow's in memory are).
 *
 * columns(): ``zip(*rows)`` visits every row once per column; this visits each once.
 * strings(): a str's UTF-8 copied as it is (pyarrow's converter spends ~30 ns a value).
 * micros(): no Python call per value (pyarrow asks each datetime for its utcoffset():
 * ~200-500 ns a value). Anything but None or an exact datetime whose tzinfo is
 * datetime.timezone.utc answers None: the caller then lets pyarrow convert the column,
 * with its own rules.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's
 * days_from_civil). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

PyDoc_STRVAR(micros_doc,
"micros(values) -> (data, validity, null_count) | None\n\n"
"``values`` (a tuple or list of aware UTC datetimes and None) as Arrow buffers: int64\n"
"microseconds since the epoch (in this machine's byte order, as Arrow's own buffers\n"
"are), and a validity bitmap (None when no value is None). None for any other value.");

static PyObject *
micros(PyObject *module, PyObject *values)
{
    PyObject *seq = PySequence_Fast(values, "values must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *data = PyBytes_FromStringAndSize(NULL, n * 8);
    PyObject *validity = PyBytes_FromStringAndSize(NULL, (n + 7) / 8);
    if (data == NULL || validity == NULL)
        goto error;
    int64_t *out = (int64_t *)PyBytes_AS_STRING(data);
    uint8_t *bits = (uint8_t *)PyBytes_AS_STRING(validity);
    memset(bits, 0, (size_t)(n + 7) / 8);
    Py_ssize_t nulls = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = items[i];
        if (v == Py_None) {
            out[i] = 0;
            nulls++;
            continue;
        }
        /* Exactly datetime: a subclass may compute its own utcoffset(), which pyarrow asks. */
        if (!PyDateTime_CheckExact(v) || PyDateTime_DATE_GET_TZINFO(v) != PyDateTime_TimeZone_UTC) {
            Py_DECREF(seq);
            Py_DECREF(data);
            Py_DECREF(validity);
            Py_RETURN_NONE;
        }
        int64_t days = days_from_civil(PyDateTime_GET_YEAR(v), PyDateTime_GET_MONTH(v),
                                       PyDateTime_GET_DAY(v));
        int64_t seconds = days * 86400 + PyDateTime_DATE_GET_HOUR(v) * 3600 +
                          PyDateTime_DATE_GET_MINUTE(v) * 60 + PyDateTime_DATE_GET_SECOND(v);
        out[i] = seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(v);
        bits[i >> 3] |= (uint8_t)(1u << (i & 7));
    }
    Py_DECREF(seq);
    if (nulls == 0) {
        Py_DECREF(validity);
        validity = Py_None;
        Py_INCREF(Py_None);
    }
    return Py_BuildValue("(NNn)", data, validity, nulls);
error:
    Py_DECREF(seq);
    Py_XDECREF(data);
    Py_XDECREF(validity);
    return NULL;
}

PyDoc_STRVAR(columns_doc,
"columns(rows, width) -> list[list]\n\n"
"``rows`` (a list of tuples of ``width`` items) as ``width`` lists, one per position:\n"
"``[list(c) for c in zip(*rows)]``, visiting each row once. TypeError for anything else.");

static PyObject *
columns(PyObject *module, PyObject *args)
{
    PyObject *rows;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &rows, &width))
        return NULL;
    if (width < 0) {
        PyErr_SetString(PyExc_ValueError, "width must be >= 0");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != width) {
            PyErr_Format(PyExc_TypeError, "row %zd is not a tuple of %zd items", i, width);
            return NULL;
        }
    }
    PyObject *out = PyList_New(width);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t j = 0; j < width; j++) {
        PyObject *column = PyList_New(n);
        if (column == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, j, column);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        for (Py_ssize_t j = 0; j < width; j++) {
            PyObject *value = PyTuple_GET_ITEM(row, j);
            Py_INCREF(value);
            PyList_SET_ITEM(PyList_GET_ITEM(out, j), i, value);
        }
    }
    return out;
}

PyDoc_STRVAR(strings_doc,
"strings(values, allocate) -> (offsets, data, validity, null_count) | None\n\n"
"``values`` (a list of str and None) as an Arrow string column's buffers, each made by\n"
"``allocate(nbytes)`` (a writable buffer: pyarrow.allocate_buffer, so Arrow's memory\n"
"pool holds them): int32 offsets and UTF-8 data (this machine's byte order), and a\n"
"validity bitmap (None when no value is None). None for any other value, a str that is\n"
"not valid UTF-8 (a lone surrogate), or data past int32 offsets.");

/* A str's UTF-8 (cached in the str by CPython; ASCII is its own data), or NULL with no
 * exception set when it has none. */
static const char *
utf8_of(PyObject *s, Py_ssize_t *len)
{
    const char *u = PyUnicode_AsUTF8AndSize(s, len);
    if (u == NULL)
        PyErr_Clear();
    return u;
}

/* A new writable buffer of n bytes from allocate(n), its memory in *view; zeroed if
 * ``zeroed``. */
static PyObject *
allocated(PyObject *allocate, Py_ssize_t n, Py_buffer *view, int zeroed)
{
    PyObject *buffer = PyObject_CallFunction(allocate, "n", n);
    if (buffer == NULL)
        return NULL;
    if (PyObject_GetBuffer(buffer, view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(buffer);
        return NULL;
    }
    if (view->len < n) {
        PyBuffer_Release(view);
        Py_DECREF(buffer);
        PyErr_SetString(PyExc_ValueError, "allocate() gave a buffer too small");
        return NULL;
    }
    if (zeroed)
        memset(view->buf, 0, (size_t)n);
    return buffer;
}

static PyObject *
strings(PyObject *module, PyObject *args)
{
    PyObject *list, *allocate;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &list, &allocate))
        return NULL;
    /* A tuple of the values: allocate() runs Python code, which could change the list. */
    PyObject *values = PyList_AsTuple(list);
    if (values == NULL)
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(values), total = 0, nulls = 0, len;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyTuple_GET_ITEM(values, i);
        if (v == Py_None) {
            nulls++;
            continue;
        }
        if (!PyUnicode_CheckExact(v) || utf8_of(v, &len) == NULL || len > INT32_MAX - total) {
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        total += len;
    }
    Py_buffer at_view, data_view, bits_view;
    PyObject *offsets = allocated(allocate, (n + 1) * 4, &at_view, 0);
    if (offsets == NULL)
        goto done;
    PyObject *data = allocated(allocate, total, &data_view, 0);
    if (data == NULL) {
        PyBuffer_Release(&at_view);
        Py_DECREF(offsets);
        goto done;
    }
    PyObject *validity = Py_None;
    if (nulls > 0 && (validity = allocated(allocate, (n + 7) / 8, &bits_view, 1)) == NULL) {
        PyBuffer_Release(&at_view);
        PyBuffer_Release(&data_view);
        Py_DECREF(offsets);
        Py_DECREF(data);
        goto done;
    }
    char *out = data_view.buf;
    int32_t *at = at_view.buf;
    uint8_t *bits = nulls > 0 ? bits_view.buf : NULL;
    int32_t pos = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyTuple_GET_ITEM(values, i);
        memcpy(at + i, &pos, 4);
        if (v == Py_None)
            continue;
        const char *u = utf8_of(v, &len); /* made (and cached) by the first pass */
        memcpy(out + pos, u, (size_t)len);
        pos += (int32_t)len;
        if (bits != NULL)
            bits[i >> 3] |= (uint8_t)(1u << (i & 7));
    }
    memcpy(at + n, &pos, 4);
    PyBuffer_Release(&at_view);
    PyBuffer_Release(&data_view);
    if (bits != NULL)
        PyBuffer_Release(&bits_view);
    else
        Py_INCREF(Py_None);
    result = Py_BuildValue("(NNNn)", offsets, data, validity, nulls);
done:
    Py_DECREF(values);
    return result;
}

static PyMethodDef methods[] = {
    {"columns", columns, METH_VARARGS, columns_doc},
    {"strings", strings, METH_VARARGS, strings_doc},
    {"micros", micros, METH_O, micros_doc},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    PyDateTime_IMPORT;
    return PyDateTimeAPI == NULL ? -1 : 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "bsky_backfill.sinks._arrowcols",
    "Rows to columns and UTC datetimes to Arrow timestamp buffers (see _arrowcols.c).",
    0,
    methods,
    slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__arrowcols(void)
{
    return PyModuleDef_Init(&moduledef);
}
