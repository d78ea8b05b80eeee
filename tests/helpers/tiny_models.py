"""Small snnTorch models used as `package.module:factory` entry points by CLI tests."""

import snntorch as snn
import torch
from torch import nn


def two_layer():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero", reset_delay=False),
                         nn.Linear(16, 4), snn.Leaky(beta=0.8, init_hidden=True, reset_mechanism="zero", reset_delay=False,
                                                     output=False))


def subtract_reset():
    return nn.Sequential(nn.Linear(12, 4), snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="subtract", reset_delay=False))


def no_reset():
    return nn.Sequential(nn.Linear(12, 4), snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="none"))


def snntorch_defaults():
    """snn.Leaky with snnTorch's defaults: reset by subtraction, reset_delay=True."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), snn.Leaky(beta=0.9, init_hidden=True), nn.Linear(16, 4),
                         snn.Leaky(beta=0.9, init_hidden=True))
