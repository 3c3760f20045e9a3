"""Networks of the image spaces: per space, the weight-sharing supernet and the final network."""
from rnas.networks.child_cnn import ChildConfig, NetworkCIFAR, count_parameters
from rnas.networks.nb201 import NetworkNB201, SupernetNB201
from rnas.networks.supernet_cnn import SupernetCIFAR, SupernetConfig

#: space name -> supernet class ``(space, SupernetConfig, num_classes, in_channels)``
SUPERNETS = {"nao_cnn": SupernetCIFAR, "nb201": SupernetNB201}
#: space name -> final network class ``(space, arch, ChildConfig, num_classes, in_channels)``
NETWORKS = {"nao_cnn": NetworkCIFAR, "nb201": NetworkNB201}

__all__ = ["ChildConfig", "NETWORKS", "NetworkCIFAR", "NetworkNB201", "SUPERNETS", "SupernetCIFAR",
           "SupernetConfig", "SupernetNB201", "count_parameters"]
