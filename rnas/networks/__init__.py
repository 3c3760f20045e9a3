"""Networks of the image spaces: per space, the weight-sharing supernet and the final network, built
from the op table in ``rnas.networks.ops``."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rnas.networks.child_cnn import AUXILIARY_PREFIX, ChildConfig, NetworkCIFAR
from rnas.networks.nb201 import NB201Config, NetworkNB201, SupernetNB201
from rnas.networks.supernet_cnn import SupernetCIFAR, SupernetConfig

#: space name -> supernet class ``(space, config, num_classes, in_channels)``
SUPERNETS = {"nao_cnn": SupernetCIFAR, "nb201": SupernetNB201}
#: space name -> final network class ``(space, arch, config, num_classes, in_channels)``
NETWORKS = {"nao_cnn": NetworkCIFAR, "nb201": NetworkNB201}
#: space name -> the config class of its final network (and of a model card's ``child``)
NETWORK_CONFIGS = {"nao_cnn": ChildConfig, "nb201": NB201Config}


def count_parameters(model: nn.Module, include_auxiliary: bool = False) -> int:
    """Number of parameters, by default without an auxiliary head (as papers report it)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if include_auxiliary or not name.startswith(AUXILIARY_PREFIX))



def main_logits(output: torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
    """The logits of a network that may also return an auxiliary head's: ``(logits, aux_logits)``."""
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def flops_per_image(model: nn.Module, example: torch.Tensor) -> float:
    """Floating-point operations of ``model`` on the first image of ``example`` (torch's counter)."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(example[:1])
    return counter.get_total_flops()


__all__ = ["ChildConfig", "NB201Config", "NETWORK_CONFIGS", "NETWORKS", "NetworkCIFAR", "NetworkNB201", "SUPERNETS", "SupernetCIFAR",
           "SupernetConfig", "SupernetNB201", "count_parameters", "flops_per_image", "main_logits"]
