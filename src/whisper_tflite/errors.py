"""The project's own error types: each carries one sentence a user can act on."""


class WhisperTfliteError(Exception):
    """Base class; the CLI prints the message of any of these as one line."""


class SourceError(WhisperTfliteError):
    """A model source (bundled name, folder, hub id, model.bin) cannot be loaded."""


class AudioError(WhisperTfliteError):
    """An audio input cannot be decoded or is not usable speech input."""


class BundleError(WhisperTfliteError):
    """A converted bundle is missing, incomplete, corrupt or from another version."""


class ConversionError(WhisperTfliteError):
    """A model cannot be converted to a valid TFLite file."""


class UsageError(WhisperTfliteError):
    """A request that cannot be carried out as given: an existing output folder, an unknown option value."""
