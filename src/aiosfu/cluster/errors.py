"""The refusal a client gets when a cluster engine (etcd, NATS, Redis) cannot be reached."""

from __future__ import annotations

from aiosfu.contract import CodedError


class ClusterError(CodedError):
    """Cluster mode could not do this now (`cluster-unavailable`); a retry may work."""
