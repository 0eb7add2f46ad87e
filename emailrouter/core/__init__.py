"""The functional core: pure stages over plain, typed data.

parse -> guard -> segment (trust, directory) -> classify (normalise, textmodel, combine) -> decide
(verify) -> compose (templates, mime); `pipeline.route` runs them, `explain` describes the result.
No I/O, no clock (the time is an argument), no logging, and no imports from the other subpackages:
tests/test_architecture.py enforces it.
"""
