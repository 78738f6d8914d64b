# C declarations of envs/portfolio.py for the compiled build (see setup.py); the .py file is the source.
cimport cython
from envs cimport _fast
from libc cimport math  # math.floor & co. in the .py become C calls (same IEEE results)

cdef double _QTY_EPS
cdef double _CAP_SLACK
cdef tuple _TRANSITION_TABLE
cdef tuple _NO_TRADES

@cython.locals(a0=double, a1=double, eps=double, s0=int, s1=int, d=double, growth=int)
cpdef object classify(double q0, double q1)


cdef class FeatureSnapshots:
    cdef const float[:, ::1] _rows
    cdef tuple _layout
    cdef tuple _of_field

    @cython.locals(out=list, k=Py_ssize_t)
    cpdef tuple fields(self, Py_ssize_t row)

    @cython.locals(template=dict, d=dict, names=tuple, positions=tuple, j=Py_ssize_t, p=Py_ssize_t)
    cdef dict _group(self, Py_ssize_t row, tuple entry)


cdef class _OpenTrade:
    cdef public str trade_id
    cdef public long long side
    cdef public long long entry_time_ns
    cdef public Py_ssize_t entry_bar
    cdef public Py_ssize_t entry_ref
    cdef public double qty
    cdef public double avg_price
    cdef public double fees
    cdef public double borrow
    cdef public Py_ssize_t slices


cdef class Portfolio:
    cdef public str symbol
    cdef readonly object config
    cdef readonly double _leverage
    cdef readonly double _borrow_rate
    cdef readonly bint _allow_short
    cdef readonly object _snapshot
    cdef FeatureSnapshots _snapshots
    cdef public _OpenTrade _trade
    cdef public double cash
    cdef public double qty
    cdef public double last_price
    cdef public double realized_pnl
    cdef public double fees_paid
    cdef public double borrow_paid

    cpdef double equity_at(self, double price)
    cpdef object entry_bar(self)

    @cython.locals(q0=double, q1=double, a0=double, a1=double, eps=double, cash1=double, equity1=double)
    cpdef bint can_fill(self, object side, double qty, double price, double fee)

    @cython.locals(rate=double, cost=double)
    cpdef double mark(self, double price)

    @cython.locals(
        qty=double, price=double, fee=double, d=double, sign=long, q0=double, q1=double,
        t=_OpenTrade, closed=double, exit_fee=double,
    )
    cpdef tuple apply_fill(
        self, object result, Py_ssize_t bar_index, Py_ssize_t entry_ref=*, str exit_reason=*
    )

    @cython.locals(
        share=double, entry_fee=double, borrow=double, gross=double, fees=double, pnl=double,
        notional=double, rows=FeatureSnapshots, ref=Py_ssize_t,
    )
    cdef object _close_slice(
        self, _OpenTrade t, double qty, double price, double exit_fee, long long time_ns, Py_ssize_t bar,
        str reason,
    )
