"""Benchmarks: ``python -m bench`` (``--smoke`` for a seconds-long check, ``--help`` for options).

One run times every contender on the same machine, interleaved round-robin, against a stream
reference kernel that moves exactly the bytes an Adam step must move (the practical floor);
see :mod:`bench.run`.
"""
