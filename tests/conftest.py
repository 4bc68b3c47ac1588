import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch as th

# One thread: on small machines torch's thread pool makes tiny networks many times slower.
th.set_num_threads(1)
