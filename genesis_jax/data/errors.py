"""The data room's error type, in a module of its own so the format readers (``dicom``, ``metaimage``) and the
dispatcher over them (``readers``) all import it without importing each other in a circle."""


class VolumeError(ValueError):
    """A volume file that cannot be used; the message names the file and the reason."""
