"""Exceptions for bad arguments, shared by the ops, the modules and the backend selection."""


class ArgumentError(ValueError, RuntimeError):
    """A bad argument value or shape. Also a RuntimeError because torchvision's
    deform_conv2d raises RuntimeError for these: code written to catch its errors
    catches ours."""


class ArgumentTypeError(TypeError, RuntimeError):
    """An argument of the wrong type or dtype; a RuntimeError too, as ArgumentError."""
