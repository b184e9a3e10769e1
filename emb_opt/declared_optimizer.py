"""The embedding optimizer a TorchRec user already declared, read where TorchRec keeps it.

A FIITED collection fuses its optimizer into backward, as TorchRec's fused and sharded collections do, so it must
be told the optimizer and learning rate the user chose for the embedding tables. TorchRec users declare them in
one of these places, all read here into FIITED options (``optimizer``, ``learning_rate``, ``eps``):

* ``apply_optimizer_in_backward(RowWiseAdagrad, ebc.parameters(), {"lr": 0.05})`` -- the parameters of the
  ``EmbeddingBagCollection`` being converted carry ``_optimizer_classes`` / ``_optimizer_kwargs``
  (``optimizer_on_parameters``);
* ``fused_params`` of a sharder or of FBGEMM's TBE: ``{"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
  "learning_rate": 0.05, "eps": 1e-8}`` (``optimizer_from_fused_params``).

Explicit arguments win over what is declared (``resolve_optimizer_options``); with neither, FIITED's defaults
apply and a warning names the learning rate used, since training at a learning rate the user never chose is
silent otherwise.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, Mapping, Optional

from torch import nn

from emb_opt.config import FiitedConfig, parse_optimizer

OPTIMIZER_OPTIONS = ("optimizer", "learning_rate", "eps")


def optimizer_from_fused_params(fused_params: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """FIITED options from TorchRec / FBGEMM ``fused_params`` (``optimizer``, ``learning_rate``, ``eps``)."""
    if not fused_params:
        return {}
    out: Dict[str, Any] = {}
    if fused_params.get("optimizer") is not None:
        out["optimizer"] = parse_optimizer(fused_params["optimizer"])
    for key in ("learning_rate", "eps"):
        if fused_params.get(key) is not None:
            out[key] = float(fused_params[key])
    return out


def optimizer_on_parameters(parameters: Iterable[nn.Parameter], where: str) -> Dict[str, Any]:
    """FIITED options from ``apply_optimizer_in_backward`` declarations on ``parameters`` (all must agree);
    empty when none is declared."""
    declared = []
    for parameter in parameters:
        classes = getattr(parameter, "_optimizer_classes", None)
        kwargs = getattr(parameter, "_optimizer_kwargs", None)
        if classes:
            declared.append((classes[-1], dict((kwargs or [{}])[-1])))
    if not declared:
        return {}
    if any(d != declared[0] for d in declared[1:]):
        found = sorted({f"{c.__name__}({k})" for c, k in declared})
        raise ValueError(f"{where}: its tables declare different optimizers in backward ({', '.join(found)}); a FIITED "
                         "collection has one: convert tables with different optimizers into separate collections")
    optimizer_class, kwargs = declared[0]
    out: Dict[str, Any] = {"optimizer": parse_optimizer(optimizer_class)}
    if "lr" in kwargs:
        out["learning_rate"] = float(kwargs["lr"])
    if "eps" in kwargs:
        out["eps"] = float(kwargs["eps"])
    return out


def resolve_optimizer_options(explicit: Mapping[str, Any], declared: Mapping[str, Any], where: str,
                              config: Optional[FiitedConfig] = None) -> Dict[str, Any]:
    """``explicit`` options (not None) over ``declared`` ones; warns when neither they nor ``config`` give a
    learning rate (FIITED's default is used)."""
    options = {k: v for k, v in declared.items() if k in OPTIMIZER_OPTIONS}
    options.update({k: v for k, v in explicit.items() if v is not None})
    if "learning_rate" not in options and config is None:
        warnings.warn(f"{where}: no learning rate given or declared for the embedding tables; the fused optimizer "
                      f"uses FIITED's default learning_rate={FiitedConfig.learning_rate}. Pass learning_rate=..., or "
                      "declare it as TorchRec does (apply_optimizer_in_backward, fused_params).", UserWarning,
                      stacklevel=3)
    return options
