"""Training tests share compiled executables with their subprocesses through the persistent compilation cache."""

from tests.train.helpers import enable_compile_cache

enable_compile_cache()
