/* The number check of guard/audit/seal.py's canonical(), in C.
 *
 * One function for Python: numbers(obj) -> int, the same answer as seal._numbers (which stays as the fallback
 * when this extension is not built, and as the reference tests/audit compare it with):
 *   2  every number is one orjson and RFC 8785 write alike (ints within +-2^53, floats in [1e-4, 1e16) that
 *      are not integral): orjson's sorted output is the canonical form;
 *   1  as 2, but some float is integral (1.0): JCS writes it as 1, so floats are normalised first;
 *   0  some number is outside those ranges (or NaN, or infinite, or nesting is deeper than 1000): the
 *      reference encoder decides.
 * Exact types only, as the Python walk does: dict values, list and tuple items, int (not bool), float;
 * anything else is not a number here. In the sealer this walk was ~4 us of the ~30 us an event costs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#define MAX_SAFE 9007199254740992LL /* 2^53 */
#define MAX_DEPTH 1000

static int scan(PyObject *o, int r, int depth) {
    if (depth > MAX_DEPTH)
        return 0;
    if (PyDict_CheckExact(o)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(o, &pos, &k, &v)) {
            r = scan(v, r, depth + 1);
            if (r == 0)
                return 0;
        }
    } else if (PyList_CheckExact(o) || PyTuple_CheckExact(o)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        PyObject **items = PySequence_Fast_ITEMS(o);
        for (Py_ssize_t i = 0; i < n; i++) {
            r = scan(items[i], r, depth + 1);
            if (r == 0)
                return 0;
        }
    } else if (PyLong_CheckExact(o)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow || v <= -MAX_SAFE || v >= MAX_SAFE)
            return 0;
    } else if (PyFloat_CheckExact(o)) {
        double v = PyFloat_AS_DOUBLE(o);
        double a = fabs(v);
        if (isfinite(v) && v == floor(v)) {
            if (a >= (double)MAX_SAFE)
                return 0;
            r = 1;
        } else if (!(a >= 1e-4 && a < 1e16)) {
            return 0;
        }
    }
    return r;
}

static PyObject *py_numbers(PyObject *self, PyObject *obj) {
    int r = scan(obj, 2, 0);
    if (r == 0 && PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(r);
}

static PyMethodDef methods[] = {
    {"numbers", py_numbers, METH_O,
     "numbers(obj) -> int\n\n2: orjson's numbers are RFC 8785's; 1: the same once integral floats are ints; "
     "0: the reference encoder must decide (see guard/audit/seal.py)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_canon",
                                    "The number check of seal.canonical in C (see seal._numbers).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__canon(void) { return PyModule_Create(&module); }
