"""Training loops: the weight-sharing supernet (train and score), the final network, progress
lines, and multi-process data parallelism under torchrun. Import the modules directly."""
