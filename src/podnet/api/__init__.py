"""The one entry for every change: validate, record desired state, then make the kernel follow.

The CLI, the CNI plugin and the agent's socket all call these functions; none of them
touches the store or the kernel directly.
"""
