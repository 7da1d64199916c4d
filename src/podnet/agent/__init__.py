"""The long-running agent: the reconcile loop, the DNS servers, service sync and the API socket.

A CLI call records desired state and reconciles what it touched; what needs a process that
stays (answering DNS, following sandboxes that stop, syncing Services, serving the CNI entry
fast) lives here.
"""
