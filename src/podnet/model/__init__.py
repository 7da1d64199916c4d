"""pydantic models of what a user asked for: the desired state the store holds.

Read-only commands (ps, network ls) render the stored JSON directly and never import
this package: pydantic costs ~80 ms at start-up, which a command meant to feel instant
cannot pay (measured on this project's machine).
"""

from podnet.model.network import Network, SubnetConfig
from podnet.model.sandbox import Attachment, PortMapping, Sandbox
from podnet.model.endpoint import Endpoint

__all__ = ["Attachment", "Endpoint", "Network", "PortMapping", "Sandbox", "SubnetConfig"]
