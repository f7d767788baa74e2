# The few names that differ between CPython and MicroPython, in one place.
try:
    from micropython import const  # noqa: F401  (MicroPython: folded at compile time)
except ImportError:

    def const(value):  # type: ignore[misc]  # CPython: a plain value
        return value
