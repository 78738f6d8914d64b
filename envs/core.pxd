# C declarations of envs/core.py for the compiled build (see setup.py); the .py file is the source.
cimport cython
from envs cimport _fast
from libc cimport math  # math.floor & co. in the .py become C calls (same IEEE results)

cdef double BPS
cdef double MAX_PARTICIPATION
cdef double TICK_TOLERANCE

from envs.broker cimport SimBroker
from envs.portfolio cimport Portfolio, classify


cdef class TradingCore:
    cdef object _spec
    cdef str _symbol
    cdef str _sym_id
    cdef str _id_prefix
    cdef double _taker_fee
    cdef double _half_spread
    cdef double _slippage
    cdef double _impact_bps
    cdef double _impact
    cdef double _tick
    cdef object _broker
    cdef SimBroker _sim
    cdef public Portfolio portfolio
    cdef public double band
    cdef public object order_hook
    cdef Py_ssize_t _bar
    cdef Py_ssize_t _seq
    cdef long long _last_decision_ns
    cdef object _vetoed

    cpdef Py_ssize_t bars_in_trade(self)

    @cython.locals(
        book=Portfolio, q=double, equity=double, f=double, delta=double, buy=bint, s=double, cash=double,
        phi=double, half_spread=double, slippage=double, impact=double, tick=double, move=double,
        fill=double, e=double, q1=double, size=double, participation=double, other=double,
    )
    cpdef double target_qty(self, double target, double price, double volume)

    @cython.locals(qty=double)
    cpdef tuple plan(
        self, double target, long long time_ns, double price, double volume, long long decision_time_ns
    )

    @cython.locals(
        book=Portfolio, band=double, f=double, q=double, equity=double, q1=double, delta=double,
        qty=double,
    )
    cpdef double _size(
        self, double target, long long time_ns, double price, double volume, long long decision_time_ns
    )

    @cython.locals(book=Portfolio, sim=SimBroker, signed=double, qty=double, q=double, cash=double)
    cpdef tuple _bar_step(
        self, double target, long long time_ns, double open_, double high, double low, double close,
        double volume, long long decision_time_ns, Py_ssize_t decision_row
    )

    cdef str _next_order_id(self, long long decision_time_ns)
