import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch as th

# One thread: on small machines torch's thread pool makes tiny networks many times slower.
th.set_num_threads(1)


@pytest.fixture
def visible_context():
    """A function that makes what a model's tokens read from other steps move its outputs well above float error
    (the replay tests): GPT-2's small init of the attention blocks leaves a wrongly rebuilt context step at 1e-7 in
    the log-probs, which a test's tolerance hides."""

    def scale(model) -> None:
        for name, param in model.policy.named_parameters():
            if name.endswith(("action_embedding.weight", "prev_obs_embedding.weight")):
                th.nn.init.normal_(param)  # the previous action and step must visibly matter
            elif "transformer.blocks" in name and name.endswith("weight") and param.dim() == 2:
                th.nn.init.normal_(param, std=0.5)
            elif name.endswith("start_bias_raw"):  # zero at init: make the first step's bias matter
                th.nn.init.normal_(param, std=0.3)

    return scale
