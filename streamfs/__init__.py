"""streamfs: a real-time ML feature store.

Importing this package is cheap: it starts no event loop and imports neither faust
nor any client library; those load when the part that needs them is used.
"""

from streamfs.errors import ConfigError, ServiceError, StreamfsError
from streamfs.settings import Settings

__version__ = "0.1.0"

__all__ = ["ConfigError", "ServiceError", "Settings", "StreamfsError", "__version__"]
