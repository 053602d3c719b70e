"""klcal: exact, deterministic INT8 calibration (histograms + KL/percentile/mse/max threshold search).

The compiled core lives in ``klcal._klcal``; everything is re-exported here. See docs/python.md.
"""

from ._errors import (
    CudaError,
    DeviceError,
    DtypeError,
    Error,
    FileError,
    FormatError,
    InvalidArgumentError,
    OutOfMemoryError,
)
from ._klcal import (
    Calibrator,
    Errc,
    Result,
    Stats,
    __version__,
    add_many,
    built_with_cuda,
    cuda_available,
    load_states,
    save_states,
)

__all__ = [
    "Calibrator",
    "CudaError",
    "DeviceError",
    "DtypeError",
    "Errc",
    "Error",
    "FileError",
    "FormatError",
    "InvalidArgumentError",
    "OutOfMemoryError",
    "Result",
    "Stats",
    "__version__",
    "add_many",
    "built_with_cuda",
    "cuda_available",
    "load_states",
    "save_states",
]
