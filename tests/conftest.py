"""Test-suite settings.

The suite runs on 2 cores beside other work; torch's intra-op threads fight each other on the tiny
tensors tests use (measured 10-40x slower under load), so tests use one thread.
"""

import torch

torch.set_num_threads(1)
