"""Neural-network building blocks: modules and layers here, functions in `nn.functional`
(import as F) and initialisers in `nn.init`."""
from . import functional, init, utils
from .layers import MLP, BatchNorm1d, Dropout, Linear, ReLU, Sequential, Sigmoid, Tanh
from .module import Module, ModuleDict, ModuleList

__all__ = ["Module", "ModuleList", "ModuleDict", "Linear", "Sequential", "ReLU", "Tanh",
           "Sigmoid", "Dropout", "BatchNorm1d", "MLP", "functional", "init", "utils"]
