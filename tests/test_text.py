"""Text models: weight conversion, faithful numerics, windowing, unit search, bad input (luminate.text)."""

import numpy as np
import pytest
import torch

from luminate import models, text
from luminate.models.char_rnn import cudnn_to_keras, keras_to_torch

pytest.importorskip("safetensors")


def _prose(start: int, n_chars: int) -> str:
    import pydoc_data.topics as t

    raw = "\n".join(t.topics[k] for k in sorted(t.topics))
    lines = [l.strip() for l in raw.splitlines() if 40 <= len(l.strip()) <= 200 and not l.startswith(" ")]
    return " ".join(lines[start:])[:n_chars]


def _paren_labels(s: str) -> np.ndarray:
    lab, depth = [], 0
    for ch in s:
        depth += ch == "("
        lab.append(int(depth > 0))
        depth -= ch == ")" and depth > 0
    return np.array(lab)


@pytest.fixture(scope="module")
def char_model():
    return models.load("char_rnn")


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("tokenizers")
    try:
        return models.load("minilm_l6")
    except FileNotFoundError as e:
        pytest.skip(str(e))


# ----- weight conversion ----------------------------------------------------------------------------------------


def _keras_lstm_by_hand(x, kernel, recurrent, bias):
    """Keras's LSTM written out: z = x K + h R + b; gates i, f, c, o; sigmoid gates, tanh cell."""
    sig = lambda v: 1 / (1 + np.exp(-v))
    H = recurrent.shape[0]
    h, c, out = np.zeros(H), np.zeros(H), []
    for xt in x:
        z = xt @ kernel + h @ recurrent + bias
        i, f, g, o = sig(z[:H]), sig(z[H:2 * H]), np.tanh(z[2 * H:3 * H]), sig(z[3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out)


def test_keras_lstm_cell_by_hand_equals_torch():
    rng = np.random.default_rng(0)
    n_in, H, T = 5, 4, 7
    kernel, recurrent = rng.normal(size=(n_in, 4 * H)), rng.normal(size=(H, 4 * H))
    bias, x = rng.normal(size=4 * H), rng.normal(size=(T, n_in))
    lstm = torch.nn.LSTM(n_in, H, batch_first=True)
    lstm.load_state_dict(keras_to_torch(kernel, recurrent, bias))
    with torch.no_grad():
        ours = lstm(torch.tensor(x, dtype=torch.float32)[None])[0][0].numpy()
    np.testing.assert_allclose(ours, _keras_lstm_by_hand(x, kernel, recurrent, bias), atol=1e-5)


def test_cudnn_layout_is_converted_to_keras():
    """CuDNNLSTM stores each gate's input block as a row-major [H, in] matrix in a [in, H] slot, the recurrent
    block transposed, and two biases: build such a checkpoint from Keras weights and read it back."""
    rng = np.random.default_rng(1)
    n_in, H = 6, 3
    kernel, recurrent = rng.normal(size=(n_in, 4 * H)), rng.normal(size=(H, 4 * H))
    b_in, b_rec = rng.normal(size=4 * H), rng.normal(size=4 * H)
    ck, cr = np.empty_like(kernel), np.empty_like(recurrent)
    for g in range(4):
        s = slice(g * H, (g + 1) * H)
        ck[:, s] = kernel[:, s].T.copy().reshape(n_in, H)   # the [H, in] matrix's bytes in the [in, H] slot
        cr[:, s] = recurrent[:, s].T
    k, r, b = cudnn_to_keras(ck, cr, np.concatenate([b_in, b_rec]))
    np.testing.assert_allclose(k, kernel)
    np.testing.assert_allclose(r, recurrent)
    np.testing.assert_allclose(b, b_in + b_rec)
    # read as if it were Keras's plain layout, the gates mix: not the same function
    x = rng.normal(size=(5, n_in))
    assert not np.allclose(_keras_lstm_by_hand(x, ck, cr, b_in + b_rec), _keras_lstm_by_hand(x, kernel, recurrent,
                                                                                             b_in + b_rec))


def test_hdf5_checkpoint_gives_the_shipped_weights():
    from luminate.models.char_rnn import WEIGHTS_FILE, state_dict_from_hdf5, textgenrnn_files

    pytest.importorskip("h5py")
    try:
        hdf5, _ = textgenrnn_files()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    from safetensors.torch import load_file

    shipped, read = load_file(str(WEIGHTS_FILE)), state_dict_from_hdf5(hdf5)
    assert shipped.keys() == read.keys()
    for k in shipped:
        assert torch.equal(shipped[k], read[k]), k


# ----- faithful numerics ----------------------------------------------------------------------------------------


def test_char_rnn_predicts_english_prose(char_model):
    held = _prose(700, 1200)   # Python's own documentation, lines the other tests do not use
    bpc = text.bits_per_char(char_model, held)
    assert bpc <= 3.0, bpc
    random = models.load("char_rnn", weights=False)
    assert text.bits_per_char(random, held) > 6.0  # an untrained model is near uniform (log2 465 = 8.9)
    assert abs(text.bits_per_char(char_model, [held[:600], held[600:]]) - bpc) < 0.3


def test_char_rnn_samples_read_like_english(char_model):
    sample = text.generate(char_model, "The ", length=120, temperature=0.3, seed=0)
    words = [w.strip(".,;:!?\"'()").lower() for w in sample.split()]
    common = set(_prose(0, 200000).lower().split()) | {"i", "a"}
    known = sum(w in common for w in words if w)
    assert known >= 0.6 * len([w for w in words if w]), sample
    assert text.generate(char_model, "The ", length=20, temperature=0.3, seed=0) == sample[:24]


def test_recurrent_state_is_carried_over_the_text(char_model):
    a, b = "print(value) and more", " then (another) one"
    whole = text.activations(char_model, [a + b], "rnn_1")[0]
    first = text.activations(char_model, [a], "rnn_1")[0]
    alone = text.activations(char_model, [b], "rnn_1")[0]
    assert whole.shape == (len(a + b), 128)
    torch.testing.assert_close(whole[:len(a)], first, atol=1e-5, rtol=0)  # causal: the same up to there
    assert (whole[len(a):] - alone).abs().max() > 0.05                   # the state from `a` matters
    batched = text.activations(char_model, [a + b, a], "rnn_1", batch_size=2)
    torch.testing.assert_close(batched[0], whole, atol=1e-5, rtol=0)     # padding in a batch changes nothing


def test_minilm_embeddings_separate_paraphrases(minilm):
    e = text.embed(minilm, ["A man is playing a guitar.", "Someone plays the guitar.",
                            "The stock market fell sharply today."])
    assert e.shape == (3, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.3


@pytest.mark.slow
def test_minilm_matches_the_mean_pooling_recipe(minilm, tmp_path):
    """The model card's recipe with Hugging Face transformers (when installed): BertModel, mean over the
    attention mask, normalize."""
    transformers = pytest.importorskip("transformers")
    import zipfile

    from luminate.models.minilm import package_zip

    zipfile.ZipFile(package_zip()).extractall(tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    bert = transformers.AutoModel.from_pretrained(str(tmp_path)).eval()
    sentences = ["Neurons of text models.", "A much longer sentence, with commas, to pad the batch a little."]
    batch = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = bert(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((states * m).sum(1) / m.sum(1), dim=-1)
    torch.testing.assert_close(text.embed(minilm, sentences), ref, atol=1e-5, rtol=1e-4)


def test_long_texts_are_windowed_and_said(minilm):
    words = "the cat sat on the mat " * 60            # 360 word pieces: two windows of 254 + 106
    with pytest.warns(text.LongTextWarning, match="window"):
        acts = text.activations(minilm, [words], "encoder.layer.1")[0]
    n = len(minilm.encode(words).ids)
    assert acts.shape == (n, 384) and n > 256
    assert text.windows(minilm, n) == [(0, 254), (254, n)]
    # the second window is read on its own, with its own [CLS] and [SEP]
    enc = minilm.encode(words)
    second = minilm.tokenizer.decode(enc.ids[254:].tolist())
    ref = text.activations(minilm, [second], "encoder.layer.1")[0]
    if ref.shape[0] == n - 254:
        torch.testing.assert_close(acts[254:], ref, atol=1e-4, rtol=0)


def test_layers_and_activations_api(char_model, minilm):
    names = {info.name: info for info in models.layers(char_model)}
    assert names["rnn_2"].channels == 128 and names["embedding"].channels == 100
    assert "encoder.layer.3.intermediate" in {info.name for info in models.layers(minilm)}
    assert minilm.layer_info("encoder.layer.3.intermediate").channels == 1536
    ids = torch.tensor([char_model.prefix + char_model.encode("hello (world)").ids.tolist()])
    from luminate.activations import activations

    raw = activations(char_model, ids, "rnn_2")          # the generic tap works on id batches
    torch.testing.assert_close(raw[0, 40:], text.activations(char_model, ["hello (world)"], "rnn_2")[0])


# ----- the unit behind a concept ----------------------------------------------------------------------------------


def test_find_units_auc_agrees_with_sklearn(char_model):
    from sklearn.metrics import roc_auc_score

    texts = ["call f(x, y) now", "see (the note) below", "no brackets here at all", "a (b (c) d) e",
             "print(len(items))", "plain words only"]
    labels = [_paren_labels(s) for s in texts]
    ranked = text.find_units(char_model, texts, labels, "rnn_1", probe=False)
    acts = text.activations(char_model, texts, "rnn_1")
    y = np.concatenate(labels)
    for u, auc in ranked[:3]:
        v = np.concatenate([a[:, u].numpy() for a in acts])
        assert abs(auc - max(roc_auc_score(y, v), roc_auc_score(y, -v))) < 1e-9
    assert [a for _, a in ranked] == sorted((a for _, a in ranked), reverse=True)


def test_auc_per_unit_with_ties_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    v = rng.integers(0, 4, size=(300, 3)).astype(float)     # many ties
    y = rng.integers(0, 2, size=300)
    np.testing.assert_allclose(text.auc_per_unit(v, y), [roc_auc_score(y, v[:, c]) for c in range(3)])
    with pytest.raises(ValueError, match="both classes"):
        text.auc_per_unit(v, np.zeros(300))


def test_sparse_probe_finds_the_planted_unit():
    from luminate.text.probe import sparse_probe

    rng = np.random.default_rng(0)
    v = rng.normal(size=(2000, 20))
    y = (v[:, 7] + 0.3 * rng.normal(size=2000) > 0).astype(int)
    probe = sparse_probe(v, y, np.arange(2000) % 40)
    assert probe.units[0] == 7 and probe.auc > 0.9 and len(probe.units) < 10


# ----- bad input ----------------------------------------------------------------------------------------------


def test_read_texts_skips_empty_and_non_utf8_lines(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(b"first line\n\n   \nbad \xff\xfe bytes\nlast (one)\r\n")
    texts = text.read_texts(f)
    assert list(texts) == ["first line", "last (one)"]
    assert ("t.txt:2", "empty") in texts.skipped and any("UTF-8" in why for _, why in texts.skipped)
    assert "not UTF-8 (t.txt:4)" in texts.summary()
    with pytest.raises(ValueError, match="no text left"):
        (tmp_path / "e.txt").write_text("\n\n")
        text.read_texts(tmp_path / "e.txt")


def test_unknown_characters_are_counted(char_model):
    enc = char_model.encode("snow \u2603\u2603 and \u0915")
    assert enc.unknown == 3 and enc.unknown_chars == {"\u2603": 2, "\u0915": 1}
    assert (enc.ids == 0).sum() == 3 and len(enc.ids) == len("snow \u2603\u2603 and \u0915")


def test_image_and_text_models_refuse_each_other(char_model, lite0):
    from luminate.models.textmodel import NotAnImageModel

    with pytest.raises(TypeError, match="image model"):
        text.activations(lite0, ["some text"], "blocks.9")
    with pytest.raises(NotAnImageModel, match="text model"):
        char_model(torch.rand(1, 3, 224, 224))
    with pytest.raises(NotAnImageModel, match="text model"):
        char_model.as_batch(torch.rand(1, 3, 32, 32))
    # one honoured base: a text model is a BaseModel, not an image Model, and has no image steps at all
    assert isinstance(char_model, models.BaseModel) and not isinstance(char_model, models.Model)
    assert isinstance(lite0, models.BaseModel) and not hasattr(char_model, "preprocess")
    with char_model.frozen():
        assert not char_model.network.training
    assert char_model.layer_info(char_model.default_layer()).channels > 0
    assert len(char_model.weights_fingerprint()) == 16


def test_a_sentence_encoder_is_not_a_language_model(minilm):
    with pytest.raises(TypeError, match="not a next-token"):
        text.bits_per_char(minilm, "text")
    with pytest.raises(TypeError, match="not a sentence encoder"):
        text.embed(models.load("char_rnn"), ["text"])
