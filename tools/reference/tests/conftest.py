import sys
from pathlib import Path

import pytest
import torch

REF_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REF_DIR))

torch.set_num_threads(1)  # tiny models: extra threads only slow things down


@pytest.fixture(scope="session")
def shared():
    from glm_tokenizer import shared_dir

    d = shared_dir()
    if not (d / "data" / "chatglm3" / "tokenizer.model").exists():
        pytest.fail(f"shared data not found under {d} (set GLMLAB_SHARED)")
    return d
