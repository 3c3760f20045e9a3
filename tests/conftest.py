import torch

# Small tensors on a 2-core machine: one intra-op thread is faster and keeps timings steady.
torch.set_num_threads(1)
