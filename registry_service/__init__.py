"""The ToolRegistry service: tool definitions per role, leases, Watch, and Invoke.

``start_registry(RegistrySettings(...))`` runs one in-process; ``toolcall
registry`` runs it from the command line (``registry_service.main``).
"""

from registry_service.service import RegistryHost, start_registry
from registry_service.settings import RegistrySettings

__all__ = ["RegistryHost", "RegistrySettings", "start_registry"]
