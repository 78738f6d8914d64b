# C versions of envs/_fast.py, inlined into the compiled modules that `from envs cimport _fast`.
# Keep them equal to the Python definitions (tests/envs/test_native.py compares both builds).
cimport numpy as cnp
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM
from libc.string cimport memcpy


cdef extern from "numpy/arrayobject.h":
    # NumPy's C-API table of the module this is inlined into (NULL until import_array()); statements in
    # a .pxd do not run at import, so the first observation loads it.
    void** PyArray_API


cdef extern from "Python.h":
    # A new reference: an instance of a variable-size type with n items, all NULL, GC-tracked.
    object PyType_GenericAlloc(type t, Py_ssize_t n)


cdef inline object new_observation(
    const float[::1] flat, Py_ssize_t start, Py_ssize_t count, double a, double b, double c
):
    cdef cnp.npy_intp n
    cdef float* out
    if start < 0 or count < 0 or start + count > flat.shape[0]:
        raise IndexError(f"window {start}:{start + count} is outside the {flat.shape[0]} values")
    if PyArray_API == NULL:
        cnp.import_array()
    n = count + 3
    obs = cnp.PyArray_SimpleNew(1, &n, cnp.NPY_FLOAT32)
    out = <float*> cnp.PyArray_DATA(<cnp.ndarray> obs)
    if count:
        memcpy(out, &flat[start], count * sizeof(float))
    out[count] = <float> a
    out[count + 1] = <float> b
    out[count + 2] = <float> c
    return obs


cdef inline object new_record(type cls, tuple values):
    # What tuple.__new__(cls, values) does for a tuple subclass, without the call machinery: the
    # type's allocator, then the items, each with a reference of its own (SET_ITEM steals one).
    cdef Py_ssize_t n = len(values)
    cdef Py_ssize_t i
    rec = PyType_GenericAlloc(cls, n)
    for i in range(n):
        item = values[i]
        Py_INCREF(item)
        PyTuple_SET_ITEM(rec, i, item)
    return rec
