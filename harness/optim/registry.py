"""Registry of optimizers by name: small frozen records, like timm's OptimInfo.

Defaults live in `conf/optimizer/<name>.yaml`; this module says which hyperparameters each optimizer accepts (and
their types, from which the typed Hydra schema is built), how to build it, and which values are in range.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.errors import ConfigError
from harness.imports import import_object
from harness.optim.muon import MuonWithAdamW

Params = Iterable[torch.nn.Parameter]


@dataclass(frozen=True)
class OptimInfo:
    """One optimizer the harness can build."""

    name: str
    build: Callable[..., torch.optim.Optimizer]  # build(params, lr=..., **hparams)
    hparams: Mapping[str, Any] = field(default_factory=dict)  # accepted hyperparameters -> type (besides lr)
    needs_closure: bool = False  # step(closure) re-evaluates the loss (L-BFGS line search)


OPTIMIZERS: dict[str, OptimInfo] = {}


def register(info: OptimInfo) -> OptimInfo:
    """Add an optimizer to the registry (names are unique)."""
    if info.name in OPTIMIZERS:
        raise ValueError(f"optimizer {info.name!r} is already registered")
    OPTIMIZERS[info.name] = info
    return info


def _tuple_args(cls: type, *names: str) -> Callable[..., torch.optim.Optimizer]:
    """YAML gives lists; torch wants tuples for betas, etas and the like."""

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


_SGD = {"momentum": float, "dampening": float, "weight_decay": float, "nesterov": bool}
_ADAM = {"betas": list[float], "eps": float, "weight_decay": float}

for _info in [
    OptimInfo("sgd", torch.optim.SGD, _SGD),
    OptimInfo("momentum", torch.optim.SGD, _SGD),
    OptimInfo("nesterov", torch.optim.SGD, _SGD),
    OptimInfo(
        "adagrad",
        torch.optim.Adagrad,
        {"lr_decay": float, "weight_decay": float, "initial_accumulator_value": float, "eps": float},
    ),
    OptimInfo("adadelta", torch.optim.Adadelta, {"rho": float, "eps": float, "weight_decay": float}),
    OptimInfo(
        "rmsprop",
        torch.optim.RMSprop,
        {"alpha": float, "eps": float, "weight_decay": float, "momentum": float, "centered": bool},
    ),
    OptimInfo("adam", _tuple_args(torch.optim.Adam, "betas"), {**_ADAM, "amsgrad": bool}),
    OptimInfo("adamw", _tuple_args(torch.optim.AdamW, "betas"), {**_ADAM, "amsgrad": bool}),
    OptimInfo("adamax", _tuple_args(torch.optim.Adamax, "betas"), _ADAM),
    OptimInfo(
        "nadam",
        _tuple_args(torch.optim.NAdam, "betas"),
        {**_ADAM, "momentum_decay": float, "decoupled_weight_decay": bool},
    ),
    OptimInfo("radam", _tuple_args(torch.optim.RAdam, "betas"), {**_ADAM, "decoupled_weight_decay": bool}),
    OptimInfo("asgd", torch.optim.ASGD, {"lambd": float, "alpha": float, "t0": float, "weight_decay": float}),
    OptimInfo(
        "rprop",
        _tuple_args(torch.optim.Rprop, "etas", "step_sizes"),
        {"etas": list[float], "step_sizes": list[float]},
    ),
    OptimInfo(
        "lbfgs",
        torch.optim.LBFGS,
        {"max_iter": int, "history_size": int, "line_search_fn": str | None},
        needs_closure=True,
    ),
    OptimInfo(
        "adafactor",
        _tuple_args(torch.optim.Adafactor, "eps"),
        {"beta2_decay": float, "eps": list[float | None], "d": float, "weight_decay": float},
    ),
    OptimInfo(
        "muon",
        MuonWithAdamW,
        {
            "weight_decay": float,
            "momentum": float,
            "nesterov": bool,
            "ns_steps": int,
            "adamw_lr": float,
            "adamw_betas": list[float],
            "adamw_eps": float,
            "adamw_weight_decay": float,
        },
    ),
    OptimInfo("custom", _build_custom, {"target": str, "kwargs": dict[str, Any]}),
]:
    register(_info)


def get_optimizer_info(name: str) -> OptimInfo:
    """Look up an optimizer by name, or fail naming the choices."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ConfigError("optimizer.name", name, f"one of {sorted(OPTIMIZERS)}") from None


# Range rules by hyperparameter name: predicate on the value, and the allowed range in words.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dampening": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "adamw_weight_decay": (lambda v: v >= 0, ">= 0"),
    "adamw_lr": (lambda v: v > 0, "> 0"),
    "eps": (lambda v: all(e is None or e > 0 for e in (v if isinstance(v, list) else [v])), "> 0"),
    "adamw_eps": (lambda v: v > 0, "> 0"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two values in [0, 1)"),
    "adamw_betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two values in [0, 1)"),
    "alpha": (lambda v: v >= 0, ">= 0"),
    "rho": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "lr_decay": (lambda v: v >= 0, ">= 0"),
    "initial_accumulator_value": (lambda v: v >= 0, ">= 0"),
    "momentum_decay": (lambda v: v >= 0, ">= 0"),
    "lambd": (lambda v: v >= 0, ">= 0"),
    "t0": (lambda v: v >= 0, ">= 0"),
    "etas": (lambda v: len(v) == 2 and 0 < v[0] < 1 < v[1], "two values 0 < eta- < 1 < eta+"),
    "step_sizes": (lambda v: len(v) == 2 and 0 < v[0] <= v[1], "two values 0 < min <= max"),
    "max_iter": (lambda v: v >= 1, ">= 1"),
    "history_size": (lambda v: v >= 1, ">= 1"),
    "ns_steps": (lambda v: v >= 1, ">= 1"),
    "line_search_fn": (lambda v: v in (None, "strong_wolfe"), "null or 'strong_wolfe'"),
    "beta2_decay": (lambda v: v <= 0, "<= 0"),
    "d": (lambda v: v > 0, "> 0"),
}


def validate_hparams(name: str, lr: float, hparams: Mapping[str, Any]) -> None:
    """Check lr and each hyperparameter against its range; then let torch validate by building on a dummy tensor.

    Raises:
        ConfigError: naming `optimizer.<key>`, the value and the allowed range.
    """
    info = get_optimizer_info(name)
    for key, value in {"lr": lr, **hparams}.items():
        rule = _RULES.get(key)
        if rule is not None and not rule[0](value):
            raise ConfigError(f"optimizer.{key}", value, rule[1])
    dummy = [torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))]
    try:
        info.build(dummy, lr=lr, **dict(hparams))
    except ConfigError:
        raise
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError("optimizer", dict(hparams), f"rejected by {name}: {exc}") from None


def create_optimizer(
    name: str, params: Params, lr: float, hparams: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """Build the named optimizer over `params`."""
    return get_optimizer_info(name).build(list(params), lr=lr, **dict(hparams))
