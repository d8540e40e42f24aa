"""Neurons of text models: per-token activations, bits per character, sentence embeddings, the unit behind a
concept, token attribution and a Microscope of text units (docs/text.md).

>>> model = luminate.models.load("char_rnn")
>>> acts = luminate.text.activations(model, ["print(x) # (a comment)"], "rnn_1")   # [[T, 128]]
>>> luminate.text.bits_per_char(model, "Some English prose ...")
>>> luminate.text.find_units(model, texts, labels, "rnn_1")[:3]                    # [(unit, auc), ...]
"""

from luminate.text.core import (LongTextWarning, Texts, activations, as_text_model, bits_per_char, embed, encode,
                                generate, next_token_logits, read_texts, windows)
from luminate.text.probe import Probe, UnitRanking, auc_per_unit, find_units

__all__ = ["LongTextWarning", "Probe", "Texts", "UnitRanking", "activations", "as_text_model", "auc_per_unit",
           "bits_per_char", "embed", "encode", "find_units", "generate", "next_token_logits", "read_texts", "windows"]
