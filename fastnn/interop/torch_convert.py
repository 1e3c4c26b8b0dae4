"""placeholder"""


def to_torch(model):
    raise NotImplementedError


def from_torch(module, input_shape=None):
    raise NotImplementedError
