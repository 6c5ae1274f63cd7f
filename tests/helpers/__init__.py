"""Builders and test doubles shared by the test modules (no tests here; fixtures live in tests/conftest.py).

`data`: the real data sets under ../shared/data; `export`: a tiny real detector and its checkpoint; `train`: a tiny
space, ImageFolder and training config; `search`: deterministic evaluator doubles and the tiny search supernet.
"""
