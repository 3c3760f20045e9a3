"""Networks of the CNN cell space: the weight-sharing supernet and the final network."""
from rnas.networks.child_cnn import ChildConfig, NetworkCIFAR, count_parameters
from rnas.networks.supernet_cnn import SupernetCIFAR, SupernetConfig

__all__ = ["ChildConfig", "NetworkCIFAR", "SupernetCIFAR", "SupernetConfig", "count_parameters"]
