import os

import pytest
import torch

torch.set_num_threads(2)


def _sample(name: str) -> str:
    import sklearn.datasets

    return os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", name)


@pytest.fixture(scope="session")
def flower_path() -> str:
    return _sample("flower.jpg")


@pytest.fixture(scope="session")
def china_path() -> str:
    return _sample("china.jpg")


@pytest.fixture(scope="session")
def lite0():
    from luminate import models

    return models.load("efficientnet_lite0")
