"""The optimizer registry: one frozen record per optimizer, like timm's OptimInfo, and the only code that knows
optimizer names.

A record holds everything about an optimizer: how to build it, its default lr, each hyperparameter's default,
allowed range and meaning, and whether its step needs a closure. harness.config turns every record into a typed
Hydra config (`optimizer=<name>`, `optimizer.<key>=...`), `python -m harness.optim` prints the README table from
them, and range errors quote them. Adding an optimizer is one `register(OptimInfo(...))`, here or in a module of
your own named in $HARNESS_PLUGINS (see harness.plugins).
"""

import contextlib
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import MISSING

from harness.errors import ConfigError
from harness.imports import import_object
from harness.optim.hparams import (
    NON_NEGATIVE,
    POSITIVE,
    Hparam,
    Range,
    at_least,
    check,
    described,
    one_of,
    pair,
    unit,
)
from harness.optim.muon import MuonWithAdamW

Params = Iterable[torch.nn.Parameter]


@dataclass(frozen=True)
class OptimInfo:
    """One optimizer the harness can build."""

    name: str  # what users type: optimizer=<name>
    doc: str  # one line: what it is (the README table)
    build: Callable[..., torch.optim.Optimizer]  # build(params, lr=..., **hparams)
    lr: float  # default learning rate
    hparams: Mapping[str, Hparam] = field(default_factory=dict)  # accepted hyperparameters besides lr
    needs_closure: bool = False  # step(closure) re-evaluates the loss (L-BFGS line search)

    def defaults(self) -> dict[str, Any]:
        return {key: h.fresh_default() for key, h in self.hparams.items()}

    def check(self, lr: float, hparams: Mapping[str, Any]) -> None:
        """Range checks from the record, before anything is built. Raises ConfigError naming `optimizer.<key>`."""
        check("optimizer", {"lr": LR, **self.hparams}, {"lr": lr, **hparams})

    def create(self, params: Params, lr: float, hparams: Mapping[str, Any]) -> torch.optim.Optimizer:
        """Build over `params`; what torch itself refuses becomes a ConfigError."""
        try:
            with _dynamo_unloaded():
                return self.build(list(params), lr=lr, **dict(hparams))
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:
            raise ConfigError("optimizer", dict(hparams), f"rejected by {self.name}: {exc}") from None


@contextlib.contextmanager
def _dynamo_unloaded():
    """Build optimizers without importing torch._dynamo while nothing has imported it.

    torch.optim.Optimizer wraps add_param_group (and zero_grad, state_dict, load_state_dict) in
    torch._disable_dynamo, whose first call imports torch._dynamo (about a second) only to mark the method as never
    to be compiled. While torch._dynamo is not imported nothing can be compiling, so the wrapper may call the method
    itself: the marker it caches (`__dynamo_disable`) is set to the method during the build and removed after. A
    process that trains batched trials never builds anything else from torch.optim.
    """
    if "torch._dynamo" in sys.modules:
        yield
        return
    marker = torch._compile._disable_dynamo(lambda: None).__code__
    methods = [
        m.__wrapped__
        for m in vars(torch.optim.Optimizer).values()
        if getattr(m, "__code__", None) is marker and not hasattr(m.__wrapped__, "__dynamo_disable")
    ]
    for method in methods:
        setattr(method, "__dynamo_disable", method)
    try:
        yield
    finally:
        for method in methods:
            if getattr(method, "__dynamo_disable", None) is method:
                delattr(method, "__dynamo_disable")


OPTIMIZERS: dict[str, OptimInfo] = {}


def register(info: OptimInfo) -> OptimInfo:
    """Add an optimizer (names are unique). It becomes `optimizer=<name>` once harness.config registers configs."""
    if info.name in OPTIMIZERS and OPTIMIZERS[info.name] is not info:
        raise ValueError(f"optimizer {info.name!r} is already registered")
    OPTIMIZERS[info.name] = info
    return info


def get_optimizer_info(name: str) -> OptimInfo:
    """Look up an optimizer by name, or fail naming the choices."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ConfigError("optimizer.name", name, f"one of {sorted(OPTIMIZERS)}") from None


def tuple_args(cls: type, *names: str) -> Callable[..., torch.optim.Optimizer]:
    """Configs give lists; torch wants tuples for betas, etas and the like."""

    def build(params: Params, **kw: Any) -> torch.optim.Optimizer:
        for name in names:
            kw[name] = tuple(kw[name])
        return cls(params, **kw)

    return build


def _import_optimizer(target: str) -> type:
    """Import `package.module.Class` (or `package.module:Class`) and check it is a torch Optimizer."""
    allowed = "an import path 'package.module.Class' of a torch.optim.Optimizer subclass"
    cls = import_object("optimizer.target", target)  # checks the name's form first (harness.imports)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError("optimizer.target", target, allowed)
    return cls


def _build_custom(params: Params, lr: float, target: str, kwargs: Mapping[str, Any]) -> torch.optim.Optimizer:
    return _import_optimizer(target)(params, lr=lr, **dict(kwargs))


# Hyperparameters several optimizers share; defaults are torch.optim's unless a record says otherwise.
LR = Hparam(
    MISSING, "learning rate", Range(lambda v: v > 0 and math.isfinite(v), "a finite number > 0"), float
)
_BETAS_RANGE = pair(lambda b1, b2: 0 <= b1 < 1 and 0 <= b2 < 1, "in [0, 1)")
BETAS = Hparam([0.9, 0.999], "decay rates of the gradient and squared-gradient averages", _BETAS_RANGE)
EPS = Hparam(1e-8, "added to the denominator for numerical stability", POSITIVE)


def weight_decay(default: float = 0.0) -> Hparam:
    return Hparam(default, "L2 penalty (decoupled for AdamW-style optimizers)", NON_NEGATIVE)


def _sgd(momentum: float, nesterov: bool) -> dict[str, Hparam]:
    return {
        "momentum": Hparam(momentum, "heavy-ball momentum factor", unit()),
        "dampening": Hparam(0.0, "dampening of the momentum", unit(closed=True)),
        "weight_decay": weight_decay(),
        "nesterov": Hparam(nesterov, "Nesterov momentum (needs momentum > 0, dampening 0)"),
    }


def _adam(wd: float = 0.0) -> dict[str, Hparam]:
    return {"betas": BETAS, "eps": EPS, "weight_decay": weight_decay(wd)}


_AMSGRAD = Hparam(False, "the AMSGrad variant (max of past squared-gradient averages)")
_DECOUPLED = Hparam(False, "decoupled weight decay, as AdamW")
_PAIR_EPS = pair(lambda a, b: (a is None or a > 0) and b > 0, "null or > 0, then > 0")

for _info in [
    OptimInfo("sgd", "stochastic gradient descent", torch.optim.SGD, 0.01, _sgd(0.0, False)),
    OptimInfo("momentum", "SGD with heavy-ball momentum", torch.optim.SGD, 0.01, _sgd(0.9, False)),
    OptimInfo("nesterov", "SGD with Nesterov momentum", torch.optim.SGD, 0.01, _sgd(0.9, True)),
    OptimInfo(
        "adagrad",
        "Adagrad: per-coordinate steps shrinking with the summed squared gradients",
        torch.optim.Adagrad,
        0.01,
        {
            "lr_decay": Hparam(0.0, "learning-rate decay per step", NON_NEGATIVE),
            "weight_decay": weight_decay(),
            "initial_accumulator_value": Hparam(0.0, "initial sum of squared gradients", NON_NEGATIVE),
            "eps": Hparam(1e-10, "added to the denominator for numerical stability", POSITIVE),
        },
    ),
    OptimInfo(
        "adadelta",
        "Adadelta: Adagrad with running averages and a unit-free step",
        torch.optim.Adadelta,
        1.0,
        {
            "rho": Hparam(0.9, "decay of the running averages", unit(closed=True)),
            "eps": Hparam(1e-6, "added to the denominator for numerical stability", POSITIVE),
            "weight_decay": weight_decay(),
        },
    ),
    OptimInfo(
        "rmsprop",
        "RMSprop: steps divided by a running RMS of the gradients",
        torch.optim.RMSprop,
        0.01,
        {
            "alpha": Hparam(0.99, "decay of the squared-gradient average", NON_NEGATIVE),
            "eps": EPS,
            "weight_decay": weight_decay(),
            "momentum": Hparam(0.0, "momentum factor", unit()),
            "centered": Hparam(False, "divide by the gradient's variance estimate instead"),
        },
    ),
    OptimInfo(
        "adam",
        "Adam: bias-corrected averages of the gradient and its square",
        tuple_args(torch.optim.Adam, "betas"),
        1e-3,
        {**_adam(), "amsgrad": _AMSGRAD},
    ),
    OptimInfo(
        "adamw",
        "AdamW: Adam with decoupled weight decay",
        tuple_args(torch.optim.AdamW, "betas"),
        1e-3,
        {**_adam(0.01), "amsgrad": _AMSGRAD},
    ),
    OptimInfo(
        "adamax",
        "Adamax: Adam with the infinity norm",
        tuple_args(torch.optim.Adamax, "betas"),
        2e-3,
        _adam(),
    ),
    OptimInfo(
        "nadam",
        "NAdam: Adam with Nesterov momentum",
        tuple_args(torch.optim.NAdam, "betas"),
        2e-3,
        {
            **_adam(),
            "momentum_decay": Hparam(0.004, "momentum decay", NON_NEGATIVE),
            "decoupled_weight_decay": _DECOUPLED,
        },
    ),
    OptimInfo(
        "radam",
        "RAdam: Adam with a rectified warm-up of the adaptive term",
        tuple_args(torch.optim.RAdam, "betas"),
        1e-3,
        {**_adam(), "decoupled_weight_decay": _DECOUPLED},
    ),
    OptimInfo(
        "asgd",
        "averaged SGD",
        torch.optim.ASGD,
        0.01,
        {
            "lambd": Hparam(1e-4, "decay term", NON_NEGATIVE),
            "alpha": Hparam(0.75, "power for the eta update", NON_NEGATIVE),
            "t0": Hparam(1e6, "step at which averaging starts", NON_NEGATIVE),
            "weight_decay": weight_decay(),
        },
    ),
    OptimInfo(
        "rprop",
        "Rprop: sign-based steps with per-coordinate adaptive sizes (full batch)",
        tuple_args(torch.optim.Rprop, "etas", "step_sizes"),
        0.01,
        {
            "etas": Hparam(
                [0.5, 1.2],
                "step-size decrease and increase factors",
                pair(lambda a, b: 0 < a < 1 < b, "0 < a < 1 < b"),
            ),
            "step_sizes": Hparam(
                [1e-6, 50.0],
                "smallest and largest step size",
                pair(lambda a, b: 0 < a <= b, "0 < min <= max"),
            ),
        },
    ),
    OptimInfo(
        "lbfgs",
        "L-BFGS: quasi-Newton steps from a gradient history (needs a closure)",
        torch.optim.LBFGS,
        1.0,
        {
            "max_iter": Hparam(20, "inner iterations per step(closure)", at_least(1)),
            "history_size": Hparam(100, "number of past updates kept", at_least(1)),
            "line_search_fn": Hparam(
                None, "line search: null or strong_wolfe", one_of(None, "strong_wolfe"), str | None
            ),
        },
        needs_closure=True,
    ),
    OptimInfo(
        "adafactor",
        "Adafactor: factored second moments (memory-light Adam)",
        tuple_args(torch.optim.Adafactor, "eps"),
        0.01,
        {
            "beta2_decay": Hparam(
                -0.8, "decay rate of the second moment's beta2", Range(lambda v: v <= 0, "<= 0")
            ),
            "eps": Hparam(
                [None, 1e-3], "epsilons of the denominator and the update", _PAIR_EPS, list[float | None]
            ),
            "d": Hparam(1.0, "clipping threshold of the update's RMS", POSITIVE),
            "weight_decay": weight_decay(),
        },
    ),
    OptimInfo(
        "muon",
        "Muon (orthogonalised momentum) on 2-D weights, AdamW on every other parameter",
        MuonWithAdamW,
        0.02,
        {
            "weight_decay": weight_decay(0.1),
            "momentum": Hparam(0.95, "momentum factor", unit()),
            "nesterov": Hparam(True, "Nesterov momentum"),
            "ns_steps": Hparam(5, "Newton-Schulz iterations", at_least(1)),
            "adamw_lr": Hparam(1e-3, "AdamW's learning rate (biases, vectors)", POSITIVE),
            "adamw_betas": Hparam([0.9, 0.999], "AdamW's betas", _BETAS_RANGE),
            "adamw_eps": Hparam(1e-8, "AdamW's eps", POSITIVE),
            "adamw_weight_decay": Hparam(0.01, "AdamW's weight decay", NON_NEGATIVE),
        },
    ),
    OptimInfo(
        "custom",
        "any torch.optim.Optimizer subclass by import path: optimizer.target=pkg.mod.Class",
        _build_custom,
        0.01,
        {
            "target": Hparam(
                MISSING, "import path of a torch.optim.Optimizer subclass (runs that import)", type=str
            ),
            "kwargs": Hparam({}, "extra constructor arguments: +optimizer.kwargs.momentum=0.9"),
        },
    ),
]:
    register(_info)


def markdown_table() -> str:
    """The README's optimizer table, generated from the records (a test keeps the README equal to it)."""
    rows = [
        "| `optimizer=` | what it is | `optimizer.lr` | other keys: default (allowed) |",
        "|---|---|---|---|",
    ]
    for info in OPTIMIZERS.values():
        keys = ", ".join(described(key, h) for key, h in info.hparams.items())
        rows.append(f"| `{info.name}` | {info.doc} | {info.lr:g} | {keys} |")
    return "\n".join(rows)
