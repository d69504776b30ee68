import functools
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# No test compiles a model (minutes on a CPU): torch.compile runs the model as it is (the test of train.compile
# fakes torch.compile to see what it is given).
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "tinyshakespeare.txt")


@functools.lru_cache(maxsize=1)
def shakespeare():
    from gptlab.data import Corpus

    return Corpus.from_file(DATA)


@pytest.fixture(scope="session")
def corpus():
    return shakespeare()  # read once per process (mutmut's runs, forked from one that has read it, inherit it)
