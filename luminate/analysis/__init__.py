"""Analysis: attribution, factorization (ChannelReducer, neuron groups) and the other Building Blocks tools.

Import the submodules directly, e.g. ``from luminate.analysis import attribution, factorization``.
"""
