"""Bundled data (``midmix.data``): the sample corpus and HumanEval, shipped inside the wheel.

Read them through ``midmix.resources`` so they are found from a source checkout and from an
installed wheel alike.
"""
