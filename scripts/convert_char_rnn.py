"""Convert textgenrnn's pretrained character model to the safetensors file that ships with Luminate.

textgenrnn 2.0.0 is by Max Woolf (https://github.com/minimaxir/textgenrnn), MIT licence; its weights file
``textgenrnn_weights.hdf5`` and vocabulary ``textgenrnn_vocab.json`` come from the registry package:

    pip install --no-deps textgenrnn==2.0.0 h5py safetensors
    python scripts/convert_char_rnn.py            # -> luminate/models/data/char_rnn.safetensors + vocab

The CuDNN LSTM layout is converted by luminate.models.char_rnn.state_dict_from_hdf5 (the same function the model
uses when it reads the HDF5 file directly with weights="textgenrnn").
"""

import argparse
import shutil
from pathlib import Path

from safetensors.torch import save_file

from luminate.models.char_rnn import VOCAB_FILE, WEIGHTS_FILE, state_dict_from_hdf5, textgenrnn_files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hdf5", default=None, help="textgenrnn_weights.hdf5 (default: the installed package's)")
    p.add_argument("--vocab", default=None, help="textgenrnn_vocab.json (default: the installed package's)")
    args = p.parse_args()
    hdf5, vocab = (Path(args.hdf5), Path(args.vocab)) if args.hdf5 else textgenrnn_files()
    state = {k: v.contiguous() for k, v in state_dict_from_hdf5(hdf5).items()}
    save_file(state, str(WEIGHTS_FILE), metadata={"source": "textgenrnn 2.0.0 (Max Woolf, MIT licence)",
                                                  "converted_by": "scripts/convert_char_rnn.py"})
    shutil.copyfile(args.vocab or vocab, VOCAB_FILE)
    print(f"{WEIGHTS_FILE} ({WEIGHTS_FILE.stat().st_size / 1e6:.2f} MB), {VOCAB_FILE}")


if __name__ == "__main__":
    main()
