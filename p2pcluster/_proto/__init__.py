"""The sans-IO core: pure protocol logic, no I/O, no clocks, no global randomness.

Nothing under this package may import trio, socket, time, threading, or the global ``random``
module; ``tests/proto/test_purity.py`` enforces it. Machines take ``now`` and an injected
``random.Random``, and return what to send and when to wake.
"""
