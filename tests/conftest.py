import functools
import os
import signal

os.environ.setdefault("OMP_NUM_THREADS", "1")
# No test compiles a model (minutes on a CPU): torch.compile runs the model as it is (the test of train.compile
# fakes torch.compile to see what it is given).
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "tinyshakespeare.txt")


def interruptible():
    """A ``preexec_fn`` for a command a test interrupts: in the child, before exec, SIGINT at its default, as a
    command in a terminal's foreground has it. A launcher that runs the suite in the background (a non-interactive
    shell's ``&``) leaves SIGINT ignored; the child inherits that, Python then never raises KeyboardInterrupt, and an
    interrupted grid trains on to its end and exits 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@functools.lru_cache(maxsize=1)
def shakespeare():
    from gptlab.data import Corpus

    return Corpus.from_file(DATA)


@pytest.fixture(scope="session")
def corpus():
    return shakespeare()  # read once per process (mutmut's runs, forked from one that has read it, inherit it)
