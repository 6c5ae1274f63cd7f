"""detnas: DetNAS-style backbone search for object detection, shipped as ONNX / TensorRT detectors."""

from detnas.arch import RELEASED_ARCHS, Arch, parse_choices, released_archs, resolve_arch, sample_arch
from detnas.errors import DetnasError
from detnas.space import SPACES, SearchSpace, get_space, list_spaces, load_space_file, register_space

__version__ = "0.1.0"

__all__ = [
    "RELEASED_ARCHS", "SPACES", "Arch", "DetnasError", "SearchSpace", "get_space", "list_spaces", "load_space_file", "parse_choices",
    "register_space", "released_archs", "resolve_arch", "sample_arch", "__version__",
]
