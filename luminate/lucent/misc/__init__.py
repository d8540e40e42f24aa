"""Lucent's ``lucent.misc``: ``channel_reducer.ChannelReducer`` and ``io.show``."""

from luminate.lucent.misc import channel_reducer, io

__all__ = ["channel_reducer", "io"]
