# C declarations of envs/cursor.py for the compiled build (see setup.py); the .py file is the source.
cimport cython
from libc cimport math  # math.floor & co. in the .py become C calls (same IEEE results)

from envs cimport _fast
from envs.core cimport TradingCore
from envs.portfolio cimport Portfolio

cdef Py_ssize_t _N_STATE
cdef double _MAX_TRADE_BARS
cdef double _CLIP
cdef double _RUIN_FLOOR


@cython.locals(
    wk=Py_ssize_t, book=Portfolio, qty=double, price=double, equity=double, clip=double, exposure=double,
    upnl=double, held=double, bars=Py_ssize_t,
)
cpdef object build_observation(
    const float[::1] flat, Py_ssize_t row, Py_ssize_t n_features, Py_ssize_t window, TradingCore core
)


cpdef dict step_info(Portfolio book, long long time_ns, Py_ssize_t step, object result)


@cython.locals(qty=double, price=double, cash=double, equity=double)
cdef dict _info(
    Portfolio book, long long time_ns, Py_ssize_t step, tuple orders, tuple trades, tuple errors,
    tuple vetoed, object bar,
)


cdef class ReplayCursor:
    cdef const long long[::1] _time
    cdef const double[::1] _open
    cdef const double[::1] _high
    cdef const double[::1] _low
    cdef const double[::1] _close
    cdef const double[::1] _volume
    cdef const float[::1] _flat
    cdef Py_ssize_t _k
    cdef Py_ssize_t _window
    cdef TradingCore _core
    cdef Portfolio _book
    cdef tuple _targets
    cdef Py_ssize_t _n_targets
    cdef object _to_target
    cdef object _reward
    cdef bint _has_max_drawdown
    cdef double _max_drawdown
    cdef bint _close_at_end
    cdef Py_ssize_t _t
    cdef Py_ssize_t _stop
    cdef Py_ssize_t _steps
    cdef double _prev_equity
    cdef double _peak
    cdef bint _done

    @cython.locals(
        i=Py_ssize_t, target=double, t=Py_ssize_t, n1=Py_ssize_t, time_ns=cython.longlong, close=double,
        volume=double, core=TradingCore, book=Portfolio, equity=double, terminated=bint, truncated=bint,
        reward=double, orders=tuple, trades=tuple, errors=tuple, vetoed=tuple,
    )
    cpdef tuple step(self, object action)
