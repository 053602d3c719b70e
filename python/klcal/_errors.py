"""klcal.Error and its subclasses: what every failing klcal call raises.

Each carries the library's status (`status`, a klcal.Errc; include/klcal/status.hpp) and, for a
failed CUDA call, the cudaError_t number (`cuda_error`, 0 otherwise). The compiled module raises
these classes; they are defined here so that type checkers and documentation see them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._klcal import Errc


class Error(Exception):
    """Base of every klcal error."""

    status: Errc | None
    cuda_error: int

    def __init__(self, message: str, status: Errc | None = None, cuda_error: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.cuda_error = cuda_error


class InvalidArgumentError(Error, ValueError):
    """An argument or option outside its documented domain."""


class DeviceError(InvalidArgumentError):
    """A device that does not exist or was not built, or a tensor on another device than the
    calibrator."""


class DtypeError(Error, TypeError):
    """An element type klcal does not bin (it takes float32, float16 and bfloat16), or an object
    that is not a tensor."""


class CudaError(Error):
    """The CUDA runtime failed (`cuda_error` holds its cudaError_t)."""


class OutOfMemoryError(Error, MemoryError):
    """A host or device allocation failed."""


class FileError(Error, OSError):
    """A file could not be opened, read or written."""


class FormatError(Error, ValueError):
    """Bytes that do not follow their format (a state file, a cache)."""


for _cls in (Error, InvalidArgumentError, DeviceError, DtypeError, CudaError, OutOfMemoryError,
             FileError, FormatError):
    _cls.__module__ = "klcal"  # tracebacks say klcal.InvalidArgumentError
del _cls
