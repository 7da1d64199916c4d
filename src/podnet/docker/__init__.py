"""Docker's libnetwork plugin: podnet as a remote NetworkDriver and IpamDriver.

protocol.py is the whole plugin as a pure function from (path, JSON body) to the JSON
answer, as cni/plugin.py is for CNI: the agent serves it on a unix socket in Docker's
plugin directory (plugin_dir.py). network_driver.py and ipam_driver.py answer each call
over api/ (api.pods.handover, api.pools); engine.py asks dockerd's own API for the names
the protocol does not carry.
"""
