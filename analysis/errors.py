"""The errors that mean bad input from the user, reported as one clear line rather than a traceback."""

from analysis.devices import DeviceError
from analysis.model_loading import ModelLoadError
from analysis.sae_loading import SAELoadError

USER_ERRORS: tuple[type[Exception], ...] = (DeviceError, ModelLoadError, SAELoadError, ValueError, RuntimeError)
