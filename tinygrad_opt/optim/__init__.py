"""Optimizers, learning-rate schedules and gradient clipping."""
from . import lr_scheduler, textbook
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .cg import ConjugateGradient
from .clip import clip_grad_norm_, clip_grad_value_
from .lbfgs import LBFGS
from .newton import Newton, NewtonCG
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD
from .lion import Lion
from .lookahead import Lookahead
from .sam import SAM
from .adahessian import AdaHessian
from .sophia import Sophia
from .hessianfree import HessianFree
from .kfac import KFAC

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Newton", "NewtonCG",
           "ConjugateGradient", "LBFGS", "clip_grad_norm_", "clip_grad_value_", "lr_scheduler",
           "textbook", "Lion", "Lookahead", "SAM", "AdaHessian", "Sophia",
           "HessianFree", "KFAC"]
