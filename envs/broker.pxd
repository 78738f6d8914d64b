# C declarations of envs/broker.py for the compiled build (see setup.py); the .py file is the source.
cimport cython
from envs cimport _fast
from libc cimport math  # math.floor & co. in the .py become C calls (same IEEE results)

cdef double BPS
cdef double MAX_PARTICIPATION
cdef double TICK_TOLERANCE

from envs.portfolio cimport Portfolio

cdef Py_ssize_t _DRAW_BLOCK

cdef object _refused(
    str client_order_id, str symbol, object side, long long time_ns, double qty, double price, tuple why
)


cdef class SimBroker:
    cdef object _spec
    cdef object _account
    cdef Portfolio _book
    cdef object _faults
    cdef double _rate_limit_cut
    cdef double _timeout_cut
    cdef double _fault_cut
    cdef object _rng
    cdef list _draws
    cdef Py_ssize_t _next
    cdef double _taker_fee
    cdef double _half_spread
    cdef double _slippage
    cdef double _impact
    cdef double _step
    cdef double _min_qty
    cdef double _min_notional
    cdef double _tick

    cpdef object submit(self, object order, object quote)

    @cython.locals(
        why=tuple, i=Py_ssize_t, u=double, step=double, qty=double, slippage=double, impact=double,
        participation=double, move=double, tick=double, price=double, fee=double, book=Portfolio,
        fits=bint,
    )
    cpdef object fill(
        self, str client_order_id, str symbol, object side, double requested, bint reduce_only,
        long long time_ns, double ref, double volume,
    )
