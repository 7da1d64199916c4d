"""podnet's firewall: isolation, masquerade and published ports for bridge networks.

`model` holds the desired state (plain dataclasses), `base.Firewall` the protocol every
backend implements, `nftables.NftablesFirewall` the backend podnet ships. Importing this
package stays cheap: backends are imported where they are used.
"""

from podnet.firewall.base import Firewall
from podnet.firewall.model import BridgeRules, EndpointGuard, FirewallState, PortMapping

__all__ = ["BridgeRules", "EndpointGuard", "Firewall", "FirewallState", "PortMapping"]
