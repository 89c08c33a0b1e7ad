"""Helpers shared by the tests (no tests here): import them as `from helpers.x import ...`.

`render`   the one stand-in renderer (a pure function of (cfg, seed, index), the sample contract)
`stores`   stores written with it, byte comparison of store trees, CLI and subprocess runs
`train`    the one tiny train config
`ensemble` an in-memory stand-in template bank and a naive reference placement
"""
