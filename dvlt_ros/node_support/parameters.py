"""The node's parameters at the ROS edge: rclpy descriptors, the on-set verdict and the
declaration, all derived from the ROS-free table in :mod:`dvlt_ros.pipeline.settings`
(names, defaults, ranges, checks).
"""

from __future__ import annotations

from collections.abc import Iterable

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import ParameterException
from rclpy.parameter import Parameter

from dvlt_ros.pipeline.settings import (
    SPECS,
    SPECS_BY_NAME,
    ParameterError,
    ParamSpec,
    ParamValue,
    camera_label,
    check_combination,
    check_values,
)

# camera_label is also imported from here (dvlt_ros.bags.decode).
__all__ = ["SPECS", "SPECS_BY_NAME", "camera_label", "check_parameters", "declare_parameters",
           "descriptor", "verdict"]


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The rclpy descriptor of one parameter (type, description, range, read-only)."""
    desc = ParameterDescriptor(
        name=spec.name,
        type=int(Parameter.Type.from_parameter_value(spec.default)),
        description=spec.description,
        read_only=not spec.dynamic,
    )
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.minimum is not None and spec.maximum is not None:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [
                IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)
            ]
        else:
            desc.floating_point_range = [
                FloatingPointRange(
                    from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0
                )
            ]
    return desc


def declare_parameters(node) -> dict[str, ParamValue]:
    """Declare every parameter on ``node`` (values from the params file and overrides win
    over the defaults) and return name -> value.

    Raises :class:`ParameterError` (one line: the parameter and the reason) for a value
    the node refuses, whether its type, its range or the node's own check refused it.
    """
    values: dict[str, ParamValue] = {}
    for spec in SPECS:
        try:
            values[spec.name] = node.declare_parameter(
                spec.name, spec.default, descriptor(spec)).value
        except ParameterException as exc:
            reason = _rclpy_reason(exc, spec.name)
            raise ParameterError(f"parameter {spec.name}: {reason}") from None
    problem = check_combination(values)
    if problem:
        raise ParameterError(problem)
    return values


def _rclpy_reason(exc: ParameterException, name: str) -> str:
    """The reason in rclpy's message, without its 'Invalid parameter value (...)' prefix and
    its ': <name>' suffix."""
    text = str(exc).removesuffix(f": {name}")
    return text.split("Reason: ", 1)[-1]


def check_parameters(params: Iterable[Parameter], *,
                     checkpoint_required: bool = True) -> SetParametersResult:
    """The on-set-parameters verdict of each value alone (see
    :func:`~dvlt_ros.pipeline.settings.check_value`)."""
    problem = check_values(((p.name, p.value) for p in params),
                           checkpoint_required=checkpoint_required)
    return verdict(problem)


def verdict(problem: str | None) -> SetParametersResult:
    """A SetParametersResult for ``problem`` (None: accepted)."""
    return SetParametersResult(successful=problem is None, reason=problem or "")
