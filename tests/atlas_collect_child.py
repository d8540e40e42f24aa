"""Helper process for tests/test_atlas_data.py::test_resume_after_sigkill.

Runs ``luminate.atlas.collect`` and, once the first shard is listed in the manifest and one more batch
has been computed (so the run is in the middle of its second shard), writes MARKER and sleeps: the test
then kills it with SIGKILL.

Usage: python atlas_collect_child.py IMAGES OUT MARKER BATCH_SIZE SHARD_SIZE
"""

import json
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(2)  # the same as tests/conftest.py, so floating-point results match the test process

import luminate.atlas  # noqa: E402
from luminate import models  # noqa: E402

collect_module = sys.modules["luminate.atlas.collect"]


def main() -> None:
    images, out, marker, batch_size, shard_size = sys.argv[1:6]
    original = collect_module._batch_rows

    def stop_in_second_shard(*args, **kwargs):
        rows = original(*args, **kwargs)
        if json.loads((Path(out) / "manifest.json").read_text())["shards"]:
            Path(marker).write_text("in the second shard")
            time.sleep(600)
        return rows

    collect_module._batch_rows = stop_in_second_shard
    luminate.atlas.collect(models.load("efficientnet_lite0"), images, "blocks.10", out, batch_size=int(batch_size),
                           shard_size=int(shard_size), progress=False, num_workers=0)


if __name__ == "__main__":
    main()
