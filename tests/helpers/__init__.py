"""Builders and test doubles shared by the test modules (no tests here; fixtures live in tests/conftest.py).

`spaces`: the one tiny search space; `data`: the real data sets under ../shared/data; `export`: a tiny real detector
and its checkpoint; `train`: a tiny ImageFolder and training config; `search`: deterministic evaluator doubles and
the tiny search supernet.
"""
