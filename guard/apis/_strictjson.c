/* The object hook of guard.apis.strictjson in C: json's scanner calls it once per JSON object, so in Python
 * it was most of the strict reader's cost on bodies with many objects (tool schemas, long chats).
 *
 * pairs(list of (key, value)) -> dict, or raises Duplicate when two keys are equal or equal ignoring case
 * (str.casefold). Keys that are ASCII without capitals, the common case, need no folding: two of them are
 * equal ignoring case only when they are equal. Otherwise every key is folded with str.casefold, as the
 * Python hook does. Optional: without it strictjson uses its Python hook (same answers). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *Duplicate;

static int plain_key(PyObject *k) {
    if (!PyUnicode_Check(k) || !PyUnicode_IS_ASCII(k)) return 0;
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(k);
    Py_ssize_t n = PyUnicode_GET_LENGTH(k);
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z') return 0;
    return 1;
}

static PyObject *pairs(PyObject *self, PyObject *arg) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "pairs() takes a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    int plain = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(arg, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) {
            Py_DECREF(d);
            PyErr_SetString(PyExc_TypeError, "pairs() takes (key, value) tuples");
            return NULL;
        }
        PyObject *k = PyTuple_GET_ITEM(t, 0);
        if (PyDict_SetItem(d, k, PyTuple_GET_ITEM(t, 1)) < 0) {
            Py_DECREF(d);
            return NULL;
        }
        if (plain && !plain_key(k)) plain = 0;
    }
    if (PyDict_GET_SIZE(d) != n) {
        Py_DECREF(d);
        PyErr_SetString(Duplicate, "duplicate key");
        return NULL;
    }
    if (plain || n < 2) return d;
    PyObject *folded = PySet_New(NULL);
    if (folded == NULL) {
        Py_DECREF(d);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyObject_CallMethod(PyTuple_GET_ITEM(PyList_GET_ITEM(arg, i), 0), "casefold", NULL);
        if (f == NULL || PySet_Add(folded, f) < 0) {
            Py_XDECREF(f);
            Py_DECREF(folded);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(f);
    }
    Py_ssize_t m = PySet_GET_SIZE(folded);
    Py_DECREF(folded);
    if (m != n) {
        Py_DECREF(d);
        PyErr_SetString(Duplicate, "keys equal ignoring case");
        return NULL;
    }
    return d;
}

static PyMethodDef methods[] = {
    {"pairs", pairs, METH_O, "dict of the (key, value) pairs; Duplicate when keys are equal ignoring case"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_strictjson", NULL, -1, methods};

PyMODINIT_FUNC PyInit__strictjson(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Duplicate = PyErr_NewException("guard.apis._strictjson.Duplicate", PyExc_ValueError, NULL);
    if (Duplicate == NULL || PyModule_AddObject(m, "Duplicate", Duplicate) < 0) {
        Py_XDECREF(Duplicate);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(Duplicate);
    return m;
}
