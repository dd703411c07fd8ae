"""`flashbench run` for tests/test_resume.py. Each evaluation batch first touches a marker file named after
the variant being evaluated and pauses RESUME_PAUSE seconds, so the test can SIGKILL this process while a
known variant is being evaluated. Nothing else differs from the real CLI."""

import os
import sys
import time
from pathlib import Path

from flashbench.cli import main
from flashbench.run.evaluation import Evaluation

MARKS = Path(os.environ["RESUME_MARKS"])
PAUSE = float(os.environ.get("RESUME_PAUSE", "0"))
_evaluate = Evaluation.sample_and_evaluate


def _marked(self, sample_fn, train, ev, seed, grid_path, **kwargs):
    def sample(*args):
        MARKS.mkdir(parents=True, exist_ok=True)
        (MARKS / grid_path.parent.name).touch()
        time.sleep(PAUSE)
        return sample_fn(*args)

    return _evaluate(self, sample, train, ev, seed, grid_path, **kwargs)


Evaluation.sample_and_evaluate = _marked
sys.exit(main(sys.argv[1:]))
