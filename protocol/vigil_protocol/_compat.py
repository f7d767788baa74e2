# The few names that differ between CPython and MicroPython, in one place.
try:
    from micropython import const  # noqa: F401  (MicroPython: folded at compile time)
except ImportError:

    def const(value):  # type: ignore[misc]  # CPython: a plain value
        return value

# False when running; mypy takes a condition on this name as true, so a branch for MicroPython
# alone stays out of type checking.
TYPE_CHECKING = False
