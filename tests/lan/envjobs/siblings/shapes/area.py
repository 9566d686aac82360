from .units import scale


def square(x: int) -> int:
    return scale * x * x
